"""Raw text (Project Gutenberg books, WikiText or BERT-format text) -> one BERT pre-training text file
(one sentence per line, blank line between documents), via bert_jax/data/corpus.py.

python -m bert_jax.tools.prepare_corpus --input_file='books/*.txt' --output_file=corpus.txt
"""
from __future__ import annotations

from typing import Sequence

from bert_jax import paths
from bert_jax.data import corpus


def main(argv: Sequence[str]) -> None:
  del argv
  stats = corpus.CorpusStats()
  with paths.open(FLAGS.output_file, "w") as f:
    docs = (d for path in corpus.expand_input_patterns(FLAGS.input_file)
            for d in corpus.read_documents(path, stats, input_format=FLAGS.input_format))
    corpus.write_documents(docs, f)
  print(f"wrote {FLAGS.output_file}: {stats.as_dict()}")


if __name__ == "__main__":
  from absl import app, flags
  flags.DEFINE_string("input_file", None, "Comma-separated globs of input files.")
  flags.DEFINE_string("output_file", None, "Output text file in BERT pre-training format.")
  flags.DEFINE_enum("input_format", "gutenberg", ["gutenberg", "text", "wikitext"],
                    "gutenberg: strip licence, chapters as documents; text: BERT format; "
                    "wikitext: WikiText's ' = Title = ' articles as documents.")
  flags.mark_flags_as_required(["input_file", "output_file"])
  FLAGS = flags.FLAGS
  app.run(main)
