"""Text corpus -> ArrayRecord shards of unmasked sentence pairs, on every CPU core.

python -m bert_jax.tools.create_pretraining_data \
    --input_file='corpus/*.txt,more/*.gz' --vocab_file=vocab.txt --output_dir=shards/ \
    --max_seq_length=128 --dupe_factor=10

The flags are the original's (`--output_dir` instead of `--output_file`). Pairs are built
exactly as Google's script (see instances.py); masking is not stored but done in the input
pipeline, fresh each epoch (`--max_predictions_per_seq`, `--masked_lm_prob` and
`--do_whole_word_mask` are recorded in metadata.json, the pipeline warns if the config
disagrees).

How it scales:
- Streaming: documents are read in order and cut into windows of `--documents_per_window`
  documents; a window is the pool the random "NotNext" document is drawn from (the original
  drew from its whole input file, which had to fit in memory). At most 2 windows per worker
  are in flight, so memory is bounded whatever the corpus size.
- Every core: a process pool tokenizes windows and builds pairs; each window is written to
  its own shard `pairs-WWWWWW.array_record` through a temporary name and an atomic rename,
  so a crash or kill never loses or half-writes completed shards. Shard contents depend only
  on (--random_seed, window index): the output is the same for any number of workers.
- `metadata.json` (written last) records the options, vocabulary, counts and shards.
"""
from __future__ import annotations

import collections
import dataclasses
import multiprocessing
import os
import sys
import tempfile
import time
from typing import Any, Sequence

from bert_jax import metrics, paths
from bert_jax.data import corpus
from bert_jax.data import instances as instances_lib

SHARD_PATTERN = "pairs-{:06d}.array_record"
SHARD_GLOB = "pairs-*.array_record"
METADATA_FILE = "metadata.json"
FORMAT = "bert_jax.pretraining_pairs.v1"
# group_size:1 = one record per chunk: what Grain's random access wants (it warns otherwise).
# uncompressed: a chunk of one ~270-byte record barely compresses (WikiText-2 x10: 17.0 MiB
# raw, 15.4 with snappy or with the default compressor at 4x snappy's write CPU), and every
# training read would pay the decompression (a quarter of a random read's CPU: 2.6 vs
# 1.9 µs per record). Shards written with a compressor read the same.
WRITER_OPTIONS = "group_size:1,uncompressed"


class PreparationError(ValueError):
  """Bad flags or output directory, reported before any work starts."""


@dataclasses.dataclass(frozen=True)
class Options:
  """Everything a worker needs (picklable)."""
  vocab_file: str
  do_lower_case: bool
  output_dir: str
  pairs: instances_lib.PairOptions


def existing_shards(output_dir: str) -> list[str]:
  """Finished shards and metadata already in `output_dir` (temporary files excluded)."""
  if not paths.is_dir(output_dir):
    return []
  return sorted(n for n in paths.listdir(output_dir)
                if n == METADATA_FILE or (n.startswith("pairs-") and n.endswith(".array_record")))


def _check_args(input_files: Sequence[str], vocab_file: str, do_lower_case: bool,
                output_dir: str, pairs: instances_lib.PairOptions,
                max_predictions_per_seq: int, masked_lm_prob: float, overwrite: bool,
                own_task_file: str | None = None):
  """Every check that can fail, before any work starts; returns the tokenizer."""
  from bert_jax.tokenization import load_tokenizer
  if pairs.max_seq_length < 5:
    raise PreparationError(f"--max_seq_length={pairs.max_seq_length}: need >= 5 "
                           "([CLS] A [SEP] B [SEP] with one token each).")
  if not 0.0 <= pairs.short_seq_prob <= 1.0:
    raise PreparationError(f"--short_seq_prob={pairs.short_seq_prob}: use a value in [0, 1].")
  if pairs.pairing not in instances_lib.PAIRINGS:
    raise PreparationError(f"--pairing={pairs.pairing!r}: use one of {instances_lib.PAIRINGS}.")
  if pairs.dupe_factor < 1:
    raise PreparationError(f"--dupe_factor={pairs.dupe_factor}: use 1 or more.")
  if not 0.0 < masked_lm_prob < 1.0 or max_predictions_per_seq < 1:
    raise PreparationError(f"--masked_lm_prob={masked_lm_prob} / --max_predictions_per_seq="
                           f"{max_predictions_per_seq}: use a probability in (0, 1) and >= 1.")
  for f in input_files:
    if not paths.is_file(f):
      raise PreparationError(f"input file {f!r} is not readable.")
  tokenizer = load_tokenizer(vocab_file, do_lower_case)  # TokenizerError if missing
  if own_task_file is not None:  # one task of a split job: only its own summary counts
    done = paths.exists(paths.join(output_dir, own_task_file))
    if done and not overwrite:
      raise PreparationError(f"--output_dir={output_dir!r} already holds {own_task_file}: "
                             "this task finished before; pass --overwrite to redo it.")
    return tokenizer
  found = existing_shards(output_dir)
  if found and not overwrite:
    raise PreparationError(
        f"--output_dir={output_dir!r} already holds {len(found)} shard/metadata file(s) "
        f"({', '.join(found[:3])}...): pass --overwrite to replace them, or choose an empty "
        "directory.")
  return tokenizer


def _clear_output(output_dir: str) -> None:
  for name in paths.listdir(output_dir):
    if name == METADATA_FILE or name.startswith(("pairs-", "metadata-task-")):  # ours only
      paths.remove(paths.join(output_dir, name))


# --------------------------------------------------------------------------------------
# Worker side.

_WORKER: dict[str, Any] = {}


def _init_worker(options: Options, tokenizer=None) -> None:
  """A worker's state: the options and a tokenizer (the driver's own when in-process)."""
  from bert_jax.tokenization import load_tokenizer
  _WORKER["options"] = options
  _WORKER["tokenizer"] = tokenizer or load_tokenizer(options.vocab_file, options.do_lower_case)


def write_shard(path: str, records: Sequence[bytes]) -> dict[str, Any]:
  """Writes an ArrayRecord file atomically; returns its {"bytes", "sha256"} for metadata.

  ArrayRecord writes local files only: the shard is written to a local temporary file,
  then moved into place (a rename locally, one object upload to gs://, which GCS shows
  only once complete), so a crash or kill never leaves a half-written shard.
  """
  from array_record.python.array_record_module import ArrayRecordWriter
  local_dir = (tempfile.mkdtemp(prefix="bert_jax_shard_") if paths.is_remote(path)
               else paths.local_dir(paths.as_path(path).parent))
  tmp = paths.join(local_dir, f"{paths.as_path(path).name}.tmp-{os.getpid()}")
  try:
    writer = ArrayRecordWriter(tmp, WRITER_OPTIONS)
    for r in records:
      writer.write(r)
    writer.close()
    info = {"bytes": paths.size(tmp), "sha256": paths.sha256(tmp)}
    paths.move(tmp, path)
    return info
  finally:
    paths.remove(tmp)
    if paths.is_remote(path):
      paths.rmtree(local_dir)


def _process_window(window_index: int, first_doc_id: int,
                    documents: list[list[str]]) -> dict[str, Any]:
  """Tokenizes and pairs one window, writes its shard; returns its counts."""
  options: Options = _WORKER["options"]
  pairs, counts = instances_lib.window_instances(
      documents, first_doc_id, window_index, _WORKER["tokenizer"], options.pairs)
  name = SHARD_PATTERN.format(window_index)
  info = {}
  if len(pairs):
    info = write_shard(paths.join(options.output_dir, name), pairs.records())
  counts.update(window=window_index, shard=name if len(pairs) else None,
                instances=len(pairs), random_next=int(pairs.is_random_next.sum()),
                short=int((pairs.num_tokens < options.pairs.max_seq_length).sum()), **info)
  return counts


# --------------------------------------------------------------------------------------
# Driver.


class _Progress:
  """A progress line (documents, tokens, rate, ETA from the input bytes read)."""

  def __init__(self, total_bytes: int, enabled: bool, every: float = 2.0):
    self.total_bytes = max(1, total_bytes)
    self.enabled = enabled
    self.every = every
    self.start = self.last = time.time()

  def update(self, stats: corpus.CorpusStats, totals: dict[str, int], force=False) -> None:
    now = time.time()
    if not self.enabled or (not force and now - self.last < self.every):
      return
    self.last = now
    elapsed = now - self.start
    frac = min(1.0, stats.bytes_read / self.total_bytes)
    eta = elapsed * (1 - frac) / frac if frac > 0 else float("nan")
    print(f"[create_pretraining_data] {stats.documents:,} documents read, "
          f"{totals['tokens']:,} tokens, {totals['instances']:,} instances, "
          f"{totals['tokens'] / max(elapsed, 1e-9):,.0f} tokens/s, input {100 * frac:.0f}%, "
          f"ETA {metrics.format_duration(eta) if frac > 0 else '?'}", file=sys.stderr, flush=True)


def run(input_file: str | Sequence[str], vocab_file: str, output_dir: str, *,
        do_lower_case: bool = True, max_seq_length: int = 128, short_seq_prob: float = 0.1,
        dupe_factor: int = 10, random_seed: int = 12345, pairing: str = "balanced",
        max_predictions_per_seq: int = 20,
        masked_lm_prob: float = 0.15, do_whole_word_mask: bool = False,
        input_format: str = "text", documents_per_window: int = 1000,
        num_workers: int = 0, overwrite: bool = False, progress: bool = True,
        num_tasks: int = 1, task_index: int = 0) -> dict:
  """Prepares shards (the CLI's body, callable); returns the summary written to metadata.

  With num_tasks=N > 1 this is task `task_index` of N independent jobs (any scheduler,
  any machines) writing into one output_dir: each reads the whole corpus text but
  tokenizes and pairs only windows w with w % N == task_index, and writes its summary to
  metadata-task-<i>-of-<N>.json; `merge(output_dir, N)` then writes metadata.json. A
  shard depends only on (random_seed, window index), so the N tasks together write
  exactly the shards of one job.
  """
  start = time.time()
  if not (num_tasks >= 1 and 0 <= task_index < num_tasks):
    raise PreparationError(f"--task_index={task_index} --num_tasks={num_tasks}: use "
                           "num_tasks >= 1 and 0 <= task_index < num_tasks.")
  files = corpus.expand_input_patterns(input_file)
  pairs = instances_lib.PairOptions(max_seq_length=max_seq_length,
                                    short_seq_prob=short_seq_prob, dupe_factor=dupe_factor,
                                    random_seed=random_seed, pairing=pairing)
  tokenizer = _check_args(files, vocab_file, do_lower_case, output_dir, pairs,
                          max_predictions_per_seq, masked_lm_prob,
                          overwrite, task_file(task_index, num_tasks) if num_tasks > 1 else None)
  if documents_per_window < 2:
    raise PreparationError(f"--documents_per_window={documents_per_window}: use >= 2.")
  paths.makedirs(output_dir)
  if num_tasks == 1:  # tasks of a split job share the directory: never clear it
    _clear_output(output_dir)
  options = Options(vocab_file=paths.abspath(vocab_file), do_lower_case=do_lower_case,
                    output_dir=output_dir, pairs=pairs)
  num_workers = num_workers or os.cpu_count() or 1

  stats = corpus.CorpusStats()
  totals: dict[str, int] = collections.Counter(documents=0, tokens=0, instances=0,
                                               isolated_documents=0)
  shards: list[dict[str, Any]] = []
  prog = _Progress(sum(paths.size(f) for f in files), progress)

  def collect(counts: dict[str, Any]) -> None:
    if counts["shard"]:
      shards.append({"file": counts["shard"], "instances": counts["instances"],
                     "bytes": counts["bytes"], "sha256": counts["sha256"]})
    for k, v in counts.items():
      if k not in ("window", "shard", "bytes", "sha256"):
        totals[k] += v
    prog.update(stats, totals)

  windows = ((w, first, docs) for w, first, docs
             in corpus.iter_windows(files, stats, documents_per_window, input_format)
             if w % num_tasks == task_index)
  if num_workers == 1:
    _init_worker(options, tokenizer)
    for w, first, docs in windows:
      collect(_process_window(w, first, docs))
  else:
    # spawn: workers start clean (no inherited threads of the tokenizer or of jax).
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(num_workers, initializer=_init_worker, initargs=(options,)) as pool:
      pending: collections.deque = collections.deque()
      for w, first, docs in windows:
        pending.append(pool.apply_async(_process_window, (w, first, docs)))
        while len(pending) >= 2 * num_workers or (pending and pending[0].ready()):
          collect(pending.popleft().get())
      while pending:
        collect(pending.popleft().get())
  prog.update(stats, totals, force=True)

  summary = {
      "format": FORMAT,
      "record": "instances.encode_instance: header <BBHqiiqii (version, flags: 1=NotNext "
                "2=uint16 ids, num_a, a_doc, a_start, a_end, b_doc, b_start, b_end) + ids",
      "max_seq_length": max_seq_length, "short_seq_prob": short_seq_prob,
      "dupe_factor": dupe_factor, "random_seed": random_seed, "pairing": pairing,
      "max_predictions_per_seq": max_predictions_per_seq, "masked_lm_prob": masked_lm_prob,
      "do_whole_word_mask": do_whole_word_mask, "do_lower_case": do_lower_case,
      "documents_per_window": documents_per_window, "input_format": input_format,
      "vocab_file": paths.abspath(vocab_file), "vocab_sha256": paths.sha256(vocab_file),
      "vocab_size": tokenizer.vocab_size,
      "input_files": [paths.abspath(f) for f in files],
  }
  _add_counts(summary, stats.as_dict(), dict(totals), shards, time.time() - start)
  if num_tasks > 1:
    summary["task"] = {"index": task_index, "count": num_tasks, "corpus": stats.as_dict(),
                       "totals": dict(totals)}
    paths.write_json(paths.join(output_dir, task_file(task_index, num_tasks)), summary,
                     indent=1)
    return summary
  paths.write_json(paths.join(output_dir, METADATA_FILE), summary, indent=1)
  return summary


def _add_counts(summary: dict, corpus_stats: dict[str, int], totals: dict[str, int],
                shards: list[dict], seconds: float) -> None:
  summary["num_instances"] = sum(s["instances"] for s in shards)
  summary["shards"] = sorted(shards, key=lambda s: s["file"])
  summary["stats"] = {**corpus_stats, **totals}
  # Skipped before tokenization (corpus) + after (sentences that tokenize to nothing).
  summary["stats"]["one_sentence_documents"] = (
      corpus_stats["one_sentence_documents"] + totals.get("one_sentence_documents", 0))
  summary["stats"]["documents_read"] = corpus_stats["documents"]
  summary["seconds"] = round(seconds, 2)
  summary["tokens_per_second"] = round(totals.get("tokens", 0) / max(seconds, 1e-9), 1)


def task_file(task_index: int, num_tasks: int) -> str:
  return f"metadata-task-{task_index:05d}-of-{num_tasks:05d}.json"


# What may differ between the tasks of one split job (everything else must be equal).
_PER_TASK = ("task", "shards", "num_instances", "stats", "seconds", "tokens_per_second")


def merge(output_dir: str, num_tasks: int, overwrite: bool = False) -> dict:
  """metadata-task-*-of-N.json of a split job -> metadata.json (as one job writes it)."""
  if paths.exists(paths.join(output_dir, METADATA_FILE)) and not overwrite:
    raise PreparationError(f"{output_dir} already has {METADATA_FILE}: pass --overwrite to "
                           "merge again.")
  names = [task_file(i, num_tasks) for i in range(num_tasks)]
  missing = [n for n in names if not paths.exists(paths.join(output_dir, n))]
  if missing:
    raise PreparationError(
        f"{output_dir}: {len(missing)} of {num_tasks} task(s) have not finished "
        f"({', '.join(missing[:3])}{'...' if len(missing) > 3 else ''}); run them "
        "(--task_index=i --num_tasks=N), then merge.")
  parts = [paths.read_json(paths.join(output_dir, n)) for n in names]
  base = {k: v for k, v in parts[0].items() if k not in _PER_TASK}
  for n, part in zip(names, parts):
    diff = sorted(k for k in set(base) | set(part)
                  if k not in _PER_TASK and part.get(k) != base.get(k))
    if diff:
      raise PreparationError(f"{n} was written with other options than {names[0]} "
                             f"({', '.join(diff)}): re-run that task with the same flags.")
    for s in part["shards"]:
      if not paths.exists(paths.join(output_dir, s["file"])):
        raise PreparationError(f"{output_dir}/{s['file']} (listed in {n}) is missing: "
                               "re-run that task.")
  totals: collections.Counter = collections.Counter()
  for part in parts:
    totals.update(part["task"]["totals"])
  _add_counts(base, parts[0]["task"]["corpus"], dict(totals),
              [s for part in parts for s in part["shards"]],
              max(part["seconds"] for part in parts))
  paths.write_json(paths.join(output_dir, METADATA_FILE), base, indent=1)
  return base


def format_summary(summary: dict) -> str:
  """A few lines for the terminal: what was written and what was skipped."""
  s = summary["stats"]
  n = max(1, summary["num_instances"])
  return "\n".join([
      f"wrote {summary['num_instances']:,} instances in {len(summary['shards'])} shards "
      f"({s['tokens']:,} tokens, {s['documents']:,} documents, {s['sentences']:,} sentences) "
      f"in {summary['seconds']:.1f} s = {summary['tokens_per_second']:,.0f} tokens/s",
      f"NotNext {100 * s['random_next'] / n:.1f}%, shorter than max_seq_length "
      f"{100 * s['short'] / n:.1f}%",
      f"skipped: {s['empty_files']} empty file(s), {s['unreadable_files']} unreadable "
      f"file(s) (rest of file), {s['one_sentence_documents']} one-sentence document(s), "
      f"{s['isolated_documents']} document(s) alone in a window; "
      f"{s['invalid_utf8_lines']} line(s) with invalid UTF-8 (bad bytes dropped); "
      f"{s['long_sentences']} sentence(s) longer than max_seq_length-3 tokens (kept, "
      "truncated to fit as in the original)",
  ])
