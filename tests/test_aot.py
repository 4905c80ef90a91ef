"""AOT compilation of the real pre-training step for a TPU slice, with libtpu and no TPU.

The tiny config (vocabulary and shapes cut further so that four TPU compiles stay cheap)
is compiled for `v4:2x2x1` (4 chips) under a data, an FSDP and a tensor-parallel mesh.
"""
import pytest

pytest.importorskip(
    "libtpu", reason="libtpu (the TPU compiler, `pip install 'jax[tpu]==0.10.2'`, part of "
    "the test extra) is not installed: it ships for Linux x86_64/aarch64 only.")

from bert_jax import preflight  # noqa: E402
from bert_jax.tools import aot  # noqa: E402
from configs import tiny  # noqa: E402
from _numerics import EPS64  # noqa: E402

TOPOLOGY = "v4:2x2x1"
MESHES = {"data": (4, 1, 1), "fsdp": (1, 4, 1), "tensor": (1, 1, 4)}


def small_config(mesh_shape, batch_size=8):
  c = tiny.get_config()
  c.model.vocab_size = 1024
  c.model.max_position_embeddings = 32
  c.model.dtype = "bfloat16"
  c.data.max_seq_length = 32
  c.data.max_predictions_per_seq = 4
  c.model.dropout_rate = c.model.attention_dropout_rate = 0.0  # fewer ops to compile
  c.train.batch_size = batch_size
  c.mesh.shape = mesh_shape
  return c


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
  """{mesh name: (report, compiled HLO text)}, compiled once for the module."""
  out = {}
  d = tmp_path_factory.mktemp("aot")
  configs = {name: small_config(shape) for name, shape in MESHES.items()}
  configs["data_remat"] = small_config(MESHES["data"])
  configs["data_remat"].model.remat = "full"
  configs["data_accum"] = small_config(MESHES["data"])
  configs["data_accum"].train.grad_accum_steps = 2
  for name, config in configs.items():
    path = d / f"{name}.hlo"
    report = aot.compile_report(config, TOPOLOGY, hlo_path=str(path))
    out[name] = (report, path.read_text())
  return out


def test_step_compiles_for_the_topology(compiled):
  for name, (r, text) in compiled.items():
    assert r["devices"] == 4 and r["chips"] == 4 and r["device_kind"] == "TPU v4", name
    assert r["mesh"] == dict(zip(("data", "fsdp", "tensor"), MESHES[name.split("_")[0]]))
    assert r["fits"] and 0 < r["peak_bytes_per_device"] < r["hbm_per_device"], name
    assert r["compiler_flops_per_device"] > 0 and "ENTRY" in text
    # The compiler prices the step; its estimate implies a positive MFU below 100%.
    assert r["step_time_s"] and 0 < r["mfu"] < 1, (name, r["compiler_optimal_seconds"])
    assert r["tokens_per_s_per_chip"] == pytest.approx(  # 2 float64 divisions each side
        8 * 32 / r["step_time_s"] / 4, rel=4 * EPS64, abs=0)
    # 256 tokens on 4 chips: milliseconds, not the seconds that uncounted or
    # over-counted -1 s markers of unfused custom calls would leave.
    assert r["step_time_s"] < 0.05, (name, r["compiler_optimal_seconds"],
                                     r["unpriced_custom_calls"])


def test_accumulation_is_priced_as_k_micro_batch_steps(compiled):
  one, accum = compiled["data"][0], compiled["data_accum"][0]
  # The real program loops over the 2 micro-batches (the cost model prices the body
  # once); libtpu does not always state the trip count (0 = unknown).
  assert accum["grad_accum_steps"] == 2 and accum["while_loop_trip_counts"] in ([2], [0])
  assert one["while_loop_trip_counts"] == []
  m = accum["micro_step"]
  assert m["batch_size"] == 4 and m["while_loop_trip_counts"] == []
  assert accum["step_time_s"] == 2 * m["step_time_s"]  # k x the micro step: exact
  assert "2 x compiled micro-batch step" in accum["step_time_method"]
  # Never below what the looping program's own (once-counted) estimate says, nor below
  # the whole batch in one step (the update and all-reduce are counted twice).
  looped = accum["compiler_optimal_seconds"] + accum["unpriced_custom_calls"]
  assert accum["step_time_s"] > looped and accum["step_time_s"] >= one["step_time_s"]
  assert accum["mfu"] <= one["mfu"]


def test_params_are_sharded_per_the_rules(compiled):
  data, fsdp, tensor = (compiled[k][0] for k in ("data", "fsdp", "tensor"))
  # FSDP shards every parameter's embed dimension 4 ways; the biases without one (qkv,
  # intermediate, pooler, mlm_transform, nsp: 3,074 of 566,786 parameters, 0.54%) stay
  # whole on every device: 1 + 3 x 0.54% = 1.6% above a quarter.
  assert fsdp["param_bytes_per_device"] == pytest.approx(data["param_bytes_per_device"] / 4,
                                                         rel=0.02)
  assert fsdp["opt_state_bytes_per_device"] < data["opt_state_bytes_per_device"] / 3.5
  # Tensor parallel shards heads/mlp/vocab but not position/segment tables or LayerNorm.
  assert (data["param_bytes_per_device"] / 4 < tensor["param_bytes_per_device"]
          < data["param_bytes_per_device"] / 2)
  # What the compiled program takes per device shrinks the same way.
  assert fsdp["argument_bytes_per_device"] < data["argument_bytes_per_device"] / 3
  assert tensor["argument_bytes_per_device"] < data["argument_bytes_per_device"] / 1.5


def test_compiled_collectives_match_the_mesh(compiled):
  data, fsdp, tensor = (compiled[k][0]["collectives"] for k in ("data", "fsdp", "tensor"))
  param_bytes = compiled["data"][0]["param_bytes_per_device"]
  # Data parallel: gradients of every parameter are all-reduced (bf16 at least half of
  # f32), parameters are never gathered.
  assert data["all-reduce"]["count"] > 0
  assert data["all-reduce"]["bytes"] >= param_bytes / 2
  assert data["all-gather"]["count"] == 0 and data["reduce-scatter"]["count"] == 0
  # FSDP: parameters are all-gathered for compute; gradients reduce-scattered to shards.
  assert fsdp["all-gather"]["count"] > 0 and fsdp["reduce-scatter"]["count"] > 0
  # Tensor parallel: the partial sums of the sharded matmuls are all-reduced.
  assert tensor["all-reduce"]["count"] > 0


def test_remat_recomputes_the_layers_when_unrolled(compiled):
  # tiny unrolls its layers (scan_layers=False); remat must survive XLA's CSE there.
  none, full = compiled["data"][0], compiled["data_remat"][0]
  assert full["remat"] == "full" and not full["scan_layers"]
  assert full["compiler_flops_per_device"] > 1.15 * none["compiler_flops_per_device"]


def test_a_config_that_cannot_fit_is_reported_not_raised():
  # A 16M-token vocabulary: parameters + Adam moments alone exceed a v5e's 16 GiB.
  c = small_config((4, 1, 1))
  c.model.vocab_size = 16_000_000
  r = aot.compile_report(c, "v5e:2x2")
  assert r["fits"] is False
  assert r["hbm_per_device"] == 16 * 2**30  # v5e: 16 GiB per chip, one device per chip
  assert r["peak_bytes_per_device"] > r["compiler_hbm_bytes"] > 15 * 2**30
  assert r["param_bytes_per_device"] > 16_000_000 * 128 * 4  # the tied embedding, f32
  assert "DOES NOT FIT: needs" in aot.format_report(r)


def test_collective_stats_reads_tpu_hlo():
  text = """HloModule m

%all-reduce-scatter.3 (input.3: bf16[128,512]) -> bf16[32,512] {
  %input.3 = bf16[128,512]{1,0} parameter(0)
  %all-reduce.124 = bf16[128,512]{1,0:T(8,128)(2,1)} all-reduce(%input.3), channel_id=32
  ROOT %dynamic-slice.1 = bf16[32,512]{1,0} dynamic-slice(%all-reduce.124, %c, %c)
}

ENTRY %main (p: f32[8,4]) -> f32[8,4] {
  %all-reduce.67 = (bf16[30522,128]{1,0}, f32[128]{0}) all-reduce(%a, %b), channel_id=1
  %all-gather-start = (f32[2,4]{1,0}, f32[8,4]{1,0}) all-gather-start(%p), channel_id=2
  %all-gather-done = f32[8,4]{1,0} all-gather-done(%all-gather-start)
  %cp-start = (bf16[4]{0}, bf16[4]{0}, u32[], u32[]) collective-permute-start(%x)
  %cp-done = bf16[4]{0} collective-permute-done(%cp-start)
  ROOT %a2a = f32[8,4]{1,0} all-to-all(%p), dimensions={0}
}
"""
  s = aot.collective_stats(text)
  assert s["reduce-scatter"] == {"count": 1, "bytes": 128 * 512 * 2,
                                 "bytes_by_dtype": {"bf16": 128 * 512 * 2}}
  assert s["all-reduce"]["count"] == 1
  assert s["all-reduce"]["bytes_by_dtype"] == {"bf16": 30522 * 128 * 2, "f32": 128 * 4}
  assert s["all-gather"] == {"count": 1, "bytes": 8 * 4 * 4, "bytes_by_dtype": {"f32": 128}}
  assert s["collective-permute"]["count"] == 1 and s["collective-permute"]["bytes"] == 8
  assert s["all-to-all"]["count"] == 1


def test_unfused_custom_calls_are_counted():
  text = """HloModule m

%fused_computation.1 (p: s32[8]) -> s32[8] {
  ROOT %custom-call.1 = s32[8]{0} custom-call(%p), custom_call_target="AssumeGatherIndicesInBound"
}

ENTRY %main (p: f32[8,4]) -> f32[8,4] {
  %custom-call.23 = f32[512,1024]{1,0} custom-call(%a, %b), custom_call_target="ConcatBitcast"
  %fusion.1 = s32[8]{0} fusion(%i), kind=kLoop, calls=%fused_computation.1
  %custom-call.24 = f32[512,1024]{1,0} custom-call(%c, %d), custom_call_target="ConcatBitcast"
  ROOT %w = f32[8,4]{1,0} while(%t), condition=%c, body=%b, backend_config={"known_trip_count":{"n":"24"}}
}
"""
  assert aot.unpriced_custom_calls(text) == 2
  assert aot.while_loops(text) == [24]


def test_markers_follow_the_cost_models_sums():
  # The cost model adds a while body once and keeps the costliest branch of a
  # conditional: the -1 s markers of the branch with fewer of them are the ones in its
  # total. Adding back every branch's markers made BERT-Large on v4:4x4x4 read 8 s.
  text = """HloModule m

%skip (p: f32[8]) -> f32[8] {
  %p = f32[8]{0} parameter(0)
  %custom-call.7 = f32[8]{0} custom-call(%p), custom_call_target="ConcatBitcast"
  ROOT %custom-call.8 = f32[8]{0} custom-call(%p), custom_call_target="ConcatBitcast"
}

%update (p: f32[8]) -> f32[8] {
  %p = f32[8]{0} parameter(0)
  ROOT %custom-call.9 = f32[8]{0} custom-call(%p), custom_call_target="ConcatBitcast"
}

%body (p: f32[8]) -> f32[8] {
  ROOT %custom-call.5 = f32[8]{0} custom-call(%p), custom_call_target="ConcatBitcast"
}

%cond (p: f32[8]) -> pred[] {
  ROOT %c = pred[] constant(true)
}

ENTRY %main (p: f32[8], i: s32[]) -> f32[8] {
  %custom-call.1 = f32[8]{0} custom-call(%p), custom_call_target="ConcatBitcast"
  %custom-call.2 = f32[8]{0} custom-call(), custom_call_target="AllocateBuffer"
  %w = f32[8]{0} while(%p), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"4"}}
  ROOT %conditional.1 = f32[8]{0} conditional(%i, %w, %w), branch_computations={%skip, %update}
}
"""
  # ENTRY's ConcatBitcast (libtpu prices AllocateBuffer), the loop body once, update.
  assert aot.unpriced_custom_calls(text) == 1 + 1 + 1
  assert aot.unpriced_custom_calls(text.replace(
      "branch_computations={%skip, %update}",
      "true_computation=%skip, false_computation=%update")) == 3


def test_topology_names_and_errors():
  assert aot.parse_topology("v4-128") == ("v4", "v4:4x4x4", (4, 4, 4))
  assert aot.parse_topology("v2:8x8") == ("v2", "v2:8x8", (8, 8))
  with pytest.raises(aot.AotError, match="--topology='v9:2x2'.*v2:8x8"):
    aot.parse_topology("v9:2x2")
  assert preflight.parse_oom("RESOURCE_EXHAUSTED: Ran out of memory in memory space hbm. Used "
                       "52.47G of 15.48G hbm. Exceeded") == (int(52.47 * 2**30),
                                                             int(15.48 * 2**30))
  assert preflight.parse_oom("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory "
                       "required for HLO temporaries (34.58G) exceeds available HBM "
                       "(15.75G).") == (int(34.58 * 2**30), int(15.75 * 2**30))
  assert preflight.parse_oom("INTERNAL: something else") is None
