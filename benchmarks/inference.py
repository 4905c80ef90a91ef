"""Inference and fine-tune speed: bert_jax vs Hugging Face Flax and PyTorch, same process.

Four parts, each after compilation, median of --steps runs taken in
turns with the peers (peers.interleaved):

  encoder   BertModel forward (sequence + pooled output, no dropout) for BERT-Base at
            seq 128 batch 8 and seq 384 batch 8, against FlaxBertModel (jitted) and
            PyTorch BertModel (eval, inference_mode);
  squad     one SQuAD fine-tune step (forward, backward, AdamW; start/end span loss) at
            BERT-Base seq 384 batch 8, against FlaxBertForQuestionAnswering + optax
            AdamW (jitted) and PyTorch BertForQuestionAnswering + torch AdamW;
  e2e       the predict paths end to end (data file -> dev metric) at BERT-Base: GLUE
            MRPC dev (408 pairs, S128), CommonsenseQA's 221 held-out questions (5
            choices, S80) and the first 200 SQuAD v2.0 dev questions (S384, stride 128,
            featurisation and n-best postprocessing included); ours with 16-token
            buckets, PyTorch with per-batch padding, Flax padded to max_length, SQuAD
            windows padded to 384 for both (their examples' practice); random weights;
  levers    fused QKV (one [H, 3H] projection vs three [H, H]) in one encoder layer's
            forward + backward at base shapes, and length bucketing: prediction over the
            real MRPC dev set (408 pairs) cut to 16-token buckets vs padded to 128.

  bash benchmarks/setup_peers.sh        # once: transformers<5 (Flax models) into .peer/
  python benchmarks/inference.py [--parts=encoder,squad,e2e,levers] [--json=out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/
import peers  # noqa: E402  (must put .peer on sys.path before transformers is imported)

HAVE_FLAX_PEER = peers.use_peer_transformers()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bert_jax import config as config_lib  # noqa: E402
from bert_jax import finetune, optim, partitioning, train_lib  # noqa: E402
from bert_jax.model import BertConfig, BertModel  # noqa: E402
from bert_jax.tasks import squad  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
ENCODER_SHAPES = {"base128": ("base", 8, 128), "base384": ("base", 8, 384)}
SQUAD_SHAPES = {"squad384": ("base", 8, 384)}


def model_config(size: str):
  c = config_lib.default_config()
  config_lib.size_overrides(c, size)
  return c


def inputs(batch: int, seq: int, vocab: int = 30522, seed: int = 0) -> dict[str, np.ndarray]:
  """Full-length pairs: random ids, segment 1 on the second half, no padding."""
  rs = np.random.RandomState(seed)
  return {"input_ids": rs.randint(5, vocab, (batch, seq)).astype(np.int32),
          "token_type_ids": (np.arange(seq)[None] >= seq // 2).astype(np.int32).repeat(batch, 0),
          "attention_mask": np.ones((batch, seq), np.int32)}


def median_times(runners: dict, n: int) -> dict[str, float]:
  """Median seconds per call of each runner, taking turns (peers.interleaved)."""
  return {k: statistics.median(v) for k, v in peers.interleaved(runners, n).items()}


def _block(x):
  return jax.block_until_ready(x)


def encoder_flops(m, batch: int, seq: int) -> float:
  """Forward matmul FLOPs of the encoder + pooler (bert_jax/flops.py's terms, no MLM)."""
  h, i, L = m.hidden_size, m.intermediate_size, m.num_layers
  return 2 * batch * (seq * L * (4 * h * h + 2 * h * i + 2 * seq * h) + h * h)


# ---- encoder forward ------------------------------------------------------------------

def ours_encoder(m, x, attention: str = "dot_product_attention"):
  model = BertModel(BertConfig.from_config({**m.to_dict(), "attention": attention}))
  params = jax.jit(lambda r: model.init(r, x["input_ids"][:1], x["token_type_ids"][:1],
                                        x["attention_mask"][:1]))(jax.random.PRNGKey(0))
  f = jax.jit(lambda p, b: model.apply(p, b["input_ids"], b["token_type_ids"],
                                       b["attention_mask"], deterministic=True))
  xb = jax.device_put(x)
  return lambda: _block(f(params, xb))


def flax_encoder(m, x):
  from transformers import FlaxBertModel
  model = FlaxBertModel(peers.hf_config(m), seed=0, dtype=jnp.float32)
  f = jax.jit(lambda p, b: model(b["input_ids"], b["attention_mask"], b["token_type_ids"],
                                 params=p, train=False)[:2])
  xb = jax.device_put(x)
  return lambda: _block(f(model.params, xb))


def torch_encoder(m, x):
  import torch
  from transformers import BertModel as TorchBertModel
  torch.manual_seed(0)
  model = TorchBertModel(peers.hf_config(m)).eval()
  tb = {k: torch.tensor(v).long() for k, v in x.items()}

  def run():
    with torch.inference_mode():
      model(**tb)
  return run


# ---- SQuAD fine-tune step -------------------------------------------------------------

def squad_batch(batch: int, seq: int) -> dict[str, np.ndarray]:
  x = inputs(batch, seq)
  rs = np.random.RandomState(1)
  start = rs.randint(seq // 2, seq - 10, batch).astype(np.int32)
  return dict(x, start_positions=start, end_positions=start + rs.randint(0, 8, batch),
              example_weight=np.ones(batch, np.float32))


def ours_squad(c, b):
  """The fine-tuning loop's own step: SquadTask losses on train_lib.make_train_step."""
  c.train.update(optimizer="adamw", learning_rate=3e-5, num_steps=1000, warmup_steps=100)
  mesh = partitioning.make_mesh(c.mesh, jax.devices()[:1])
  task = squad.SquadTask(config_lib.squad_config())
  model = task.make_model(BertConfig.from_config(c.model))
  tx = optim.make_optimizer(c.train)
  state, sh = finetune.init_state(model, b, tx, mesh, 0)
  loss_fn, den_fn = finetune.make_compute_loss(task, model)
  step = train_lib.make_train_step(loss_fn, den_fn, tx, mesh, sh)
  gb = train_lib.global_batch(b, mesh)
  with partitioning.activate(mesh):
    compiled = step.jitted.lower(state, gb).compile()
  return peers.stepper(lambda s, x: (lambda o: (o[0], o[1]["loss"]))(compiled(s, x)),
                       state, gb, _block)


def flax_squad(m, b):
  import optax
  from transformers import FlaxBertForQuestionAnswering
  model = FlaxBertForQuestionAnswering(peers.hf_config(m), seed=0, dtype=jnp.float32)
  tx = optax.adamw(3e-5, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01)
  jb = jax.device_put({k: b[k] for k in ("input_ids", "attention_mask", "token_type_ids",
                                         "start_positions", "end_positions")})

  def loss_fn(params, x, rng):
    out = model(x["input_ids"], x["attention_mask"], x["token_type_ids"], params=params,
                dropout_rng=rng, train=True)
    ce = optax.softmax_cross_entropy_with_integer_labels
    return 0.5 * (ce(out.start_logits, x["start_positions"]).mean()
                  + ce(out.end_logits, x["end_positions"]).mean())

  compiled, state, jb, _ = peers.flax_adamw_step(loss_fn, model.params, jb, tx)
  return peers.stepper(compiled, state, jb, _block)


def torch_squad(m, b):
  import torch
  from transformers import BertForQuestionAnswering as TorchQA
  torch.manual_seed(0)
  model = TorchQA(peers.hf_config(m)).train()
  opt = torch.optim.AdamW(model.parameters(), lr=3e-5, eps=1e-6, weight_decay=0.01)
  tb = {k: torch.tensor(b[k]).long() for k in ("input_ids", "attention_mask",
                                               "token_type_ids", "start_positions",
                                               "end_positions")}

  def run():
    opt.zero_grad(set_to_none=True)
    loss = model(**tb).loss
    loss.backward()
    opt.step()
  return run


# ---- end to end: the predict paths ---------------------------------------------------
# From the data file to the dev metric: read, tokenize, batch, forward, score. Ours is the
# fine-tuning loop's own path (Task.load_examples / featurize, prediction.predict with
# 16-token length buckets, Task.evaluate); the peers do what their examples recommend:
# PyTorch pads each batch to its longest row (DataCollatorWithPadding), Flax pads to
# max_length so that one compiled shape serves every batch (run_flax_glue.py).
E2E_TASKS = {"mrpc": 128, "csqa": 80, "squad": 384}  # task -> max_seq_length
E2E_BATCH = 32
E2E_SQUAD_QUESTIONS = 200  # the first N v2.0 dev questions (all 1,407: ~10 min a pass)


def e2e_task(name: str):
  from bert_jax.tasks import glue as glue_task
  from bert_jax.tasks import swag
  if name == "mrpc":
    return glue_task.GlueTask("mrpc", str(REPO.parent / "shared" / "data" / "glue"))
  if name == "squad":  # a new task object per pass: it caches the parsed JSON
    s = config_lib.squad_config()
    data = REPO.parent / "shared" / "data" / "squad" / "v2.0"
    s.update(version="2.0", train_file=str(data / "train.json"),
             dev_file=str(data / "dev.json"), max_eval_examples=E2E_SQUAD_QUESTIONS)
    return squad.SquadTask(s)
  from configs import commonsense_qa
  return swag.MultipleChoiceTask.from_config(commonsense_qa.get_config())


def e2e_vocab() -> str:
  return os.path.join(peers.minilm_dir(), "vocab.txt")  # BERT's uncased 30,522 tokens


def e2e_inputs(name: str, task, examples):
  """(first segments, second segments, labels, choices) in the peers' own terms."""
  if name == "mrpc":
    from bert_jax.data import glue as glue_data
    return ([e.text_a for e in examples], [e.text_b for e in examples],
            np.asarray(glue_data.label_ids(task.spec, examples)), 1)
  k = task.num_choices
  firsts = [e.context for e in examples for _ in range(k)]
  seconds = [f"{e.start_ending} {x}".strip() for e in examples for x in e.endings]
  return firsts, seconds, np.asarray([e.label for e in examples]), k


def e2e_score(name: str, task, labels, logits) -> float:
  from bert_jax.tasks import glue_metrics
  preds = np.argmax(logits, -1)
  if name == "mrpc":
    return glue_metrics.task_score(glue_metrics.compute(task.spec.metrics, labels, preds),
                                   task.spec.metrics)
  return float(np.mean(preds == labels))


def ours_e2e(m, name: str):
  from bert_jax import tokenization
  task, seq = e2e_task(name), E2E_TASKS[name]
  fresh = name == "squad"
  tok = tokenization.load_tokenizer(e2e_vocab(), True)
  model = task.make_model(BertConfig.from_config(m))
  x = task.featurize(task.load_examples("dev")[:1], tok, seq)
  params = jax.jit(finetune.init_params_fn(model, x))(jax.random.PRNGKey(0))
  fwd = jax.jit(lambda p, b: finetune.apply_model(model, p, b))
  mesh = partitioning.make_mesh(model_config("base").mesh, jax.devices()[:1])

  def run():
    t = e2e_task(name) if fresh else task
    examples = t.load_examples("dev")
    feats = t.featurize(examples, tok, seq)
    out = finetune.predict(fwd, params, feats, E2E_BATCH, mesh, 16)
    return t.evaluate(out, examples, feats, "dev")
  return run


def hf_squad_e2e(tok, forward, pad_to_batch: bool):
  """SQuAD v2.0 the way transformers' run_qa example does it: overlapping windows from
  the fast tokenizer (offsets, stride 128, padded to 384), start/end logits, then its
  postprocessing: the 20 best starts and ends per window, spans inside the context of
  at most 30 tokens, the best over the question's windows against the smallest null
  score; answers cut from the context by character offsets."""
  from bert_jax.tasks import squad_eval
  task = e2e_task("squad")
  dataset = task.dataset("dev")
  qas = [(qa, p["context"]) for a in dataset["data"] for p in a["paragraphs"]
         for qa in p["qas"]]
  enc = tok([q["question"].lstrip() for q, _ in qas], [c for _, c in qas],
            truncation="only_second", max_length=384, stride=128,
            return_overflowing_tokens=True, return_offsets_mapping=True,
            padding="max_length", return_tensors="np")
  starts, ends = [], []
  n = len(enc["input_ids"])
  for i in range(0, n, E2E_BATCH):
    b = {k: enc[k][i:i + E2E_BATCH] for k in ("input_ids", "token_type_ids", "attention_mask")}
    rows = len(b["input_ids"])
    if pad_to_batch and rows < E2E_BATCH:
      b = {k: np.concatenate([v, np.zeros((E2E_BATCH - rows, v.shape[1]), v.dtype)])
           for k, v in b.items()}
    s, e = forward(b)
    starts.append(s[:rows])
    ends.append(e[:rows])
  starts, ends = np.concatenate(starts), np.concatenate(ends)
  by_q: dict[int, list[int]] = {}
  for f, q in enumerate(enc["overflow_to_sample_mapping"]):
    by_q.setdefault(int(q), []).append(f)
  answers = {}
  for qi, (qa, context) in enumerate(qas):
    best, best_score, null = "", -np.inf, np.inf
    for f in by_q.get(qi, []):
      seq_ids = enc.sequence_ids(f)
      offsets = enc["offset_mapping"][f]
      null = min(null, starts[f, 0] + ends[f, 0])
      for si in np.argsort(starts[f])[-20:][::-1]:
        for ei in np.argsort(ends[f])[-20:][::-1]:
          if (seq_ids[si] != 1 or seq_ids[ei] != 1 or ei < si or ei - si + 1 > 30):
            continue
          score = starts[f, si] + ends[f, ei]
          if score > best_score:
            best_score, best = score, context[offsets[si][0]:offsets[ei][1]]
    answers[qa["id"]] = "" if null > best_score else best
  return squad_eval.evaluate(dataset, answers, version="2.0")["f1"]


def _hf_batches(tok, firsts, seconds, k, padding, seq):
  for i in range(0, len(firsts), E2E_BATCH * k):
    enc = tok(firsts[i:i + E2E_BATCH * k], seconds[i:i + E2E_BATCH * k], padding=padding,
              truncation="longest_first", max_length=seq, return_tensors="np")
    yield {n: v.reshape(-1, k, v.shape[-1]) if k > 1 else v for n, v in enc.items()}


def torch_e2e(m, name: str):
  import torch
  import transformers
  task, seq = e2e_task(name), E2E_TASKS[name]
  tok = transformers.BertTokenizerFast(vocab_file=e2e_vocab(), do_lower_case=True)
  torch.manual_seed(0)
  cls = {"mrpc": transformers.BertForSequenceClassification,
         "csqa": transformers.BertForMultipleChoice,
         "squad": transformers.BertForQuestionAnswering}[name]
  model = cls(peers.hf_config(m)).eval()
  if name == "squad":
    def forward(b):
      with torch.inference_mode():
        o = model(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in b.items()})
      return o.start_logits.numpy(), o.end_logits.numpy()
    return lambda: hf_squad_e2e(tok, forward, pad_to_batch=False)

  def run():
    examples = task.load_examples("dev")
    firsts, seconds, labels, k = e2e_inputs(name, task, examples)
    logits = []
    with torch.inference_mode():
      for b in _hf_batches(tok, firsts, seconds, k, "longest", seq):
        logits.append(model(**{n: torch.from_numpy(v) for n, v in b.items()}).logits.numpy())
    return e2e_score(name, task, labels, np.concatenate(logits))
  return run


def flax_e2e(m, name: str):
  import transformers
  task, seq = e2e_task(name), E2E_TASKS[name]
  tok = transformers.BertTokenizerFast(vocab_file=e2e_vocab(), do_lower_case=True)
  cls = {"mrpc": transformers.FlaxBertForSequenceClassification,
         "csqa": transformers.FlaxBertForMultipleChoice,
         "squad": transformers.FlaxBertForQuestionAnswering}[name]
  model = cls(peers.hf_config(m), seed=0, dtype=jnp.float32)
  if name == "squad":
    g = jax.jit(lambda p, b: (lambda o: (o.start_logits, o.end_logits))(
        model(b["input_ids"], b["attention_mask"], b["token_type_ids"], params=p, train=False)))
    forward = lambda b: tuple(np.asarray(x) for x in g(model.params, b))
    return lambda: hf_squad_e2e(tok, forward, pad_to_batch=True)
  f = jax.jit(lambda p, b: model(b["input_ids"], b["attention_mask"], b["token_type_ids"],
                                 params=p, train=False).logits)

  def run():
    examples = task.load_examples("dev")
    firsts, seconds, labels, k = e2e_inputs(name, task, examples)
    logits = []
    for b in _hf_batches(tok, firsts, seconds, k, "max_length", seq):
      n = len(b["input_ids"])
      if n < E2E_BATCH:  # the last batch padded to the compiled shape, as their example
        b = {key: np.concatenate([v, np.zeros((E2E_BATCH - n, *v.shape[1:]), v.dtype)])
             for key, v in b.items()}
      logits.append(np.asarray(f(model.params, b))[:n])
    return e2e_score(name, task, labels, np.concatenate(logits))
  return run


# ---- levers ---------------------------------------------------------------------------

def qkv_lever(n: int, batch: int = 8, seq: int = 128, hidden: int = 768, heads: int = 12):
  """Forward + backward of the Q/K/V projection: one fused einsum vs three."""
  rs = np.random.RandomState(0)
  d = hidden // heads
  x = jnp.asarray(rs.randn(batch, seq, hidden), jnp.float32)
  w = jnp.asarray(rs.randn(hidden, 3, heads, d) * 0.02, jnp.float32)
  b = jnp.zeros((3, heads, d), jnp.float32)

  def attention(q, k, v):
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d)
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, -1), v)

  def fused(w, b, x):
    qkv = jnp.einsum("bse,ethd->bsthd", x, w) + b
    return jnp.sum(attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]) ** 2)

  def separate(ws, bs, x):  # three kernels, as an unfused model holds them
    q, k, v = (jnp.einsum("bse,ehd->bshd", x, wi) + bi for wi, bi in zip(ws, bs))
    return jnp.sum(attention(q, k, v) ** 2)

  args = {"fused": (fused, w, b),
          "separate": (separate, tuple(w[:, i] for i in range(3)),
                       tuple(b[i] for i in range(3)))}
  runners = {}
  for name, (f, wf, bf) in args.items():
    g = jax.jit(jax.grad(f, argnums=(0, 1, 2)))
    runners[name] = lambda g=g, wf=wf, bf=bf: _block(g(wf, bf, x))
  return median_times(runners, n)


def bucketing_lever(n: int):
  """Prediction over the real MRPC dev set, 16-token buckets vs padded to 128."""
  from bert_jax import tokenization
  from bert_jax.data import glue as glue_data
  from bert_jax.model import BertForSequenceClassification
  tok = tokenization.load_tokenizer(e2e_vocab(), True)
  examples = glue_data.read_split(glue_data.get_task("mrpc"), "dev",
                                  str(REPO.parent / "shared" / "data" / "glue"))
  feats = finetune.encode_sentence_pairs(tok, [e.text_a for e in examples],
                                         [e.text_b for e in examples], 128)
  c = model_config("base")
  c.model.update(num_layers=6, hidden_size=384, num_heads=12, intermediate_size=1536)
  model = BertForSequenceClassification(BertConfig.from_config(c.model), num_labels=2)
  mesh = partitioning.make_mesh(c.mesh, jax.devices()[:1])
  params = jax.jit(lambda r: model.init(r, feats["input_ids"][:1], feats["token_type_ids"][:1],
                                        feats["attention_mask"][:1])["params"])(
      jax.random.PRNGKey(0))
  fwd = jax.jit(lambda p, bt: finetune.apply_model(model, p, bt))
  lengths = finetune.sequence_lengths(feats)
  runners = {name: lambda m=multiple: finetune.predict(fwd, params, feats, 32, mesh, m)
             for name, multiple in (("bucket16", 16), ("padded128", 0))}
  return dict(median_times(runners, n), mean_length=float(lengths.mean()),
              examples=len(lengths))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--parts", default="encoder,squad,e2e,levers")
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--peers", default="flax,torch")
  p.add_argument("--json", default="")
  p.add_argument("--e2e_size", default="base", help="model size of the e2e part (tiny: a smoke run)")
  p.add_argument("--torch_worker", default="", help=argparse.SUPPRESS)
  a = p.parse_args(argv)
  if a.torch_worker:  # part:shape -> the PyTorch peer alone (see peers.run_isolated)
    part_name, shape = a.torch_worker.split(":")
    if part_name == "encoder":
      size, b, s = ENCODER_SHAPES[shape]
      run = torch_encoder(model_config(size).model, inputs(b, s))
    elif part_name == "e2e":
      run = torch_e2e(model_config(a.e2e_size).model, shape)
    else:
      size, b, s = SQUAD_SHAPES[shape]
      run = torch_squad(model_config(size).model, squad_batch(b, s))
    print(json.dumps(median_times({"hf-torch": run}, a.steps)))
    return None
  parts, peers_on = set(a.parts.split(",")), set(a.peers.split(","))
  if "flax" in peers_on and not HAVE_FLAX_PEER:
    print("hf-flax: not run (no .peer/; run `bash benchmarks/setup_peers.sh`)")
    peers_on.discard("flax")
  print(f"device: {jax.devices()[0].device_kind}, {os.cpu_count()} cores; float32")
  rows = []

  def report(part, shape, impl, seconds, batch, fl):
    print(f"{part:8s} {shape:9s} {impl:12s} {seconds * 1e3:9.1f} ms {batch / seconds:8.1f} seq/s"
          f" {fl / seconds / 1e9:8.1f} GFLOP/s", flush=True)
    rows.append(dict(part=part, shape=shape, impl=impl, step_s=seconds,
                     seq_per_s=batch / seconds, flops=fl))

  def ratios(part, shape):
    mine = [r for r in rows if r["part"] == part and r["shape"] == shape]
    base = next(r for r in mine if r["impl"] == "bert_jax")["step_s"]
    for r in mine:
      if r["impl"] != "bert_jax":
        print(f"{'':19s} {r['impl']} / bert_jax time: {r['step_s'] / base:.2f}x")

  def part(name, shape, builders, batch, fl):
    times = median_times({k: b() for k, b in builders.items()}, a.steps)
    if "torch" in peers_on:
      times.update(peers.run_isolated(__file__, [f"--torch_worker={name}:{shape}",
                                                 f"--steps={a.steps}",
                                                 f"--e2e_size={a.e2e_size}"]))
    for impl, seconds in times.items():
      report(name, shape, impl, seconds, batch, fl)
    ratios(name, shape)

  if "encoder" in parts:
    for name, (size, b, s) in ENCODER_SHAPES.items():
      m, x = model_config(size).model, inputs(b, s)
      builders = {"bert_jax": lambda: ours_encoder(m, x),  # the default: dot_product_attention
                  # the lever it replaced: einsum + softmax everywhere
                  "bert_jax-einsum": lambda: ours_encoder(m, x, "einsum")}
      if "flax" in peers_on:
        builders["hf-flax"] = lambda: flax_encoder(m, x)
      part("encoder", name, builders, b, encoder_flops(m, b, s))
  if "squad" in parts:
    for name, (size, b, s) in SQUAD_SHAPES.items():
      c, x = model_config(size), squad_batch(b, s)
      builders = {"bert_jax": lambda: ours_squad(c, x)}
      if "flax" in peers_on:
        builders["hf-flax"] = lambda: flax_squad(c.model, x)
      part("squad", name, builders, b, 3 * encoder_flops(c.model, b, s))
  if "e2e" in parts:
    for name in E2E_TASKS:
      m = model_config(a.e2e_size).model
      n = len(e2e_task(name).load_examples("dev"))
      builders = {"bert_jax": lambda: ours_e2e(m, name)}
      if "flax" in peers_on:
        builders["hf-flax"] = lambda: flax_e2e(m, name)
      part("e2e", name, builders, n, 0.0)
  levers = {}
  if "levers" in parts:
    levers["qkv"] = qkv_lever(a.steps)
    print(f"lever fused QKV (base layer, B8 S128, fwd+bwd): fused "
          f"{levers['qkv']['fused'] * 1e3:.2f} ms, three projections "
          f"{levers['qkv']['separate'] * 1e3:.2f} ms "
          f"({levers['qkv']['separate'] / levers['qkv']['fused']:.2f}x)")
    levers["bucketing"] = bk = bucketing_lever(max(3, a.steps // 3))
    print(f"lever bucketing (MRPC dev, {bk['examples']} pairs, mean {bk['mean_length']:.1f} "
          f"tokens, L6 H384 forward): 16-token buckets {bk['bucket16']:.2f} s, padded to 128 "
          f"{bk['padded128']:.2f} s ({bk['padded128'] / bk['bucket16']:.2f}x)")
  if a.json:
    with open(a.json, "w") as f:
      import platform
      commit = peers.commit()
      json.dump({"command": "python benchmarks/inference.py " + " ".join(
                     x for x in (argv if argv is not None else sys.argv[1:])
                     if not x.startswith("--json")),
                 "commit": commit, "device": jax.devices()[0].device_kind,
                 "machine": {"cores": os.cpu_count(), "cpu": platform.processor() or
                             platform.machine(), "load_average_at_end": os.getloadavg()},
                 "rows": rows, "levers": levers}, f, indent=1)


if __name__ == "__main__":
  from bert_jax import hugepages  # every implementation in this run gets huge pages
  hugepages.reexec_with_hugepages([os.path.abspath(__file__), *sys.argv[1:]])
  main()
