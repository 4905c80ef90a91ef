"""Generates the configuration reference (docs/configuration.md) from the configs themselves.

  python -m bert_jax.tools.config_reference            # print the reference (markdown)
  python -m bert_jax.tools.config_reference --write    # update docs/configuration.md between its markers
  python -m bert_jax.tools.config_reference --check    # exit 1 if docs/configuration.md is stale

Every key of `default_config()` and of the sections that `configs/**/*.py` add (glue,
squad, swag, finetune, ...), with its default and its meaning: the comment beside or
above the line that sets it in the source (bert_jax/ first, then configs/). Keys are
found by running the configs; comments by reading the code that builds them (`ast`),
so neither can drift from the code: tests/test_config_reference.py regenerates the
block and compares it with docs/configuration.md.
"""
# io: local-only module (regenerates files inside this repository)
from __future__ import annotations

import argparse
import ast
import glob
import importlib.util
import io
import os
import sys
import tokenize
from typing import Any, Iterable

from bert_jax import config as config_lib

REPO_ROOT = config_lib.REPO_ROOT
README = os.path.join(REPO_ROOT, "docs", "configuration.md")
BEGIN = "<!-- BEGIN generated:config-reference -->"
END = "<!-- END generated:config-reference -->"
COMMAND = "python -m bert_jax.tools.config_reference --write"


# ---------------------------------------------------------------------------------------
# Keys and values: run the configs
# ---------------------------------------------------------------------------------------

def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
  """{'a': {'b': 1}} -> {'a.b': 1}; sections (dicts) are not leaves."""
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(flatten(v, key + "."))
    else:
      out[key] = v
  return out


def config_files(root: str = REPO_ROOT) -> list[str]:
  """configs/**/*.py relative to the repository, sorted."""
  files = glob.glob(os.path.join(root, "configs", "**", "*.py"), recursive=True)
  return sorted(os.path.relpath(f, root) for f in files
                if not os.path.basename(f).startswith("_"))


def load_config_file(path: str, root: str = REPO_ROOT):
  """get_config() of a config file (its default argument, if it takes one)."""
  spec = importlib.util.spec_from_file_location(
      "_config_" + path.replace("/", "_").replace(".", "_"), os.path.join(root, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(), (module.__doc__ or "").strip()


# ---------------------------------------------------------------------------------------
# Meanings: read the code that sets each key
# ---------------------------------------------------------------------------------------

def _chain(node: ast.AST) -> list[str] | None:
  """`c.train.batch_size` -> ['c', 'train', 'batch_size']; None for anything else."""
  parts = []
  while isinstance(node, ast.Attribute):
    parts.append(node.attr)
    node = node.value
  if not isinstance(node, ast.Name) or not parts:
    return None
  return [node.id] + parts[::-1]


def _called_name(node: ast.AST) -> str | None:
  if isinstance(node, ast.Call):
    f = node.func
    return f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
  return None


def _comments(source: str) -> dict[int, tuple[str, bool]]:
  """line -> (comment text, whether the comment is the whole line)."""
  out = {}
  lines = source.splitlines()
  for tok in tokenize.generate_tokens(io.StringIO(source).readline):
    if tok.type == tokenize.COMMENT:
      row, col = tok.start
      text = tok.string.lstrip("#").strip()
      whole = not lines[row - 1][:col].strip()
      out[row] = (text, whole)
  return out


def _comment_for(node: ast.stmt, comments: dict[int, tuple[str, bool]]) -> str:
  trailing = [comments[r][0] for r in range(node.lineno, node.end_lineno + 1)
              if r in comments and not comments[r][1]]
  if trailing:
    return " ".join(trailing)
  block, row = [], node.lineno - 1
  while row in comments and comments[row][1]:
    block.append(comments[row][0])
    row -= 1
  return " ".join(block[::-1])


def source_files(root: str = REPO_ROOT) -> list[str]:
  """Where config keys are set: the library first (their home), then configs/."""
  lib = sorted(glob.glob(os.path.join(root, "bert_jax", "**", "*.py"), recursive=True))
  return lib + [os.path.join(root, f) for f in config_files(root)]


def key_comments(keys: Iterable[str], files: Iterable[str],
                 schema_keys: Iterable[str] = (), schema_file: str = "") -> dict[str, str]:
  """{dotted key: comment} for keys set (with a comment) in config-building functions.

  A function's keys are rooted where its result is stored: `c.model = model_config()`
  makes model_config's `m.hidden_size` the key model.hidden_size. A schema key (one of
  default_config()) takes its comment from schema_file only, so that an override's
  remark in a task or config file never stands as the key's meaning; other keys take the
  first comment found (library files before configs/).
  """
  keys = set(keys)
  schema_keys = set(schema_keys)
  sections = {k.rsplit(".", 1)[0] for k in keys if "." in k}
  trees = []
  for path in files:
    with open(path, encoding="utf-8") as f:
      source = f.read()
    trees.append((ast.parse(source), _comments(source), path))
  prefix: dict[str, str] = {}  # function name -> the section its result is stored in
  for tree, _, _ in trees:
    for node in ast.walk(tree):
      if isinstance(node, ast.Assign) and len(node.targets) == 1:
        chain, called = _chain(node.targets[0]), _called_name(node.value)
        if chain and called and ".".join(chain[1:]) in sections:
          prefix.setdefault(called, ".".join(chain[1:]) + ".")
  out: dict[str, str] = {}
  for tree, comments, path in trees:
    for fn in ast.walk(tree):
      if not isinstance(fn, ast.FunctionDef) or "config" not in fn.name.lower():
        continue
      base = prefix.get(fn.name, "")
      for node in ast.walk(fn):
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
          continue
        chain = _chain(node.targets[0])
        if not chain:
          continue
        key = base + ".".join(chain[1:])
        if key not in keys and key not in sections:
          matches = [k for k in keys if k.endswith("." + ".".join(chain[1:]))]
          key = matches[0] if len(matches) == 1 else None
        if key in schema_keys and os.path.abspath(path) != os.path.abspath(schema_file):
          continue
        text = _comment_for(node, comments) if key else ""
        if key and text and key not in out:
          out[key] = text
  return out


# ---------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------

def _portable(text: str) -> str:
  """Paths under this checkout written as <repo>/..., so the block is machine-independent."""
  return text.replace(REPO_ROOT, "<repo>").replace(os.path.dirname(REPO_ROOT), "<repo>/..")


def _fmt(value: Any) -> str:
  if isinstance(value, str):
    text = f'"{_portable(value)}"'
  elif isinstance(value, (list, tuple)):
    text = "(" + ", ".join(_fmt(v).strip("`") for v in value) + ("," if len(value) == 1
                                                                  else "") + ")"
  else:
    text = repr(value)
  return "`" + text.replace("|", "\\|") + "`"


def _cell(text: str) -> str:
  return text.replace("|", "\\|").replace("\n", " ")


def collect(root: str = REPO_ROOT):
  """(defaults, {config file: (flat values, docstring)})."""
  defaults = flatten(config_lib.default_config().to_dict())
  configs = {}
  for path in config_files(root):
    cfg, doc = load_config_file(path, root)
    configs[path] = (flatten(cfg.to_dict()), doc)
  return defaults, configs


def render(root: str = REPO_ROOT) -> str:
  """The markdown block (without the BEGIN/END markers)."""
  defaults, configs = collect(root)
  extra: dict[str, dict[str, Any]] = {}  # key not in default_config -> {file: value}
  for path, (flat, _) in configs.items():
    for k, v in flat.items():
      if k not in defaults:
        extra.setdefault(k, {})[path] = v
  top = [k for k in defaults if "." not in k]
  all_keys = top + [k for k in defaults if "." in k] + sorted(extra)
  schema = list(defaults) + sorted({k.split(".")[0] for k in defaults if "." in k})
  comments = key_comments(all_keys + [k.rsplit(".", 1)[0] for k in all_keys if "." in k],
                          source_files(root), schema,
                          os.path.join(root, "bert_jax", "config.py"))
  lines = [
      f"Generated by `{COMMAND}` from `bert_jax.config.default_config()` and "
      "`configs/**/*.py`; meanings are the comments beside each key in the source. "
      "Set any key with `--config.KEY=VALUE` (e.g. `--config.train.batch_size=1024`).", ""]
  groups: dict[str, list[str]] = {}
  for k in all_keys:
    groups.setdefault(k.split(".")[0] if "." in k else "", []).append(k)
  for section, keys in groups.items():
    title = f"`{section}`" if section else "top level"
    owners = sorted({p for k in keys for p in extra.get(k, {})})
    where = (" — added by " + ", ".join(f"`{p}`" for p in owners)) if owners else ""
    lines.append(f"**{title}**{where}")
    if section and comments.get(section):
      lines.append(f": {_cell(comments[section])}")
    lines += ["", "| key | default | meaning |", "| --- | --- | --- |"]
    for k in keys:
      if k in defaults:
        default = _fmt(defaults[k])
      else:
        by_value: dict[str, list[str]] = {}
        for path, v in extra[k].items():
          by_value.setdefault(_fmt(v), []).append(os.path.splitext(os.path.basename(path))[0])
        default = (next(iter(by_value)) if len(by_value) == 1 else "; ".join(
            f"{v} ({', '.join(ps)})" for v, ps in by_value.items()))
      lines.append(f"| `{k}` | {default} | {_cell(comments.get(k, ''))} |")
    lines.append("")
  lines += ["**Config files** (values that differ from `default_config()`):", "",
            "| file | what | overrides |", "| --- | --- | --- |"]
  for path, (flat, doc) in configs.items():
    changed = [f"`{k}={_fmt(v).strip('`')}`" for k, v in flat.items()
               if k in defaults and v != defaults[k]]
    added = sorted({k.split(".")[0] for k in flat if k not in defaults})
    if added:
      changed.append("adds " + ", ".join(f"`{a}.*`" for a in added))
    lines.append(f"| `{path}` | {_cell(doc.splitlines()[0] if doc else '')} | "
                 f"{', '.join(changed) or '—'} |")
  return "\n".join(lines) + "\n"


def replace_block(text: str, block: str) -> str:
  """README text with the generated block between BEGIN and END replaced."""
  if BEGIN not in text or END not in text:
    raise ValueError(f"{README} has no {BEGIN} ... {END} markers: put them where the "
                     "reference belongs, then run --write.")
  head, rest = text.split(BEGIN, 1)
  _, tail = rest.split(END, 1)
  return f"{head}{BEGIN}\n{block}{END}{tail}"


def current_block(text: str) -> str:
  return text.split(BEGIN, 1)[1].split(END, 1)[0].lstrip("\n")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m bert_jax.tools.config_reference")
  p.add_argument("--write", action="store_true", help="update docs/configuration.md")
  p.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md is stale")
  p.add_argument("--readme", default=README)
  args = p.parse_args(argv)
  if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
  block = render()
  if not (args.write or args.check):
    print(block, end="")
    return 0
  with open(args.readme, encoding="utf-8") as f:
    text = f.read()
  if args.check:
    if current_block(text) != block:
      print(f"{args.readme}: the configuration reference is stale; run `{COMMAND}`.")
      return 1
    print("configuration reference is up to date")
    return 0
  with open(args.readme, "w", encoding="utf-8") as f:
    f.write(replace_block(text, block))
  print(f"updated the configuration reference in {args.readme}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
