"""Corpus reading: BERT format, gzip, BOM/CRLF, bad bytes, Gutenberg cleaning, windows."""
import gzip
import pathlib

import pytest

from bert_jax.data import corpus

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "data"
EXCERPT = FIXTURES / "tale-of-two-cities-excerpt.txt"
SAMPLE = pathlib.Path(corpus.__file__).parents[1] / "resources" / "corpus" / \
    "train-bert-sample-text.txt"


def _read(path, **kw):
  stats = corpus.CorpusStats()
  return list(corpus.read_documents(str(path), stats, **kw)), stats


def test_bert_format_documents_match_blank_lines():
  docs, stats = _read(SAMPLE)
  raw = SAMPLE.read_text(encoding="utf-8").strip().split("\n\n")
  assert [d for d in docs] == [[l.strip() for l in block.split("\n") if l.strip()]
                               for block in raw]
  assert stats.documents == 3 and stats.sentences == 31 and stats.one_sentence_documents == 0


def test_gzip_bom_crlf_and_invalid_utf8(tmp_path):
  text = SAMPLE.read_bytes()
  # BOM + CRLF + a line with bytes that are not UTF-8, gzip-compressed under a plain name.
  lines = text.split(b"\n")
  lines[1] = lines[1] + b" \xff\xfe broken"
  data = b"\xef\xbb\xbf" + b"\r\n".join(lines)
  path = tmp_path / "corpus.txt"
  path.write_bytes(gzip.compress(data))
  docs, stats = _read(path)
  ref, _ = _read(SAMPLE)
  assert stats.invalid_utf8_lines == 1
  assert docs[0][0] == ref[0][0]  # BOM gone, no '\r'
  assert docs[0][1] == ref[0][1] + "  broken"  # bad bytes dropped, the rest kept
  assert [len(d) for d in docs] == [len(d) for d in ref]
  assert all("\r" not in s and "\ufeff" not in s for d in docs for s in d)


def test_empty_file_and_one_sentence_document_are_counted(tmp_path):
  (tmp_path / "empty.txt").write_bytes(b"")
  (tmp_path / "blank.txt").write_text("\n\n  \n")
  one = tmp_path / "one.txt"
  one.write_text("A lonely sentence.\n\nFirst of two.\nSecond of two.\n")
  stats = corpus.CorpusStats()
  docs = [d for f in ("empty.txt", "blank.txt", "one.txt")
          for d in corpus.read_documents(str(tmp_path / f), stats)]
  assert docs == [["First of two.", "Second of two."]]
  assert stats.empty_files == 2 and stats.one_sentence_documents == 1 and stats.files == 3


def test_unreadable_gzip_is_counted_and_skipped(tmp_path):
  good = gzip.compress(SAMPLE.read_bytes())
  path = tmp_path / "truncated.txt.gz"
  path.write_bytes(good[: len(good) // 2])  # a download cut in half
  docs, stats = _read(path)
  assert stats.unreadable_files == 1
  assert len(docs) <= 3  # whatever was readable before the cut, never a crash


def test_expand_patterns_errors_name_the_pattern(tmp_path):
  with pytest.raises(corpus.CorpusError, match="nothing-here"):
    corpus.expand_input_patterns(str(tmp_path / "nothing-here*.txt"))
  (tmp_path / "b.txt").write_text("x")
  (tmp_path / "a.txt").write_text("x")
  assert corpus.expand_input_patterns(f"{tmp_path}/*.txt") == [
      str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]


def test_gutenberg_excerpt_header_footer_stripped_chapters_are_documents():
  docs, stats = _read(EXCERPT, input_format="gutenberg")
  text = " ".join(s for d in docs for s in d)
  # Licence header, contents and footer are gone; the four chapters are the documents.
  assert "Project Gutenberg" not in text and "gutenberg.org" not in text
  assert "Chapter II" not in text and "CONTENTS" not in text
  assert len(docs) == 4
  assert docs[0][0].startswith("It was the best of times, it was the worst of times")
  assert docs[1][0].startswith("It was the Dover road that lay")  # chapter II, The Mail
  assert docs[3][-1] == ("This being another question hard to answer, Mr. Jarvis Lorry "
                         "withdrew to consider it.")
  assert all(s == s.strip() and "\r" not in s and "\ufeff" not in s for d in docs for s in d)
  assert stats.invalid_utf8_lines == 0


@pytest.mark.parametrize("text,expected", [
    ("Mr. Lorry rose. He went out!  “Is it?” she said. Yes.",
     ["Mr. Lorry rose.", "He went out!", "“Is it?” she said.", "Yes."]),
    ("It was J. Cruncher of No. 5, at 5 p.m. on the road. Then, 1775 came.",
     ["It was J. Cruncher of No. 5, at 5 p.m. on the road.", "Then, 1775 came."]),
    ("“Wait!” cried he. —No. I. Not I.", ["“Wait!” cried he.", "—No.", "I.", "Not I."]),
])
def test_split_sentences(text, expected):
  assert corpus.split_sentences(text) == expected


def test_windows_partition_documents_and_merge_a_lone_last_one(tmp_path):
  path = tmp_path / "c.txt"
  path.write_text("\n\n".join(f"Doc {i} one.\nDoc {i} two." for i in range(7)) + "\n")
  stats = corpus.CorpusStats()
  windows = list(corpus.iter_windows([str(path)], stats, documents_per_window=3))
  # 7 documents, windows of 3: [0,1,2] [3,4,5,6] (a lone last document joins the previous)
  assert [(w, first, len(docs)) for w, first, docs in windows] == [(0, 0, 3), (1, 3, 4)]
  assert [d[0] for _, _, docs in windows for d in docs] == [f"Doc {i} one." for i in range(7)]
  one = tmp_path / "one.txt"
  one.write_text("Only one.\nDocument here.\n")
  with pytest.raises(corpus.CorpusError, match="at least 2 documents"):
    list(corpus.iter_windows([str(one)], corpus.CorpusStats(), 10))


def test_wikitext_articles_are_documents(tmp_path):
  """WikiText: ` = Title = ` starts an article (a document), ` = = Section = = ` headings
  are dropped, paragraphs are cut into sentences; the format's CRLF/BOM handling is the
  readers' own."""
  path = tmp_path / "wiki.txt"
  path.write_text(
      "\ufeff \n = Robert Boulter = \n \n Robert Boulter is an English actor . He had a "
      "guest role in 2000 . \n \n = = Career = = \n \n In 2004 he landed a role . "
      "It ran for weeks . \n \n = Du Fu = \n \n Du Fu was a poet . He lived in China . \n",
      encoding="utf-8")
  stats = corpus.CorpusStats()
  docs = list(corpus.read_documents(str(path), stats, input_format="wikitext"))
  assert docs == [
      ["Robert Boulter is an English actor .", "He had a guest role in 2000 .",
       "In 2004 he landed a role .", "It ran for weeks ."],
      ["Du Fu was a poet .", "He lived in China ."]]
  assert stats.documents == 2 and stats.sentences == 6
  with pytest.raises(corpus.CorpusError, match="'wikitext'"):
    list(corpus.read_documents(str(path), stats, input_format="wiki"))
