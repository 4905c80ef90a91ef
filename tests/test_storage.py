"""One I/O layer: no module but bert_jax/paths.py touches files with the OS's own calls.

Workdirs, corpora, shards and checkpoints may be gs:// buckets on a pod; builtin `open`,
`os.path`, `os.makedirs`, `glob` and `shutil` would silently treat `gs://b/x` as a local
folder named `gs:`. A line that truly handles a local-only path (a package resource, a
/proc file, a local cache) says so with `# io: local-only (<why>)`; a developer tool that
only regenerates files of this repository says so once: `# io: local-only module (<why>)`.
"""
import pathlib
import re


from bert_jax import paths

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCANNED = sorted([*ROOT.glob("bert_jax/**/*.py"), *ROOT.glob("launch/**/*.py")])
FORBIDDEN = re.compile(
    r"(?<![\w.])open\(|\bos\.path\.|\bos\.(makedirs|mkdir|listdir|scandir|walk|remove|unlink"
    r"|rename|replace|rmdir|stat)\(|^\s*(import glob|from glob )|\bglob\.glob|\bshutil\b"
    r"|\bpathlib\.Path\(")
EXEMPT = "# io: local-only ("


def offending_lines(path: pathlib.Path) -> list[str]:
  out = []
  if "# io: local-only module (" in path.read_text():  # tools that regenerate repo files
    return out
  for i, line in enumerate(path.read_text().splitlines(), 1):
    code = line.split("#", 1)[0] if EXEMPT not in line else ""
    if FORBIDDEN.search(code) and not code.lstrip().startswith(('"', "'")):
      out.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
  return out


def test_only_paths_py_does_file_io():
  found = [l for f in SCANNED if f.name != "paths.py" or f.parent.name != "bert_jax"
           for l in offending_lines(f)]
  assert not found, ("file I/O outside bert_jax/paths.py (use paths.open/exists/makedirs/"
                     "glob/copy..., or mark a truly local path `# io: local-only (why)`):\n"
                     + "\n".join(found))


def test_the_check_catches_each_spelling(tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text("with open(p) as f: pass\nos.path.join(a, b)\nos.makedirs(d)\nimport glob\n"
                 "shutil.copy(a, b)\nos.replace(a, b)\nok = paths.open(p)\nx.open('r')\n"
                 "fine = open(p)  # io: local-only (a /proc file)\n")
  lines = [l for l in bad.read_text().splitlines()]
  hits = [l for l in lines if FORBIDDEN.search(l if EXEMPT not in l else "")]
  assert hits == lines[:6]


def test_atomic_write_leaves_no_temporary_and_replaces_whole(tmp_path):
  target = tmp_path / "deep" / "results.json"
  paths.write_json(target, {"a": 1})
  paths.write_json(target, {"b": 2})
  assert paths.read_json(target) == {"b": 2}
  assert paths.listdir(target.parent) == ["results.json"]
