"""Pre-training batches: shards (or text) -> masked, per-host, prefetched, resumable.

`make_pretraining_iterator(config, tokenizer, split=...)` returns this host's slice of
every global batch, as numpy arrays named as the model's arguments and fine-tuning's
features (`input_ids`, `attention_mask`, `token_type_ids`; the original's input_mask and
segment_ids) plus the original's `masked_lm_positions`, `masked_lm_ids`,
`masked_lm_weights` and `next_sentence_labels` (NSP label 1 = NotNext, as the original).

The stream is a pure function of (seed, global position), which is what makes it exact to
resume and independent of the host layout:
- global position g = step * global_batch + row; epoch, k = divmod(g, N records);
- record = a per-epoch random permutation of k (Grain's `index_shuffle`, O(1) memory,
  random access into ArrayRecord shards);
- host p of P takes rows [p*B/P, (p+1)*B/P) of each global batch: hosts read disjoint
  records and together all of them, and the global batch is the same for any P;
- masks are drawn from a counter-based hash of (seed, g) (masking.py): new masks every
  epoch (dynamic masking), the same masks for the same g however the batch was built.
The iterator state is {"position": g of the next batch, ...} (JSON); `set_state` restarts
the stream there. A pool of daemon threads builds the next `config.data.prefetch` batches;
`close()` stops and joins them, and any left running are joined before the interpreter
shuts down (bert_jax/cleanup.py), so a script using the iterator exits 0 with or without it.

`config.data.{train,eval}_files` is either a shard directory written by
`python -m bert_jax.tools.create_pretraining_data` (or globs of its .array_record files), or
text files in the BERT format, which are paired in memory at start-up (fine for the small
bundled corpus; use shards for anything large).
"""
from __future__ import annotations

import collections
import json
import threading
from typing import Any, Callable, Sequence

from absl import logging
import numpy as np

from bert_jax import cleanup, paths
from bert_jax.data import corpus
from bert_jax.data import shard_cache
from bert_jax.data import shards as prep
from bert_jax.data import instances as instances_lib
from bert_jax.data import masking
from bert_jax.data import permutation

RECORD_BLOCK = 16  # batches whose record indices are computed in one call
FEATURES = ("input_ids", "attention_mask", "token_type_ids", "masked_lm_positions",
            "masked_lm_ids", "masked_lm_weights", "next_sentence_labels")
STATE_VERSION = 1


class DataError(ValueError):
  """Data and config do not fit together; the message names both and the fix."""


# --------------------------------------------------------------------------------------
# Sources: random access to encoded instances.

class ShardSource:
  """ArrayRecord shards, read by global record index; `metadata` from metadata.json.

  One `read` groups the indices by shard and reads each record as a one-record range of
  its shard's reader (a quarter of the CPU of ArrayRecord's read of an index list, whose
  parallel machinery costs ~7 µs per record). Grain's and ArrayRecord's data sources also
  start a Python thread pool on every call. Local files: remote shards are staged by
  shard_cache first.

  A global shuffle reads every shard all the time, so readers stay open; a corpus of more
  shards than the process may open files (Wikipedia in 1,000-document windows: ~6,000)
  first raises the soft open-file limit to the hard one, and beyond that keeps the most
  recently used `max_open` readers, closing the oldest idle one (reopening costs a read
  of the shard's index: fewer, larger shards read faster then).
  """

  def __init__(self, files: Sequence[str], metadata: dict | None, max_open: int | None = None):
    from array_record.python.array_record_module import ArrayRecordReader
    self.paths = list(files)
    self.metadata = metadata
    counts = []
    for f in self.paths:  # counted up front, opened again on first read
      reader = ArrayRecordReader(f)
      counts.append(reader.num_records())
      reader.close()
    self._starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    self.max_open = max_open or _open_file_budget(len(self.paths))
    if self.max_open < len(self.paths):
      logging.warning(
          "%d shards but only %d may be open at once (ulimit -n): readers are reopened as "
          "the shuffle moves between shards, which costs time; raise the limit or write "
          "fewer, larger shards (--documents_per_window).", len(self.paths), self.max_open)
    self._open: collections.OrderedDict = collections.OrderedDict()  # shard -> reader, LRU
    self._in_use: collections.Counter = collections.Counter()  # shard -> reads under way
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return int(self._starts[-1])

  @property
  def open_readers(self) -> int:
    return len(self._open)

  def _acquire(self, shard: int):
    """The shard's reader, opened if need be (closing the least recently used idle ones
    beyond max_open), marked in use until `_release`."""
    with self._lock:
      reader = self._open.get(shard)
      if reader is None:
        from array_record.python.array_record_module import ArrayRecordReader
        reader = ArrayRecordReader(self.paths[shard], "readahead_buffer_size:0",
                                   file_reader_buffer_size=4096)
        self._open[shard] = reader
        self._close_idle(keep=shard)
      else:
        self._open.move_to_end(shard)
      self._in_use[shard] += 1
    return reader

  def _release(self, shard: int) -> None:
    with self._lock:
      self._in_use[shard] -= 1
      if not self._in_use[shard]:
        del self._in_use[shard]
      self._close_idle()  # readers opened while every other one was busy

  def _close_idle(self, keep: int = -1) -> None:
    """Closes least recently used idle readers while more than max_open are open."""
    for old in [k for k in self._open if k not in self._in_use and k != keep]:
      if len(self._open) <= self.max_open:
        break
      self._open.pop(old).close()

  def read(self, indices: Sequence[int]) -> list[bytes]:
    idx = np.asarray(indices, np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
      raise IndexError(f"record index out of range [0, {len(self)}) in {self.paths[:2]}...")
    shard = np.searchsorted(self._starts, idx, side="right") - 1
    out: list[bytes] = [b""] * len(idx)
    for s in np.unique(shard).tolist():
      rows = np.flatnonzero(shard == s)
      reader = self._acquire(s)
      try:
        read = reader.read  # one range per record (see the class docstring)
        records = [read(i, i + 1)[0] for i in (idx[rows] - self._starts[s]).tolist()]
      finally:
        self._release(s)
      for r, record in zip(rows.tolist(), records):
        out[r] = record
    return out


def _open_file_budget(num_shards: int) -> int:
  """How many shard readers may stay open: every shard if the open-file limit allows it
  (the soft limit raised towards the hard one when needed), else the limit less a margin
  for everything else the process opens."""
  try:
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
  except (ImportError, ValueError, OSError):
    return max(num_shards, 1)
  margin = 256
  if num_shards + margin > soft:
    want = num_shards + margin if hard == resource.RLIM_INFINITY else min(hard,
                                                                          num_shards + margin)
    try:
      resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
      soft = want
    except (ValueError, OSError):
      pass
  return max(1, min(num_shards, soft - margin))


class MemorySource:
  """Encoded instances held in memory (text input paired at start-up)."""

  def __init__(self, records: list[bytes], metadata: dict):
    self.records = records
    self.metadata = metadata

  def __len__(self) -> int:
    return len(self.records)

  def read(self, indices: Sequence[int]) -> list[bytes]:
    return [self.records[int(i)] for i in indices]


_MEMORY_CACHE: dict[Any, MemorySource] = {}
_CACHE_LOCK = threading.Lock()


def _text_source(files: list[str], tokenizer, options: instances_lib.PairOptions,
                 documents_per_window: int) -> MemorySource:
  """Pairs text files in memory, once per (files, options, vocabulary) per process."""
  key = (tuple((f, paths.mtime(f)) for f in files), options, documents_per_window,
         getattr(tokenizer, "vocab_file", id(tokenizer)),
         getattr(tokenizer, "do_lower_case", None))
  with _CACHE_LOCK:
    if key in _MEMORY_CACHE:
      return _MEMORY_CACHE[key]
    stats = corpus.CorpusStats()
    records: list[bytes] = []
    counts: dict[str, int] = {}
    for w, first, docs in corpus.iter_windows(files, stats, documents_per_window):
      pairs, c = instances_lib.window_instances(docs, first, w, tokenizer, options)
      records.extend(pairs.records())
      for k, v in c.items():
        counts[k] = counts.get(k, 0) + v
    logging.info("paired %d text file(s) in memory: %d instances, %s", len(files),
                 len(records), counts)
    source = MemorySource(records, {"max_seq_length": options.max_seq_length,
                                    "vocab_size": tokenizer.vocab_size,
                                    "num_instances": len(records)})
    _MEMORY_CACHE[key] = source
    return source


def open_source(files: str, tokenizer, config, seed: int) -> ShardSource | MemorySource:
  """config.data.*_files -> a source (shard dir, shard globs, or text files)."""
  d = config.data
  patterns = [p.strip() for p in files.split(",") if p.strip()] if files else []
  if not patterns:
    raise DataError("no pre-training data given: set config.data.train_files (and "
                    "eval_files, or config.train.eval_steps=0) to text files or a shard "
                    "directory from bert_jax.tools.create_pretraining_data.")
  one_dir = len(patterns) == 1 and paths.is_dir(patterns[0])
  if one_dir:
    shard_dir = patterns[0]
    shards = paths.glob(paths.join(shard_dir, prep.SHARD_GLOB))
    if not shards:
      raise DataError(f"{shard_dir}: no {prep.SHARD_GLOB} shards; write them with "
                      f"python -m bert_jax.tools.create_pretraining_data --output_dir={shard_dir}")
  else:
    try:
      expanded = corpus.expand_input_patterns(patterns)
    except corpus.CorpusError as e:
      raise DataError(str(e)) from None
    shards = [p for p in expanded if p.endswith(".array_record")]
    if shards and len(shards) != len(expanded):
      raise DataError(f"{files!r} mixes .array_record shards and text files: use one kind.")
    if not shards:
      options = instances_lib.PairOptions(
          max_seq_length=d.max_seq_length, short_seq_prob=d.short_seq_prob,
          dupe_factor=d.dupe_factor, random_seed=seed,
          pairing=d.get("pairing", "balanced"))
      return _text_source(expanded, tokenizer, options, d.get("documents_per_window", 1000))
    shard_dir = str(paths.as_path(shards[0]).parent)
  meta_path = paths.join(shard_dir, prep.METADATA_FILE)
  metadata = None
  if paths.exists(meta_path):
    metadata = paths.read_json(meta_path)
    listed = {s["file"] for s in metadata.get("shards", [])}
    missing = sorted(listed - {paths.as_path(s).name for s in shards})
    if missing and one_dir:
      raise DataError(f"{shard_dir}: shard(s) {missing[:3]} listed in {prep.METADATA_FILE} "
                      "are missing; copy them back or re-run create_pretraining_data.")
  else:
    logging.warning("%s: no %s (preparation did not finish?); using the %d complete "
                    "shard(s) found.", shard_dir, prep.METADATA_FILE, len(shards))
  # ArrayRecord reads local files only: shards in a bucket are staged to local disk once.
  try:
    shards = shard_cache.stage(shards, metadata, d.get("shard_cache_dir", ""))
  except shard_cache.StagingError as e:
    raise DataError(str(e)) from None
  return ShardSource(shards, metadata)


def _check_metadata(metadata: dict | None, config, tokenizer, where: str) -> None:
  """Clear errors when shards and config/vocabulary disagree; warnings for masking flags."""
  if not metadata:
    return
  d = config.data
  if metadata.get("max_seq_length") != d.max_seq_length:
    raise DataError(
        f"{where} were written with max_seq_length={metadata.get('max_seq_length')} but "
        f"config.data.max_seq_length={d.max_seq_length}: set --config.data.max_seq_length="
        f"{metadata.get('max_seq_length')} or re-run create_pretraining_data.")
  if metadata.get("vocab_size") not in (None, tokenizer.vocab_size):
    raise DataError(
        f"{where} were tokenized with a {metadata['vocab_size']}-token vocabulary "
        f"({metadata.get('vocab_file')}) but the tokenizer has {tokenizer.vocab_size}: "
        "set config.vocab_file to the vocabulary the shards were made with.")
  for key, ours in (("max_predictions_per_seq", d.max_predictions_per_seq),
                    ("masked_lm_prob", d.masked_lm_prob),
                    ("do_whole_word_mask", d.whole_word_mask)):
    if key in metadata and metadata[key] != ours:
      logging.warning("%s record %s=%s but config.data gives %s; masking uses the config.",
                      where, key, metadata[key], ours)


# --------------------------------------------------------------------------------------
# Ordered prefetching over a pool of daemon threads.

class _Prefetcher:
  """Computes fn(0), fn(1), ... ahead of the consumer on daemon threads, in order."""

  def __init__(self, fn: Callable[[int], Any], num_threads: int, depth: int):
    self._fn = fn
    self._depth = max(1, depth)
    self._cond = threading.Condition()
    self._results: dict[int, tuple[bool, Any]] = {}
    self._next_submit = self._next_consume = 0
    self._stopped = False
    self._threads = [threading.Thread(target=self._work, daemon=True, name=f"bert-data-{i}")
                     for i in range(max(1, num_threads))]
    for t in self._threads:
      t.start()
    # Joined before the interpreter shuts down, also if nobody calls close() (cleanup.py):
    # a daemon thread still reading shards then aborts the process (exit 134).
    cleanup.close_at_exit(self)

  def _work(self) -> None:
    while True:
      with self._cond:
        while not self._stopped and self._next_submit - self._next_consume >= self._depth:
          self._cond.wait()
        if self._stopped:
          return
        i = self._next_submit
        self._next_submit += 1
      try:
        result = (True, self._fn(i))
      except BaseException as e:  # pylint: disable=broad-except  (re-raised in get())
        result = (False, e)
      with self._cond:
        self._results[i] = result
        self._cond.notify_all()

  def get(self) -> Any:
    with self._cond:
      i = self._next_consume
      while i not in self._results:
        self._cond.wait()
      ok, value = self._results.pop(i)
      self._next_consume += 1
      self._cond.notify_all()
    if not ok:
      raise value
    return value

  def stop(self) -> None:
    """Tells the threads to stop after the batch each is building; does not wait."""
    with self._cond:
      self._stopped = True
      self._cond.notify_all()

  def close(self) -> None:
    """Stops the threads and waits for them (each finishes the batch it is building)."""
    self.stop()
    me = threading.current_thread()
    for t in self._threads:
      if t is not me:
        t.join()
    cleanup.forget(self)


# --------------------------------------------------------------------------------------
# The iterator.

class BatchStream:
  """The pure function (seed, global position) -> this host's rows of a global batch."""

  def __init__(self, source, spec: masking.MaskingSpec, *, max_seq_length: int,
               global_batch_size: int, process_index: int = 0, process_count: int = 1,
               seed: int = 0, shuffle: bool = True, dynamic_masking: bool = True):
    if global_batch_size % process_count:
      raise DataError(f"global batch {global_batch_size} is not divisible by "
                      f"{process_count} hosts: use a multiple of {process_count}.")
    if not 0 <= process_index < process_count:
      raise DataError(f"process_index={process_index} not in [0, {process_count}).")
    if len(source) == 0:
      raise DataError("the pre-training source holds no instances (see the preparation "
                      "summary for what was skipped).")
    self.source = source
    self.spec = spec
    self.max_seq_length = max_seq_length
    self.global_batch_size = global_batch_size
    self.local_batch_size = global_batch_size // process_count
    self.process_index = process_index
    self.seed = int(seed)
    self.shuffle = shuffle
    self.dynamic_masking = dynamic_masking
    self.num_records = len(source)
    # Record indices of upcoming batches, computed RECORD_BLOCK batches at a time (the
    # permutation costs mostly per call): position -> this host's record indices.
    self._upcoming: dict[int, np.ndarray] = {}
    self._upcoming_lock = threading.Lock()

  def record_indices(self, positions: np.ndarray) -> np.ndarray:
    """Global stream positions -> record indices (a new permutation every epoch)."""
    epoch, k = np.divmod(np.asarray(positions, np.int64), self.num_records)
    if not self.shuffle or self.num_records == 1:
      return k
    out = np.empty_like(k)
    for e in np.unique(epoch):  # a batch spans at most two epochs
      at = epoch == e
      out[at] = permutation.index_shuffle(k[at], self.num_records - 1,
                                          seed=(self.seed + int(e)) % 2**32)
    return out

  def _rows(self, position: int) -> np.ndarray:
    """Stream positions of this host's rows of the global batch at `position`."""
    return position + self.process_index * self.local_batch_size + np.arange(
        self.local_batch_size, dtype=np.int64)

  def _batch_records(self, position: int) -> np.ndarray:
    with self._upcoming_lock:
      rec = self._upcoming.pop(position, None)
    if rec is None:
      starts = [position + j * self.global_batch_size for j in range(RECORD_BLOCK)]
      block = np.split(self.record_indices(np.concatenate([self._rows(p) for p in starts])),
                       RECORD_BLOCK)
      rec = block[0]
      with self._upcoming_lock:
        if len(self._upcoming) > 4 * RECORD_BLOCK:  # jumps around (resume, eval): forget
          self._upcoming.clear()
        self._upcoming.update(zip(starts[1:], block[1:]))
    return rec

  def batch_at(self, position: int) -> dict[str, np.ndarray]:
    """This host's rows of the global batch that starts at stream `position`."""
    g = self._rows(position)
    rec = self._batch_records(position)
    batch = instances_lib.decode_batch(self.source.read(rec), self.max_seq_length)
    keys = masking.example_keys(self.seed, g if self.dynamic_masking else rec)
    masked = masking.mask_batch(batch["input_ids"], batch["lengths"], keys, self.spec)
    return {
        "input_ids": masked["input_ids"],
        "attention_mask": batch["attention_mask"],
        "token_type_ids": batch["token_type_ids"],
        "masked_lm_positions": masked["masked_lm_positions"],
        "masked_lm_ids": masked["masked_lm_ids"],
        "masked_lm_weights": masked["masked_lm_weights"],
        "next_sentence_labels": batch["next_sentence_labels"],
    }


class PretrainingIterator:
  """A BatchStream walked batch by batch with prefetch; resumable via get/set_state.

  The prefetch threads hold only the stream, not the iterator: an iterator that is
  dropped (an eval iterator after evaluation) is collected and its threads stop.
  """

  def __init__(self, stream: BatchStream, *, prefetch: int = 2, num_threads: int = 1):
    self.stream = stream
    self._prefetch = prefetch
    self._num_threads = num_threads
    self._position = 0  # global position of the next batch handed out
    self._prefetcher: _Prefetcher | None = None

  # The stream's description, for callers and tests.
  source = property(lambda self: self.stream.source)
  spec = property(lambda self: self.stream.spec)
  seed = property(lambda self: self.stream.seed)
  num_records = property(lambda self: self.stream.num_records)
  global_batch_size = property(lambda self: self.stream.global_batch_size)

  def record_indices(self, positions: np.ndarray) -> np.ndarray:
    return self.stream.record_indices(positions)

  def batch_at(self, position: int) -> dict[str, np.ndarray]:
    return self.stream.batch_at(position)

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self._prefetcher is None:
      stream, start, step = self.stream, self._position, self.global_batch_size
      self._prefetcher = _Prefetcher(lambda i: stream.batch_at(start + i * step),
                                     self._num_threads, self._prefetch + self._num_threads - 1)
    batch = self._prefetcher.get()
    self._position += self.global_batch_size
    return batch

  def get_state(self) -> dict[str, Any]:
    """JSON-serialisable position in the stream (what the checkpoint stores)."""
    return {"version": STATE_VERSION, "position": int(self._position),
            "step": int(self._position // self.global_batch_size),
            "global_batch_size": self.global_batch_size, "seed": self.seed,
            "num_records": self.num_records}

  def set_state(self, state: dict[str, Any]) -> None:
    """Restarts the stream at a state from `get_state` (any host count, same data)."""
    if isinstance(state, (str, bytes)):
      state = json.loads(state)
    if int(state.get("num_records", self.num_records)) != self.num_records or \
        int(state.get("seed", self.seed)) != self.seed:
      raise DataError(
          f"the data iterator state is for {state.get('num_records')} records with seed "
          f"{state.get('seed')}, but this pipeline has {self.num_records} records and seed "
          f"{self.seed}: resume with the same config.data.train_files and config.seed.")
    position = int(state["position"])
    if position % self.global_batch_size:
      raise DataError(f"the saved data position {position} is not a multiple of the "
                      f"global batch {self.global_batch_size}: resume with the batch size "
                      f"{state.get('global_batch_size')}.")
    self.close()
    self._position = position

  def close(self) -> None:
    """Stops the prefetch threads and waits for them (at most one batch each).

    Optional: the threads of an iterator that is dropped stop after their current batch,
    and any still running when the interpreter exits are joined first (cleanup.py).
    """
    if getattr(self, "_prefetcher", None) is not None:
      self._prefetcher.close()
      self._prefetcher = None

  def __del__(self):
    # Signal only: the collector may run this on a prefetch thread, which cannot join the
    # pool it belongs to (its peers may wait for a lock that thread holds).
    if getattr(self, "_prefetcher", None) is not None:
      self._prefetcher.stop()
      self._prefetcher = None


def make_pretraining_iterator(config, tokenizer, *, split: str = "train",
                              process_index: int | None = None,
                              process_count: int | None = None,
                              seed: int | None = None) -> PretrainingIterator:
  """This host's slice of the masked pre-training batches of `split` ('train' | 'eval').

  Per-host batch = config.train.batch_size // process_count; the arrays are numpy with the
  original feature names (see FEATURES). process_index/count default to jax's.
  """
  if split not in ("train", "eval"):
    raise DataError(f"split={split!r}: use 'train' or 'eval'.")
  if process_index is None or process_count is None:
    import jax
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  seed = config.seed if seed is None else seed
  d = config.data
  files = d.train_files if split == "train" else d.eval_files
  source = open_source(files, tokenizer, config, seed)
  _check_metadata(source.metadata, config, tokenizer, f"config.data.{split}_files={files!r}")
  spec = masking.MaskingSpec.from_tokenizer(
      tokenizer, max_predictions_per_seq=d.max_predictions_per_seq,
      masked_lm_prob=d.masked_lm_prob, whole_word_mask=d.whole_word_mask)
  stream = BatchStream(
      source, spec, max_seq_length=d.max_seq_length, global_batch_size=config.train.batch_size,
      process_index=process_index, process_count=process_count, seed=seed,
      shuffle=True, dynamic_masking=d.dynamic_masking if split == "train" else False)
  return PretrainingIterator(stream, prefetch=d.prefetch, num_threads=max(1, d.num_workers))
