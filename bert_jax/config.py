"""The config schema every `configs/*.py` starts from, and its validation.

One ConfigDict holds model, data, train, mesh and checkpoint settings; `configs/*.py`
override the deltas (size, batch, recipe). `validate` turns bad values into one clear
error line before any long work starts.
"""
from __future__ import annotations

import os

import ml_collections

# BERT-Base (Devlin et al. 2018, Table/appendix A): the model every other size overrides.
BERT_SIZES = {
    # name: (num_layers, hidden_size, num_heads)
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "medium": (8, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}

# The value of a config field that the command line must set (e.g. phase 2's
# init_checkpoint); check_required() names each one left unset.
REQUIRED = "<required>"

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resources")


def model_config(size: str = "base") -> ml_collections.ConfigDict:
  """Encoder hyper-parameters; names follow Google's bert_config.json where one exists."""
  num_layers, hidden, heads = BERT_SIZES[size]
  m = ml_collections.ConfigDict()
  m.vocab_size = 30522  # word-embedding rows; must equal the vocabulary size.
  m.hidden_size = hidden  # H: width of every layer (768 base, 1024 large).
  m.num_layers = num_layers  # L: encoder layers (12 base, 24 large).
  m.num_heads = heads  # A: attention heads; must divide hidden_size.
  # 4 * hidden by default; set explicitly to decouple.
  m.intermediate_size = 4 * hidden
  m.hidden_act = "gelu"  # exact erf GELU; "gelu_tanh" for the tanh approximation.
  m.max_position_embeddings = 512  # rows of the position table: longest sequence.
  m.type_vocab_size = 2  # segment (token type) ids: 0 = sentence A, 1 = sentence B.
  m.dropout_rate = 0.1  # hidden dropout (embeddings, attention output, FFN output).
  m.attention_dropout_rate = 0.1  # dropout on the attention probabilities.
  m.layer_norm_eps = 1e-12  # LayerNorm epsilon (the reference value).
  m.initializer_range = 0.02  # std of the truncated-normal weight init.
  m.dtype = "float32"  # compute dtype; "bfloat16" on TPU. Softmax and LayerNorm stay float32.
  m.param_dtype = "float32"  # dtype the parameters (and optimizer state) are kept in.
  m.remat = "none"  # "none" | "full" (recompute each layer) | "dots" (save matmul outputs).
  m.scan_layers = False  # True: nn.scan over stacked layers (compile time independent of depth; slower step).
  m.attention = "einsum"  # "einsum" | "dot_product_attention" (jax.nn; flash on GPU/TPU).
  return m


def default_config() -> ml_collections.ConfigDict:
  """BERT-Base pre-training with the paper's phase-1 recipe."""
  c = ml_collections.ConfigDict()
  c.task = "pretrain"  # pretrain | glue | squad | swag
  c.seed = 0  # seeds init, dropout, data order and masking.
  # Warm start: our orbax checkpoint, a Google TF checkpoint, or a Hugging Face directory.
  c.init_checkpoint = ""
  c.init_mode = "encoder"  # "encoder" (fine-tune / new heads) | "full" (continue pre-training)
  # WordPiece vocab.txt or SentencePiece .model; "" = the vocabulary bundled with the repo.
  c.vocab_file = ""
  c.do_lower_case = True  # lower-case and strip accents (uncased vocabularies).
  c.model = model_config("base")

  c.data = ml_collections.ConfigDict()
  # Pre-training: text files (one sentence per line, blank line between documents) or a
  # directory of shards written by `bert_jax.data.create_pretraining_data`.
  c.data.train_files = ""
  c.data.eval_files = ""  # held-out text or shards for eval (same formats as train_files).
  c.data.max_seq_length = 128  # tokens per sequence, [CLS] and [SEP]s included.
  c.data.max_predictions_per_seq = 20  # cap on masked positions per sequence.
  c.data.masked_lm_prob = 0.15  # share of tokens masked (80% [MASK], 10% random, 10% kept).
  c.data.short_seq_prob = 0.1  # share of instances with a shorter random target length.
  c.data.dupe_factor = 1  # passes over the documents when pairing (each a new pairing).
  c.data.whole_word_mask = False  # mask all WordPieces of a word together.
  # "balanced": the original algorithm with per-chunk target lengths, so that IsNext is
  # 50% and ~10% of instances are short; "google": the original draw for draw (45% IsNext
  # on books: one-sentence chunks are always NotNext there).
  c.data.pairing = "balanced"
  c.data.documents_per_window = 1000  # documents paired together when streaming text.
  c.data.dynamic_masking = True  # new masks every epoch (from seed + step); False: fixed.
  c.data.prefetch = 2  # batches built ahead of the train step.
  c.data.num_workers = 0  # threads building batches (0 = 1 thread).

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 256  # global batch, over all hosts and devices.
  c.train.num_steps = 1_000_000  # optimizer steps of the whole run (the decay ends here).
  c.train.learning_rate = 1e-4  # peak learning rate, reached after warmup_steps.
  c.train.warmup_steps = 10_000  # linear warmup from 0.
  c.train.schedule = "linear"  # linear warmup then linear decay to 0 at num_steps.
  c.train.optimizer = "adamw"  # adamw | lamb | bert_adam (original: no bias correction)
  c.train.b1 = 0.9  # Adam/LAMB first-moment decay.
  c.train.b2 = 0.999  # Adam/LAMB second-moment decay.
  c.train.eps = 1e-6  # Adam/LAMB epsilon (the original BERT value).
  c.train.weight_decay = 0.01  # never on LayerNorm scales or biases.
  c.train.max_grad_norm = 1.0  # clip the global gradient norm to this (0 = no clipping).
  c.train.grad_accum_steps = 1  # micro-batches per step; batch_size is their total.
  c.train.nan_policy = "skip"  # skip (drop the update, count it) | stop
  c.train.log_every = 100  # steps between progress lines and logged train metrics.
  c.train.eval_every = 10_000  # steps between evaluations on eval_files.
  c.train.eval_steps = 100  # batches per evaluation (0 = no evaluation).
  c.train.checkpoint_every = 10_000  # steps between checkpoints (also saved at the end).
  c.train.keep_checkpoints = 3  # most recent checkpoints kept in workdir/checkpoints.
  c.train.async_checkpointing = True  # write checkpoints in the background.
  c.train.profile = False  # reserved for a profiler trace; not read by the trainer yet.
  # Peak FLOP/s of one device for the MFU in the progress line; 0 = look up the device
  # kind in bert_jax/flops.py (TPU v2-v6e, A100, H100); a CPU has none (MFU "n/a").
  c.train.peak_flops_per_device = 0.0

  # Device mesh: axis names and sizes (-1 = all remaining devices). Data parallel is
  # (-1,1,1); FSDP (ZeRO-3) is (1,-1,1); Megatron tensor parallel puts devices on "tensor".
  c.mesh = ml_collections.ConfigDict()
  c.mesh.axes = ("data", "fsdp", "tensor")  # mesh axis names the sharding rules use.
  c.mesh.shape = (-1, 1, 1)  # devices per axis; one -1 takes the rest.
  return c


def size_overrides(config: ml_collections.ConfigDict, size: str) -> ml_collections.ConfigDict:
  """Sets num_layers/hidden/heads/intermediate to one of BERT_SIZES."""
  num_layers, hidden, heads = BERT_SIZES[size]
  config.model.num_layers = num_layers
  config.model.hidden_size = hidden
  config.model.num_heads = heads
  config.model.intermediate_size = 4 * hidden
  return config


class ConfigError(ValueError):
  """A config value is wrong; the message names the key and the fix."""


def validate_model(m: ml_collections.ConfigDict) -> None:
  """One clear error for an impossible model shape, before anything is built."""
  if m.hidden_size % m.num_heads:
    raise ConfigError(
        f"config.model.hidden_size={m.hidden_size} is not divisible by "
        f"config.model.num_heads={m.num_heads}: pick num_heads that divides hidden_size "
        f"(e.g. --config.model.num_heads={max(1, m.hidden_size // 64)}).")
  if m.hidden_act not in ("gelu", "gelu_tanh", "relu"):
    raise ConfigError(f"config.model.hidden_act={m.hidden_act!r}: use 'gelu' or 'gelu_tanh'.")
  if m.remat not in ("none", "full", "dots"):
    raise ConfigError(f"config.model.remat={m.remat!r}: use 'none', 'full' or 'dots'.")
  if m.attention not in ("einsum", "dot_product_attention"):
    raise ConfigError(
        f"config.model.attention={m.attention!r}: use 'einsum' or 'dot_product_attention'.")
  for key in ("dtype", "param_dtype"):
    if m[key] not in ("float32", "bfloat16", "float16", "float64"):
      raise ConfigError(f"config.model.{key}={m[key]!r}: use 'float32' or 'bfloat16'.")
    if m[key] == "float64":  # numerical checks (tests): without x64 JAX makes it float32
      import jax  # local: the config module stays importable without initialising jax
      if not jax.config.jax_enable_x64:
        raise ConfigError(f"config.model.{key}='float64' needs 64-bit JAX: set "
                          "JAX_ENABLE_X64=1 (float64 is for numerical checks on the CPU).")


def paper_phase(config: ml_collections.ConfigDict, phase: str) -> ml_collections.ConfigDict:
  """The paper's pre-training phases (A.2): '1' = 900k steps at seq 128 (P=20), '2' = the
  last 100k of the 1M steps at seq 512 (P=80), continued from phase 1 (init_mode='full')."""
  if phase not in ("1", "2"):
    raise ConfigError(
        f"config argument {phase!r}: use ':1' (seq 128, 900k steps) or ':2' (seq 512, the "
        "last 100k steps, started from the phase-1 checkpoint).")
  config.data.max_seq_length = 128 if phase == "1" else 512
  config.data.max_predictions_per_seq = 20 if phase == "1" else 80
  config.train.num_steps = 900_000 if phase == "1" else 100_000
  config.train.warmup_steps = 10_000 if phase == "1" else 0
  if phase == "2":
    config.init_mode = "full"  # continue pre-training: encoder and heads
  return config


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """get_config() of a config file ("configs/large.py" or "configs/large.py:2", the part
  after ':' being get_config's argument); configs/ is not a package, so config files
  build on each other through this."""
  import importlib.util
  path, _, arg = path.partition(":")
  name = "_bert_jax_config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or not os.path.isfile(path):
    raise ConfigError(f"config file {path!r} does not exist: pass e.g. configs/tiny.py.")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def check_required(config: ml_collections.ConfigDict, prefix: str = "config") -> None:
  """Raises ConfigError naming every field still set to REQUIRED."""
  missing = []

  def walk(node, path):
    for k, v in node.items():
      if isinstance(v, ml_collections.ConfigDict):
        walk(v, f"{path}.{k}")
      elif isinstance(v, str) and v == REQUIRED:
        missing.append(f"{path}.{k}")
  walk(config, prefix)
  if missing:
    raise ConfigError(
        f"{', '.join(missing)} must be set on the command line, e.g. "
        f"--{missing[0]}=VALUE (see the config file's docstring).")
