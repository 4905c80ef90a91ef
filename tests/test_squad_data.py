"""SQuAD reading and sliding-window features on the real v2.0 files, and bad input.

Real data: windows cover every context token (each exactly once as max-context), window
tokens are the context's, every training answer's tokens map back to exactly its text
(the exceptions are counted, printed, and are all answers that cut a white-space word).
Self-contained siblings run on tests/fixtures/squad with hand-checked positions.
"""
import json
import pathlib

import numpy as np
import pytest

from bert_jax import tokenization
from bert_jax.data import squad as sq
from bert_jax.tasks import squad_postprocess as pp

FIX = pathlib.Path(__file__).parent / "fixtures" / "squad"


@pytest.fixture(scope="module")
def tok(minilm_path):
  return tokenization.load_tokenizer(f"{minilm_path}/vocab.txt", do_lower_case=True)


@pytest.fixture(scope="module")
def dev_train_mode(shared_data):
  return sq.read_squad(str(shared_data / "squad/v2.0/dev.json"), is_training=True)


def check_windows(examples, feats, tok, max_seq_length):
  """Every context token is in some window and max-context in exactly one; the window's
  tokens and word maps are the context's own."""
  contexts = {}
  for ei, rows in pp.example_rows(feats["example_index"]):
    ex = examples[ei]
    key = id(ex.doc_tokens)
    if key not in contexts:
      contexts = {key: sq.tokenize_context(ex.doc_tokens, tok)}
    ctx = contexts[key]
    covered = np.zeros(len(ctx.ids), int)
    max_count = np.zeros(len(ctx.ids), int)
    prev_start = -1
    for r in rows:
      ids, t2o, maxc = (feats[k][r] for k in ("input_ids", "token_to_orig",
                                               "token_is_max_context"))
      n = int(feats["attention_mask"][r].sum())
      assert ids[0] == tok.cls_id and ids[n - 1] == tok.sep_id and n <= max_seq_length
      ctx_pos = np.flatnonzero(t2o >= 0)
      assert np.all(feats["token_type_ids"][r][ctx_pos] == 1)
      if not len(ctx_pos):
        assert not ctx.ids
        continue
      offset = ctx_pos[0]
      assert ids[offset - 1] == tok.sep_id  # [CLS] question [SEP] | window [SEP]
      # the window is a contiguous run of context tokens, with their original words
      start = next(s for s in range(prev_start + 1, len(ctx.ids)) if
                   ctx.ids[s:s + len(ctx_pos)] == list(ids[ctx_pos]) and
                   ctx.tok_to_orig[s:s + len(ctx_pos)] == list(t2o[ctx_pos]))
      prev_start = start
      covered[start:start + len(ctx_pos)] += 1
      max_count[start:start + len(ctx_pos)] += maxc[ctx_pos]
    assert covered.min(initial=1) >= 1, ex.qas_id
    assert np.all(max_count == 1), ex.qas_id


@pytest.mark.parametrize("max_seq_length,doc_stride", [(384, 128), (128, 32)])
def test_windows_cover_every_context_token_real_dev(dev_train_mode, tok, max_seq_length,
                                                    doc_stride):
  examples, stats = dev_train_mode
  assert stats.num_questions == 1407 and not stats.skipped
  feats, fstats = sq.featurize(examples, tok, max_seq_length, doc_stride, 64,
                               is_training=True)
  if max_seq_length == 128:
    assert fstats.num_windows > 2 * len(examples)  # really multi-window
  assert fstats.num_windows == {384: 1414, 128: 3071}[max_seq_length]  # the README's counts
  check_windows(examples, feats, tok, max_seq_length)
  # training targets: inside the window they point at the answer tokens, else [CLS]
  ans = feats["start_positions"] > 0
  assert np.all(feats["end_positions"][ans] >= feats["start_positions"][ans])
  impossible = np.array([examples[i].is_impossible for i in feats["example_index"]])
  assert not np.any(ans & impossible)
  assert ans.sum() + fstats.num_out_of_span == (~impossible).sum()


def answer_exceptions(examples, tok):
  """(qid, answer, text mapped back from its tokens) where the two differ."""
  out, ctx, key = [], None, None
  for ex in examples:
    if ex.is_impossible:
      continue
    if key != id(ex.doc_tokens):
      key, ctx = id(ex.doc_tokens), sq.tokenize_context(ex.doc_tokens, tok)
    s, e = sq.answer_token_span(ex, ctx, tok)
    orig = " ".join(ex.doc_tokens[ctx.tok_to_orig[s]:ctx.tok_to_orig[e] + 1])
    text = pp.get_final_text(pp.detokenize(tok.convert_ids_to_tokens(ctx.ids[s:e + 1])),
                             orig, True)
    if text != ex.answer_text:
      out.append((ex.qas_id, ex.answer_text, text))
  return out


def test_training_answers_map_back_to_their_text(dev_train_mode, shared_data, tok):
  dev_ex, _ = dev_train_mode
  train_ex, train_stats = sq.read_squad(str(shared_data / "squad/v2.0/train.json"), True)
  assert train_stats.num_questions == 4719 and not train_stats.skipped
  for name, examples, expected in (("dev", dev_ex, 1), ("train", train_ex, 30)):
    exc = answer_exceptions(examples, tok)
    answerable = sum(not e.is_impossible for e in examples)
    print(f"\n{name}: {len(exc)} of {answerable} answers do not map back exactly:")
    for qid, answer, text in exc:
      print(f"  {qid}: answer {answer!r} -> tokens give {text!r}")
    assert len(exc) == expected
    # Every exception is an answer that cuts a white-space word ("7" of "1817"):
    # word-level tokens cannot express it; the mapped text contains the answer.
    assert all(answer in text and answer != text for _, answer, text in exc)


def test_fixture_features_hand_checked(tok):
  examples, stats = sq.read_squad(str(FIX / "train-v2.0-sample.json"), is_training=True)
  assert stats.num_questions == 39 and len(examples) == 39
  feats, fstats = sq.featurize(examples, tok, 384, 128, 64, is_training=True)
  assert fstats.num_windows == 39  # short contexts: one window each
  check_windows(examples, feats, tok, 384)
  first = examples[0]  # "When did Beyonce start becoming popular?" -> "in the late 1990s"
  assert first.answer_text == "in the late 1990s"
  s, e = feats["start_positions"][0], feats["end_positions"][0]
  toks = tok.convert_ids_to_tokens(feats["input_ids"][0, s:e + 1])
  assert toks == ["in", "the", "late", "1990s"]
  words = first.doc_tokens[feats["token_to_orig"][0, s]:feats["token_to_orig"][0, e] + 1]
  assert " ".join(words) == "in the late 1990s"
  impossible = [i for i, ex in enumerate(examples) if ex.is_impossible]
  assert len(impossible) == 5 and all(feats["start_positions"][i] == 0 for i in impossible)
  # a question longer than max_query_length is cut to it
  long_q = dataclass_copy(first, question="why " * 100)
  f2, _ = sq.featurize([long_q], tok, 384, 128, 64, is_training=True)
  assert np.flatnonzero(f2["token_type_ids"][0])[0] == 64 + 2


def dataclass_copy(ex, **kw):
  import dataclasses
  return dataclasses.replace(ex, **kw)


def test_small_windows_on_fixture(tok):
  examples, _ = sq.read_squad(str(FIX / "dev-v2.0-sample.json"), is_training=True)
  feats, fstats = sq.featurize(examples, tok, 64, 16, 24, is_training=True)
  assert fstats.num_windows > 5 * len(examples)
  check_windows(examples, feats, tok, 64)
  # an answer split by a window boundary targets [CLS] there, the answer where whole
  assert fstats.num_out_of_span > 0


# ---- bad input ---------------------------------------------------------------------------

def write(tmp_path, obj, name="bad.json"):
  p = tmp_path / name
  p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
  return str(p)


def squad(paragraphs):
  return {"version": "v2.0", "data": [{"title": "t", "paragraphs": paragraphs}]}


def test_malformed_files_clear_errors(tmp_path):
  with pytest.raises(sq.SquadDataError, match=r"bad.json: not valid JSON .*line 3 column"):
    sq.read_squad(write(tmp_path, '{"version": "v2.0",\n "data": [\n  {"title": }]}'), True)
  with pytest.raises(sq.SquadDataError, match="top level must be"):
    sq.read_squad(write(tmp_path, {"version": "1.1"}), True)
  with pytest.raises(sq.SquadDataError, match="not found"):
    sq.read_squad(str(tmp_path / "nope.json"), True)
  bad_q = squad([{"context": "a b", "qas": [{"id": "q1", "question": "?", "answers": []},
                                           {"question": "no id"}]}])
  with pytest.raises(sq.SquadDataError, match=r"data\[0\]\.paragraphs\[0\]\.qas\[1\] needs"):
    sq.read_squad(write(tmp_path, bad_q), False)


def test_bad_questions_are_counted_skips(tmp_path, tok):
  ctx = "Paris is the capital of France."
  data = squad([
      {"context": ctx, "qas": [
          {"id": "ok", "question": "Capital?", "answers": [{"text": "Paris", "answer_start": 0}]},
          {"id": "outside", "question": "?", "answers": [{"text": "France", "answer_start": 90}]},
          {"id": "negative", "question": "?", "answers": [{"text": "Paris", "answer_start": -3}]},
          {"id": "mismatch", "question": "?", "answers": [{"text": "Berlin", "answer_start": 0}]},
          {"id": "ok", "question": "dup", "answers": [{"text": "Paris", "answer_start": 0}]},
          {"id": "null", "question": "Moon?", "answers": [], "is_impossible": True}]},
      {"context": "", "qas": [{"id": "empty_ctx", "question": "?", "answers": [],
                               "is_impossible": True}]},
      {"qas": [{"id": "no_ctx_key", "question": "?", "answers": []}]},
  ])
  path = write(tmp_path, data)
  ex, stats = sq.read_squad(path, is_training=True)
  assert [e.qas_id for e in ex] == ["ok", "null"]
  assert stats.skipped == {"answer_outside_context": ["outside", "negative"],
                           "answer_text_mismatch": ["mismatch"], "duplicate_id": ["ok"],
                           "no_context": ["empty_ctx", "no_ctx_key"]}
  assert "8 questions" in stats.summary() and "2 answer_outside_context" in stats.summary()
  # evaluation keeps questions without context: one window of no context -> predicts ""
  ex, stats = sq.read_squad(path, is_training=False)
  assert [e.qas_id for e in ex] == ["ok", "outside", "negative", "mismatch", "null",
                                    "empty_ctx", "no_ctx_key"]
  assert stats.no_context == ["empty_ctx", "no_ctx_key"]
  feats, _ = sq.featurize(ex, tok, 32, 8, 8)
  assert np.bincount(feats["example_index"]).min() == 1
  n, s = feats["input_ids"].shape
  preds = pp.postprocess(ex, feats, np.zeros((n, s)), np.zeros((n, s)), tok, version_2=True)
  assert preds["empty_ctx"].text == "" and preds["empty_ctx"].null_odds == pp.NO_ANSWER_ODDS
  preds = pp.postprocess(ex, feats, np.zeros((n, s)), np.zeros((n, s)), tok, version_2=False)
  assert preds["no_ctx_key"].text == "" and len(preds) == 7


def test_context_over_max_windows_is_a_counted_skip(tok):
  long_ctx = " ".join(f"word{i}" for i in range(3000))
  long = sq.SquadExample("long", "What?", long_ctx, long_ctx.split(), [])
  short = sq.SquadExample("short", "What?", "tiny context", ["tiny", "context"], [])
  feats, stats = sq.featurize([long, short], tok, 64, 16, 16, max_windows=100)
  assert stats.skipped == {"too_many_windows": ["long"]}
  assert list(feats["example_index"]) == [1]
  # the skipped question still gets an explicit "" prediction, never a hole in the files
  z = np.zeros(feats["input_ids"].shape)
  preds = pp.postprocess([long, short], feats, z, z, tok, version_2=True)
  assert list(preds) == ["long", "short"] and preds["long"] == pp.no_answer()
  feats, stats = sq.featurize([long], tok, 64, 16, 16, max_windows=10_000)
  assert stats.num_windows > 100 and not stats.skipped
