"""GLUE end to end on fixtures: checkpoint -> fine-tune a few steps -> dev eval -> test
predictions in the GLUE submission format; sweep table; multi-task GLUE score; errors."""
import contextlib
import csv
import io
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from bert_jax import weights
from bert_jax.data import glue as glue_data
from bert_jax.tasks import glue, glue_metrics
from test_finetune import _tiny_hf_dir, fast_compile  # noqa: F401 (autouse fixture)
from _numerics import mean_rtol

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "glue"


def _load_config_module():
  import importlib.util
  spec = importlib.util.spec_from_file_location("glue_config", REPO / "configs" / "glue.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


glue_config = _load_config_module()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, minilm_path):
  """A tiny BERT written as a Hugging Face directory (with the real MiniLM vocab)."""
  return _tiny_hf_dir(str(tmp_path_factory.mktemp("ckpt") / "tiny_bert"),
                      os.path.join(minilm_path, "vocab.txt"))


@pytest.fixture(scope="module")
def converted(checkpoint, tmp_path_factory):
  """The same checkpoint after `python -m bert_jax.tools.convert` (orbax + model_config.json)."""
  from bert_jax.tools import convert
  out = str(tmp_path_factory.mktemp("converted") / "tiny_bert")
  return convert.convert(checkpoint, out, to="bert_jax")


def tiny_config(checkpoint, task="mrpc", **finetune_overrides):
  c = glue_config.get_config()
  c.init_checkpoint = checkpoint
  c.glue.task = task
  c.glue.data_dir = str(FIXTURES)
  c.data.max_seq_length = 64
  c.train.batch_size = 16
  c.train.learning_rate = 1e-3
  c.train.log_every = 2
  c.finetune.eval_batch_size = 24  # 32 dev rows -> a last batch with 16 padding rows
  c.finetune.bucket_multiple = 64  # one shape: one compilation per run
  c.finetune.save_best = False
  c.finetune.update(finetune_overrides)
  return c


def read_tsv(path):
  with open(path, encoding="utf-8", newline="") as f:
    return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


@pytest.fixture(scope="module")
def mrpc_sweep(converted, tmp_path_factory):
  """convert -> two learning rates x one seed on the MRPC slice: 64 train rows,
  4 steps/epoch, 6 steps (evals at steps 4 and 6)."""
  workdir = str(tmp_path_factory.mktemp("mrpc"))
  c = tiny_config(converted, num_epochs=2.0, max_steps=6, sweep=True,
                  sweep_learning_rates=(1e-3, 1e-4), sweep_seeds=(0,), save_best=True)
  console = io.StringIO()
  with contextlib.redirect_stdout(console):  # kept for the summary-line checks
    results = glue.run(c, workdir)
  print(console.getvalue(), end="")
  pathlib.Path(workdir, "console.txt").write_text(console.getvalue())
  return results, workdir


def test_full_path_writes_submission_file(mrpc_sweep):
  results, workdir = mrpc_sweep
  rows = read_tsv(os.path.join(workdir, "submission", "MRPC.tsv"))
  assert rows[0] == ["index", "prediction"]
  assert [r[0] for r in rows[1:]] == [str(i) for i in range(16)]  # test.tsv's index column
  assert {r[1] for r in rows[1:]} <= {"0", "1"}
  assert results["mrpc"]["predictions"]["test"][0].endswith("MRPC.tsv")


def test_dev_metrics_are_exact_and_best_epoch_is_kept(mrpc_sweep):
  results, workdir = mrpc_sweep
  r = results["mrpc"]
  run_dir = os.path.join(workdir, f"lr{r['learning_rate']:g}_seed0")
  hist = r["history"]
  assert [h["step"] for h in hist] == [4, 6]
  best = max(hist, key=lambda h: h["dev/score"])
  assert r["best_step"] == best["step"] and r["score"] == best["dev/score"]  # that float
  # The dev predictions file (from the best step) reproduces the reported metrics.
  rows = read_tsv(os.path.join(run_dir, "predictions", "MRPC-dev.tsv"))[1:]
  gold = [e.label for e in glue_data.read_split(glue_data.get_task("mrpc"), "dev",
                                                str(FIXTURES))]
  assert [x[2] for x in rows] == gold and len(rows) == 32
  preds, labels = np.array([int(x[1]) for x in rows]), np.array([int(x[2]) for x in rows])
  # the same metric functions on the same predictions: exact
  assert r["best"]["dev/f1"] == glue_metrics.f1(labels, preds)
  assert r["best"]["dev/accuracy"] == glue_metrics.accuracy(labels, preds)
  assert os.path.isdir(os.path.join(run_dir, "best", "params"))


def test_logs_metrics_jsonl_tensorboard_results(mrpc_sweep):
  _, workdir = mrpc_sweep
  run_dir = os.path.join(workdir, "lr0.001_seed0")
  lines = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
  train = [l for l in lines if "train/loss" in l]
  assert [l["step"] for l in train] == [2, 4, 6]
  assert all(np.isfinite(l["train/loss"]) and l["train/skipped_steps"] == 0 for l in train)
  assert train[0]["train/learning_rate"] > 0
  assert [l["step"] for l in lines if "dev/f1" in l] == [4, 6]
  assert list(pathlib.Path(run_dir, "tensorboard").glob("events.out.tfevents.*"))
  saved = json.load(open(os.path.join(run_dir, "results.json")))
  assert saved["num_steps"] == 6 and saved["selection_metric"] == "dev/score"


def test_single_class_run_is_named_in_results_and_summary(mrpc_sweep):
  """Dev predictions all one class are named in results.json and on the summary line
  (null when they vary). Six steps on 64 rows predict the majority class everywhere, as
  the 60-step MRPC run of issue 16 did (F1 81.2 from "1" on every row)."""
  _, workdir = mrpc_sweep
  summaries = [l for l in (pathlib.Path(workdir) / "console.txt").read_text().splitlines()
               if l.startswith("mrpc: best dev/score=")]
  collapsed = 0
  for run_dir, summary in zip((f"lr{lr:g}_seed0" for lr in (1e-3, 1e-4)), summaries):
    saved = json.load(open(os.path.join(workdir, run_dir, "results.json")))
    rows = read_tsv(os.path.join(workdir, run_dir, "predictions", "MRPC-dev.tsv"))[1:]
    classes = {r[1] for r in rows}
    if len(classes) > 1:
      assert saved["degenerate"] is None and "DEGENERATE" not in summary
      continue
    collapsed += 1
    share = {"1": "the majority class, 62%", "0": "38%"}[classes.pop()]  # 20 of 32 are "1"
    expected = f"all 32 dev predictions are class {rows[0][1]} ({share} of dev labels)"
    assert saved["degenerate"] == expected
    assert f"; DEGENERATE: {expected}; trained " in summary
  assert len(summaries) == 2 and collapsed, "neither run collapsed: force one to test this"


def test_sweep_prints_one_table_and_keeps_the_best(mrpc_sweep):
  results, workdir = mrpc_sweep
  sweep = json.load(open(os.path.join(workdir, "sweep.json")))
  assert len(sweep["runs"]) == 2
  lines = sweep["table"].splitlines()
  assert [c.strip() for c in lines[0].split(" | ")[:3]] == ["lr", "seed", "best epoch"]
  assert {l.split(" | ")[0].strip() for l in lines[2:]} == {"0.001", "0.0001"}
  best = max(sweep["runs"], key=lambda r: r["score"])
  assert results["mrpc"]["learning_rate"] == best["learning_rate"]
  best_file = os.path.join(workdir, f"lr{best['learning_rate']:g}_seed0", "submission",
                           "MRPC.tsv")
  assert read_tsv(best_file) == read_tsv(os.path.join(workdir, "submission", "MRPC.tsv"))
  table, score = glue.summarize([workdir])
  assert "MRPC" in table and score == pytest.approx(100 * best["score"], rel=mean_rtol(1),
                                                    abs=0)  # a mean of one, x100


def test_mnli_stsb_cola_submission_files_and_glue_score(checkpoint, tmp_path):
  c = tiny_config(checkpoint, "mnli,stsb,cola", max_steps=2, write_dev_predictions=False)
  c.train.batch_size = 8
  c.finetune.eval_batch_size = 8
  out = glue.run(c, str(tmp_path))
  sub = tmp_path / "submission"
  assert sorted(os.listdir(sub)) == ["AX.tsv", "CoLA.tsv", "MNLI-m.tsv", "MNLI-mm.tsv",
                                     "STS-B.tsv"]
  nli = {"entailment", "neutral", "contradiction"}
  for name, n in (("MNLI-m.tsv", 5), ("MNLI-mm.tsv", 3), ("AX.tsv", 5)):
    rows = read_tsv(sub / name)
    assert rows[0] == ["index", "prediction"] and len(rows) == n + 1
    assert {r[1] for r in rows[1:]} <= nli
  sts = read_tsv(sub / "STS-B.tsv")
  assert [r[0] for r in sts[1:]] == [str(i) for i in range(8)]
  assert all(np.isfinite(float(r[1])) and len(r[1].split(".")[1]) == 3 for r in sts[1:])
  assert {r[1] for r in read_tsv(sub / "CoLA.tsv")[1:]} <= {"0", "1"}
  mnli = out["mnli"]["best"]
  assert {"dev_matched/accuracy", "dev_mismatched/accuracy"} <= set(mnli)
  assert {"dev/pearson", "dev/spearman"} <= set(out["stsb"]["best"])
  assert "dev/matthews_corrcoef" in out["cola"]["best"]
  expected = np.mean([100 * np.mean([mnli["dev_matched/accuracy"],
                                     mnli["dev_mismatched/accuracy"]]),
                      100 * np.mean([out["stsb"]["best"]["dev/pearson"],
                                     out["stsb"]["best"]["dev/spearman"]]),
                      100 * out["cola"]["best"]["dev/matthews_corrcoef"]])
  # float64 means of means (2, then 3 terms), perhaps in another order
  assert out["glue_score"] == pytest.approx(expected, rel=mean_rtol(2) + mean_rtol(3), abs=0)
  summary = json.load(open(tmp_path / "glue_summary.json"))
  assert "GLUE score" in summary["table"] and set(summary["tasks"]) == {"mnli", "stsb", "cola"}
  assert summary["degenerate"] == {n: out[n]["degenerate"] for n in summary["tasks"]
                                   if out[n]["degenerate"]}


def test_bad_inputs_fail_before_training(checkpoint, tmp_path, minilm_path):
  with pytest.raises(glue_data.GlueDataError, match="unknown GLUE task 'mrcp'"):
    glue.run(tiny_config(checkpoint, "mrcp"), str(tmp_path / "a"))
  # 'all' on the fixtures: SST-2, QNLI, RTE are absent -> one error naming every file.
  with pytest.raises(glue_data.GlueDataError,
                     match=r"GLUE file\(s\) not found: .*SST-2/train.tsv.*QNLI/train.tsv"):
    glue.run(tiny_config(checkpoint, "all"), str(tmp_path / "a"))
  bad = tmp_path / "data" / "RTE"
  bad.mkdir(parents=True)
  (bad / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tyes\n")
  (bad / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tentailment\n")
  (bad / "test.tsv").write_text("index\tsentence1\tsentence2\n0\tA.\tB.\n")
  c = tiny_config(checkpoint, "rte")
  c.glue.data_dir = str(tmp_path / "data")
  with pytest.raises(glue_data.GlueDataError,
                     match=rf"{bad / 'train.tsv'}, line 2: unknown label 'yes' for RTE"):
    glue.run(c, str(tmp_path / "b"))
  # A checkpoint whose vocabulary file has fewer tokens than its embeddings.
  short = _tiny_hf_dir(str(tmp_path / "short_vocab"), os.path.join(minilm_path, "vocab.txt"),
                       vocab_lines=500, vocab_size=30522)
  with pytest.raises(weights.CheckpointError, match=r"vocabulary .*short_vocab/vocab.txt has 500 "
                                                   r"tokens but .*short_vocab has vocab_size=30522"):
    glue.run(tiny_config(short), str(tmp_path / "c"))


def test_command_line_entry_point_reports_bad_task(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "bert_jax.glue", "--config=configs/glue.py",
       "--config.glue.task=nope", f"--workdir={tmp_path}"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode != 0
  assert "unknown GLUE task 'nope': use one of cola, sst2" in proc.stderr


def test_mnli_predicts_ax_only_when_its_file_exists(tmp_path):
  import shutil
  assert glue.GlueTask("mnli", str(FIXTURES)).predict_splits == (
      "test_matched", "test_mismatched", "ax")
  shutil.copytree(FIXTURES / "MNLI", tmp_path / "MNLI")
  assert glue.GlueTask("mnli", str(tmp_path)).predict_splits == (
      "test_matched", "test_mismatched")
  shutil.copytree(FIXTURES / "AX", tmp_path / "diagnostic")
  os.rename(tmp_path / "diagnostic" / "AX.tsv", tmp_path / "diagnostic" / "diagnostic.tsv")
  task = glue.GlueTask("mnli", str(tmp_path))  # GLUE's download script's location
  assert task.predict_splits[-1] == "ax" and len(task.load_examples("ax")) == 5
