"""Dynamic masking: the original create_masked_lm_predictions' rule, vectorised."""
import collections
import pathlib
import random

import numpy as np
import pytest

from bert_jax.data import corpus
from bert_jax.data import instances as I
from bert_jax.data import masking
from bert_jax.tokenization import load_tokenizer

RESOURCES = pathlib.Path(I.__file__).parents[1] / "resources"


# --- Reference: google-research/bert create_masked_lm_predictions (Apache-2.0, the version
# with do_whole_word_mask), transcribed on token strings.
def ref_create_masked_lm_predictions(tokens, masked_lm_prob, max_predictions_per_seq,
                                     vocab_words, rng, do_whole_word_mask):
  cand_indexes = []
  for (i, token) in enumerate(tokens):
    if token == "[CLS]" or token == "[SEP]":
      continue
    if (do_whole_word_mask and len(cand_indexes) >= 1 and token.startswith("##")):
      cand_indexes[-1].append(i)
    else:
      cand_indexes.append([i])
  rng.shuffle(cand_indexes)
  output_tokens = list(tokens)
  num_to_predict = min(max_predictions_per_seq,
                       max(1, int(round(len(tokens) * masked_lm_prob))))
  masked_lms = []
  covered_indexes = set()
  for index_set in cand_indexes:
    if len(masked_lms) >= num_to_predict:
      break
    if len(masked_lms) + len(index_set) > num_to_predict:
      continue
    is_any_index_covered = False
    for index in index_set:
      if index in covered_indexes:
        is_any_index_covered = True
        break
    if is_any_index_covered:
      continue
    for index in index_set:
      covered_indexes.add(index)
      masked_token = None
      if rng.random() < 0.8:
        masked_token = "[MASK]"
      else:
        if rng.random() < 0.5:
          masked_token = tokens[index]
        else:
          masked_token = vocab_words[rng.randint(0, len(vocab_words) - 1)]
      output_tokens[index] = masked_token
      masked_lms.append((index, tokens[index]))
  assert len(masked_lms) <= num_to_predict
  masked_lms = sorted(masked_lms, key=lambda x: x[0])
  return (output_tokens, [p for p, _ in masked_lms], [l for _, l in masked_lms])
# --- end of reference.


@pytest.fixture(scope="module")
def tokenizer():
  return load_tokenizer(str(RESOURCES / "vocab.txt"))


@pytest.fixture(scope="module")
def batch(tokenizer):
  """2,000 real instances of the bundled corpus, padded to 128."""
  stats = corpus.CorpusStats()
  docs = list(corpus.read_documents(str(RESOURCES / "corpus" / "train-sherlock-holmes.txt"),
                                    stats))
  insts, _ = I.window_instances(docs, 0, 0, tokenizer, I.PairOptions(128, dupe_factor=2))
  return I.decode_batch([I.encode_instance(i) for i in insts[:2000]], 128)


def _spec(tokenizer, wwm, max_predictions=20):
  return masking.MaskingSpec.from_tokenizer(tokenizer, max_predictions_per_seq=max_predictions,
                                            masked_lm_prob=0.15, whole_word_mask=wwm)


@pytest.mark.parametrize("wwm", [False, True])
def test_predictions_are_well_formed(tokenizer, batch, wwm):
  spec = _spec(tokenizer, wwm)
  ids, lengths = batch["input_ids"], batch["lengths"]
  out = masking.mask_batch(ids, lengths, masking.example_keys(0, np.arange(len(ids))), spec)
  k = np.minimum(20, np.maximum(1, np.rint(lengths * 0.15))).astype(int)
  w = out["masked_lm_weights"]
  n = w.sum(axis=1).astype(int)
  if wwm:  # a word that would overshoot is skipped: at most k, nearly always exactly k
    assert (n <= k).all() and (n == k).mean() > 0.95
  else:
    assert (n == k).all()
  for r in range(len(ids)):
    pos = out["masked_lm_positions"][r, :n[r]]
    assert (np.diff(pos) > 0).all() and pos.min() >= 1 and pos.max() < lengths[r]
    assert not out["masked_lm_positions"][r, n[r]:].any()
    assert not out["masked_lm_ids"][r, n[r]:].any() and not w[r, n[r]:].any()
    assert (out["masked_lm_ids"][r, :n[r]] == ids[r, pos]).all()
    assert not np.isin(ids[r, pos], [tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id]).any()
    changed = np.flatnonzero(out["input_ids"][r] != ids[r])
    assert set(changed) <= set(pos)  # only predicted positions ever change
  assert out["input_ids"].dtype == np.int32 and w.dtype == np.float32


def test_whole_word_masking_never_masks_part_of_a_word(tokenizer, batch):
  spec = _spec(tokenizer, True)
  ids, lengths = batch["input_ids"], batch["lengths"]
  out = masking.mask_batch(ids, lengths, masking.example_keys(1, np.arange(len(ids))), spec)
  pieces = np.array([not t.startswith("##") for t in
                     tokenizer.convert_ids_to_tokens(range(tokenizer.vocab_size))])
  words_with_pieces = 0
  for r in range(len(ids)):
    masked = set(out["masked_lm_positions"][r][out["masked_lm_weights"][r] > 0].tolist())
    n = lengths[r]
    # words: a start and the '##' pieces after it (never across [SEP])
    start = 1
    for j in range(2, n + 1):
      if j == n or pieces[ids[r, j]] or ids[r, j] == tokenizer.sep_id or \
          ids[r, j - 1] == tokenizer.sep_id:
        word = set(range(start, j))
        if ids[r, start] != tokenizer.sep_id:
          assert not masked & word or word <= masked, (r, word, masked)
          words_with_pieces += len(word) > 1 and word <= masked
        start = j
  assert words_with_pieces > 100  # multi-piece words do get masked, whole


@pytest.mark.parametrize("wwm", [False, True])
def test_same_distribution_as_the_original(tokenizer, wwm):
  """Per-position masking frequency and 80/10/10 of ours vs the reference, 4000 draws each."""
  text = ("Sherlock Holmes unhesitatingly deciphered the quintessential palimpsest, "
          "and Watson scribbled it down.")
  a = tokenizer.tokenize(text)
  tokens = ["[CLS]"] + a + ["[SEP]"] + tokenizer.tokenize("It was elementary.") + ["[SEP]"]
  assert sum(t.startswith("##") for t in tokens) >= 5
  vocab_words = tokenizer.convert_ids_to_tokens(range(tokenizer.vocab_size))
  n = 4000
  ref_freq = np.zeros((len(tokens), len(tokens)))  # [i, j]: i and j masked together
  ref_kind = collections.Counter()
  for seed in range(n):
    out, pos, _ = ref_create_masked_lm_predictions(tokens, 0.15, 20, vocab_words,
                                                   random.Random(seed), wwm)
    ref_freq[np.ix_(pos, pos)] += 1
    ref_kind.update("mask" if out[p] == "[MASK]" else "same" if out[p] == tokens[p] else
                    "random" for p in pos)
  ids = np.array([tokenizer.convert_tokens_to_ids(tokens)] * n, np.int32)
  res = masking.mask_batch(ids, np.full(n, len(tokens)), masking.example_keys(0, np.arange(n)),
                           _spec(tokenizer, wwm))
  m = np.zeros((n, len(tokens)))
  np.put_along_axis(m, res["masked_lm_positions"], res["masked_lm_weights"], axis=1)
  our_freq = m.T @ m
  # Single and joint masking frequencies (the joint ones see whole-word grouping).
  assert np.abs(our_freq / n - ref_freq / n).max() < 0.04  # sigma of a difference <= 0.8%
  chosen = res["masked_lm_weights"] > 0
  new = np.take_along_axis(res["input_ids"], res["masked_lm_positions"], axis=1)[chosen]
  old = res["masked_lm_ids"][chosen]
  ours = {"mask": np.mean(new == tokenizer.mask_id),
          "same": np.mean(new == old), "random": np.mean((new != old) & (new != tokenizer.mask_id))}
  total = sum(ref_kind.values())
  for kind in ("mask", "same", "random"):
    assert abs(ours[kind] - ref_kind[kind] / total) < 0.02, (kind, ours, ref_kind)


def test_masks_depend_on_the_example_key_only(tokenizer, batch):
  spec = _spec(tokenizer, False)
  ids, lengths = batch["input_ids"][:64], batch["lengths"][:64]
  keys = masking.example_keys(7, np.arange(1000, 1064))
  full = masking.mask_batch(ids, lengths, keys, spec)
  perm = np.random.default_rng(0).permutation(64)[:20]  # another batch layout
  part = masking.mask_batch(ids[perm], lengths[perm], keys[perm], spec)
  for k in full:
    assert np.array_equal(full[k][perm], part[k])
  other = masking.mask_batch(ids, lengths, masking.example_keys(8, np.arange(1000, 1064)), spec)
  assert not np.array_equal(other["masked_lm_positions"], full["masked_lm_positions"])


def test_cap_and_short_sequences(tokenizer):
  spec = _spec(tokenizer, False, max_predictions=5)
  ids = np.zeros((3, 200), np.int32)
  body = tokenizer.encode("the " * 150)
  ids[0, :153] = [tokenizer.cls_id] + body[:150] + [tokenizer.sep_id, tokenizer.sep_id]
  ids[1, :5] = [tokenizer.cls_id, body[0], tokenizer.sep_id, body[1], tokenizer.sep_id]
  lengths = np.array([153, 5, 0])
  out = masking.mask_batch(ids, lengths, masking.example_keys(0, np.arange(3)), spec)
  assert out["masked_lm_weights"].sum(axis=1).tolist() == [5, 1, 0]  # cap, max(1, .), none
  assert out["masked_lm_positions"].shape == (3, 5)
