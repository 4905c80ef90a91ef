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

Huge pages still fault in (and the kernel zeroes) every block malloc maps afresh, so
malloc is also told to keep freed memory (KEEP_HEAP: one arena, no mmap'd blocks, no
trimming): a step reuses the pages of the step before. That matters most where shapes
change from step to step, as fine-tuning's length buckets do: MiniLM on RTE, median step
of the 96- and 128-token buckets 2.16 -> 1.43 s and 2.77 -> 1.92 s with KEEP_HEAP added to
huge pages (2-core Intel Xeon, benchmarks/README.md "The fine-tuning loop"). Where huge
pages are not to be had (transparent huge pages "never", or glibc 2.26-2.34 without the
hugetlb tunable), KEEP_HEAP alone: BERT-Base B8 S128, 4.0M -> 0.83M page faults per
process and 3.26 -> 3.07-3.11 s per step (benchmarks/README.md, "Levers"). The price:
the process never hands freed memory back, so its RSS stays at its peak.
"""
from __future__ import annotations

import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
# Every thread in malloc's main arena (per-thread arenas make and unmap heaps step after
# step), no block mmap'd on its own, freed memory never handed back.
KEEP_HEAP = ("glibc.malloc.arena_max=1", "glibc.malloc.mmap_max=0",
             "glibc.malloc.trim_threshold=68719476736")
_ENV = "GLIBC_TUNABLES"
_OPT_OUT = "BERT_JAX_HUGEPAGES"
_THP = "/sys/kernel/mm/transparent_hugepage/enabled"


def _tunables(env=None) -> dict[str, str]:
  """GLIBC_TUNABLES of `env` (default os.environ) as {name: value}."""
  value = (os.environ if env is None else env).get(_ENV, "")
  return dict(t.partition("=")[::2] for t in value.split(":") if t)


def enabled() -> bool:
  """True when this process's glibc malloc was started with the huge-page tunable."""
  return _tunables().get("glibc.malloc.hugetlb", "0") not in ("", "0")


def _glibc() -> tuple[int, int] | None:
  """(major, minor) of the running glibc on Linux; None elsewhere."""
  if sys.platform != "linux":
    return None
  libc, version = platform.libc_ver()
  if libc != "glibc" or not version:
    return None
  major, minor = (int(x) for x in version.split(".")[:2])
  return major, minor


def thp_available() -> bool:
  """Transparent huge pages can be had by asking (madvise) or always."""
  try:
    with open(_THP) as f:  # io: local-only (a kernel setting of this machine)
      return "[never]" not in f.read()
  except OSError:
    return False


def _supported() -> bool:
  """glibc >= 2.35 on Linux, which has the hugetlb tunable."""
  return (_glibc() or (0, 0)) >= (2, 35)


def _tunables_to_add(thp: bool | None = None) -> tuple[str, ...]:
  """Huge pages where glibc and the kernel give them, with KEEP_HEAP (glibc >= 2.26);
  KEEP_HEAP alone where huge pages are not to be had; else nothing."""
  version = _glibc() or (0, 0)
  keep = KEEP_HEAP if version >= (2, 26) else ()
  if version >= (2, 35) and (thp_available() if thp is None else thp):
    return (TUNABLE, *keep)
  return keep


def environ_with_hugepages(env: dict[str, str] | None = None, thp: bool | None = None
                           ) -> dict[str, str]:
  """A copy of `env` (default os.environ) with the allocator tunables appended to
  GLIBC_TUNABLES: huge pages and KEEP_HEAP, or where `thp` (default: this kernel's
  setting) is False, KEEP_HEAP alone. A tunable already named in `env` is left as it is."""
  env = dict(os.environ if env is None else env)
  have = _tunables(env)
  add = [t for t in _tunables_to_add(thp) if t.partition("=")[0] not in have]
  if add:
    current = env.get(_ENV, "")
    env[_ENV] = ":".join(([current] if current else []) + add)
  return env


def reexec_with_hugepages(argv: list[str]) -> None:
  """Replaces this process by `sys.executable *argv` with the tunable set, unless it is
  set already, turned off (BERT_JAX_HUGEPAGES=0) or not supported; otherwise returns.

  Call it first thing in a `__main__` block, before threads or accelerators start.
  argv is the command without the interpreter, e.g. ["-m", "bert_jax.main", *args].
  """
  have = _tunables()
  if ("glibc.malloc.hugetlb" in have or "glibc.malloc.mmap_max" in have  # by user or us
      or os.environ.get(_OPT_OUT, "1") == "0" or not _tunables_to_add()):
    return
  env = environ_with_hugepages()  # names hugetlb or mmap_max: the new process returns
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *argv], env)
