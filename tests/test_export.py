"""Serving: per-layer hidden states (= Hugging Face output_hidden_states on the real
MiniLM), jax.export round trip in a fresh process through `bert_jax.tools.predict` on real MRPC
pairs, symbolic batch for every head, TF SavedModel reloaded in TensorFlow,
extract_features in the original's format."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax.linen import meta

from bert_jax import checkpoints
from bert_jax import config as config_lib
from bert_jax.tools import export, extract_features, predict
from bert_jax import model as model_lib
from _numerics import encoder_roundings, f32_tol

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "export"
MRPC_SAMPLE = FIXTURES / "mrpc_dev_sample.tsv"


@pytest.fixture(scope="module")
def minilm(minilm_path):
  cfg, params = checkpoints.load_pretrained(minilm_path)
  return cfg, params, os.path.join(minilm_path, "vocab.txt")


@pytest.fixture(scope="module")
def mrpc_classifier(minilm):
  """MiniLM's real encoder + a seeded classifier head: an MRPC-shaped classifier."""
  cfg, params, vocab = minilm
  spec = export.ServingSpec(head="classification", max_seq_length=64, model=cfg.to_dict(),
                            labels=["0", "1"], task="mrpc",
                            text_columns=["#1 String", "#2 String"])
  rng = np.random.RandomState(7)  # the head as BertForSequenceClassification names it
  head = {"kernel": (rng.standard_normal((cfg.hidden_size, 2)) * 0.02).astype(np.float32),
          "bias": np.array([0.01, -0.01], np.float32)}
  return spec, {"bert": params["bert"], "classifier": head}, vocab


def _encoder_tol(m, seq: int, scale: float) -> float:
  """|a - b| allowed between two float32 forwards of config.model `m` over `seq` tokens
  (ours and HF, or two compilations: jit, the exported StableHLO, TensorFlow), at
  magnitude `scale`: eps32 x the roundings through the layers (tests/_numerics.py)."""
  m = m.to_dict() if hasattr(m, "to_dict") else dict(m)
  return f32_tol(encoder_roundings(m["num_layers"], m["hidden_size"],
                                   m["intermediate_size"], seq, m["num_heads"]), scale)


def _run(args, **kw):
  return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                        timeout=600, cwd=pathlib.Path(__file__).resolve().parents[1], **kw)


def test_all_layers_equal_hugging_face_hidden_states(minilm, minilm_path):
  import torch
  from transformers import BertModel as HFBertModel
  cfg, params, vocab = minilm
  from bert_jax.finetune import encode_sentence_pairs
  from bert_jax.tokenization import load_tokenizer
  feats = encode_sentence_pairs(load_tokenizer(vocab), ["The cat sat on the mat.", "Hi"],
                                ["A cat was on a mat.", "Hello there, friend"], 24)
  module = model_lib.BertModel(model_lib.BertConfig.from_config(cfg))
  args = (feats["input_ids"], feats["token_type_ids"], feats["attention_mask"])
  seq, pooled, hidden = module.apply({"params": params["bert"]}, *args, return_all_layers=True)
  seq0, pooled0 = module.apply({"params": params["bert"]}, *args)  # default: unchanged
  np.testing.assert_array_equal(np.asarray(seq), np.asarray(seq0))
  np.testing.assert_array_equal(np.asarray(pooled), np.asarray(pooled0))
  hf = HFBertModel.from_pretrained(minilm_path).eval()
  with torch.no_grad():
    ref = hf(*(torch.tensor(a, dtype=torch.long) for a in (args[0], args[2], args[1])),
             output_hidden_states=True).hidden_states
  assert hidden.shape == (len(ref), 2, 24, cfg.hidden_size) == (cfg.num_layers + 1, 2, 24, 384)
  mask = feats["attention_mask"][..., None]
  for ours, theirs in zip(np.asarray(hidden), ref):
    ref_h = theirs.numpy() * mask  # float32 rounding through the layers, both sides
    np.testing.assert_allclose(ours * mask, ref_h, rtol=0,
                               atol=_encoder_tol(cfg, 24, np.abs(ref_h).max()))


def test_export_reloaded_in_fresh_process_predicts_same(mrpc_classifier, tmp_path):
  spec, params, vocab = mrpc_classifier
  paths = export.save(str(tmp_path / "mrpc"), spec, params, vocab)
  assert set(paths) == {"exported", "params", "spec", "vocab"}
  out_file = tmp_path / "preds.jsonl"
  r = _run(["-m", "bert_jax.tools.predict", f"--model_dir={tmp_path / 'mrpc'}",
            f"--input_file={MRPC_SAMPLE}", f"--output_file={out_file}", "--batch_size=4"])
  assert r.returncode == 0, r.stderr
  assert "6 predictions (pairs)" in r.stdout
  rows = [json.loads(l) for l in out_file.read_text().splitlines()]
  # The same pairs through the in-memory params (no export) in this process.
  ids, a, b = predict.read_examples(str(MRPC_SAMPLE), task_columns=spec.text_columns)
  assert len(a) == 6 and a[0].startswith("He said the foodservice pie business")
  from bert_jax.finetune import encode_sentence_pairs
  from bert_jax.tokenization import load_tokenizer
  feats = encode_sentence_pairs(load_tokenizer(vocab), a, b, spec.max_seq_length)
  ref = np.asarray(export.outputs_fn(spec)(params, **feats)["probabilities"])
  got = np.array([[r["probabilities"]["0"], r["probabilities"]["1"]] for r in rows])
  # The exported program vs jit: float32 rounding through encoder, head and softmax
  # (probabilities <= 1; JSON keeps every float32 digit).
  np.testing.assert_allclose(got, ref, rtol=0, atol=_encoder_tol(spec.model, 64, 1.0))
  assert [r["label"] for r in rows] == [spec.labels[i] for i in ref.argmax(-1)]
  assert [r["id"] for r in rows] == [str(i) for i in range(6)]


def _tiny_spec(head, **kw):
  m = config_lib.model_config("tiny")
  m.update(vocab_size=64, hidden_size=32, num_heads=2, intermediate_size=64,
           max_position_embeddings=32, num_layers=2)
  return export.ServingSpec(head=head, max_seq_length=16, model=m.to_dict(), **kw)


def _init(spec, seed=0):
  """Random params of the head's shapes (numpy: XLA-compiling the init costs seconds)."""
  x = np.zeros((1, *spec.input_shape), np.int32)
  shapes = meta.unbox(jax.eval_shape(export.build_module(spec).init, jax.random.PRNGKey(0),
                                     x, x, x)["params"])
  rng = np.random.RandomState(seed)
  return jax.tree_util.tree_map(
      lambda s: (rng.standard_normal(s.shape) * 0.2 + (s.ndim == 1)).astype(s.dtype), shapes)


def _inputs(spec, batch, seed):
  rng = np.random.RandomState(seed)
  ids = rng.randint(5, 64, (batch, *spec.input_shape)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[..., 11:] = 0
  ids = ids * mask
  types = np.zeros_like(ids)
  types[..., 6:11] = 1
  return ids, types, mask


@pytest.mark.parametrize("head,kw,batches", [
    ("question_answering", {}, (1, 3)), ("multiple_choice", {"num_choices": 3}, (1, 3)),
    ("regression", {}, (2,)), ("features", {}, (2,))])
def test_symbolic_batch_every_head(head, kw, batches, tmp_path):
  spec = _tiny_spec(head, **kw)
  params = _init(spec)
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                             + [f"w{i}" for i in range(59)]) + "\n")
  export.save(str(tmp_path / "m"), spec, params, str(vocab), platforms=("cpu",))
  loaded = export.load(str(tmp_path / "m"))
  assert loaded.spec == spec
  reference = export.outputs_fn(spec)  # eager: no extra compilation
  for batch in batches:  # one exported artifact, any batch size
    ids, types, mask = _inputs(spec, batch, seed=batch)
    got = loaded(ids, types, mask)
    ref = reference(params, ids, types, mask)
    assert sorted(got) == sorted(spec.output_names)
    for k in spec.output_names:
      assert got[k].shape[0] == batch
      r = np.asarray(ref[k])  # the exported program vs eager: float32 rounding of both
      np.testing.assert_allclose(got[k], r, rtol=0, atol=_encoder_tol(
          spec.model, spec.max_seq_length, max(np.abs(r).max(), 1.0)), err_msg=k)
  with pytest.raises(export.ExportError, match="pad to max_seq_length"):
    loaded(np.zeros((2, 5), np.int32))


def test_tf_saved_model_reloaded_in_tensorflow(tmp_path):
  spec = _tiny_spec("classification", labels=["a", "b", "c"])
  params = _init(spec, seed=3)
  export.save_tf_saved_model(str(tmp_path / "sm"), spec, params)
  ids, types, mask = _inputs(spec, 5, seed=11)
  np.savez(tmp_path / "inputs.npz", ids=ids, types=types, mask=mask)
  script = (  # TensorFlow only: no jax, no bert_jax in the loading process.
      "import sys, numpy as np, tensorflow as tf\n"
      "d = np.load(sys.argv[2])\n"
      "f = tf.saved_model.load(sys.argv[1]).signatures['serving_default']\n"
      "out = f(input_ids=tf.constant(d['ids']), token_type_ids=tf.constant(d['types']),"
      " attention_mask=tf.constant(d['mask']))\n"
      "assert 'bert_jax' not in sys.modules and 'flax' not in sys.modules\n"
      "np.savez(sys.argv[3], **{k: v.numpy() for k, v in out.items()})\n")
  r = _run(["-c", script, str(tmp_path / "sm"), str(tmp_path / "inputs.npz"),
            str(tmp_path / "out.npz")], env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
  assert r.returncode == 0, r.stderr[-3000:]
  got = np.load(tmp_path / "out.npz")
  ref = export.outputs_fn(spec)(params, ids, types, mask)
  for k in ("logits", "probabilities"):
    r = np.asarray(ref[k])  # TensorFlow vs XLA: float32 rounding of both
    np.testing.assert_allclose(got[k], r, rtol=0, atol=_encoder_tol(
        spec.model, spec.max_seq_length, max(np.abs(r).max(), 1.0)), err_msg=k)


def test_extract_features_original_format_equals_hf_layers(minilm_path, tmp_path):
  import torch
  from transformers import BertModel as HFBertModel
  inp = tmp_path / "input.txt"
  inp.write_text("Who was Jim Henson ? ||| Jim Henson was a puppeteer\n"
                 "The quick brown fox.\n")
  out = tmp_path / "features.jsonl"
  assert extract_features.main([f"--input_file={inp}", f"--output_file={out}",
                                f"--init_checkpoint={minilm_path}", "--layers=-1,-2,0",
                                "--max_seq_length=32", "--batch_size=2"]) == 0
  recs = [json.loads(l) for l in out.read_text().splitlines()]
  assert [r["linex_index"] for r in recs] == [0, 1]
  tokens = [f["token"] for f in recs[0]["features"]]
  assert tokens == ["[CLS]", "who", "was", "jim", "henson", "?", "[SEP]", "jim", "henson",
                    "was", "a", "puppet", "##eer", "[SEP]"]
  assert [l["index"] for l in recs[0]["features"][0]["layers"]] == [-1, -2, 0]
  hf = HFBertModel.from_pretrained(minilm_path).eval()
  from bert_jax.tokenization import load_tokenizer
  tok = load_tokenizer(os.path.join(minilm_path, "vocab.txt"))
  ids = torch.tensor([tok.convert_tokens_to_ids(tokens)])
  types = torch.tensor([[0] * 7 + [1] * 7])
  with torch.no_grad():
    hs = hf(input_ids=ids, token_type_ids=types, output_hidden_states=True).hidden_states
  for layer_pos, layer in enumerate((-1, -2, 0)):
    ours = np.array([f["layers"][layer_pos]["values"] for f in recs[0]["features"]])
    ref_h = hs[1:][layer][0].numpy()
    # float32 rounding through the layers (ours, HF), + 5e-7: values are written
    # rounded to 6 decimals, as the original does
    np.testing.assert_allclose(ours, ref_h, rtol=0, atol=5e-7 + _encoder_tol(
        {"num_layers": 6, "hidden_size": 384, "intermediate_size": 1536, "num_heads": 12},
        32, np.abs(ref_h).max()))
  assert len(recs[1]["features"]) == 7  # [CLS] the quick brown fox . [SEP]


def test_bad_inputs_are_clear_errors(tmp_path, capsys):
  with pytest.raises(predict.PredictError, match="no text column 'sentence'"):
    predict.read_examples(str(MRPC_SAMPLE), text_a="sentence")
  bad = tmp_path / "pairs.txt"
  bad.write_text("a ||| b\nonly one\n")
  with pytest.raises(predict.PredictError, match="example 2 has no '|||'"):
    predict.read_examples(str(bad))
  jl = tmp_path / "x.jsonl"
  jl.write_text('{"text_a": "fine"}\n{"text": "no text_a"}\n')
  with pytest.raises(predict.PredictError, match=r"x.jsonl:2: missing 'text_a'"):
    predict.read_examples(str(jl))
  with pytest.raises(predict.PredictError, match="--layers='-7'"):
    extract_features.parse_layers("-7", 6)
  assert predict.main(["--model_dir", str(tmp_path), "--input_file", str(jl),
                       "--output_file", str(tmp_path / "o.jsonl")]) == 2
  assert "no serving.json" in capsys.readouterr().err
