"""SQuAD task end to end on a tiny random BERT: train -> dev files and metrics, then
prediction with the fine-tuned params that survives a crash and resumes; loss, config,
TFDS conversion."""
import importlib.util
import json
import pathlib

import numpy as np
import pytest

from bert_jax import config as config_lib
from bert_jax.data import squad as squad_data
from bert_jax.tasks import squad
from bert_jax.tasks import squad_eval
from _numerics import EPS64, encoder_roundings, f32_tol, mean_rtol, sum_roundings

REPO = pathlib.Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures" / "squad"


def load_config():
  spec = importlib.util.spec_from_file_location("squad_config", REPO / "configs/squad.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


def tiny_config(minilm_path):
  c = load_config()
  c.vocab_file = f"{minilm_path}/vocab.txt"  # real vocab, random 1-layer H=32 model
  c.model.update(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                 max_position_embeddings=64)
  c.data.max_seq_length = 64
  c.squad.update(doc_stride=24, max_query_length=16,
                 train_file=str(FIX / "train-v2.0-sample.json"),
                 dev_file=str(FIX / "dev-v2.0-sample.json"))
  c.train.update(batch_size=16, learning_rate=3e-3, log_every=2)
  c.finetune.update(eval_batch_size=32, num_epochs=1.0, max_steps=8, bucket_multiple=64,
                    group_by_length_window=0)
  return c


@pytest.fixture(scope="module")
def trained(minilm_path, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("squad_run")
  c = tiny_config(minilm_path)
  results = squad.run(c, str(workdir))
  return c, workdir, results


def test_train_writes_files_and_consistent_metrics(trained):
  c, workdir, results = trained
  dev = json.loads((FIX / "dev-v2.0-sample.json").read_text())
  qids = [qa["id"] for a in dev["data"] for p in a["paragraphs"] for qa in p["qas"]]
  out = workdir / "predictions"
  preds = json.loads((out / "predictions.json").read_text())
  odds = json.loads((out / "null_odds.json").read_text())
  nbest = json.loads((out / "nbest_predictions.json").read_text())
  assert list(preds) == qids and list(odds) == qids and list(nbest) == qids
  for entries in nbest.values():
    assert 1 <= len(entries) <= 21
    # float64 softmax: each probability rounds once, their sum len(entries) times
    assert sum(e["probability"] for e in entries) == pytest.approx(
        1.0, rel=0, abs=2 * len(entries) * EPS64)
  ev = json.loads((workdir / "eval_results.json").read_text())
  assert ev == results["eval_results"]
  for key in ("exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total",
              "NoAns_exact", "NoAns_f1", "NoAns_total", "best_exact", "best_exact_thresh",
              "best_f1", "best_f1_thresh"):
    assert key in ev
  # the written files, scored by the standalone evaluator, give the reported numbers
  # (float64 means over the 21 questions, perhaps summed in another order)
  again = squad_eval.evaluate(dev, preds, odds, na_prob_thresh=0.0)
  assert (again["exact"], again["f1"]) == pytest.approx((ev["exact"], ev["f1"]),
                                                        rel=mean_rtol(21), abs=0)
  best = json.loads((out / "predictions_best_f1_thresh.json").read_text())
  assert squad_eval.evaluate(dev, best)["f1"] == pytest.approx(ev["best_f1"],
                                                               rel=mean_rtol(21), abs=0)
  assert ev["best_f1"] >= ev["f1"]
  # Answering nothing everywhere (at τ, else at the best-F1 τ) is named, as in results.
  assert ev["degenerate"] == results["degenerate"]
  if all(t == "" for t in preds.values()):
    assert ev["degenerate"].startswith("at τ=0, all 21 dev predictions are no-answer (")
  elif all(t == "" for t in best.values()):
    assert ev["degenerate"].startswith("at the best-F1 τ=")
  else:
    assert ev["degenerate"] is None
  # training ran and learned something: logged loss falls
  losses = [r["train/loss"] for r in map(json.loads, open(workdir / "metrics.jsonl"))
            if "train/loss" in r]
  assert len(losses) == 4 and all(np.isfinite(losses)) and losses[-1] < losses[0]
  assert (workdir / "best" / "params").is_dir()
  assert results["best"]["dev/total"] == 21


def test_predict_mode_crash_resume_matches_training_predictions(trained, tmp_path, capsys):
  c, workdir, _ = trained
  task = squad.make_task(c)
  out = tmp_path / "pred"
  c.finetune.eval_batch_size = 8  # several batches, so the crash hits half way
  with pytest.raises(RuntimeError, match="simulated crash"):
    squad.predict_file(task, c, "dev", str(out), str(workdir / "best"), fail_after_batches=3)
  partial = (out / "predictions.partial.jsonl").read_text().splitlines()
  assert 0 < len(partial) < 21  # those made before the crash are on disk
  assert not (out / "predictions.json").exists()
  paths = squad.predict_file(squad.make_task(c), c, "dev", str(out), str(workdir / "best"))
  assert f"resuming: {len(partial)} questions already predicted" in capsys.readouterr().out
  assert not (out / "predictions.partial.jsonl").exists()
  assert str(out / "eval_results.json") in paths
  got = json.loads((out / "predictions.json").read_text())
  ref = json.loads((workdir / "predictions" / "predictions.json").read_text())
  assert got == ref  # file-order incremental == sorted-bucket batch prediction
  got_odds = json.loads((out / "null_odds.json").read_text())
  ref_odds = json.loads((workdir / "predictions" / "null_odds.json").read_text())
  # null odds = (start + end logit of [CLS]) - (those of the best span): 4 float32
  # logits of the 1-layer model, each rounded differently in other batches/orders.
  nbest = json.loads((workdir / "predictions" / "nbest_predictions.json").read_text())
  scale = max(max(abs(e["start_logit"]), abs(e["end_logit"]))
              for entries in nbest.values() for e in entries)
  tol = 4 * f32_tol(encoder_roundings(1, 32, 64, 64, 2), scale)
  assert got_odds == pytest.approx(ref_odds, rel=0, abs=tol)


def test_span_loss_is_mean_of_start_and_end_cross_entropy():
  rng = np.random.default_rng(0)
  start, end = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
  mask = np.array([[1] * 6, [1] * 4 + [0] * 2, [1] * 3 + [0] * 3])
  sp, ep = np.array([2, 0, 1]), np.array([4, 3, 2])
  out = squad.span_losses(start, end, sp, ep, mask)

  def ce(logits, pos):
    x = np.where(mask > 0, logits, -np.inf)
    logp = x - np.log(np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True)) - x.max(
        1, keepdims=True)
    return -logp[np.arange(3), pos]

  # float32 (the inputs rounded once) vs numpy's float64: log-softmax over 6 (exp,
  # log2(6) additions, log, 2 subtractions) and the mean of two, at the logits' scale
  np.testing.assert_allclose(
      out["loss"], 0.5 * (ce(start, sp) + ce(end, ep)), rtol=0,
      atol=f32_tol(sum_roundings(6) + 6, np.abs([start, end]).max(), computations=1))
  assert out["span_accuracy"].shape == (3,)


def test_config_defaults_and_errors():
  c = load_config()
  assert (c.task, c.data.max_seq_length, c.train.batch_size, c.train.learning_rate,
          c.finetune.num_epochs) == ("squad", 384, 32, 3e-5, 2.0)
  s = c.squad
  assert (s.version, s.doc_stride, s.max_query_length, s.max_answer_length, s.n_best_size,
          s.null_score_diff_threshold, s.mode) == ("2.0", 128, 64, 30, 20, 0.0, "all")
  task = squad.make_task(c)
  assert task.files["dev"].endswith("shared/data/squad/v2.0/dev.json")
  assert task.selection_metric == "dev/best_f1"
  s.version = "1.1"
  assert squad.make_task(c).files["train"].endswith("squad/v1.1/train.json")
  for key, bad, match in (("version", "3.0", "use '1.1' or '2.0'"),
                          ("mode", "serve", "use one of"), ("doc_stride", 0, "positive")):
    c2 = load_config()
    c2.squad[key] = bad
    with pytest.raises(config_lib.ConfigError, match=match):
      squad.make_task(c2)


def test_bad_train_file_fails_before_training(tmp_path, minilm_path):
  c = tiny_config(minilm_path)
  (tmp_path / "train.json").write_text('{"data": [')
  c.squad.train_file = str(tmp_path / "train.json")
  with pytest.raises(squad_data.SquadDataError, match="train.json: not valid JSON"):
    squad.run(c, str(tmp_path / "w"))
  assert not (tmp_path / "w" / "metrics.jsonl").exists()


def test_head_and_loss_equal_hugging_face(minilm_path):
  """Real MiniLM weights + one QA head: our logits and loss equal transformers'
  BertForQuestionAnswering on full-length windows (no padding, where HF's unmasked loss
  and our masked one coincide)."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import torch
  import transformers
  from bert_jax import checkpoints, tokenization
  from bert_jax.model import BertConfig, BertForQuestionAnswering

  cfg, params = checkpoints.load_pretrained(minilm_path)
  tok = tokenization.load_tokenizer(f"{minilm_path}/vocab.txt", True)
  examples, _ = squad_data.read_squad(str(FIX / "train-v2.0-sample.json"), True)
  f, _ = squad_data.featurize(examples, tok, 64, 32, 16, is_training=True)
  rows = np.flatnonzero(f["attention_mask"].sum(1) == 64)
  rows = np.concatenate([rows[f["start_positions"][rows] > 0][:3],
                         rows[f["start_positions"][rows] == 0][:3]])
  hf = transformers.BertForQuestionAnswering.from_pretrained(minilm_path).eval()
  model = BertForQuestionAnswering(BertConfig.from_config(cfg))
  p = nn.unbox(model.init(jax.random.PRNGKey(0), *(jnp.zeros((1, 8), jnp.int32),) * 3)
               ["params"])
  p = {"bert": params["bert"],
       "qa_outputs": {"kernel": hf.qa_outputs.weight.detach().numpy().T,
                      "bias": hf.qa_outputs.bias.detach().numpy()}}
  g = {k: f[k][rows] for k in ("input_ids", "token_type_ids", "attention_mask",
                               "start_positions", "end_positions")}
  start, end = model.apply({"params": p}, g["input_ids"], g["token_type_ids"],
                           g["attention_mask"])
  ours = squad.span_losses(start, end, g["start_positions"], g["end_positions"],
                           g["attention_mask"])["loss"]
  with torch.no_grad():
    out = hf(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in g.items()})
  # float32 rounding in ours and HF through MiniLM's 6 layers (+ the QA head) over 64
  # tokens; the loss: the log-softmax's own rounding + at most 2x the logits' error
  ref = np.stack([out.start_logits.numpy(), out.end_logits.numpy()])
  tol = f32_tol(encoder_roundings(6, 384, 1536, 64, 12), np.abs(ref).max())
  np.testing.assert_allclose(start, ref[0], rtol=0, atol=tol)
  np.testing.assert_allclose(end, ref[1], rtol=0, atol=tol)
  loss_tol = 2 * tol + f32_tol(sum_roundings(64) + sum_roundings(len(rows)) + 5,
                               np.abs(ref).max())
  assert float(np.mean(ours)) == pytest.approx(float(out.loss), rel=0, abs=loss_tol)
