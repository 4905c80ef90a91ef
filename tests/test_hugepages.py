"""bert_jax/hugepages.py: the re-executed process has the malloc tunable, keeps its pid and
arguments, and takes far fewer page faults for large, freshly allocated buffers."""
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from bert_jax import hugepages

# A stand-in for a train step: allocate, touch and free 256 MiB (above glibc's mmap
# threshold, as XLA:CPU's step temporaries are) three times; report the page faults.
CHILD = textwrap.dedent("""
    import json, os, resource, sys
    print(json.dumps({"phase": "start", "pid": os.getpid()}), flush=True)
    from bert_jax import hugepages
    hugepages.reexec_with_hugepages(sys.argv)
    import ctypes
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):  # plain malloc, as XLA:CPU (numpy would madvise huge pages itself)
      p = libc.malloc(256 * 2**20)
      ctypes.memset(p, 1, 256 * 2**20)
      libc.free(p)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(json.dumps({"phase": "done", "pid": os.getpid(), "argv": sys.argv[1:],
                      "tunables": os.environ.get("GLIBC_TUNABLES", ""),
                      "enabled": hugepages.enabled(), "faults": faults}), flush=True)
""")


def _run(tmp_path, env_extra: dict) -> list[dict]:
  script = tmp_path / "child.py"
  script.write_text(CHILD)
  env = {k: v for k, v in os.environ.items()
         if k not in ("GLIBC_TUNABLES", "BERT_JAX_HUGEPAGES")}
  env.update(env_extra)
  out = subprocess.run([sys.executable, str(script), "--flag=1", "x y"], env=env,
                       capture_output=True, text=True, timeout=120, check=True)
  return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def _thp_available() -> bool:
  path = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled")
  return path.exists() and "[never]" not in path.read_text()


@pytest.mark.skipif(not hugepages._supported(), reason="needs Linux with glibc >= 2.35")
def test_reexec_sets_tunable_keeps_pid_and_args_and_cuts_page_faults(tmp_path):
  on = _run(tmp_path, {})
  off = _run(tmp_path, {"BERT_JAX_HUGEPAGES": "0"})
  # Re-executed once: two starts (same pid: exec, not a child), one result.
  assert [r["phase"] for r in on] == ["start", "start", "done"]
  assert len({r["pid"] for r in on}) == 1
  done_on, done_off = on[-1], off[-1]
  assert done_on["argv"] == ["--flag=1", "x y"]
  assert done_on["enabled"] and "glibc.malloc.hugetlb=1" in done_on["tunables"]
  # Opted out: no re-exec, no tunable.
  assert [r["phase"] for r in off] == ["start", "done"]
  assert not done_off["enabled"]
  if _thp_available():
    # 3 x 256 MiB in 4 KiB pages is ~196k faults; in 2 MiB pages a few hundred.
    assert done_off["faults"] > 150_000
    assert done_on["faults"] < done_off["faults"] / 20
    # Huge pages alone fault every fresh block in again; with the freed heap kept, the
    # second and third blocks reuse the first one's pages.
    alone = _run(tmp_path, {"GLIBC_TUNABLES": hugepages.TUNABLE})[-1]
    assert done_on["faults"] < alone["faults"] / 2


def test_user_setting_wins_and_never_loops(tmp_path):
  # hugetlb=0 set by the user: no re-exec (one start), and the process is not enabled.
  runs = _run(tmp_path, {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})
  assert [r["phase"] for r in runs] == ["start", "done"]
  assert not runs[-1]["enabled"]


@pytest.mark.skipif(not hugepages._supported(), reason="needs Linux with glibc >= 2.35")
def test_environ_keeps_other_tunables():
  env = hugepages.environ_with_hugepages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},
                                         thp=True)
  assert env["GLIBC_TUNABLES"] == ("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1:"
                                   "glibc.malloc.mmap_max=0:"
                                   "glibc.malloc.trim_threshold=68719476736")
  assert (hugepages.environ_with_hugepages({}, thp=True)["GLIBC_TUNABLES"]
          == ":".join((hugepages.TUNABLE, *hugepages.KEEP_HEAP)))


@pytest.mark.skipif((hugepages._glibc() or (0, 0)) < (2, 26),
                    reason="needs Linux with glibc >= 2.26")
def test_without_huge_pages_the_fallback_keeps_freed_memory(tmp_path):
  # A kernel with transparent huge pages off gets KEEP_HEAP; the user's own arena_max stays.
  env = hugepages.environ_with_hugepages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"},
                                         thp=False)
  assert env["GLIBC_TUNABLES"] == ("glibc.malloc.arena_max=4:glibc.malloc.mmap_max=0:"
                                   "glibc.malloc.trim_threshold=68719476736")
  # The fallback at work (set by hand, as reexec would on such a kernel): the same 3 x 256 MiB
  # fault in once, then the freed pages are reused.
  kept = _run(tmp_path, {"GLIBC_TUNABLES": ":".join(hugepages.KEEP_HEAP)})
  plain = _run(tmp_path, {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})
  assert [r["phase"] for r in kept] == ["start", "done"]  # ours already set: no re-exec
  assert plain[-1]["faults"] > 150_000
  assert kept[-1]["faults"] < plain[-1]["faults"] / 2.5
