"""Tokenization equals the reference: Hugging Face's slow Python BERT tokenizer.

In transformers 5 the slow (pure Python, Google's tokenization.py + NFC and special-token
splitting) tokenizer is `BertTokenizerLegacy`; `BertTokenizer` is the Rust-backed one, so
it is not the oracle. Uncased: MiniLM's real vocab.txt. Cased: tests/fixtures/tokenization/
cased_vocab.txt, trained by our build_vocab CLI on the shared corpora (see the README
there). SentencePiece: a model trained here by the same CLI.
"""
import glob
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

from bert_jax import tokenization
from bert_jax.tools import build_vocab
from test_paths import fake_gcs  # noqa: F401 (fixture)

FIX = pathlib.Path(__file__).parent / "fixtures" / "tokenization"
CASED_VOCAB = str(FIX / "cased_vocab.txt")
HARD_CASES = json.loads((FIX / "hard_cases.json").read_text())


@pytest.fixture(scope="module", params=["uncased", "cased"])
def pair(request, minilm_path):
  """(ours, reference) for MiniLM's uncased vocab and the cased fixture vocab."""
  if request.param == "uncased":
    vocab, lower = str(pathlib.Path(minilm_path) / "vocab.txt"), True
  else:
    vocab, lower = CASED_VOCAB, False
  return (tokenization.load_tokenizer(vocab, do_lower_case=lower),
          BertTokenizerLegacy(vocab, do_lower_case=lower))


def _assert_same_ids(ours, ref, texts):
  got = ours.encode_batch(texts)
  # encode_flat (what data preparation uses) holds the same ids, one array for all texts.
  flat, bounds = ours.encode_flat(texts)
  assert flat.dtype == np.int32 and bounds.tolist()[0] == 0 and len(bounds) == len(texts) + 1
  assert [flat[bounds[i]:bounds[i + 1]].tolist() for i in range(len(texts))] == got
  bad = []
  for text, ids in zip(texts, got):
    want = ref.encode(text, add_special_tokens=False)
    if ids != want:
      bad.append((text, ref.tokenize(text), ours.tokenize(text)))
  assert not bad, f"{len(bad)}/{len(texts)} differ; first: {bad[0]!r}"


def test_hard_cases_match_reference(pair):
  ours, ref = pair
  texts = list(HARD_CASES.values())
  _assert_same_ids(ours, ref, texts)
  # The single-text path agrees with the batch path, and tokens with ids.
  for text in texts:
    ids = ours.encode(text)
    assert ids == ref.encode(text, add_special_tokens=False), text
    assert ours.convert_tokens_to_ids(ours.tokenize(text)) == ids
    assert ours.decode(ids) == ref.decode(ids), text


def test_fixture_lines_match_reference(pair):
  """Self-contained sibling of the shared-corpus test: 400 real lines bundled here."""
  ours, ref = pair
  lines = (FIX / "sample_lines.txt").read_text(encoding="utf-8").splitlines()
  assert len(lines) == 400 and sum(not line.isascii() for line in lines) > 50
  _assert_same_ids(ours, ref, lines)
  for ids in ours.encode_batch(lines):
    assert ours.decode(ids) == ref.decode(ids)


def test_shared_corpus_lines_match_reference(pair, shared_data):
  """>= 5,000 real lines: WikiText-2 test and 9 Gutenberg books (BOM, curly quotes, CRLF)."""
  ours, ref = pair
  lines = (shared_data / "corpus/wikitext-2/test.txt").read_text(
      encoding="utf-8").splitlines()[:2000]
  for book in sorted(glob.glob(str(shared_data / "corpus/gutenberg/*/*.txt"))):
    with open(book, encoding="utf-8-sig") as f:
      lines += f.read().splitlines()[1000:1340]
  assert len(lines) >= 5000
  _assert_same_ids(ours, ref, lines)


def test_word_cache_is_bounded_and_exact(pair, monkeypatch):
  """encode_batch serves repeated words from a cache that is emptied when full."""
  ours, ref = pair
  lines = (FIX / "sample_lines.txt").read_text(encoding="utf-8").splitlines()
  monkeypatch.setattr(tokenization, "WORD_CACHE_SIZE", 300)
  ours.clear_word_cache()
  got, sizes = [], []
  for i in range(0, len(lines), 20):
    got.append(ours.encode_batch(lines[i:i + 20]))
    words = {w for t in lines[i:i + 20] for w in tokenization.basic_tokenize(t, ours.do_lower_case)}
    sizes.append((ours.word_cache_size, len(words)))
  assert all(0 < n <= max(300, batch_words) for n, batch_words in sizes)
  assert any(b[0] < a[0] for a, b in zip(sizes, sizes[1:]))  # it was emptied on the way
  # Threads sharing the tokenizer while the cache is replaced under them get the same ids.
  from concurrent.futures import ThreadPoolExecutor
  with ThreadPoolExecutor(4) as pool:
    again = list(pool.map(ours.encode_batch, [lines[i:i + 5] for i in range(0, len(lines), 5)]))
  assert [ids for batch in again for ids in batch] == [ids for batch in got for ids in batch]
  assert [ids for batch in got for ids in batch] == [
      ref.encode(t, add_special_tokens=False) for t in lines]
  ours.clear_word_cache()


def test_new_words_go_to_rust_in_one_call_or_word_by_word(pair):
  """New words are split by one Rust call on the words joined by spaces; a word holding a
  character Rust's whitespace split cuts at (none that basic tokenization lets through)
  sends the call down the one-Encoding-per-word path, with the same pieces."""
  ours, _ = pair
  for words in (["hello", "unaffable", "x" * 150, "[MASK]"], ["a\u2028b", "hello"]):
    flat, counts = ours._word_pieces(words)
    per_word = [e.ids for e in ours._tok.encode_batch(words, add_special_tokens=False)]
    assert counts.tolist() == [len(p) for p in per_word]
    assert flat.tolist() == [i for p in per_word for i in p]


def test_hard_case_behaviour_uncased(minilm_path):
  """What the reference does, spelled out on a few of the hard cases."""
  tok = tokenization.load_tokenizer(str(pathlib.Path(minilm_path) / "vocab.txt"))
  assert tok.tokenize(HARD_CASES["special_tokens"]) == [
      "[MASK]", "the", "[CLS]", "and", "[SEP]", "x", "[PAD]", "[UNK]", "end"]
  assert tok.tokenize("[mask]") == ["[", "mask", "]"]  # only the exact spelling is special
  assert tok.tokenize("Café NAÏVE") == ["cafe", "naive"]  # accents stripped
  assert tok.tokenize("中文") == ["中", "文"]  # CJK split
  assert tok.tokenize("a\x00b\u200bc") == ["abc"]  # control / format characters dropped
  assert tok.tokenize("a" * 100) != ["[UNK]"] and tok.tokenize("a" * 101) == ["[UNK]"]
  assert tok.tokenize("ΟΔΥΣΣΕΥΣ")[-1] == "##ς"  # Python's final sigma
  ids = tok.encode("hello world")
  assert [tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id] == [0, 100, 101, 102, 103]
  assert tok.decode(ids) == "hello world"
  assert tok.decode(tok.encode("unaffable, isn't it?")) == "unaffable, isn't it?"
  assert [tok.is_word_start(t) for t in tok.tokenize("unaffable")] == [True, False, False]


def test_hard_case_behaviour_cased():
  tok = tokenization.load_tokenizer(CASED_VOCAB, do_lower_case=False)
  assert tok.tokenize("Café")[-1] == "##é"  # accents kept when cased
  # Decomposed e + U+0301 is composed (NFC) as the reference does.
  assert tok.encode("Cafe\u0301") == tok.encode("Café")
  assert tok.tokenize("[MASK] Holmes") == ["[MASK]", "Holmes"]


def test_missing_or_bad_vocab(tmp_path):
  with pytest.raises(tokenization.TokenizerError, match="not found.*--config.vocab_file"):
    tokenization.load_tokenizer(str(tmp_path / "nope.txt"))
  bad = tmp_path / "vocab.txt"
  bad.write_text("[PAD]\n[UNK]\nhello\n")
  with pytest.raises(tokenization.TokenizerError, match=r"\[CLS\].*not in the vocabulary"):
    tokenization.load_tokenizer(str(bad))
  with pytest.raises(tokenization.TokenizerError, match="SentencePiece model not found"):
    tokenization.load_tokenizer(str(tmp_path / "sp.model"))


def test_repeated_vocab_line_takes_later_id_as_reference(tmp_path):
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("\n".join(
      ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "hello", "##s"]) + "\n")
  ours = tokenization.load_tokenizer(str(vocab))
  ref = BertTokenizerLegacy(str(vocab), do_lower_case=True)
  for text in ("hello worlds", "Hellos [MASK]"):
    assert ours.encode(text) == ref.encode(text, add_special_tokens=False)
  assert ours.encode("hello") == [7]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
  """A small real corpus (the bundled Austen/Doyle text) with a few hard cases added."""
  from bert_jax import config as config_lib
  d = tmp_path_factory.mktemp("corpus")
  src = pathlib.Path(config_lib.BUNDLED_DIR) / "corpus" / "train-sherlock-holmes.txt"
  lines = src.read_text(encoding="utf-8").splitlines()[:1500]
  (d / "a.txt").write_text("\n".join(lines[:800]) + "\n", encoding="utf-8")
  (d / "b.txt").write_text("\n".join(lines[800:]) + "\nCafé naïve [MASK] 中文\n",
                           encoding="utf-8")
  return d


def test_build_vocab_wordpiece_cli(corpus_dir, tmp_path):
  out = tmp_path / "vocab.txt"
  proc = subprocess.run(
      [sys.executable, "-m", "bert_jax.tools.build_vocab", f"--input_file={corpus_dir}/*.txt",
       f"--output={out}", "--type=wordpiece", "--vocab_size=600", "--do_lower_case",
       "--num_unused=3"], capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "Wrote" in proc.stdout
  vocab = out.read_text(encoding="utf-8").splitlines()
  assert len(vocab) == 600 and len(set(vocab)) == 600
  assert vocab[:8] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                       "[unused0]", "[unused1]", "[unused2]"]
  tok = tokenization.load_tokenizer(str(out), do_lower_case=True)
  # Every training word is covered (its characters are in the alphabet): no [UNK].
  text = (corpus_dir / "a.txt").read_text(encoding="utf-8")
  ids = tok.encode(text)
  assert tok.unk_id not in ids and len(ids) > 5000
  assert tok.tokenize("Café naïve") == ["cafe", "naive"] or "[UNK]" not in tok.tokenize(
      "Café naïve")
  assert tok.decode(tok.encode("holmes said nothing")) == "holmes said nothing"


def test_build_vocab_sentencepiece(corpus_dir, tmp_path):
  out = str(tmp_path / "sp.model")
  n = build_vocab.build_vocab(f"{corpus_dir}/*.txt", out, type="sentencepiece",
                              vocab_size=400, do_lower_case=True)
  assert n == 400
  tok = tokenization.load_tokenizer(out, do_lower_case=True)
  assert [tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id] == [0, 1, 2, 3, 4]
  assert tok.vocab_size == 400
  pieces = tok.tokenize("Holmes said [MASK] to Watson [SEP]")
  assert "[MASK]" in pieces and "[SEP]" in pieces
  ids = tok.encode("Holmes said [MASK] to Watson")
  assert tok.mask_id in ids
  assert tok.decode(tok.encode("holmes said nothing")) == "holmes said nothing"
  assert tok.is_word_start(tok.tokenize("holmes")[0])
  # A .model renamed to vocab.txt (what a text copy used to do) is one clear error.
  renamed = tmp_path / "vocab.txt"
  renamed.write_bytes(pathlib.Path(out).read_bytes())
  with pytest.raises(tokenization.TokenizerError, match="not a UTF-8 vocab.txt.*keep its "
                     r"\.model suffix"):
    tokenization.load_tokenizer(str(renamed))


def test_tokenizers_read_vocabularies_on_gcs(corpus_dir, tmp_path, fake_gcs):
  """vocab.txt and a SentencePiece .model (fed to sentencepiece as bytes) from gs://."""
  from bert_jax import paths
  sp = str(tmp_path / "sp.model")
  build_vocab.build_vocab(f"{corpus_dir}/*.txt", sp, type="sentencepiece", vocab_size=400)
  paths.copy(sp, "gs://bkt/v/sp.model")
  paths.copy(CASED_VOCAB, "gs://bkt/v/vocab.txt")
  text = "Holmes said [MASK] to Watson."
  for local, remote in ((sp, "gs://bkt/v/sp.model"), (CASED_VOCAB, "gs://bkt/v/vocab.txt")):
    a = tokenization.load_tokenizer(str(local), do_lower_case=False)
    b = tokenization.load_tokenizer(remote, do_lower_case=False)
    assert a.encode(text) == b.encode(text) and a.vocab_size == b.vocab_size


def test_build_vocab_errors(tmp_path):
  with pytest.raises(tokenization.TokenizerError, match="matches no file"):
    build_vocab.build_vocab(str(tmp_path / "*.txt"), str(tmp_path / "v.txt"))
  (tmp_path / "a.txt").write_text("hello\n")
  with pytest.raises(tokenization.TokenizerError, match="must end in .model"):
    build_vocab.build_vocab(str(tmp_path / "a.txt"), str(tmp_path / "sp.bin"),
                            type="sentencepiece", vocab_size=50)
