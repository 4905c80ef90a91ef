"""The persistent compilation cache (bert_jax/compile_cache.py): a second run of the same
job loads its compiled train step from disk and trains to the same numbers; the cache
is kept apart per host CPU; "" turns it off; a directory set through JAX is kept."""
import os
import pathlib
import subprocess
import sys

import jax

from bert_jax import compile_cache
from _xla import xla_flags

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY_RUN = ["--config=configs/tiny.py", "--config.train.num_steps=3",
            "--config.train.warmup_steps=1", "--config.train.log_every=1",
            "--config.train.eval_every=3", "--config.train.eval_steps=1",
            "--config.train.checkpoint_every=3"]


def pretrain(tmp_path, name, *overrides):
  env = dict(os.environ, XLA_FLAGS=xla_flags(8), JAX_PLATFORMS="cpu",
             BERT_JAX_CACHE_DIR=str(tmp_path / "cache"))
  proc = subprocess.run([sys.executable, "-m", "bert_jax.main", *TINY_RUN,
                         f"--workdir={tmp_path / name}", *overrides],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  done = [l for l in proc.stdout.splitlines() if l.startswith("done: step 3")]
  assert done, proc.stdout[-2000:]
  return done[0].split(";")[1]  # "eval loss ..., mlm_acc ..., nsp_acc ..."


def cached_files(tmp_path):
  root = tmp_path / "cache" / "xla"
  return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_second_run_loads_the_compiled_step_and_trains_the_same(tmp_path):
  first = pretrain(tmp_path, "run1")
  files = cached_files(tmp_path)
  # one subdirectory, named for this host's CPU; the train step among its programs
  assert {p.parent.name for p in files} == {compile_cache.host_fingerprint()}
  assert any(p.name.startswith("jit_step-") for p in files), sorted(p.name for p in files)
  second = pretrain(tmp_path, "run2")
  assert cached_files(tmp_path) == files  # every program was read back, none written anew
  assert second == first  # the loaded program computes what the compiled one did


def test_empty_setting_turns_the_cache_off(tmp_path):
  pretrain(tmp_path, "run", "--config.train.compilation_cache_dir=")
  assert not (tmp_path / "cache").exists()


def test_directories_per_setting_and_per_cpu(tmp_path, monkeypatch):
  monkeypatch.setenv("BERT_JAX_CACHE_DIR", str(tmp_path / "base"))
  host = compile_cache.host_fingerprint()
  assert compile_cache.resolve("auto") == str(tmp_path / "base" / "xla" / host)
  assert compile_cache.resolve(str(tmp_path / "mine")) == str(tmp_path / "mine" / host)
  assert compile_cache.resolve("") == ""
  # CPUs that differ in their instruction set get different directories; the same CPU
  # (another core's identical entry) the same one.
  cpu = "vendor_id\t: GenuineIntel\nmodel name\t: Xeon\nflags\t\t: fpu sse2 avx2 {}\n\n"
  files = {}
  for name, flags in (("avx2", ""), ("avx512", "avx512f"), ("again", "")):
    files[name] = tmp_path / name
    files[name].write_text(cpu.format(flags) + cpu.format("amx_tile"))
  prints = {n: compile_cache.host_fingerprint(str(f)) for n, f in files.items()}
  assert prints["avx2"] != prints["avx512"] and prints["avx2"] == prints["again"]


def test_a_directory_given_to_jax_is_kept(tmp_path):
  before = jax.config.jax_compilation_cache_dir
  try:
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "users"))
    assert compile_cache.enable("auto") == str(tmp_path / "users")
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "users")
  finally:
    jax.config.update("jax_compilation_cache_dir", before)
