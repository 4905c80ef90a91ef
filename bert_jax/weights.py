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

each with its vocab.txt beside it. `save_converted` / `save_hf` / `save_tf` write (c), (a)
and (b).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any

import ml_collections
import numpy as np

from bert_jax import config as config_lib
from bert_jax import model as model_lib
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
    with open(path, encoding="utf-8") as f:
      raw = json.load(f)
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
  st = os.path.join(directory, "model.safetensors")
  if os.path.isfile(st):
    from safetensors.numpy import load_file
    return load_file(st)
  binf = os.path.join(directory, "pytorch_model.bin")
  if os.path.isfile(binf):
    import torch  # only for this format; weights_only refuses pickled code.
    sd = torch.load(binf, map_location="cpu", weights_only=True)
    return {k: v.float().numpy() for k, v in sd.items()}
  raise CheckpointError(
      f"{directory}: no model.safetensors or pytorch_model.bin; a Hugging Face BERT "
      "directory holds config.json, one of those weight files and vocab.txt.")


def load_hf(directory: str) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
  """A Hugging Face BERT directory -> (config.model, params)."""
  m = model_config_from_bert_json(os.path.join(directory, "config.json"))
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
  if os.path.isfile(path + ".index"):
    return path
  if os.path.isdir(path):
    state = os.path.join(path, "checkpoint")  # TF's "latest checkpoint" state file.
    if os.path.isfile(state):
      with open(state, encoding="utf-8") as f:
        m = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', f.read(), re.M)
      if m:
        return os.path.join(path, m.group(1))
    indexes = sorted(f[:-len(".index")] for f in os.listdir(path) if f.endswith(".index"))
    if "bert_model.ckpt" in indexes:
      return os.path.join(path, "bert_model.ckpt")
    if len(indexes) == 1:
      return os.path.join(path, indexes[0])
    if indexes:
      raise CheckpointError(f"{path} holds several TF checkpoints {indexes}: pass one "
                            f"prefix, e.g. {os.path.join(path, indexes[-1])}.")
  raise CheckpointError(f"{path}: no TF checkpoint (*.index + *.data-*) found.")


def load_tf(path: str) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
  """A Google TF BERT checkpoint (directory or prefix) -> (config.model, params)."""
  from bert_jax import tf_checkpoint
  prefix = _tf_prefix(path)
  cfg_file = os.path.join(os.path.dirname(prefix), "bert_config.json")
  if not os.path.isfile(cfg_file):
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
            vocab_file: str = "") -> str:
  """Writes a Google-format checkpoint: bert_config.json, bert_model.ckpt.*, vocab.txt."""
  from bert_jax import tf_checkpoint
  os.makedirs(output_dir, exist_ok=True)
  cfg = BertConfig.from_config(model_config)
  tensors = canonical_to_google(params_to_canonical(_numpy_tree(params), cfg))
  prefix = os.path.join(output_dir, "bert_model.ckpt")
  tf_checkpoint.write_checkpoint(prefix, tensors)
  google_keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size", "hidden_act", "hidden_dropout_prob",
                 "attention_probs_dropout_prob", "max_position_embeddings",
                 "type_vocab_size", "initializer_range")
  bert_json = model_config_to_bert_json(model_config)
  _write_json(os.path.join(output_dir, "bert_config.json"),
              {k: bert_json[k] for k in google_keys})
  _copy_vocab(vocab_file, output_dir)
  return prefix


# ---------------------------------------------------------------------------------------
# Our converted format (orbax) and Hugging Face export
# ---------------------------------------------------------------------------------------

MODEL_CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"


def _write_json(path: str, obj) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write("\n")


def _copy_vocab(vocab_file: str, output_dir: str) -> None:
  if vocab_file:
    dst = os.path.join(output_dir, "vocab.txt")
    if os.path.abspath(vocab_file) != os.path.abspath(dst):
      shutil.copyfile(vocab_file, dst)


def _numpy_tree(params):
  import jax
  from flax.linen import meta
  return jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x)), meta.unbox(params))


def save_converted(output_dir: str, model_config, params: dict[str, Any],
                   vocab_file: str = "") -> str:
  """Writes OUTPUT/params (orbax), OUTPUT/model_config.json and OUTPUT/vocab.txt."""
  import orbax.checkpoint as ocp
  output_dir = os.path.abspath(output_dir)
  os.makedirs(output_dir, exist_ok=True)
  params_dir = os.path.join(output_dir, PARAMS_DIR)
  if os.path.exists(params_dir):
    raise CheckpointError(f"{params_dir} already exists: pass a new --output directory "
                          "(converted checkpoints are never overwritten).")
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(params_dir, _numpy_tree(params))
    ckptr.wait_until_finished()
  m = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
  _write_json(os.path.join(output_dir, MODEL_CONFIG_FILE), m)
  _copy_vocab(vocab_file, output_dir)
  return output_dir


def load_converted(directory: str) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
  """Reads a directory written by `save_converted` -> (config.model, numpy params)."""
  import jax
  import orbax.checkpoint as ocp
  directory = os.path.abspath(directory)
  m = config_lib.model_config("base")
  with open(os.path.join(directory, MODEL_CONFIG_FILE), encoding="utf-8") as f:
    saved = json.load(f)
  unknown = sorted(set(saved) - set(m))
  if unknown:
    raise CheckpointError(
        f"{directory}/{MODEL_CONFIG_FILE} has unknown key(s) {unknown}: it was written by "
        "another bert_jax version; remove them or re-run bert_jax.tools.convert.")
  m.update(saved)
  config_lib.validate_model(m)
  path = os.path.join(directory, PARAMS_DIR)
  # Restore to host numpy (no device placement): the caller shards it as it needs.
  ckptr = ocp.PyTreeCheckpointer()
  tree = ckptr.metadata(path).item_metadata.tree
  restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                                        tree)
  params = ckptr.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))
  check_param_shapes(params, BertConfig.from_config(m))
  # Written by any bert_jax version: the layers come back in the layout m describes.
  return m, model_lib.layers_layout(params, m.scan_layers)


def save_hf(output_dir: str, model_config, params: dict[str, Any],
            vocab_file: str = "") -> str:
  """Writes a Hugging Face directory (config.json, model.safetensors, vocab.txt) that
  `transformers.BertForPreTraining.from_pretrained` (or BertModel) loads."""
  from safetensors.numpy import save_file
  os.makedirs(output_dir, exist_ok=True)
  params = _numpy_tree(params)
  cfg = BertConfig.from_config(model_config)
  sd = params_to_canonical(params, cfg)
  hf_json = model_config_to_bert_json(model_config)
  if "mlm_transform" not in params:
    hf_json["architectures"] = ["BertModel"]
  _write_json(os.path.join(output_dir, "config.json"), hf_json)
  save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()},
            os.path.join(output_dir, "model.safetensors"), metadata={"format": "pt"})
  _copy_vocab(vocab_file, output_dir)
  return output_dir


def _vocab_first_difference(path_a: str, path_b: str) -> str | None:
  """None if the two vocabularies list the same tokens; else 'line N: x vs y'."""
  with open(path_a, encoding="utf-8") as fa, open(path_b, encoding="utf-8") as fb:
    a, b = fa.read().splitlines(), fb.read().splitlines()
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
  if checkpoint_vocab and os.path.abspath(checkpoint_vocab) != os.path.abspath(vocab_file):
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


