"""Checkpoint import/export: Google TF (read without TensorFlow), ours (orbax), Hugging Face.

tests/fixtures/checkpoints/tf_bert_tiny was written by TensorFlow 2.21 itself (a TF1 Saver
with Google's variable names, Adam slots and global_step, as in Google's release); see
make_tf_checkpoint.py there. The reference for what the names mean is Hugging Face's
former `load_tf_weights_in_bert` (re-stated in `_hf_name_of_google` below) and HF's
PyTorch BertForPreTraining.
"""
import functools
import importlib.util
import json
import pathlib
import shutil
import subprocess
import sys
import zipfile

import jax
import numpy as np
import pytest
import torch
import transformers
from flax.linen import meta

from bert_jax import checkpoints, tf_checkpoint
from bert_jax import weights
from bert_jax.tools import convert
from bert_jax.checkpoints import CheckpointError
from bert_jax.model import BertConfig, BertForPreTraining
from _numerics import encoder_roundings, f32_tol

FIX = pathlib.Path(__file__).parent / "fixtures" / "checkpoints"
TF_DIR = FIX / "tf_bert_tiny"

_spec = importlib.util.spec_from_file_location("make_tf_checkpoint",
                                               FIX / "make_tf_checkpoint.py")
make_tf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_tf)


def _hf_name_of_google(name):
  """(HF state-dict key, transpose?) as transformers' original TF loader resolved it."""
  parts = []
  for p in name.split("/"):
    if p.startswith("layer_"):
      parts += ["layer", p.split("_")[1]]
    elif p in ("kernel", "gamma", "output_weights"):
      parts.append("weight")
    elif p in ("beta", "output_bias"):
      parts.append("bias")
    else:
      parts.append(p)
  if parts[-1].endswith("_embeddings"):
    parts.append("weight")
  return ".".join(parts), name.endswith("/kernel")


def _inputs(vocab_size, seq=12):
  rng = np.random.default_rng(1)
  ids = rng.integers(5, vocab_size, (3, seq)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, 8:] = 0
  mask[2, 5:] = 0
  ids = ids * mask
  seg = np.zeros_like(ids)
  seg[:, 6:] = 1
  seg = seg * mask
  positions = np.array([[1, 3, 7], [2, 4, 0], [1, 0, 0]], np.int32)
  return ids, seg, mask, positions


@functools.lru_cache(maxsize=None)
def _apply_fn(cfg: BertConfig):
  return jax.jit(BertForPreTraining(cfg).apply)  # one compile per config in this module


def _ours(model_config, params, inputs):
  out = _apply_fn(BertConfig.from_config(model_config))({"params": params}, *inputs)
  return [np.asarray(x) for x in out]


def _random_params(model_config, inputs, seed=7):
  """Pre-training params of the right shapes (eval_shape: nothing compiled), N(0, 0.1)."""
  model = BertForPreTraining(BertConfig.from_config(model_config))
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *inputs)["params"])
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda s: rng.normal(0, 0.1, s.shape).astype(np.float32), meta.unbox(shapes))


def _assert_equal_hf(model_config, seq, ours, theirs):
  """Our (MLM, NSP) logits == HF's up to float32 rounding in both through the encoder
  over `seq` tokens and the heads (tests/_numerics.py), at the logits' scale."""
  m = model_config
  tol = f32_tol(encoder_roundings(m.num_layers, m.hidden_size, m.intermediate_size,
                                  seq, m.num_heads), max(np.abs(t).max() for t in theirs))
  errs = [float(np.abs(a - b).max()) for a, b in zip(ours, theirs)]
  assert max(errs) <= tol, (errs, tol)


def _hf_outputs(hf, inputs):
  ids, seg, mask, positions = (torch.tensor(x, dtype=torch.long) for x in inputs)
  with torch.no_grad():
    out = hf(input_ids=ids, token_type_ids=seg, attention_mask=mask)
  mlm = np.take_along_axis(out.prediction_logits.numpy(), inputs[3][..., None], axis=1)
  return mlm, out.seq_relationship_logits.numpy()


def _assert_trees_equal(a, b):
  fa, ta = jax.tree_util.tree_flatten(a)
  fb, tb = jax.tree_util.tree_flatten(b)
  assert ta == tb
  for x, y in zip(fa, fb):
    assert np.asarray(x).shape == np.asarray(y).shape
    assert np.array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def tf_tiny():
  return checkpoints.load_pretrained(str(TF_DIR))


def test_reads_tensorflow_written_checkpoint():
  tensors = tf_checkpoint.read_checkpoint(str(TF_DIR / "bert_model.ckpt"))
  want = make_tf.google_tensors()
  assert int(tensors["global_step"]) == 1000
  assert sum(k.endswith(("adam_m", "adam_v")) for k in tensors) == 2 * len(want)
  for name, value in want.items():
    assert tensors[name].dtype == np.float32 and np.array_equal(tensors[name], value), name


def test_tf_checkpoint_equals_hf_reference(tf_tiny):
  model_config, params = tf_tiny
  assert (model_config.num_layers, model_config.hidden_size, model_config.num_heads,
          model_config.vocab_size, model_config.max_position_embeddings) == (2, 16, 2, 40, 24)
  # The prefix form gives the same.
  _assert_trees_equal(checkpoints.load_pretrained(str(TF_DIR / "bert_model.ckpt"))[1],
                      params)
  hf = transformers.BertForPreTraining(transformers.BertConfig(**make_tf.CONFIG))
  hf.eval()
  sd = {}
  for name, value in make_tf.google_tensors().items():
    key, transpose = _hf_name_of_google(name)
    sd[key] = torch.tensor(value.T if transpose else value)
  missing, unexpected = hf.load_state_dict(sd, strict=False)
  assert not unexpected and set(missing) <= {"cls.predictions.decoder.weight",
                                             "cls.predictions.decoder.bias"}, missing
  inputs = _inputs(40)
  mlm, nsp = _ours(model_config, params, inputs)
  ref_mlm, ref_nsp = _hf_outputs(hf, inputs)
  _assert_equal_hf(model_config, inputs[0].shape[1], (mlm, nsp), (ref_mlm, ref_nsp))
  assert np.abs(ref_mlm).max() > 0.1


def test_tf_written_from_params_imports_to_same_outputs(tmp_path):
  """Random-init pre-training params -> Google TF checkpoint -> load_pretrained."""
  m = weights.model_config_from_bert_json(str(TF_DIR / "bert_config.json"))
  inputs = _inputs(m.vocab_size)
  params = _random_params(m, inputs)
  weights.save_tf(str(tmp_path / "tf"), m, params, str(TF_DIR / "vocab.txt"))
  names = set(tf_checkpoint.read_checkpoint(str(tmp_path / "tf" / "bert_model.ckpt")))
  assert set(make_tf.google_tensors()) == names  # exactly Google's variable names
  m2, params2 = checkpoints.load_pretrained(str(tmp_path / "tf"))
  assert m2.to_dict() == m.to_dict()
  _assert_trees_equal(params2, params)
  for a, b in zip(_ours(m, params, inputs), _ours(m2, params2, inputs)):
    assert np.array_equal(a, b)


def test_minilm_hf_to_tf_to_params_exact(minilm_path, tmp_path):
  model_config, params = checkpoints.load_pretrained(minilm_path)
  prefix = weights.save_tf(str(tmp_path), model_config, params)
  assert prefix.endswith("bert_model.ckpt")
  m2, params2 = checkpoints.load_pretrained(str(tmp_path))
  _assert_trees_equal(params2, params)
  assert m2.num_layers == 6 and m2.hidden_size == 384


def test_convert_cli_to_orbax_and_back(tf_tiny, tmp_path):
  out = tmp_path / "converted"
  proc = subprocess.run([sys.executable, "-m", "bert_jax.tools.convert", f"--input={TF_DIR}",
                         f"--output={out}"], capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Read tf checkpoint" in proc.stdout and "Wrote bert_jax checkpoint" in proc.stdout
  assert (out / "vocab.txt").read_bytes() == (TF_DIR / "vocab.txt").read_bytes()
  saved = json.loads((out / "model_config.json").read_text())
  assert saved["num_layers"] == 2 and saved["vocab_size"] == 40
  model_config, params = checkpoints.load_pretrained(str(out))
  assert checkpoints.checkpoint_format(str(out)) == "bert_jax"
  assert model_config.to_dict() == tf_tiny[0].to_dict()
  _assert_trees_equal(params, tf_tiny[1])
  assert all(isinstance(x, np.ndarray) for x in jax.tree_util.tree_leaves(params))
  with pytest.raises(CheckpointError, match="already exists"):
    weights.save_converted(str(out), model_config, params)


def test_converted_checkpoint_comes_back_in_its_configs_layer_layout(tf_tiny, tmp_path):
  """A converted checkpoint written with stacked layers (scan_layers=True, or by a
  bert_jax version whose model_config.json has no scan_layers key) loads in the layout
  its config says: stacked for True, one subtree per layer for the default."""
  from bert_jax import model as model_lib
  model_config, params = tf_tiny
  assert sorted(params["bert"]["encoder"]) == ["layer_0", "layer_1"]  # the default
  stacked = model_lib.stack_layers(params)
  scanned = model_config.copy_and_resolve_references()
  scanned.scan_layers = True
  weights.save_converted(str(tmp_path / "scan"), scanned, stacked)
  cfg, got = checkpoints.load_pretrained(str(tmp_path / "scan"))
  assert cfg.scan_layers and got["bert"]["encoder"]["layers"]["qkv"]["kernel"].shape[0] == 2
  _assert_trees_equal(got, stacked)
  weights.save_converted(str(tmp_path / "old"), scanned, stacked)
  saved = json.loads((tmp_path / "old" / "model_config.json").read_text())
  del saved["scan_layers"]
  (tmp_path / "old" / "model_config.json").write_text(json.dumps(saved))
  cfg, got = checkpoints.load_pretrained(str(tmp_path / "old"))
  assert not cfg.scan_layers
  _assert_trees_equal(got, params)


def test_hf_export_loads_in_transformers_and_round_trips(tf_tiny, tmp_path):
  model_config, params = tf_tiny
  out = str(tmp_path / "hf")
  convert.convert(str(TF_DIR), out, to="hf")
  hf = transformers.BertForPreTraining.from_pretrained(out)
  hf.eval()
  inputs = _inputs(40)
  mlm, nsp = _ours(model_config, params, inputs)
  ref_mlm, ref_nsp = _hf_outputs(hf, inputs)
  _assert_equal_hf(model_config, inputs[0].shape[1], (mlm, nsp), (ref_mlm, ref_nsp))
  m2, params2 = checkpoints.load_pretrained(out)  # HF export -> import: exact
  assert m2.to_dict() == model_config.to_dict()
  _assert_trees_equal(params2, params)


def test_google_zip_is_extracted_safely(tmp_path):
  good = tmp_path / "uncased_L-2_H-16_A-2.zip"
  with zipfile.ZipFile(good, "w") as z:
    for f in TF_DIR.iterdir():
      z.write(f, f"uncased_L-2_H-16_A-2/{f.name}")
  convert.convert(str(good), str(tmp_path / "out"))
  assert checkpoints.load_pretrained(str(tmp_path / "out"))[0].hidden_size == 16
  evil = tmp_path / "evil.zip"
  with zipfile.ZipFile(evil, "w") as z:
    z.writestr("../escaped.txt", "x")
  with pytest.raises(CheckpointError, match="outside the extraction directory"):
    convert.convert(str(evil), str(tmp_path / "out2"))
  assert not (tmp_path / "escaped.txt").exists()


def _one_line(excinfo):
  msg = str(excinfo.value)
  assert "\n" not in msg
  return msg


def test_bad_checkpoints(tmp_path, minilm_path):
  # Vocabulary size != embedding rows.
  m = weights.model_config_from_bert_json(str(TF_DIR / "bert_config.json"))
  assert weights.check_vocab(str(TF_DIR / "vocab.txt"), m) == 40
  with pytest.raises(CheckpointError) as e:
    weights.check_vocab(str(pathlib.Path(minilm_path) / "vocab.txt"), m)
  msg = _one_line(e)
  assert "30522 tokens" in msg and "vocab_size=40" in msg and "vocab.txt" in msg
  # A config whose vocab_size does not fit the checkpoint's embedding table.
  bad = tmp_path / "bad_tf"
  shutil.copytree(TF_DIR, bad)
  cfg = json.loads((bad / "bert_config.json").read_text())
  (bad / "bert_config.json").write_text(json.dumps(dict(cfg, vocab_size=41)))
  with pytest.raises(CheckpointError) as e:
    checkpoints.load_pretrained(str(bad))
  assert "[40, 16]" in _one_line(e) and "vocab_size=41" in str(e.value)
  # Missing config, missing path, missing vocab, corrupt data.
  (bad / "bert_config.json").unlink()
  with pytest.raises(CheckpointError) as e:
    checkpoints.load_pretrained(str(bad))
  assert "bert_config.json" in _one_line(e)
  with pytest.raises(CheckpointError) as e:
    checkpoints.load_pretrained(str(tmp_path / "nope"))
  assert "does not exist" in _one_line(e)
  novocab = tmp_path / "novocab"
  shutil.copytree(TF_DIR, novocab)
  (novocab / "vocab.txt").unlink()
  with pytest.raises(CheckpointError) as e:
    convert.convert(str(novocab), str(tmp_path / "o"))
  assert "--vocab_file" in _one_line(e)
  data = novocab / "bert_model.ckpt.data-00000-of-00001"
  raw = bytearray(data.read_bytes())
  raw[100] ^= 0xFF
  data.write_bytes(bytes(raw))
  with pytest.raises(CheckpointError) as e:
    checkpoints.load_pretrained(str(novocab))
  assert "checksum mismatch" in _one_line(e)
  # Hidden size not divisible by heads in a checkpoint's config.
  hf_dir = tmp_path / "hf_bad"
  hf_dir.mkdir()
  (hf_dir / "config.json").write_text(json.dumps(dict(make_tf.CONFIG, num_attention_heads=3)))
  with pytest.raises(ValueError) as e:
    checkpoints.load_pretrained(str(hf_dir))
  assert "not divisible" in _one_line(e) and "num_heads" in str(e.value)
