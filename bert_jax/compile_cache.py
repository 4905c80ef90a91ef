"""JAX's persistent compilation cache, on by default for every run.

A fine-tuning run compiles its train and predict steps once per length bucket (on two CPU
cores ~5 s each for MiniLM, ~20 s for BERT-Base), and a sweep, a rerun after preemption or
the next seed compiles the very same programs again. With the cache each program is
compiled once per machine: later runs load it from disk.

`config.train.compilation_cache_dir`: "auto" = `$BERT_JAX_CACHE_DIR/xla` (else
`~/.cache/bert_jax/xla`), a path, or "" (off). Compiled CPU code is specific to the CPU it
was compiled for, so the directory gets one subdirectory per host CPU model and feature
set: a home directory shared by different machines never hands one the other's code.
A cache directory the user gave JAX itself (JAX_COMPILATION_CACHE_DIR) is left alone.
"""
from __future__ import annotations

import hashlib
import os
import platform

import jax

from bert_jax import paths

AUTO = "auto"


def host_fingerprint(cpuinfo_path: str = "/proc/cpuinfo") -> str:
  """A short name for this host's CPU: architecture + a hash of its model and flags."""
  text = platform.machine() + platform.processor()
  try:
    with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:  # io: local-only (procfs)
      for line in f:
        key = line.split(":", 1)[0].strip()
        if key in ("vendor_id", "model name", "flags", "Features", "CPU part"):
          text += line
        if not line.strip():
          break  # the first processor describes them all
  except OSError:
    pass
  return f"{platform.machine() or 'cpu'}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def resolve(configured: str) -> str:
  """The directory `configured` names ("" when off), with the host subdirectory."""
  if not configured:
    return ""
  base = paths.join(paths.cache_dir(), "xla") if configured == AUTO else \
      paths.expanduser(configured)
  return paths.join(base, host_fingerprint())


def enable(configured: str) -> str:
  """Turns the cache on for this process (before the run's first compilation); returns
  the directory in use, "" when off. Idempotent; keeps a directory set another way."""
  current = jax.config.jax_compilation_cache_dir
  if current:
    return current
  directory = resolve(configured)
  if directory:
    jax.config.update("jax_compilation_cache_dir", directory)
  return directory
