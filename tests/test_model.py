"""The Flax model equals Hugging Face transformers' PyTorch BERT (the reference).

- The real pretrained MiniLM (6 layers, H=384) through `load_pretrained`: sequence and
  pooled outputs on 12 real sentences (single and paired segments, padded).
- A random-init pre-training model copied into HF `BertForPreTraining`: MLM logits at the
  masked positions, NSP logits and the total loss.
- Parameter counts of configs/base.py and configs/large.py vs HF at those sizes.
- Bad model configs fail with one clear line.
"""
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax.linen import meta

from bert_jax import checkpoints, config as config_lib, model as model_lib, tokenization
from bert_jax import weights
from bert_jax.model import BertConfig, BertForPreTraining, BertModel, count_params
from bert_jax.tasks.pretrain import pretraining_loss
from _numerics import EPS32, encoder_roundings, f32_tol, sum_roundings

REPO = pathlib.Path(__file__).resolve().parents[1]
FIX = pathlib.Path(__file__).parent / "fixtures" / "tokenization"


def encoder_tol(m, seq: int, scale: float, computations: int = 2) -> float:
  """|a - b| allowed between two float32 forwards (ours and HF, or two compilations) of
  the encoder of config.model `m` over `seq` tokens, at magnitude `scale`: eps32 x the
  roundings in series through the layers (tests/_numerics.py)."""
  return f32_tol(encoder_roundings(m.num_layers, m.hidden_size, m.intermediate_size, seq,
                                   m.num_heads), scale, computations)


def _hf_config(m) -> transformers.BertConfig:
  """Our config.model -> HF BertConfig through the same json the exporter writes."""
  return transformers.BertConfig(**weights.model_config_to_bert_json(m))


def _batch(tok, texts, pairs):
  """[CLS] a [SEP] (b [SEP]) rows, zero-padded to the longest: ids, segments, mask."""
  rows = []
  for a in texts:
    rows.append(([tok.cls_id] + tok.encode(a) + [tok.sep_id], None))
  for a, b in pairs:
    ea, eb = tok.encode(a), tok.encode(b)
    rows.append(([tok.cls_id] + ea + [tok.sep_id] + eb + [tok.sep_id], len(ea) + 2))
  seq = max(len(r) for r, _ in rows)
  ids = np.zeros((len(rows), seq), np.int32)
  seg = np.zeros_like(ids)
  mask = np.zeros_like(ids)
  for i, (r, b_start) in enumerate(rows):
    ids[i, :len(r)] = r
    mask[i, :len(r)] = 1
    if b_start is not None:
      seg[i, b_start:len(r)] = 1
  return ids, seg, mask


@pytest.fixture(scope="module")
def minilm(minilm_path):
  model_cfg, params = checkpoints.load_pretrained(minilm_path)
  hf = transformers.BertModel.from_pretrained(minilm_path, attn_implementation="eager")
  hf.eval()
  tok = tokenization.load_tokenizer(str(pathlib.Path(minilm_path) / "vocab.txt"))
  lines = [l for l in (FIX / "sample_lines.txt").read_text(encoding="utf-8").splitlines()
           if len(l.split()) > 3]
  texts = [lines[0], lines[45][:30], lines[90], lines[130] + " " + lines[131], lines[170],
           lines[210][:12], lines[300], lines[360] + " " + lines[361] + " " + lines[362]]
  pairs = [(lines[5], lines[6]), (lines[50][:20], lines[51]), (lines[250], lines[340]),
           (lines[330], lines[331][:15])]
  return model_cfg, params, hf, _batch(tok, texts, pairs)


@pytest.mark.parametrize("attention", ["einsum", "dot_product_attention"])
def test_minilm_equals_hf(minilm, attention):
  model_cfg, params, hf, (ids, seg, mask) = minilm
  assert (model_cfg.num_layers, model_cfg.hidden_size, model_cfg.num_heads) == (6, 384, 12)
  lengths = mask.sum(1)
  assert ids.shape[0] == 12 and len(set(lengths.tolist())) >= 10 and lengths.min() < 20
  assert (seg.sum(1) > 0).sum() == 4  # four paired rows

  cfg = BertConfig.from_config({**model_cfg.to_dict(), "attention": attention})
  seq, pooled = jax.jit(lambda p, a, b, c: BertModel(cfg).apply({"params": p}, a, b, c))(
      params["bert"], ids, seg, mask)
  with torch.no_grad():
    out = hf(input_ids=torch.tensor(ids, dtype=torch.long),
             token_type_ids=torch.tensor(seg, dtype=torch.long),
             attention_mask=torch.tensor(mask, dtype=torch.long))
  ref_seq = out.last_hidden_state.numpy()
  real = mask.astype(bool)
  seq_diff = np.abs(np.asarray(seq)[real] - ref_seq[real]).max()
  pooled_diff = np.abs(np.asarray(pooled) - out.pooler_output.numpy()).max()
  # float32 rounding through 6 layers (+ the pooler: the extra layer of encoder_tol)
  tol = encoder_tol(model_cfg, ids.shape[1], np.abs(ref_seq[real]).max())
  print(f"MiniLM vs HF ({attention}): sequence max abs {seq_diff:.2e}, "
        f"pooled max abs {pooled_diff:.2e}, bound {tol:.2e}")
  assert seq_diff <= tol and pooled_diff <= tol, (seq_diff, pooled_diff, tol)
  assert np.abs(ref_seq[real]).max() > 1.0  # outputs are not trivially small


def test_layer_layouts_equal_each_other_and_hf(minilm):
  """scan_layers=False (one subtree per layer, the default) and True (stacked, nn.scan):
  same outputs, hidden states and gradients on the real MiniLM weights, both equal to HF;
  stack_layers / unstack_layers convert exactly, and a pretrained subtree of either
  layout loads into a state of the other."""
  model_cfg, params, hf, (ids, seg, mask) = minilm
  unrolled = BertConfig.from_config({**model_cfg.to_dict(), "scan_layers": False})
  scanned = BertConfig.from_config({**model_cfg.to_dict(), "scan_layers": True})
  p_unrolled = model_lib.layers_layout(params["bert"], False)
  p_scanned = model_lib.stack_layers(params["bert"])
  assert sorted(p_unrolled["encoder"]) == [f"layer_{i}" for i in range(6)]
  assert p_scanned["encoder"]["layers"]["qkv"]["kernel"].shape == (6, 384, 3, 12, 32)
  back = model_lib.unstack_layers(p_scanned)
  for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(p_unrolled)):
    np.testing.assert_array_equal(a, b)

  def loss_and_states(cfg, p):
    def f(p):
      seq, pooled, states = BertModel(cfg).apply({"params": p}, ids, seg, mask,
                                                 return_all_layers=True)
      return jnp.sum(seq * mask[..., None]) + jnp.sum(pooled), states
    (loss, states), grads = jax.jit(jax.value_and_grad(f, has_aux=True))(p)
    return loss, states, grads

  loss_u, states_u, grads_u = loss_and_states(unrolled, p_unrolled)
  loss_s, states_s, grads_s = loss_and_states(scanned, p_scanned)
  assert states_u.shape == states_s.shape == (7,) + ids.shape + (384,)
  seq_len, n_out = ids.shape[1], int(mask.sum()) * 384
  # Two compilations of the same float32 forward: encoder_tol at the states' scale.
  np.testing.assert_allclose(states_u, states_s, rtol=0,
                             atol=encoder_tol(model_cfg, seq_len, np.abs(states_s).max()))
  # The loss sums n_out outputs: the states' error per term, plus log2(n_out) roundings
  # of the sum, at the scale of the sum of |terms|.
  loss_scale = float(np.abs(np.asarray(states_s[-1]) * mask[..., None]).sum()) + 12 * 384
  np.testing.assert_allclose(loss_u, loss_s, rtol=0, atol=f32_tol(
      encoder_roundings(6, 384, 1536, seq_len, 12) + sum_roundings(n_out), loss_scale))
  # Gradients: the backward retraces the forward (x2 roundings) and sums over the
  # batch's tokens; relative to each leaf's largest entry.
  grad_rtol = f32_tol(2 * encoder_roundings(6, 384, 1536, seq_len, 12)
                      + sum_roundings(ids.size), 1.0)
  grads_u = model_lib.stack_layers(grads_u)
  for (path, g_s), g_u in zip(jax.tree_util.tree_flatten_with_path(grads_s)[0],
                              jax.tree_util.tree_leaves(grads_u)):
    scale = float(np.abs(g_s).max())
    assert scale > 0, jax.tree_util.keystr(path)
    err = float(np.abs(g_u - g_s).max()) / scale
    assert err <= grad_rtol, (jax.tree_util.keystr(path), err, grad_rtol)
  with torch.no_grad():
    hidden = hf(input_ids=torch.tensor(ids, dtype=torch.long),
                token_type_ids=torch.tensor(seg, dtype=torch.long),
                attention_mask=torch.tensor(mask, dtype=torch.long),
                output_hidden_states=True).hidden_states
  real = mask.astype(bool)
  for i, h in enumerate(hidden):
    ref_h = h.numpy()[real]
    err = np.abs(np.asarray(states_u[i])[real] - ref_h).max()
    assert err <= encoder_tol(model_cfg, seq_len, np.abs(ref_h).max()), (i, err)


def test_pretrained_subtree_loads_into_either_layout(minilm):
  import optax
  from bert_jax import partitioning, train_lib
  model_cfg, params, _, (ids, seg, mask) = minilm
  mesh = partitioning.make_mesh(config_lib.default_config().mesh, jax.devices()[:1])
  for scan in (False, True):
    cfg = BertConfig.from_config({**model_cfg.to_dict(), "scan_layers": scan})
    model = BertModel(cfg)
    state, sh = train_lib.create_train_state(
        lambda r: model.init(r, ids[:1])["params"], optax.sgd(0.1), mesh, 0)
    for source in (model_lib.stack_layers(params["bert"]),
                   model_lib.unstack_layers(model_lib.stack_layers(params["bert"]))):
      loaded = train_lib.load_pretrained_subtree(state, sh, source, None)
      assert model_lib.is_stacked(loaded.params) == scan
      seq, _ = model.apply({"params": loaded.params}, ids, seg, mask)
      ref, _ = BertModel(BertConfig.from_config(model_cfg)).apply(
          {"params": params["bert"]}, ids, seg, mask)
      # Two compilations (eager apply: nn.scan compiles its layer, unrolled runs op by
      # op): float32 rounding through the encoder, at the output's scale.
      np.testing.assert_allclose(seq, ref, rtol=0, atol=encoder_tol(
          model_cfg, ids.shape[1], np.abs(np.asarray(ref)).max()))


SMALL = dict(vocab_size=1024, hidden_size=64, num_layers=2, num_heads=2,
             intermediate_size=128, max_position_embeddings=64)


def _small_model_config():
  m = config_lib.model_config("tiny")
  m.update(SMALL)
  return m


def test_pretraining_heads_and_loss_equal_hf():
  m = _small_model_config()
  cfg = BertConfig.from_config(m)
  model = BertForPreTraining(cfg)
  rng = np.random.default_rng(0)
  b, s, p = 4, 32, 6
  ids = rng.integers(5, m.vocab_size, (b, s)).astype(np.int32)
  lengths = np.array([32, 25, 17, 9])
  mask = (np.arange(s)[None] < lengths[:, None]).astype(np.int32)
  ids = ids * mask
  seg = ((np.arange(s)[None] >= lengths[:, None] // 2) & mask.astype(bool)).astype(np.int32)
  n_pred = np.array([6, 4, 3, 1])  # real predictions per row; the rest are padding slots
  positions = np.zeros((b, p), np.int32)
  for i in range(b):
    positions[i, :n_pred[i]] = np.sort(rng.choice(np.arange(1, lengths[i]), n_pred[i],
                                                  replace=False))
  mlm_weights = (np.arange(p)[None] < n_pred[:, None]).astype(np.float32)
  labels_mlm = (rng.integers(5, m.vocab_size, (b, p)) * mlm_weights).astype(np.int32)
  nsp_labels = np.array([0, 1, 1, 0], np.int32)

  variables = jax.jit(model.init)(jax.random.key(3), ids, seg, mask, positions)
  params = meta.unbox(variables["params"])
  # A non-zero output bias and LayerNorm so that every tensor's mapping matters.
  params["mlm_output_bias"] = jnp.asarray(rng.normal(0, 0.1, m.vocab_size), jnp.float32)
  params["mlm_layer_norm"]["scale"] = jnp.asarray(1 + rng.normal(0, 0.1, 64), jnp.float32)
  mlm_logits, nsp_logits = jax.jit(model.apply)({"params": params}, ids, seg, mask,
                                                positions)
  batch = {"masked_lm_ids": labels_mlm, "masked_lm_weights": mlm_weights,
           "next_sentence_labels": nsp_labels}
  loss, metrics = jax.jit(pretraining_loss)(mlm_logits, nsp_logits, batch)

  hf = transformers.BertForPreTraining(_hf_config(m))
  hf.eval()
  sd = {k: torch.tensor(v) for k, v in weights.params_to_canonical(
      jax.device_get(params), cfg).items()}
  missing, unexpected = hf.load_state_dict(sd, strict=False)
  assert not unexpected and set(missing) <= {"cls.predictions.decoder.weight",
                                             "cls.predictions.decoder.bias",
                                             "bert.embeddings.position_ids"}, missing
  hf_labels = np.full((b, s), -100, np.int64)
  for i in range(b):
    hf_labels[i, positions[i, :n_pred[i]]] = labels_mlm[i, :n_pred[i]]
  with torch.no_grad():
    out = hf(input_ids=torch.tensor(ids, dtype=torch.long),
             token_type_ids=torch.tensor(seg, dtype=torch.long),
             attention_mask=torch.tensor(mask, dtype=torch.long),
             labels=torch.tensor(hf_labels),
             next_sentence_label=torch.tensor(nsp_labels, dtype=torch.long))
  ref_mlm = np.take_along_axis(out.prediction_logits.numpy(), positions[..., None], axis=1)
  real = mlm_weights.astype(bool)
  mlm_diff = np.abs(np.asarray(mlm_logits)[real] - ref_mlm[real]).max()
  nsp_diff = np.abs(np.asarray(nsp_logits) - out.seq_relationship_logits.numpy()).max()
  # HF divides the MLM sum by n_real, ours (as the original) by n_real + 1e-5: undo that
  # (5e-6 here) before comparing.
  n_real = int(mlm_weights.sum())
  hf_like = (float(metrics["mlm_loss"]) * (n_real + 1e-5) / n_real
             + float(metrics["nsp_loss"]))
  loss_diff = abs(hf_like - float(out.loss))
  # Logits: the encoder's rounding (+1 layer: the MLM transform and decoder). The loss
  # adds the log-sum-exp over the vocabulary and the means, and cross-entropy moves at
  # most 2x its logits' error.
  tol = encoder_tol(m, s, np.abs(ref_mlm[real]).max())
  loss_tol = 2 * tol + f32_tol(sum_roundings(m.vocab_size) + sum_roundings(n_real) + 4,
                               float(out.loss))
  print(f"BertForPreTraining vs HF: MLM logits {mlm_diff:.2e}, NSP logits {nsp_diff:.2e}, "
        f"loss {loss_diff:.2e} (loss {float(loss):.4f}); bounds {tol:.2e}, {loss_tol:.2e}")
  assert mlm_diff <= tol and nsp_diff <= tol and loss_diff <= loss_tol
  # The padded prediction slots (position 0, weight 0) do not count. Ours divides by
  # n_real + 1e-5 (the original's): want * 1e-5 / n_real, plus 2 float32 roundings.
  want_acc = (np.asarray(mlm_logits).argmax(-1) == labels_mlm)[real].mean()
  assert abs(float(metrics["mlm_accuracy"]) - want_acc) <= 1e-5 / n_real + 2 * EPS32
  want_nsp = (np.asarray(nsp_logits).argmax(-1) == nsp_labels).mean()
  assert float(metrics["nsp_accuracy"]) == want_nsp  # k / 4: exact in float32
  # loss = mlm_loss + nsp_loss, one float32 addition (<= 1/2 ulp) in or out of jit
  assert np.isclose(float(metrics["mlm_loss"] + metrics["nsp_loss"]), float(loss),
                    rtol=EPS32, atol=0)


def _load_config(name):
  spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


@pytest.mark.parametrize("name,approx", [("base", 110.1e6), ("large", 336.2e6)])
def test_parameter_counts_equal_hf(name, approx):
  m = _load_config(name).model
  model = BertForPreTraining(BertConfig.from_config(m))
  ids = jnp.zeros((1, 8), jnp.int32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), ids, ids, ids,
                                             jnp.zeros((1, 2), jnp.int32)))
  ours = count_params(shapes["params"])
  with torch.device("meta"):
    hf = transformers.BertForPreTraining(_hf_config(m))
  theirs = sum(p.numel() for p in hf.parameters())  # the tied decoder weight counts once
  print(f"{name}: {ours:,} parameters (HF BertForPreTraining {theirs:,})")
  assert ours == theirs
  assert abs(ours - approx) <= 0.05e6  # the quoted count, rounded to 0.1M


def test_bad_model_configs():
  with pytest.raises(config_lib.ConfigError) as e:
    BertConfig.from_config({"hidden_size": 100, "num_heads": 12})
  assert "not divisible" in str(e.value) and "--config.model.num_heads" in str(e.value)
  with pytest.raises(config_lib.ConfigError) as e:
    BertConfig.from_config({"hidden_sise": 128})
  assert "'hidden_sise'" in str(e.value) and "hidden_size" in str(e.value)
  cfg = BertConfig.from_config(dict(SMALL, vocab_size=50, max_position_embeddings=16))
  ids = jnp.ones((1, 17), jnp.int32)
  with pytest.raises(ValueError) as e:
    BertModel(cfg).init(jax.random.key(0), ids)
  assert "max_position_embeddings=16" in str(e.value) and "max_seq_length" in str(e.value)
  for err in (e,):
    assert "\n" not in str(err.value)


def test_vocab_cross_entropy_equals_torch_values_gradients_and_argmax():
  """The gather-free MLM cross-entropy = torch's cross_entropy (values and gradients) and
  its hit = (argmax == target), on logits with a wide range and a duplicated max."""
  from bert_jax.tasks.pretrain import vocab_cross_entropy
  rng = np.random.default_rng(0)
  logits = (rng.normal(0, 6, (3, 7, 500))).astype(np.float32)
  ids = rng.integers(0, 500, (3, 7)).astype(np.int32)
  ids[0, :3] = logits[0, :3].argmax(-1)  # some hits
  xent, hit = jax.jit(vocab_cross_entropy)(logits, ids)
  grad = jax.grad(lambda x: jnp.sum(vocab_cross_entropy(x, ids)[0] * np.arange(7)))(logits)
  t = torch.tensor(logits, requires_grad=True)
  ref = torch.nn.functional.cross_entropy(t.reshape(-1, 500), torch.tensor(ids).long().reshape(-1),
                                          reduction="none").reshape(3, 7)
  (ref * torch.arange(7)).sum().backward()
  # Log-sum-exp over 500 logits (exp, log2(500) additions, log, max, - target) in ours
  # and torch; its error is relative to the logits' magnitude, not the cross-entropy's.
  roundings = sum_roundings(500) + 4
  np.testing.assert_allclose(xent, ref.detach().numpy(), rtol=0,
                             atol=f32_tol(roundings, np.abs(logits).max()))
  # softmax - one_hot (<= 1 in magnitude) times the weights 0..6
  np.testing.assert_allclose(grad, t.grad.numpy(), rtol=0, atol=f32_tol(roundings + 1, 6))
  np.testing.assert_array_equal(hit, (logits.argmax(-1) == ids).astype(np.float32))
  assert hit[0, :3].all()
