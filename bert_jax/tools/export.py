"""Export a (fine-tuned) model for inference: jax.export StableHLO and a TF SavedModel.

  python -m bert_jax.tools.export --workdir=runs/mrpc --output_dir=exported/mrpc [--saved_model]

An export directory is self-contained: it holds
- `model.jaxexport`: the serialized `jax.export` artifact (StableHLO, lowered for CPU, TPU
  and CUDA) of `outputs(params, input_ids, token_type_ids, attention_mask) -> dict`, with
  a symbolic batch dimension, so one file serves any batch size;
- `params.safetensors`: the weights, passed as the first argument rather than baked in as
  constants (no 2 GB serialization limit, no pickle, and the same file becomes the TF
  variables of the SavedModel);
- `serving.json`: the head, labels, max_seq_length, casing and model config;
- `vocab.txt` (or the SentencePiece model), so `bert_jax.tools.predict` can tokenize raw text;
- `saved_model/` (with --saved_model, needs the `tf` extra): the same function through
  `jax2tf`, callable from TensorFlow / TF Serving as `serving_default`.
`load(export_dir)` needs neither the Python model code nor its config.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import model as model_lib
from bert_jax import paths as paths_lib
from bert_jax import weights

HEADS = ("classification", "regression", "question_answering", "multiple_choice",
         "features")
INPUTS = ("input_ids", "token_type_ids", "attention_mask")
PLATFORMS = ("cpu", "tpu", "cuda")
EXPORT_FILE = "model.jaxexport"
PARAMS_FILE = "params.safetensors"
SPEC_FILE = "serving.json"


class ExportError(ValueError):
  """An export cannot be written or read; the message names the path and the fix."""


@dataclasses.dataclass
class ServingSpec:
  """What a served model computes and how its inputs are made (serving.json)."""
  head: str  # one of HEADS
  max_seq_length: int
  model: dict  # config.model (our key names)
  labels: list[str] = dataclasses.field(default_factory=list)  # class names
  num_choices: int = 0  # multiple_choice: inputs are [batch, num_choices, seq]
  do_lower_case: bool = True
  vocab_file: str = "vocab.txt"  # relative to the export directory
  task: str = ""  # e.g. "mrpc"
  text_columns: list[str] = dataclasses.field(default_factory=list)  # TSV/JSON fields

  def __post_init__(self):
    if self.head not in HEADS:
      raise ExportError(f"head={self.head!r}: use one of {', '.join(HEADS)}.")

  @property
  def input_shape(self) -> tuple:
    """Per-example input shape (after the batch dimension)."""
    if self.head == "multiple_choice":
      return (self.num_choices, self.max_seq_length)
    return (self.max_seq_length,)

  @property
  def output_names(self) -> tuple[str, ...]:
    return {"classification": ("logits", "probabilities"), "regression": ("score",),
            "question_answering": ("start_logits", "end_logits"),
            "multiple_choice": ("logits", "probabilities"),
            "features": ("sequence_output", "pooled_output")}[self.head]


def build_module(spec: ServingSpec):
  """The Flax module of a head (param tree as the fine-tuning tasks create it)."""
  cfg = model_lib.BertConfig.from_config(
      {**spec.model, "dropout_rate": 0.0, "attention_dropout_rate": 0.0})
  if spec.head == "classification":
    return model_lib.BertForSequenceClassification(cfg, num_labels=len(spec.labels))
  if spec.head == "regression":
    return model_lib.BertForSequenceClassification(cfg, num_labels=1)
  if spec.head == "question_answering":
    return model_lib.BertForQuestionAnswering(cfg)
  if spec.head == "multiple_choice":
    return model_lib.BertForMultipleChoice(cfg)
  return model_lib.BertModel(cfg)


def outputs_fn(spec: ServingSpec) -> Callable[..., dict[str, jax.Array]]:
  """(params, input_ids, token_type_ids, attention_mask) -> {output name: array}."""
  module = build_module(spec)

  def fn(params, input_ids, token_type_ids, attention_mask):
    out = module.apply({"params": params}, input_ids, token_type_ids, attention_mask,
                       deterministic=True)
    if spec.head in ("classification", "multiple_choice"):
      return {"logits": out, "probabilities": jax.nn.softmax(out, axis=-1)}
    if spec.head == "regression":
      return {"score": out[:, 0]}
    if spec.head == "question_answering":
      return {"start_logits": out[0], "end_logits": out[1]}
    return {"sequence_output": out[0].astype(jnp.float32),
            "pooled_output": out[1].astype(jnp.float32)}

  return fn


def export_stablehlo(spec: ServingSpec, params, platforms: Sequence[str] = PLATFORMS):
  """jax.export of outputs_fn with a symbolic batch dimension "b"."""
  from jax import export  # pylint: disable=g-import-not-at-top
  (batch,) = export.symbolic_shape("b")
  ids = jax.ShapeDtypeStruct((batch, *spec.input_shape), jnp.int32)
  abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
  return export.export(jax.jit(outputs_fn(spec)), platforms=tuple(platforms))(
      abstract, ids, ids, ids)


# ---------------------------------------------------------------------------------------
# Params <-> safetensors (flat "a/b/c" keys)
# ---------------------------------------------------------------------------------------

def flatten_params(params) -> dict[str, np.ndarray]:
  flat = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    key = "/".join(str(getattr(k, "key", k)) for k in path)
    flat[key] = np.ascontiguousarray(leaf)  # safetensors writes the raw buffer.
  return flat


def unflatten_params(flat: dict[str, np.ndarray]) -> dict:
  tree: dict = {}
  for key, value in flat.items():
    node = tree
    *parents, leaf = key.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


# ---------------------------------------------------------------------------------------
# Save / load
# ---------------------------------------------------------------------------------------

def save(export_dir: str, spec: ServingSpec, params, vocab_file: str,
         saved_model: bool = False, platforms: Sequence[str] = PLATFORMS) -> dict[str, str]:
  """Writes the export directory (see the module docstring); returns {what: path}."""
  from safetensors.numpy import save  # pylint: disable=g-import-not-at-top
  params = jax.tree_util.tree_map(np.asarray, params)
  exported = export_stablehlo(spec, params, platforms)
  paths_lib.makedirs(export_dir)
  paths = {"exported": paths_lib.join(export_dir, EXPORT_FILE),
           "params": paths_lib.join(export_dir, PARAMS_FILE),
           "spec": paths_lib.join(export_dir, SPEC_FILE)}
  paths_lib.write_bytes(paths["exported"], bytes(exported.serialize()))
  paths_lib.write_bytes(paths["params"], save(flatten_params(params)))
  if vocab_file:  # as bytes, under its own name (a SentencePiece .model stays one)
    spec.vocab_file = paths_lib.as_path(vocab_file).name
    paths["vocab"] = paths_lib.join(export_dir, spec.vocab_file)
    if not weights._same_file(vocab_file, paths["vocab"]):  # pylint: disable=protected-access
      paths_lib.copy(vocab_file, paths["vocab"])
  paths_lib.write_json(paths["spec"], dataclasses.asdict(spec))
  if saved_model:
    paths["saved_model"] = save_tf_saved_model(
        paths_lib.local_dir(paths_lib.join(export_dir, "saved_model")), spec, params)
  return paths


class Predictor:
  """A loaded export: call with int arrays, get numpy outputs; `encode` raw text."""

  def __init__(self, export_dir: str):
    from jax import export  # pylint: disable=g-import-not-at-top
    from safetensors.numpy import load  # pylint: disable=g-import-not-at-top
    self.export_dir = export_dir
    spec_path = paths_lib.join(export_dir, SPEC_FILE)
    if not paths_lib.is_file(spec_path):
      raise ExportError(f"{export_dir}: no {SPEC_FILE}; pass a directory written by "
                        "`python -m bert_jax.tools.export`.")
    self.spec = ServingSpec(**paths_lib.read_json(spec_path))
    self.exported = export.deserialize(
        bytearray(paths_lib.read_bytes(paths_lib.join(export_dir, EXPORT_FILE))))
    self.params = unflatten_params(load(paths_lib.read_bytes(
        paths_lib.join(export_dir, PARAMS_FILE))))
    self._call = jax.jit(self.exported.call)
    self._compiled = {}  # batch size -> program compiled ahead (compile())
    self._tokenizer = None

  @property
  def tokenizer(self):
    if self._tokenizer is None:
      from bert_jax.tokenization import load_tokenizer  # pylint: disable=g-import-not-at-top
      self._tokenizer = load_tokenizer(paths_lib.join(self.export_dir, self.spec.vocab_file),
                                       self.spec.do_lower_case)
    return self._tokenizer

  def __call__(self, input_ids, token_type_ids=None, attention_mask=None
               ) -> dict[str, np.ndarray]:
    input_ids = np.asarray(input_ids, np.int32)
    expected = tuple(self.spec.input_shape)
    if input_ids.shape[1:] != expected:
      raise ExportError(f"input_ids shape {input_ids.shape}: this model takes "
                        f"[batch, {', '.join(map(str, expected))}] (pad to max_seq_length).")
    if token_type_ids is None:
      token_type_ids = np.zeros_like(input_ids)
    if attention_mask is None:
      attention_mask = (input_ids != self.tokenizer.pad_id).astype(np.int32)
    call = self._compiled.get(input_ids.shape[0], self._call)
    out = call(self.params, input_ids, np.asarray(token_type_ids, np.int32),
               np.asarray(attention_mask, np.int32))
    return {k: np.asarray(v) for k, v in out.items()}

  def compile(self, batch_size: int, compile_fn: Callable | None = None):
    """Compiles the model for batches of `batch_size` rows, which __call__ then runs;
    `compile_fn(lowered) -> compiled` replaces `lowered.compile()` (bert_jax.tools.predict
    passes the memory preflight's, preflight.compile_checked). Returns the program."""
    ids = jax.ShapeDtypeStruct((batch_size, *self.spec.input_shape), np.int32)
    lowered = self._call.lower(self.params, ids, ids, ids)
    self._compiled[batch_size] = (compile_fn or (lambda l: l.compile()))(lowered)
    return self._compiled[batch_size]

  def encode(self, texts_a: Sequence[str], texts_b: Sequence[str] | None = None
             ) -> dict[str, np.ndarray]:
    """Raw text (pairs) -> padded model inputs, exactly as fine-tuning featurized them."""
    from bert_jax.finetune import encode_sentence_pairs  # pylint: disable=g-import-not-at-top
    return encode_sentence_pairs(self.tokenizer, texts_a, texts_b, self.spec.max_seq_length)


def load(export_dir: str) -> Predictor:
  """Loads an export directory written by `save` (no model code or config needed)."""
  return Predictor(export_dir)


# ---------------------------------------------------------------------------------------
# TF SavedModel through jax2tf (the `tf` extra)
# ---------------------------------------------------------------------------------------

def save_tf_saved_model(directory: str, spec: ServingSpec, params) -> str:
  """The outputs function as a TF SavedModel (`serving_default`), params as variables."""
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ExportError("--saved_model needs TensorFlow: pip install -e '.[tf]'.") from e
  shape = "(b, " + ", ".join(str(d) for d in spec.input_shape) + ")"
  tf_fn = jax2tf.convert(outputs_fn(spec), polymorphic_shapes=[None, shape, shape, shape],
                         with_gradient=False, native_serialization_platforms=("cpu", "tpu",
                                                                              "cuda"))
  module = tf.Module()
  module.params = tf.nest.map_structure(tf.Variable, params)
  signature = [tf.TensorSpec((None, *spec.input_shape), tf.int32, name=n) for n in INPUTS]

  @tf.function(input_signature=signature, autograph=False)
  def serve(input_ids, token_type_ids, attention_mask):
    return tf_fn(module.params, input_ids, token_type_ids, attention_mask)

  module.serve = serve
  tf.saved_model.save(module, directory, signatures={"serving_default": serve})
  return directory


# ---------------------------------------------------------------------------------------
# From a fine-tuning workdir or a pretrained checkpoint
# ---------------------------------------------------------------------------------------

def _read_json(path: str) -> dict:
  try:
    return paths_lib.read_json(path)
  except (OSError, json.JSONDecodeError) as e:
    raise ExportError(f"cannot read {path}: {e}") from e


def _vocab_of(config: dict, fallback_dir: str = "") -> str:
  from bert_jax import checkpoints  # pylint: disable=g-import-not-at-top
  vocab = config.get("vocab_file") or ""
  if not vocab and config.get("init_checkpoint"):
    vocab = checkpoints.vocab_file_of(config["init_checkpoint"])
  if not vocab and fallback_dir:
    vocab = checkpoints.vocab_file_of(fallback_dir)
  return vocab


def from_finetune_workdir(workdir: str) -> tuple[ServingSpec, Any, str]:
  """(spec, params, vocab_file) of a fine-tuning run (workdir/config.json + best/)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  config = _read_json(paths_lib.join(workdir, "config.json"))
  best = paths_lib.join(workdir, "best")
  if not paths_lib.is_dir(paths_lib.join(best, "params")):
    raise ExportError(f"{workdir}: no best/params; fine-tune with "
                      "--config.finetune.save_best=True first.")
  model_cfg = weights.model_config_from_bert_json(paths_lib.join(best, "config.json"))
  model = {**config.get("model", {}), **model_cfg.to_dict()}
  params = ocp.StandardCheckpointer().restore(
      weights._abs(paths_lib.join(best, "params")))  # pylint: disable=protected-access
  params = jax.tree_util.tree_map(np.asarray, params)
  task = config.get("task", "")
  if task == "glue":
    from bert_jax.data import glue as glue_data  # pylint: disable=g-import-not-at-top
    gspec = glue_data.get_task(config["glue"]["task"])
    spec = ServingSpec(
        head="regression" if gspec.is_regression else "classification",
        max_seq_length=int(config["data"]["max_seq_length"]), model=model,
        labels=list(gspec.labels or ()), do_lower_case=bool(config["do_lower_case"]),
        task=gspec.name, text_columns=[c for c in (gspec.text_a, gspec.text_b) if c])
  else:
    heads = {"squad": "question_answering", "swag": "multiple_choice"}
    if task not in heads:
      raise ExportError(f"{workdir}: config.task={task!r}; export knows glue, squad, swag.")
    spec = ServingSpec(head=heads[task], model=model,
                       max_seq_length=int(config["data"]["max_seq_length"]),
                       num_choices=int(config.get(task, {}).get("num_choices", 4))
                       if task == "swag" else 0,
                       do_lower_case=bool(config["do_lower_case"]), task=task)
  return spec, params, _vocab_of(config)


def from_pretrained(path: str, max_seq_length: int, do_lower_case: bool | None = None
                    ) -> tuple[ServingSpec, Any, str]:
  """(spec, params, vocab) of a pretrained encoder (any checkpoints.resolve spelling): the
  "features" head. Casing: the checkpoint's where it says (a different `do_lower_case`
  is an error), else `do_lower_case`, else lower-cased."""
  from bert_jax import checkpoints  # pylint: disable=g-import-not-at-top
  resolved = checkpoints.resolve(path)
  model_cfg, params = checkpoints.load_pretrained(path, do_lower_case)
  lower = resolved.do_lower_case if do_lower_case is None else do_lower_case
  spec = ServingSpec(head="features", max_seq_length=max_seq_length,
                     model=model_cfg.to_dict(),
                     do_lower_case=True if lower is None else bool(lower))
  return spec, params["bert"], resolved.vocab_file


def main(argv=None) -> int:
  import argparse  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(prog="python -m bert_jax.tools.export", description=__doc__)
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--workdir", help="a fine-tuning workdir (config.json + best/)")
  src.add_argument("--init_checkpoint", help="a pretrained checkpoint: export the encoder")
  p.add_argument("--output_dir", required=True)
  p.add_argument("--max_seq_length", type=int, default=128, help="with --init_checkpoint")
  p.add_argument("--do_lower_case", default="auto", choices=("auto", "true", "false"),
                 help="with --init_checkpoint; auto: the checkpoint's casing, else true")
  p.add_argument("--saved_model", action="store_true", help="also a TF SavedModel (tf extra)")
  args = p.parse_args(argv)
  try:
    if args.workdir:
      spec, params, vocab = from_finetune_workdir(args.workdir)
    else:
      lower = None if args.do_lower_case == "auto" else args.do_lower_case == "true"
      spec, params, vocab = from_pretrained(args.init_checkpoint, args.max_seq_length, lower)
    paths = save(args.output_dir, spec, params, vocab, saved_model=args.saved_model)
  except (ExportError, weights.CheckpointError) as e:
    print(f"bert_jax.tools.export: error: {e}")
    return 2
  print(f"exported {spec.head} model ({spec.task or 'encoder'}, seq {spec.max_seq_length}, "
        f"outputs {', '.join(spec.output_names)}) to {args.output_dir}:")
  for what, path in paths.items():
    print(f"  {what}: {path}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
