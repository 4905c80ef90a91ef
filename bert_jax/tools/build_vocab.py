"""Builds a BERT vocabulary from a text corpus: a WordPiece vocab.txt or a SentencePiece model.

python -m bert_jax.tools.build_vocab --input_file='corpus/*.txt' --output=vocab.txt \
    --type=wordpiece --vocab_size=30522 --do_lower_case
python -m bert_jax.tools.build_vocab --input_file='corpus/*.txt' --output=sp.model \
    --type=sentencepiece --vocab_size=32000

Both put BERT's special tokens first: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4, then
`--num_unused` [unusedN] slots (room for task tokens later), then the learned pieces.
WordPiece is learned by the Hugging Face `tokenizers` trainer on the words of
`tokenization.basic_tokenize` (the exact pre-tokenization the tokenizer will apply);
SentencePiece by `sentencepiece`, with [CLS] [SEP] [MASK] as user-defined symbols so that
they are never split. Input: plain text, any line format (blank lines and Project
Gutenberg BOMs are fine); comma-separated globs.
"""
from __future__ import annotations

import io
import os
import tempfile
import time
from typing import Iterable, Iterator, Sequence

from bert_jax import paths
from bert_jax import tokenization
from bert_jax.tokenization import SPECIAL_TOKENS, TokenizerError


def input_files(patterns: str) -> list[str]:
  """Comma-separated globs -> sorted file list (error naming the pattern if empty)."""
  files = []
  for pattern in filter(None, (p.strip() for p in patterns.split(","))):
    matched = paths.glob(os.path.expanduser(pattern))  # io: local-only (~ of a local path)
    if not matched:
      raise TokenizerError(f"--input_file={pattern!r} matches no file: pass a glob of text "
                           "files, e.g. --input_file='corpus/*.txt'.")
    files.extend(matched)
  if not files:
    raise TokenizerError("--input_file is empty: pass a glob of text files.")
  return files


def iter_lines(files: Sequence[str], log_every: int = 200_000) -> Iterator[str]:
  """Non-blank lines of the files (UTF-8, BOM dropped), with a progress line."""
  t0, n = time.time(), 0
  for i, path in enumerate(files):
    with io.TextIOWrapper(paths.open(path, "rb"), encoding="utf-8-sig", errors="replace") as f:
      for line in f:
        line = line.strip()
        if line:
          n += 1
          if n % log_every == 0:
            rate = n / max(time.time() - t0, 1e-9)
            print(f"  {n:,} lines ({rate:,.0f}/s), file {i + 1}/{len(files)}", flush=True)
          yield line


def special_tokens(num_unused: int = 0) -> list[str]:
  """[PAD] [UNK] [CLS] [SEP] [MASK] [unused0] ... [unused{n-1}]."""
  return list(SPECIAL_TOKENS) + [f"[unused{i}]" for i in range(num_unused)]


def train_wordpiece(lines: Iterable[str], vocab_size: int, output: str,
                    do_lower_case: bool = False, num_unused: int = 0, min_frequency: int = 2,
                    limit_alphabet: int = 1000) -> int:
  """Trains a WordPiece vocab.txt (specials first); returns its size."""
  from tokenizers import Tokenizer, models, pre_tokenizers, trainers
  tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  specials = special_tokens(num_unused)
  trainer = trainers.WordPieceTrainer(
      vocab_size=vocab_size, special_tokens=specials, min_frequency=min_frequency,
      limit_alphabet=limit_alphabet, continuing_subword_prefix="##", show_progress=False)
  words = (" ".join(tokenization.basic_tokenize(line, do_lower_case)) for line in lines)
  tok.train_from_iterator(words, trainer)
  vocab = [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]
  if vocab[:len(specials)] != specials:
    raise AssertionError(f"trainer did not put the special tokens first: {vocab[:8]}")
  paths.write_text(output, "".join(t + "\n" for t in vocab))
  return len(vocab)


def train_sentencepiece(lines: Iterable[str], vocab_size: int, output: str,
                        do_lower_case: bool = False, num_unused: int = 0,
                        model_type: str = "unigram", character_coverage: float = 0.9995,
                        input_sentence_size: int = 10_000_000) -> int:
  """Trains a SentencePiece model `output` (.model; a .vocab is written beside it)."""
  import sentencepiece as spm
  if not output.endswith(".model"):
    raise TokenizerError(f"--output={output!r}: a SentencePiece model file must end in "
                         ".model (that is how load_tokenizer recognises it).")
  specials = special_tokens(num_unused)
  # sentencepiece writes local files only: train into a temporary directory, then copy
  # NAME.model (and NAME.vocab) to the output, local or gs://.
  tmp = tempfile.mkdtemp(prefix="build_vocab-")  # io: local-only (trainer scratch)
  name = paths.as_path(output).name[:-len(".model")]
  prefix = os.path.join(tmp, name)  # io: local-only (trainer scratch)
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(lines), model_prefix=prefix,
      vocab_size=vocab_size, model_type=model_type, character_coverage=character_coverage,
      pad_id=0, pad_piece="[PAD]", unk_id=1, unk_piece="[UNK]", bos_id=-1, eos_id=-1,
      user_defined_symbols=specials[2:],
      normalization_rule_name="nmt_nfkc_cf" if do_lower_case else "nmt_nfkc",
      input_sentence_size=input_sentence_size, shuffle_input_sentence=True,
      minloglevel=2)
  try:
    for ext in (".model", ".vocab"):
      paths.copy(prefix + ext, output[:-len(".model")] + ext)
  finally:
    paths.rmtree(tmp)
  return spm.SentencePieceProcessor(model_proto=paths.read_bytes(output)).get_piece_size()


def build_vocab(input_file: str, output: str, type: str = "wordpiece",  # pylint: disable=redefined-builtin
                vocab_size: int = 30522, do_lower_case: bool = False, num_unused: int = 0,
                **kwargs) -> int:
  """The CLI as a function: builds `output` from the files of `input_file` (globs)."""
  files = input_files(input_file)
  print(f"Building a {vocab_size}-token {type} vocabulary from {len(files)} file(s) -> "
        f"{output}", flush=True)
  t0 = time.time()
  lines = iter_lines(files)
  if type == "wordpiece":
    n = train_wordpiece(lines, vocab_size, output, do_lower_case, num_unused, **kwargs)
  elif type == "sentencepiece":
    n = train_sentencepiece(lines, vocab_size, output, do_lower_case, num_unused, **kwargs)
  else:
    raise TokenizerError(f"--type={type!r}: use 'wordpiece' or 'sentencepiece'.")
  print(f"Wrote {output}: {n} tokens in {time.time() - t0:.1f} s", flush=True)
  return n


def main(argv):
  del argv
  from absl import flags
  f = flags.FLAGS
  build_vocab(f.input_file, f.output, f.type, f.vocab_size, f.do_lower_case, f.num_unused)


if __name__ == "__main__":
  from absl import app, flags
  flags.DEFINE_string("input_file", None, "Comma-separated globs of text files.", required=True)
  flags.DEFINE_string("output", None, "vocab.txt (wordpiece) or NAME.model (sentencepiece).",
                      required=True)
  flags.DEFINE_enum("type", "wordpiece", ["wordpiece", "sentencepiece"], "Vocabulary type.")
  flags.DEFINE_integer("vocab_size", 30522, "Size including the special tokens.")
  flags.DEFINE_bool("do_lower_case", False, "Lower-case (and for WordPiece strip accents); "
                    "use the same value when tokenizing.")
  flags.DEFINE_integer("num_unused", 0, "[unusedN] slots after the special tokens.")
  app.run(main)
