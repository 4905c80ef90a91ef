"""Datasets by TFDS name, offline (issue 19): tiny TFDS datasets are prepared in tmp from our
local fixture files by builders written here with the real builders' names and features
(glue/mrpc, squad/v1.1 + v2.0, hellaswag, wikipedia/20230601.en), then read back by name +
data directory only, as a user's prepared TFDS directory is (no builder code, no network)."""
import csv
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from _xla import xla_flags  # noqa: E402
from bert_jax import config as config_lib  # noqa: E402
from bert_jax.data import glue as glue_data  # noqa: E402
from bert_jax.data import multiple_choice as mc  # noqa: E402
from bert_jax.data import squad as squad_data  # noqa: E402
from bert_jax.data import tfds_sources  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures"
CORPUS = pathlib.Path(config_lib.BUNDLED_DIR) / "corpus"


def _info(builder, features):
  return tfds.core.DatasetInfo(builder=builder, features=tfds.features.FeaturesDict(features))


def _mrpc_rows(split):
  path = FIX / "glue" / "MRPC" / f"{split}.tsv"
  with open(path, encoding="utf-8-sig", newline="") as f:
    rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
  header, rows = rows[0], rows[1:]
  for i, r in enumerate(rows):
    row = dict(zip(header, r))
    yield i, {"sentence1": row["#1 String"], "sentence2": row["#2 String"],
              "label": int(row.get("Quality", -1)), "idx": i}


class Glue(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """TFDS glue/mrpc's features (sentence1, sentence2, label, idx) from our MRPC TSVs."""
  name = "glue"
  VERSION = tfds.core.Version("2.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="mrpc")]

  def _info(self):
    return _info(self, {"sentence1": tfds.features.Text(), "sentence2": tfds.features.Text(),
                        "label": tfds.features.ClassLabel(names=["not_equivalent", "equivalent"]),
                        "idx": np.int32})

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples("train"),
            "validation": self._generate_examples("dev")}

  def _generate_examples(self, split):
    yield from _mrpc_rows(split)


def _squad_rows(path):
  for article in json.loads(path.read_text())["data"]:
    for p in article["paragraphs"]:
      for qa in p["qas"]:
        answers = qa["answers"]
        row = {"id": qa["id"], "title": article["title"], "context": p["context"],
               "question": qa["question"],
               "answers": {"text": [a["text"] for a in answers],
                           "answer_start": [a["answer_start"] for a in answers]}}
        yield qa["id"], row, qa


class Squad(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """TFDS squad's features (v2.0 adds is_impossible + plausible_answers) from our JSON."""
  name = "squad"
  VERSION = tfds.core.Version("3.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="v1.1"), tfds.core.BuilderConfig(name="v2.0")]

  def _info(self):
    answers = tfds.features.Sequence({"text": tfds.features.Text(), "answer_start": np.int32})
    f = {"id": tfds.features.Text(), "title": tfds.features.Text(),
         "context": tfds.features.Text(), "question": tfds.features.Text(), "answers": answers}
    if self.builder_config.name == "v2.0":
      f.update(is_impossible=np.bool_, plausible_answers=tfds.features.Sequence(
          {"text": tfds.features.Text(), "answer_start": np.int32}))
    return _info(self, f)

  def _split_generators(self, dl_manager):
    v = self.builder_config.name
    train = FIX / "squad" / ("train-v2.0-sample.json" if v == "v2.0" else "dev-v1.1-sample.json")
    return {"train": self._generate_examples(train),
            "validation": self._generate_examples(FIX / "squad" / f"dev-{v}-sample.json")}

  def _generate_examples(self, path):
    v2 = self.builder_config.name == "v2.0"
    for key, row, qa in _squad_rows(path):
      if v2:
        plausible = qa.get("plausible_answers", [])
        row.update(is_impossible=bool(qa.get("is_impossible")), plausible_answers={
            "text": [a["text"] for a in plausible],
            "answer_start": [a["answer_start"] for a in plausible]})
      yield key, row


class Hellaswag(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """TFDS hellaswag's features (context, endings, label, ...) from our SWAG records."""
  name = "hellaswag"
  VERSION = tfds.core.Version("1.1.0")

  def _info(self):
    return _info(self, {"context": tfds.features.Text(),
                        "endings": tfds.features.Sequence(tfds.features.Text()),
                        "activity_label": tfds.features.Text(), "label": np.int32,
                        "split_type": tfds.features.Text(), "source_id": tfds.features.Text()})

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(), "validation": self._generate_examples()}

  def _generate_examples(self):
    for i, line in enumerate((FIX / "swag" / "sample.jsonl").read_text().splitlines()):
      r = json.loads(line)
      yield i, {"context": f"{r['sent1']} {r['sent2']}",
                "endings": [r[f"ending{k}"] for k in range(4)], "activity_label": "",
                "label": int(r["label"]), "split_type": "", "source_id": f"swag-{i}"}


class Wikipedia(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """TFDS wikipedia's features (title, text): the bundled books' chapters as articles."""
  name = "wikipedia"
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="20230601.en")]

  def _info(self):
    return _info(self, {"title": tfds.features.Text(), "text": tfds.features.Text()})

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    text = (CORPUS / "train-sherlock-holmes.txt").read_text(encoding="utf-8")
    for i, doc in enumerate(d for d in text.split("\n\n") if d.strip()):
      # Wikipedia's layout: paragraphs on lines, several sentences per line.
      yield i, {"title": f"doc {i}", "text": " ".join(doc.split("\n"))}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """The four datasets prepared (array_record, as TFDS writes them) into one directory."""
  d = str(tmp_path_factory.mktemp("tensorflow_datasets"))
  for cls, configs in ((Glue, ["mrpc"]), (Squad, ["v1.1", "v2.0"]), (Hellaswag, [None]),
                       (Wikipedia, ["20230601.en"])):
    for config in configs:
      kw = {"config": config} if config else {}
      cls(data_dir=d, file_format="array_record", **kw).download_and_prepare()
  return d


def _key(e):
  return (e.text_a, e.text_b, e.label)


def test_glue_by_name_equals_the_tsv(data_dir):
  spec = glue_data.get_task("mrpc")
  for split in ("train", "dev"):
    tsv = glue_data.read_split(spec, split, str(FIX / "glue"), "tsv")
    by_name = glue_data.read_split(spec, split, data_dir, "tfds:glue/mrpc")
    assert sorted(map(_key, by_name)) == sorted(map(_key, tsv)) and len(tsv) > 10
  # The config spelling: --config.glue.source=tfds:glue/mrpc, the directory its own key.
  from bert_jax.tasks import glue
  c = config_lib.load_config_file(str(REPO / "configs" / "glue.py"))
  c.glue.source = "tfds:glue/mrpc"
  c.data.tfds_data_dir = data_dir
  task = glue.make_task(c, "mrpc")
  assert sorted(map(_key, task.load_examples("dev"))) == sorted(
      map(_key, glue_data.read_split(spec, "dev", str(FIX / "glue"))))
  with pytest.raises(glue_data.GlueDataError, match="not MRPC's TFDS dataset"):
    glue_data.read_split(spec, "dev", data_dir, "tfds:glue/rte")


@pytest.mark.parametrize("version,official", [("1.1", "dev-v1.1-sample.json"),
                                              ("2.0", "dev-v2.0-sample.json")])
def test_squad_by_name_equals_the_official_json(data_dir, version, official):
  from bert_jax.tasks import squad
  c = config_lib.load_config_file(str(REPO / "configs" / "squad.py"))
  c.squad.version = version
  c.squad.train_file = f"tfds:squad/v{version}"
  c.squad.dev_file = f"tfds:squad/v{version}"
  c.data.tfds_data_dir = data_dir
  task = squad.make_task(c)
  ours, _ = squad_data.read_squad(task.dataset("dev"), is_training=False)
  ref, _ = squad_data.read_squad(str(FIX / "squad" / official), is_training=False)
  key = lambda e: (e.qas_id, e.question, tuple(e.doc_tokens), tuple(e.answers),
                   e.is_impossible)
  assert sorted(map(key, ours)) == sorted(map(key, ref)) and len(ref) > 5
  if version == "2.0":
    assert any(e.is_impossible for e in ours)
  train, _ = squad_data.read_squad(task.dataset("train"), is_training=True)
  assert train  # train_file: split train


def test_multiple_choice_by_name(data_dir, monkeypatch):
  from bert_jax.tasks import swag
  ref = mc.read_examples(str(FIX / "swag" / "sample.jsonl"), "swag_jsonl", 4)
  key = lambda examples: sorted((e.endings, e.label) for e in examples)
  c = config_lib.load_config_file(str(REPO / "configs" / "swag.py"))
  c.swag.train_file = c.swag.dev_file = "tfds:hellaswag"
  c.data.tfds_data_dir = data_dir
  task = swag.MultipleChoiceTask.from_config(c)
  assert key(task.load_examples("dev")) == key(ref)  # validation split
  # $TFDS_DATA_DIR, as set when read, without a configured directory.
  monkeypatch.setenv("TFDS_DATA_DIR", data_dir)
  assert key(mc.read_examples("tfds:hellaswag#validation", "swag_jsonl", 4)) == key(ref)
  with pytest.raises(tfds_sources.TfdsError, match="no SWAG builder.*train.csv"):
    mc.read_examples("tfds:swag", "swag_jsonl", 4)


def test_wikipedia_as_a_pretraining_corpus(data_dir, tmp_path):
  """create_pretraining_data --input_file=tfds:wikipedia/20230601.en in a fresh process:
  read by name from the prepared directory, written as BERT text, then shards."""
  env = dict(os.environ, XLA_FLAGS=xla_flags(1), BERT_JAX_CACHE_DIR=str(tmp_path / "cache"))
  proc = subprocess.run(
      [sys.executable, "-m", "bert_jax.tools.create_pretraining_data",
       "--input_file=tfds:wikipedia/20230601.en", f"--tfds_data_dir={data_dir}",
       f"--vocab_file={config_lib.BUNDLED_DIR}/vocab.txt", f"--output_dir={tmp_path / 'shards'}",
       "--max_seq_length=64", "--dupe_factor=1", "--num_workers=1"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  meta = json.loads((tmp_path / "shards" / "metadata.json").read_text())
  assert meta["num_instances"] > 100
  text = "".join(p.read_text() for p in sorted((tmp_path / "cache").rglob("0*.txt")))
  docs = [d for d in text.split("\n\n") if d.strip()]
  source = (CORPUS / "train-sherlock-holmes.txt").read_text(encoding="utf-8")
  # One document per article (blank line between), one sentence per line again.
  assert len(docs) == len([d for d in source.split("\n\n") if d.strip()]) > 5
  assert len(text.splitlines()) > 0.9 * len(source.splitlines())
  assert "To Sherlock Holmes she is always THE woman." in text.splitlines()
  with pytest.raises(tfds_sources.TfdsError, match="no 'text' feature"):
    tfds_sources.corpus_files("tfds:glue/mrpc", str(tmp_path / "x"), data_dir)


def test_sentences_split_lines_at_sentence_ends():
  assert tfds_sources.sentences('He said "Go." Then he left! Why? 3 men came.\nNext line') == [
      'He said "Go."', "Then he left!", "Why?", "3 men came.", "Next line"]
