"""Pair construction: draw-for-draw equal to Google's algorithm, provenance, record format."""
import collections
import pathlib
import random

import numpy as np
import pytest

from bert_jax.data import corpus
from bert_jax.data import instances as I
from bert_jax.tokenization import load_tokenizer

RESOURCES = pathlib.Path(I.__file__).parents[1] / "resources"


# --- Reference: google-research/bert create_pretraining_data.py (Apache-2.0), transcribed
# line by line on token strings, with the create_masked_lm_predictions call removed (our
# masking is dynamic, in the pipeline), so that both consume the same random draws.

def ref_truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng):
  while True:
    total_length = len(tokens_a) + len(tokens_b)
    if total_length <= max_num_tokens:
      break
    trunc_tokens = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
    assert len(trunc_tokens) >= 1
    if rng.random() < 0.5:
      del trunc_tokens[0]
    else:
      trunc_tokens.pop()


def ref_create_instances_from_document(all_documents, document_index, max_seq_length,
                                       short_seq_prob, rng):
  document = all_documents[document_index]
  max_num_tokens = max_seq_length - 3
  target_seq_length = max_num_tokens
  if rng.random() < short_seq_prob:
    target_seq_length = rng.randint(2, max_num_tokens)
  instances = []
  current_chunk = []
  current_length = 0
  i = 0
  while i < len(document):
    segment = document[i]
    current_chunk.append(segment)
    current_length += len(segment)
    if i == len(document) - 1 or current_length >= target_seq_length:
      if current_chunk:
        a_end = 1
        if len(current_chunk) >= 2:
          a_end = rng.randint(1, len(current_chunk) - 1)
        tokens_a = []
        for j in range(a_end):
          tokens_a.extend(current_chunk[j])
        tokens_b = []
        is_random_next = False
        if len(current_chunk) == 1 or rng.random() < 0.5:
          is_random_next = True
          target_b_length = target_seq_length - len(tokens_a)
          for _ in range(10):
            random_document_index = rng.randint(0, len(all_documents) - 1)
            if random_document_index != document_index:
              break
          random_document = all_documents[random_document_index]
          random_start = rng.randint(0, len(random_document) - 1)
          for j in range(random_start, len(random_document)):
            tokens_b.extend(random_document[j])
            if len(tokens_b) >= target_b_length:
              break
          num_unused_segments = len(current_chunk) - a_end
          i -= num_unused_segments
        else:
          is_random_next = False
          for j in range(a_end, len(current_chunk)):
            tokens_b.extend(current_chunk[j])
        ref_truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
        assert len(tokens_a) >= 1
        assert len(tokens_b) >= 1
        tokens = ["[CLS]"] + tokens_a + ["[SEP]"] + tokens_b + ["[SEP]"]
        segment_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
        instances.append((tokens, segment_ids, is_random_next))
      current_chunk = []
      current_length = 0
    i += 1
  return instances


def ref_create_training_instances(all_documents, max_seq_length, dupe_factor, short_seq_prob,
                                  rng):
  all_documents = [x for x in all_documents if x]
  rng.shuffle(all_documents)
  instances = []
  for _ in range(dupe_factor):
    for document_index in range(len(all_documents)):
      instances.extend(ref_create_instances_from_document(
          all_documents, document_index, max_seq_length, short_seq_prob, rng))
  rng.shuffle(instances)
  return instances

# --- end of reference.


def test_truncation_equals_reference_loop():
  """random_truncate_pair (all draws at once) = the original's one-token loop: the same
  tokens kept and the same draws consumed, over 20,000 random length pairs."""
  r = random.Random(0)
  for n in range(20_000):
    la, lb, limit, seed = r.randint(1, 300), r.randint(1, 300), r.randint(2, 200), r.random()
    if n % 1000 == 0:  # a sentence longer than 4,096 tokens over the limit: drawn one by one
      la = r.randint(4300, 9000)
    a, b = list(range(la)), list(range(1000, 1000 + lb))
    ref_rng, our_rng = random.Random(seed), random.Random(seed)
    want_a, want_b = list(a), list(b)
    ref_truncate_seq_pair(want_a, want_b, limit, ref_rng)
    assert I.random_truncate_pair(a, b, limit, our_rng) == (want_a, want_b), (la, lb, limit)
    assert our_rng.random() == ref_rng.random()


def test_randint_is_pythons():
  """The pairing's randint takes the same draws and gives the same numbers as Python's."""
  ours, ref = random.Random(3), random.Random(3)
  r = random.Random(0)
  for _ in range(20_000):
    a = r.randint(0, 5)
    b = a + r.choice([0, 1, 2, 7, 124, 10**6, 2**40])
    assert I.randint(ours, a, b) == ref.randint(a, b)
  assert ours.random() == ref.random()


@pytest.fixture(scope="module")
def tokenizer():
  return load_tokenizer(str(RESOURCES / "vocab.txt"))


@pytest.fixture(scope="module")
def documents(tokenizer):
  """The bundled corpus as tokenized documents (lists of sentences of ids)."""
  stats = corpus.CorpusStats()
  files = corpus.expand_input_patterns(str(RESOURCES / "corpus" / "train-*.txt"))
  docs = [d for f in files for d in corpus.read_documents(f, stats)]
  return [[ids for ids in tokenizer.encode_batch(d) if ids] for d in docs]


def _build(docs, tokenizer, seed, pairing, max_seq_length=128, dupe_factor=1,
           short_seq_prob=0.1):
  return I.create_instances(docs, list(range(len(docs))), max_seq_length=max_seq_length,
                            short_seq_prob=short_seq_prob, dupe_factor=dupe_factor,
                            rng=random.Random(seed), cls_id=tokenizer.cls_id,
                            sep_id=tokenizer.sep_id, pairing=pairing)


@pytest.mark.parametrize("max_seq_length,seed", [(128, 12345), (32, 7)])
def test_google_pairing_equals_the_original_draw_for_draw(documents, tokenizer,
                                                          max_seq_length, seed):
  docs = documents[:12]  # 12 chapters/documents, 3 passes
  as_tokens = [[tokenizer.convert_ids_to_tokens(s) for s in d] for d in docs]
  ref = ref_create_training_instances(as_tokens, max_seq_length, 3, 0.1, random.Random(seed))
  ours = _build(docs, tokenizer, seed, "google", max_seq_length, dupe_factor=3)
  assert len(ours) == len(ref) > 100
  for inst, (tokens, segment_ids, is_random_next) in zip(ours, ref):
    assert tokenizer.convert_ids_to_tokens(inst.tokens) == tokens
    assert inst.segment_ids.tolist() == segment_ids
    assert inst.is_random_next == is_random_next


def _check_provenance(inst, docs_by_id, max_seq_length, cls_id, sep_id):
  """A/B are contiguous pieces of the sentences they claim; IsNext B follows A."""
  toks = inst.tokens.tolist()
  assert toks[0] == cls_id and toks[inst.num_a - 1] == sep_id and toks[-1] == sep_id
  assert len(toks) <= max_seq_length
  a, b = toks[1:inst.num_a - 1], toks[inst.num_a:-1]
  assert a and b
  src_a = sum(docs_by_id[inst.a_doc][inst.a_start:inst.a_end], [])
  src_b = sum(docs_by_id[inst.b_doc][inst.b_start:inst.b_end], [])
  assert _is_slice(a, src_a) and _is_slice(b, src_b)
  if inst.is_random_next:
    assert inst.b_doc != inst.a_doc
  else:
    assert inst.b_doc == inst.a_doc and inst.b_start == inst.a_end
    # Truncation only trims A's front / B's back, never the seam between them.
    assert src_a[-1] == a[-1] or len(a) + len(b) == max_seq_length - 3
    if len(a) + len(b) < max_seq_length - 3:
      assert a == src_a and b == src_b


def _is_slice(part, whole):
  n = len(part)
  return any(whole[i:i + n] == part for i in range(len(whole) - n + 1))


@pytest.mark.parametrize("pairing", ["balanced", "google"])
def test_every_pair_is_traceable_to_its_sentences(documents, tokenizer, pairing):
  insts = _build(documents, tokenizer, 3, pairing, max_seq_length=64)
  assert len(insts) > 3000
  for inst in insts:
    _check_provenance(inst, documents, 64, tokenizer.cls_id, tokenizer.sep_id)


def test_balanced_pairing_gives_fair_labels_and_short_share(documents, tokenizer):
  """The original's labels are biased to NotNext; balanced is a fair coin (3 sigma)."""
  n_google = _build(documents, tokenizer, 1, "google", dupe_factor=4)
  n_bal = _build(documents, tokenizer, 1, "balanced", dupe_factor=4)
  share = lambda insts, f: np.mean([f(i) for i in insts])  # noqa: E731
  not_next_g = share(n_google, lambda i: i.is_random_next)
  not_next_b = share(n_bal, lambda i: i.is_random_next)
  short_b = share(n_bal, lambda i: len(i.tokens) < 128)
  sigma = 0.5 / np.sqrt(len(n_bal))
  assert len(n_bal) > 7000
  assert abs(not_next_b - 0.5) < 3 * sigma, not_next_b
  assert not_next_g > 0.5 + 3 * sigma, not_next_g  # what the original really does
  assert 0.07 < short_b < 0.13, short_b
  # Single-sentence chunks are never forced NotNext in balanced mode: A and B together
  # always span >= 2 sentences of the same document for IsNext.
  assert all(i.b_end - i.a_start >= 2 for i in n_bal if not i.is_random_next)


def test_records_roundtrip_and_batch_decoding(documents, tokenizer):
  insts = _build(documents[:5], tokenizer, 0, "balanced", max_seq_length=48)
  records = [I.encode_instance(i) for i in insts]
  back = [I.decode_instance(r) for r in records]
  for a, b in zip(insts, back):
    assert np.array_equal(a.tokens, b.tokens)
    assert (a.num_a, a.is_random_next, a.a_doc, a.a_start, a.a_end, a.b_doc, a.b_start,
            a.b_end) == (b.num_a, b.is_random_next, b.a_doc, b.a_start, b.a_end, b.b_doc,
                         b.b_start, b.b_end)
  big = I.Instance(np.array([2, 70000, 3, 99999, 3], np.int32), 3, True)  # > uint16 ids
  assert np.array_equal(I.decode_instance(I.encode_instance(big)).tokens, big.tokens)
  batch = I.decode_batch(records[:8], 48)
  for r, inst in enumerate(insts[:8]):
    n = len(inst.tokens)
    assert batch["input_ids"][r, :n].tolist() == inst.tokens.tolist()
    assert not batch["input_ids"][r, n:].any() and batch["attention_mask"][r].sum() == n
    assert batch["token_type_ids"][r, :n].tolist() == inst.segment_ids.tolist()
    assert not batch["token_type_ids"][r, n:].any()
    assert batch["next_sentence_labels"][r] == int(inst.is_random_next)
  with pytest.raises(ValueError, match="max_seq_length"):
    I.decode_batch(records[:1], 8)
  # The whole-batch decoding equals record-by-record decoding, also when a record of
  # int32 ids (a vocabulary over 65,536) sends the batch down the per-record path.
  for recs in (records, records[:3] + [I.encode_instance(big)] + records[3:6], []):
    fast, each = I.decode_batch(recs, 48), I._decode_each(recs, 48)
    assert fast.keys() == each.keys()
    assert all(np.array_equal(fast[k], each[k]) and fast[k].dtype == each[k].dtype
               for k in fast)
  old = bytearray(records[0])
  old[0] = 0  # another record format version
  with pytest.raises(ValueError, match="version 0"):
    I.decode_batch([records[1], bytes(old)], 48)


def test_span_instances_write_the_records_of_their_tokens(documents, tokenizer):
  """Pairing keeps A and B as spans of the window's id array; the records Pairs.records()
  writes from the spans equal those of the same instances holding their tokens, and lists
  of sentences pair as the window does."""
  window = I.WindowTokens.from_documents(documents[:6], cls_id=tokenizer.cls_id,
                                         sep_id=tokenizer.sep_id)
  assert window.tokens.dtype == np.uint16
  insts = _build(window, tokenizer, 3, "balanced")
  assert insts == [] or all(i._spans is not None for i in insts)
  as_lists = _build(documents[:6], tokenizer, 3, "balanced")
  assert len(insts) == len(as_lists) > 20
  held = []
  for a, b in zip(insts, as_lists):
    held.append(I.Instance(a.tokens, a.num_a, a.is_random_next, a.a_doc, a.a_start, a.a_end,
                           a.b_doc, a.b_start, a.b_end))
    assert I.encode_instance(a) == I.encode_instance(held[-1]) == I.encode_instance(b)
    assert a.num_tokens == len(a.tokens) and a.segment_ids.sum() == len(a.tokens) - a.num_a
  pairs = I.pair_window(window, list(range(6)), max_seq_length=128, short_seq_prob=0.1,
                        dupe_factor=1, rng=random.Random(3), pairing="balanced")
  assert pairs.records() == [I.encode_instance(h) for h in held]


class _ListTokenizer:
  """A tokenizer with encode_batch only (as SentencePiece's): the generic flattening path."""

  def __init__(self, tokenizer):
    self.encode_batch, self.cls_id, self.sep_id = (tokenizer.encode_batch, tokenizer.cls_id,
                                                   tokenizer.sep_id)


def test_window_instances_counts_and_is_deterministic(tokenizer):
  docs = [["A first sentence here.", "And a second one."],
          ["Only one sentence survives.", ""],  # empty line: 1 sentence -> skipped
          ["x " * 300, "Short."],  # a line longer than max_seq_length: kept, truncated
          ["Third document, first.", "Third document, second.", "Third, third."]]
  opts = I.PairOptions(max_seq_length=32, dupe_factor=2, random_seed=5)
  insts, counts = I.window_instances(docs, 100, 0, tokenizer, opts)
  again, _ = I.window_instances(docs, 100, 0, tokenizer, opts)
  assert counts["one_sentence_documents"] == 1 and counts["long_sentences"] == 1
  assert counts["documents"] == 3
  assert {i.a_doc for i in insts} <= {100, 102, 103}  # ids count over the input
  assert all(len(i.tokens) <= 32 for i in insts)
  assert [i.tokens.tolist() for i in insts] == [i.tokens.tolist() for i in again]
  other, _ = I.window_instances(docs, 100, 1, tokenizer, opts)  # another window, other draws
  assert [i.tokens.tolist() for i in insts] != [i.tokens.tolist() for i in other]
  assert collections.Counter(i.is_random_next for i in insts)[True] > 0
  generic, generic_counts = I.window_instances(docs, 100, 0, _ListTokenizer(tokenizer), opts)
  assert generic_counts == counts
  assert [I.encode_instance(i) for i in generic] == [I.encode_instance(i) for i in insts]
