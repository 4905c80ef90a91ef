"""GLUE readers: every task's layout (fixtures + the real shared files), bad input errors."""
import builtins
import pathlib

import numpy as np
import pytest

from bert_jax.data import glue

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "glue"


def read(task, split, data_dir=FIXTURES):
  return glue.read_split(glue.get_task(task), split, str(data_dir))


def test_mnli_all_splits_and_ax_from_fixtures():
  train = read("mnli", "train")  # 12-column train layout
  dm, dmm = read("mnli", "dev_matched"), read("mnli", "dev_mismatched")  # 16 columns
  assert [e.label for e in train] == ["neutral", "contradiction", "entailment",
                                      "contradiction", "contradiction"]
  assert [e.label for e in dm] == [e.label for e in train]  # gold_label, not label1
  assert dm[0].text_a == "The new rights are nice enough"
  assert dm[0].text_b == "Everyone really likes the newest benefits "
  assert [e.label for e in dmm] == [e.label for e in dm][::-1]
  tm, tmm = read("mnli", "test_matched"), read("mnli", "test_mismatched")
  assert [e.index for e in tm] == ["0", "1", "2", "3", "4"] and len(tmm) == 3
  assert all(e.label is None for e in tm + tmm)
  ax = read("mnli", "ax")
  assert len(ax) == 5 and ax[1].text_a.startswith("This site includes")
  spec = glue.get_task("mnli")
  assert spec.eval_splits == ("dev_matched", "dev_mismatched")
  assert dict(spec.submission) == {"test_matched": "MNLI-m.tsv",
                                   "test_mismatched": "MNLI-mm.tsv", "ax": "AX.tsv"}


def test_qqp_wnli_mrpc_cola_stsb_from_fixtures():
  qqp = read("qqp", "dev")
  assert len(qqp) == 9 and qqp[2].label == "1"
  assert qqp[2].text_a == "Is there a reason why we should travel alone?"
  qqp_test = read("qqp", "test")
  assert qqp_test[0].index == "0" and qqp_test[0].label is None
  assert len(read("qqp", "train")) == 6
  wnli = read("wnli", "train")
  assert len(wnli) == 12 and {e.label for e in wnli} == {"0", "1"}
  mrpc = read("mrpc", "train")  # BOM header
  assert len(mrpc) == 64 and mrpc[0].label in ("0", "1") and mrpc[0].text_b
  assert [e.index for e in read("mrpc", "test")][:2] == ["0", "1"]
  cola = read("cola", "train")  # no header
  assert len(cola) == 40 and cola[0].text_b is None
  assert cola[0].text_a == "Our friends won't buy this analysis, let alone the next one we propose."
  stsb = read("stsb", "dev")
  assert all(isinstance(e.label, float) and 0 <= e.label <= 5 for e in stsb)
  np.testing.assert_allclose(glue.label_ids(glue.get_task("stsb"), stsb),
                             [e.label for e in stsb])
  ids = glue.label_ids(glue.get_task("mnli"), read("mnli", "dev_matched"))
  assert ids.tolist() == [2, 0, 1, 0, 0]  # contradiction, entailment, neutral
  assert glue.label_ids(glue.get_task("mrpc"), read("mrpc", "test")).tolist() == [-1] * 16


EXPECTED_ROWS = {  # shared/data/README.md row counts (= GLUE's)
    ("cola", "train"): 8551, ("cola", "dev"): 1043, ("cola", "test"): 1063,
    ("sst2", "train"): 67349, ("sst2", "dev"): 872, ("sst2", "test"): 1821,
    ("mrpc", "train"): 3668, ("mrpc", "dev"): 408, ("mrpc", "test"): 1725,
    ("stsb", "train"): 5749, ("stsb", "dev"): 1500, ("stsb", "test"): 1379,
    ("rte", "train"): 2490, ("rte", "dev"): 277, ("rte", "test"): 3000,
    ("qnli", "dev"): 5463, ("qnli", "test"): 5463, ("wnli", "dev"): 71,
}


@pytest.mark.parametrize("task,split", list(EXPECTED_ROWS))
def test_real_glue_files_read_completely(shared_data, task, split):
  examples = read(task, split, shared_data / "glue")
  assert len(examples) == EXPECTED_ROWS[task, split]
  spec = glue.get_task(task)
  if split != "test":
    if spec.is_regression:
      assert all(0.0 <= e.label <= 5.0 for e in examples)
    else:
      assert {e.label for e in examples} == set(spec.labels)
  else:
    assert [e.index for e in examples] == [str(i) for i in range(len(examples))]
  assert all(e.text_a for e in examples)
  assert all((e.text_b is not None) == (spec.text_b is not None) for e in examples)


def test_real_label_counts_match_the_data_readme(shared_data):
  count = lambda t, s: {l: sum(e.label == l for e in read(t, s, shared_data / "glue"))
                        for l in glue.get_task(t).labels}
  assert count("mrpc", "train") == {"0": 1194, "1": 2474}
  assert count("rte", "dev") == {"entailment": 146, "not_entailment": 131}
  assert count("cola", "dev") == {"0": 322, "1": 721}


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------

def _write(tmp_path, task_dir, split, text):
  d = tmp_path / task_dir
  d.mkdir(parents=True, exist_ok=True)
  (d / f"{split}.tsv").write_text(text, encoding="utf-8")
  return str(d / f"{split}.tsv")


def test_missing_column_names_file_and_line(tmp_path):
  path = _write(tmp_path, "RTE", "train",
                "index\tsentence1\tsentence2\tlabel\n0\tA cat.\tAn animal.\tentailment\n"
                "1\tA dog.\tnot_entailment\n")
  with pytest.raises(glue.GlueDataError, match=rf"{path}, line 3: 3 columns, expected 4"):
    read("rte", "train", tmp_path)


def test_unknown_label_names_file_line_and_labels(tmp_path):
  path = _write(tmp_path, "RTE", "dev",
                "index\tsentence1\tsentence2\tlabel\n0\tA cat.\tAn animal.\tentailment\n"
                "1\tA dog.\tA cat.\tcontradiction\n")
  with pytest.raises(glue.GlueDataError,
                     match=rf"{path}, line 3: unknown label 'contradiction' for RTE; "
                           r"expected one of \['entailment', 'not_entailment'\]"):
    read("rte", "dev", tmp_path)


def test_bad_regression_score_and_missing_header_column(tmp_path):
  header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
  path = _write(tmp_path, "STS-B", "dev", header + "0\tx\tx\tx\tx\tx\tx\tA.\tB.\thigh\n")
  with pytest.raises(glue.GlueDataError, match=rf"{path}, line 2: score 'high' is not a number"):
    read("stsb", "dev", tmp_path)
  path = _write(tmp_path, "QQP", "dev", "id\tquestion1\tquestion2\n1\ta?\tb?\n")
  with pytest.raises(glue.GlueDataError,
                     match=rf"{path}, line 1: header .* lacks column\(s\) \['is_duplicate'\]"):
    read("qqp", "dev", tmp_path)


def test_missing_file_and_unknown_task():
  with pytest.raises(glue.GlueDataError, match=r"MNLI test_matched file not found: .*nowhere"):
    read("mnli", "test_matched", "/nowhere")
  with pytest.raises(glue.GlueDataError, match=r"unknown GLUE task 'mrcp': use one of cola, "
                                               r"sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli"):
    glue.get_task("mrcp")
  with pytest.raises(glue.GlueDataError, match="predicted by the MNLI model"):
    glue.get_task("AX")
  assert glue.get_task("SST-2").name == "sst2" and glue.get_task("STS-B").name == "stsb"


def test_tfds_source_without_tensorflow_datasets_is_a_clear_error(monkeypatch):
  real_import = builtins.__import__

  def no_tfds(name, *args, **kwargs):
    if name.startswith("tensorflow_datasets"):
      raise ImportError("No module named 'tensorflow_datasets'")
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", no_tfds)
  with pytest.raises(glue.GlueDataError, match=r"needs tensorflow-datasets .* source='tsv'"):
    glue.read_split(glue.get_task("mrpc"), "dev", "", source="tfds")
  with pytest.raises(glue.GlueDataError, match="config.glue.source='hub'"):
    glue.read_split(glue.get_task("mrpc"), "dev", "", source="hub")


def test_tfds_examples_map_labels_to_glue_names(monkeypatch):
  """With stand-in TFDS rows (data/tfds_sources.py): TFDS int labels -> the files' label
  names."""
  from bert_jax.data import tfds_sources
  records = {("glue/mnli", "validation_matched"): [
      {"premise": b"A man sleeps.", "hypothesis": b"A person rests.", "label": 0, "idx": 7},
      {"premise": b"A man sleeps.", "hypothesis": b"He runs.", "label": 2, "idx": 8}],
      ("glue/ax", "test"): [{"premise": b"P.", "hypothesis": b"H.", "label": -1, "idx": 0}],
      ("glue/stsb", "test"): [{"sentence1": b"a", "sentence2": b"b", "label": -1.0, "idx": 3}]}
  monkeypatch.setattr(tfds_sources, "examples",
                      lambda name, split, data_dir="": iter(records[name, split]))
  mnli = glue.get_task("mnli")
  dev = glue.read_split(mnli, "dev_matched", "", source="tfds")
  assert [(e.index, e.label, e.text_b) for e in dev] == [
      ("7", "entailment", "A person rests."), ("8", "contradiction", "He runs.")]
  assert glue.read_split(mnli, "ax", "", source="tfds")[0].label is None
  assert glue.read_split(glue.get_task("stsb"), "test", "", source="tfds")[0].label is None
