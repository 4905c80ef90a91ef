"""Pre-training (bert_jax/train.py) on the bundled corpus, with 8 fake CPU devices.

- mesh equivalence: 3 steps on 1 device, data=8, data2 x fsdp4, data2 x tensor4 and
  fsdp8 give the same losses and params, and params and optimizer state are sharded as
  the logical rules say;
- gradient accumulation over k micro-batches == one step on the k x batch;
  (both in float64: see EQUIV_RTOL)
- learning: the tiny config lowers the MLM loss within 150 steps;
- resume: 20 steps straight == 10, stop, restart, 10 more (model, optimizer, data);
- warm start from a run (phase 2) and the FLOPs formula vs XLA's cost_analysis().

Compiles are the cost here: one micro model (1 layer, H=32) for the mesh tests, run
with XLA's most expensive optimizations off (the numbers compared are unchanged), and a
persistent compilation cache so the resume test's three runs compile once.
"""
import contextlib
import importlib.util
import json
import pathlib

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from bert_jax import data, optim, partitioning, tokenization, train, train_lib, flops
from bert_jax import checkpoints
from bert_jax import config as config_lib

from bert_jax.tasks import pretrain
from _numerics import EQUIV_RTOL, max_relative_error

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_config(name: str):
  spec = importlib.util.spec_from_file_location(f"_cfg_{name}", REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def micro_config():
  """configs/tiny.py (bundled corpus and vocab) shrunk to a 1-layer, H=32 model."""
  c = load_config("tiny")
  c.model.num_layers = 1
  c.model.hidden_size = 32
  c.model.num_heads = 4
  c.model.intermediate_size = 64
  c.model.max_position_embeddings = 64
  c.model.scan_layers = True
  c.data.max_seq_length = 32
  c.data.max_predictions_per_seq = 5
  c.train.batch_size = 16
  c.train.num_steps = 20
  c.train.warmup_steps = 5
  c.train.log_every = 5
  c.train.eval_every = 10
  c.train.eval_steps = 2
  c.train.checkpoint_every = 10
  return c


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
  """A persistent compilation cache for this module: identical programs compile once."""
  from jax._src import compilation_cache as cc
  names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
           "jax_persistent_cache_min_entry_size_bytes")
  old = {n: getattr(jax.config, n) for n in names}
  jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  cc.reset_cache()
  yield
  for n, v in old.items():
    jax.config.update(n, v)
  cc.reset_cache()


def float64(c):
  """`c` with a float64 model (params, compute, softmax, LayerNorm); run it under
  jax.enable_x64(True)."""
  c.model.dtype = c.model.param_dtype = "float64"
  return c


# The equivalence tests (meshes, gradient accumulation) change only the order of float
# sums; they run in float64, where Adam's amplification of that rounding is bounded by
# EQUIV_RTOL = 1000 x eps64 / eps_adam = 2.2e-7 relative (tests/_numerics.py; in
# float32 the same bound exceeds 1). Measured: 2e-14 (params), 4e-16 (losses).


@contextlib.contextmanager
def quick_xla():
  """XLA without its slow optimization passes: 3x faster compiles, slower steps; for the
  tests that run a few steps of a micro model (the numbers compared are unaffected)."""
  old = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", True)
  try:
    yield
  finally:
    jax.config.update("jax_disable_most_optimizations", old)


@pytest.fixture(scope="module")
def tokenizer():
  c = micro_config()
  return tokenization.load_tokenizer(config_lib.vocab_file(c), c.do_lower_case)


@pytest.fixture(scope="module")
def batches(tokenizer):
  """Four real global batches (16 x 32) from the bundled corpus's pipeline."""
  it = data.make_pretraining_iterator(micro_config(), tokenizer, split="train",
                                      process_index=0, process_count=1, seed=0)
  out = [next(it) for _ in range(4)]
  it.close()
  return out


def run_steps(config, mesh, batches, state0=None, grad_accum_steps=1):
  """3 steps from the same initial params on `mesh` -> (losses, final state)."""
  model = pretrain.make_model(config)
  tx = optim.make_optimizer(config.train)
  init_fn = pretrain.make_init_fn(model, config)
  if state0 is None:
    state, shardings = train_lib.create_train_state(init_fn, tx, mesh, config.seed)
  else:  # the same numbers, placed on this mesh's shardings (no init compile per mesh)
    _, shardings = train_lib.abstract_train_state(init_fn, tx, mesh, config.seed)
    state = jax.device_put(state0, shardings)
  step = train_lib.make_train_step(pretrain.make_compute_loss(model), pretrain.denominators, tx,
                                   mesh, shardings, grad_accum_steps=grad_accum_steps)
  losses = []
  for b in batches[:3]:
    state, metrics = step(state, train_lib.global_batch(b, mesh))
    losses.append(float(metrics["loss"]))
  return losses, state


MESHES = {  # name: (data, fsdp, tensor)
    "data8": (8, 1, 1),
    "data2xfsdp4": (2, 4, 1),
    "data2xtensor4": (2, 1, 4),
    "fsdp8": (1, 8, 1),
}


@pytest.fixture(scope="module")
def state0():
  """The initial train state of micro_config, on the host (placed on each mesh later)."""
  c = float64(micro_config())
  c.mesh.shape = (1, 1, 1)
  mesh1 = partitioning.make_mesh(c.mesh, jax.devices()[:1])
  with quick_xla(), jax.enable_x64(True):
    state, _ = train_lib.create_train_state(
        pretrain.make_init_fn(pretrain.make_model(c), c), optim.make_optimizer(c.train), mesh1,
        c.seed)
  return jax.device_get(state)


@pytest.fixture(scope="module")
def mesh_runs(batches, state0):
  c = float64(micro_config())
  c.mesh.shape = (1, 1, 1)
  runs = {}
  with quick_xla(), jax.enable_x64(True):
    runs["1"] = run_steps(c, partitioning.make_mesh(c.mesh, jax.devices()[:1]), batches,
                          state0)
    for name, shape in MESHES.items():
      c.mesh.shape = shape
      runs[name] = run_steps(c, partitioning.make_mesh(c.mesh), batches, state0)
  return runs


def _leaves(tree):
  return {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.mark.parametrize("name", list(MESHES))
def test_mesh_equivalence(mesh_runs, name):
  ref_losses, ref_state = mesh_runs["1"]
  losses, state = mesh_runs[name]
  # float64 rounding, and the params they come from differ by <= EQUIV_RTOL
  np.testing.assert_allclose(losses, ref_losses, rtol=EQUIV_RTOL)
  assert losses[-1] < losses[0]  # the 3 steps really trained
  ref = _leaves(jax.device_get(ref_state.params))
  got = _leaves(jax.device_get(state.params))
  assert ref.keys() == got.keys()
  assert all(x.dtype == np.float64 for x in got.values())
  for k in ref:
    err = max_relative_error(got[k], ref[k])  # float64 rounding x Adam, see EQUIV_RTOL
    assert err <= EQUIV_RTOL, f"{name}: {k} differs by {err:.2e} (relative)"


# Expected PartitionSpecs (rules: embed->fsdp, heads/mlp/vocab->tensor; layers stacked).
EXPECTED_SPECS = {
    "data8": {},
    "data2xfsdp4": {
        "['bert']['encoder']['layers']['intermediate']['kernel']": P(None, "fsdp", None),
        "['bert']['encoder']['layers']['qkv']['kernel']": P(None, "fsdp", None, None, None),
        "['bert']['embeddings']['word_embeddings']['embedding']": P(None, "fsdp"),
    },
    "data2xtensor4": {
        "['bert']['encoder']['layers']['intermediate']['kernel']": P(None, None, "tensor"),
        "['bert']['encoder']['layers']['qkv']['kernel']": P(None, None, None, "tensor", None),
        "['bert']['encoder']['layers']['attention_output']['kernel']":
            P(None, "tensor", None, None),
        "['bert']['embeddings']['word_embeddings']['embedding']": P("tensor", None),
        "['mlm_output_bias']": P("tensor"),
    },
    "fsdp8": {
        "['bert']['encoder']['layers']['output']['kernel']": P(None, None, "fsdp"),
        "['bert']['embeddings']['word_embeddings']['embedding']": P(None, "fsdp"),
    },
}


def _norm(spec, mesh):
  """The mesh axes that really split each dimension (size-1 axes dropped), trailing
  unsplit dimensions removed, for comparison."""
  entries = []
  for e in spec:
    axes = tuple(a for a in ((e,) if isinstance(e, str) else (e or ())) if mesh.shape[a] > 1)
    entries.append(axes[0] if len(axes) == 1 else (axes or None))
  while entries and entries[-1] is None:
    entries.pop()
  return tuple(entries)


@pytest.mark.parametrize("name", list(MESHES))
def test_params_and_optimizer_state_sharded_by_rules(mesh_runs, name):
  _, state = mesh_runs[name]
  params = _leaves(state.params)
  for key, spec in EXPECTED_SPECS[name].items():
    x = params[key]
    mesh = x.sharding.mesh
    assert _norm(x.sharding.spec, mesh) == _norm(spec, mesh), (name, key, x.sharding.spec)
    # really split: each device holds 1/n of the array
    n = np.prod([x.sharding.mesh.shape[a] for a in spec if a])
    assert x.addressable_shards[0].data.size * n == x.size
  if name == "data8":  # pure data parallel: every device holds every parameter whole
    assert all(x.addressable_shards[0].data.shape == x.shape for x in params.values())
  # Adam moments carry the sharding of their parameter (ZeRO-3 / tensor parallel).
  opt = _leaves(state.opt_state)
  matched = 0
  for okey, leaf in opt.items():
    for pkey, p in params.items():
      if okey.endswith(pkey) and leaf.shape == p.shape:
        assert leaf.sharding.spec == p.sharding.spec, (name, okey)
        matched += 1
  assert matched >= 2 * len(params)  # mu and nu of every parameter


def test_grad_accumulation_equals_big_batch(batches, state0):
  """4 micro-batches of 4 == one batch of 16 (dropout off: masks differ per micro-batch)."""
  c = float64(micro_config())
  c.model.dropout_rate = 0.0
  c.model.attention_dropout_rate = 0.0
  c.mesh.shape = (1, 4, 1)  # micro-batch 4 over 4 data-parallel (fsdp) devices
  mesh = partitioning.make_mesh(c.mesh, jax.devices()[:4])
  with quick_xla(), jax.enable_x64(True):
    full_losses, full = run_steps(c, mesh, batches, state0)
    acc_losses, acc = run_steps(c, mesh, batches, state0, grad_accum_steps=4)
  np.testing.assert_allclose(acc_losses, full_losses, rtol=EQUIV_RTOL)  # as the meshes
  assert acc_losses[-1] < acc_losses[0]  # the 3 steps really trained
  ref, got = _leaves(jax.device_get(full.params)), _leaves(jax.device_get(acc.params))
  for k in ref:
    err = max_relative_error(got[k], ref[k])  # float64 rounding x Adam, see EQUIV_RTOL
    assert err <= EQUIV_RTOL, f"accumulated: {k} differs by {err:.2e} (relative)"


# ---------------------------------------------------------------------------------------
# The loop: learning, resume, warm start
# ---------------------------------------------------------------------------------------

LEARN_STEPS = 100
LEARN_BATCH = 16
# Measured on the bundled corpus (configs/tiny.py at batch 16, seq 64): the MLM loss
# (train, mean of steps 76-100) falls from ln(8000) = 9.0 to about 6.4 in 100 steps;
# 2 nats is a bound that broken gradients, a zero or frozen learning rate, or a loss
# that does not reach the MLM head all fail.
MIN_MLM_DROP = 2.0


def test_nsp_loss_weight_zero_is_mlm_only(batches):
  """train.nsp_loss_weight=0 (the paper's "No NSP" ablation): the loss is the MLM mean,
  no gradient reaches the NSP head while the encoder's equals MLM's alone; 1: MLM + NSP."""
  c = micro_config()
  model = pretrain.make_model(c)
  params = jax.jit(pretrain.make_init_fn(model, c))(jax.random.PRNGKey(0))
  params = jax.tree_util.tree_map(lambda x: getattr(x, "value", x), params,
                                  is_leaf=lambda x: hasattr(x, "value"))
  batch = {k: jax.numpy.asarray(v) for k, v in batches[0].items()}
  den = pretrain.denominators(batch)
  rng = jax.random.PRNGKey(1)
  grads, metrics = {}, {}
  for w in (0.0, 1.0):
    loss_fn = pretrain.make_compute_loss(model, w)
    (loss, m), g = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, rng, den)
    grads[w], metrics[w] = g, {**m, "loss": loss}
  m0, m1 = metrics[0.0], metrics[1.0]
  assert float(m0["loss"]) == float(m0["mlm_loss"])
  np.testing.assert_allclose(float(m1["loss"]), float(m1["mlm_loss"] + m1["nsp_loss"]),
                             rtol=1e-6)
  assert float(m0["nsp_loss"]) == float(m1["nsp_loss"]) > 0  # still measured, not trained
  flat0 = {jax.tree_util.keystr(k): v for k, v in
           jax.tree_util.tree_flatten_with_path(grads[0.0])[0]}
  flat1 = {jax.tree_util.keystr(k): v for k, v in
           jax.tree_util.tree_flatten_with_path(grads[1.0])[0]}
  nsp = [k for k in flat0 if "seq_relationship" in k or "nsp" in k.lower()]
  assert nsp, sorted(flat0)
  for k in nsp:
    assert not np.any(np.asarray(flat0[k])), k
    assert np.any(np.asarray(flat1[k])), k
  mlm_only = [k for k in flat0 if "predictions" in k or "mlm" in k.lower()]
  assert mlm_only and all(np.array_equal(flat0[k], flat1[k]) for k in mlm_only
                          if "pooler" not in k)


def test_tiny_config_learns_on_bundled_corpus(tmp_path, capsys):
  c = load_config("tiny")
  c.train.num_steps = LEARN_STEPS
  c.train.batch_size = LEARN_BATCH
  c.train.warmup_steps = 15
  c.train.log_every = 25
  c.train.eval_every = LEARN_STEPS
  c.train.eval_steps = 2
  c.train.checkpoint_every = LEARN_STEPS
  out = train.train_and_evaluate(c, str(tmp_path))
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  mlm = [(r["step"], r["train/mlm_loss"]) for r in records if "train/mlm_loss" in r]
  assert [s for s, _ in mlm] == list(range(25, LEARN_STEPS + 1, 25))
  first = float(np.log(8000))  # the loss of a uniform guess, where training starts
  assert mlm[0][1] < first + 0.5
  assert first - mlm[-1][1] > MIN_MLM_DROP, mlm
  ev = out["eval"]
  assert ev["mlm_loss"] < first - MIN_MLM_DROP + 0.5 and 0.0 < ev["mlm_accuracy"] <= 1.0
  assert 0.0 <= ev["nsp_accuracy"] <= 1.0
  assert any(r.get("eval/mlm_loss") for r in records)
  stdout = capsys.readouterr().out
  line = [l for l in stdout.splitlines() if l.startswith(f"step {LEARN_STEPS}/")][0]
  for field in ("loss", "mlm_acc", "nsp_acc", "lr", "gnorm", "seq/s", "MFU", "ETA"):
    assert field in line, line
  assert (tmp_path / "tensorboard").is_dir() and (tmp_path / "config.json").is_file()


def test_resume_is_exact(tmp_path, monkeypatch):
  """20 steps straight == 10 steps, stop (the SIGTERM hook), restart, 10 more."""
  monkeypatch.chdir(tmp_path)  # run "b" uses a relative workdir, as the README does
  c = micro_config()
  c.train.eval_steps = 0
  c.train.checkpoint_every = 100  # only the stop and the final step save
  calls = []
  with quick_xla():
    straight = train.train_and_evaluate(c, str(tmp_path / "a"))
    first = train.train_and_evaluate(c, "b",
                                     should_stop=lambda: calls.append(1) or len(calls) == 10)
    second = train.train_and_evaluate(c, "b")
  assert first["stopped_early"] and first["step"] == 10
  saved = json.loads(next((tmp_path / "b/checkpoints/10/data").glob("process_0-*")).read_text())
  assert saved["position"] == 10 * c.train.batch_size  # the data iterator's place
  assert second["step"] == 20 and straight["step"] == 20
  assert [l for _, l in first["history"] + second["history"]] == \
      [l for _, l in straight["history"]]
  a, b = _leaves(jax.device_get(straight["state"])), _leaves(jax.device_get(second["state"]))
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  # phase-2 style warm start from that run: all params (init_mode=full) or the encoder.
  for mode in ("full", "encoder"):
    c2 = micro_config()
    c2.init_checkpoint = "b"  # phase 2 starts from run b
    c2.init_mode = mode
    c2.seed = 1
    mesh = train.check_config(c2)
    model = pretrain.make_model(c2)
    with quick_xla():
      state, sh = train_lib.create_train_state(pretrain.make_init_fn(model, c2),
                                               optim.make_optimizer(c2.train), mesh, c2.seed)
    warm = _leaves(jax.device_get(checkpoints.warm_start(state, sh, c2).params))
    ckpt = _leaves(jax.device_get(second["params"]))
    for k in ckpt:
      same = np.array_equal(warm[k], ckpt[k])
      assert same == (mode == "full" or k.startswith("['bert']")), (mode, k)


def test_flops_formula_matches_xla_cost_analysis():
  """The MFU numerator agrees with XLA's count for the compiled (unrolled) step."""
  c = micro_config()
  c.model.num_layers = 2
  c.model.hidden_size = 256
  c.model.num_heads = 4
  c.model.intermediate_size = 1024
  c.model.max_position_embeddings = 128
  c.model.scan_layers = False  # unrolled, so every layer is counted
  # No dropout: XLA counts the integer ops of the dropout hash (bert_jax/dropout.py) as
  # flops (+10% here); they are not model FLOPs, which is what the formula counts.
  c.model.dropout_rate = c.model.attention_dropout_rate = 0.0
  c.data.max_seq_length = 128
  c.data.max_predictions_per_seq = 20
  c.train.batch_size = 8
  c.mesh.shape = (1, 1, 1)
  mesh = train.check_config(c, jax.devices()[:1])
  model = pretrain.make_model(c)
  tx = optim.make_optimizer(c.train)
  abstract, sh = train_lib.abstract_train_state(pretrain.make_init_fn(model, c), tx, mesh)
  step = train_lib.make_train_step(pretrain.make_compute_loss(model), pretrain.denominators, tx,
                                   mesh, sh)
  b, s, p = 8, 128, 20
  bs = partitioning.batch_sharding(mesh)
  shapes = {"input_ids": (b, s), "attention_mask": (b, s), "token_type_ids": (b, s),
            "masked_lm_positions": (b, p), "masked_lm_ids": (b, p),
            "masked_lm_weights": (b, p), "next_sentence_labels": (b,)}
  batch = {k: jax.ShapeDtypeStruct(v, np.float32 if k == "masked_lm_weights" else np.int32,
                                   sharding=bs) for k, v in shapes.items()}
  with partitioning.activate(mesh), quick_xla():
    compiled = step.jitted.lower(abstract, batch).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  formula = flops.pretrain_flops_per_step(c.model, b, s, p)
  # The formula counts matmuls only; XLA also counts the elementwise work (softmax,
  # LayerNorm, GELU, the optimizer update): a few % at H=256, under 10%.
  assert abs(cost["flops"] / formula - 1) < 0.10, (cost["flops"], formula)
  # and the README's numbers come from the same function
  base = load_config("base")
  # integers below 2**53, so the float64 product is exact
  assert flops.pretrain_flops_per_step(base.model, 256, 128, 20) == (
      3 * 256 * (128 * 12 * (8 * 768**2 + 4 * 768 * 3072 + 4 * 128 * 768)
                 + 20 * (2 * 768**2 + 2 * 768 * 30522) + 2 * 768**2 + 4 * 768))
