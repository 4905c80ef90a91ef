"""Does pre-training with bert_jax transfer? (issue 21, Deliver 3: the paper's question at CPU scale)

python benchmarks/transfer.py --stage=corpus,pretrain,finetune,table [--workdir=/tmp/transfer]
python benchmarks/transfer.py --small          # minutes: the whole pipeline at toy sizes

1. corpus: the nine Project Gutenberg books and WikiText-2 valid of ../shared/data ->
   BERT text format (WikiText-2 test held out for the MLM evaluation), an uncased
   WordPiece vocabulary learned on it (`bert_jax.tools.build_vocab`), and ArrayRecord
   shards (`bert_jax.tools.create_pretraining_data`: seq 128, 20 predictions, dupe 5);
2. pretrain: a small BERT (default L4 H256 A4 I1024, "BERT-Mini") from scratch with
   `python -m bert_jax.main --config=configs/base.py` (--pretrain_optimizer: adamw), twice on
   the same budget: MLM + NSP, and MLM only (`train.nsp_loss_weight=0`, the paper's
   "No NSP" ablation); the runs share --cores (one run alone gets all of them);
3. finetune: `python -m bert_jax.glue` on SST-2, MRPC, CoLA, STS-B and RTE (the GLUE
   recipe: batch 32, 3 epochs, 10% warmup, the best epoch on dev) from (a) random
   initialisation of the same architecture, (b) the MLM + NSP checkpoint, (b') the
   MLM-only one and (c) the real pretrained MiniLM-L6-H384, for several seeds. Finished
   runs are read back from their results.json, so a rerun only does what is missing;
4. table: mean +- standard error over seeds of each task's GLUE metric (x100), the
   difference (b) - (a) with its standard error, and whether it exceeds two; the
   pre-training curves of both runs in one PNG; everything in --json.

Each stage is a subprocess of the project's own commands (the ones the docs give users).
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys
import time

from absl import app, flags

_HERE = pathlib.Path(__file__).resolve().parent
REPO = _HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(_HERE))

from peers import minilm_dir  # noqa: E402
from seeds import mean_se  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "/tmp/bert_jax_transfer", "Where every stage writes.")
flags.DEFINE_string("shared_data", str(REPO.parent / "shared" / "data"), "Shared data dir.")
flags.DEFINE_list("stage", ["corpus", "pretrain", "finetune", "table"], "Stages to run.")
flags.DEFINE_list("tasks", ["sst2", "mrpc", "cola", "stsb", "rte"], "GLUE tasks.")
flags.DEFINE_list("inits", ["random", "ours", "ours_mlm_only", "minilm"],
                  "Initialisations to fine-tune from.")
flags.DEFINE_integer("seeds", 3, "Fine-tuning seeds per (task, init).")
flags.DEFINE_integer("vocab_size", 16000, "WordPiece vocabulary size.")
flags.DEFINE_integer("dupe_factor", 5, "Masking passes over the corpus.")
flags.DEFINE_integer("layers", 4, "Pre-trained model: layers.")
flags.DEFINE_integer("hidden", 256, "Pre-trained model: hidden size (heads = hidden / 64).")
flags.DEFINE_integer("pretrain_steps", 2400, "Pre-training steps (each run): 2,400 x 64 "
                     "sequences of 128 at 36 seq/s on two cores: 71 min (18-21 seq/s on one).")
flags.DEFINE_integer("pretrain_batch", 64, "Pre-training batch.")
flags.DEFINE_string("pretrain_optimizer", "adamw", "Pre-training optimizer. Not the paper's "
                    "bert_adam: without bias correction its first updates are "
                    "1/sqrt(1 - 0.999^t) times too large (4.5x at step 50), which the "
                    "original absorbs in 10k warmup steps and a short budget cannot; a "
                    "1,000-step run with bert_adam and 50 warmup steps sat on the unigram "
                    "plateau (MLM accuracy 0.06, NSP 0.50) through step 300.")
flags.DEFINE_float("pretrain_warmup", 0.1, "Warmup as a fraction of the pre-training steps.")
flags.DEFINE_float("pretrain_dropout", 0.1, "Pre-training dropout, hidden and attention (the "
                   "paper's 0.1; fine-tuning keeps its own 0.1 whatever this is).")
flags.DEFINE_list("pretrain_runs", ["ours", "ours_mlm_only"], "Which pre-training runs: "
                  "ours (MLM + NSP) and/or ours_mlm_only (train.nsp_loss_weight=0).")
flags.DEFINE_list("cores", ["0", "1"], "CPU cores to pin runs to, one run per core at a time "
                  "(two invocations on disjoint cores can share a machine, e.g. one "
                  "pre-training while the other fine-tunes from random initialisation).")
flags.DEFINE_float("pretrain_lr", 5e-4, "Pre-training peak learning rate (small models "
                   "take larger steps than BERT-Base's 1e-4).")
flags.DEFINE_float("finetune_lr", 1e-4, "Fine-tuning learning rate for (a), (b), (b').")
flags.DEFINE_float("minilm_lr", 5e-5, "Fine-tuning learning rate for MiniLM (c).")
flags.DEFINE_integer("sst2_train", 8000, "SST-2 train examples (its 67k cost more than the "
                     "other four tasks together).")
flags.DEFINE_bool("small", False, "Toy sizes end to end (a smoke run of the script).")
flags.DEFINE_list("extra_curves", [], "More pre-training runs to put in the curves (JSON and "
                  "PNG) as NAME=RUN_DIR, e.g. an abandoned run with another optimizer.")
flags.DEFINE_string("previous_json", "", "An earlier study's JSON with the same fine-tuning "
                    "recipe: its per-seed scores and its pre-training curves stand in for the "
                    "runs and curves this workdir does not hold (e.g. (a) and (b) when only "
                    "(b') is run here); the new record lists what it took.")
flags.DEFINE_string("json", "", "Write the table's record here (default: workdir/transfer.json).")

GLUE_DIRS = {"sst2": "SST-2", "mrpc": "MRPC", "cola": "CoLA", "stsb": "STS-B", "rte": "RTE"}
PRETRAIN_RUNS = {"ours": 1.0, "ours_mlm_only": 0.0}  # init name -> train.nsp_loss_weight


def sh(cmd: list[str], log: pathlib.Path, env: dict | None = None, core: int | str | None = None
       ) -> subprocess.Popen:
  """Starts one of the project's commands, its output in `log`, optionally pinned to `core`
  (one core number, or a taskset list such as "0,1")."""
  log.parent.mkdir(parents=True, exist_ok=True)
  if core is not None:
    cmd = ["taskset", "-c", str(core), *cmd]
  print("$", " ".join(cmd), f"> {log}", flush=True)
  return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=REPO,
                          env=dict(os.environ, **(env or {})))


def wait(p: subprocess.Popen, log: pathlib.Path) -> None:
  if p.wait():
    tail = log.read_text(errors="replace")[-3000:]
    raise SystemExit(f"failed ({p.returncode}): {' '.join(p.args)}\n{tail}")


def run(cmd: list[str], log: pathlib.Path, **kw) -> None:
  p = sh(cmd, log, **kw)
  wait(p, log)


# ---------------------------------------------------------------------------------------
# 1. corpus, vocabulary, shards
# ---------------------------------------------------------------------------------------

def stage_corpus(w: pathlib.Path) -> None:
  data = pathlib.Path(FLAGS.shared_data) / "corpus"
  corpus = w / "corpus"
  corpus.mkdir(parents=True, exist_ok=True)
  books = sorted(str(p) for p in (data / "gutenberg").glob("*/*.txt") if p.name != "LICENSE")
  if FLAGS.small:
    books = books[:1]
  if not (corpus / "books.txt").exists():
    run([sys.executable, "-m", "bert_jax.tools.prepare_corpus", f"--input_file={','.join(books)}",
         f"--output_file={corpus / 'books.txt'}"], w / "logs" / "prepare_corpus.log")
  for src, out in (("valid.txt", corpus / "wiki_train.txt"), ("test.txt", w / "eval.txt")):
    if not out.exists():
      run([sys.executable, "-m", "bert_jax.tools.prepare_corpus", "--input_format=wikitext",
           f"--input_file={data / 'wikitext-2' / src}", f"--output_file={out}"],
          w / "logs" / f"prepare_{src}.log")
  vocab = w / "vocab.txt"
  if not vocab.exists():
    run([sys.executable, "-m", "bert_jax.tools.build_vocab", f"--input_file={corpus}/*.txt",
         f"--output={vocab}", "--type=wordpiece", f"--vocab_size={FLAGS.vocab_size}",
         "--do_lower_case"], w / "logs" / "build_vocab.log")
  if not (w / "shards" / "metadata.json").exists():
    run([sys.executable, "-m", "bert_jax.tools.create_pretraining_data",
         f"--input_file={corpus}/*.txt", f"--vocab_file={vocab}", f"--output_dir={w / 'shards'}",
         f"--max_seq_length={seq_len()}", f"--max_predictions_per_seq={predictions()}",
         f"--dupe_factor={FLAGS.dupe_factor}", "--num_workers=2"],
        w / "logs" / "create_pretraining_data.log")
  meta = json.loads((w / "shards" / "metadata.json").read_text())
  print(f"corpus: {len(books)} books + WikiText-2 valid -> {meta['num_instances']:,} "
        f"instances of {seq_len()} tokens; vocabulary {vocab_size(w):,}", flush=True)


def seq_len() -> int:
  return 32 if FLAGS.small else 128


def predictions() -> int:
  return 5 if FLAGS.small else 20


def vocab_size(w: pathlib.Path) -> int:
  return sum(1 for _ in (w / "vocab.txt").open(encoding="utf-8"))


def model_flags(w: pathlib.Path) -> list[str]:
  """The small architecture, for pre-training and for (a)'s random initialisation."""
  layers, hidden = (1, 32) if FLAGS.small else (FLAGS.layers, FLAGS.hidden)
  return [f"--config.model.num_layers={layers}", f"--config.model.hidden_size={hidden}",
          f"--config.model.num_heads={max(1, hidden // 64)}",
          f"--config.model.intermediate_size={4 * hidden}",
          f"--config.model.vocab_size={vocab_size(w)}",
          f"--config.model.max_position_embeddings={max(128, seq_len())}",
          f"--config.vocab_file={w / 'vocab.txt'}"]


# ---------------------------------------------------------------------------------------
# 2. pre-training, with and without NSP
# ---------------------------------------------------------------------------------------

def pretrain_cmd(w: pathlib.Path, nsp_weight: float, run_dir: pathlib.Path) -> list[str]:
  steps = 20 if FLAGS.small else FLAGS.pretrain_steps
  return [sys.executable, "-m", "bert_jax.main", "--config=configs/base.py",
          f"--workdir={run_dir}", *model_flags(w),
          f"--config.data.train_files={w / 'shards'}", f"--config.data.eval_files={w / 'eval.txt'}",
          f"--config.data.max_seq_length={seq_len()}",
          f"--config.data.max_predictions_per_seq={predictions()}",
          f"--config.train.batch_size={8 if FLAGS.small else FLAGS.pretrain_batch}",
          f"--config.train.num_steps={steps}", f"--config.train.learning_rate={FLAGS.pretrain_lr}",
          f"--config.train.warmup_steps={max(1, int(steps * FLAGS.pretrain_warmup))}",
          f"--config.train.optimizer={FLAGS.pretrain_optimizer}",
          f"--config.model.dropout_rate={FLAGS.pretrain_dropout}",
          f"--config.model.attention_dropout_rate={FLAGS.pretrain_dropout}",
          f"--config.train.nsp_loss_weight={nsp_weight}",
          f"--config.train.log_every={5 if FLAGS.small else 50}",
          f"--config.train.eval_every={10 if FLAGS.small else 500}",
          f"--config.train.eval_steps={2 if FLAGS.small else 20}",
          f"--config.train.checkpoint_every={10 if FLAGS.small else 500}"]


def stage_pretrain(w: pathlib.Path) -> None:
  t0 = time.time()
  unknown = sorted(set(FLAGS.pretrain_runs) - set(PRETRAIN_RUNS))
  if unknown:
    raise SystemExit(f"--pretrain_runs: unknown {unknown}; use {', '.join(PRETRAIN_RUNS)}")
  procs = []
  # Fewer runs than cores: each run gets an equal share of them (one run on two cores:
  # 36 seq/s against 18-21 on one); more runs than cores: one core each, in turn.
  slots = [",".join(FLAGS.cores[i::len(FLAGS.pretrain_runs)])
           for i in range(min(len(FLAGS.cores), len(FLAGS.pretrain_runs)))]
  for i, name in enumerate(FLAGS.pretrain_runs):
    log = w / "logs" / f"pretrain_{name}.log"
    if len(procs) == len(slots):  # more runs than cores: wait for the oldest
      wait(*procs.pop(0))
    p = sh(pretrain_cmd(w, PRETRAIN_RUNS[name], w / "pretrain" / name), log,
           core=slots[i % len(slots)])
    procs.append((p, log))
  for p, log in procs:
    wait(p, log)
  print(f"pre-training: {time.time() - t0:.0f} s", flush=True)


# ---------------------------------------------------------------------------------------
# 3. fine-tuning: tasks x initialisations x seeds
# ---------------------------------------------------------------------------------------

def finetune_cmd(w: pathlib.Path, task: str, init: str, seed: int, run_dir: pathlib.Path
                 ) -> list[str]:
  cmd = [sys.executable, "-m", "bert_jax.glue", f"--workdir={run_dir}",
         f"--config.glue.task={task}",
         f"--config.glue.data_dir={pathlib.Path(FLAGS.shared_data) / 'glue'}",
         f"--config.seed={seed}", "--config.finetune.save_best=False"]
  if init == "minilm":
    cmd += [f"--config.init_checkpoint={minilm_dir()}",
            f"--config.train.learning_rate={FLAGS.minilm_lr}"]
  else:
    cmd += [f"--config.train.learning_rate={FLAGS.finetune_lr}"]
    if init == "random":
      cmd += [*model_flags(w), "--config.init_checkpoint="]
    else:
      cmd += [f"--config.init_checkpoint={w / 'pretrain' / init}",
              f"--config.vocab_file={w / 'vocab.txt'}"]
  if FLAGS.small:
    cmd += ["--config.finetune.max_train_examples=32", "--config.finetune.max_steps=2",
            "--config.data.max_seq_length=32"]
  elif task == "sst2" and FLAGS.sst2_train:
    cmd += [f"--config.finetune.max_train_examples={FLAGS.sst2_train}"]
  return cmd


def runs(w: pathlib.Path):
  seeds = 1 if FLAGS.small else FLAGS.seeds
  for task in (["mrpc"] if FLAGS.small else FLAGS.tasks):
    for init in FLAGS.inits:
      for seed in range(seeds):
        yield task, init, seed, w / "finetune" / task / init / f"seed{seed}"


def stage_finetune(w: pathlib.Path) -> None:
  todo = [r for r in runs(w) if not (r[3] / "results.json").exists()]
  print(f"fine-tuning: {len(todo)} runs to do", flush=True)
  t0 = time.time()
  active: list = []
  for n, (task, init, seed, run_dir) in enumerate(todo):
    while len(active) >= len(FLAGS.cores):  # one run per core at a time
      for item in list(active):
        if item[0].poll() is not None:
          wait(item[0], item[1])
          active.remove(item)
      time.sleep(1)
    log = w / "logs" / f"finetune_{task}_{init}_seed{seed}.log"
    busy = {core for _, _, core in active}
    core = next(c for c in FLAGS.cores if int(c) not in busy)
    active.append((sh(finetune_cmd(w, task, init, seed, run_dir), log, core=int(core)), log,
                   int(core)))
    el = time.time() - t0
    print(f"  {n + 1}/{len(todo)} started, {el:.0f} s elapsed, ETA "
          f"{el / (n + 1) * (len(todo) - n - 1):.0f} s", flush=True)
  for p, log, _ in active:
    wait(p, log)


# ---------------------------------------------------------------------------------------
# 4. the table
# ---------------------------------------------------------------------------------------

def previous_study() -> dict | None:
  """--previous_json, refused unless its scores came from the same fine-tuning recipe."""
  if not FLAGS.previous_json:
    return None
  path = pathlib.Path(FLAGS.previous_json)
  if not path.is_file():
    raise SystemExit(f"--previous_json={path}: no such file (a study JSON such as "
                     "benchmarks/results/transfer_2400steps.json)")
  prev = json.loads(path.read_text())
  same = ("tasks", "seeds", "vocab_size", "dupe_factor", "layers", "hidden", "finetune_lr",
          "minilm_lr", "sst2_train", "small")
  differ = {k: (prev["settings"].get(k), FLAGS[k].value) for k in same
            if prev["settings"].get(k) != FLAGS[k].value}
  if differ:
    raise SystemExit(f"--previous_json={FLAGS.previous_json}: its fine-tuning recipe differs "
                     f"from this one ({differ}, previous vs now); its scores would not compare")
  return prev


def stage_table(w: pathlib.Path) -> dict:
  prev = previous_study()
  scores: dict = {}
  reused: dict = {}
  for task, init, seed, run_dir in runs(w):
    path = run_dir / "results.json"
    if path.exists():
      r = json.loads(path.read_text())
      scores.setdefault(task, {}).setdefault(init, []).append(100.0 * r["score"])
      scores[task]["metric"] = r["selection_metric"]
    elif prev and seed < len(prev["table"].get(task, {}).get(init, {}).get("runs", [])):
      old = prev["table"][task]
      scores.setdefault(task, {}).setdefault(init, []).append(old[init]["runs"][seed])
      scores[task]["metric"] = old["metric"]
      reused.setdefault(init, []).append(f"{task}/seed{seed}")
  table = {}
  for task, by_init in scores.items():
    row = {"metric": by_init.pop("metric")}
    for init, xs in by_init.items():
      m, se = mean_se(xs)
      row[init] = {"mean": m, "se": se, "runs": xs}
    for init in [i for i in by_init if i != "random" and "random" in row]:
      d = row[init]["mean"] - row["random"]["mean"]
      se = math.sqrt(row[init]["se"] ** 2 + row["random"]["se"] ** 2)
      row[f"{init}_minus_random"] = {"mean": d, "se": se, "beyond_two_se": bool(d > 2 * se)}
    table[task] = row
  curves = {}
  run_dirs = {name: w / "pretrain" / name for name in PRETRAIN_RUNS}
  for item in FLAGS.extra_curves:
    name, _, path = item.partition("=")
    if not path:
      raise SystemExit(f"--extra_curves: {item!r} is not NAME=RUN_DIR")
    run_dirs[name] = pathlib.Path(path)
  for name, run_dir in run_dirs.items():
    f = run_dir / "metrics.jsonl"
    if f.exists():
      rows = [json.loads(l) for l in f.read_text().splitlines()]
      curves[name] = {k: [(r["step"], r[k]) for r in rows if k in r]
                      for k in ("train/mlm_loss", "train/nsp_loss", "train/mlm_accuracy",
                                "train/nsp_accuracy", "eval/mlm_loss", "eval/mlm_accuracy",
                                "eval/nsp_accuracy")}
  for name, c in (prev or {}).get("pretraining_curves", {}).items():
    if name not in curves:
      curves[name] = c
      reused.setdefault("pretraining_curves", []).append(name)
  record = {"command": "python benchmarks/transfer.py " + " ".join(sys.argv[1:]),
            "settings": {k: FLAGS[k].value for k in (
                "tasks", "inits", "seeds", "vocab_size", "dupe_factor", "layers", "hidden",
                "pretrain_steps", "pretrain_batch", "pretrain_lr", "pretrain_optimizer",
                "pretrain_warmup", "pretrain_dropout", "pretrain_runs", "finetune_lr",
                "minilm_lr", "sst2_train", "small")} | {"seq_len": seq_len()},
            "table": table, "pretraining_curves": curves}
  if reused:
    record["reused_from_previous_json"] = {"file": FLAGS.previous_json, **reused}
  print_table(table)
  out = FLAGS.json or str(w / "transfer.json")
  pathlib.Path(out).write_text(json.dumps(record, indent=2) + "\n")
  if curves:
    plot_curves(curves, pathlib.Path(out).with_suffix(".png"))
  print(f"wrote {out}", flush=True)
  return record


def print_table(table: dict) -> None:
  inits = [i for i in FLAGS.inits]
  diffs = [i for i in inits if i != "random"]
  print("| task (dev metric x100) | " + " | ".join(inits) + " | "
        + " | ".join(f"{i} - random" for i in diffs) + " |")
  print("| --- " * (len(inits) + len(diffs) + 1) + "|")
  for task, row in table.items():
    cells = [f"{row[i]['mean']:.1f} ± {row[i]['se']:.1f}" if i in row else "-" for i in inits]
    for i in diffs:
      d = row.get(f"{i}_minus_random")
      cells.append(f"{d['mean']:+.1f} ± {d['se']:.1f}{' *' if d['beyond_two_se'] else ''}"
                   if d else "-")
    print(f"| {task} ({row['metric']}) | " + " | ".join(cells) + " |")
  print("(mean ± standard error over seeds; * : beyond two standard errors)")


def plot_curves(curves: dict, png: pathlib.Path) -> None:
  """MLM loss, MLM accuracy (train line, held-out eval points) and NSP accuracy per run."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for name, c in curves.items():
    line = None
    for key, ax in (("train/mlm_loss", axes[0]), ("train/mlm_accuracy", axes[1]),
                    ("train/nsp_accuracy", axes[2])):
      if c.get(key):
        xs, ys = zip(*c[key])
        (line,) = ax.plot(xs, ys, label=name)
    if c.get("eval/mlm_accuracy"):
      xs, ys = zip(*c["eval/mlm_accuracy"])
      axes[1].plot(xs, ys, "o", color=line.get_color() if line else None,
                   label=f"{name} (held-out)")
  axes[0].set_title("MLM loss (train)")
  axes[1].set_title("MLM accuracy (train; points: held-out WikiText-2 test)")
  axes[2].set_title("NSP accuracy (train)")
  for ax in axes:
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(png, dpi=100)
  print(f"wrote {png}", flush=True)


def main(argv):
  del argv
  w = pathlib.Path(FLAGS.workdir)
  w.mkdir(parents=True, exist_ok=True)
  stages = {"corpus": stage_corpus, "pretrain": stage_pretrain, "finetune": stage_finetune,
            "table": stage_table}
  if not all(c.isdigit() for c in FLAGS.cores):
    raise SystemExit(f"--cores={','.join(FLAGS.cores)}: give CPU core numbers, e.g. --cores=0,1")
  unknown = sorted(set(FLAGS.stage) - set(stages))
  if unknown:
    raise SystemExit(f"--stage: unknown {unknown}; use {', '.join(stages)}")
  for name, fn in stages.items():
    if name in FLAGS.stage:
      t0 = time.time()
      fn(w)
      print(f"[{name}] done in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
  app.run(main)
