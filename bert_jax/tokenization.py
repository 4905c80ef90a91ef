"""WordPiece (BERT vocab.txt) and SentencePiece tokenizers behind one interface.

WordPiece runs on Hugging Face `tokenizers` (Rust) configured as BERT's BasicTokenizer +
WordpieceTokenizer: clean text (control characters dropped), CJK characters split,
accents stripped when lower-casing, punctuation split, words over 100 characters -> [UNK].
It gives the same ids as the original Python loop, tens of times faster.
"""
from __future__ import annotations

import os
from typing import Protocol, Sequence

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


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
  if not vocab_file or not os.path.isfile(vocab_file):
    raise TokenizerError(
        f"vocabulary file not found: {vocab_file!r}; pass --config.vocab_file=PATH/vocab.txt "
        "(a BERT WordPiece vocab) or a SentencePiece .model file.")
  vocab: dict[str, int] = {}
  with open(vocab_file, encoding="utf-8") as f:
    for i, line in enumerate(f):
      token = line.rstrip("\n").rstrip("\r")
      if token and token not in vocab:
        vocab[token] = i
  missing = [t for t in SPECIAL_TOKENS if t not in vocab]
  if missing:
    raise TokenizerError(
        f"{vocab_file}: special token(s) {missing} are not in the vocabulary; a BERT "
        "vocab.txt must contain [PAD] [UNK] [CLS] [SEP] [MASK].")
  return vocab


class WordPieceTokenizer:
  """BERT's FullTokenizer (basic + WordPiece) from a vocab.txt."""

  def __init__(self, vocab_file: str, do_lower_case: bool = True):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, normalizers, pre_tokenizers

    self.vocab_file = vocab_file
    self.do_lower_case = do_lower_case
    self.vocab = read_vocab(vocab_file)
    self.inv_vocab = {i: t for t, i in self.vocab.items()}
    tok = HFTokenizer(models.WordPiece(vocab=self.vocab, unk_token="[UNK]",
                                       max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=do_lower_case,
        lowercase=do_lower_case)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    self._tok = tok
    self.vocab_size = max(self.vocab.values()) + 1
    self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
        self.vocab[t] for t in SPECIAL_TOKENS)

  def tokenize(self, text: str) -> list[str]:
    return self._tok.encode(text, add_special_tokens=False).tokens

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """Many texts at once (multi-threaded in Rust)."""
    return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

  def decode(self, ids: Sequence[int]) -> str:
    return self._tok.decode(list(ids), skip_special_tokens=False)

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
    if not os.path.isfile(model_file):
      raise TokenizerError(f"SentencePiece model not found: {model_file!r}.")
    self.vocab_file = model_file
    self.do_lower_case = do_lower_case
    self._sp = spm.SentencePieceProcessor(model_file=model_file)
    self.vocab_size = self._sp.get_piece_size()
    ids = {}
    for t in SPECIAL_TOKENS:
      i = self._sp.piece_to_id(t)
      if i == self._sp.unk_id() and t != "[UNK]":
        raise TokenizerError(
            f"{model_file}: special token {t} is not a piece of this SentencePiece model; "
            "train it with --user_defined_symbols=[CLS],[SEP],[MASK] and pad/unk pieces "
            "(see `python -m bert_jax.build_vocab --type=sentencepiece`).")
      ids[t] = i
    self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
        ids[t] for t in SPECIAL_TOKENS)

  def _prep(self, text: str) -> str:
    return text.lower() if self.do_lower_case else text

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
