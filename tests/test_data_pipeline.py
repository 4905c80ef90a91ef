"""Input pipeline: determinism, exact resume, per-host slices, dynamic masks, errors."""
import json
import pathlib

import numpy as np
import pytest

from bert_jax.data import shards as prep
from bert_jax.data import input_pipeline as ip
from bert_jax.data import make_pretraining_iterator
from bert_jax.tokenization import load_tokenizer
from configs import tiny

RESOURCES = pathlib.Path(ip.__file__).parents[1] / "resources"
TRAIN = str(RESOURCES / "corpus" / "train-*.txt")


@pytest.fixture(scope="module")
def tokenizer():
  return load_tokenizer(str(RESOURCES / "vocab.txt"))


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("shards")
  prep.run(TRAIN, str(RESOURCES / "vocab.txt"), str(out), max_seq_length=64, dupe_factor=1,
           random_seed=0, documents_per_window=20, num_workers=1, progress=False)
  return str(out)


def _config(files, batch_size=16, **data):
  c = tiny.get_config()
  c.data.train_files = files
  c.train.batch_size = batch_size
  for k, v in data.items():
    c.data[k] = v
  return c


def _take(it, n):
  return [next(it) for _ in range(n)]


def _equal(a, b):
  return all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in ip.FEATURES)


def test_features_shapes_and_dtypes(shard_dir, tokenizer):
  it = make_pretraining_iterator(_config(shard_dir), tokenizer, process_index=0,
                                 process_count=1)
  b = next(it)
  assert tuple(b) == ip.FEATURES
  shapes = {k: (v.shape, v.dtype.name) for k, v in b.items()}
  assert shapes == {
      "input_ids": ((16, 64), "int32"), "attention_mask": ((16, 64), "int32"),
      "token_type_ids": ((16, 64), "int32"), "masked_lm_positions": ((16, 10), "int32"),
      "masked_lm_ids": ((16, 10), "int32"), "masked_lm_weights": ((16, 10), "float32"),
      "next_sentence_labels": ((16,), "int32")}
  assert set(np.unique(b["next_sentence_labels"])) <= {0, 1}
  assert (b["input_ids"][:, 0] == tokenizer.cls_id).all()
  assert ((b["attention_mask"] == 0) | (b["input_ids"] != tokenizer.pad_id)).all()
  # masked_lm_ids are the original tokens: [MASK] sits where 80% of them were
  pos, w = b["masked_lm_positions"], b["masked_lm_weights"] > 0
  assert (np.take_along_axis(b["input_ids"], pos, 1)[w] == tokenizer.mask_id).mean() > 0.6


def test_same_seed_same_batches_other_seed_other_batches(shard_dir, tokenizer):
  c = _config(shard_dir)
  a = _take(make_pretraining_iterator(c, tokenizer, process_index=0, process_count=1), 5)
  b = _take(make_pretraining_iterator(c, tokenizer, process_index=0, process_count=1), 5)
  other = _take(make_pretraining_iterator(c, tokenizer, process_index=0, process_count=1,
                                          seed=1), 5)
  assert _equal(a, b) and not _equal(a, other)


def test_restored_state_continues_the_uninterrupted_stream(shard_dir, tokenizer):
  c = _config(shard_dir, num_workers=2, prefetch=3)
  straight = _take(make_pretraining_iterator(c, tokenizer, process_index=0,
                                             process_count=1), 12)
  first = make_pretraining_iterator(c, tokenizer, process_index=0, process_count=1)
  _take(first, 5)
  state = json.loads(json.dumps(first.get_state()))  # what a checkpoint stores
  assert state["step"] == 5 and state["position"] == 80
  first.close()
  resumed = make_pretraining_iterator(c, tokenizer, process_index=0, process_count=1)
  resumed.set_state(state)
  assert _equal(_take(resumed, 7), straight[5:12])
  # Resume on 4 hosts: their slices put together are the same global batches.
  hosts = []
  for p in range(4):
    it = make_pretraining_iterator(c, tokenizer, process_index=p, process_count=4)
    it.set_state(state)
    hosts.append(_take(it, 3))
  for s in range(3):
    for k in ip.FEATURES:
      assert np.array_equal(np.concatenate([h[s][k] for h in hosts]), straight[5 + s][k])


def test_hosts_read_disjoint_records_that_cover_an_epoch(shard_dir, tokenizer):
  c = _config(shard_dir, batch_size=32)
  its = [make_pretraining_iterator(c, tokenizer, process_index=p, process_count=4)
         for p in range(4)]
  n = its[0].num_records
  read = {}  # global position -> record, as each host computes its own rows
  for s in range(n // 32 + 1):  # just over one epoch
    host_sets = []
    for p, it in enumerate(its):
      g = s * 32 + p * 8 + np.arange(8)
      recs = it.record_indices(g)
      read.update(zip(g.tolist(), recs.tolist()))
      host_sets.append(set(recs.tolist()))
    assert sum(map(len, host_sets)) == len(set().union(*host_sets))  # disjoint
  assert sorted(read) == list(range(len(read)))  # hosts together: no position skipped
  assert sorted(r for g, r in read.items() if g < n) == list(range(n))  # epoch = all, once


def test_dynamic_masks_change_every_epoch_static_ones_do_not(shard_dir, tokenizer):
  for dynamic in (True, False):
    it = make_pretraining_iterator(_config(shard_dir, dynamic_masking=dynamic), tokenizer,
                                   process_index=0, process_count=1)
    n = it.num_records
    g0 = np.arange(16)
    recs0 = it.record_indices(g0)
    # The same records in epoch 1: find their positions there.
    inv1 = {int(r): i for i, r in enumerate(it.record_indices(n + np.arange(n)))}
    g1 = np.array([n + inv1[int(r)] for r in recs0])
    assert np.array_equal(it.record_indices(g1), recs0)
    keys = (lambda g: g) if dynamic else it.record_indices
    from bert_jax.data import instances as I, masking
    b0 = I.decode_batch(it.source.read(recs0), 64)
    m0 = masking.mask_batch(b0["input_ids"], b0["lengths"],
                            masking.example_keys(it.seed, keys(g0)), it.spec)
    m1 = masking.mask_batch(b0["input_ids"], b0["lengths"],
                            masking.example_keys(it.seed, keys(g1)), it.spec)
    same = (m0["masked_lm_positions"] == m1["masked_lm_positions"]).all(axis=1).mean()
    assert (same < 0.2) if dynamic else (same == 1.0)
    batch0 = it.batch_at(0)  # the iterator applies exactly these masks
    assert np.array_equal(batch0["masked_lm_positions"], m0["masked_lm_positions"])


def test_text_files_are_paired_in_memory_like_the_cli(shard_dir, tokenizer):
  """Text input gives the very batches of shards made with the same options."""
  c_text = _config(TRAIN, dupe_factor=1, documents_per_window=20)
  c_shard = _config(shard_dir)
  a = _take(make_pretraining_iterator(c_text, tokenizer, process_index=0, process_count=1,
                                      seed=0), 4)
  b = _take(make_pretraining_iterator(c_shard, tokenizer, process_index=0, process_count=1,
                                      seed=0), 4)
  assert _equal(a, b)


def test_tiny_config_eval_split_is_held_out_and_fixed(tokenizer):
  c = tiny.get_config()
  train = make_pretraining_iterator(c, tokenizer, process_index=0, process_count=1)
  ev1 = make_pretraining_iterator(c, tokenizer, split="eval", process_index=0, process_count=1)
  ev2 = make_pretraining_iterator(c, tokenizer, split="eval", process_index=0, process_count=1)
  assert c.model.vocab_size == tokenizer.vocab_size == 8000
  assert 500 < ev1.num_records < train.num_records // 3
  assert _equal(_take(ev1, 3), _take(ev2, 3))  # the same eval batches at every eval


def test_errors_name_the_problem_and_the_fix(shard_dir, tokenizer, tmp_path, minilm_path):
  with pytest.raises(ip.DataError, match="max_seq_length=64.*--config.data.max_seq_length=64"):
    make_pretraining_iterator(_config(shard_dir, max_seq_length=128), tokenizer,
                              process_index=0, process_count=1)
  other_vocab = load_tokenizer(str(pathlib.Path(minilm_path) / "vocab.txt"))
  with pytest.raises(ip.DataError, match="8000-token vocabulary"):
    make_pretraining_iterator(_config(shard_dir), other_vocab, process_index=0,
                              process_count=1)
  with pytest.raises(ip.DataError, match="not divisible by 3 hosts"):
    make_pretraining_iterator(_config(shard_dir), tokenizer, process_index=0, process_count=3)
  with pytest.raises(ip.DataError, match="no pre-training data"):
    make_pretraining_iterator(_config(""), tokenizer, process_index=0, process_count=1)
  with pytest.raises(ip.DataError, match="no pairs-"):
    make_pretraining_iterator(_config(str(tmp_path)), tokenizer, process_index=0,
                              process_count=1)
  it = make_pretraining_iterator(_config(shard_dir), tokenizer, process_index=0,
                                 process_count=1)
  with pytest.raises(ip.DataError, match="same config.data.train_files"):
    it.set_state({**it.get_state(), "num_records": 5})


def test_a_dropped_iterator_stops_its_prefetch_threads(shard_dir, tokenizer):
  """The trainer makes a fresh eval iterator at every eval: none may leak threads."""
  import gc
  import threading
  import time
  alive = lambda: sum(t.name.startswith("bert-data-") for t in threading.enumerate())  # noqa: E731
  before = alive()
  for _ in range(5):
    it = make_pretraining_iterator(_config(shard_dir, num_workers=3, prefetch=4), tokenizer,
                                   process_index=0, process_count=1)
    next(it)
    del it
  gc.collect()
  deadline = time.time() + 10
  while alive() > before and time.time() < deadline:
    time.sleep(0.05)
  # <=: threads of an earlier test's dropped iterators may still be finishing a batch
  # when `before` is counted, and end meanwhile.
  assert alive() <= before


def test_epoch_permutation_equals_grains_index_shuffle():
  """permutation.index_shuffle = Grain's C++ index_shuffle (the order runs had when the
  pipeline called it): every block size from 16 to 64 bits, powers of two and their
  neighbours (where Grain's block is one bit short), random seeds, rounds 4 and 6."""
  from grain.experimental import index_shuffle as grain_shuffle
  from bert_jax.data import permutation
  rng = np.random.default_rng(0)
  sizes = [1, 2, 3, 255, 256, 257, 65535, 65536, 65537, 2**20 + 5, 2**32, 2**40 + 3]
  sizes += [int(x) for x in 2 ** rng.uniform(4, 62, size=12)]
  for max_index in sizes:
    for seed in (0, 12345, 2**32 - 1, int(rng.integers(2**32))):
      idx = np.unique(np.concatenate([np.arange(min(max_index + 1, 100)), [max_index],
                                      rng.integers(0, max_index + 1, size=100)]))
      for rounds in (4, 6):
        want = [grain_shuffle(int(i), max_index=max_index, seed=seed, rounds=rounds)
                for i in idx]
        got = permutation.index_shuffle(idx, max_index, seed, rounds)
        assert got.tolist() == want, (max_index, seed, rounds)
  full = permutation.index_shuffle(np.arange(1000), 999, seed=7)
  assert sorted(full.tolist()) == list(range(1000))  # a bijection
  with pytest.raises(ValueError, match="rounds=3"):
    permutation.index_shuffle([0], 10, 0, rounds=3)
  with pytest.raises(ValueError, match="max_index=10"):
    permutation.index_shuffle([11], 10, 0)


def test_shard_source_reads_any_indices_across_shards(shard_dir):
  """ShardSource: global index -> (shard, position) in any order, repeats included, equal
  to each shard read whole in order; out-of-range indices are refused by name."""
  from array_record.python.array_record_module import ArrayRecordReader
  files = sorted(str(p) for p in pathlib.Path(shard_dir).glob("pairs-*.array_record"))
  assert len(files) > 1
  every = []
  for f in files:
    r = ArrayRecordReader(f)
    every += r.read(list(range(r.num_records())))
  src = ip.ShardSource(files, None)
  assert len(src) == len(every)
  order = np.random.default_rng(0).integers(0, len(every), size=3 * len(every))
  assert src.read(order) == [every[i] for i in order]
  with pytest.raises(IndexError, match="out of range"):
    src.read([len(every)])
  # More shards than may be open at once (a small `ulimit -n`): the least recently used
  # idle readers are closed and reopened as needed, by any number of threads.
  from concurrent.futures import ThreadPoolExecutor
  few = ip.ShardSource(files, None, max_open=1)
  assert few.read(order) == [every[i] for i in order] and few.open_readers == 1
  chunks = np.array_split(order, 12)
  with ThreadPoolExecutor(4) as pool:
    got = list(pool.map(few.read, chunks))
  assert [r for part in got for r in part] == [every[i] for i in order]
  assert few.open_readers <= 1 and not few._in_use
