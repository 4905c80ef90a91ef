"""create_pretraining_data: shards, worker-count independence, bad input, crash safety."""
import os
import pathlib
import subprocess
import sys

import pytest

from bert_jax.data import shards as prep
from bert_jax.data import input_pipeline as ip
from bert_jax.data import instances as I
from bert_jax.tokenization import TokenizerError, load_tokenizer
from configs import tiny

RESOURCES = pathlib.Path(prep.__file__).parents[1] / "resources"
VOCAB = str(RESOURCES / "vocab.txt")
TRAIN = str(RESOURCES / "corpus" / "train-*.txt")
REPO = pathlib.Path(__file__).resolve().parents[1]


def _shards(d):
  return sorted(p for p in os.listdir(d) if p.endswith(".array_record"))


def _read_all(d):
  src = ip.ShardSource([os.path.join(d, s) for s in _shards(d)], None)
  return src.read(range(len(src)))


def test_shards_are_the_same_for_any_number_of_workers(tmp_path):
  kw = dict(max_seq_length=64, dupe_factor=1, documents_per_window=4, progress=False)
  books = str(RESOURCES / "corpus" / "train-s*.txt")  # Sherlock Holmes: 11 documents
  one = prep.run(books, VOCAB, str(tmp_path / "one"), num_workers=1, **kw)
  two = prep.run(books, VOCAB, str(tmp_path / "two"), num_workers=2, **kw)
  assert _shards(tmp_path / "one") == _shards(tmp_path / "two") == [
      f"pairs-{i:06d}.array_record" for i in range(3)]  # windows of 4, 4, 3 documents
  for s in _shards(tmp_path / "one"):
    assert (tmp_path / "one" / s).read_bytes() == (tmp_path / "two" / s).read_bytes()
  assert one["num_instances"] == two["num_instances"] == len(_read_all(tmp_path / "one"))
  assert one["stats"]["documents"] == 11 and one["vocab_size"] == 8000
  assert sum(s["instances"] for s in one["shards"]) == one["num_instances"]
  assert not [p for p in os.listdir(tmp_path / "one") if ".tmp" in p]


def test_bad_input_is_counted_not_fatal(tmp_path):
  src = tmp_path / "in"
  src.mkdir()
  real = (RESOURCES / "corpus" / "train-bert-sample-text.txt").read_bytes()
  (src / "a_empty.txt").write_bytes(b"")
  (src / "b_one_sentence.txt").write_text("This document has a single sentence.\n")
  long_line = ("word " * 400).strip().encode()  # ~400 tokens > max_seq_length
  (src / "c_bad.txt").write_bytes(real.replace(b"\n\n", b"\n\xff\xfe bad bytes\n\n", 1)
                                  + b"\n\n" + long_line + b"\nA short follower.\n")
  summary = prep.run(str(src / "*.txt"), VOCAB, str(tmp_path / "out"), max_seq_length=64,
                     dupe_factor=3, num_workers=1, progress=False)
  st = summary["stats"]
  tok = load_tokenizer(VOCAB)
  long_in_sample = sum(len(tok.encode(l)) > 61 for l in real.decode().splitlines())
  assert (st["empty_files"], st["one_sentence_documents"], st["invalid_utf8_lines"],
          st["long_sentences"]) == (1, 1, 1, long_in_sample + 1)
  assert st["documents"] == 4 and summary["num_instances"] > 0
  insts = [I.decode_instance(r) for r in _read_all(tmp_path / "out")]
  assert all(len(i.tokens) <= 64 for i in insts)
  text = prep.format_summary(summary)
  assert "1 empty file(s)" in text and "1 one-sentence document(s)" in text
  assert "1 line(s) with invalid UTF-8" in text
  assert f"{long_in_sample + 1} sentence(s) longer" in text


def test_errors_before_any_work(tmp_path):
  out = tmp_path / "out"
  with pytest.raises(TokenizerError, match="not found"):
    prep.run(TRAIN, str(tmp_path / "missing-vocab.txt"), str(out), progress=False)
  with pytest.raises(ValueError, match="matches no file"):
    prep.run(str(tmp_path / "nope*.txt"), VOCAB, str(out), progress=False)
  with pytest.raises(prep.PreparationError, match="max_seq_length=4"):
    prep.run(TRAIN, VOCAB, str(out), max_seq_length=4, progress=False)
  assert not out.exists()  # nothing was created


def test_existing_shards_refused_unless_overwrite(tmp_path):
  out = tmp_path / "out"
  kw = dict(max_seq_length=32, dupe_factor=1, num_workers=1, progress=False)
  sample = str(RESOURCES / "corpus" / "train-bert-sample-text.txt")
  prep.run(sample, VOCAB, str(out), **kw)
  before = {s: (out / s).read_bytes() for s in _shards(out)}
  with pytest.raises(prep.PreparationError, match="--overwrite"):
    prep.run(sample, VOCAB, str(out), **kw)
  assert {s: (out / s).read_bytes() for s in _shards(out)} == before  # untouched
  (out / "notes.txt").write_text("not ours")
  prep.run(sample, VOCAB, str(out), random_seed=1, overwrite=True, **kw)
  assert (out / "notes.txt").exists() and _shards(out) == sorted(before)


def test_a_crash_keeps_the_shards_already_written(tmp_path, monkeypatch):
  real = I.window_instances

  def failing(docs, first, window, tokenizer, options):
    if window == 2:
      raise RuntimeError("disk full")
    return real(docs, first, window, tokenizer, options)

  monkeypatch.setattr(I, "window_instances", failing)
  out = tmp_path / "out"
  with pytest.raises(RuntimeError, match="disk full"):
    prep.run(TRAIN, VOCAB, str(out), max_seq_length=64, dupe_factor=1,
             documents_per_window=20, num_workers=1, progress=False)
  assert sorted(os.listdir(out)) == ["pairs-000000.array_record", "pairs-000001.array_record"]
  # The complete shards are usable as they are (no metadata.json: a warning, not an error).
  c = tiny.get_config()
  c.data.train_files = str(out)
  it = ip.make_pretraining_iterator(c, load_tokenizer(VOCAB), process_index=0,
                                    process_count=1)
  assert it.num_records == len(_read_all(out)) > 0
  assert next(it)["input_ids"].shape == (32, 64)


def test_command_line(tmp_path):
  out = tmp_path / "out"
  cmd = [sys.executable, "-m", "bert_jax.tools.create_pretraining_data",
         f"--input_file={RESOURCES / 'corpus' / 'train-bert-sample-text.txt'},"
         f"{RESOURCES / 'corpus' / 'train-s*.txt'}",
         f"--vocab_file={VOCAB}", f"--output_dir={out}", "--max_seq_length=128",
         "--dupe_factor=1", "--num_workers=1", "--do_whole_word_mask"]
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path,
                        timeout=300)
  assert done.returncode == 0, done.stderr
  assert "wrote" in done.stdout and "skipped:" in done.stdout
  assert "tokens/s" in done.stderr and "ETA" in done.stderr  # the progress line
  again = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=300)
  assert again.returncode != 0 and "--overwrite" in again.stderr


def test_a_job_split_into_tasks_writes_the_shards_and_metadata_of_one_job(tmp_path):
  kw = dict(max_seq_length=64, dupe_factor=1, documents_per_window=2, progress=False,
            num_workers=1)
  books = str(RESOURCES / "corpus" / "train-s*.txt")  # 11 documents -> 6 windows
  one = prep.run(books, VOCAB, str(tmp_path / "one"), **kw)
  split = tmp_path / "split"
  for i in (2, 0):  # any order, any machine
    part = prep.run(books, VOCAB, str(split), num_tasks=3, task_index=i, **kw)
    assert [s["file"] for s in part["shards"]] == [
        s["file"] for s in one["shards"] if int(s["file"][6:12]) % 3 == i]
  with pytest.raises(prep.PreparationError, match=r"1 of 3 task\(s\) have not finished.*00001"):
    prep.merge(str(split), 3)
  # Task 1 run with other flags (elsewhere, its summary copied in): the merge refuses.
  prep.run(books, VOCAB, str(tmp_path / "odd"), num_tasks=3, task_index=1,
           **{**kw, "max_seq_length": 32})
  (tmp_path / "odd" / prep.task_file(1, 3)).rename(split / prep.task_file(1, 3))
  with pytest.raises(prep.PreparationError, match="other options.*max_seq_length"):
    prep.merge(str(split), 3)
  prep.run(books, VOCAB, str(split), num_tasks=3, task_index=1, overwrite=True, **kw)
  merged = prep.merge(str(split), 3, overwrite=True)
  assert _shards(split) == _shards(tmp_path / "one")
  for s in _shards(split):
    assert (split / s).read_bytes() == (tmp_path / "one" / s).read_bytes()
  drop = ("seconds", "tokens_per_second")
  assert {k: v for k, v in merged.items() if k not in drop} == \
      {k: v for k, v in one.items() if k not in drop}
  assert (split / prep.METADATA_FILE).exists()


def test_split_task_cli_and_merge(tmp_path):
  out = tmp_path / "out"
  base = [sys.executable, "-m", "bert_jax.tools.create_pretraining_data",
          f"--output_dir={out}", "--num_tasks=2"]
  data = [f"--input_file={RESOURCES / 'corpus' / 'train-s*.txt'}", f"--vocab_file={VOCAB}",
          "--max_seq_length=64", "--dupe_factor=1", "--documents_per_window=4",
          "--num_workers=1"]
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  for i in range(2):
    r = subprocess.run(base + data + [f"--task_index={i}"], capture_output=True, text=True,
                       env=env, cwd=REPO)
    assert r.returncode == 0 and "--merge" in r.stdout, r.stderr[-2000:]
  r = subprocess.run(base + ["--merge"], capture_output=True, text=True, env=env, cwd=REPO)
  assert r.returncode == 0 and "in 3 shards" in r.stdout, r.stderr[-2000:]


def test_preparation_does_not_import_jax(tmp_path):
  """Data preparation runs on CPU-only machines by the hundred: JAX's import (a second of
  start-up per process and worker) is not paid where nothing uses it."""
  out = tmp_path / "shards"
  code = ("import sys\n"
          "import runpy\n"
          f"sys.argv = ['x', '--input_file={TRAIN}', '--vocab_file={VOCAB}', "
          f"'--output_dir={out}', '--dupe_factor=1', '--num_workers=1']\n"
          "try:\n  runpy.run_module('bert_jax.tools.create_pretraining_data', "
          "run_name='__main__')\n"
          "except SystemExit as e:\n  assert not e.code, e.code\n"
          "assert 'jax' not in sys.modules, 'jax was imported'\n")
  r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-2000:]
  assert _shards(out) and (out / prep.METADATA_FILE).exists()
