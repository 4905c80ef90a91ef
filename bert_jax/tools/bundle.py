"""Rebuilds the corpus and vocabulary bundled in bert_jax/resources (a maintainer tool).

python -m bert_jax.tools.bundle --shared_data=../shared/data

Two public-domain Project Gutenberg books become BERT-format text (licence stripped,
chapters as documents, one sentence per line); the last HELD_OUT chapters of each book go
to an evaluation file. Google's Apache-2.0 `sample_text.txt` is added to the training
files. An uncased WordPiece vocabulary is trained on the training files with the
`tokenizers` WordPiece trainer. See bert_jax/resources/README.md for sources and licences.
"""
# io: local-only module (regenerates files inside this repository)
from __future__ import annotations

import os
import shutil
from typing import Sequence

from bert_jax import config as config_lib
from bert_jax.data import corpus
from bert_jax.tokenization import SPECIAL_TOKENS

BOOKS = {  # output name: path under shared/data/corpus/gutenberg
    "pride-and-prejudice": "pride-and-prejudice/1342-0.txt",
    "sherlock-holmes": "sherlock-holmes/1661.txt",
}
HELD_OUT = 3  # chapters per book kept for evaluation
VOCAB_SIZE = 8000
CORPUS_DIR = os.path.join(config_lib.BUNDLED_DIR, "corpus")
TRAIN_GLOB = os.path.join(CORPUS_DIR, "train-*.txt")
EVAL_GLOB = os.path.join(CORPUS_DIR, "eval-*.txt")
VOCAB_FILE = os.path.join(config_lib.BUNDLED_DIR, "vocab.txt")


def train_wordpiece_vocab(files: Sequence[str], vocab_size: int, output_file: str,
                          do_lower_case: bool = True) -> int:
  """Trains a BERT WordPiece vocab.txt ([PAD]=0 [UNK] [CLS] [SEP] [MASK] first); returns size."""
  from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
  tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
  tok.normalizer = normalizers.BertNormalizer(
      clean_text=True, handle_chinese_chars=True, strip_accents=do_lower_case,
      lowercase=do_lower_case)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  trainer = trainers.WordPieceTrainer(
      vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), min_frequency=2,
      continuing_subword_prefix="##", show_progress=False)
  tok.train(list(files), trainer)
  vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
  assert [t for t, _ in vocab[:len(SPECIAL_TOKENS)]] == list(SPECIAL_TOKENS), vocab[:5]
  with open(output_file, "w", encoding="utf-8") as f:
    f.writelines(t + "\n" for t, _ in vocab)
  return len(vocab)


def build(shared_data: str) -> None:
  """Writes resources/corpus/{train,eval}-*.txt and resources/vocab.txt."""
  os.makedirs(CORPUS_DIR, exist_ok=True)
  train_files = []
  held_out: list[list[str]] = []
  for name, rel in BOOKS.items():
    stats = corpus.CorpusStats()
    path = os.path.join(shared_data, "corpus", "gutenberg", rel)
    docs = list(corpus.read_documents(path, stats, input_format="gutenberg"))
    out = os.path.join(CORPUS_DIR, f"train-{name}.txt")
    with open(out, "w", encoding="utf-8") as f:
      corpus.write_documents(docs[:-HELD_OUT], f)
    held_out.extend(docs[-HELD_OUT:])
    train_files.append(out)
    print(f"{out}: {len(docs) - HELD_OUT} chapters, {HELD_OUT} held out; {stats.as_dict()}")
  sample = os.path.join(CORPUS_DIR, "train-bert-sample-text.txt")
  shutil.copyfile(os.path.join(shared_data, "corpus", "bert-sample-text", "sample_text.txt"),
                  sample)
  train_files.append(sample)
  with open(os.path.join(CORPUS_DIR, "eval-held-out-chapters.txt"), "w",
            encoding="utf-8") as f:
    corpus.write_documents(held_out, f)
  n = train_wordpiece_vocab(train_files, VOCAB_SIZE, VOCAB_FILE)
  print(f"{VOCAB_FILE}: {n} tokens")


if __name__ == "__main__":
  from absl import app, flags
  flags.DEFINE_string("shared_data", os.path.join(config_lib.REPO_ROOT, "..", "shared", "data"),
                      "The shared data folder (see its README.md).")
  app.run(lambda argv: build(flags.FLAGS.shared_data))
