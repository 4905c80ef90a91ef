"""Shared fine-tuning machinery: pair encoding = the original/HF, length buckets, padded
rows weighted 0 so losses and predictions are exact, logging, vocabulary checks."""
import json
import os
import pathlib

import jax
import ml_collections
import numpy as np
import pytest

from bert_jax import config as config_lib
from bert_jax import weights
from bert_jax import finetune, metrics, partitioning, train_lib
from bert_jax.data import glue as glue_data
from bert_jax.model import BertConfig
from bert_jax.tasks.glue import GlueTask
from bert_jax.tokenization import load_tokenizer
from _numerics import EQUIV_RTOL, encoder_roundings, f32_tol, max_relative_error, sum_roundings

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "glue"


@pytest.fixture(scope="module", autouse=True)
def fast_compile():
  """Tiny models: XLA's optimisation passes cost more than they save (flax train_test)."""
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", False)


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
  return load_tokenizer(os.path.join(minilm_path, "vocab.txt"), True)


def test_truncate_seq_pair_pops_the_longer_side_b_on_ties():
  a, b = list(range(10)), list(range(100, 104))
  finetune.truncate_seq_pair(a, b, 8)
  assert a == [0, 1, 2, 3] and b == [100, 101, 102, 103]
  a, b = [1, 2, 3], [4, 5, 6]
  finetune.truncate_seq_pair(a, b, 5)
  assert a == [1, 2, 3] and b == [4, 5]  # tie: B loses first, as the original.


def test_pair_encoding_equals_hugging_face_and_truncates_as_the_original(tokenizer,
                                                                         minilm_path):
  from transformers import BertTokenizerFast
  hf = BertTokenizerFast(os.path.join(minilm_path, "vocab.txt"), do_lower_case=True)
  ex = glue_data.read_split(glue_data.get_task("mrpc"), "dev", str(FIXTURES))
  a, b = [e.text_a for e in ex], [e.text_b for e in ex]
  ours = finetune.encode_sentence_pairs(tokenizer, a, b, 128)  # no truncation needed
  theirs = hf(a, b, max_length=128, padding="max_length", return_tensors="np")
  for k in ("input_ids", "token_type_ids", "attention_mask"):
    np.testing.assert_array_equal(ours[k], theirs[k])
  single = finetune.encode_sentence_pairs(tokenizer, a, None, 16)
  theirs = hf(a, truncation=True, max_length=16, padding="max_length", return_tensors="np")
  np.testing.assert_array_equal(single["input_ids"], theirs["input_ids"])
  assert not single["token_type_ids"].any()
  # Truncated to 24: the original's rule (pop the longer side, B on ties, so odd budgets
  # leave A one longer) = HF's Python tokenizer (BertTokenizerLegacy); HF's Rust
  # longest_first gives the extra token to B instead.
  from transformers import BertTokenizerLegacy
  legacy = BertTokenizerLegacy(os.path.join(minilm_path, "vocab.txt"), do_lower_case=True)
  short = finetune.encode_sentence_pairs(tokenizer, a, b, 24)
  theirs = legacy(a, b, truncation="longest_first", max_length=24, padding="max_length",
                  return_token_type_ids=True, return_tensors="np")
  for k in ("input_ids", "token_type_ids", "attention_mask"):
    np.testing.assert_array_equal(short[k], theirs[k])
  assert (short["attention_mask"].sum(1) == 24).sum() > 20  # most pairs were truncated


def test_bucket_length_and_make_batch_padding():
  assert [finetune.bucket_length(n, 32, 128) for n in (1, 32, 33, 100, 128)] == [
      32, 32, 64, 128, 128]
  assert finetune.bucket_length(7, 0, 128) == 128
  n, s = 5, 64
  lengths = np.array([3, 10, 40, 7, 20])
  mask = (np.arange(s)[None] < lengths[:, None]).astype(np.int32)
  feats = {"input_ids": mask * 7, "token_type_ids": np.zeros((n, s), np.int32),
           "attention_mask": mask, "labels": np.arange(n, dtype=np.int32),
           "note": ["host-only"] * n}
  batch = finetune.make_batch(feats, np.array([0, 1, 3]), 4, 16)
  assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels",
                        "example_weight"}
  assert batch["input_ids"].shape == (4, 16)  # longest row 10 -> bucket 16
  assert batch["labels"].tolist() == [0, 1, 3, 0]
  assert batch["example_weight"].tolist() == [1, 1, 1, 0]
  assert not batch["attention_mask"][3].any()
  assert finetune.make_batch(feats, np.array([2]), 2, 16)["input_ids"].shape == (2, 48)
  # [N, C, S] multiple-choice features: cut on the last axis, lengths max over choices.
  mc = {k: np.stack([v, v], 1) for k, v in feats.items() if k != "note"}
  mc["labels"] = feats["labels"]
  assert finetune.sequence_lengths(mc).tolist() == lengths.tolist()
  assert finetune.make_batch(mc, np.array([0, 4]), 2, 16)["input_ids"].shape == (2, 2, 32)


def test_train_batches_cover_every_row_once_grouped_by_length():
  rng = np.random.default_rng(0)
  lengths = rng.integers(5, 128, 1000)
  b0 = finetune.train_batch_indices(lengths, 32, seed=1, epoch=0, window=10)
  b1 = finetune.train_batch_indices(lengths, 32, seed=1, epoch=1, window=10)
  for batches in (b0, b1):
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert sum(len(b) < 32 for b in batches) <= 10  # at most one short batch per window
  assert not all(np.array_equal(x, y) for x, y in zip(b0, b1))  # reshuffled per epoch
  plain = finetune.train_batch_indices(lengths, 32, seed=1, epoch=0, window=0)
  spread = lambda bs: np.mean([lengths[b].max() - lengths[b].min() for b in bs])
  assert spread(b0) < 0.3 * spread(plain)  # grouped batches hold similar lengths
  padded = lambda bs: sum(finetune.bucket_length(lengths[b].max(), 16, 128) * len(b) for b in bs)
  assert padded(b0) < 0.8 * padded(plain)
  ev = finetune.eval_batch_indices(lengths, 64)
  assert sorted(np.concatenate(ev).tolist()) == list(range(1000))


@pytest.fixture(scope="module")
def tiny_setup(tokenizer):
  """A tiny classifier, MRPC fixture features, a 4-device data mesh and a predict fn."""
  cfg = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_layers=2,
                   num_heads=2, intermediate_size=64, max_position_embeddings=64,
                   dropout_rate=0.0, attention_dropout_rate=0.0)
  task = GlueTask("mrpc", str(FIXTURES))
  ex = task.load_examples("dev")
  feats = task.featurize(ex, tokenizer, 64)
  feats["example_weight"] = np.ones(len(ex), np.float32)
  model = task.make_model(cfg)
  init = jax.jit(lambda rng: model.init(rng, feats["input_ids"][:2],
                                        feats["token_type_ids"][:2],
                                        feats["attention_mask"][:2])["params"])
  params = jax.device_get(finetune.nn.unbox(init(jax.random.PRNGKey(0))))
  mesh_cfg = ml_collections.ConfigDict({"axes": ("data", "fsdp", "tensor"),
                                        "shape": (4, 1, 1)})
  mesh = partitioning.make_mesh(mesh_cfg, jax.devices()[:4])
  replicated = jax.tree_util.tree_map(
      lambda _: jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()), params)
  predict_fn = train_lib.make_predict_step(
      lambda p, b: finetune.apply_model(model, p, b), mesh, replicated)
  return task, model, params, feats, ex, mesh, predict_fn


def _logits_tol(model, seq: int, scale: float) -> float:
  """|a - b| between two float32 forwards of the tiny classifier that differ in padding
  or batch layout: rounding through its layers (tests/_numerics.py), at `scale`."""
  c = model.config
  return f32_tol(encoder_roundings(c.num_layers, c.hidden_size, c.intermediate_size, seq,
                                   c.num_heads), scale)


def test_predict_with_buckets_and_padding_equals_full_length_forward(tiny_setup):
  task, model, params, feats, ex, mesh, predict_fn = tiny_setup
  inputs = {k: feats[k] for k in finetune.MODEL_INPUTS}
  full = np.asarray(jax.jit(lambda p, b: finetune.apply_model(model, p, b))(params, inputs))
  out = finetune.predict(predict_fn, params, feats, 12, mesh, bucket_multiple=16)
  assert out.shape == full.shape == (len(ex), 2)  # 32 rows in batches of 12: 4 pad rows
  tol = _logits_tol(model, 64, np.abs(full).max())  # other lengths: other roundings
  np.testing.assert_allclose(out, full, rtol=0, atol=tol)
  # The same predictions (metrics exact); the cross-entropy moves <= 2x the logits.
  metrics = task.evaluate(out, ex, feats, "dev")
  expected = task.evaluate(full, ex, feats, "dev")
  assert metrics.pop("loss") == pytest.approx(expected.pop("loss"), rel=0, abs=2 * tol)
  assert metrics == expected


def test_weighted_loss_ignores_padding_rows(tiny_setup):
  task, model, params, feats, ex, mesh, _ = tiny_setup
  compute_loss, denominators_fn = finetune.make_compute_loss(task, model)
  idx = np.arange(10)
  real = finetune.make_batch(feats, idx, 10, 0)  # no padding, full length
  padded = finetune.make_batch(feats, idx, 16, 16)  # 6 padding rows, cut to a bucket
  padded["labels"][10:] = 1  # whatever padding rows hold must not matter
  rng = jax.random.PRNGKey(0)
  loss_fn = jax.jit(lambda p, b: compute_loss(p, b, rng, denominators_fn(b)))
  results = []
  for b in (real, padded):
    loss, metrics = loss_fn(params, b)
    results.append((float(loss), float(metrics["accuracy"])))
  inputs = {k: feats[k] for k in finetune.MODEL_INPUTS}
  logits = np.asarray(jax.jit(lambda p, b: finetune.apply_model(model, p, b))(params, inputs))[:10]
  logp = logits - np.logaddexp.reduce(logits, -1, keepdims=True)
  # Batches of other shapes: the logits' rounding (x2 through the cross-entropy), plus
  # the loss's own log-softmax and mean over 10 rows, in float32.
  tol = (2 * _logits_tol(model, 64, np.abs(logits).max())
         + f32_tol(sum_roundings(10) + 4, abs(results[0][0])))
  assert results[1][1] == results[0][1]  # the same predictions: accuracy exact
  assert results[1][0] == pytest.approx(results[0][0], rel=0, abs=tol)
  assert results[0][0] == pytest.approx(-logp[np.arange(10), feats["labels"][:10]].mean(),
                                        rel=0, abs=tol)


def test_metric_writer_jsonl_and_tensorboard(tmp_path):
  w = metrics.MetricWriter(str(tmp_path), enabled=True)
  w.write(3, {"train/loss": np.float32(0.5), "dev/f1": 0.75, "note": "x"})
  w.write(6, {"train/loss": 0.25})
  w.close()
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert lines == [{"step": 3, "train/loss": 0.5, "dev/f1": 0.75, "note": "x"},
                   {"step": 6, "train/loss": 0.25}]
  events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  assert events and events[0].stat().st_size > 0


def test_format_table():
  t = metrics.format_table(["lr", "dev/f1"], [["5e-05", 0.81234], ["2e-05", 0.7]])
  assert t.splitlines() == ["lr    | dev/f1", "------+-------", "5e-05 | 0.8123",
                            "2e-05 | 0.7000"]


def _tiny_hf_dir(path, vocab_src, vocab_lines=None, vocab_size=None):
  """A Hugging Face-style BERT dir (config.json, model.safetensors, vocab.txt)."""
  from safetensors.numpy import save_file
  from bert_jax.model import BertModel
  os.makedirs(path, exist_ok=True)
  lines = open(vocab_src, encoding="utf-8").read().splitlines()
  lines = lines if vocab_lines is None else lines[:vocab_lines]
  with open(os.path.join(path, "vocab.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  m = config_lib.model_config("tiny")
  m.update(vocab_size=vocab_size or len(lines), hidden_size=32, num_heads=2,
           intermediate_size=64, max_position_embeddings=64)
  cfg = BertConfig.from_config(m)
  ids = np.zeros((1, 4), np.int32)
  init = jax.jit(lambda rng: BertModel(cfg).init(rng, ids, ids, ids)["params"])
  params = jax.device_get(finetune.nn.unbox(init(jax.random.PRNGKey(1))))
  sd = weights.params_to_canonical({"bert": params}, cfg)
  save_file({k: np.asarray(v, np.float32) for k, v in sd.items()},
            os.path.join(path, "model.safetensors"))
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(weights.model_config_to_bert_json(m), f)
  return path


def test_vocab_mismatch_errors_name_the_files(tmp_path, minilm_path, tokenizer):
  vocab = os.path.join(minilm_path, "vocab.txt")
  # A checkpoint with 1000 word embeddings but the 30522-token vocab.
  ckpt = _tiny_hf_dir(str(tmp_path / "small"), vocab, vocab_lines=None, vocab_size=1000)
  c = config_lib.default_config()
  c.init_checkpoint = ckpt
  model_cfg, params, vocab_file = finetune.load_init(c)
  assert model_cfg.vocab_size == 1000 and vocab_file == os.path.join(ckpt, "vocab.txt")
  with pytest.raises(weights.CheckpointError,
                     match=rf"vocabulary {vocab_file} has 30522 tokens but {ckpt} has "
                           r"vocab_size=1000 word embeddings"):
    weights.check_vocab(vocab_file, {"vocab_size": 1000}, checkpoint=ckpt,
                        checkpoint_vocab=vocab_file)
  # config.vocab_file that differs from the checkpoint's own vocab.txt: names the line.
  other = tmp_path / "other_vocab.txt"
  lines = open(vocab, encoding="utf-8").read().splitlines()
  lines[2000] = "zzzz"
  other.write_text("\n".join(lines) + "\n", encoding="utf-8")
  with pytest.raises(weights.CheckpointError, match=rf"config.vocab_file={other} differs from "
                     rf"the vocabulary of init_checkpoint .*line 2001: 'zzzz' vs"):
    weights.check_vocab(str(other), {"vocab_size": 30522}, checkpoint=minilm_path,
                        checkpoint_vocab=os.path.join(minilm_path, "vocab.txt"))
  # the real pair is fine
  weights.check_vocab(vocab, {"vocab_size": 30522}, checkpoint=minilm_path, checkpoint_vocab=vocab)


def test_real_minilm_checkpoint_loads_with_its_architecture(minilm_path):
  c = config_lib.default_config()
  c.init_checkpoint = minilm_path
  c.model.dropout_rate = 0.2
  model_cfg, params, vocab = finetune.load_init(c)
  assert (model_cfg.num_layers, model_cfg.hidden_size, model_cfg.num_heads) == (6, 384, 12)
  assert model_cfg.dropout_rate == 0.2  # fine-tuning settings are kept
  assert vocab == os.path.join(minilm_path, "vocab.txt")
  layers = params["bert"]["encoder"]
  assert sorted(layers) == [f"layer_{i}" for i in range(6)]
  assert layers["layer_5"]["intermediate"]["kernel"].shape == (384, 1536)
  assert "pooler" in params["bert"]
  c.init_checkpoint = "/no/such/checkpoint"
  with pytest.raises(weights.CheckpointError, match="checkpoint '/no/such/checkpoint' "
                                                   "does not exist"):
    finetune.load_init(c)


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def test_train_steps_equal_hugging_face_pytorch(tmp_path, minilm_path, tokenizer, x64):
  """Our classifier + AdamW + schedule + clipping = transformers' BertForSequenceClassification
  + torch AdamW + the same schedule, step for step (dropout off, same head weights): the
  benchmark compares implementations, not recipes. Both run in float64: Adam amplifies
  float32 rounding without bound (tests/_numerics.py), so float32 params after a few
  steps could only be compared within a tuned tolerance."""
  import optax
  import torch
  from transformers import BertForSequenceClassification
  from bert_jax import checkpoints, optim
  ckpt = _tiny_hf_dir(str(tmp_path / "tiny"), os.path.join(minilm_path, "vocab.txt"))
  model_cfg, pretrained = checkpoints.load_pretrained(ckpt)
  model_cfg.update(dropout_rate=0.0, attention_dropout_rate=0.0, dtype="float64",
                   param_dtype="float64")
  task = GlueTask("mrpc", str(FIXTURES))
  ex = task.load_examples("train")[:16]
  b = finetune.make_batch(task.featurize(ex, tokenizer, 64), np.arange(16), 16, 32)
  model = task.make_model(BertConfig.from_config(model_cfg))
  init = jax.jit(lambda r: model.init(r, b["input_ids"][:1], b["token_type_ids"][:1],
                                      b["attention_mask"][:1])["params"])
  params = jax.device_get(finetune.nn.unbox(init(jax.random.PRNGKey(0))))
  params["bert"] = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64),
                                          pretrained["bert"])
  train_cfg = config_lib.default_config().train
  train_cfg.update(learning_rate=1e-3, num_steps=10, warmup_steps=2, max_grad_norm=0.05)
  tx = optim.make_optimizer(train_cfg)

  def loss_fn(p):
    logits = finetune.apply_model(model, p, b)
    return optax.softmax_cross_entropy_with_integer_labels(logits, b["labels"]).mean()

  @jax.jit
  def step(p, s):
    loss, g = jax.value_and_grad(loss_fn)(p)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s, loss

  hf = BertForSequenceClassification.from_pretrained(ckpt, num_labels=2,
                                                     hidden_dropout_prob=0.0,
                                                     attention_probs_dropout_prob=0.0).double()
  with torch.no_grad():
    hf.classifier.weight.copy_(torch.from_numpy(np.array(params["classifier"]["kernel"]).T))
    hf.classifier.bias.copy_(torch.from_numpy(np.array(params["classifier"]["bias"])))
  no_decay = lambda n: "LayerNorm" in n or n.endswith("bias")
  opt = torch.optim.AdamW(
      [{"params": [p for n, p in hf.named_parameters() if not no_decay(n)],
        "weight_decay": 0.01},
       {"params": [p for n, p in hf.named_parameters() if no_decay(n)], "weight_decay": 0.0}],
      lr=1e-3, betas=(0.9, 0.999), eps=1e-6)
  sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: s / 2 if s < 2 else 1 - s / 10)
  t = lambda k: torch.from_numpy(b[k]).long()
  p, s, ours, theirs = params, tx.init(params), [], []
  for _ in range(4):
    p, s, loss = step(p, s)
    ours.append(float(loss))
    out = hf(input_ids=t("input_ids"), token_type_ids=t("token_type_ids"),
             attention_mask=t("attention_mask"), labels=t("labels"))
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(hf.parameters(), 0.05)  # clipping is active here
    opt.step()
    sched.step()
    opt.zero_grad()
    theirs.append(out.loss.item())
  # Two float64 implementations of the same steps: EQUIV_RTOL (1000 x eps64 / eps_adam,
  # tests/_numerics.py) bounds the losses and, per leaf, the params.
  np.testing.assert_allclose(ours, theirs, rtol=EQUIV_RTOL, atol=0)
  assert ours[3] < ours[1]  # it trains (step 0 has lr 0 in both: warmup starts at 0)
  assert p["classifier"]["kernel"].dtype == np.float64
  for name, got, ref in [
      ("classifier", p["classifier"]["kernel"].T, hf.classifier.weight),
      ("layer_1.intermediate", p["bert"]["encoder"]["layer_1"]["intermediate"]["kernel"].T,
       hf.bert.encoder.layer[1].intermediate.dense.weight)]:
    err = max_relative_error(np.array(got), ref.detach().numpy())
    assert err <= EQUIV_RTOL, (name, err)
