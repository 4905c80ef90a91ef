"""Pre-training curve parity in short: bert_jax vs Hugging Face PyTorch BertForPreTraining.

benchmarks/curve_parity.py (the 1,000-step study) at test size: a 2-layer, H=64 model,
50 steps of 8 x 32 batches from our pipeline (masks fixed, fed to both), the same initial
weights (ours, exported with weights.save_hf), AdamW with the same decay mask,
clipping, warmup and decay, dropout off. Four runs: bert_jax and HF, each in float32 and
in float64 from the same float32 weights.

- float64 is the maths: the two curves are the same up to float64 rounding, which is
  float32's scaled by 2^-29: max |L_jax64 - L_hf64| <= 2^-29 max (E_jax + E_hf), where E
  is each float32 curve's distance from its own float64 run (running max: rounding error
  amplified by training; see curve_parity.analyse);
- float32: |L_jax - L_hf| <= E_jax(t) + E_hf(t) + |L_jax64 - L_hf64| at every step (the
  disagreement is rounding only), and below the curve's step-to-step noise.
(Both sides normalise the MLM loss by the number of predictions, HF's mean: bert_jax's
default adds the original's 1e-5 to it, curve_parity.hf_denominators.)
"""
import importlib.util
import pathlib
import tempfile

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 50


def _benchmark():
  spec = importlib.util.spec_from_file_location(
      "curve_parity", REPO / "benchmarks" / "curve_parity.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def curves():
  import torch
  cp = _benchmark()
  config = cp.make_config(layers=2, hidden=64, heads=2, intermediate=256, batch=8, seq=32,
                          steps=STEPS, learning_rate=1e-3)
  batches = cp.make_batches(config, STEPS)
  params = cp.initial_params(config)
  threads = torch.get_num_threads()
  torch.set_num_threads(1)  # see curve_parity --torch_threads
  try:
    with tempfile.TemporaryDirectory() as tmp:
      hf_dir = cp.export_hf(config, params, tmp)
      hf, hf64 = cp.TorchRun(hf_dir, config), cp.TorchRun(hf_dir, config, float64=True)
    runs = {"jax": cp.JaxRun(config, params), "hf": hf,
            "jax64": cp.JaxRun(config, params, float64=True), "hf64": hf64}
    out = {name: np.array([run.step(b) for b in batches]) for name, run in runs.items()}
  finally:
    torch.set_num_threads(threads)
  return cp, out, batches


def test_float64_curves_are_the_same_maths(curves):
  """In float64 the curves differ by float64 rounding only: at most the float32 errors
  scaled by 2^-29 (curve_parity.analyse)."""
  cp, c, _ = curves
  summary = cp.analyse(c)["float64"]
  print("float64:", summary)
  assert summary["within_tolerance"], summary
  assert c["jax64"][-1] < c["jax64"][0] - 0.5  # it learns


def test_float32_curves_agree_within_rounding_and_noise(curves):
  """|L_jax - L_hf| <= E_jax(t) + E_hf(t) + |L_jax64 - L_hf64|: the float32 curves differ
  by each implementation's own float32 error only; and by less than the curve's own
  step-to-step noise."""
  cp, c, _ = curves
  summary = cp.analyse(c)["dropout_off"]
  print("float32:", summary)
  assert summary["within_tolerance"], summary
  assert summary["within_noise"], summary
