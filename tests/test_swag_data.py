"""Multiple-choice readers and features: official SWAG CSV, JSON lines, CommonsenseQA.

Fast (no model): readers on the fixtures in tests/fixtures/swag and on the real files in
../shared/data, the original run_swag.py feature layout and truncation, and the clear
errors on bad rows.
"""
import csv
import json
import pathlib

import numpy as np
import pytest

from bert_jax import tokenization
from bert_jax.data import multiple_choice as mc

FIX = pathlib.Path(__file__).resolve().parent / "fixtures" / "swag"


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
  return tokenization.load_tokenizer(str(pathlib.Path(minilm_path) / "vocab.txt"))


def test_official_csv_reads_quoted_rows_and_ids():
  val = mc.read_swag_csv(str(FIX / "val.csv"))
  assert [e.example_id for e in val] == ["0", "1"]
  assert [e.label for e in val] == [2, 2]
  assert val[0].context == "Students lower their eyes nervously."
  assert val[0].start_ending == "She"
  # A quoted field with a comma stays one ending.
  assert val[0].endings[0] == "pats her shoulder, then saunters toward someone."
  assert val[1].endings[1] == ("stops, listening to a cup of coffee with the seated woman, "
                               "who's standing.")


def test_test_csv_has_no_labels_and_is_refused_for_training():
  test = mc.read_swag_csv(str(FIX / "test.csv"), require_labels=False)
  assert [e.label for e in test] == [None, None]
  assert test[1].endings == mc.read_swag_csv(str(FIX / "val.csv"))[1].endings
  with pytest.raises(mc.MultipleChoiceError, match=r"test\.csv: no 'label' column"):
    mc.read_swag_csv(str(FIX / "test.csv"), require_labels=True)


def test_csv_and_jsonl_forms_of_the_same_records_agree():
  from_csv = mc.read_examples(str(FIX / "train.csv"), "swag_csv", 4)
  from_jsonl = mc.read_examples(str(FIX / "sample.jsonl"), "swag_jsonl", 4)
  assert len(from_csv) == len(from_jsonl) == 10
  for a, b in zip(from_csv, from_jsonl):
    assert (a.context, a.start_ending, a.endings, a.label) == (
        b.context, b.start_ending, b.endings, b.label)
  assert [e.label for e in from_jsonl] == [0, 3, 1, 3, 0, 3, 0, 1, 3, 3]


def test_real_swag_sample_and_commonsense_qa(shared_data):
  swag = mc.read_examples(str(shared_data / "swag/sample.jsonl"), "swag_jsonl", 4)
  assert len(swag) == 10 and all(e.num_choices == 4 for e in swag)
  assert np.bincount([e.label for e in swag]).tolist() == [3, 2, 0, 5]
  path = shared_data / "mc/commonsense_qa/validation.jsonl"
  csqa = mc.read_examples(str(path), "commonsense_qa", 5)
  assert len(csqa) == 1221 and all(e.num_choices == 5 for e in csqa)
  # answerKey counts from the data README: B:255 D:251 C:241 A:239 E:235.
  assert np.bincount([e.label for e in csqa]).tolist() == [239, 255, 241, 251, 235]
  first = csqa[0]
  assert first.example_id == "1afa02df02c908a558b4036e80242fac"
  assert first.endings == ("bank", "library", "department store", "mall", "new york")
  assert first.label == "ABCDE".index("A") and first.start_ending == ""


def test_commonsense_qa_fixture_mapping():
  csqa = mc.read_examples(str(FIX / "commonsense_qa.jsonl"), "commonsense_qa", 5)
  raw = [json.loads(l) for l in open(FIX / "commonsense_qa.jsonl")]
  assert len(csqa) == 12
  for e, r in zip(csqa, raw):
    assert e.context == r["question"] and list(e.endings) == r["choices"]["text"]
    assert e.label == "ABCDE".index(r["answerKey"])


def test_features_follow_run_swag(tokenizer):
  ex = mc.read_swag_csv(str(FIX / "val.csv"))[:1]
  f = mc.convert_examples_to_features(ex, tokenizer, 40)
  assert f["input_ids"].shape == (1, 4, 40) and f["labels"].tolist() == [2]
  for j, ending in enumerate(ex[0].endings):
    n = int(f["attention_mask"][0, j].sum())
    tokens = tokenizer.convert_ids_to_tokens(f["input_ids"][0, j, :n])
    ctx = tokenizer.tokenize(ex[0].context)
    end = tokenizer.tokenize("She") + tokenizer.tokenize(ending)
    assert tokens == ["[CLS]", *ctx, "[SEP]", *end, "[SEP]"]
    assert f["token_type_ids"][0, j, :n].tolist() == [0] * (len(ctx) + 2) + [1] * (
        len(end) + 1)
    assert (f["input_ids"][0, j, n:] == tokenizer.pad_id).all()
    assert not f["attention_mask"][0, j, n:].any()


def test_truncation_pops_the_longer_side_per_choice(tokenizer):
  a, b = list(range(10)), list(range(4))
  mc.truncate_seq_pair(a, b, 9)
  assert (a, b) == (list(range(5)), list(range(4)))
  a, b = list(range(5)), list(range(5))
  mc.truncate_seq_pair(a, b, 8)  # ties pop from b first, as the original
  assert (len(a), len(b)) == (4, 4)
  # Each choice truncates its own copy of the context (the original copies it per ending).
  words = "one two three four five six seven eight nine ten".split()
  ex = mc.MultipleChoiceExample("x", " ".join(words * 2), "", ("red fox", " ".join(words)), 0)
  f = mc.convert_examples_to_features([ex], tokenizer, 19)
  ctx_lens = (f["token_type_ids"][0] == 0).sum(-1) - 2
  assert ctx_lens.tolist() == [14, 8]  # 20+2 -> 14+2 ; 20+10 -> 8+8 (ties pop the ending)
  assert f["attention_mask"].sum(-1).tolist() == [[19, 19]]
  assert (f["input_ids"][0, :, 0] == tokenizer.cls_id).all()
  assert (f["input_ids"][0, :, -1] == tokenizer.sep_id).all()
  tokens = tokenizer.convert_ids_to_tokens(f["input_ids"][0, 1])
  assert tokens == ["[CLS]", *words[:8], "[SEP]", *words[:8], "[SEP]"]
  assert mc.longest_sequence([ex], tokenizer) == 20 + 10 + 3


def _write_csv(path, rows, header=mc.SWAG_HEADER):
  with open(path, "w", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
  return str(path)


def _good_rows():
  return list(csv.reader(open(FIX / "train.csv")))[1:]


def test_csv_missing_ending_names_file_and_row(tmp_path):
  rows = _good_rows()
  rows[3][9] = ""  # ending2 of the 4th data row (file row 5)
  path = _write_csv(tmp_path / "train.csv", rows)
  with pytest.raises(mc.MultipleChoiceError, match=r"train\.csv, row 5 .*ending2 is missing"):
    mc.read_swag_csv(path)
  rows = _good_rows()
  rows[1] = rows[1][:10] + [rows[1][11]]  # one column fewer: an ending dropped
  path = _write_csv(tmp_path / "short.csv", rows)
  with pytest.raises(mc.MultipleChoiceError, match=r"short\.csv, row 3 .*11 columns"):
    mc.read_swag_csv(path)


def test_label_out_of_range_names_file_and_row(tmp_path):
  rows = _good_rows()
  rows[6][11] = "4"
  path = _write_csv(tmp_path / "train.csv", rows)
  with pytest.raises(mc.MultipleChoiceError, match=r"train\.csv, row 8 .*label 4 is outside 0\.\.3"):
    mc.read_swag_csv(path)
  bad = tmp_path / "bad.jsonl"
  lines = open(FIX / "sample.jsonl").read().splitlines()
  record = json.loads(lines[2])
  record["label"] = 7
  lines[2] = json.dumps(record)
  bad.write_text("\n".join(lines) + "\n")
  with pytest.raises(mc.MultipleChoiceError, match=r"bad\.jsonl, row 3: label 7 is outside"):
    mc.read_swag_jsonl(str(bad))
  record = json.loads(open(FIX / "commonsense_qa.jsonl").readline())
  record["answerKey"] = "F"
  (tmp_path / "cq.jsonl").write_text(json.dumps(record) + "\n")
  with pytest.raises(mc.MultipleChoiceError, match=r"cq\.jsonl, row 1: answerKey 'F'"):
    mc.read_commonsense_qa(str(tmp_path / "cq.jsonl"))


def test_wrong_header_names_file_and_row(tmp_path):
  header = list(mc.SWAG_HEADER)
  header[4], header[5] = "sent2", "sent1"
  path = _write_csv(tmp_path / "val.csv", _good_rows(), header=header)
  with pytest.raises(mc.MultipleChoiceError,
                     match=r"val\.csv, row 1 \(line 1\): header .* is not the official SWAG"):
    mc.read_swag_csv(path)


def test_jsonl_missing_ending_key_and_bad_json(tmp_path):
  lines = open(FIX / "sample.jsonl").read().splitlines()
  record = json.loads(lines[4])
  del record["ending3"]
  lines[4] = json.dumps(record)
  (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
  with pytest.raises(mc.MultipleChoiceError, match=r"a\.jsonl, row 5: ending3 is missing"):
    mc.read_swag_jsonl(str(tmp_path / "a.jsonl"))
  (tmp_path / "b.jsonl").write_text(lines[0] + "\n{not json\n")
  with pytest.raises(mc.MultipleChoiceError, match=r"b\.jsonl, row 2: not valid JSON"):
    mc.read_swag_jsonl(str(tmp_path / "b.jsonl"))
  with pytest.raises(mc.MultipleChoiceError, match=r"data file not found"):
    mc.read_swag_jsonl(str(tmp_path / "missing.jsonl"))


def test_any_number_of_choices(tokenizer):
  csqa = mc.read_examples(str(FIX / "commonsense_qa.jsonl"), "commonsense_qa", 5)
  f = mc.convert_examples_to_features(csqa, tokenizer, 32)
  assert f["input_ids"].shape == (12, 5, 32)
  with pytest.raises(mc.MultipleChoiceError, match=r"5 choice texts .* expected 4"):
    mc.read_examples(str(FIX / "commonsense_qa.jsonl"), "commonsense_qa", 4)
