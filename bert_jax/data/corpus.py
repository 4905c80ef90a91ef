"""Raw text -> documents (lists of sentences), the input of pair construction.

Two kinds of input:
- BERT's pre-training format: one sentence per line, a blank line between documents,
  plain text or gzip (detected from the magic bytes, not the name).
- Project Gutenberg books: the licence header and footer are stripped, chapter headings
  start documents, and paragraphs are cut into sentences by a small rule-based splitter.

Every reader is a generator (memory stays bounded), copes with a UTF-8 BOM and CRLF line
ends, and drops bytes that are not UTF-8 (as the original's `convert_to_unicode(..,
"ignore")`) while counting the lines that had them in `CorpusStats`.

`python -m bert_jax.tools.prepare_corpus --input_file=BOOK.txt --output_file=OUT.txt` converts
Gutenberg books into the BERT format.
"""
from __future__ import annotations

import dataclasses
import gzip
import io
import re
from typing import Iterable, Iterator, Sequence

from bert_jax import paths


class CorpusError(ValueError):
  """An input pattern or file is unusable; the message names it and the fix."""


@dataclasses.dataclass
class CorpusStats:
  """Counts of what was read and what was skipped (printed in the CLI summary)."""
  files: int = 0
  empty_files: int = 0  # no sentence at all: skipped
  unreadable_files: int = 0  # I/O or gzip error: the rest of the file is skipped
  lines: int = 0
  invalid_utf8_lines: int = 0  # lines with non-UTF-8 bytes: those bytes dropped
  documents: int = 0  # documents kept (>= 2 sentences)
  one_sentence_documents: int = 0  # no sentence pair possible: skipped
  sentences: int = 0
  bytes_read: int = 0  # position in the input (compressed bytes for gzip), for the ETA

  def merge(self, other: "CorpusStats") -> None:
    for f in dataclasses.fields(self):
      setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

  def as_dict(self) -> dict[str, int]:
    return dataclasses.asdict(self)


def expand_input_patterns(patterns: str | Sequence[str]) -> list[str]:
  """Comma-separated globs (or a list of them) -> sorted files; error if one matches none."""
  if isinstance(patterns, str):
    patterns = [p for p in patterns.split(",") if p.strip()]
  if not patterns:
    raise CorpusError("no input files given: pass --input_file=PATTERN[,PATTERN...].")
  files: list[str] = []
  for pattern in patterns:
    matched = [p for p in paths.glob(paths.expanduser(pattern.strip())) if paths.is_file(p)]
    if not matched:
      raise CorpusError(f"input pattern {pattern!r} matches no file; check the path/glob.")
    files.extend(matched)
  return files


def _open_binary(path: str) -> tuple[io.BufferedIOBase, io.BufferedIOBase]:
  """(raw file, stream of decompressed bytes); gzip is recognised by its magic bytes.

  Local or gs:// (paths.open): a bucket object is streamed, never downloaded whole.
  """
  raw = paths.open(path, "rb")  # pylint: disable=consider-using-with
  magic = raw.read(2)
  raw.seek(0)
  if magic == b"\x1f\x8b":
    return raw, gzip.GzipFile(fileobj=raw)
  return raw, raw


def iter_lines(path: str, stats: CorpusStats) -> Iterator[str]:
  """Decoded lines of a plain or gzip file: BOM, CRLF and trailing whitespace removed."""
  stats.files += 1
  start = stats.bytes_read
  raw, stream = _open_binary(path)
  try:
    with raw:
      for i, line in enumerate(stream):
        stats.lines += 1
        if i == 0 and line.startswith(b"\xef\xbb\xbf"):
          line = line[3:]
        try:
          text = line.decode("utf-8")
        except UnicodeDecodeError:
          stats.invalid_utf8_lines += 1
          text = line.decode("utf-8", "ignore")
        if (i & 1023) == 0:
          stats.bytes_read = start + raw.tell()
        yield text.rstrip()
      stats.bytes_read = start + raw.tell()
  except (OSError, EOFError) as e:  # truncated gzip, unreadable file
    stats.unreadable_files += 1
    print(f"WARNING: {path}: {type(e).__name__}: {e}; skipping the rest of this file.",
          flush=True)


def _documents_from_sentences(lines: Iterable[str], stats: CorpusStats,
                              min_sentences: int) -> Iterator[list[str]]:
  """Groups non-blank lines into documents at blank lines; counts and skips short ones."""
  doc: list[str] = []
  for line in lines:
    line = line.strip()
    if line:
      doc.append(line)
      continue
    if doc:
      yield from _keep(doc, stats, min_sentences)
      doc = []
  if doc:
    yield from _keep(doc, stats, min_sentences)


def _keep(doc: list[str], stats: CorpusStats, min_sentences: int) -> Iterator[list[str]]:
  if len(doc) < min_sentences:
    stats.one_sentence_documents += 1
    return
  stats.documents += 1
  stats.sentences += len(doc)
  yield doc


def read_documents(path: str, stats: CorpusStats, min_sentences: int = 2,
                   input_format: str = "text") -> Iterator[list[str]]:
  """Documents (lists of sentence strings) of one file, in `input_format`
  text|gutenberg|wikitext.

  Documents with fewer than `min_sentences` sentences cannot give a sentence pair and are
  skipped (counted in `stats.one_sentence_documents`); a file without any sentence is
  counted in `stats.empty_files`.
  """
  before = stats.documents + stats.one_sentence_documents
  if input_format == "text":
    yield from _documents_from_sentences(iter_lines(path, stats), stats, min_sentences)
  elif input_format == "gutenberg":
    for doc in gutenberg_documents(iter_lines(path, stats)):
      yield from _keep(doc, stats, min_sentences)
  elif input_format == "wikitext":
    for doc in wikitext_documents(iter_lines(path, stats)):
      yield from _keep(doc, stats, min_sentences)
  else:
    raise CorpusError(f"input_format={input_format!r}: use 'text', 'gutenberg' or 'wikitext'.")
  if stats.documents + stats.one_sentence_documents == before:
    stats.empty_files += 1


def iter_windows(files: Sequence[str], stats: CorpusStats, documents_per_window: int,
                 input_format: str = "text") -> Iterator[tuple[int, int, list[list[str]]]]:
  """(window index, id of its first document, documents) over all files, in order.

  A window is the pool that a random-next segment is drawn from (bounded memory). A final
  window of a single document (no other document to draw from) joins the previous one;
  an input with fewer than 2 documents in all is an error.
  """
  if documents_per_window < 2:
    raise CorpusError(f"documents_per_window={documents_per_window}: use at least 2.")
  pending: list[list[str]] | None = None
  window: list[list[str]] = []
  index = first = 0
  for path in files:
    for doc in read_documents(path, stats, input_format=input_format):
      window.append(doc)
      if len(window) == documents_per_window:
        if pending is not None:
          yield index, first, pending
          index, first = index + 1, first + len(pending)
        pending, window = window, []
  if pending is not None and len(window) < 2:
    pending, window = pending + window, []
  elif pending is None:
    pending, window = window, []
  if window:
    yield index, first, pending
    index, first, pending = index + 1, first + len(pending), window
  if len(pending) < 2:
    raise CorpusError(
        f"the input has {len(pending)} usable document(s) (of >= 2 sentences) in "
        f"{list(files)[:3]}...: next-sentence pairs need at least 2 documents separated "
        "by blank lines.")
  yield index, first, pending


# --------------------------------------------------------------------------------------
# Project Gutenberg books.

_START = re.compile(r"^\*\*\*\s*START OF (THIS|THE) PROJECT GUTENBERG", re.I)
_END = re.compile(r"^(\*\*\*\s*END OF (THIS|THE) PROJECT GUTENBERG|"
                  r"End of (the )?Project Gutenberg)", re.I)
# A chapter heading: a paragraph of one short line such as "CHAPTER IV.", "Chapter 12",
# "Book the First--Recalled to Life", "VOLUME I.--FANTINE.", "ADVENTURE I. A SCANDAL IN
# BOHEMIA", "XII. THE ADVENTURE OF THE COPPER BEECHES", "I.", "— II —", "[ 4 ]".
_HEADING = re.compile(
    r"^(?:(?:CHAPTER|Chapter|BOOK|Book|PART|Part|VOLUME|Volume|ADVENTURE|EPISODE|STAVE)"
    r"\s+(?:[IVXLCDM]+\b|\d+\b|the\b|THE\b|[A-Z]{3,}\b).*"
    r"|[IVXLC]+\.(?:\s.*)?|—\s*[IVXLC]+\s*—|\[\s*\d+\s*\])$")
_MAX_HEADING_CHARS = 80
# Books without recognisable headings are cut into documents of this many paragraphs.
FALLBACK_PARAGRAPHS_PER_DOCUMENT = 40


def strip_gutenberg(lines: Iterable[str]) -> Iterator[str]:
  """The body of a Gutenberg book: lines between the START and END markers.

  A file without a START marker is passed through whole (it is not a Gutenberg file).
  """
  lines = iter(lines)
  head: list[str] = []
  for line in lines:
    if _START.match(line):
      head = []
      break
    head.append(line)
    if len(head) > 2000:  # no marker in the first 2000 lines: not a Gutenberg header.
      break
  for line in head:  # only non-empty when no START marker was found
    if _END.match(line):
      return
    yield line
  for line in lines:
    if _END.match(line):
      return
    yield line


def _paragraphs(lines: Iterable[str]) -> Iterator[list[str]]:
  """Blocks of non-blank lines (hard-wrapped paragraphs), stripped."""
  block: list[str] = []
  for line in lines:
    line = line.strip()
    if line:
      block.append(line)
    elif block:
      yield block
      block = []
  if block:
    yield block


def _is_heading(block: list[str]) -> bool:
  return (len(block) == 1 and len(block[0]) <= _MAX_HEADING_CHARS
          and _HEADING.match(block[0]) is not None)


def gutenberg_documents(lines: Iterable[str]) -> list[list[str]]:
  """A Gutenberg book's lines -> chapters as documents of sentences.

  Front matter (title page, contents) before the first heading is dropped. Books with
  fewer than 3 headings are cut every FALLBACK_PARAGRAPHS_PER_DOCUMENT paragraphs instead.
  """
  chapters: list[list[str]] = [[]]  # paragraphs (joined text) per chapter
  num_headings = 0
  for block in _paragraphs(strip_gutenberg(lines)):
    if _is_heading(block):
      num_headings += 1
      chapters.append([])
      continue
    text = " ".join(block)
    if text.startswith("[") and text.endswith("]") and len(text) < 80:
      continue  # "[Illustration]", "[Footnote 3]" and similar markers.
    chapters[-1].append(text)
  if num_headings >= 3:
    chapters = chapters[1:]  # drop front matter
  else:
    paragraphs = [p for c in chapters for p in c]
    n = FALLBACK_PARAGRAPHS_PER_DOCUMENT
    chapters = [paragraphs[i:i + n] for i in range(0, len(paragraphs), n)]
  docs = []
  for chapter in chapters:
    sentences = [s for paragraph in chapter for s in split_sentences(paragraph)]
    if sentences:
      docs.append(sentences)
  return docs


_ABBREVIATIONS = frozenset(
    "mr mrs ms dr st mme mlle messrs jr sr vs etc capt col gen lt rev prof hon esq "
    "mt ft viz cf sq gov sen sgt maj cpl pvt ibid i.e e.g a.m p.m".split())
# Abbreviations only before a number ("No. 5", "vol. 2"); "No." alone ends a sentence.
_NUMBER_ABBREVIATIONS = frozenset("no nos vol ch fig op pp".split())
# End punctuation, optional closing quotes/brackets, whitespace, then something that can
# start a sentence (an opening quote/bracket/dash, a capital or a digit).
_BOUNDARY = re.compile(r"[.!?]+[”’\"')\]]*\s+(?=[“‘\"'(\[—_]*[A-Z0-9—])")
_LAST_WORD = re.compile(r"([\w.]+)[.!?]+[”’\"')\]]*\s*$")


_WIKITEXT_ARTICLE = re.compile(r"^\s*= [^=].* =\s*$")


def wikitext_documents(lines: Iterable[str]) -> Iterator[list[str]]:
  """WikiText (Merity et al.): an article per ` = Title = ` heading; its paragraphs
  (one per line, section headings ` = = ... = = ` dropped) cut into sentences."""
  doc: list[str] = []
  for line in lines:
    if _WIKITEXT_ARTICLE.match(line):  # the pattern allows the line end
      if doc:
        yield doc
      doc = []
      continue
    text = line.strip()
    if text and not text.startswith("="):
      doc.extend(split_sentences(text))
  if doc:
    yield doc


def split_sentences(text: str) -> list[str]:
  """Rule-based English sentence splitter (abbreviations and initials do not end one)."""
  text = " ".join(text.split())
  sentences = []
  start = 0
  for m in _BOUNDARY.finditer(text):
    candidate = text[start:m.end()]
    if "." in m.group(0) and not any(c in m.group(0) for c in "!?"):
      last = _LAST_WORD.search(candidate)
      if last:
        word = last.group(1).lower().rstrip(".")
        if word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha() and word != "i"):
          continue
        if word in _NUMBER_ABBREVIATIONS and text[m.end():m.end() + 1].isdigit():
          continue
    sentence = candidate.strip()
    if sentence:
      sentences.append(sentence)
    start = m.end()
  rest = text[start:].strip()
  if rest:
    sentences.append(rest)
  return sentences


def write_documents(documents: Iterable[Sequence[str]], f: io.TextIOBase) -> int:
  """Writes documents in BERT format (sentence per line, blank line between); returns count."""
  n = 0
  for doc in documents:
    if n:
      f.write("\n")
    for sentence in doc:
      f.write(sentence.replace("\n", " ") + "\n")
    n += 1
  return n
