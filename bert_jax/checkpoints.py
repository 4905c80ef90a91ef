"""Loading pretrained BERT weights from other formats into our parameter tree.

Hugging Face and Google TF checkpoints name the same tensors the same way up to
spelling (`LayerNorm.weight` vs `LayerNorm/gamma`, torch `[out, in]` vs TF `[in, out]`),
so both are first read into one canonical flat dict in Hugging Face spelling and torch
layout; `canonical_to_params` / `params_to_canonical` convert that to and from our tree.
"""
from __future__ import annotations

import json
import os
from typing import Any

import ml_collections
import numpy as np

from bert_jax import config as config_lib
from bert_jax.model import BertConfig


class CheckpointError(ValueError):
  """A checkpoint cannot be read or does not fit; the message names the file and the fix."""


# Google bert_config.json / HF config.json key -> our config.model key.
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
  """HF-named, torch-layout arrays -> {'bert': ..., and pre-training heads if present}.

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
    layers = []
    for i in range(cfg.num_layers):
      p = f"encoder.layer.{i}."
      q, k, v = (sd[p + f"attention.self.{x}.weight"].T.reshape(h, n, d)
                 for x in ("query", "key", "value"))
      qb, kb, vb = (sd[p + f"attention.self.{x}.bias"].reshape(n, d)
                    for x in ("query", "key", "value"))
      layers.append({
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
      })
  except KeyError as e:
    raise CheckpointError(
        f"checkpoint has no tensor {e.args[0]!r}: is it a BERT checkpoint with "
        f"{cfg.num_layers} layers? (check num_hidden_layers in its config)") from e
  bert = {
      "embeddings": emb,
      "encoder": {"layers": _stack(layers)},
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
  _check_shapes(params, cfg)
  return params


def _stack(trees: list[dict]) -> dict:
  import jax
  return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *trees)


def _check_shapes(params, cfg: BertConfig) -> None:
  rows, width = params["bert"]["embeddings"]["word_embeddings"]["embedding"].shape
  if rows != cfg.vocab_size or width != cfg.hidden_size:
    raise CheckpointError(
        f"word embeddings are [{rows}, {width}] but the config says vocab_size="
        f"{cfg.vocab_size}, hidden_size={cfg.hidden_size}: use the checkpoint's own config.")


def params_to_canonical(params: dict[str, Any], cfg: BertConfig,
                        prefix: str = "bert.") -> dict[str, np.ndarray]:
  """Inverse of `canonical_to_params`: our tree -> HF names, torch layout."""
  h = cfg.hidden_size
  b = params["bert"]
  e = b["embeddings"]
  sd = {
      "embeddings.word_embeddings.weight": e["word_embeddings"]["embedding"],
      "embeddings.position_embeddings.weight": e["position_embeddings"]["embedding"],
      "embeddings.token_type_embeddings.weight": e["token_type_embeddings"]["embedding"],
      "embeddings.LayerNorm.weight": e["layer_norm"]["scale"],
      "embeddings.LayerNorm.bias": e["layer_norm"]["bias"],
  }
  L = b["encoder"]["layers"]
  for i in range(cfg.num_layers):
    p = f"encoder.layer.{i}."
    for j, x in enumerate(("query", "key", "value")):
      sd[p + f"attention.self.{x}.weight"] = np.asarray(L["qkv"]["kernel"][i][:, j]).reshape(h, h).T
      sd[p + f"attention.self.{x}.bias"] = np.asarray(L["qkv"]["bias"][i][j]).reshape(h)
    sd[p + "attention.output.dense.weight"] = np.asarray(
        L["attention_output"]["kernel"][i]).reshape(h, h).T
    sd[p + "attention.output.dense.bias"] = L["attention_output"]["bias"][i]
    sd[p + "attention.output.LayerNorm.weight"] = L["attention_layer_norm"]["scale"][i]
    sd[p + "attention.output.LayerNorm.bias"] = L["attention_layer_norm"]["bias"][i]
    sd[p + "intermediate.dense.weight"] = np.asarray(L["intermediate"]["kernel"][i]).T
    sd[p + "intermediate.dense.bias"] = L["intermediate"]["bias"][i]
    sd[p + "output.dense.weight"] = np.asarray(L["output"]["kernel"][i]).T
    sd[p + "output.dense.bias"] = L["output"]["bias"][i]
    sd[p + "output.LayerNorm.weight"] = L["output_layer_norm"]["scale"][i]
    sd[p + "output.LayerNorm.bias"] = L["output_layer_norm"]["bias"][i]
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


def load_pretrained(path: str) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
  """Any supported checkpoint -> (config.model, params as numpy arrays).

  Accepts a Hugging Face directory (config.json), a Google TF checkpoint (directory with
  bert_config.json, or the `bert_model.ckpt` prefix), or our own converted checkpoint.
  """
  if os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json")):
    return load_hf(path)
  raise CheckpointError(
      f"{path}: not a recognised checkpoint (expected a Hugging Face directory with "
      "config.json, a Google TF checkpoint with bert_config.json, or a bert_jax checkpoint "
      "written by `python -m bert_jax.convert`).")


def vocab_file_of(path: str) -> str:
  """The vocab.txt that ships beside a checkpoint ('' if none)."""
  d = path if os.path.isdir(path) else os.path.dirname(path)
  v = os.path.join(d, "vocab.txt")
  return v if os.path.isfile(v) else ""
