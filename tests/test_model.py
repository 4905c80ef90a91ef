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
from bert_jax.model import BertConfig, BertForPreTraining, BertModel, count_params
from bert_jax.tasks.pretrain import pretraining_loss

REPO = pathlib.Path(__file__).resolve().parents[1]
FIX = pathlib.Path(__file__).parent / "fixtures" / "tokenization"
TOL = 1e-4


def _hf_config(m) -> transformers.BertConfig:
  """Our config.model -> HF BertConfig through the same json the exporter writes."""
  return transformers.BertConfig(**checkpoints.model_config_to_bert_json(m))


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
  print(f"MiniLM vs HF ({attention}): sequence max abs {seq_diff:.2e}, "
        f"pooled max abs {pooled_diff:.2e}")
  assert seq_diff <= TOL and pooled_diff <= TOL
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
  np.testing.assert_allclose(states_u, states_s, atol=1e-5)
  np.testing.assert_allclose(loss_u, loss_s, rtol=1e-5)
  grads_u = model_lib.stack_layers(grads_u)
  for (path, g_s), g_u in zip(jax.tree_util.tree_flatten_with_path(grads_s)[0],
                              jax.tree_util.tree_leaves(grads_u)):
    scale = max(1e-6, float(np.abs(g_s).max()))
    assert float(np.abs(g_u - g_s).max()) / scale < 1e-4, jax.tree_util.keystr(path)
  with torch.no_grad():
    hidden = hf(input_ids=torch.tensor(ids, dtype=torch.long),
                token_type_ids=torch.tensor(seg, dtype=torch.long),
                attention_mask=torch.tensor(mask, dtype=torch.long),
                output_hidden_states=True).hidden_states
  real = mask.astype(bool)
  for i, h in enumerate(hidden):
    assert np.abs(np.asarray(states_u[i])[real] - h.numpy()[real]).max() <= TOL


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
      np.testing.assert_allclose(seq, ref, rtol=1e-5, atol=5e-5)  # float32 fusion order


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
  weights = (np.arange(p)[None] < n_pred[:, None]).astype(np.float32)
  labels_mlm = (rng.integers(5, m.vocab_size, (b, p)) * weights).astype(np.int32)
  nsp_labels = np.array([0, 1, 1, 0], np.int32)

  variables = jax.jit(model.init)(jax.random.key(3), ids, seg, mask, positions)
  params = meta.unbox(variables["params"])
  # A non-zero output bias and LayerNorm so that every tensor's mapping matters.
  params["mlm_output_bias"] = jnp.asarray(rng.normal(0, 0.1, m.vocab_size), jnp.float32)
  params["mlm_layer_norm"]["scale"] = jnp.asarray(1 + rng.normal(0, 0.1, 64), jnp.float32)
  mlm_logits, nsp_logits = jax.jit(model.apply)({"params": params}, ids, seg, mask,
                                                positions)
  batch = {"masked_lm_ids": labels_mlm, "masked_lm_weights": weights,
           "next_sentence_labels": nsp_labels}
  loss, metrics = jax.jit(pretraining_loss)(mlm_logits, nsp_logits, batch)

  hf = transformers.BertForPreTraining(_hf_config(m))
  hf.eval()
  sd = {k: torch.tensor(v) for k, v in checkpoints.params_to_canonical(
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
  real = weights.astype(bool)
  mlm_diff = np.abs(np.asarray(mlm_logits)[real] - ref_mlm[real]).max()
  nsp_diff = np.abs(np.asarray(nsp_logits) - out.seq_relationship_logits.numpy()).max()
  loss_diff = abs(float(loss) - float(out.loss))
  print(f"BertForPreTraining vs HF: MLM logits {mlm_diff:.2e}, NSP logits {nsp_diff:.2e}, "
        f"loss {loss_diff:.2e} (loss {float(loss):.4f})")
  assert mlm_diff <= TOL and nsp_diff <= TOL and loss_diff <= TOL
  # The padded prediction slots (position 0, weight 0) do not count.
  want_acc = (np.asarray(mlm_logits).argmax(-1) == labels_mlm)[real].mean()
  assert np.isclose(float(metrics["mlm_accuracy"]), want_acc, atol=1e-4)
  want_nsp = (np.asarray(nsp_logits).argmax(-1) == nsp_labels).mean()
  assert np.isclose(float(metrics["nsp_accuracy"]), want_nsp)
  assert np.isclose(float(metrics["mlm_loss"] + metrics["nsp_loss"]), float(loss))


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
  assert abs(ours - approx) / approx < 0.005


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
  np.testing.assert_allclose(xent, ref.detach().numpy(), atol=2e-5, rtol=1e-6)
  np.testing.assert_allclose(grad, t.grad.numpy(), atol=1e-6)
  np.testing.assert_array_equal(hit, (logits.argmax(-1) == ids).astype(np.float32))
  assert hit[0, :3].all()
