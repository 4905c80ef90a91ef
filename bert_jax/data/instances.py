"""Documents -> unmasked next-sentence-prediction pairs, and their shard record format.

`create_instances_from_document` is Google's `create_pretraining_data.py` function of the
same name, step for step and random draw for draw, minus the masking (done dynamically in
the input pipeline, see masking.py):
- target length `max_seq_length - 3`, or with probability `short_seq_prob` a random
  length in [2, max_num_tokens];
- sentences are collected into a chunk until it reaches the target; A = the first
  `a_end` sentences (a_end random), B = the rest (actual next, label 0 "IsNext") or, 50%
  of the time or when the chunk is a single sentence, a span from a random *other*
  document (label 1 "NotNext") and the unused sentences are put back;
- `random_truncate_pair` (the original's truncate_seq_pair) removes tokens from the longer
  side, front or back at random;
- `[CLS] A [SEP] B [SEP]`, segment ids 0 for `[CLS] A [SEP]` and 1 for `B [SEP]`.
One deliberate difference: the original gives up finding a different random document
after 10 draws (then B may come from the same document); we keep drawing, so NotNext B
always comes from another document (identical output whenever the original succeeds).

`pairing="google"` is that algorithm. It does not give the shares its flags promise:
`short_seq_prob` draws one target per *document* (a short-target document yields many
short instances), and a chunk of one sentence (a sentence longer than the target, or the
document's last one) is always NotNext. On the Gutenberg books at max_seq_length 128 that
makes ~55% NotNext and ~17% short instances (benchmarks/data_pipeline.py). The default
`pairing="balanced"` changes exactly three things so that the label is a fair coin and
`short_seq_prob` is the share of short instances: the target is drawn per chunk; a chunk
is closed only once it holds 2 sentences (joining the document's last sentence rather than
leaving it alone); a lone sentence left at the document end (after a NotNext put-back) is
dropped instead of being paired with a forced random B.

`create_instances` processes one *window* of documents (the original processed a whole
input file at once): the random-next document is drawn from the same window, which keeps
memory bounded for any corpus size. Instances keep their provenance (document and
sentence ranges of A and B) so tests and benchmarks can check every pair.
"""
from __future__ import annotations

import dataclasses
import random
import struct
from typing import Sequence

import numpy as np


@dataclasses.dataclass
class Instance:
  """One sentence pair: `[CLS] A [SEP] B [SEP]` token ids, unmasked."""
  tokens: np.ndarray  # int32 [n]
  num_a: int  # len(A) + 2: tokens[:num_a] have segment id 0, the rest 1.
  is_random_next: bool  # next_sentence_labels: 1 = NotNext (random B), 0 = IsNext.
  # Provenance: A is (a piece of) sentences [a_start, a_end) of document a_doc, B of
  # sentences [b_start, b_end) of document b_doc (document ids count from 0 over the input).
  a_doc: int = -1
  a_start: int = 0
  a_end: int = 0
  b_doc: int = -1
  b_start: int = 0
  b_end: int = 0

  @property
  def segment_ids(self) -> np.ndarray:
    seg = np.zeros(len(self.tokens), np.int32)
    seg[self.num_a:] = 1
    return seg


def random_truncate_pair(tokens_a: list[int], tokens_b: list[int], max_num_tokens: int,
                      rng: random.Random) -> tuple[list[int], list[int]]:
  """The original's truncation: drop from the longer side, front or back at random.

  The original removes one token per loop turn (B when the sides are level) with one
  `rng.random()` draw each. The sides taken follow from the lengths alone: the longer side
  until it is level (B one more), then A and B in turn. So the same draws are made in one
  comprehension and each side's front/back counts read from them (a third less CPU than
  the loop).
  """
  la, lb = len(tokens_a), len(tokens_b)
  excess = la + lb - max_num_tokens
  if excess <= 0:
    return tokens_a, tokens_b
  front = [rng.random() < 0.5 for _ in range(excess)]  # the same draws, in order
  # Turns on the longer side first: A while la > lb; B while lb >= la, which ends one
  # past level. Then they alternate, starting with B when A led and with A when B did.
  if la > lb:
    lead, lead_is_a = min(excess, la - lb), True
  else:
    lead, lead_is_a = min(excess, lb - la + 1), False
  rest = front[lead:]
  a_turns = front[:lead] if lead_is_a else []
  b_turns = [] if lead_is_a else front[:lead]
  a_turns = a_turns + (rest[1::2] if lead_is_a else rest[0::2])
  b_turns = b_turns + (rest[0::2] if lead_is_a else rest[1::2])
  a_front, b_front = sum(a_turns), sum(b_turns)
  return (tokens_a[a_front:la - (len(a_turns) - a_front)],
          tokens_b[b_front:lb - (len(b_turns) - b_front)])


PAIRINGS = ("balanced", "google")


def create_instances_from_document(
    all_documents: Sequence[Sequence[Sequence[int]]], document_index: int,
    max_seq_length: int, short_seq_prob: float, rng: random.Random, *,
    cls_id: int, sep_id: int, doc_ids: Sequence[int] | None = None,
    pairing: str = "google") -> list[Instance]:
  """Sentence pairs of one document; documents are lists of sentences of token ids."""
  document = all_documents[document_index]
  doc_id = lambda i: doc_ids[i] if doc_ids is not None else i  # pylint: disable=unnecessary-lambda-assignment
  balanced = pairing == "balanced"
  if pairing not in PAIRINGS:
    raise ValueError(f"pairing={pairing!r}: use one of {PAIRINGS}.")
  # Account for [CLS], [SEP], [SEP].
  max_num_tokens = max_seq_length - 3

  def draw_target() -> int:
    # Usually fill the whole sequence; sometimes (short_seq_prob) use a shorter one to
    # reduce the mismatch between pre-training and fine-tuning. A target, not a limit.
    if rng.random() < short_seq_prob:
      return rng.randint(2, max_num_tokens)
    return max_num_tokens

  target_seq_length = draw_target()  # google: once per document
  first_chunk = True

  instances = []
  current_chunk: list[Sequence[int]] = []
  current_length = 0
  chunk_start = 0  # index in `document` of current_chunk[0]
  i = 0
  while i < len(document):
    segment = document[i]
    if not current_chunk:
      chunk_start = i
      if balanced and not first_chunk:
        target_seq_length = draw_target()  # balanced: once per chunk
      first_chunk = False
    current_chunk.append(segment)
    current_length += len(segment)
    last = i == len(document) - 1
    if balanced:
      close = last or (current_length >= target_seq_length and len(current_chunk) >= 2
                       and i != len(document) - 2)
      if last and len(current_chunk) < 2:
        break  # a lone last sentence: dropped rather than forced NotNext
    else:
      close = last or current_length >= target_seq_length
    if close:
      if current_chunk:
        # `a_end` is how many segments from `current_chunk` go into A.
        a_end = 1
        if len(current_chunk) >= 2:
          a_end = rng.randint(1, len(current_chunk) - 1)
        tokens_a: list[int] = []
        for j in range(a_end):
          tokens_a.extend(current_chunk[j])

        tokens_b: list[int] = []
        if len(current_chunk) == 1 or rng.random() < 0.5:
          is_random_next = True
          target_b_length = target_seq_length - len(tokens_a)
          # The original stops after 10 draws; see the module docstring.
          random_document_index = document_index
          tries = 0
          while random_document_index == document_index and (
              tries < 10 or len(all_documents) > 1):
            random_document_index = rng.randint(0, len(all_documents) - 1)
            tries += 1
          random_document = all_documents[random_document_index]
          random_start = rng.randint(0, len(random_document) - 1)
          j = random_start
          for j in range(random_start, len(random_document)):
            tokens_b.extend(random_document[j])
            if len(tokens_b) >= target_b_length:
              break
          b_doc, b_start, b_end = doc_id(random_document_index), random_start, j + 1
          # The segments of the chunk not used for A are "put back".
          num_unused_segments = len(current_chunk) - a_end
          i -= num_unused_segments
        else:
          is_random_next = False
          for j in range(a_end, len(current_chunk)):
            tokens_b.extend(current_chunk[j])
          b_doc, b_start, b_end = (doc_id(document_index), chunk_start + a_end,
                                   chunk_start + len(current_chunk))
        tokens_a, tokens_b = random_truncate_pair(tokens_a, tokens_b, max_num_tokens, rng)
        assert tokens_a and tokens_b, "sentences must not be empty"
        tokens = np.array([cls_id, *tokens_a, sep_id, *tokens_b, sep_id], np.int32)
        instances.append(Instance(
            tokens=tokens, num_a=len(tokens_a) + 2, is_random_next=is_random_next,
            a_doc=doc_id(document_index), a_start=chunk_start, a_end=chunk_start + a_end,
            b_doc=b_doc, b_start=b_start, b_end=b_end))
      current_chunk = []
      current_length = 0
    i += 1
  return instances


def create_instances(documents: Sequence[Sequence[Sequence[int]]], doc_ids: Sequence[int],
                     *, max_seq_length: int, short_seq_prob: float, dupe_factor: int,
                     rng: random.Random, cls_id: int, sep_id: int,
                     pairing: str = "google") -> list[Instance]:
  """The original's `create_training_instances` over one window of tokenized documents.

  Shuffles the documents, runs `dupe_factor` passes of `create_instances_from_document`
  over all of them, then shuffles the instances, all with `rng`, as the original does.
  """
  order = list(range(len(documents)))
  rng.shuffle(order)  # = rng.shuffle(all_documents): same draws for the same length.
  docs = [documents[k] for k in order]
  ids = [doc_ids[k] for k in order]
  instances: list[Instance] = []
  for _ in range(dupe_factor):
    for document_index in range(len(docs)):
      instances.extend(create_instances_from_document(
          docs, document_index, max_seq_length, short_seq_prob, rng,
          cls_id=cls_id, sep_id=sep_id, doc_ids=ids, pairing=pairing))
  rng.shuffle(instances)
  return instances


def window_rng(random_seed: int, window_index: int) -> random.Random:
  """The RNG of one window: window 0 uses `random_seed` itself, as the original did."""
  return random.Random(random_seed + 1_000_003 * window_index)


@dataclasses.dataclass(frozen=True)
class PairOptions:
  """The pair-construction flags of the original CLI."""
  max_seq_length: int = 128
  short_seq_prob: float = 0.1
  dupe_factor: int = 10
  random_seed: int = 12345
  pairing: str = "balanced"  # or "google" (see the module docstring)


def window_instances(documents: Sequence[Sequence[str]], first_doc_id: int, window_index: int,
                     tokenizer, options: PairOptions) -> tuple[list[Instance], dict[str, int]]:
  """Tokenizes one window of documents (sentence strings) and builds its instances.

  Sentences that tokenize to nothing are dropped (as the original); a document left with
  fewer than 2 sentences is skipped and counted. Returns (instances, counts).
  """
  flat = [s for doc in documents for s in doc]
  encoded = tokenizer.encode_batch(flat) if flat else []
  max_num_tokens = options.max_seq_length - 3
  counts = {"documents": 0, "tokens": 0, "sentences": 0, "long_sentences": 0,
            "one_sentence_documents": 0, "isolated_documents": 0}
  docs: list[list[list[int]]] = []
  ids: list[int] = []
  k = 0
  for d, doc in enumerate(documents):
    sentences = [s for s in encoded[k:k + len(doc)] if s]
    k += len(doc)
    if len(sentences) < 2:
      counts["one_sentence_documents"] += 1
      continue
    docs.append(sentences)
    ids.append(first_doc_id + d)
    counts["sentences"] += len(sentences)
    counts["tokens"] += sum(len(s) for s in sentences)
    counts["long_sentences"] += sum(len(s) > max_num_tokens for s in sentences)
  if len(docs) < 2:  # nothing to pair with: every pair would be forced NotNext-from-self.
    counts["isolated_documents"] += len(docs)
    return [], counts
  counts["documents"] = len(docs)
  insts = create_instances(
      docs, ids, max_seq_length=options.max_seq_length,
      short_seq_prob=options.short_seq_prob, dupe_factor=options.dupe_factor,
      rng=window_rng(options.random_seed, window_index), cls_id=tokenizer.cls_id,
      sep_id=tokenizer.sep_id, pairing=options.pairing)
  return insts, counts


# --------------------------------------------------------------------------------------
# Record format (one ArrayRecord record per instance): a little-endian header, then the
# token ids as uint16 (vocabularies up to 65,536) or int32.

_VERSION = 1
_FLAG_RANDOM_NEXT = 1
_FLAG_UINT16 = 2
_HEADER = struct.Struct("<BBHqiiqii")  # version, flags, num_a, a_doc, a_start, a_end, b_...


def encode_instance(inst: Instance) -> bytes:
  """Instance -> bytes (one shard record)."""
  small = bool(inst.tokens.size == 0 or int(inst.tokens.max()) < 65536)
  flags = (_FLAG_RANDOM_NEXT if inst.is_random_next else 0) | (_FLAG_UINT16 if small else 0)
  header = _HEADER.pack(_VERSION, flags, inst.num_a, inst.a_doc, inst.a_start, inst.a_end,
                        inst.b_doc, inst.b_start, inst.b_end)
  return header + inst.tokens.astype(np.uint16 if small else np.int32).tobytes()


def decode_instance(record: bytes) -> Instance:
  """bytes -> Instance; raises ValueError on a record of another format."""
  version, flags, num_a, a_doc, a_start, a_end, b_doc, b_start, b_end = (
      _HEADER.unpack_from(record))
  if version != _VERSION:
    raise ValueError(f"shard record version {version}, expected {_VERSION}: rewrite the "
                     "shards with this version of bert_jax.tools.create_pretraining_data.")
  dtype = np.uint16 if flags & _FLAG_UINT16 else np.int32
  tokens = np.frombuffer(record, dtype, offset=_HEADER.size).astype(np.int32)
  return Instance(tokens, num_a, bool(flags & _FLAG_RANDOM_NEXT),
                  a_doc, a_start, a_end, b_doc, b_start, b_end)


def decode_batch(records: Sequence[bytes], max_seq_length: int) -> dict[str, np.ndarray]:
  """Records -> padded `input_ids`, `attention_mask`, `token_type_ids`, `next_sentence_labels`."""
  b = len(records)
  input_ids = np.zeros((b, max_seq_length), np.int32)
  lengths = np.zeros(b, np.int32)
  num_a = np.zeros(b, np.int32)
  labels = np.zeros(b, np.int32)
  for r, record in enumerate(records):
    version, flags, na = _HEADER.unpack_from(record)[:3]
    if version != _VERSION:
      decode_instance(record)  # raises the clear error
    tokens = np.frombuffer(record, np.uint16 if flags & _FLAG_UINT16 else np.int32,
                           offset=_HEADER.size)
    if len(tokens) > max_seq_length:
      raise ValueError(f"a shard record has {len(tokens)} tokens > max_seq_length="
                       f"{max_seq_length}: the shards were written for a longer "
                       "--max_seq_length; set config.data.max_seq_length to match.")
    input_ids[r, :len(tokens)] = tokens
    lengths[r] = len(tokens)
    num_a[r] = na
    labels[r] = flags & _FLAG_RANDOM_NEXT
  pos = np.arange(max_seq_length)[None, :]
  attention_mask = (pos < lengths[:, None]).astype(np.int32)
  token_type_ids = ((pos >= num_a[:, None]) & (attention_mask > 0)).astype(np.int32)
  return {"input_ids": input_ids, "attention_mask": attention_mask,
          "token_type_ids": token_type_ids,
          "next_sentence_labels": labels, "lengths": lengths}
