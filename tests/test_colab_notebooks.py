"""launch/colab/*.ipynb run top to bottom (nbclient, a real Jupyter kernel, CPU) at their
SMALL size on repository fixtures, and their outputs show the device, the metrics and a
plot; the numbers they print agree with the files the runs wrote."""
import json
import pathlib
import re

import pytest

from _xla import xla_flags

REPO = pathlib.Path(__file__).resolve().parents[1]
COLAB = REPO / "launch" / "colab"
FIXTURES = REPO / "tests" / "fixtures"


def execute(name, tmp_path, monkeypatch, **env):
  import nbformat
  from nbclient import NotebookClient
  # The kernel sees one CPU, as a user would (the user's other XLA flags kept).
  monkeypatch.setenv("XLA_FLAGS", xla_flags(1))
  monkeypatch.setenv("BERT_JAX_SMALL", "1")
  monkeypatch.setenv("BERT_JAX_WORK", str(tmp_path / "work"))
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  nb = nbformat.read(COLAB / name, as_version=4)
  assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
      f"{name} is committed with outputs; clear them"
  NotebookClient(nb, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": str(tmp_path)}}).execute()
  text, images = [], 0
  for cell in nb.cells:
    for out in cell.get("outputs", []):
      assert out.output_type != "error", out
      if out.output_type == "stream":
        text.append(out.text)
      elif "image/png" in out.get("data", {}):
        images += 1
      elif "text/plain" in out.get("data", {}):
        text.append(out.data["text/plain"])
  text = "".join(text)
  assert re.search(r"jax \S+: \d+ CPU device\(s\)", text), text[:2000]
  assert images >= 1, "no plot in the outputs"
  return text, tmp_path / "work"


def test_glue_mrpc_notebook(tmp_path, monkeypatch):
  text, work = execute("glue_mrpc.ipynb", tmp_path, monkeypatch,
                       BERT_JAX_GLUE_DIR=str(FIXTURES / "glue"))
  assert "converted checkpoint:" in text
  results = json.loads((work / "mrpc" / "results.json").read_text())
  for record in results["history"]:
    assert (f"step {record['step']}: dev F1 {record['dev/f1']:.4f}  accuracy "
            f"{record['dev/accuracy']:.4f}") in text
  assert re.search(r"P\(paraphrase\)=0\.\d{3}", text)  # the exported model served pairs


def test_pretrain_notebook(tmp_path, monkeypatch):
  text, work = execute("pretrain_small_bert.ipynb", tmp_path, monkeypatch)
  m = re.search(r"train loss ([\d.]+) at step (\d+) -> ([\d.]+) at step 40", text)
  assert m and float(m.group(3)) < float(m.group(1)) - 0.5, text[-3000:]
  assert (work / "pretrain" / "checkpoints" / "40").is_dir()
  assert text.count("-> [") == 2  # the fill-in-the-blank guesses


def test_squad_v2_tau_notebook(tmp_path, monkeypatch):
  text, work = execute("squad_v2_tau.ipynb", tmp_path, monkeypatch,
                       BERT_JAX_SQUAD_TRAIN=str(FIXTURES / "squad" / "train-v2.0-sample.json"),
                       BERT_JAX_SQUAD_DEV=str(FIXTURES / "squad" / "dev-v2.0-sample.json"))
  m = re.search(r"best τ = (\S+): F1 ([\d.]+), EM [\d.]+ \(official best_f1 ([\d.]+) at (\S+)\)",
                text)
  assert m, text[-3000:]
  official = json.loads((work / "squad_v2" / "predictions" / "eval_results.json").read_text())
  # the notebook's own sweep over τ finds the official evaluation's optimum, F1 and τ
  # (both take the lowest τ reaching the best F1); printed to 2 and 4 decimals, so the
  # bounds are one printed unit
  assert float(m.group(2)) == pytest.approx(official["best_f1"], abs=0.01)
  assert float(m.group(3)) == pytest.approx(official["best_f1"], abs=0.01)
  assert float(m.group(1)) == pytest.approx(official["best_f1_thresh"], abs=1e-4)
  assert float(m.group(4)) == pytest.approx(official["best_f1_thresh"], abs=1e-4)
  assert text.count("predicted:") == 8
