"""The config schema every `configs/*.py` starts from, and its validation.

One ConfigDict holds model, data, train, mesh and checkpoint settings; `configs/*.py`
override the deltas (size, batch, recipe). `validate` turns bad values into one clear
error line before any long work starts.
"""
from __future__ import annotations

import difflib
import os
import re

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

# The keys of config.model that fix the parameter tree's shapes: a checkpoint decides
# them, a resumed run must not change them.
MODEL_SHAPE_KEYS = ("vocab_size", "hidden_size", "num_layers", "num_heads",
                    "intermediate_size", "max_position_embeddings", "type_vocab_size")
# Everything a pretrained checkpoint decides about the encoder; the rest of config.model
# (dropout, dtypes, remat, scan, attention kernel) stays as the run's config sets it.
ARCHITECTURE_KEYS = MODEL_SHAPE_KEYS + ("hidden_act", "layer_norm_eps", "initializer_range")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # io: local-only (package)
BUNDLED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resources")  # io: local-only (package)

# Logical axis (model.py names every parameter and key activation with them) -> mesh axis
# (or axes; None = replicated): config.mesh.rules. Data parallel, FSDP (ZeRO-3: embed
# sharded over fsdp) and Megatron tensor parallel (heads/mlp/vocab over tensor) are then
# only mesh shapes; the t5x / MaxText convention.
LOGICAL_AXIS_RULES = (
    # activations
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed_act", None),
    ("heads_act", "tensor"),
    ("mlp_act", "tensor"),
    ("vocab_act", "tensor"),
    ("kv", None),
    # parameters
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("layers", None),
    ("classes", None),
)


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
  # "dot_product_attention": jax.nn.dot_product_attention (flash on GPU/TPU) wherever
  # attention dropout is off (evaluation, prediction, export), einsum + softmax + dropout
  # in training; "einsum": the einsum path everywhere.
  m.attention = "dot_product_attention"
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
  # directory of shards written by `python -m bert_jax.tools.create_pretraining_data`.
  c.data.train_files = ""
  c.data.eval_files = ""  # held-out text or shards for eval (same formats as train_files).
  # TensorFlow Datasets directory for `tfds:NAME` sources (GLUE, SQuAD, multiple choice;
  # local or gs://); "" = TFDS's default ($TFDS_DATA_DIR, else ~/tensorflow_datasets).
  c.data.tfds_data_dir = ""
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
  # Local directory where shards in a gs:// bucket are staged (ArrayRecord reads local
  # files only; data/shard_cache.py). "" = $BERT_JAX_CACHE_DIR/shards or ~/.cache/bert_jax/shards.
  c.data.shard_cache_dir = ""
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
  c.train.nsp_loss_weight = 1.0  # pre-training loss = MLM + this x NSP (0: MLM only, the paper's "No NSP" ablation).
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
  # JAX's persistent compilation cache (compile_cache.py): "auto" = $BERT_JAX_CACHE_DIR/xla
  # or ~/.cache/bert_jax/xla, a path, or "" (off). Reruns, sweeps and resumes skip compiling.
  c.train.compilation_cache_dir = "auto"

  # Device mesh: axis names and sizes (-1 = all remaining devices). Data parallel is
  # (-1,1,1); FSDP (ZeRO-3) is (1,-1,1); Megatron tensor parallel puts devices on "tensor".
  c.mesh = ml_collections.ConfigDict()
  c.mesh.axes = ("data", "fsdp", "tensor")  # mesh axis names the sharding rules use.
  c.mesh.shape = (-1, 1, 1)  # devices per axis; one -1 takes the rest.
  # (logical axis, mesh axis | (mesh axes) | None) pairs: how parameters and activations
  # are laid out on the mesh; axes the mesh lacks are dropped.
  c.mesh.rules = LOGICAL_AXIS_RULES
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
  name = "_bert_jax_config_" + os.path.splitext(os.path.basename(path))[0]  # io: local-only (module)
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or not os.path.isfile(path):  # io: local-only (module)
    raise ConfigError(f"config file {path!r} does not exist: pass e.g. configs/tiny.py.")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def config_file_arg(argv) -> str | None:
  """The value of --config in a command line, or None."""
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      return a.split("=", 1)[1]
    if a == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def explain_override_error(argv, error: Exception, prog: str = "bert_jax.main") -> str:
  """A flag-parsing error -> one line naming the --config.KEY at fault and the fix."""
  msg = str(error).strip().strip("'\"").replace("\\n", " ").replace("\n", " ")
  config_path = config_file_arg(argv)
  if config_path is None:
    return f"{msg} (usage: python -m {prog} --config=configs/tiny.py --workdir=DIR)"
  try:
    config = load_config_file(config_path)
  except Exception as e:  # a broken config file: say so.
    return f"cannot load --config={config_path}: {type(e).__name__}: {e}"
  for a in argv:
    m = re.match(r"--config\.([^=]+)(?:=(.*))?$", a)
    if not m:
      continue
    key, value = m.group(1), m.group(2)
    node, walked = config, []
    for part in key.split("."):
      children = list(node.keys()) if hasattr(node, "keys") else []
      if part not in children:
        where = ".".join(["config"] + walked)
        close = difflib.get_close_matches(part, children, n=1)
        hint = (f"did you mean --config.{'.'.join(walked + [close[0]])}?" if close else
                f"valid keys of {where}: {', '.join(sorted(children))}" if children else
                f"{where} is a value, not a group")
        return f"--config.{key}: unknown config key {part!r} in {where}; {hint}"
      node = node[part]
      walked.append(part)
    if value is not None and not hasattr(node, "keys") and key in msg:
      return (f"--config.{key}={value}: expected a {type(node).__name__} (default "
              f"{node!r}); fix the value, e.g. --config.{key}={node!r}")
  return msg


def check_pretrain(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError (naming the key and the fix) for a bad pre-training config: the
  checks that need no devices (train.check_config adds the mesh and the optimizer)."""
  validate_model(config.model)
  d, t = config.data, config.train
  if d.max_seq_length > config.model.max_position_embeddings:
    raise ConfigError(
        f"config.data.max_seq_length={d.max_seq_length} exceeds config.model."
        f"max_position_embeddings={config.model.max_position_embeddings}: lower it or raise "
        "max_position_embeddings (only before pre-training starts).")
  if not 0 < d.max_predictions_per_seq <= d.max_seq_length:
    raise ConfigError(
        f"config.data.max_predictions_per_seq={d.max_predictions_per_seq}: must be in "
        f"1..max_seq_length={d.max_seq_length} (the paper: 20 at seq 128, 80 at seq 512).")
  if config.init_mode not in ("encoder", "full"):
    raise ConfigError(f"config.init_mode={config.init_mode!r}: use 'encoder' (new heads) "
                      "or 'full' (continue pre-training with the checkpoint's heads).")
  for key in ("log_every", "eval_every", "checkpoint_every", "grad_accum_steps",
              "keep_checkpoints", "batch_size"):
    if t[key] < 1:
      raise ConfigError(f"config.train.{key}={t[key]}: must be >= 1.")
  if not t.nsp_loss_weight >= 0:
    raise ConfigError(f"config.train.nsp_loss_weight={t.nsp_loss_weight}: must be >= 0 "
                      "(1: the paper's MLM + NSP; 0: MLM only).")
  if t.eval_steps < 0:
    raise ConfigError(f"config.train.eval_steps={t.eval_steps}: must be >= 0 (0 = no eval).")
  if t.nan_policy not in ("skip", "stop"):
    raise ConfigError(f"config.train.nan_policy={t.nan_policy!r}: use 'skip' or 'stop'.")
  shape = tuple(config.mesh.shape)
  if not all(isinstance(s, int) for s in shape):
    raise ConfigError(
        f"config.mesh.shape={shape!r}: must be integers, one per axis of config.mesh.axes="
        f"{tuple(config.mesh.axes)}, e.g. --config.mesh.shape='(-1,1,1)' (-1 = the rest).")


def bundled_vocab_size() -> int:
  """Tokens in the bundled WordPiece vocabulary (bert_jax/resources/vocab.txt)."""
  from bert_jax import paths  # local: config stays free of I/O at import
  return len(paths.read_text(os.path.join(BUNDLED_DIR, "vocab.txt")).splitlines())  # io: local-only (package resource)


def _bundled_files(patterns: str) -> bool:
  """Every comma-separated file/glob of `patterns` lies in the bundled corpus."""
  items = [p.strip() for p in str(patterns).split(",") if p.strip()]
  root = os.path.join(BUNDLED_DIR, "")  # io: local-only (package resource)
  return bool(items) and all(
      "://" not in p and os.path.abspath(p).startswith(root) for p in items)  # io: local-only (path string)


def check_pretrain_vocab(config: ml_collections.ConfigDict) -> None:
  """Pre-training names its vocabulary (config.vocab_file) unless it is the bundled
  corpus's config: the bundled 8,000-token vocabulary serves configs/tiny.py (data from
  the bundled corpus, or a model sized for that vocabulary), never a real run by default.
  (A pre-training run's input check, train.check_run_inputs; not part of check_pretrain,
  which tools/aot also runs to compile a config's step without any data.)"""
  if config.vocab_file:
    return
  d = config.data
  if _bundled_files(d.train_files) and (not d.eval_files or _bundled_files(d.eval_files)):
    return
  n = bundled_vocab_size()
  if int(config.model.vocab_size) == n:
    return
  raise ConfigError(
      f"config.vocab_file is empty, so the bundled {n}-token vocabulary would be used, which "
      f"is for the bundled corpus (configs/tiny.py) only; config.model.vocab_size="
      f"{config.model.vocab_size} and config.data.train_files={d.train_files or '(empty)'} "
      "need the vocabulary their data was made with: set --config.vocab_file=PATH/vocab.txt "
      "(e.g. the vocab.txt of Google's BERT release, a phase-1 workdir's vocabulary, or a "
      "SentencePiece .model from python -m bert_jax.tools.build_vocab), or train a toy model "
      f"for the bundled vocabulary with --config.model.vocab_size={n}.")


def vocab_file(config: ml_collections.ConfigDict) -> str:
  """config.vocab_file, or the vocabulary bundled with the repository."""
  return config.vocab_file or os.path.join(BUNDLED_DIR, "vocab.txt")  # io: local-only (package)


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


# ---------------------------------------------------------------------------------------
# Fine-tuning: config.finetune (the loop) and one section per task
# ---------------------------------------------------------------------------------------

SHARED_DATA = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")  # io: local-only (package)
SQUAD_MODES = ("train", "predict", "evaluate", "all")
SQUAD_MAX_WINDOWS = 100  # a question whose context needs more windows is skipped


def finetune_config() -> ml_collections.ConfigDict:
  """config.finetune defaults: the paper's recipe (Devlin et al. 2018, section A.3)."""
  f = ml_collections.ConfigDict()
  f.num_epochs = 3.0  # paper: 2-4 epochs (3 for GLUE).
  f.warmup_proportion = 0.1  # linear warmup over the first 10% of steps.
  f.max_steps = 0  # >0 caps the number of steps (quick runs); 0 = num_epochs of data.
  f.max_train_examples = 0  # >0: train on the first N examples only (quick runs).
  f.eval_batch_size = 64  # (sequence length: config.data.max_seq_length)
  # Length bucketing: each batch is cut to its longest row rounded up to this multiple.
  f.bucket_multiple = 32
  # Train batches drawn from windows of this many batches sorted by length (0 = plain
  # shuffled batches, still cut to their own bucket length).
  f.group_by_length_window = 50
  f.save_best = True  # write the best params to workdir/best (orbax) for later use.
  f.write_dev_predictions = True  # workdir/predictions/<split>... for error analysis.
  # Preemption: the loop state (params, optimizer, step, RNG, data position, evaluations,
  # best so far) goes to workdir/checkpoints every checkpoint_every steps, after every
  # evaluation and on SIGTERM; a rerun with the same workdir resumes from the latest.
  # 1000 steps of BERT-Large on a v3-8 are about 5 minutes: at most that is lost.
  f.checkpoint_every = 1000
  f.keep_checkpoints = 2  # latest checkpoints kept (+ the one holding the best params).
  # A workdir holding a run with another config is refused (the message names the keys);
  # True deletes that run's checkpoints, results and logs and starts over.
  f.overwrite = False
  # Sweep (python -m bert_jax.<task> --config.finetune.sweep=True): one run per
  # (learning rate, seed), best on dev; the paper's grid.
  f.sweep = False
  f.sweep_learning_rates = (5e-5, 4e-5, 3e-5, 2e-5)
  f.sweep_seeds = (0,)
  return f


def add_finetune_config(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Adds config.finetune and sets the paper's fine-tuning train defaults on `c`."""
  c.finetune = finetune_config()
  c.train.batch_size = 32
  c.train.learning_rate = 2e-5
  c.train.weight_decay = 0.01
  c.train.optimizer = "adamw"
  c.model.dropout_rate = 0.1
  c.model.attention_dropout_rate = 0.1
  c.init_mode = "encoder"
  c.data.max_seq_length = 128
  c.train.log_every = 20  # steps between progress lines.
  c.train.eval_every = 0  # >0: also evaluate every N steps (0: after each epoch only).
  return c


def glue_config() -> ml_collections.ConfigDict:
  """config.glue: which GLUE task(s), where the data is, where submissions go."""
  g = ml_collections.ConfigDict()
  # cola | sst2 | mrpc | stsb | qqp | mnli | qnli | rte | wnli, a comma list, or "all".
  g.task = "mrpc"
  # Folder with <TASK>/<split>.tsv as GLUE's download script writes it (source "tsv").
  g.data_dir = os.path.join(SHARED_DATA, "glue")  # io: local-only (package)
  # "tsv" (data_dir) | "tfds:glue/<task>" (or "tfds") from config.data.tfds_data_dir.
  g.source = "tsv"
  # Where test predictions (CoLA.tsv, MNLI-m.tsv, ...) go; "" = workdir/submission.
  g.output_dir = ""
  return g


def squad_config() -> ml_collections.ConfigDict:
  """config.squad defaults: the original run_squad.py flags."""
  s = ml_collections.ConfigDict()
  s.version = "2.0"  # "1.1" | "2.0" (unanswerable questions, null score, τ)
  s.mode = "all"  # train | predict | evaluate | all
  # Official SQuAD JSON files; "" = ../shared/data/squad/v<version>/{train,dev}.json next
  # to the repository. predict_file: questions to answer ("" = none, or dev_file in
  # mode=predict). "tfds:squad/v2.0" (or v1.1) reads TFDS from config.data.tfds_data_dir:
  # split train for train_file, validation otherwise ("tfds:train" still works).
  s.train_file = ""
  s.dev_file = ""
  s.predict_file = ""
  s.doc_stride = 128  # tokens between the starts of consecutive context windows.
  s.max_query_length = 64  # question tokens kept (the rest cut).
  s.max_answer_length = 30  # longest answer in tokens.
  s.n_best_size = 20  # start/end candidates per window and n-best answers per question.
  # v2.0 τ: predict "" iff null score - best non-null score > τ.
  s.null_score_diff_threshold = 0.0
  # A question whose context needs more windows is skipped (and counted).
  s.max_windows = SQUAD_MAX_WINDOWS
  # First N questions of train / eval files (0 = all): quick runs and benchmarks.
  s.max_train_examples = 0
  s.max_eval_examples = 0
  # Fine-tuned params for mode=predict/evaluate ("" = workdir/best).
  s.params_dir = ""
  # Where predict_file's prediction files go ("" = workdir/submission).
  s.output_dir = ""
  return s


def check_squad(s: ml_collections.ConfigDict) -> None:
  """One clear error per impossible config.squad value, before any work."""
  if str(s.version) not in ("1.1", "2.0"):
    raise ConfigError(f"config.squad.version={s.version!r}: use '1.1' or '2.0'.")
  if s.mode not in SQUAD_MODES:
    raise ConfigError(f"config.squad.mode={s.mode!r}: use one of {SQUAD_MODES}.")
  for key in ("doc_stride", "max_query_length", "max_answer_length", "n_best_size",
              "max_windows"):
    if int(s[key]) < 1:
      raise ConfigError(f"config.squad.{key}={s[key]} must be a positive integer.")


def multiple_choice_config(dataset: str = "swag", num_choices: int = 4) -> ml_collections.ConfigDict:
  """config.swag: which files, in which format, how many choices."""
  s = ml_collections.ConfigDict()
  # "swag" (official CSV or TFDS/HF JSON lines) | "commonsense_qa" (HF layout JSON lines).
  s.dataset = dataset
  # "" = from the dataset and the file name: swag_csv (.csv), swag_jsonl, commonsense_qa.
  s.format = ""
  # Official names: train.csv / val.csv (labelled) and test.csv (no labels, predictions).
  s.train_file = ""
  s.dev_file = ""
  s.test_file = ""  # "" = no test predictions.
  # Python slices of the examples of a file ("" = all; ":1000", "1000:"): carve a dev set
  # out of a single labelled file (CommonsenseQA's public dev split, for one).
  s.train_slice = ""
  s.dev_slice = ""
  # Endings per example (4 for SWAG, 5 for CommonsenseQA); every row must have them all.
  s.num_choices = num_choices
  return s


def swag_config(dataset: str = "swag", num_choices: int = 4) -> ml_collections.ConfigDict:
  """The paper's SWAG recipe (Devlin et al. 2018, section 4.4) on the fine-tuning schema:
  batch 16, learning rate 2e-5, 3 epochs, 10% warmup, dropout 0.1."""
  c = default_config()
  add_finetune_config(c)
  c.task = "swag"
  c.train.batch_size = 16
  c.train.learning_rate = 2e-5
  c.finetune.num_epochs = 3.0
  # A cap: every batch is cut to its longest row rounded up to finetune.bucket_multiple,
  # so a lower cap only matters for rows longer than it (it truncates them).
  c.data.max_seq_length = 128
  c.finetune.bucket_multiple = 16
  c.finetune.eval_batch_size = 64
  c.swag = multiple_choice_config(dataset, num_choices)
  return c
