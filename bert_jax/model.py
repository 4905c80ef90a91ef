"""BERT encoder and heads in Flax linen, numerically equal to the reference BERT.

Post-LN Transformer encoder (Devlin et al. 2018) with the original's details: LayerNorm
eps 1e-12, exact-erf GELU, truncated-normal(0.02) init, additive padding mask, tanh pooler
on [CLS], MLM decoder tied to the word embeddings and evaluated only at
`masked_lm_positions`. Every parameter carries logical axis names (see partitioning.py);
the encoder layers are unrolled with their own parameters, or (scan_layers=True) stacked
along a leading "layers" axis and run with `nn.scan` (see Encoder).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax.dropout import Dropout

Array = jax.Array

# float64 is for numerical checks on the CPU (tests compare shardings and gradient
# accumulation in it); it needs jax_enable_x64, or arrays silently stay float32.
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16,
           "float64": jnp.float64}


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Static model hyper-parameters (hashable, so modules can hold it)."""
  vocab_size: int = 30522
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  layer_norm_eps: float = 1e-12
  initializer_range: float = 0.02
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: str = "none"
  scan_layers: bool = False
  attention: str = "dot_product_attention"

  @classmethod
  def from_config(cls, model_config: Mapping[str, Any] | Any) -> "BertConfig":
    """Builds from `config.model` (a ConfigDict or dict); unknown keys are an error."""
    from bert_jax import config as config_lib  # local: config imports nothing of ours.
    d = dict(model_config.to_dict() if hasattr(model_config, "to_dict") else model_config)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise config_lib.ConfigError(
          f"unknown model config key(s) {unknown}; valid keys: {sorted(names)}")
    import ml_collections
    config_lib.validate_model(ml_collections.ConfigDict({**dataclasses.asdict(cls()), **d}))
    return cls(**d)

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def compute_dtype(self):
    return _DTYPES[self.dtype]

  @property
  def weight_dtype(self):
    return _DTYPES[self.param_dtype]

  @property
  def accum_dtype(self):
    """Softmax, LayerNorm and logits: float32, or float64 when computing in float64."""
    return jnp.promote_types(self.compute_dtype, jnp.float32)


def _init(config: BertConfig, axes: tuple[str | None, ...]):
  return nn.with_logical_partitioning(
      nn.initializers.truncated_normal(stddev=config.initializer_range), axes)


def _zeros(axes):
  return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def _ones(axes):
  return nn.with_logical_partitioning(nn.initializers.ones_init(), axes)


def _activation(name: str):
  if name == "gelu":
    return lambda x: jax.nn.gelu(x, approximate=False)
  if name == "gelu_tanh":
    return lambda x: jax.nn.gelu(x, approximate=True)
  return jax.nn.relu


class LayerNorm(nn.Module):
  """LayerNorm computed in float32 (two-pass variance, as the reference; float64 in a
  float64 model), output cast to the compute dtype. Params: scale, bias."""
  config: BertConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = self.config
    scale = self.param("scale", _ones(("embed",)), (x.shape[-1],), c.weight_dtype)
    bias = self.param("bias", _zeros(("embed",)), (x.shape[-1],), c.weight_dtype)
    x = x.astype(c.accum_dtype)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + c.layer_norm_eps)
    y = y * scale.astype(c.accum_dtype) + bias.astype(c.accum_dtype)
    return y.astype(c.compute_dtype)


class Embeddings(nn.Module):
  """Word + learned position + segment embeddings, LayerNorm, dropout."""
  config: BertConfig

  def setup(self):
    c = self.config
    self.word_embeddings = nn.Embed(
        c.vocab_size, c.hidden_size, dtype=c.compute_dtype, param_dtype=c.weight_dtype,
        embedding_init=_init(c, ("vocab", "embed")))
    self.position_embeddings = nn.Embed(
        c.max_position_embeddings, c.hidden_size, dtype=c.compute_dtype,
        param_dtype=c.weight_dtype, embedding_init=_init(c, (None, "embed")))
    self.token_type_embeddings = nn.Embed(
        c.type_vocab_size, c.hidden_size, dtype=c.compute_dtype,
        param_dtype=c.weight_dtype, embedding_init=_init(c, (None, "embed")))
    self.layer_norm = LayerNorm(c)
    self.dropout = Dropout(c.dropout_rate)

  def __call__(self, input_ids, token_type_ids, deterministic: bool):
    seq_len = input_ids.shape[-1]
    positions = jnp.arange(seq_len)[None, :]
    x = (self.word_embeddings(input_ids) + self.position_embeddings(positions)
         + self.token_type_embeddings(token_type_ids))
    x = self.layer_norm(x)
    return self.dropout(x, deterministic=deterministic)

  def attend(self, x: Array) -> Array:
    """x @ word_embeddings.T: the tied MLM decoder."""
    return self.word_embeddings.attend(x)


class MultiDense(nn.Module):
  """Dense over several input/output dims with a kernel of shape in_shape + out_shape.

  (flax's DenseGeneral initialises a flattened kernel, which breaks logical names on
  the multi-dimensional one; this keeps one named kernel, e.g. [embed, 3, heads, kv].)
  """
  config: BertConfig
  in_shape: tuple[int, ...]
  out_shape: tuple[int, ...]
  in_axes: tuple[str | None, ...]
  out_axes: tuple[str | None, ...]

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = self.config
    kernel = self.param("kernel", _init(c, self.in_axes + self.out_axes),
                        self.in_shape + self.out_shape, c.weight_dtype)
    bias = self.param("bias", _zeros(self.out_axes), self.out_shape, c.weight_dtype)
    n_in = len(self.in_shape)
    letters = "abcdefgh"
    lhs = "...".__add__(letters[:n_in])
    ker = letters[:n_in] + letters[n_in:n_in + len(self.out_shape)]
    out = "..." + letters[n_in:n_in + len(self.out_shape)]
    y = jnp.einsum(f"{lhs},{ker}->{out}", x.astype(c.compute_dtype),
                   kernel.astype(c.compute_dtype))
    return y + bias.astype(c.compute_dtype)


class EncoderLayer(nn.Module):
  """One post-LN Transformer layer: self-attention + FFN, each with residual and LN.

  Q, K and V come from one fused [embed, 3, heads, head_dim] projection (one matmul).
  Returns (x, None) so that it can be the body of `nn.scan`; (x, x) with emit_output, so
  that the scan stacks every layer's output.
  """
  config: BertConfig
  deterministic: bool = True
  emit_output: bool = False

  @nn.compact
  def __call__(self, x: Array, mask_bias: Array):
    c = self.config
    dt, pdt = c.compute_dtype, c.weight_dtype
    x = nn.with_logical_constraint(x, ("batch", "length", "embed_act"))
    qkv = MultiDense(c, (c.hidden_size,), (3, c.num_heads, c.head_dim),
                     ("embed",), (None, "heads", "kv"), name="qkv")(x)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    q = nn.with_logical_constraint(q, ("batch", "length", "heads_act", "kv"))
    k = nn.with_logical_constraint(k, ("batch", "length", "heads_act", "kv"))
    v = nn.with_logical_constraint(v, ("batch", "length", "heads_act", "kv"))
    if c.attention == "dot_product_attention" and self.deterministic:
      ctx = jax.nn.dot_product_attention(q, k, v, bias=mask_bias.astype(dt))
    else:
      scores = jnp.einsum("bqnd,bknd->bnqk", q, k, preferred_element_type=c.accum_dtype)
      scores = scores / jnp.sqrt(jnp.asarray(c.head_dim, c.accum_dtype)) + mask_bias
      probs = jax.nn.softmax(scores, axis=-1)
      probs = Dropout(c.attention_dropout_rate)(probs, deterministic=self.deterministic)
      ctx = jnp.einsum("bnqk,bknd->bqnd", probs.astype(dt), v)
    ctx = nn.with_logical_constraint(ctx, ("batch", "length", "heads_act", "kv"))
    attn_out = MultiDense(c, (c.num_heads, c.head_dim), (c.hidden_size,),
                          ("heads", "kv"), ("embed",), name="attention_output")(ctx)
    attn_out = Dropout(c.dropout_rate)(attn_out, deterministic=self.deterministic)
    x = LayerNorm(c, name="attention_layer_norm")(x + attn_out)

    h = nn.Dense(c.intermediate_size, dtype=dt, param_dtype=pdt,
                 kernel_init=_init(c, ("embed", "mlp")), bias_init=_zeros(("mlp",)),
                 name="intermediate")(x)
    h = nn.with_logical_constraint(h, ("batch", "length", "mlp_act"))
    h = _activation(c.hidden_act)(h)
    h = nn.Dense(c.hidden_size, dtype=dt, param_dtype=pdt,
                 kernel_init=_init(c, ("mlp", "embed")), bias_init=_zeros(("embed",)),
                 name="output")(h)
    h = Dropout(c.dropout_rate)(h, deterministic=self.deterministic)
    x = LayerNorm(c, name="output_layer_norm")(x + h)
    return x, (x if self.emit_output else None)


class Encoder(nn.Module):
  """num_layers EncoderLayers, in one of two parameter layouts (config.scan_layers):

  * False (default): a Python loop over `layer_0` ... `layer_{L-1}`, each with its own
    parameters. Fastest and leanest step: nothing is sliced out of or stacked into
    [L, ...] buffers (BERT-Base B8 S128 on the CI CPU: 2,397 vs 2,646 ms and 2,950 vs
    2,978 MiB for the scan, 3,167 MiB for stacked parameters unrolled; README
    "Performance"), and XLA schedules across layers.
  * True: `nn.scan` over parameters stacked on a leading "layers" axis: compile time
    independent of depth, for quick experiments with deep models.
  `stack_layers` / `unstack_layers` / `layers_layout` convert between the two.
  """
  config: BertConfig

  @nn.compact
  def __call__(self, x: Array, mask_bias: Array, deterministic: bool,
               return_all_layers: bool = False):
    """x [B,S,H] -> the last layer's output; with return_all_layers also every layer's
    output stacked [L,B,S,H]."""
    c = self.config
    layer = EncoderLayer
    if c.remat != "none":
      policy = (jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims
                if c.remat == "dots" else None)
      # A rolled scan keeps XLA from CSE-ing the recomputation away; unrolled it does
      # not, and without prevent_cse remat silently saves nothing (same FLOPs and
      # memory: found compiling BERT-Large for TPU, bert_jax.tools.aot).
      layer = nn.remat(layer, policy=policy, prevent_cse=not c.scan_layers)
    if c.scan_layers:
      stack = nn.scan(
          layer, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
          in_axes=(nn.broadcast,), length=c.num_layers,
          metadata_params={nn.PARTITION_NAME: "layers"})
      x, layer_outputs = stack(c, deterministic, return_all_layers, name="layers")(
          x, mask_bias)
    else:
      outputs = []
      for i in range(c.num_layers):
        x, out = layer(c, deterministic, return_all_layers, name=f"{LAYER_PREFIX}{i}")(
            x, mask_bias)
        outputs.append(out)
      layer_outputs = jnp.stack(outputs) if return_all_layers else None
    return (x, layer_outputs) if return_all_layers else x


LAYER_PREFIX = "layer_"
_LAYER_KEY = re.compile(rf"^{LAYER_PREFIX}(\d+)$")


def _stack_arrays(*xs):
  return np.stack(xs) if all(isinstance(x, np.ndarray) for x in xs) else jnp.stack(xs)


def stack_layers(tree):
  """Per-layer parameters ({layer_0: t0, layer_1: t1, ...}, scan_layers=False) anywhere in
  `tree` -> {"layers": stacked [L, ...]} (scan_layers=True and the checkpoint layout).
  Stacked input comes back unchanged."""
  if not isinstance(tree, Mapping):
    return tree
  keys = [k for k in tree if _LAYER_KEY.match(str(k))]
  if keys:
    if len(keys) != len(tree):
      raise ValueError(f"a params dict mixes per-layer and other keys: {sorted(tree)}")
    order = sorted(keys, key=lambda k: int(_LAYER_KEY.match(k).group(1)))
    if [int(_LAYER_KEY.match(k).group(1)) for k in order] != list(range(len(order))):
      raise ValueError(f"per-layer params are not layer_0..layer_{len(order) - 1}: {order}")
    return {"layers": jax.tree_util.tree_map(_stack_arrays, *[tree[k] for k in order])}
  return {k: stack_layers(v) for k, v in tree.items()}


def unstack_layers(tree):
  """Inverse of `stack_layers`: {"layers": [L, ...]} -> {layer_0: ..., layer_{L-1}: ...}."""
  if not isinstance(tree, Mapping):
    return tree
  if set(tree) == {"layers"} and isinstance(tree["layers"], Mapping):
    leaves = jax.tree_util.tree_leaves(tree["layers"])
    n = leaves[0].shape[0]
    return {f"{LAYER_PREFIX}{i}": jax.tree_util.tree_map(lambda x: x[i], tree["layers"])
            for i in range(n)}
  return {k: unstack_layers(v) for k, v in tree.items()}


def layers_layout(tree, scan_layers: bool):
  """`tree` in the layer layout a model with this scan_layers setting expects (either
  layout in; a tree already in the wanted one comes back without copying arrays)."""
  return stack_layers(tree) if scan_layers else unstack_layers(tree)


def is_stacked(tree) -> bool:
  """True if `tree` holds stacked encoder layers (a "layers" key anywhere)."""
  if not isinstance(tree, Mapping):
    return False
  return "layers" in tree or any(is_stacked(v) for v in tree.values())


def attention_mask_bias(attention_mask: Array) -> Array:
  """[batch, seq] 1/0 mask -> additive float32 bias [batch, 1, 1, seq] (0 or -1e9)."""
  return jnp.where(attention_mask[:, None, None, :] > 0, 0.0, -1e9).astype(jnp.float32)


class BertModel(nn.Module):
  """The encoder: (sequence_output [B,S,H], pooled_output [B,H]).

  `BertModel(config).apply({'params': p}, input_ids, token_type_ids, attention_mask,
  deterministic=True)`; dropout needs `rngs={'dropout': key}` when deterministic=False.
  """
  config: BertConfig
  add_pooler: bool = True

  def setup(self):
    c = self.config
    self.embeddings = Embeddings(c)
    self.encoder = Encoder(c)
    self.pooler = nn.Dense(
        c.hidden_size, dtype=c.compute_dtype, param_dtype=c.weight_dtype,
        kernel_init=_init(c, ("embed", "mlp")), bias_init=_zeros(("mlp",)))

  def __call__(self, input_ids, token_type_ids=None, attention_mask=None,
               deterministic: bool = True, return_all_layers: bool = False):
    """(sequence_output, pooled_output); with return_all_layers a third output,
    hidden_states [L+1,B,S,H]: the embeddings then each layer's output (Hugging Face's
    `output_hidden_states`; the original's `get_all_encoder_layers()` is [1:])."""
    c = self.config
    seq_len = input_ids.shape[-1]
    if seq_len > c.max_position_embeddings:
      raise ValueError(
          f"sequence length {seq_len} exceeds max_position_embeddings="
          f"{c.max_position_embeddings}: lower data.max_seq_length to at most "
          f"{c.max_position_embeddings} (the position table has no rows beyond it).")
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    emb = self.embeddings(input_ids, token_type_ids, deterministic)
    x = self.encoder(emb, attention_mask_bias(attention_mask), deterministic,
                     return_all_layers)
    if return_all_layers:
      x, layer_outputs = x
    x = nn.with_logical_constraint(x, ("batch", "length", "embed_act"))
    pooled = jnp.tanh(self.pooler(x[:, 0])) if self.add_pooler else None
    if return_all_layers:
      return x, pooled, jnp.concatenate([emb[None], layer_outputs], axis=0)
    return x, pooled

  def attend(self, x: Array) -> Array:
    return self.embeddings.attend(x)


def gather_positions(sequence: Array, positions: Array) -> Array:
  """[B,S,H] gathered at [B,P] int positions -> [B,P,H] (the original's gather_indexes)."""
  return jnp.take_along_axis(sequence, positions[..., None].astype(jnp.int32), axis=1)


class BertForPreTraining(nn.Module):
  """Encoder + MLM head (at masked positions only, tied decoder) + NSP head.

  Returns (mlm_logits [B,P,vocab] float32, nsp_logits [B,2] float32; float64 in a
  float64 model).
  """
  config: BertConfig

  def setup(self):
    c = self.config
    self.bert = BertModel(c)
    self.mlm_transform = nn.Dense(
        c.hidden_size, dtype=c.compute_dtype, param_dtype=c.weight_dtype,
        kernel_init=_init(c, ("embed", "mlp")), bias_init=_zeros(("mlp",)))
    self.mlm_layer_norm = LayerNorm(c)
    self.mlm_output_bias = self.param("mlm_output_bias", _zeros(("vocab",)),
                                      (c.vocab_size,), c.weight_dtype)
    self.nsp = nn.Dense(2, dtype=c.compute_dtype, param_dtype=c.weight_dtype,
                        kernel_init=_init(c, ("embed", "classes")),
                        bias_init=_zeros(("classes",)))

  def __call__(self, input_ids, token_type_ids, attention_mask, masked_lm_positions,
               deterministic: bool = True):
    seq, pooled = self.bert(input_ids, token_type_ids, attention_mask, deterministic)
    h = gather_positions(seq, masked_lm_positions)
    h = _activation(self.config.hidden_act)(self.mlm_transform(h))
    h = self.mlm_layer_norm(h)
    acc = self.config.accum_dtype
    mlm_logits = self.bert.attend(h).astype(acc) + self.mlm_output_bias
    mlm_logits = nn.with_logical_constraint(mlm_logits, ("batch", None, "vocab_act"))
    nsp_logits = self.nsp(pooled).astype(acc)
    return mlm_logits, nsp_logits


class BertForSequenceClassification(nn.Module):
  """GLUE: logits [B, num_labels] on the pooled output (num_labels=1: regression)."""
  config: BertConfig
  num_labels: int = 2

  @nn.compact
  def __call__(self, input_ids, token_type_ids, attention_mask, deterministic: bool = True):
    c = self.config
    _, pooled = BertModel(c, name="bert")(input_ids, token_type_ids, attention_mask,
                                          deterministic)
    pooled = Dropout(c.dropout_rate)(pooled, deterministic=deterministic)
    return nn.Dense(self.num_labels, dtype=c.compute_dtype, param_dtype=c.weight_dtype,
                    kernel_init=_init(c, ("embed", "classes")),
                    bias_init=_zeros(("classes",)), name="classifier")(pooled).astype(
                        c.accum_dtype)


class BertForQuestionAnswering(nn.Module):
  """SQuAD: (start_logits [B,S], end_logits [B,S]) from one Dense(2) per token."""
  config: BertConfig

  @nn.compact
  def __call__(self, input_ids, token_type_ids, attention_mask, deterministic: bool = True):
    c = self.config
    seq, _ = BertModel(c, add_pooler=False, name="bert")(
        input_ids, token_type_ids, attention_mask, deterministic)
    logits = nn.Dense(2, dtype=c.compute_dtype, param_dtype=c.weight_dtype,
                      kernel_init=_init(c, ("embed", "classes")),
                      bias_init=_zeros(("classes",)), name="qa_outputs")(seq)
    logits = logits.astype(c.accum_dtype)
    return logits[..., 0], logits[..., 1]


class BertForMultipleChoice(nn.Module):
  """SWAG: inputs [B, choices, S] -> one score per choice [B, choices]."""
  config: BertConfig

  @nn.compact
  def __call__(self, input_ids, token_type_ids, attention_mask, deterministic: bool = True):
    c = self.config
    batch, num_choices, seq_len = input_ids.shape
    flat = lambda a: a.reshape(batch * num_choices, seq_len)
    _, pooled = BertModel(c, name="bert")(flat(input_ids), flat(token_type_ids),
                                          flat(attention_mask), deterministic)
    pooled = Dropout(c.dropout_rate)(pooled, deterministic=deterministic)
    scores = nn.Dense(1, dtype=c.compute_dtype, param_dtype=c.weight_dtype,
                      kernel_init=_init(c, ("embed", "classes")),
                      bias_init=_zeros(("classes",)), name="classifier")(pooled)
    return scores.astype(c.accum_dtype).reshape(batch, num_choices)


def count_params(params) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
