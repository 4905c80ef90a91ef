"""The package's architecture, checked from its imports and definitions.

Layers, lowest first: a module may import its own layer and those below, never above
(data does not import training or tasks; the loops do not import a task's job; only the
entry points import `bert_jax.main`). Concepts with one home are defined once.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "bert_jax"

# Module (dotted, without "bert_jax.") or package prefix "data." -> layer.
LAYERS = {
    0: "foundation: config, files, hardware facts, logging and formatting, process plumbing",
    1: "model, optimizer, sharding, weights in foreign formats, data pipelines",
    2: "training library: the sharded step, our runs' checkpoints, preflight checks",
    3: "objectives: pre-training's loss and model wiring, metrics and postprocessing",
    4: "loops: pre-training and fine-tuning",
    5: "task jobs: GLUE, SQuAD, SWAG",
    6: "entry points: main, the fine-tuning fronts, tools/",
}
MODULE_LAYER = {
    **{m: 0 for m in ("config", "paths", "hardware", "cleanup", "console", "metrics",
                      "tokenization", "dropout", "hugepages", "distributed", "preemption",
                      "health", "tf_checkpoint", "flops", "resources")},
    **{m: 1 for m in ("model", "optim", "partitioning", "weights", "data")},
    **{m: 2 for m in ("train_lib", "checkpoints", "preflight", "prediction", "reruns",
                      "compile_cache")},
    **{m: 3 for m in ("tasks", "tasks.pretrain", "tasks.degenerate", "tasks.glue_metrics",
                      "tasks.squad_eval", "tasks.squad_postprocess")},
    **{m: 4 for m in ("train", "finetune")},
    **{m: 5 for m in ("tasks.glue", "tasks.squad", "tasks.swag")},
    **{m: 6 for m in ("main", "glue", "squad", "swag", "tools")},
}
ENTRY_FRONTS = {"glue", "squad", "swag"}  # the only modules besides main that import it


def module_name(path: pathlib.Path) -> str:
  rel = path.relative_to(PKG).with_suffix("")
  parts = [p for p in rel.parts if p != "__init__"]
  return ".".join(parts)


def layer_of(name: str) -> int:
  """The layer of a module name ('tasks.glue', 'data.squad', 'tools.aot', ...)."""
  parts = name.split(".")
  for i in range(len(parts), 0, -1):
    key = ".".join(parts[:i])
    if key in MODULE_LAYER:
      return MODULE_LAYER[key]
  raise AssertionError(f"bert_jax.{name} has no layer in tests/test_layout.py: add it to "
                       "MODULE_LAYER where it belongs")


def package_modules() -> list[pathlib.Path]:
  return sorted(p for p in PKG.rglob("*.py") if "resources" not in p.parts)


def imported_modules(path: pathlib.Path) -> set[str]:
  """Every bert_jax module `path` imports, at the top or inside a function."""
  known = {module_name(p) for p in package_modules()}
  out = set()
  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
    if isinstance(node, ast.Import):
      for a in node.names:
        if a.name.startswith("bert_jax."):
          out.add(a.name[len("bert_jax."):])
    elif isinstance(node, ast.ImportFrom) and node.module and (
        node.module == "bert_jax" or node.module.startswith("bert_jax.")):
      base = node.module[len("bert_jax."):] if node.module != "bert_jax" else ""
      for a in node.names:
        sub = f"{base}.{a.name}" if base else a.name
        out.add(sub if sub in known else base)
  return {m for m in out if m}


def test_every_module_has_a_layer():
  for p in package_modules():
    layer_of(module_name(p) or "config")  # raises with the fix


@pytest.mark.parametrize("path", package_modules(), ids=lambda p: module_name(p) or "__init__")
def test_no_module_imports_a_layer_above_it(path):
  me = module_name(path)
  if not me:
    return
  mine = layer_of(me)
  upward = sorted(f"bert_jax.{m} (layer {layer_of(m)}: {LAYERS[layer_of(m)]})"
                  for m in imported_modules(path) if layer_of(m) > mine)
  assert not upward, (f"bert_jax.{me} (layer {mine}: {LAYERS[mine]}) imports "
                      f"{', '.join(upward)}")
  if "main" in imported_modules(path):
    assert me in ENTRY_FRONTS, f"bert_jax.{me} imports bert_jax.main; only the fronts may"


def test_the_library_does_not_import_the_test_faults():
  for p in package_modules():
    assert "fault_injection" not in p.read_text(encoding="utf-8"), p


def _definitions() -> dict[str, list[str]]:
  """Top-level function/class/constant name -> modules defining it."""
  out: dict[str, list[str]] = {}
  for p in package_modules():
    for node in ast.parse(p.read_text(encoding="utf-8")).body:
      names = []
      if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        names = [node.name]
      elif isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names = [t.id for t in targets if isinstance(t, ast.Name)]
      for n in names:
        out.setdefault(n, []).append(module_name(p))
  return out


# One home each (issue 20): the module that owns the concept.
ONE_HOME = {
    "format_duration": "metrics",  # durations in every progress line and summary
    "MetricWriter": "metrics",  # metrics.jsonl + TensorBoard for every loop
    "format_table": "metrics",
    "progress_line": "metrics",
    "check_vocab": "weights",  # the one vocabulary check
    "ARCHITECTURE_KEYS": "config",  # what a checkpoint decides about the encoder
    "MODEL_SHAPE_KEYS": "config",
    "TPU_GENERATIONS": "hardware",  # the one accelerator table
    "ACCELERATOR_TYPES": "hardware",
    "LOGICAL_AXIS_RULES": "config",  # config.mesh.rules' default
    "finetune_config": "config",  # every config schema in config.py
    "squad_config": "config",
    "glue_config": "config",
    "swag_config": "config",
    "multiple_choice_config": "config",
    "Checkpointer": "checkpoints",  # our runs' checkpoints in one module
    "save_params": "checkpoints",
    "restore_params": "checkpoints",
    "warm_start": "checkpoints",
    "find_run_checkpoint": "checkpoints",
    "load_pretrained": "checkpoints",
    "saved_config": "checkpoints",
    "explain_override_error": "config",
    "gather_to_host": "train_lib",
    "abstract_batch": "tasks.pretrain",
    "truncate_seq_pair": "data.batching",
}
# Names the restructure retired: their concepts live under the names above.
RETIRED = ("_fmt_time", "_fmt_duration", "_ARCH_KEYS", "TpuChip", "TPU_CHIPS_TABLE",
           "check_vocab_matches", "load_finetuned", "_latest_checkpoint", "_gather")


@pytest.mark.parametrize("name", sorted(ONE_HOME))
def test_concept_defined_once_in_its_home(name):
  assert _definitions().get(name) == [ONE_HOME[name]], (name, _definitions().get(name))


def test_retired_duplicates_are_gone():
  defs = _definitions()
  assert not {n: defs[n] for n in RETIRED if n in defs}


def test_one_set_of_model_input_names():
  """Pre-training batches and fine-tuning features name the inputs as the model does."""
  for p in package_modules():
    text = p.read_text(encoding="utf-8")
    for old in ('"input_mask"', '"segment_ids"'):
      assert old not in text, f"{p}: {old} (use attention_mask / token_type_ids)"


def test_only_entry_points_have_a_main_block():
  mains = {module_name(p) for p in package_modules()
           if 'if __name__ == "__main__":' in p.read_text(encoding="utf-8")}
  assert mains and all(m == "main" or m in ENTRY_FRONTS or m.startswith("tools.")
                       for m in mains), sorted(mains)


def test_config_files_import_only_the_config_module():
  """configs/*.py describe runs with bert_jax.config's schemas, nothing else of ours."""
  for p in sorted((PKG.parent / "configs").rglob("*.py")):
    for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
      if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bert_jax"):
        assert node.module == "bert_jax" and [a.name for a in node.names] == ["config"], p
      if isinstance(node, ast.Import):
        assert not any(a.name.startswith("bert_jax") for a in node.names), p
