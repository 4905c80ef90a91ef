"""Shards in a gs:// bucket -> verified local copies, staged once per machine.

ArrayRecord, the shard format, reads local files only in its open-source release (riegeli
has no GCS reader outside Google: google/array_record#120), and the input pipeline reads
records at random positions of every shard. So each host copies the shards to local disk
once before training, and reads them from there:
- each shard is downloaded to a temporary name, its size and sha256 checked against the
  bucket's `metadata.json` (written by create_pretraining_data), then renamed into place
  with a `.sha256` note beside it; a shard whose note matches the metadata is reused, so a
  restarted or preempted job does not download again, and a re-made shard set (new sha256)
  is downloaded again;
- before downloading, the free space of the cache's disk is checked against the bytes
  still to fetch (an error names `config.data.shard_cache_dir` and the sizes).
The cache lives in `config.data.shard_cache_dir`, default `$BERT_JAX_CACHE_DIR/shards` or
`~/.cache/bert_jax/shards`, one subdirectory per bucket directory.
"""
from __future__ import annotations

import hashlib
import os
import time
from typing import Sequence

from bert_jax import metrics, paths


class StagingError(ValueError):
  """Shards cannot be staged (no room, or a download does not match its metadata)."""


def cache_root(configured: str = "") -> str:
  """The directory that holds staged shards (config value, env, or ~/.cache)."""
  if configured:
    return paths.expanduser(configured)
  return paths.join(paths.cache_dir(), "shards")


def stage(shards: Sequence[str], metadata: dict | None, cache_dir: str = "",
          log=metrics.log) -> list[str]:
  """Remote shard paths -> local paths of verified copies (local paths pass through)."""
  if not shards or not paths.is_remote(shards[0]):
    return list(shards)
  source_dir = str(paths.as_path(shards[0]).parent)
  target = paths.join(cache_root(cache_dir), hashlib.sha256(source_dir.encode()).hexdigest()[:16])
  paths.makedirs(target)
  listed = {s["file"]: s for s in (metadata or {}).get("shards", [])}
  todo, local = [], []
  for remote in shards:
    name = paths.as_path(remote).name
    dst = paths.join(target, name)
    local.append(dst)
    expected = listed.get(name, {})
    if _is_staged(dst, expected):
      continue
    todo.append((remote, dst, expected))
  if not todo:
    return local
  need = sum(e.get("bytes") or paths.size(r) for r, _, e in todo)
  free = paths.free_bytes(target)
  if free is not None and need > free:
    raise StagingError(
        f"staging {len(todo)} shard(s) from {source_dir} needs {need / 2**30:.2f} GiB but "
        f"{target} has {free / 2**30:.2f} GiB free: point --config.data.shard_cache_dir at a "
        "larger local disk (or free space there).")
  log(f"staging {len(todo)} of {len(shards)} shard(s) ({need / 2**20:.1f} MiB) from "
      f"{source_dir} to {target}")
  start, done = time.time(), 0
  for remote, dst, expected in todo:
    tmp = f"{dst}.tmp-{os.getpid()}"
    try:
      paths.copy(remote, tmp)
      got = {"bytes": paths.size(tmp), "sha256": paths.sha256(tmp)}
      for key in ("bytes", "sha256"):
        if expected.get(key) is not None and expected[key] != got[key]:
          raise StagingError(
              f"{remote}: {key} {got[key]} differs from {expected[key]} in {source_dir}/"
              "metadata.json: the bucket's shards changed while being read, or were "
              "corrupted; re-run create_pretraining_data into that directory.")
      paths.move(tmp, dst)
      paths.write_text(dst + ".sha256", got["sha256"])
    finally:
      paths.remove(tmp)
    done += got["bytes"]
  elapsed = max(time.time() - start, 1e-9)
  log(f"staged {len(todo)} shard(s), {done / 2**20:.1f} MiB in "
      f"{metrics.format_duration(elapsed)} ({done / 2**20 / elapsed:.1f} MiB/s)")
  return local


def _is_staged(dst: str, expected: dict) -> bool:
  """A finished local copy whose recorded sha256 (and size) match the metadata's."""
  note = dst + ".sha256"
  if not (paths.exists(dst) and paths.exists(note)):
    return False
  if expected.get("bytes") is not None and paths.size(dst) != expected["bytes"]:
    return False
  return expected.get("sha256") in (None, paths.read_text(note).strip())

