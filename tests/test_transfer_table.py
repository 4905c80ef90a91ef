"""benchmarks/transfer.py's table stage: scores read back from each fine-tuning run's
results.json, an earlier study's scores and curves filling what the workdir lacks (only
when its fine-tuning recipe is the same), and every initialisation's difference from (a)
with its standard error."""
import json
import math
import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "transfer.py"
SETTINGS = {"tasks": ["mrpc", "stsb"], "seeds": 3, "vocab_size": 16000, "dupe_factor": 5,
            "layers": 4, "hidden": 256, "finetune_lr": 1e-4, "minilm_lr": 5e-5,
            "sst2_train": 8000, "small": False}


def _previous(path, **changes):
  """A study JSON as an earlier run of the script wrote it: (a) and (b) per seed, a curve."""
  table = {"mrpc": {"metric": "accuracy",
                    "random": {"runs": [75.0, 74.5, 75.5]}, "ours": {"runs": [76.0, 75.8, 76.2]}},
           "stsb": {"metric": "spearman",
                    "random": {"runs": [12.0, 13.0, 11.0]}, "ours": {"runs": [37.0, 38.0, 36.0]}}}
  curves = {"ours": {"train/mlm_accuracy": [[50, 0.03], [100, 0.08]]}}
  path.write_text(json.dumps({"settings": {**SETTINGS, **changes}, "table": table,
                              "pretraining_curves": curves}))
  return path


def _table(tmp_path, previous):
  """The table stage on a workdir holding only (b')'s fine-tuning results."""
  for task, metric, scores in (("mrpc", "accuracy", [0.70, 0.72, 0.74]),
                               ("stsb", "spearman", [0.40, 0.41, 0.42])):
    for seed, score in enumerate(scores):
      run = tmp_path / "w" / "finetune" / task / "ours_mlm_only" / f"seed{seed}"
      run.mkdir(parents=True)
      (run / "results.json").write_text(json.dumps({"score": score, "selection_metric": metric}))
  out = tmp_path / "study.json"
  p = subprocess.run([sys.executable, str(SCRIPT), "--stage=table", f"--workdir={tmp_path / 'w'}",
                      "--tasks=mrpc,stsb", "--inits=random,ours,ours_mlm_only",
                      f"--previous_json={previous}", f"--json={out}"],
                     capture_output=True, text=True)
  return p, out


def test_previous_study_fills_the_missing_inits_and_every_init_gets_its_difference(tmp_path):
  p, out = _table(tmp_path, _previous(tmp_path / "prev.json"))
  assert p.returncode == 0, p.stderr
  r = json.loads(out.read_text())
  mrpc = r["table"]["mrpc"]
  assert mrpc["random"]["runs"] == [75.0, 74.5, 75.5]  # taken from the earlier study
  assert [round(x, 6) for x in mrpc["ours_mlm_only"]["runs"]] == [70.0, 72.0, 74.0]
  se = lambda xs: math.sqrt(sum((x - sum(xs) / 3) ** 2 for x in xs) / 2 / 3)
  d = mrpc["ours_mlm_only_minus_random"]
  assert math.isclose(d["mean"], 72.0 - 75.0)
  assert math.isclose(d["se"], math.hypot(se([70.0, 72.0, 74.0]), se([75.0, 74.5, 75.5])))
  assert d["beyond_two_se"] is False
  assert r["table"]["stsb"]["ours_minus_random"]["beyond_two_se"] is True  # 37 vs 12
  reused = r["reused_from_previous_json"]
  assert sorted(reused["random"]) == ["mrpc/seed0", "mrpc/seed1", "mrpc/seed2",
                                      "stsb/seed0", "stsb/seed1", "stsb/seed2"]
  assert "ours_mlm_only" not in reused and reused["pretraining_curves"] == ["ours"]
  assert r["pretraining_curves"]["ours"]["train/mlm_accuracy"][1] == [100, 0.08]
  assert r["settings"]["seq_len"] == 128
  assert "ours_mlm_only - random" in p.stdout


def test_previous_study_with_another_recipe_is_refused_by_name(tmp_path):
  p, out = _table(tmp_path, _previous(tmp_path / "prev.json", finetune_lr=2e-5))
  assert p.returncode != 0 and not out.exists()
  assert "--previous_json" in p.stderr and "finetune_lr" in p.stderr
