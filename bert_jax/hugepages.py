"""Transparent huge pages for the host buffers XLA allocates every step.

XLA:CPU allocates each step's temporaries (gradients, saved activations: ~1.7 GiB for a
BERT-Base step at B8 S128) through glibc malloc, which maps every large block fresh from
the kernel and returns it on free. Each step then takes a page fault per 4 KiB page it
touches: 440k faults and 0.8 CPU-s of kernel time per BERT-Base step on the 2-core CI
machine, 15% of the step's wall time (benchmarks/train_step.py, README "Performance").
glibc's `glibc.malloc.hugetlb=1` tunable makes malloc advise transparent huge pages
(2 MiB) for those blocks: 1.5k faults per step instead, same results bit for bit.

A glibc tunable is read once when the process starts, so a program that wants it
re-executes itself with the tunable set (`reexec_with_hugepages`, called only from a
`__main__` block: never inside a library call, a test or a notebook). It applies to
everything in the process, so benchmarks that compare implementations in one process
give every one of them the same allocator. `BERT_JAX_HUGEPAGES=0` turns it off.
"""
from __future__ import annotations

import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
_ENV = "GLIBC_TUNABLES"
_OPT_OUT = "BERT_JAX_HUGEPAGES"


def _tunables(env=None) -> dict[str, str]:
  """GLIBC_TUNABLES of `env` (default os.environ) as {name: value}."""
  value = (os.environ if env is None else env).get(_ENV, "")
  return dict(t.partition("=")[::2] for t in value.split(":") if t)


def enabled() -> bool:
  """True when this process's glibc malloc was started with the huge-page tunable."""
  return _tunables().get("glibc.malloc.hugetlb", "0") not in ("", "0")


def _supported() -> bool:
  """glibc >= 2.35 on Linux (older glibc ignores the unknown tunable: harmless)."""
  if sys.platform != "linux":
    return False
  libc, version = platform.libc_ver()
  if libc != "glibc" or not version:
    return False
  major, minor = (int(x) for x in version.split(".")[:2])
  return (major, minor) >= (2, 35)


def environ_with_hugepages(env: dict[str, str] | None = None) -> dict[str, str]:
  """A copy of `env` (default os.environ) with the tunable appended to GLIBC_TUNABLES."""
  env = dict(os.environ if env is None else env)
  if "glibc.malloc.hugetlb" not in _tunables(env):
    current = env.get(_ENV, "")
    env[_ENV] = f"{current}:{TUNABLE}" if current else TUNABLE
  return env


def reexec_with_hugepages(argv: list[str]) -> None:
  """Replaces this process by `sys.executable *argv` with the tunable set, unless it is
  set already, turned off (BERT_JAX_HUGEPAGES=0) or not supported; otherwise returns.

  Call it first thing in a `__main__` block, before threads or accelerators start.
  argv is the command without the interpreter, e.g. ["-m", "bert_jax.main", *args].
  """
  if ("glibc.malloc.hugetlb" in _tunables()  # set (on or off) by the user or by us
      or os.environ.get(_OPT_OUT, "1") == "0" or not _supported()):
    return
  env = environ_with_hugepages()  # enabled() is then true: the new process returns
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *argv], env)
