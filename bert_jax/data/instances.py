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

import collections.abc
import contextlib
import dataclasses
import gc
from itertools import chain
import random
import struct
from typing import Sequence

import numpy as np


class Instance:
  """One sentence pair: `[CLS] A [SEP] B [SEP]` token ids, unmasked.

  Pairing makes instances as spans of its window's flat token array (`from_spans`): the
  ids are copied only when `tokens` is asked for.
  """
  __slots__ = ("_tokens", "num_a", "is_random_next", "a_doc", "a_start", "a_end",
               "b_doc", "b_start", "b_end", "_spans")

  def __init__(self, tokens: np.ndarray, num_a: int, is_random_next: bool,
               a_doc: int = -1, a_start: int = 0, a_end: int = 0,
               b_doc: int = -1, b_start: int = 0, b_end: int = 0):
    self._tokens = tokens  # int32 [n]
    self.num_a = num_a  # len(A) + 2: tokens[:num_a] have segment id 0, the rest 1.
    self.is_random_next = is_random_next  # next_sentence_labels: 1 = NotNext, 0 = IsNext.
    # Provenance: A is (a piece of) sentences [a_start, a_end) of document a_doc, B of
    # sentences [b_start, b_end) of document b_doc (document ids count from 0 over the input).
    self.a_doc, self.a_start, self.a_end = a_doc, a_start, a_end
    self.b_doc, self.b_start, self.b_end = b_doc, b_start, b_end
    self._spans = None  # (window, a_lo, a_hi, b_lo, b_hi): see from_spans

  @classmethod
  def from_spans(cls, window: "WindowTokens", a: tuple[int, int], b: tuple[int, int],
                 is_random_next: bool, provenance: tuple[int, ...]) -> "Instance":
    """A = window.tokens[a[0]:a[1]], B = window.tokens[b[0]:b[1]]."""
    inst = cls(None, a[1] - a[0] + 2, is_random_next, *provenance)
    inst._spans = (window, a[0], a[1], b[0], b[1])
    return inst

  @property
  def tokens(self) -> np.ndarray:
    if self._tokens is None:
      w, a_lo, a_hi, b_lo, b_hi = self._spans
      t = w.tokens
      self._tokens = np.concatenate([[w.cls_id], t[a_lo:a_hi], [w.sep_id], t[b_lo:b_hi],
                                     [w.sep_id]]).astype(np.int32)
    return self._tokens

  @property
  def num_tokens(self) -> int:
    if self._tokens is None:
      _, a_lo, a_hi, b_lo, b_hi = self._spans
      return a_hi - a_lo + b_hi - b_lo + 3
    return len(self._tokens)

  @property
  def segment_ids(self) -> np.ndarray:
    seg = np.zeros(self.num_tokens, np.int32)
    seg[self.num_a:] = 1
    return seg

  def __repr__(self) -> str:
    return (f"Instance(tokens={self.tokens.tolist()}, num_a={self.num_a}, "
            f"is_random_next={self.is_random_next}, a=doc {self.a_doc} "
            f"[{self.a_start}, {self.a_end}), b=doc {self.b_doc} [{self.b_start}, {self.b_end}))")


@dataclasses.dataclass
class WindowTokens:
  """A window's documents as one flat id array: sentence i of document d is
  tokens[offsets[d][i]:offsets[d][i + 1]] (offsets: Python ints, one list per document)."""
  tokens: np.ndarray  # uint16 (vocabularies up to 65,536 ids) or int32
  offsets: list[list[int]]
  cls_id: int
  sep_id: int

  @classmethod
  def of(cls, documents: "Sequence[Sequence[Sequence[int]]] | WindowTokens", *, cls_id: int,
         sep_id: int) -> "WindowTokens":
    """`documents` itself if it is one, else `from_documents`."""
    if isinstance(documents, WindowTokens):
      return documents
    return cls.from_documents(documents, cls_id=cls_id, sep_id=sep_id)

  @classmethod
  def from_documents(cls, documents: Sequence[Sequence[Sequence[int]]], *, cls_id: int,
                     sep_id: int) -> "WindowTokens":
    """Documents as lists of sentences of ids -> one flat array."""
    offsets, total = [], 0
    for doc in documents:
      off = [total]
      for sentence in doc:
        total += len(sentence)
        off.append(total)
      offsets.append(off)
    flat = np.fromiter(chain.from_iterable(chain.from_iterable(documents)), np.int64,
                       count=total)
    return cls(_compact(flat), offsets, cls_id, sep_id)

  def __len__(self) -> int:
    return len(self.offsets)  # documents


def _compact(ids: np.ndarray) -> np.ndarray:
  """uint16 when every id (and so the record format) fits, else int32."""
  small = ids.size == 0 or (int(ids.min()) >= 0 and int(ids.max()) < 65536)
  return ids.astype(np.uint16 if small else np.int32)


def truncation_counts(la: int, lb: int, max_num_tokens: int,
                      rng: random.Random) -> tuple[int, int, int, int]:
  """The original's truncate_seq_pair as counts: (A front, A back, B front, B back) tokens
  removed so that la + lb <= max_num_tokens.

  The original removes one token per loop turn from the longer side (B when the sides are
  level), front or back by one `rng.random()` draw each. The sides taken follow from the
  lengths alone: the longer side until it is level (B one more), then A and B in turn.
  `rng.random() < 0.5` is "the first of its two 32-bit Mersenne Twister words is below
  2^31", so the draws are made by one `getrandbits` of the same words (bit 64i + 31 is draw
  i's answer) and each side's fronts counted with a mask of its turns.
  """
  excess = la + lb - max_num_tokens
  if excess <= 0:
    return 0, 0, 0, 0
  if la > lb:  # the leading side's turns: [0, lead), then every other one after it
    lead = min(excess, la - lb)
  else:
    lead = min(excess, lb - la + 1)
  lead_turns, other_turns = lead + (excess - lead) // 2, (excess - lead + 1) // 2
  if excess <= _MAX_MASKED_DRAWS:
    bits = rng.getrandbits(64 * excess)
    lead_mask = _first_draws(_EVERY_DRAW, lead) | (
        _first_draws(_EVEN_DRAWS, excess - lead - 1) << (64 * (lead + 1)))
    other_mask = _first_draws(_EVEN_DRAWS, excess - lead) << (64 * lead)
    # A set bit is a draw >= 0.5: a token from the back.
    lead_front = lead_turns - (bits & lead_mask).bit_count()
    other_front = other_turns - (bits & other_mask).bit_count()
  else:  # a very long sentence: draw by draw
    draw = rng.random
    front = [draw() < 0.5 for _ in range(excess)]
    lead_front = sum(front[:lead]) + sum(front[lead + 1::2])
    other_front = sum(front[lead::2])
  if la > lb:
    return lead_front, lead_turns - lead_front, other_front, other_turns - other_front
  return other_front, other_turns - other_front, lead_front, lead_turns - lead_front


_MAX_MASKED_DRAWS = 4096
# Bit 64i + 31 (draw i's answer in getrandbits(64 * n)) for every draw, and every even one.
_EVERY_DRAW = int.from_bytes(b"\0\0\0\x80\0\0\0\0" * _MAX_MASKED_DRAWS, "little")
_EVEN_DRAWS = int.from_bytes((b"\0\0\0\x80" + b"\0" * 12) * (_MAX_MASKED_DRAWS // 2), "little")


def _first_draws(mask: int, n: int) -> int:
  """`mask` limited to draws [0, n)."""
  return mask & ((1 << (64 * n)) - 1) if n > 0 else 0


def random_truncate_pair(tokens_a: list[int], tokens_b: list[int], max_num_tokens: int,
                         rng: random.Random) -> tuple[list[int], list[int]]:
  """The original's truncation on token lists (see `truncation_counts`)."""
  la, lb = len(tokens_a), len(tokens_b)
  a_front, a_back, b_front, b_back = truncation_counts(la, lb, max_num_tokens, rng)
  return tokens_a[a_front:la - a_back], tokens_b[b_front:lb - b_back]


def randint(rng: random.Random, a: int, b: int) -> int:
  """`rng.randint(a, b)`: the same draw and result (CPython's randrange is a +
  _randbelow(b - a + 1) for these arguments; tests check it), minus two calls' checks."""
  return a + rng._randbelow(b - a + 1)  # pylint: disable=protected-access


PAIRINGS = ("balanced", "google")


def create_instances_from_document(
    all_documents: Sequence[Sequence[Sequence[int]]] | WindowTokens, document_index: int,
    max_seq_length: int, short_seq_prob: float, rng: random.Random, *,
    cls_id: int, sep_id: int, doc_ids: Sequence[int] | None = None,
    pairing: str = "google") -> list[Instance]:
  """Sentence pairs of one document; documents are lists of sentences of token ids (or a
  `WindowTokens`, which is what `create_instances` passes: no ids are copied)."""
  if pairing not in PAIRINGS:
    raise ValueError(f"pairing={pairing!r}: use one of {PAIRINGS}.")
  window = WindowTokens.of(all_documents, cls_id=cls_id, sep_id=sep_id)
  rows: list[tuple[int, ...]] = []
  _pair_document(window, document_index, max_seq_length, short_seq_prob, rng, doc_ids,
                 pairing == "balanced", rows)
  return list(Pairs(window, rows))


def _pair_document(window: WindowTokens, document_index: int, max_seq_length: int,
                   short_seq_prob: float, rng: random.Random, doc_ids: Sequence[int] | None,
                   balanced: bool, out: list[tuple[int, ...]]) -> None:
  """The pairing loop over sentence boundaries: A and B are spans of the window's ids;
  appends one `Pairs` row per pair to `out`."""
  all_offsets = window.offsets
  off = all_offsets[document_index]
  n = len(off) - 1  # sentences in the document
  doc_id = (lambda i: doc_ids[i]) if doc_ids is not None else (lambda i: i)  # pylint: disable=unnecessary-lambda-assignment
  # Account for [CLS], [SEP], [SEP].
  max_num_tokens = max_seq_length - 3

  def draw_target() -> int:
    # Usually fill the whole sequence; sometimes (short_seq_prob) use a shorter one to
    # reduce the mismatch between pre-training and fine-tuning. A target, not a limit.
    if rng.random() < short_seq_prob:
      return randint(rng, 2, max_num_tokens)
    return max_num_tokens

  target_seq_length = draw_target()  # google: once per document
  first_chunk = True

  chunk_size = 0  # sentences in the current chunk
  current_length = 0
  chunk_start = 0  # index in the document of the chunk's first sentence
  i = 0
  while i < n:
    if not chunk_size:
      chunk_start = i
      if balanced and not first_chunk:
        target_seq_length = draw_target()  # balanced: once per chunk
      first_chunk = False
    chunk_size += 1
    current_length += off[i + 1] - off[i]
    last = i == n - 1
    if balanced:
      close = last or (current_length >= target_seq_length and chunk_size >= 2
                       and i != n - 2)
      if last and chunk_size < 2:
        break  # a lone last sentence: dropped rather than forced NotNext
    else:
      close = last or current_length >= target_seq_length
    if close:
      # `a_end` is how many sentences of the chunk go into A.
      a_end = 1
      if chunk_size >= 2:
        a_end = randint(rng, 1, chunk_size - 1)
      a_lo, a_hi = off[chunk_start], off[chunk_start + a_end]
      if chunk_size == 1 or rng.random() < 0.5:
        is_random_next = True
        target_b_length = target_seq_length - (a_hi - a_lo)
        # The original stops after 10 draws; see the module docstring.
        random_document_index = document_index
        tries = 0
        while random_document_index == document_index and (
            tries < 10 or len(all_offsets) > 1):
          random_document_index = randint(rng, 0, len(all_offsets) - 1)
          tries += 1
        r_off = all_offsets[random_document_index]
        random_start = randint(rng, 0, len(r_off) - 2)
        b_lo = r_off[random_start]
        # Sentences from random_start until B reaches its target (or the document ends).
        j = random_start
        while j < len(r_off) - 2 and r_off[j + 1] - b_lo < target_b_length:
          j += 1
        b_hi = r_off[j + 1]
        provenance_b = (doc_id(random_document_index), random_start, j + 1)
        # The sentences of the chunk not used for A are "put back".
        i -= chunk_size - a_end
      else:
        is_random_next = False
        b_lo, b_hi = a_hi, off[chunk_start + chunk_size]
        provenance_b = (doc_id(document_index), chunk_start + a_end, chunk_start + chunk_size)
      a_front, a_back, b_front, b_back = truncation_counts(a_hi - a_lo, b_hi - b_lo,
                                                           max_num_tokens, rng)
      a_lo, a_hi, b_lo, b_hi = a_lo + a_front, a_hi - a_back, b_lo + b_front, b_hi - b_back
      assert a_hi > a_lo and b_hi > b_lo, "sentences must not be empty"
      out.append((a_lo, a_hi, b_lo, b_hi, is_random_next, doc_id(document_index),
                  chunk_start, chunk_start + a_end, *provenance_b))
      chunk_size = 0
      current_length = 0
    i += 1


def create_instances(documents: Sequence[Sequence[Sequence[int]]] | WindowTokens,
                     doc_ids: Sequence[int], *, max_seq_length: int, short_seq_prob: float,
                     dupe_factor: int, rng: random.Random, cls_id: int, sep_id: int,
                     pairing: str = "google") -> list[Instance]:
  """The original's `create_training_instances` over one window of tokenized documents
  (lists of sentences of ids, or a `WindowTokens`); see `pair_window`."""
  window = WindowTokens.of(documents, cls_id=cls_id, sep_id=sep_id)
  return list(pair_window(window, doc_ids, max_seq_length=max_seq_length,
                          short_seq_prob=short_seq_prob, dupe_factor=dupe_factor, rng=rng,
                          pairing=pairing))


def pair_window(window: WindowTokens, doc_ids: Sequence[int], *, max_seq_length: int,
                short_seq_prob: float, dupe_factor: int, rng: random.Random,
                pairing: str = "google") -> "Pairs":
  """Shuffles the documents, runs `dupe_factor` passes of `create_instances_from_document`
  over all of them, then shuffles the pairs, all with `rng`, as the original's
  `create_training_instances` does."""
  if pairing not in PAIRINGS:
    raise ValueError(f"pairing={pairing!r}: use one of {PAIRINGS}.")
  order = list(range(len(window.offsets)))
  rng.shuffle(order)  # = rng.shuffle(all_documents): same draws for the same length.
  shuffled = WindowTokens(window.tokens, [window.offsets[k] for k in order], window.cls_id,
                          window.sep_id)
  ids = [doc_ids[k] for k in order]
  rows: list[tuple[int, ...]] = []
  for _ in range(dupe_factor):
    for document_index in range(len(order)):
      _pair_document(shuffled, document_index, max_seq_length, short_seq_prob, rng, ids,
                     pairing == "balanced", rows)
  rng.shuffle(rows)  # the same draws as shuffling a list of instances of that length
  return Pairs(window, rows)


class Pairs(collections.abc.Sequence):
  """A window's pairs as one table (row i: A and B spans, NSP label, provenance), a
  sequence of `Instance`s made on access; `records()` encodes them all at once."""

  def __init__(self, window: WindowTokens, rows: Sequence[tuple[int, ...]]):
    self.window = window
    # a_lo, a_hi, b_lo, b_hi, is_random_next, a_doc, a_start, a_end, b_doc, b_start, b_end
    self.rows = np.array(rows, np.int64).reshape(-1, 11)

  def __len__(self) -> int:
    return len(self.rows)

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [self[k] for k in range(*i.indices(len(self)))]
    a_lo, a_hi, b_lo, b_hi, nsp, *provenance = self.rows[i].tolist()
    return Instance.from_spans(self.window, (a_lo, a_hi), (b_lo, b_hi), bool(nsp),
                               tuple(provenance))

  @property
  def is_random_next(self) -> np.ndarray:
    return self.rows[:, 4].astype(bool)

  @property
  def num_tokens(self) -> np.ndarray:
    r = self.rows
    return r[:, 1] - r[:, 0] + r[:, 3] - r[:, 2] + 3

  def records(self) -> list[bytes]:
    """Every pair's shard record (as `encode_instance`): the headers packed as one numpy
    structured array, the ids sliced from the window's array."""
    w = self.window
    if not len(self) or w.tokens.dtype != np.uint16 or max(w.cls_id, w.sep_id) >= 65536:
      return [encode_instance(inst) for inst in self]
    r = self.rows
    header = np.zeros(len(r), _HEADER_DTYPE)
    header["version"] = _VERSION
    header["flags"] = _FLAG_UINT16 | np.where(r[:, 4] > 0, _FLAG_RANDOM_NEXT, 0)
    header["num_a"] = r[:, 1] - r[:, 0] + 2
    for k, name in enumerate(("a_doc", "a_start", "a_end", "b_doc", "b_start", "b_end")):
      header[name] = r[:, 5 + k]
    headers, size = header.tobytes(), _HEADER.size
    t, cls, sep = w.tokens, _NATIVE_U16.pack(w.cls_id), _NATIVE_U16.pack(w.sep_id)
    join = b"".join
    return [join((headers[size * i:size * (i + 1)], cls, t[a_lo:a_hi].tobytes(), sep,
                  t[b_lo:b_hi].tobytes(), sep))
            for i, (a_lo, a_hi, b_lo, b_hi) in enumerate(r[:, :4].tolist())]


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
                     tokenizer, options: PairOptions) -> tuple[Pairs, dict[str, int]]:
  """Tokenizes one window of documents (sentence strings) and builds its instances.

  Sentences that tokenize to nothing are dropped (as the original); a document left with
  fewer than 2 sentences is skipped and counted. Returns (instances, counts).
  """
  with _gc_paused():
    return _window_instances(documents, first_doc_id, window_index, tokenizer, options)


@contextlib.contextmanager
def _gc_paused():
  """Python's cycle collector off while a window's millions of word lists and instances are
  made (none holds a cycle): its full passes over them cost a quarter of tokenization."""
  enabled = gc.isenabled()
  gc.disable()
  try:
    yield
  finally:
    if enabled:
      gc.enable()


def _window_instances(documents, first_doc_id, window_index, tokenizer, options):
  flat = [s for doc in documents for s in doc]
  ids, bounds = encode_flat(tokenizer, flat)
  max_num_tokens = options.max_seq_length - 3
  counts = {"documents": 0, "tokens": 0, "sentences": 0, "long_sentences": 0,
            "one_sentence_documents": 0, "isolated_documents": 0}
  offsets: list[list[int]] = []
  doc_ids: list[int] = []
  k = 0
  for d, doc in enumerate(documents):
    # A sentence that tokenizes to nothing has a start equal to its end: dropping repeated
    # boundaries drops it.
    off = np.unique(bounds[k:k + len(doc) + 1])
    k += len(doc)
    if len(off) < 3:
      counts["one_sentence_documents"] += 1
      continue
    offsets.append(off.tolist())
    doc_ids.append(first_doc_id + d)
    counts["sentences"] += len(off) - 1
    counts["tokens"] += int(off[-1] - off[0])
    counts["long_sentences"] += int((np.diff(off) > max_num_tokens).sum())
  if len(offsets) < 2:  # nothing to pair with: every pair would be forced NotNext-from-self.
    counts["isolated_documents"] += len(offsets)
    return Pairs(WindowTokens(np.zeros(0, np.uint16), [], tokenizer.cls_id,
                              tokenizer.sep_id), []), counts
  counts["documents"] = len(offsets)
  window = WindowTokens(_compact(ids), offsets, tokenizer.cls_id, tokenizer.sep_id)
  pairs = pair_window(
      window, doc_ids, max_seq_length=options.max_seq_length,
      short_seq_prob=options.short_seq_prob, dupe_factor=options.dupe_factor,
      rng=window_rng(options.random_seed, window_index), pairing=options.pairing)
  return pairs, counts


def encode_flat(tokenizer, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """(ids, bounds): the ids of all texts in one array, text i = ids[bounds[i]:bounds[i+1]].
  The tokenizer's own `encode_flat` where it has one (no Python list per text)."""
  if hasattr(tokenizer, "encode_flat"):
    return tokenizer.encode_flat(texts)
  encoded = tokenizer.encode_batch(list(texts)) if texts else []
  bounds = np.zeros(len(encoded) + 1, np.int64)
  np.cumsum([len(e) for e in encoded], out=bounds[1:])
  ids = np.fromiter(chain.from_iterable(encoded), np.int64, count=int(bounds[-1]))
  return ids, bounds


# --------------------------------------------------------------------------------------
# Record format (one ArrayRecord record per instance): a little-endian header, then the
# token ids as uint16 (vocabularies up to 65,536) or int32.

_VERSION = 1
_FLAG_RANDOM_NEXT = 1
_FLAG_UINT16 = 2
_HEADER = struct.Struct("<BBHqiiqii")  # version, flags, num_a, a_doc, a_start, a_end, b_...
_NATIVE_U16 = struct.Struct("=H")  # one id as numpy's uint16 tobytes() writes it
_HEADER_DTYPE = np.dtype([("version", "u1"), ("flags", "u1"), ("num_a", "<u2"),
                          ("a_doc", "<i8"), ("a_start", "<i4"), ("a_end", "<i4"),
                          ("b_doc", "<i8"), ("b_start", "<i4"), ("b_end", "<i4")])
assert _HEADER_DTYPE.itemsize == _HEADER.size


def encode_instance(inst: Instance) -> bytes:
  """Instance -> bytes (one shard record); `Pairs.records` writes a window's at once."""
  tokens = inst.tokens
  small = bool(tokens.size == 0 or int(tokens.max()) < 65536)
  flags = (_FLAG_RANDOM_NEXT if inst.is_random_next else 0) | (_FLAG_UINT16 if small else 0)
  header = _HEADER.pack(_VERSION, flags, inst.num_a, inst.a_doc, inst.a_start, inst.a_end,
                        inst.b_doc, inst.b_start, inst.b_end)
  return header + tokens.astype(np.uint16 if small else np.int32).tobytes()


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
  """Records -> padded `input_ids`, `attention_mask`, `token_type_ids`, `next_sentence_labels`.

  Records of uint16 ids (every vocabulary up to 65,536 tokens) are decoded together from
  one joined buffer; a batch holding another kind of record is decoded one by one.
  """
  b = len(records)
  sizes = np.fromiter(map(len, records), np.int64, count=b)
  if b == 0 or sizes.min() < _HEADER.size:
    return _decode_each(records, max_seq_length)
  buffer = np.frombuffer(b"".join(records), np.uint8)
  starts = np.concatenate([[0], np.cumsum(sizes[:-1])])
  version, flags = buffer[starts], buffer[starts + 1]
  if (version != _VERSION).any() or (flags & _FLAG_UINT16 == 0).any() or (sizes % 2).any():
    return _decode_each(records, max_seq_length)
  lengths = (sizes - _HEADER.size) // 2
  if lengths.max() > max_seq_length:
    raise _too_long(int(lengths.max()), max_seq_length)
  num_a = buffer[starts + 2].astype(np.int32) | (buffer[starts + 3].astype(np.int32) << 8)
  # Every record and header has an even size, so each record's ids are aligned uint16s:
  # all of them in order are the buffer's uint16s outside the headers, and they fill the
  # rows' first `lengths` places in row-major order.
  ids16 = buffer.view(np.uint16)
  is_id = np.ones(len(ids16), bool)
  is_id[(starts[:, None] // 2 + np.arange(_HEADER.size // 2)).reshape(-1)] = False
  input_ids = np.zeros((b, max_seq_length), np.int32)
  input_ids[np.arange(max_seq_length)[None, :] < lengths[:, None]] = ids16[is_id]
  return _padded(input_ids, lengths.astype(np.int32), num_a,
                 (flags & _FLAG_RANDOM_NEXT).astype(np.int32))


def _too_long(n: int, max_seq_length: int) -> ValueError:
  return ValueError(f"a shard record has {n} tokens > max_seq_length={max_seq_length}: the "
                    "shards were written for a longer --max_seq_length; set "
                    "config.data.max_seq_length to match.")


def _decode_each(records: Sequence[bytes], max_seq_length: int) -> dict[str, np.ndarray]:
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
      raise _too_long(len(tokens), max_seq_length)
    input_ids[r, :len(tokens)] = tokens
    lengths[r] = len(tokens)
    num_a[r] = na
    labels[r] = flags & _FLAG_RANDOM_NEXT
  return _padded(input_ids, lengths, num_a, labels)


def _padded(input_ids, lengths, num_a, labels) -> dict[str, np.ndarray]:
  pos = np.arange(input_ids.shape[1])[None, :]
  attention_mask = (pos < lengths[:, None]).astype(np.int32)
  token_type_ids = ((pos >= num_a[:, None]) & (attention_mask > 0)).astype(np.int32)
  return {"input_ids": input_ids, "attention_mask": attention_mask,
          "token_type_ids": token_type_ids,
          "next_sentence_labels": labels, "lengths": lengths}
