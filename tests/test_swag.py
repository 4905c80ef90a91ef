"""SWAG multiple choice: loss, order invariance, and end-to-end fine-tuning runs.

The end-to-end runs go read -> features -> train steps -> predictions file through the
shared finetune.run with a 1-layer model (fast), on the 10 real SWAG records in
../shared/data and on the fixture copies (official CSV layout) in tests/fixtures/swag.
Order invariance uses the real pretrained MiniLM encoder.
"""
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import checkpoints, tokenization
from bert_jax import config as config_lib
from bert_jax.config import ConfigError
from bert_jax.data import multiple_choice as mc
from bert_jax.model import BertConfig, BertForMultipleChoice
from bert_jax.tasks import swag
from _numerics import encoder_roundings, f32_tol, f64_tol, mean_rtol, sum_roundings

FIX = pathlib.Path(__file__).resolve().parent / "fixtures" / "swag"


@pytest.fixture(scope="module", autouse=True)
def fast_compile():
  """XLA compiles these tiny programs in half the time without its optimisation passes."""
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


def test_choice_losses_is_softmax_cross_entropy():
  scores = jnp.array([[1.0, 2.0, 0.5, -1.0], [0.0, 0.0, 3.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
  labels = jnp.array([1, 0, -1])
  out = swag.choice_losses(scores, labels)
  s = np.asarray(scores, np.float64)
  logp = s - np.log(np.exp(s).sum(-1, keepdims=True))
  # float32 log-softmax over 4 (max, exp, 2 additions, log, 2 subtractions) vs float64
  np.testing.assert_allclose(out["loss"][:2], [-logp[0, 1], -logp[1, 0]], rtol=0,
                             atol=f32_tol(sum_roundings(4) + 5, 3.0, computations=1))
  assert float(out["loss"][2]) == 0.0  # unlabelled row
  assert out["accuracy"].tolist() == [1.0, 0.0, 0.0]
  m = swag.evaluate_scores(s, np.array([1, 0, -1]))
  assert m["accuracy"] == 0.5
  # both float64: the same log-softmax (+ the mean of 2) in two orders
  np.testing.assert_allclose(m["loss"], -(logp[0, 1] + logp[1, 0]) / 2, rtol=0,
                             atol=f64_tol(sum_roundings(4) + 7, 3.0))


@pytest.fixture(scope="module")
def minilm(minilm_path):
  model_cfg, params = checkpoints.load_pretrained(minilm_path)
  cfg = BertConfig.from_config(model_cfg)
  model = BertForMultipleChoice(cfg)
  # A head with unit-scale weights (the fresh init is std 0.02): well separated scores,
  # so "the same predicted ending" is not decided by float noise between near-ties.
  rng = np.random.default_rng(1)
  params = {"bert": params["bert"],
            "classifier": {"kernel": rng.normal(size=(cfg.hidden_size, 1)).astype(np.float32),
                           "bias": np.zeros((1,), np.float32)}}
  tok = tokenization.load_tokenizer(str(pathlib.Path(minilm_path) / "vocab.txt"))
  return model, params, tok


def _permute(examples, rng):
  perms = [rng.permutation(e.num_choices) for e in examples]
  permuted = [mc.MultipleChoiceExample(e.example_id, e.context, e.start_ending,
                                       tuple(e.endings[i] for i in p),
                                       int(np.argsort(p)[e.label]))
              for e, p in zip(examples, perms)]
  assert all(p.endings[p.label] == e.endings[e.label] for e, p in zip(examples, permuted))
  assert any((p != np.arange(len(p))).any() for p in perms)
  return perms, permuted


@pytest.mark.parametrize("dataset", ["swag", "commonsense_qa"])
def test_scores_invariant_to_choice_order(minilm, dataset):
  """Permute the endings and the label together: same loss, same predicted ending."""
  model, params, tok = minilm
  if dataset == "swag":
    examples = mc.read_swag_csv(str(FIX / "val.csv")) + mc.read_swag_csv(
        str(FIX / "train.csv"))[:2]
  else:
    examples = mc.read_commonsense_qa(str(FIX / "commonsense_qa.jsonl"))[:4]
  perms, permuted = _permute(examples, np.random.default_rng(0))
  apply = jax.jit(lambda p, b: model.apply({"params": p}, b["input_ids"],
                                           b["token_type_ids"], b["attention_mask"]))
  out = {}
  for name, exs in (("original", examples), ("permuted", permuted)):
    f = mc.convert_examples_to_features(exs, tok, 48)
    scores = apply(params, f)
    assert scores.shape == (4, examples[0].num_choices)
    losses = swag.choice_losses(scores, jnp.asarray(f["labels"]))
    chosen = [exs[i].endings[int(j)] for i, j in enumerate(np.argmax(scores, -1))]
    out[name] = (np.asarray(scores), np.asarray(losses["loss"]), chosen)
  (s0, l0, c0), (s1, l1, c1) = out["original"], out["permuted"]
  # A score is one float32 forward of MiniLM (6 layers, 48 tokens) + the head, computed
  # at another row of the batch: rounding of both, at the scores' scale.
  tol = f32_tol(encoder_roundings(6, 384, 1536, 48, 12), max(np.abs(s0).max(), 1.0))
  # The scores move with their endings...
  for i, p in enumerate(perms):
    np.testing.assert_allclose(s1[i], s0[i][p], rtol=0, atol=tol)
  # ... so the loss (<= 2x the scores' error + its log-softmax) and the chosen ending do
  # not change.
  np.testing.assert_allclose(l1, l0, rtol=0, atol=2 * tol + f32_tol(
      sum_roundings(s0.shape[1]) + 5, np.abs(s0).max()))
  assert c1 == c0
  assert (np.diff(np.sort(s0, -1), axis=-1) > 2 * tol).all()  # no ties within rounding


def _tiny_config(tmp_path, vocab_file, files, dataset="swag", num_choices=4, **swag_kw):
  c = config_lib.swag_config(dataset, num_choices)
  c.vocab_file = vocab_file
  c.model.num_layers = 1
  c.model.hidden_size = 32
  c.model.num_heads = 2
  c.model.intermediate_size = 64
  c.model.max_position_embeddings = 64
  c.model.scan_layers = False
  c.model.dropout_rate = c.model.attention_dropout_rate = 0.0  # fits 10 rows quickly
  c.data.max_seq_length = 64
  c.train.batch_size = 8
  c.train.learning_rate = 3e-3
  c.train.log_every = 4
  c.finetune.eval_batch_size = 16
  c.finetune.num_epochs = 12.0
  c.finetune.bucket_multiple = 64  # one shape: one compile of the train step
  c.finetune.save_best = False
  c.swag.train_file, c.swag.dev_file, c.swag.test_file = files
  for k, v in swag_kw.items():
    c.swag[k] = v
  return c


def _check_run(results, workdir, examples):
  """Predictions file: one row per example, probabilities, argmax; results agree."""
  pred_file = pathlib.Path(results["predictions"]["test"][0])
  assert pred_file.is_relative_to(workdir)
  rows = swag.read_predictions(str(pred_file))
  assert [r["id"] for r in rows] == [e.example_id for e in examples]
  probs = np.array([r["probs"] for r in rows])
  assert probs.shape == (len(examples), examples[0].num_choices)
  # each probability is written with 6 decimals (<= 5e-7 off)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=0, atol=probs.shape[1] * 5e-7)
  assert [r["pred"] for r in rows] == probs.argmax(-1).tolist()
  dev_rows = swag.read_predictions(results["predictions"]["dev"][0])
  dev_acc = np.mean([r["pred"] == r["label"] for r in dev_rows])
  assert results["best"]["dev/accuracy"] == pytest.approx(dev_acc, rel=mean_rtol(len(dev_rows)),
                                                         abs=0)
  # results.json names a run whose dev rows all pick one ending (null otherwise).
  saved = json.loads((pathlib.Path(workdir) / "results.json").read_text())
  picked = {r["pred"] for r in dev_rows}
  assert saved["degenerate"] == results["degenerate"]
  assert (results["degenerate"] is None) == (len(picked) > 1 or len(dev_rows) < 2
                                             or len({r["label"] for r in dev_rows}) < 2)
  if results["degenerate"]:
    assert results["degenerate"].startswith(
        f"all {len(dev_rows)} dev predictions are ending {picked.pop()} (")
  logged = [json.loads(l) for l in open(pathlib.Path(workdir) / "metrics.jsonl")]
  assert len([r for r in logged if "train/loss" in r]) == results["num_steps"] // 4
  assert len(results["history"]) == results["num_steps"] // 2  # one eval per epoch
  return rows


def test_real_swag_records_end_to_end(shared_data, minilm_path, tmp_path):
  sample = str(shared_data / "swag" / "sample.jsonl")
  vocab = str(pathlib.Path(minilm_path) / "vocab.txt")
  c = _tiny_config(tmp_path, vocab, (sample, sample, sample))
  results = swag.run(c, str(tmp_path))
  assert results["num_steps"] == 24  # 10 records, batch 8 -> 2 steps/epoch, 12 epochs
  examples = mc.read_swag_jsonl(sample)
  rows = _check_run(results, tmp_path, examples)
  assert [r["label"] for r in rows] == [e.label for e in examples]
  # Trained and evaluated on the same 10 records: it fits them.
  history = results["history"]
  assert history[-1]["dev/loss"] < history[0]["dev/loss"] - 0.1
  assert results["best"]["dev/accuracy"] >= 0.8


def test_fixture_csvs_end_to_end(minilm_path, tmp_path):
  """Self-contained sibling: official CSV layout (train / val / test without labels)."""
  vocab = str(pathlib.Path(minilm_path) / "vocab.txt")
  files = tuple(str(FIX / f) for f in ("train.csv", "val.csv", "test.csv"))
  c = _tiny_config(tmp_path, vocab, files)
  results = swag.run(c, str(tmp_path))
  rows = _check_run(results, tmp_path, mc.read_swag_csv(files[2], require_labels=False))
  assert [r["label"] for r in rows] == [None, None]
  assert set(results["best"]) == {"dev/accuracy", "dev/loss"}


def test_commonsense_qa_slices():
  f = str(FIX / "commonsense_qa.jsonl")
  c = config_lib.swag_config("commonsense_qa", 5)
  c.swag.train_file = c.swag.dev_file = f
  c.swag.train_slice, c.swag.dev_slice = ":8", "8:"
  task = swag.MultipleChoiceTask.from_config(c)
  train, dev = task.load_examples("train"), task.load_examples("dev")
  everything = mc.read_commonsense_qa(f)
  assert train == everything[:8] and dev == everything[8:]
  assert task.name == "commonsense_qa" and task.predict_splits == ()


def test_config_errors(tmp_path):
  c = config_lib.swag_config()
  with pytest.raises(ConfigError, match=r"config.swag.train_file is empty"):
    swag.MultipleChoiceTask.from_config(c)
  c.swag.train_file = c.swag.dev_file = str(FIX / "train.csv")
  c.swag.dataset = "hellaswag"
  with pytest.raises(ConfigError, match=r"config.swag.dataset='hellaswag'"):
    swag.MultipleChoiceTask.from_config(c)
  c.swag.dataset = "swag"
  c.swag.train_slice = "a:b"
  with pytest.raises(ConfigError, match=r"train_slice='a:b'"):
    swag.MultipleChoiceTask.from_config(c).load_examples("train")
  c.swag.train_slice = ""
  c.swag.num_choices = 5
  with pytest.raises(mc.MultipleChoiceError, match=r"SWAG CSVs have 4 endings"):
    swag.MultipleChoiceTask.from_config(c).load_examples("train")


def test_bad_test_file_fails_before_training(minilm_path, tmp_path):
  """A wrong header in test.csv is reported at once, not after the training run."""
  lines = (FIX / "test.csv").read_text().splitlines()
  lines[0] = lines[0].replace("sent1,sent2", "sent2,sent1")
  bad = tmp_path / "test.csv"
  bad.write_text("\n".join(lines) + "\n")
  vocab = str(pathlib.Path(minilm_path) / "vocab.txt")
  c = _tiny_config(tmp_path, vocab, (str(FIX / "train.csv"), str(FIX / "val.csv"), str(bad)))
  with pytest.raises(mc.MultipleChoiceError, match=r"test\.csv, row 1 \(line 1\): header"):
    swag.run(c, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()
