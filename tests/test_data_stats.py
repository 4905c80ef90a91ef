"""Statistics of prepared pairs and masked batches on real Gutenberg text.

The full numbers (>= 100,000 instances of all nine books) are printed by
benchmarks/data_pipeline.py; here one book (shared data) and the bundled corpus +
fixture excerpt, with tolerances scaled to their sample sizes (about 4 sigma).
"""
import pathlib

import numpy as np
import pytest

from bert_jax.data import corpus
from bert_jax.data import shards as prep
from bert_jax.data import input_pipeline as ip
from bert_jax.data import instances as I
from bert_jax.data import statistics
from bert_jax.tokenization import load_tokenizer
from configs import tiny

RESOURCES = pathlib.Path(prep.__file__).parents[1] / "resources"
VOCAB = str(RESOURCES / "vocab.txt")
EXCERPT = pathlib.Path(__file__).parent / "fixtures" / "data" / "tale-of-two-cities-excerpt.txt"


@pytest.fixture(scope="module")
def tokenizer():
  return load_tokenizer(VOCAB)


def _prepare_and_measure(tmp, files, input_format, tokenizer, dupe_factor, seq=128, preds=20):
  out = str(tmp / "shards")
  summary = prep.run(",".join(files), VOCAB, out, max_seq_length=seq, dupe_factor=dupe_factor,
                     input_format=input_format, num_workers=1, progress=False)
  src = ip.ShardSource(sorted(str(p) for p in pathlib.Path(out).glob("*.array_record")), None)
  insts = [I.decode_instance(r) for r in src.read(range(len(src)))]
  docs = statistics.tokenized_documents(files, tokenizer, input_format)
  pairs = statistics.pair_statistics(insts, seq, docs)
  masks = {}
  word_start = ip.masking.MaskingSpec.from_tokenizer(
      tokenizer, max_predictions_per_seq=preds, masked_lm_prob=0.15,
      whole_word_mask=True).word_start
  for wwm in (False, True):
    c = tiny.get_config()
    c.data.train_files = out
    c.data.max_seq_length, c.data.max_predictions_per_seq = seq, preds
    c.data.whole_word_mask = wwm
    c.train.batch_size = 512
    it = ip.make_pretraining_iterator(c, tokenizer, process_index=0, process_count=1)
    masks[wwm] = statistics.mask_statistics(statistics.epoch_batches(it, len(src)), it.spec,
                                            word_start)
  return summary, pairs, masks


def _check(pairs, masks, n_min):
  n = pairs["instances"]
  tol = 4 * 0.5 / np.sqrt(n)  # 4 sigma of a share near 1/2
  assert n >= n_min
  assert abs(pairs["nsp_positive_share"] - 0.5) < max(tol, 0.01), pairs
  assert pairs["is_next_follows_a_share"] == 1.0
  assert pairs["not_next_other_document_share"] == 1.0
  assert pairs["token_checked"] == n and pairs["token_mismatches"] == 0
  assert abs(pairs["short_share"] - 0.10) < max(4 * 0.3 / np.sqrt(n), 0.01) + 0.01, pairs
  for wwm, m in masks.items():
    assert m["rows"] == n and m["special_or_padding_predicted"] == 0
    predicted = m["masked_share_of_maskable"]
    assert abs(predicted - 0.15) < 0.005, (wwm, m)
    assert m["capped_rows_share"] < 0.01  # the 15% is not the cap's doing
    tol_k = 4 * np.sqrt(0.16 / (n * 18))  # ~18 predictions per instance
    assert abs(m["mask_share"] - 0.8) < max(tol_k, 0.01), m
    assert abs(m["random_share"] - 0.1) < max(tol_k, 0.01), m
    assert abs(m["unchanged_share"] - 0.1) < max(tol_k, 0.01), m
    assert m["words_partly_masked"] == 0 or not wwm
  assert masks[True]["words_masked"] > 0 and masks[False]["words_partly_masked"] > 0


def test_statistics_on_a_gutenberg_book(shared_data, tokenizer, tmp_path):
  book = shared_data / "corpus" / "gutenberg" / "a-tale-of-two-cities" / "98-0.txt"
  summary, pairs, masks = _prepare_and_measure(tmp_path, [str(book)], "gutenberg", tokenizer,
                                               dupe_factor=8)
  assert summary["stats"]["documents"] == 45  # the 45 chapters
  _check(pairs, masks, n_min=10_000)


def test_statistics_on_the_bundled_corpus_and_fixture(tokenizer, tmp_path):
  """Self-contained sibling: the excerpt (raw Gutenberg) + the bundled books."""
  (tmp_path / "a").mkdir()
  s1, p1, _ = _prepare_and_measure(tmp_path / "a", [str(EXCERPT)], "gutenberg", tokenizer,
                                   dupe_factor=10)
  assert s1["stats"]["documents"] == 4 and p1["token_mismatches"] == 0
  assert p1["is_next_follows_a_share"] == p1["not_next_other_document_share"] == 1.0
  files = corpus.expand_input_patterns(str(RESOURCES / "corpus" / "train-*.txt"))
  (tmp_path / "b").mkdir()
  _, pairs, masks = _prepare_and_measure(tmp_path / "b", files, "text", tokenizer,
                                         dupe_factor=3)
  _check(pairs, masks, n_min=6_000)
