"""README.md is a short front door and docs/ holds the rest: links resolve (files and
GitHub-style heading anchors), every docs page is reachable from the README, the README's
test command is the one CI runs, and the pages carry no local paths or run diaries."""
import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOCS, REPO / "benchmarks" / "README.md"]

_FENCE = re.compile(r"^(```|~~~)")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# The launcher's --dry_run output quoted in docs/tpu.md (checked against the launcher by
# tests/test_launch.py) names the temporary file it writes on the user's machine.
_DRY_RUN_EXCERPT = "`--dry_run` prints what that runs:"


def _prose(text):
  """The text with fenced code blocks blanked out (their lines kept, emptied)."""
  out, fenced = [], False
  for line in text.splitlines():
    if _FENCE.match(line.strip()):
      fenced = not fenced
      out.append("")
      continue
    out.append("" if fenced else line)
  return "\n".join(out)


def _slug(heading):
  """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
  text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
  text = re.sub(r"[^\w\- ]", "", text.strip().lower())
  return text.replace(" ", "-")


def _anchors(path):
  seen, anchors = {}, set()
  for line in _prose(path.read_text(encoding="utf-8")).splitlines():
    m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
    if not m:
      continue
    slug = _slug(m.group(1))
    n = seen.get(slug, 0)
    seen[slug] = n + 1
    anchors.add(slug if n == 0 else f"{slug}-{n}")
  return anchors


def _relative_links(path):
  """(target file, anchor or None) of every relative link outside code blocks."""
  for target in _LINK.findall(_prose(path.read_text(encoding="utf-8"))):
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
      continue
    file_part, _, anchor = target.partition("#")
    resolved = (path.parent / file_part).resolve() if file_part else path.resolve()
    yield target, resolved, anchor or None


def test_readme_is_short():
  n = len(README.read_text(encoding="utf-8").splitlines())
  assert n < 300, f"README.md has {n} lines; move detail into docs/"


def test_docs_exist():
  names = {p.name for p in DOCS}
  assert "README.md" in names and len(names) >= 5, names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
  bad = []
  for target, resolved, anchor in _relative_links(page):
    if not resolved.exists():
      bad.append(f"{target}: no such file")
    elif anchor is not None and resolved.suffix == ".md" and anchor not in _anchors(resolved):
      bad.append(f"{target}: no heading with anchor #{anchor} in {resolved.name}")
  assert not bad, f"{page.relative_to(REPO)}: " + "; ".join(bad)


def test_every_docs_page_is_linked_from_the_readme():
  linked = {resolved for _, resolved, _ in _relative_links(README)}
  missing = [p.relative_to(REPO).as_posix() for p in DOCS if p.resolve() not in linked]
  assert not missing, f"README.md does not link {missing}"


def test_every_docs_page_is_in_the_docs_index():
  index = REPO / "docs" / "README.md"
  linked = {resolved for _, resolved, _ in _relative_links(index)}
  missing = [p.name for p in DOCS if p != index and p.resolve() not in linked]
  assert not missing, f"docs/README.md does not link {missing}"


def test_readme_test_command_is_the_one_ci_runs():
  ci = [l for l in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
        if "pytest" in l and not l.startswith(("#", "XLA_FLAGS"))]
  assert len(ci) == 1, ci
  readme = [l for l in README.read_text(encoding="utf-8").splitlines()
            if "pip install" in l and "pytest" in l]
  assert readme == ci


def _without_dry_run_excerpt(text):
  if _DRY_RUN_EXCERPT not in text:
    return text
  head, tail = text.split(_DRY_RUN_EXCERPT, 1)
  parts = tail.split("```\n", 2)  # before the block, the block, after it
  return head + parts[0] + parts[2] if len(parts) == 3 else text


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_local_paths_or_run_diaries(page):
  text = _without_dry_run_excerpt(page.read_text(encoding="utf-8"))
  found = [w for w in ("/work/", "/tmp/") if w in text]
  found += [w for w in ("this session", "this run") if w in text.lower()]
  assert not found, f"{page.relative_to(REPO)} contains {found}"


def test_slug_is_github_style():
  assert _slug("Pods (compiler estimates, not measurements)") == (
      "pods-compiler-estimates-not-measurements")
  assert _slug("Checkpoints and `convert`") == "checkpoints-and-convert"
  assert _slug("Real run: MRPC, MiniLM") == "real-run-mrpc-minilm"


def test_benchmark_tables_are_generated_from_their_json():
  """benchmarks/README.md's marked tables equal what benchmarks/tables.py renders."""
  import importlib.util
  spec = importlib.util.spec_from_file_location("tables", REPO / "benchmarks" / "tables.py")
  tables = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tables)
  text = tables.README.read_text()
  assert tables.render(text) == text, "run: python benchmarks/tables.py"
