"""Memory preflight: a step that cannot fit the devices stops after compiling, before the
first step, with one line (what it needs, what there is, the config changes that fit),
no traceback and no half-made workdir; and the vocabulary must fit the embeddings.

Every "too big" case is really too big for this host (no capacity override): BERT-Large
at its paper batch on a CPU host, fine-tuning and prediction batches of millions of rows.
"""
import os
import pathlib
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import config as config_lib
from bert_jax import finetune
from bert_jax import main as main_lib
from bert_jax import preflight, train
from bert_jax.config import ConfigError
from _xla import xla_flags
from test_finetune import _tiny_hf_dir, fast_compile  # noqa: F401 (autouse fixture)

REPO = pathlib.Path(__file__).resolve().parents[1]
CORPUS = REPO / "bert_jax" / "resources" / "corpus"
GLUE_FIXTURES = REPO / "tests" / "fixtures" / "glue"
GiB = 2**30
# BERT-Large (scan_layers=True) at seq 128 needs ~40.5 GiB per device at batch 256
# (compiled on an x86 CPU: arguments 3.8 GiB + temporaries 36.8 GiB), ~0.14 GiB a row.
LARGE_GIB_PER_ROW = 0.14


def _error_lines(text: str, prog: str = "bert_jax.main") -> list[str]:
  return [l for l in text.splitlines() if l.startswith(f"{prog}: error:")]


def _large_batch() -> int:
  """The paper's 256, or more on a host with the RAM to run that (still too big)."""
  ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / GiB
  batch = 256
  while LARGE_GIB_PER_ROW * batch < 1.5 * ram:
    batch *= 2
  return batch


def test_large_config_on_a_small_cpu_host_stops_after_compiling(tmp_path, minilm_path):
  """configs/large.py, for real, in a subprocess on one CPU device (as a user runs it).

  One override keeps the test short: scan_layers=True compiles the 24 layers as one
  (~40 s on 2 cores instead of ~2 min); the model, optimizer, batch and sequence length
  are large.py's, and the step still needs ~2x this host's RAM. The vocabulary is the
  real 30,522-token BERT-Base uncased one (MiniLM's), which large.py's model expects.
  """
  workdir = tmp_path / "large"
  batch = _large_batch()
  cmd = [sys.executable, "-m", "bert_jax.main", "--config=configs/large.py",
         f"--workdir={workdir}", f"--config.data.train_files={CORPUS}/train-*.txt",
         f"--config.vocab_file={minilm_path}/vocab.txt", "--config.model.scan_layers=True",
         f"--config.train.batch_size={batch}"]
  env = dict(os.environ, XLA_FLAGS=xla_flags(1), JAX_PLATFORMS="cpu")
  t0 = time.time()
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  stderr = []
  reader = threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True)
  reader.start()
  stdout, t_compiled = [], None
  for line in proc.stdout:  # timestamp the compile line as it arrives
    stdout.append(line)
    if line.startswith("compiled train step in"):
      t_compiled = time.time()
  rc = proc.wait(timeout=600)
  t_exit = time.time()
  reader.join(timeout=10)
  out, err = "".join(stdout), "".join(stderr)
  print(out + "\n".join(_error_lines(err)))
  assert rc == 2, err[-3000:]
  assert t_compiled is not None, out + err[-3000:]
  after = t_exit - t_compiled
  print(f"start to exit {t_exit - t0:.1f}s, of which compiled -> exit {after:.1f}s")
  assert after < 10, f"exited {after:.1f}s after compiling"
  lines = _error_lines(err)
  assert len(lines) == 1, err[-3000:]
  line = lines[0]
  for words in ("the train step does not fit in memory", f"at batch {batch} x seq 128",
                "GiB per device (arguments", "temporaries", "of RAM available",
                "Would fit (estimated): --config.train.grad_accum_steps=",
                "--config.train.batch_size=", "--config.model.remat=full"):
    assert words in line, (words, line)
  assert "Traceback" not in err and "Traceback" not in out
  assert "RESOURCE_EXHAUSTED" not in err
  assert not workdir.exists()  # created by this run, removed again: nothing half-made


def test_fit_hints_are_config_changes_that_fit():
  """The estimate: the state (and gradients) are fixed, the rest scales with the rows per
  device and micro-step. Numbers of the large-config run above (40.5 GiB, 17.3 free);
  recompiled at the hinted settings they need 15.4 GiB (accumulation 4) and 14.0 GiB
  (batch 64) on that host."""
  h = preflight.MemoryHints(
      what="train step", batch_size=256, batch_flag="--config.train.batch_size",
      batch_shards=1, shape="seq 128", grad_accum_steps=1,
      grad_accum_flag="--config.train.grad_accum_steps", remat="dots",
      fixed_bytes=int(5.0 * GiB), accum_bytes=int(1.25 * GiB))
  text = preflight.fit_hints(h, int(40.5 * GiB), int(17.3 * GiB))
  assert text.startswith("Would fit (estimated): --config.train.grad_accum_steps=4 "), text
  assert "--config.train.batch_size=64;" in text and "--config.model.remat=full" in text
  # Data parallel over 8 devices with accumulation 2: a hint keeps both divisible.
  h8 = preflight.MemoryHints(**{**h.__dict__, "batch_shards": 8, "grad_accum_steps": 2})
  text = preflight.fit_hints(h8, int(40.5 * GiB), int(17.3 * GiB))
  assert "--config.train.grad_accum_steps=8 " in text, text
  assert "--config.train.batch_size=64;" in text, text  # 4 rows x 8 devices x 2 steps
  # Parameters and optimizer state that alone do not fit: no batch helps.
  text = preflight.fit_hints(h, int(40.5 * GiB), int(4 * GiB))
  assert "alone take 5.0 GiB per device" in text and "--config.mesh.shape=" in text
  # Prediction: no accumulation, no remat.
  hp = preflight.MemoryHints(what="prediction", batch_size=4096, batch_flag="--batch_size",
                             fixed_bytes=GiB)
  assert preflight.fit_hints(hp, 65 * GiB, 10 * GiB) == (
      "Would fit (estimated): --batch_size=512.")


def test_check_memory_fits_compares_the_compiled_program_with_the_capacity():
  f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum(0))
  x = jax.ShapeDtypeStruct((1024, 256), jnp.float32)
  compiled = f.lower(x).compile()
  h = preflight.MemoryHints(what="prediction", batch_size=1024, batch_flag="--batch_size")
  needed, available = preflight.check_memory_fits(compiled, jax.devices()[:1], h,
                                                  capacity=GiB)
  mem = compiled.memory_analysis()
  assert needed == (mem.argument_size_in_bytes + mem.temp_size_in_bytes
                    + mem.output_size_in_bytes - mem.alias_size_in_bytes)
  assert needed >= 1024 * 256 * 4 and available == GiB
  with pytest.raises(preflight.DoesNotFitError) as e:
    preflight.check_memory_fits(compiled, jax.devices()[:1], h, capacity=needed - 1)
  assert "\n" not in str(e.value) and "the prediction does not fit in memory" in str(e.value)
  # The device's own capacity: host RAM on the CPU, shared by the local CPU devices.
  cap, what = preflight.device_memory(jax.devices())
  assert 0 < cap * len(jax.devices()) <= preflight.host_available_bytes() + GiB
  assert "of host RAM available, shared by 8 CPU devices" in what


def test_removed_on_failure_removes_only_the_directories_the_run_made(tmp_path):
  fresh = tmp_path / "runs" / "fresh"  # its parent is new too
  with pytest.raises(preflight.DoesNotFitError):
    with preflight.removed_on_failure(str(fresh)):
      (fresh / "checkpoints").mkdir(parents=True)
      (fresh / "logs").mkdir()  # console.py's log of this run
      (fresh / "logs" / "host.log").write_text("I1203 compiling\n")
      raise preflight.DoesNotFitError("too big")
  assert not (tmp_path / "runs").exists()
  old = tmp_path / "old"
  (old / "checkpoints" / "100").mkdir(parents=True)
  (old / "logs").mkdir()
  (old / "config.json").write_text("{}")
  with pytest.raises(preflight.DoesNotFitError):
    with preflight.removed_on_failure(str(old)):
      (old / "checkpoints" / "200").mkdir()
      (old / "logs" / "host.log").write_text("I1203 compiling\n")  # its log: kept
      (old / "mrpc").mkdir()
      (old / "mrpc" / "results.json").write_text("{}")  # e.g. a finished GLUE task
      raise preflight.DoesNotFitError("too big")
  assert sorted(str(p.relative_to(old)) for p in old.rglob("*")) == [
      "checkpoints", "checkpoints/100", "config.json", "logs", "logs/host.log", "mrpc",
      "mrpc/results.json"]
  with pytest.raises(ConfigError):  # other errors: nothing is removed
    with preflight.removed_on_failure(str(fresh)):
      fresh.mkdir(parents=True)
      raise ConfigError("bad value")
  assert fresh.is_dir()


# ---------------------------------------------------------------------------------------
# Fine-tuning and prediction: batches of millions of rows of a tiny model.

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, minilm_path):
  return _tiny_hf_dir(str(tmp_path_factory.mktemp("ckpt") / "tiny_bert"),
                      os.path.join(minilm_path, "vocab.txt"))


def _glue_config(checkpoint):
  c = config_lib.load_config_file(str(REPO / "configs" / "glue.py"))
  c.init_checkpoint = checkpoint
  c.glue.task = "mrpc"
  c.glue.data_dir = str(GLUE_FIXTURES)
  c.data.max_seq_length = 64
  c.train.batch_size = 16
  c.finetune.eval_batch_size = 24
  c.finetune.max_steps = 2
  return c


@pytest.mark.parametrize("key,value,words", [
    ("train.batch_size", 2**22,
     ["the train step does not fit in memory", "at batch 4194304 x seq ",
      "--config.train.grad_accum_steps=", "--config.train.batch_size="]),
    ("finetune.eval_batch_size", 2**22,
     ["the eval step does not fit in memory", "at batch 4194304 x seq ",
      "train state held meanwhile", "Would fit (estimated): "
      "--config.finetune.eval_batch_size="]),
])
def test_finetuning_too_big_stops_before_the_first_step(checkpoint, tmp_path, key, value,
                                                        words):
  c = _glue_config(checkpoint)
  group, name = key.split(".")
  c[group][name] = value
  fresh = tmp_path / "fresh"
  t0 = time.time()
  with pytest.raises(preflight.DoesNotFitError) as e:
    main_lib.run(c, str(fresh))  # as `python -m bert_jax.main` runs it
  msg = str(e.value)
  print(f"{time.time() - t0:.1f}s: {msg}")
  assert "\n" not in msg
  for w in words:
    assert w in msg, (w, msg)
  assert not fresh.exists()
  if key != "train.batch_size":
    return
  # A workdir that holds another run keeps exactly what it held.
  old = tmp_path / "old"
  old.mkdir()
  (old / "notes.txt").write_text("kept")
  with pytest.raises(preflight.DoesNotFitError):
    main_lib.run(c, str(old))
  assert [p.name for p in old.iterdir()] == ["notes.txt"]
  # A results.json that no finished run wrote is refused by name, not read.
  (old / "results.json").write_text("{}")
  with pytest.raises(finetune.FinetuneError, match="results.json is not a finished"):
    main_lib.run(c, str(old))
  assert sorted(p.name for p in old.iterdir()) == ["notes.txt", "results.json"]


def test_finetuning_command_too_big_exits_with_one_line(checkpoint, tmp_path):
  """The same through `python -m bert_jax.main` (its log file set up, one CPU device)."""
  workdir = tmp_path / "mrpc"
  proc = subprocess.run(
      [sys.executable, "-m", "bert_jax.main", "--config=configs/glue.py",
       f"--workdir={workdir}", f"--config.init_checkpoint={checkpoint}",
       "--config.glue.task=mrpc", f"--config.glue.data_dir={GLUE_FIXTURES}",
       "--config.data.max_seq_length=64", f"--config.train.batch_size={2**22}"],
      cwd=REPO, env=dict(os.environ, XLA_FLAGS=xla_flags(1), JAX_PLATFORMS="cpu"),
      capture_output=True, text=True, timeout=300)
  lines = _error_lines(proc.stderr)
  print(lines)
  assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
  assert "the train step does not fit in memory" in lines[0]
  assert "Traceback" not in proc.stderr + proc.stdout
  assert not workdir.exists()


def test_predict_batch_too_big_is_one_line(tmp_path, capsys):
  from flax.linen import meta
  from bert_jax.tools import export, predict
  m = config_lib.model_config("tiny")
  m.update(vocab_size=64, hidden_size=32, num_heads=2, intermediate_size=64,
           max_position_embeddings=32, num_layers=2)
  spec = export.ServingSpec(head="classification", max_seq_length=16, model=m.to_dict(),
                            labels=["a", "b"])
  x = np.zeros((1, 16), np.int32)
  shapes = jax.eval_shape(export.build_module(spec).init, jax.random.PRNGKey(0), x, x, x)
  params = jax.tree_util.tree_map(lambda s: np.full(s.shape, 0.01, s.dtype),
                                  meta.unbox(shapes["params"]))
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                             + [f"w{i}" for i in range(59)]) + "\n")
  export.save(str(tmp_path / "m"), spec, params, str(vocab), platforms=("cpu",))
  (tmp_path / "in.txt").write_text("w1 w2 w3\nw4 w5\n")
  out = tmp_path / "out" / "preds.jsonl"
  args = ["--model_dir", str(tmp_path / "m"), "--input_file", str(tmp_path / "in.txt"),
          "--output_file", str(out)]
  assert predict.main(args + ["--batch_size", str(2**26)]) == 2
  err = capsys.readouterr().err
  lines = _error_lines(err, "bert_jax.tools.predict")
  assert len(lines) == 1 and err.strip() == lines[0], err
  assert "the prediction does not fit in memory: at batch 67108864 x seq 16" in lines[0]
  assert "Would fit (estimated): --batch_size=" in lines[0]
  assert not out.parent.exists()
  assert predict.main(args + ["--batch_size", "2"]) == 0  # and a batch that fits runs
  assert "2 predictions" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------
# The vocabulary: the bundled 8,000-token one never silently feeds a 30,522-row model.

def test_base_config_without_vocab_file_fails_before_compiling(tmp_path):
  env = dict(os.environ, XLA_FLAGS=xla_flags(1), JAX_PLATFORMS="cpu")
  t0 = time.time()
  proc = subprocess.run(
      [sys.executable, "-m", "bert_jax.main", "--config=configs/base.py",
       f"--workdir={tmp_path / 'base'}", f"--config.data.train_files={CORPUS}/train-*.txt"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  print(f"{time.time() - t0:.1f}s: {proc.stderr.strip().splitlines()[-1]}")
  assert proc.returncode == 2
  lines = _error_lines(proc.stderr)
  assert len(lines) == 1 and "Traceback" not in proc.stderr
  for w in ("config.vocab_file is empty", "bundled 8000-token vocabulary",
            "config.model.vocab_size=30522", "--config.vocab_file=PATH/vocab.txt",
            "--config.model.vocab_size=8000"):
    assert w in lines[0], (w, lines[0])
  assert "compiled train step" not in proc.stdout
  assert not (tmp_path / "base").exists()


def test_vocabulary_accepted_when_the_model_is_sized_for_it(minilm_path):
  tiny = config_lib.load_config_file(str(REPO / "configs" / "tiny.py"))
  train.check_run_inputs(tiny)  # the README's first command: bundled 8,000 = vocab_size
  large = config_lib.load_config_file(str(REPO / "configs" / "large.py"))
  large.model.vocab_size = 8000  # explicitly a smaller vocabulary: accepted
  train.check_run_inputs(large)
  large.model.vocab_size = 30522
  large.vocab_file = os.path.join(minilm_path, "vocab.txt")  # a 30,522-token vocab.txt
  train.check_run_inputs(large)
  large.model.vocab_size = 30528  # padded rows: say so (and how to fix it)
  with pytest.raises(ConfigError, match=r"config.vocab_file=.*vocab.txt has 30522 tokens, "
                     r"but config.model.vocab_size=30528.*--config.model.vocab_size=30522"):
    train.check_run_inputs(large)
