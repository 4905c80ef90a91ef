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


# ---------------------------------------------------------------------------------------
# The install cell (launch/colab/install_cell.py): what it does on a fresh Colab runtime.
# The notebook runs above find bert_jax installed, so its install path is tested here.

INSTALL_CELL = COLAB / "install_cell.py"


def install_cell():
  """The cell's functions, without its last line (which installs)."""
  src = INSTALL_CELL.read_text()
  assert src.rstrip().endswith("INSTALL = install()")
  ns = {}
  exec(compile(src.rstrip()[:-len("INSTALL = install()")], str(INSTALL_CELL), "exec"), ns)
  return ns


def test_every_notebook_has_the_install_cell_as_shipped():
  import nbformat
  for nb_path in sorted(COLAB.glob("*.ipynb")):
    cells = [c.source for c in nbformat.read(nb_path, as_version=4).cells
             if c.cell_type == "code"]
    assert INSTALL_CELL.read_text().rstrip("\n") in cells, nb_path.name
    assert not any("YOUR_ORG" in c or "/dev/accel" in c for c in cells), nb_path.name


def test_install_cell_asks_the_real_jax_for_its_backend():
  got = install_cell()["ask_jax"]()
  import jax
  assert got == {"version": jax.__version__, "backend": "cpu"}


def test_install_without_a_source_says_what_to_set():
  plan = install_cell()["install_plan"]
  with pytest.raises(RuntimeError, match="BERT_JAX_SOURCE is empty.*git"):
    plan("", {"version": "0.10.2", "backend": "tpu"}, False)
  assert plan("", None, True) == ([], "bert_jax is installed.")


@pytest.mark.parametrize("before,jax_cmd", [
    ({"version": "0.10.2", "backend": "tpu"}, None),  # the runtime's jax works: kept
    ({"version": "0.4.33", "backend": "tpu"}, "jax[tpu]==0.10.2"),
    ({"version": "0.4.33", "backend": "gpu"}, "jax[cuda12]==0.10.2"),
    (None, "jax==0.10.2"),
])
def test_install_keeps_a_working_runtime_jax_else_installs_the_same_accelerator(
    tmp_path, before, jax_cmd):
  cmds, message = install_cell()["install_plan"](str(tmp_path), before, False)
  assert cmds[0][-2:] == ["-e", str(tmp_path)]
  if jax_cmd is None:
    assert len(cmds) == 1 and "keeping" in message
  else:
    assert len(cmds) == 2 and cmds[1][-1] == jax_cmd and "replacing" in message


def test_install_from_an_sdist_then_asks_jax_again_and_says_restart(tmp_path, monkeypatch):
  import sys
  import tarfile
  monkeypatch.chdir(tmp_path)
  (tmp_path / "pkg" / "bert_jax-0.1.0").mkdir(parents=True)
  (tmp_path / "pkg" / "bert_jax-0.1.0" / "setup.py").write_text("# sdist\n")
  with tarfile.open(tmp_path / "bert_jax-0.1.0.tar.gz", "w:gz") as tar:
    tar.add(tmp_path / "pkg" / "bert_jax-0.1.0", arcname="bert_jax-0.1.0")
  answers = iter([{"version": "0.4.33", "backend": "tpu"},
                  {"version": "0.10.2", "backend": "tpu"}])
  ran = []

  def run(cmd, **kw):
    ran.append(cmd)
    if cmd[1] == "-c":  # ask_jax
      return type("R", (), {"returncode": 0, "stdout": json.dumps(next(answers))})
    return type("R", (), {"returncode": 0})

  monkeypatch.setattr(sys, "path", list(sys.path))
  got = install_cell()["install"]("bert_jax-0.1.0.tar.gz", run=run, modules={"jax": None},
                                  have=False)
  src = tmp_path / "bert_jax_src"
  assert (src / "setup.py").read_text() == "# sdist\n" and sys.path[0] == str(src)
  pip = [c for c in ran if "pip" in c]
  assert pip[0][-2:] == ["-e", str(src)] and pip[1][-1] == "jax[tpu]==0.10.2"
  assert got == "restart"  # jax changed under a kernel that had imported it
