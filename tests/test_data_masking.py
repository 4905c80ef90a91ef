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


def _mask_row_by_row(ids, lengths, keys, spec):
  """mask_batch's rule written out per example and per draw (the vectorised version must
  give the same masks: existing runs resume with the masks they had)."""
  b, seq_len = ids.shape
  p = spec.max_predictions_per_seq
  out = {"input_ids": ids.astype(np.int32), "masked_lm_positions": np.zeros((b, p), np.int32),
         "masked_lm_ids": np.zeros((b, p), np.int32),
         "masked_lm_weights": np.zeros((b, p), np.float32)}
  for r in range(b):
    row_key = keys[r:r + 1]
    u = lambda stream: masking._uniform(row_key, seq_len, stream)[0]  # pylint: disable=unnecessary-lambda-assignment
    cand = [j for j in range(lengths[r])
            if ids[r, j] not in (spec.cls_id, spec.sep_id, spec.pad_id)]
    words = []  # lists of positions
    for j in cand:
      if words and spec.word_start is not None and not spec.word_start[ids[r, j]] and \
          words[-1][-1] == j - 1:
        words[-1].append(j)
      else:
        words.append([j])
    order_u = u(masking._ORDER)
    words.sort(key=lambda w: (order_u[w[0]], w[0]))
    k = int(masking.num_to_predict(lengths[r:r + 1], spec)[0])
    chosen = []
    for w in words:
      if len(chosen) + len(w) <= k:
        chosen += w
      if len(chosen) >= k:
        break
    mask_u, keep_u = u(masking._MASK_OR_NOT), u(masking._KEEP_OR_RANDOM)
    random_ids = masking._bits(row_key, seq_len, masking._RANDOM_ID)[0] % np.uint64(
        spec.vocab_size)
    for slot, j in enumerate(sorted(chosen)):
      original = ids[r, j]
      out["input_ids"][r, j] = (spec.mask_id if mask_u[j] < 0.8 else
                                original if keep_u[j] < 0.5 else int(random_ids[j]))
      out["masked_lm_positions"][r, slot] = j
      out["masked_lm_ids"][r, slot] = original
      out["masked_lm_weights"][r, slot] = 1.0
  return out


@pytest.mark.parametrize("wwm,max_predictions", [(False, 20), (True, 20), (False, 3),
                                                  (False, 200)])
def test_mask_batch_equals_the_rule_row_by_row(tokenizer, batch, wwm, max_predictions):
  spec = _spec(tokenizer, wwm, max_predictions)
  ids, lengths = batch["input_ids"][:300], batch["lengths"][:300]
  keys = masking.example_keys(11, np.arange(300))
  got = masking.mask_batch(ids, lengths, keys, spec)
  want = _mask_row_by_row(ids, lengths, keys, spec)
  for name in want:
    assert got[name].dtype == want[name].dtype, name
    assert np.array_equal(got[name], want[name]), name


def test_first_k_breaks_ties_as_a_stable_sort():
  """Equal random keys (about 2^-40 per row): the lowest positions win, as a stable argsort."""
  rng = np.random.default_rng(0)
  keys = rng.integers(0, 4, size=(500, 30)).astype(np.float64) / 4  # many ties
  start = rng.random((500, 30)) < 0.7
  keys = np.where(start, keys, 2.0)
  k = rng.integers(1, 8, size=500)
  got = masking._first_k(keys, start, k, 8)
  rank = np.empty_like(keys, dtype=np.int64)
  order = np.argsort(keys, axis=1, kind="stable")
  rank[np.arange(500)[:, None], order] = np.arange(30)
  assert np.array_equal(got, start & (rank < k[:, None]))


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
