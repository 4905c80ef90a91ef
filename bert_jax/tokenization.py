"""WordPiece (BERT vocab.txt) and SentencePiece tokenizers behind one interface.

WordPiece gives exactly the ids of the reference, Hugging Face's slow Python
`BertTokenizer` (`BertTokenizerLegacy` in transformers 5; Google's original
`tokenization.py` plus NFC and special-token splitting): special tokens written in the
text ("[MASK]") stay whole; control characters are dropped; CJK characters split; text is
NFC-normalised; uncased vocabularies lower-case and strip accents (cased ones keep both);
punctuation splits; words over 100 characters become [UNK].

The greedy WordPiece lookup runs in Hugging Face `tokenizers` (Rust). Its own BERT
normaliser differs from the reference on rare inputs (final sigma, NFC, characters of
Unicode versions Python does not know, which Python treats as control characters), so
the basic tokenization before it is done here with Python's `unicodedata` — the same
tables the reference uses — as whole-string C-level operations (str.translate,
str.lower, unicodedata.normalize) rather than a per-character loop.
"""
from __future__ import annotations

import re
import threading
import unicodedata
from itertools import chain
from typing import Protocol, Sequence

import numpy as np

from bert_jax import paths

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Words whose WordPiece ids a WordPieceTokenizer keeps (~100 MB at most; a book has ~20k).
WORD_CACHE_SIZE = 500_000


class TokenizerError(ValueError):
  """A vocabulary file is missing or unusable; the message names the file and the fix."""


class Tokenizer(Protocol):
  """What data pipelines and tasks need from a tokenizer."""
  vocab_size: int
  pad_id: int
  unk_id: int
  cls_id: int
  sep_id: int
  mask_id: int

  def tokenize(self, text: str) -> list[str]: ...
  def encode(self, text: str) -> list[int]: ...
  def decode(self, ids: Sequence[int]) -> str: ...
  def convert_tokens_to_ids(self, tokens: Sequence[str]) -> list[int]: ...
  def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]: ...
  def is_word_start(self, token: str) -> bool: ...


def read_vocab(vocab_file: str) -> dict[str, int]:
  """vocab.txt (one token per line, line number = id) -> {token: id}."""
  if not vocab_file or not paths.is_file(vocab_file):
    raise TokenizerError(
        f"vocabulary file not found: {vocab_file!r}; pass --config.vocab_file=PATH/vocab.txt "
        "(a BERT WordPiece vocab) or a SentencePiece .model file.")
  vocab: dict[str, int] = {}
  try:
    text = paths.read_text(vocab_file)
  except UnicodeDecodeError as e:
    raise TokenizerError(
        f"{vocab_file} is not a UTF-8 vocab.txt ({e.reason} at byte {e.start}): a "
        "SentencePiece model must keep its .model suffix to be read as one.") from None
  for i, line in enumerate(text.split("\n")):
    token = line.rstrip("\r")
    if token:
      vocab[token] = i  # a repeated line takes the later id, as the reference.
  missing = [t for t in SPECIAL_TOKENS if t not in vocab]
  if missing:
    raise TokenizerError(
        f"{vocab_file}: special token(s) {missing} are not in the vocabulary; a BERT "
        "vocab.txt must contain [PAD] [UNK] [CLS] [SEP] [MASK].")
  return vocab


# ---------------------------------------------------------------------------------------
# BERT's basic tokenization (the reference's BasicTokenizer), on whole strings.
# ---------------------------------------------------------------------------------------

# CJK Unified Ideographs blocks the reference surrounds with spaces (not Hangul or kana).
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
# Special tokens written in the text are kept whole, as the reference's added-token split.
_SPECIAL_RE = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS) + ")")


class _CharMaps:
  """str.translate tables of the reference's character classes, filled per new character.

  Classifying all 1.1M code points up front costs seconds; a corpus uses a few thousand,
  so each is classified (with this Python's unicodedata, as the reference) when first seen.
  """

  def __init__(self):
    self.known: set[str] = set()
    self.clean: dict[int, str | None] = {}  # control -> dropped, whitespace -> " ", CJK -> " c "
    self.punct: dict[int, str] = {}  # punctuation -> " c "
    self.punct_mark: dict[int, str | None] = {}  # + non-spacing marks dropped (uncased)
    self.learn("".join(map(chr, range(128))))

  def learn(self, text: str) -> None:
    for ch in set(text).difference(self.known):
      cp, cat = ord(ch), unicodedata.category(ch)
      if cp == 0 or cp == 0xFFFD or (cat[0] == "C" and ch not in "\t\n\r"):
        self.clean[cp] = None
      elif ch in " \t\n\r" or cat == "Zs":
        self.clean[cp] = " "
      elif any(a <= cp <= b for a, b in _CJK_RANGES):
        self.clean[cp] = f" {ch} "
      if (33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126
          or cat[0] == "P"):
        self.punct[cp] = self.punct_mark[cp] = f" {ch} "
      elif cat == "Mn":
        self.punct_mark[cp] = None
      self.known.add(ch)


_CHAR_MAPS = _CharMaps()

# Printable ASCII without "[" (no special token), plus tab / CR / LF: no character to drop,
# compose or strip, every non-alphanumeric printable is punctuation, and whitespace is what
# str.split() splits on; so the words are the runs of letters and digits and each other
# non-space character on its own.
_NOT_PLAIN_ASCII = re.compile(r"[^\x20-\x5a\x5c-\x7e\t\n\r]")
_PLAIN_WORDS = re.compile(r"[a-z0-9]+|\S")
_PLAIN_WORDS_CASED = re.compile(r"[A-Za-z0-9]+|\S")


def basic_tokenize(text: str, do_lower_case: bool = True) -> list[str]:
  """BERT's BasicTokenizer: text -> words, before WordPiece (ids equal the reference's).

  Clean (drop control characters, whitespace -> " "), space out CJK characters, NFC,
  split on whitespace, lower-case and strip accents (NFD, drop Mn) if uncased, split off
  punctuation. Special tokens ([MASK], ...) written in the text stay one word.
  """
  if not _NOT_PLAIN_ASCII.search(text):  # most text: the same rules as one regex, 1.5x faster
    return _PLAIN_WORDS.findall(text.lower()) if do_lower_case else _PLAIN_WORDS_CASED.findall(text)
  words: list[str] = []
  for i, part in enumerate(_SPECIAL_RE.split(text)):
    if i % 2:
      words.append(part)
    elif part:
      words.extend(_basic_words(part, do_lower_case))
  return words


def _basic_words(text: str, do_lower_case: bool) -> list[str]:
  m = _CHAR_MAPS
  ascii_only = text.isascii()
  if not ascii_only:
    m.learn(text)
  text = text.translate(m.clean)
  if not ascii_only:
    text = unicodedata.normalize("NFC", text)
  if "[" in text:  # A special token made whole only by cleaning stays whole, as the reference.
    words = text.split()
    if any(w in SPECIAL_TOKENS for w in words):
      return [x for w in words
              for x in ([w] if w in SPECIAL_TOKENS else _basic_words(w, do_lower_case))]
  table = m.punct
  if do_lower_case:
    # Lower-casing the whole string equals the reference's per-word lower(): words are
    # separated by spaces, which end a word for Python's final-sigma rule as well.
    text = text.lower()
    table = m.punct_mark
    if not ascii_only:
      text = unicodedata.normalize("NFD", text)
  if not ascii_only:
    m.learn(text)  # NFC / NFD / lower() can produce characters not seen yet.
  return text.translate(table).split()


# The reference's clean_up_tokenization after decoding, in its order.
_DECODE_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                   (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"),
                   (" 're", "'re"))


class _PieceTable:
  """Words -> their WordPiece ids, as an index into flat arrays that only grow.

  Writers (under the tokenizer's lock) fill the arrays before a word enters `index`, and
  a grown array keeps every earlier entry, so a reader that looked its words up first and
  reads the arrays after sees valid entries without a lock.
  """

  def __init__(self):
    self.index: dict[str, int] = {}
    self.starts = np.zeros(1024, np.int64)  # per word: its first id in `pieces`
    self.lengths = np.zeros(1024, np.int32)  # per word: how many ids
    self.pieces = np.zeros(4096, np.int32)
    self._num_pieces = 0

  def add(self, words: list[str], flat: np.ndarray, lengths: np.ndarray) -> None:
    """words[k]'s ids are the next lengths[k] entries of `flat`."""
    n0, p0 = len(self.index), self._num_pieces
    n1, p1 = n0 + len(words), p0 + len(flat)
    starts, lens, pieces = self.starts, self.lengths, self.pieces
    if n1 > len(starts):
      starts = np.resize(starts, max(n1, 2 * len(starts)))
      lens = np.resize(lens, len(starts))
    if p1 > len(pieces):
      pieces = np.resize(pieces, max(p1, 2 * len(pieces)))
    pieces[p0:p1] = flat
    starts[n0:n1] = p0 + np.cumsum(lengths, dtype=np.int64) - lengths
    lens[n0:n1] = lengths
    self.starts, self.lengths, self.pieces, self._num_pieces = starts, lens, pieces, p1
    self.index.update(zip(words, range(n0, n1)))

  def gather(self, word_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids of the words in order, int32; bounds: word k's ids are ids[b[k]:b[k + 1]])."""
    lens = self.lengths[word_index]
    total = int(lens.sum(dtype=np.int64))
    dtype = np.int32 if max(total, self._num_pieces) < 2**31 - 1 else np.int64  # less memory
    bounds = np.zeros(len(word_index) + 1, dtype)
    np.cumsum(lens, out=bounds[1:])
    # Output id j of word k is table entry starts[k] + (j - bounds[k]).
    at = self.starts[word_index].astype(dtype)
    at -= bounds[:-1]
    at = np.repeat(at, lens)
    at += np.arange(total, dtype=dtype)
    return self.pieces[at], bounds


class WordPieceTokenizer:
  """BERT's FullTokenizer (basic + WordPiece) from a vocab.txt."""

  def __init__(self, vocab_file: str, do_lower_case: bool = True):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers

    self.vocab_file = vocab_file
    self.do_lower_case = do_lower_case
    self.vocab = read_vocab(vocab_file)
    self.inv_vocab = {i: t for t, i in self.vocab.items()}
    # Rust runs only the greedy longest-match WordPiece on our space-joined words (words
    # hold no whitespace, so its whitespace split gives back exactly our words).
    tok = HFTokenizer(models.WordPiece(vocab=self.vocab, unk_token="[UNK]",
                                       max_input_chars_per_word=100))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    self._tok = tok
    self._pieces = _PieceTable()  # word -> its WordPiece ids (encode_batch, encode_flat)
    self._pieces_lock = threading.Lock()
    self.vocab_size = max(self.vocab.values()) + 1
    self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
        self.vocab[t] for t in SPECIAL_TOKENS)

  def tokenize(self, text: str) -> list[str]:
    return self._tok.encode(" ".join(basic_tokenize(text, self.do_lower_case)),
                            add_special_tokens=False).tokens

  def encode(self, text: str) -> list[int]:
    return self.encode_batch([text])[0]

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """Many texts at once (see `encode_flat`): a list of ids per text."""
    ids, bounds = self.encode_flat(texts)
    flat, b = ids.tolist(), bounds.tolist()
    return [flat[b[i]:b[i + 1]] for i in range(len(texts))]

  def encode_flat(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(ids, bounds): the ids of all texts in one int32 array, text i's are
    ids[bounds[i]:bounds[i + 1]].

    Basic tokenization, then each word's WordPiece ids from a cache: a word's ids depend
    on the word alone, and a corpus repeats a few tens of thousands of words millions of
    times, so Rust splits only words not seen before, and the rest is one dict lookup per
    word and a gather in numpy. The cache is replaced by an empty one when it would pass
    `WORD_CACHE_SIZE` words, so memory does not grow with a corpus.
    """
    words = [basic_tokenize(t, self.do_lower_case) for t in texts]
    counts = np.fromiter(map(len, words), np.int64, count=len(words))
    table = self._pieces
    seen = set(chain.from_iterable(words))
    if seen.difference(table.index):  # (set - dict looks each word up: no copy of the dict)
      with self._pieces_lock:
        table = self._pieces
        new = seen.difference(table.index)
        if len(table.index) + len(new) > WORD_CACHE_SIZE:
          # A fresh table rather than clearing this one: a thread still reading from the
          # old one (threads may share a tokenizer) finds every word it counted on.
          table, new = _PieceTable(), seen
        new = list(new)
        table.add(new, *self._word_pieces(new))
        self._pieces = table
    word_index = np.fromiter(map(table.index.__getitem__, chain.from_iterable(words)),
                             np.int32, count=int(counts.sum()))
    del words, seen  # the window's word strings: the larger part of its memory
    ids, word_bounds = table.gather(word_index)
    bounds = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=bounds[1:])
    return ids, word_bounds[bounds].astype(np.int64)

  def _word_pieces(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(ids, per-word counts) of `words` from Rust: one Encoding of the words joined by
    spaces (0.037 vs 0.062 CPU s for WikiText-2's 15,834 words with one Encoding per
    word); one per word where Rust's whitespace split would not give back these words."""
    enc = self._tok.encode(" ".join(words), add_special_tokens=False)
    word_ids = enc.word_ids
    if None not in word_ids:
      counts = np.bincount(np.asarray(word_ids, np.int64), minlength=len(words))
      if len(counts) == len(words) and counts.all():
        return np.asarray(enc.ids, np.int32), counts.astype(np.int32)
    ids = [e.ids for e in self._tok.encode_batch(words, add_special_tokens=False)]
    return (np.fromiter(chain.from_iterable(ids), np.int32, count=sum(map(len, ids))),
            np.fromiter(map(len, ids), np.int32, count=len(ids)))

  @property
  def word_cache_size(self) -> int:
    """Words whose WordPiece ids are cached now (at most `WORD_CACHE_SIZE`)."""
    return len(self._pieces.index)

  def clear_word_cache(self) -> None:
    with self._pieces_lock:
      self._pieces = _PieceTable()

  def decode(self, ids: Sequence[int]) -> str:
    """Ids -> text as the reference decodes: join, glue ## pieces, tidy punctuation."""
    text = " ".join(self.convert_ids_to_tokens(ids)).replace(" ##", "").strip()
    for spaced, tidy in _DECODE_CLEANUP:
      text = text.replace(spaced, tidy)
    return text

  def convert_tokens_to_ids(self, tokens: Sequence[str]) -> list[int]:
    return [self.vocab.get(t, self.unk_id) for t in tokens]

  def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
    return [self.inv_vocab.get(int(i), "[UNK]") for i in ids]

  def is_word_start(self, token: str) -> bool:
    return not token.startswith("##")


class SentencePieceTokenizer:
  """A SentencePiece model whose pieces include BERT's special tokens."""

  def __init__(self, model_file: str, do_lower_case: bool = False):
    import sentencepiece as spm
    if not paths.is_file(model_file):
      raise TokenizerError(f"SentencePiece model not found: {model_file!r}.")
    self.vocab_file = model_file
    self.do_lower_case = do_lower_case
    # From bytes: the model may be on gs:// (sentencepiece opens local files only).
    self._sp = spm.SentencePieceProcessor(model_proto=paths.read_bytes(model_file))
    self.vocab_size = self._sp.get_piece_size()
    ids = {}
    for t in SPECIAL_TOKENS:
      i = self._sp.piece_to_id(t)
      if i == self._sp.unk_id() and t != "[UNK]":
        raise TokenizerError(
            f"{model_file}: special token {t} is not a piece of this SentencePiece model; "
            "train it with --user_defined_symbols=[CLS],[SEP],[MASK] and pad/unk pieces "
            "(see `python -m bert_jax.tools.build_vocab --type=sentencepiece`).")
      ids[t] = i
    self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
        ids[t] for t in SPECIAL_TOKENS)

  def _prep(self, text: str) -> str:
    """Lower-cases all but the special tokens ([MASK] stays a user-defined piece)."""
    if not self.do_lower_case:
      return text
    return "".join(p if i % 2 else p.lower() for i, p in enumerate(_SPECIAL_RE.split(text)))

  def tokenize(self, text: str) -> list[str]:
    return self._sp.encode(self._prep(text), out_type=str)

  def encode(self, text: str) -> list[int]:
    return self._sp.encode(self._prep(text))

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return self._sp.encode([self._prep(t) for t in texts])

  def decode(self, ids: Sequence[int]) -> str:
    return self._sp.decode([int(i) for i in ids])

  def convert_tokens_to_ids(self, tokens: Sequence[str]) -> list[int]:
    return [self._sp.piece_to_id(t) for t in tokens]

  def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
    return [self._sp.id_to_piece(int(i)) for i in ids]

  def is_word_start(self, token: str) -> bool:
    return token.startswith("\u2581") or token in SPECIAL_TOKENS


def load_tokenizer(vocab_file: str, do_lower_case: bool = True) -> Tokenizer:
  """A .model file -> SentencePiece; anything else -> WordPiece vocab.txt."""
  if vocab_file.endswith(".model"):
    return SentencePieceTokenizer(vocab_file, do_lower_case=do_lower_case)
  return WordPieceTokenizer(vocab_file, do_lower_case=do_lower_case)
