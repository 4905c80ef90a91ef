"""The README's configuration reference is regenerated from the configs and must match;
comments are attributed to the right keys (schema first, sections rooted by assignment)."""
import pathlib

import pytest

from bert_jax import config as config_lib
from bert_jax.tools import config_reference as ref

README = pathlib.Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


@pytest.fixture(scope="module")
def block():
  return ref.render()


def test_readme_reference_matches_the_configs(block):
  assert ref.current_block(README.read_text(encoding="utf-8")) == block, (
      f"README.md's configuration reference is stale: run `{ref.COMMAND}`.")


def test_every_key_of_every_config_is_listed_with_its_default(block):
  defaults, configs = ref.collect()
  keys = set(defaults) | {k for flat, _ in configs.values() for k in flat}
  rows = {line.split("|")[1].strip().strip("`"): line for line in block.splitlines()
          if line.startswith("| `")}
  assert keys <= set(rows)
  for k, v in defaults.items():
    assert f"| {ref._fmt(v)} |" in rows[k], k
  assert "`train.batch_size` | `256` | global batch, over all hosts and devices." in block
  assert "`squad.doc_stride` | `128` | tokens between the starts" in block
  # A config's own remark never replaces the schema's meaning of a default key.
  assert "128 TensorCores" not in rows["mesh.shape"]
  assert "<repo>/../shared/data/glue" in block and str(config_lib.REPO_ROOT) not in block
  for path in ref.config_files():
    assert f"| `{path}` |" in block


def test_comments_follow_assignments(tmp_path):
  src = tmp_path / "cfg.py"
  src.write_text(
      "import ml_collections\n"
      "def part_config():\n"
      "  p = ml_collections.ConfigDict()\n"
      "  p.size = 3  # how big\n"
      "  # the kind of thing,\n"
      "  # on two lines\n"
      "  p.kind = 'a'\n"
      "  p.bare = 1\n"
      "  return p\n"
      "def get_config():\n"
      "  c = ml_collections.ConfigDict()\n"
      "  c.part = part_config()  # a section\n"
      "  c.seed = 0  # the seed\n"
      "  return c\n")
  keys = ["part.size", "part.kind", "part.bare", "seed", "part"]
  got = ref.key_comments(keys, [str(src)])
  assert got == {"part.size": "how big", "part.kind": "the kind of thing, on two lines",
                 "part": "a section", "seed": "the seed"}
  # a schema key takes its comment from the schema file only
  assert "seed" not in ref.key_comments(keys, [str(src)], schema_keys=["seed"],
                                        schema_file=str(tmp_path / "other.py"))


def test_write_and_check(block, tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(ref, "render", lambda: block)
  readme = tmp_path / "README.md"
  readme.write_text(f"intro\n{ref.BEGIN}\nold\n{ref.END}\noutro\n")
  assert ref.main(["--check", f"--readme={readme}"]) == 1
  assert "stale" in capsys.readouterr().out
  assert ref.main(["--write", f"--readme={readme}"]) == 0
  assert ref.main(["--check", f"--readme={readme}"]) == 0
  text = readme.read_text()
  assert text.startswith("intro\n") and text.endswith(f"{ref.END}\noutro\n")
