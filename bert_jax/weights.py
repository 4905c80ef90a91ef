"""Pretrained BERT weights in and out: Hugging Face, Google TF and our own orbax format.

Hugging Face and Google TF checkpoints name the same tensors the same way up to
spelling (`LayerNorm.weight` vs `LayerNorm/gamma`, torch `[out, in]` vs TF `[in, out]`),
so both are first read into one canonical flat dict in Hugging Face spelling and torch
layout; `canonical_to_params` / `params_to_canonical` convert that to and from our tree
(in the layer layout of the config: model.layers_layout). `load_pretrained(path)` recognises:

  (a) a Hugging Face directory: config.json + model.safetensors | pytorch_model.bin
  (b) a Google TF checkpoint: bert_config.json + bert_model.ckpt.{index,data-*} (read
      without TensorFlow, see tf_checkpoint.py), given as the directory or the prefix
  (c) ours, written by `python -m bert_jax.tools.convert`: model_config.json + params/ (orbax)

each with its vocabulary beside it (vocab.txt, or a SentencePiece .model). `save_converted` /
`save_hf` / `save_tf` write (c), (a) and (b). `resolve_foreign` turns the names users type
for them (a directory, Google's `bert_model.ckpt` prefix or `.zip`, a Hugging Face Hub id)
into a `Resolved` checkpoint (format, path, vocabulary, casing); checkpoints.resolve adds
our own runs and is the one entry point. Casing: `check_case` beside the one vocabulary
check `check_vocab`. Every file is read and written through bert_jax/paths.py (local or
gs://); only a .zip is extracted to a local cache directory.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import zipfile
from typing import Any

import ml_collections
import numpy as np

from bert_jax import config as config_lib
from bert_jax import model as model_lib
from bert_jax import paths
from bert_jax.model import BertConfig


class CheckpointError(ValueError):
  """A checkpoint cannot be read or does not fit; the message names the file and the fix."""


# Google bert_config.json / HF config.json key -> our config.model key.


def check_param_shapes(params, cfg: BertConfig) -> None:
  rows, width = params["bert"]["embeddings"]["word_embeddings"]["embedding"].shape
  if rows != cfg.vocab_size or width != cfg.hidden_size:
    raise CheckpointError(
        f"word embeddings are [{rows}, {width}] but the config says vocab_size="
        f"{cfg.vocab_size}, hidden_size={cfg.hidden_size}: use the checkpoint's own config.")


_CONFIG_KEYS = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "intermediate_size": "intermediate_size",
    "hidden_act": "hidden_act",
    "max_position_embeddings": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size",
    "hidden_dropout_prob": "dropout_rate",
    "attention_probs_dropout_prob": "attention_dropout_rate",
    "layer_norm_eps": "layer_norm_eps",
    "initializer_range": "initializer_range",
}


def model_config_from_bert_json(path: str) -> ml_collections.ConfigDict:
  """Reads a Google `bert_config.json` or HF `config.json` into our `config.model`."""
  try:
    raw = paths.read_json(path)
  except (OSError, json.JSONDecodeError) as e:
    raise CheckpointError(f"cannot read model config {path}: {e}") from e
  m = config_lib.model_config("base")
  for theirs, ours in _CONFIG_KEYS.items():
    if theirs in raw:
      m[ours] = type(m[ours])(raw[theirs])
  if m.hidden_act == "gelu_new":
    m.hidden_act = "gelu_tanh"
  config_lib.validate_model(m)
  return m


def model_config_to_bert_json(m) -> dict[str, Any]:
  """Our `config.model` -> HF/Google config.json dict."""
  out = {theirs: m[ours] for theirs, ours in _CONFIG_KEYS.items()}
  out["hidden_act"] = "gelu_new" if m["hidden_act"] == "gelu_tanh" else m["hidden_act"]
  out.update(model_type="bert", architectures=["BertForPreTraining"], pad_token_id=0)
  return out


# ---------------------------------------------------------------------------------------
# canonical (HF names, torch layout) <-> our params
# ---------------------------------------------------------------------------------------

def _ln(prefix: str, sd: dict, pop=False) -> dict:
  return {"scale": sd[prefix + ".weight"], "bias": sd[prefix + ".bias"]}


def canonical_to_params(sd: dict[str, np.ndarray], cfg: BertConfig) -> dict[str, Any]:
  """HF-named, torch-layout arrays -> {'bert': ..., and pre-training heads if present},
  the encoder layers in cfg's layout (cfg.scan_layers: stacked or one subtree each).

  Keys may carry a leading `bert.` (BertForPreTraining) or not (BertModel).
  """
  sd = {k[len("bert."):] if k.startswith("bert.") else k: np.asarray(v) for k, v in sd.items()}
  h, n, d = cfg.hidden_size, cfg.num_heads, cfg.head_dim
  try:
    emb = {
        "word_embeddings": {"embedding": sd["embeddings.word_embeddings.weight"]},
        "position_embeddings": {"embedding": sd["embeddings.position_embeddings.weight"]},
        "token_type_embeddings": {"embedding": sd["embeddings.token_type_embeddings.weight"]},
        "layer_norm": _ln("embeddings.LayerNorm", sd),
    }
    layers = {}
    for i in range(cfg.num_layers):
      p = f"encoder.layer.{i}."
      q, k, v = (sd[p + f"attention.self.{x}.weight"].T.reshape(h, n, d)
                 for x in ("query", "key", "value"))
      qb, kb, vb = (sd[p + f"attention.self.{x}.bias"].reshape(n, d)
                    for x in ("query", "key", "value"))
      layers[f"{model_lib.LAYER_PREFIX}{i}"] = {
          "qkv": {"kernel": np.stack([q, k, v], axis=1), "bias": np.stack([qb, kb, vb])},
          "attention_output": {
              "kernel": sd[p + "attention.output.dense.weight"].T.reshape(n, d, h),
              "bias": sd[p + "attention.output.dense.bias"]},
          "attention_layer_norm": _ln(p + "attention.output.LayerNorm", sd),
          "intermediate": {"kernel": sd[p + "intermediate.dense.weight"].T,
                           "bias": sd[p + "intermediate.dense.bias"]},
          "output": {"kernel": sd[p + "output.dense.weight"].T,
                     "bias": sd[p + "output.dense.bias"]},
          "output_layer_norm": _ln(p + "output.LayerNorm", sd),
      }
  except KeyError as e:
    raise CheckpointError(
        f"checkpoint has no tensor {e.args[0]!r}: is it a BERT checkpoint with "
        f"{cfg.num_layers} layers? (check num_hidden_layers in its config)") from e
  bert = {
      "embeddings": emb,
      "encoder": layers,  # one subtree per layer; stacked below if cfg.scan_layers
  }
  if "pooler.dense.weight" in sd:
    bert["pooler"] = {"kernel": sd["pooler.dense.weight"].T, "bias": sd["pooler.dense.bias"]}
  params: dict[str, Any] = {"bert": bert}
  if "cls.predictions.transform.dense.weight" in sd:
    bias = sd.get("cls.predictions.bias", sd.get("cls.predictions.decoder.bias"))
    params.update(
        mlm_transform={"kernel": sd["cls.predictions.transform.dense.weight"].T,
                       "bias": sd["cls.predictions.transform.dense.bias"]},
        mlm_layer_norm=_ln("cls.predictions.transform.LayerNorm", sd),
        mlm_output_bias=bias)
  if "cls.seq_relationship.weight" in sd:
    params["nsp"] = {"kernel": sd["cls.seq_relationship.weight"].T,
                     "bias": sd["cls.seq_relationship.bias"]}
  check_param_shapes(params, cfg)
  return model_lib.layers_layout(params, cfg.scan_layers)


def params_to_canonical(params: dict[str, Any], cfg: BertConfig,
                        prefix: str = "bert.") -> dict[str, np.ndarray]:
  """Inverse of `canonical_to_params`: our tree (either layer layout) -> HF names, torch
  layout."""
  h = cfg.hidden_size
  params = model_lib.unstack_layers(params)
  b = params["bert"]
  e = b["embeddings"]
  sd = {
      "embeddings.word_embeddings.weight": e["word_embeddings"]["embedding"],
      "embeddings.position_embeddings.weight": e["position_embeddings"]["embedding"],
      "embeddings.token_type_embeddings.weight": e["token_type_embeddings"]["embedding"],
      "embeddings.LayerNorm.weight": e["layer_norm"]["scale"],
      "embeddings.LayerNorm.bias": e["layer_norm"]["bias"],
  }
  for i in range(cfg.num_layers):
    L = b["encoder"][f"{model_lib.LAYER_PREFIX}{i}"]
    p = f"encoder.layer.{i}."
    for j, x in enumerate(("query", "key", "value")):
      sd[p + f"attention.self.{x}.weight"] = np.asarray(L["qkv"]["kernel"][:, j]).reshape(h, h).T
      sd[p + f"attention.self.{x}.bias"] = np.asarray(L["qkv"]["bias"][j]).reshape(h)
    sd[p + "attention.output.dense.weight"] = np.asarray(
        L["attention_output"]["kernel"]).reshape(h, h).T
    sd[p + "attention.output.dense.bias"] = L["attention_output"]["bias"]
    sd[p + "attention.output.LayerNorm.weight"] = L["attention_layer_norm"]["scale"]
    sd[p + "attention.output.LayerNorm.bias"] = L["attention_layer_norm"]["bias"]
    sd[p + "intermediate.dense.weight"] = np.asarray(L["intermediate"]["kernel"]).T
    sd[p + "intermediate.dense.bias"] = L["intermediate"]["bias"]
    sd[p + "output.dense.weight"] = np.asarray(L["output"]["kernel"]).T
    sd[p + "output.dense.bias"] = L["output"]["bias"]
    sd[p + "output.LayerNorm.weight"] = L["output_layer_norm"]["scale"]
    sd[p + "output.LayerNorm.bias"] = L["output_layer_norm"]["bias"]
  if "pooler" in b:
    sd["pooler.dense.weight"] = np.asarray(b["pooler"]["kernel"]).T
    sd["pooler.dense.bias"] = b["pooler"]["bias"]
  out = {prefix + k: np.ascontiguousarray(np.asarray(v)) for k, v in sd.items()}
  if "mlm_transform" in params:
    out["cls.predictions.transform.dense.weight"] = np.asarray(params["mlm_transform"]["kernel"]).T
    out["cls.predictions.transform.dense.bias"] = np.asarray(params["mlm_transform"]["bias"])
    out["cls.predictions.transform.LayerNorm.weight"] = np.asarray(params["mlm_layer_norm"]["scale"])
    out["cls.predictions.transform.LayerNorm.bias"] = np.asarray(params["mlm_layer_norm"]["bias"])
    out["cls.predictions.bias"] = np.asarray(params["mlm_output_bias"])
  if "nsp" in params:
    out["cls.seq_relationship.weight"] = np.asarray(params["nsp"]["kernel"]).T
    out["cls.seq_relationship.bias"] = np.asarray(params["nsp"]["bias"])
  return {k: np.ascontiguousarray(v) for k, v in out.items()}


# ---------------------------------------------------------------------------------------
# Hugging Face directories
# ---------------------------------------------------------------------------------------

def read_hf_state_dict(directory: str) -> dict[str, np.ndarray]:
  """model.safetensors, else pytorch_model.bin with torch.load(weights_only=True)."""
  st = paths.join(directory, "model.safetensors")
  if paths.is_file(st):
    from safetensors.numpy import load
    return load(paths.read_bytes(st))
  binf = paths.join(directory, "pytorch_model.bin")
  if paths.is_file(binf):
    import torch  # only for this format; weights_only refuses pickled code.
    sd = torch.load(io.BytesIO(paths.read_bytes(binf)), map_location="cpu",
                    weights_only=True)
    return {k: v.float().numpy() for k, v in sd.items()}
  raise CheckpointError(
      f"{directory}: no model.safetensors or pytorch_model.bin; a Hugging Face BERT "
      "directory holds config.json, one of those weight files and vocab.txt.")


def load_hf(directory: str) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
  """A Hugging Face BERT directory -> (config.model, params)."""
  m = model_config_from_bert_json(paths.join(directory, "config.json"))
  params = canonical_to_params(read_hf_state_dict(directory), BertConfig.from_config(m))
  return m, params


# ---------------------------------------------------------------------------------------
# Google TF checkpoints (bert_model.ckpt): Google names <-> canonical names
# ---------------------------------------------------------------------------------------

# Exceptions to the generic rule below (scope/kernel -> scope.weight transposed, ...).
_GOOGLE_SPECIAL = {
    "cls/predictions/output_bias": "cls.predictions.bias",
    "cls/seq_relationship/output_weights": "cls.seq_relationship.weight",  # already [2, H]
    "cls/seq_relationship/output_bias": "cls.seq_relationship.bias",
}
_GOOGLE_LEAF = {"kernel": "weight", "gamma": "weight", "beta": "bias", "bias": "bias"}


def _google_to_canonical_name(name: str) -> tuple[str, bool] | None:
  """Google variable name -> (canonical name, transpose?); None for non-weights."""
  if name in _GOOGLE_SPECIAL:
    return _GOOGLE_SPECIAL[name], False
  if not name.startswith(("bert/", "cls/")) or name.endswith(("/adam_m", "/adam_v")):
    return None  # global_step, optimizer slots, fine-tuning heads of run_classifier.
  parts = re.sub(r"/layer_(\d+)/", r"/layer.\1/", name).split("/")
  if parts[-1].endswith("_embeddings"):
    return ".".join(parts) + ".weight", False
  if parts[-1] not in _GOOGLE_LEAF:
    return None
  return ".".join(parts[:-1] + [_GOOGLE_LEAF[parts[-1]]]), parts[-1] == "kernel"


def google_to_canonical(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Google-named TF arrays (kernels [in, out]) -> canonical dict (torch layout)."""
  out = {}
  for name, value in tensors.items():
    mapped = _google_to_canonical_name(name)
    if mapped is not None:
      out[mapped[0]] = value.T if mapped[1] else value
  return out


def canonical_to_google(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Inverse of `google_to_canonical` (canonical keys as `params_to_canonical` writes)."""
  special = {v: k for k, v in _GOOGLE_SPECIAL.items()}
  out = {}
  for name, value in sd.items():
    value = np.asarray(value)
    if name in special:
      out[special[name]] = value
      continue
    scope, leaf = name.rsplit(".", 1)
    scope = re.sub(r"\.layer\.(\d+)\.", r".layer_\1.", scope).replace(".", "/")
    if scope.endswith("_embeddings"):
      out[scope] = value
    elif scope.endswith("LayerNorm"):
      out[f"{scope}/{'gamma' if leaf == 'weight' else 'beta'}"] = value
    elif leaf == "weight":
      out[scope + "/kernel"] = np.ascontiguousarray(value.T)
    else:
      out[scope + "/bias"] = value
  return out


def _tf_prefix(path: str) -> str:
  """A checkpoint directory or prefix -> the prefix (DIR/bert_model.ckpt)."""
  if paths.is_file(path + ".index"):
    return path
  if paths.is_dir(path):
    state = paths.join(path, "checkpoint")  # TF's "latest checkpoint" state file.
    if paths.is_file(state):
      m = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', paths.read_text(state), re.M)
      if m:
        return paths.join(path, m.group(1))
    indexes = sorted(f[:-len(".index")] for f in paths.listdir(path) if f.endswith(".index"))
    if "bert_model.ckpt" in indexes:
      return paths.join(path, "bert_model.ckpt")
    if len(indexes) == 1:
      return paths.join(path, indexes[0])
    if indexes:
      raise CheckpointError(f"{path} holds several TF checkpoints {indexes}: pass one "
                            f"prefix, e.g. {paths.join(path, indexes[-1])}.")
  raise CheckpointError(f"{path}: no TF checkpoint (*.index + *.data-*) found.")


def load_tf(path: str) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
  """A Google TF BERT checkpoint (directory or prefix) -> (config.model, params)."""
  from bert_jax import tf_checkpoint
  prefix = _tf_prefix(path)
  cfg_file = paths.join(_parent(prefix), "bert_config.json")
  if not paths.is_file(cfg_file):
    raise CheckpointError(
        f"{cfg_file} not found: a Google BERT checkpoint needs its bert_config.json "
        "beside bert_model.ckpt.* (it ships in the same zip).")
  m = model_config_from_bert_json(cfg_file)
  try:
    sd = google_to_canonical(tf_checkpoint.read_checkpoint(prefix))
  except tf_checkpoint.TFCheckpointError as e:
    raise CheckpointError(str(e)) from e
  if not sd:
    raise CheckpointError(
        f"{prefix}: no BERT variables (bert/..., cls/...): is it a TF2 object-based "
        "checkpoint? Convert it with the Model Garden, or use a Hugging Face directory.")
  return m, canonical_to_params(sd, BertConfig.from_config(m))


def save_tf(output_dir: str, model_config, params: dict[str, Any],
            vocab_file: str = "", do_lower_case: bool | None = None) -> str:
  """Writes a Google-format checkpoint: bert_config.json, bert_model.ckpt.*, vocab.txt
  (+ tokenizer_config.json with the casing, when known)."""
  from bert_jax import tf_checkpoint
  paths.makedirs(output_dir)
  cfg = BertConfig.from_config(model_config)
  tensors = canonical_to_google(params_to_canonical(_numpy_tree(params), cfg))
  prefix = paths.join(output_dir, "bert_model.ckpt")
  tf_checkpoint.write_checkpoint(prefix, tensors)
  google_keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size", "hidden_act", "hidden_dropout_prob",
                 "attention_probs_dropout_prob", "max_position_embeddings",
                 "type_vocab_size", "initializer_range")
  bert_json = model_config_to_bert_json(model_config)
  _write_json(paths.join(output_dir, "bert_config.json"),
              {k: bert_json[k] for k in google_keys})
  _copy_vocab(vocab_file, output_dir)
  _write_casing(output_dir, do_lower_case)
  return prefix


# ---------------------------------------------------------------------------------------
# Our converted format (orbax) and Hugging Face export
# ---------------------------------------------------------------------------------------

MODEL_CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"


def _write_json(path: str, obj) -> None:
  paths.write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _parent(path: str) -> str:
  """The directory holding `path` (local or gs://)."""
  return str(paths.as_path(path).parent)


def _abs(path: str) -> str:
  """Orbax wants absolute paths: local ones made absolute, gs:// as is."""
  return path if paths.is_remote(path) else os.path.abspath(path)  # io: local-only (path string)


def _same_file(a: str, b: str) -> bool:
  return a == b if paths.is_remote(a) or paths.is_remote(b) else _abs(a) == _abs(b)


def vocab_name(vocab_file: str) -> str:
  """The name a copied vocabulary keeps: a SentencePiece model its own (`sp.model`: the
  suffix is how tokenization.load_tokenizer knows it), a WordPiece one `vocab.txt`."""
  name = paths.as_path(vocab_file).name
  return name if name.endswith(".model") else "vocab.txt"


def copy_vocab(vocab_file: str, output_dir: str) -> str:
  """Copies a vocabulary (as bytes: a .model file is binary) into output_dir; returns
  the copy's path ('' without a vocabulary)."""
  if not vocab_file:
    return ""
  dst = paths.join(output_dir, vocab_name(vocab_file))
  if not _same_file(vocab_file, dst):
    paths.copy(vocab_file, dst)
  return dst


_copy_vocab = copy_vocab

# The Hugging Face tokenizer file that carries the casing (do_lower_case).
TOKENIZER_CONFIG = "tokenizer_config.json"


def _write_casing(output_dir: str, do_lower_case: bool | None) -> None:
  """tokenizer_config.json {"do_lower_case": ...} (Hugging Face's file) when known."""
  if do_lower_case is not None:
    _write_json(paths.join(output_dir, TOKENIZER_CONFIG),
                {"do_lower_case": bool(do_lower_case), "tokenizer_class": "BertTokenizer"})


def _numpy_tree(params):
  import jax
  from flax.linen import meta
  return jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x)), meta.unbox(params))


def save_converted(output_dir: str, model_config, params: dict[str, Any],
                   vocab_file: str = "", do_lower_case: bool | None = None) -> str:
  """Writes OUTPUT/params (orbax), OUTPUT/model_config.json and OUTPUT/vocab.txt (+
  tokenizer_config.json with the casing, when known)."""
  import orbax.checkpoint as ocp
  output_dir = _abs(output_dir)
  paths.makedirs(output_dir)
  params_dir = paths.join(output_dir, PARAMS_DIR)
  if paths.exists(params_dir):
    raise CheckpointError(f"{params_dir} already exists: pass a new --output directory "
                          "(converted checkpoints are never overwritten).")
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(params_dir, _numpy_tree(params))
    ckptr.wait_until_finished()
  m = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
  _write_json(paths.join(output_dir, MODEL_CONFIG_FILE), m)
  _copy_vocab(vocab_file, output_dir)
  _write_casing(output_dir, do_lower_case)
  return output_dir


def load_converted(directory: str) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
  """Reads a directory written by `save_converted` -> (config.model, numpy params)."""
  directory = _abs(directory)
  m = config_lib.model_config("base")
  saved = paths.read_json(paths.join(directory, MODEL_CONFIG_FILE))
  unknown = sorted(set(saved) - set(m))
  if unknown:
    raise CheckpointError(
        f"{directory}/{MODEL_CONFIG_FILE} has unknown key(s) {unknown}: it was written by "
        "another bert_jax version; remove them or re-run bert_jax.tools.convert.")
  m.update(saved)
  config_lib.validate_model(m)
  params = restore_numpy(paths.join(directory, PARAMS_DIR))
  check_param_shapes(params, BertConfig.from_config(m))
  # Written by any bert_jax version: the layers come back in the layout m describes.
  return m, model_lib.layers_layout(params, m.scan_layers)


def restore_numpy(path: str) -> dict[str, Any]:
  """An orbax params tree -> host numpy arrays (no device placement: the caller shards
  it as it needs)."""
  import jax
  import orbax.checkpoint as ocp
  ckptr = ocp.PyTreeCheckpointer()
  path = _abs(path)
  tree = ckptr.metadata(path).item_metadata.tree
  restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                                        tree)
  return ckptr.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))


def save_hf(output_dir: str, model_config, params: dict[str, Any],
            vocab_file: str = "", do_lower_case: bool | None = None) -> str:
  """Writes a Hugging Face directory (config.json, model.safetensors, vocab.txt, and
  tokenizer_config.json with the casing when known) that
  `transformers.BertForPreTraining.from_pretrained` (or BertModel) loads."""
  from safetensors.numpy import save
  paths.makedirs(output_dir)
  params = _numpy_tree(params)
  cfg = BertConfig.from_config(model_config)
  sd = params_to_canonical(params, cfg)
  hf_json = model_config_to_bert_json(model_config)
  if "mlm_transform" not in params:
    hf_json["architectures"] = ["BertModel"]
  _write_json(paths.join(output_dir, "config.json"), hf_json)
  paths.write_bytes(paths.join(output_dir, "model.safetensors"), save(
      {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()},
      metadata={"format": "pt"}))
  _copy_vocab(vocab_file, output_dir)
  _write_casing(output_dir, do_lower_case)
  return output_dir


def _vocab_first_difference(path_a: str, path_b: str) -> str | None:
  """None if the two vocabularies list the same tokens; else 'line N: x vs y'."""
  if path_a.endswith(".model") or path_b.endswith(".model"):  # SentencePiece: binary
    same = paths.read_bytes(path_a) == paths.read_bytes(path_b)
    return None if same else "different SentencePiece models"
  a, b = paths.read_text(path_a).splitlines(), paths.read_text(path_b).splitlines()
  for i, (x, y) in enumerate(zip(a, b), start=1):
    if x != y:
      return f"line {i}: {x!r} vs {y!r}"
  if len(a) != len(b):
    return f"{len(a)} vs {len(b)} lines"
  return None


def check_vocab(vocab_file: str, model_config, *, checkpoint: str = "",
                checkpoint_vocab: str = "", config_vocab_file: str | None = None) -> int:
  """The one vocabulary check: raises unless `vocab_file` can feed this model.

  - One token per word-embedding row (`model_config["vocab_size"]`), else CheckpointError
    naming the vocabulary, `checkpoint` (or config.model) and the fix; with
    `config_vocab_file` (config.vocab_file of a pre-training run; "" = the bundled
    vocabulary) a ConfigError naming config.vocab_file, config.model.vocab_size and both
    fixes.
  - When the checkpoint ships its own vocabulary (`checkpoint_vocab`) and the config
    names another, the two must list the same tokens (the first difference is named).
  Returns the vocabulary size. (A missing file raises TokenizerError from tokenization.)
  """
  from bert_jax import tokenization
  if checkpoint_vocab and not _same_file(checkpoint_vocab, vocab_file):
    diff = _vocab_first_difference(vocab_file, checkpoint_vocab)
    if diff is not None:
      raise CheckpointError(
          f"config.vocab_file={vocab_file} differs from the vocabulary of init_checkpoint "
          f"{checkpoint_vocab} ({diff}): token ids would not match the embeddings; leave "
          "config.vocab_file empty to use the checkpoint's vocab.txt.")
  n = tokenization.load_tokenizer(vocab_file).vocab_size
  rows = model_config["vocab_size"]
  if n == rows:
    return n
  if config_vocab_file is None:
    raise CheckpointError(
        f"vocabulary {vocab_file} has {n} tokens but {checkpoint or 'the model'} has "
        f"vocab_size={rows} word embeddings: use the vocab.txt that ships with the "
        f"checkpoint (config.vocab_file), or set --config.model.vocab_size={n} when "
        "training from scratch.")
  which = (f"config.vocab_file={config_vocab_file} has {n} tokens" if config_vocab_file else
           f"config.vocab_file is empty, so the bundled {n}-token vocabulary ({vocab_file}) "
           "would be used")
  raise config_lib.ConfigError(
      f"{which}, but config.model.vocab_size={rows} word-embedding rows: set "
      f"--config.vocab_file=PATH/vocab.txt to a {rows}-token vocabulary (e.g. the vocab.txt "
      f"of Google's BERT release), or train a model for this one with "
      f"--config.model.vocab_size={n}.")




# ---------------------------------------------------------------------------------------
# Casing: what a checkpoint says about do_lower_case, checked against the config
# ---------------------------------------------------------------------------------------

# Google's release names say the casing (run_classifier.py's
# validate_case_matches_checkpoint): uncased_L-12_H-768_A-12, wwm_cased_L-24_H-1024_A-16,
# multi_cased_..., multilingual_... and chinese_... (both lower-cased).
_GOOGLE_NAME = re.compile(
    r"(?:^|[^A-Za-z])(uncased|cased|multilingual|chinese)_L-\d+_H-\d+_A-\d+")


def casing_of(directory: str, names: tuple[str, ...] = ()) -> tuple[bool | None, str]:
  """(do_lower_case, where it was read) of a checkpoint directory: its Hugging Face
  tokenizer_config.json, else a Google release name among `names` (the directory, zip or
  prefix names); (None, "") when the checkpoint does not say."""
  tc = paths.join(directory, TOKENIZER_CONFIG)
  if paths.is_file(tc):
    try:
      said = paths.read_json(tc).get("do_lower_case")
    except (OSError, ValueError, AttributeError):
      said = None
    if isinstance(said, bool):
      return said, tc
  for name in names:
    m = _GOOGLE_NAME.search(name)
    if m:
      return m.group(1) != "cased", f"Google's model name {m.group(0).lstrip('/_-')}"
  return None, ""


def check_case(do_lower_case: bool, checkpoint_lower: bool | None, checkpoint: str,
               source: str = "", key: str = "config.do_lower_case") -> None:
  """Google's validate_case_matches_checkpoint: raises CheckpointError when the config
  lower-cases text for a cased checkpoint (or the reverse), naming both and the fix.
  `checkpoint_lower` None (the checkpoint does not say) passes."""
  if checkpoint_lower is None or bool(do_lower_case) == checkpoint_lower:
    return
  said = "uncased (lower-cased text)" if checkpoint_lower else "cased"
  flag = f"--{key}={checkpoint_lower}"
  raise CheckpointError(
      f"{key}={bool(do_lower_case)} but checkpoint {checkpoint} is {said}, as "
      f"{source or 'it says'}: its token ids would not match the text it was trained on. "
      f"Set {flag}, or use a{'n uncased' if do_lower_case else ' cased'} checkpoint.")


# ---------------------------------------------------------------------------------------
# Resolving the names users type: directories, Google prefix/.zip, Hugging Face Hub ids
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class Resolved:
  """A checkpoint spelling resolved to what the loaders read."""
  spelling: str  # what the user typed
  # "hf" | "tf" | "bert_jax" (converted) | "bert_jax_run" (pre-training step) |
  # "bert_jax_best" (a fine-tuning run's best params)
  format: str
  path: str  # the directory, TF prefix or step directory the loader reads
  vocab_file: str = ""  # the vocabulary shipped with it ("" = none)
  do_lower_case: bool | None = None  # what it says about casing (None: silent)
  casing_source: str = ""  # where that was read


def vocab_in(directory: str) -> str:
  """The vocabulary inside a checkpoint directory: vocab.txt, else one *.model file."""
  v = paths.join(directory, "vocab.txt")
  if paths.is_file(v):
    return v
  models = [n for n in paths.listdir(directory) if n.endswith(".model")]
  return paths.join(directory, models[0]) if models else ""


def classify_dir(directory: str) -> str | None:
  """'bert_jax' | 'hf' | 'tf' for a directory holding that format, else None."""
  names = set(paths.listdir(directory))
  if MODEL_CONFIG_FILE in names and PARAMS_DIR in names:
    return "bert_jax"
  if "config.json" in names:
    return "hf"
  if "bert_config.json" in names or any(n.endswith(".index") for n in names):
    return "tf"
  return None


def _resolved_dir(spelling: str, directory: str, fmt: str, path: str = "",
                  names: tuple[str, ...] = ()) -> Resolved:
  lower, source = casing_of(directory, names + (spelling, directory))
  return Resolved(spelling, fmt, path or directory, vocab_in(directory), lower, source)


def extract_zip(path: str, target: str | None = None) -> str:
  """Extracts a checkpoint .zip (local or gs://) inside `target` (default: a cache
  directory keyed by the archive's path and size, reused when already there), refusing
  members that would land outside it; returns the directory that holds the checkpoint."""
  if target is None:
    st = paths.as_path(path).stat()
    key = hashlib.sha256(f"{path}:{st.length}:{st.mtime}".encode()).hexdigest()[:16]
    stem = paths.as_path(path).name[:-len(".zip")]
    target = os.path.join(paths.cache_dir(), "zips", f"{stem}-{key}")  # io: local-only (cache dir)
  target = os.path.realpath(target)  # io: local-only (extraction happens locally)
  done = os.path.join(target, ".extracted")  # io: local-only (cache marker)
  if not os.path.isfile(done):  # io: local-only (cache marker)
    tmp = f"{target}.tmp-{os.getpid()}"
    try:
      with paths.open(path, "rb") as f, zipfile.ZipFile(f) as z:
        root = os.path.realpath(tmp)  # io: local-only (safety check)
        for member in z.namelist():
          dest = os.path.realpath(os.path.join(root, member))  # io: local-only (safety check)
          if os.path.commonpath([dest, root]) != root:  # io: local-only (safety check)
            raise CheckpointError(f"{path}: member {member!r} would be written outside the "
                                  "extraction directory; refusing this archive.")
        z.extractall(tmp)
      paths.write_text(os.path.join(tmp, ".extracted"), path + "\n")  # io: local-only (cache)
      paths.rmtree(target)  # an older partial extraction
      os.replace(tmp, target)  # io: local-only (atomic publish of the cache entry)
    finally:
      paths.rmtree(tmp)
  for root, dirs, files in sorted(os.walk(target)):  # io: local-only (cache dir)
    dirs.sort()
    if {"config.json", "bert_config.json", MODEL_CONFIG_FILE} & set(files):
      return root
  raise CheckpointError(f"{path}: no bert_config.json or config.json inside the archive.")


# A Hub id: "name" or "org/name" (letters, digits, . _ -).
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
# The files of a BERT repository the loaders read (weights: safetensors first).
_HUB_FILES = ["config.json", "vocab.txt", TOKENIZER_CONFIG, "model.safetensors", "*.model"]


def hub_cache() -> tuple[str, bool]:
  """(the Hub cache directory, offline?) as huggingface_hub would use them now:
  HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub; HF_HUB_OFFLINE."""
  home = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")  # io: local-only (Hub cache)
  hf_home = os.environ.get("HF_HOME") or os.path.join(home, "huggingface")  # io: local-only (Hub cache)
  cache = os.environ.get("HF_HUB_CACHE") or os.path.join(hf_home, "hub")  # io: local-only (Hub cache)
  offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
  return cache, offline


def _hub_snapshot(repo_id: str, tried: list[str]) -> str | None:
  """The local snapshot directory of a Hub repository (downloaded unless offline)."""
  try:
    import huggingface_hub
  except ImportError:
    tried.append(f"Hugging Face Hub id {repo_id}: huggingface_hub is not installed")
    return None
  cache, offline = hub_cache()
  # Hugging Face moved Google's models under google-bert/ (bert-base-uncased ->
  # google-bert/bert-base-uncased); a cache may hold either name.
  candidates = [repo_id] + ([f"google-bert/{repo_id}"] if repo_id.startswith("bert-") else [])
  for rid in candidates:
    try:
      d = huggingface_hub.snapshot_download(rid, cache_dir=cache, local_files_only=offline,
                                            allow_patterns=_HUB_FILES)
      if not paths.is_file(paths.join(d, "model.safetensors")) and not offline:
        d = huggingface_hub.snapshot_download(  # an older repository: torch weights
            rid, cache_dir=cache, allow_patterns=_HUB_FILES + ["pytorch_model.bin"])
    except Exception as e:  # pylint: disable=broad-except  (each reason is listed)
      why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      where = f"offline (HF_HUB_OFFLINE), not in the cache {cache}" if offline else why
      tried.append(f"Hugging Face Hub id {rid}: {where}")
      continue
    if paths.is_file(paths.join(d, "config.json")):
      return d
    tried.append(f"Hugging Face Hub id {rid}: its snapshot {d} has no config.json")
  return None


def resolve_foreign(spelling: str, tried: list[str]) -> Resolved | None:
  """A Google TF directory / `bert_model.ckpt` prefix / `.zip`, a Hugging Face directory
  or Hub id, or a converted directory -> Resolved; None (with what was tried appended to
  `tried`) if `spelling` is none of them."""
  if spelling.endswith(".zip"):
    if not paths.is_file(spelling):
      tried.append(f"a Google .zip: {spelling} does not exist")
      return None
    directory = extract_zip(spelling)
    fmt = classify_dir(directory)
    r = _resolved_dir(spelling, directory, fmt or "tf",
                      names=(paths.as_path(spelling).name, paths.as_path(directory).name))
    if fmt == "tf":
      r.path = _tf_prefix(directory)
    return r
  if spelling.endswith(".index") and paths.is_file(spelling):
    spelling = spelling[:-len(".index")]  # bert_model.ckpt.index -> the prefix
  if paths.is_dir(spelling):
    fmt = classify_dir(spelling)
    if fmt is not None:
      return _resolved_dir(spelling, spelling, fmt)
    tried.append(
        f"the directory {spelling}: none of config.json (Hugging Face), bert_config.json + "
        f"bert_model.ckpt.index (Google TF), {MODEL_CONFIG_FILE} + {PARAMS_DIR}/ "
        "(bert_jax.tools.convert) in it")
    return None
  if paths.is_file(spelling + ".index"):
    parent = _parent(spelling)
    return _resolved_dir(spelling, parent, "tf", path=spelling,
                         names=(paths.as_path(parent).name,))
  if paths.exists(spelling):
    tried.append(f"{spelling}: a file, not a checkpoint directory, prefix or .zip")
    return None
  tried.append(f"a local or gs:// path: {spelling}: no such file or directory "
               f"(nor {paths.as_path(spelling).name}.index for a TF prefix)")
  if paths.is_remote(spelling) or not _HUB_ID.match(spelling):
    return None
  directory = _hub_snapshot(spelling, tried)
  if directory is None:
    return None
  return _resolved_dir(spelling, directory, "hf")
