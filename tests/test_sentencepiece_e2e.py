"""A SentencePiece vocabulary end to end, every step the command a user types (issue 19):
build_vocab --type=sentencepiece -> create_pretraining_data -> pre-training -> GLUE
fine-tuning from the pre-training workdir -> export -> predict, the `.model` file carried
as bytes (under its own name) wherever a vocabulary is copied. And pre-training configs
that name no vocabulary are refused before anything is built."""
import glob
import hashlib
import json
import os
import pathlib
import subprocess
import sys

import pytest

from _xla import xla_flags
from bert_jax import config as config_lib
from bert_jax import tokenization
from bert_jax.config import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[1]
CORPUS = pathlib.Path(config_lib.BUNDLED_DIR) / "corpus"
GLUE = REPO / "tests" / "fixtures" / "glue"
VOCAB_SIZE = 1000
# One CPU device per command (the user's laptop), CPU only.
ENV = dict(os.environ, XLA_FLAGS=xla_flags(1), JAX_PLATFORMS="cpu")


def run(*args):
  proc = subprocess.run([sys.executable, "-m", *map(str, args)], cwd=REPO, env=ENV,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
  assert "Traceback" not in proc.stderr
  return proc.stdout


@pytest.fixture(scope="module")
def journey(tmp_path_factory):
  t = tmp_path_factory.mktemp("sp")
  sp = t / "vocab" / "sp.model"
  run("bert_jax.tools.build_vocab", f"--input_file={CORPUS}/train-sherlock-holmes.txt",
      f"--output={sp}", "--type=sentencepiece", f"--vocab_size={VOCAB_SIZE}")
  run("bert_jax.tools.create_pretraining_data",
      f"--input_file={CORPUS}/train-sherlock-holmes.txt", f"--vocab_file={sp}",
      f"--output_dir={t / 'shards'}", "--max_seq_length=32", "--max_predictions_per_seq=5",
      "--dupe_factor=1", "--nodo_lower_case", "--num_workers=1")
  pre = t / "pretrain"
  pretrain_log = run(
      "bert_jax.main", "--config=configs/tiny.py", f"--workdir={pre}",
      f"--config.vocab_file={sp}", "--config.do_lower_case=False",
      f"--config.model.vocab_size={VOCAB_SIZE}", f"--config.data.train_files={t / 'shards'}",
      "--config.data.eval_files=", "--config.model.num_layers=1",
      "--config.model.hidden_size=32", "--config.model.num_heads=2",
      "--config.model.intermediate_size=64", "--config.model.max_position_embeddings=32",
      "--config.data.max_seq_length=32", "--config.data.max_predictions_per_seq=5",
      "--config.train.batch_size=8", "--config.train.num_steps=3",
      "--config.train.warmup_steps=1", "--config.train.log_every=1",
      "--config.train.eval_steps=0", "--config.train.checkpoint_every=3")
  glue = t / "mrpc"
  run("bert_jax.glue", "--config=configs/glue.py", f"--workdir={glue}",
      f"--config.init_checkpoint={pre}", "--config.glue.task=mrpc",
      f"--config.glue.data_dir={GLUE}", "--config.do_lower_case=False",
      "--config.data.max_seq_length=32", "--config.train.batch_size=8",
      "--config.train.learning_rate=1e-3", "--config.finetune.max_steps=2",
      "--config.finetune.max_train_examples=16", "--config.finetune.eval_batch_size=8",
      "--config.finetune.bucket_multiple=32", "--config.train.log_every=1")
  exported = t / "exported"
  run("bert_jax.tools.export", f"--workdir={glue}", f"--output_dir={exported}")
  predictions = t / "predictions.jsonl"
  run("bert_jax.tools.predict", f"--model_dir={exported}",
      f"--input_file={GLUE / 'MRPC' / 'dev.tsv'}", f"--output_file={predictions}",
      "--batch_size=8")
  return dict(sp=sp, shards=t / "shards", pre=pre, glue=glue, exported=exported,
              predictions=predictions, pretrain_log=pretrain_log)


def test_the_model_file_travels_as_bytes_under_its_own_name(journey):
  original = journey["sp"].read_bytes()
  assert journey["sp"].with_suffix(".vocab").is_file()  # the trainer's listing, beside it
  # Pre-training copied it into its workdir, the export into its directory: same bytes,
  # same name (the .model suffix is how the tokenizer is chosen).
  for copy in (journey["pre"] / "sp.model", journey["exported"] / "sp.model"):
    assert copy.read_bytes() == original, copy
  assert not (journey["pre"] / "vocab.txt").exists()
  spec = json.loads((journey["exported"] / "serving.json").read_text())
  assert spec["vocab_file"] == "sp.model" and spec["do_lower_case"] is False
  meta = json.loads((journey["shards"] / "metadata.json").read_text())  # the shards' vocab
  assert (meta["vocab_size"], meta["do_lower_case"]) == (VOCAB_SIZE, False)
  assert meta["vocab_sha256"] == hashlib.sha256(original).hexdigest()


def test_each_step_used_the_sentencepiece_vocabulary(journey):
  from bert_jax import checkpoints
  tok = tokenization.load_tokenizer(str(journey["sp"]), do_lower_case=False)
  assert isinstance(tok, tokenization.SentencePieceTokenizer)
  assert tok.vocab_size == VOCAB_SIZE
  assert [tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id] == [0, 1, 2, 3, 4]
  # Pre-training ran its steps on the shards; fine-tuning started from its workdir,
  # whose vocabulary and casing the resolver reads back.
  metrics = [json.loads(l) for l in (journey["pre"] / "metrics.jsonl").read_text().splitlines()]
  assert [m["step"] for m in metrics if "train/loss" in m] == [1, 2, 3]
  r = checkpoints.resolve(str(journey["pre"]))
  assert (r.format, pathlib.Path(r.vocab_file).name, r.do_lower_case) == (
      "bert_jax_run", "sp.model", False)
  results = json.loads((journey["glue"] / "results.json").read_text())
  assert results["num_steps"] == 2
  # The fine-tuned workdir resolves too (its best params, the pre-training vocabulary).
  r = checkpoints.resolve(str(journey["glue"]))
  assert r.format == "bert_jax_best" and pathlib.Path(r.vocab_file).name == "sp.model"


def test_predictions_from_the_export(journey):
  from bert_jax.tools import export
  rows = [json.loads(l) for l in journey["predictions"].read_text().splitlines()]
  dev = (GLUE / "MRPC" / "dev.tsv").read_text().splitlines()[1:]
  assert len(rows) == len(dev)
  assert all(r["label"] in ("0", "1") and abs(sum(r["probabilities"].values()) - 1) < 1e-5
             for r in rows)
  predictor = export.load(str(journey["exported"]))
  assert isinstance(predictor.tokenizer, tokenization.SentencePieceTokenizer)
  ref = tokenization.load_tokenizer(str(journey["sp"]), do_lower_case=False)
  text = "Holmes said, \"It is quite a three-pipe problem.\""
  assert predictor.tokenizer.encode(text) == ref.encode(text)


PRETRAIN_CONFIGS = ["base.py", "large.py", "large_phase2.py"] + sorted(
    os.path.relpath(p, REPO / "configs") for p in glob.glob(str(REPO / "configs/pods/*.py")))


@pytest.mark.parametrize("name", PRETRAIN_CONFIGS)
def test_pretraining_configs_without_a_vocabulary_are_refused(name, tmp_path):
  from bert_jax import train
  c = config_lib.load_config_file(str(REPO / "configs" / name))
  c.data.train_files = "gs://BUCKET/shards128/*"  # as their docstrings run them
  if c.init_checkpoint == config_lib.REQUIRED:
    c.init_checkpoint = ""
  with pytest.raises(ConfigError) as e:
    train.check_run_inputs(c)
  msg = str(e.value)
  assert "\n" not in msg
  for w in ("config.vocab_file is empty", "bundled 8000-token vocabulary",
            "--config.vocab_file=PATH/vocab.txt", "configs/tiny.py"):
    assert w in msg, (w, msg)
  # Naming a vocabulary (here the real 30,522-token BERT-Base one) is the fix.
  c.vocab_file = os.path.join(REPO.parent, "x", "vocab.txt")
  config_lib.check_pretrain_vocab(c)


def test_the_bundled_corpus_config_needs_no_vocabulary():
  c = config_lib.load_config_file(str(REPO / "configs" / "tiny.py"))
  config_lib.check_pretrain_vocab(c)  # the README's first command
  c.data.train_files = "gs://BUCKET/shards128/*"  # still a model sized for the bundled one
  config_lib.check_pretrain_vocab(c)
