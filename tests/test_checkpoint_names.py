"""Checkpoints by the names users type (issue 19): one resolver (checkpoints.resolve) for a
Hugging Face directory and Hub id, Google's TF directory, `bert_model.ckpt` prefix and
`.zip`, a converted directory and our run workdirs, local and gs://; casing checked
against the checkpoint. The real MiniLM (L6 H384) is underneath every spelling, so
fine-tuning from each gives the same first-step loss."""
import json
import os
import pathlib
import shutil
import zipfile

import jax
import numpy as np
import pytest

from bert_jax import checkpoints, weights
from bert_jax.weights import CheckpointError
from test_paths import fake_gcs  # noqa: F401 (fixture)

REPO = pathlib.Path(__file__).resolve().parents[1]
GLUE_FIXTURES = REPO / "tests" / "fixtures" / "glue"
HUB_FILES = ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json")


@pytest.fixture(scope="module", autouse=True)
def fast_compile_and_cache(tmp_path_factory):
  """One compilation for all spellings: the same model and shapes every run, so XLA's
  persistent cache serves every run after the first. (Optimisations stay on: MiniLM runs
  several times slower unoptimised than it takes to compile once.)"""
  cache = str(tmp_path_factory.mktemp("xla_cache"))
  saved = {k: jax.config.values[k] for k in (
      "jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
      "jax_persistent_cache_min_entry_size_bytes")}
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  yield
  for k, v in saved.items():
    jax.config.update(k, v)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  """Zip extraction cache and an offline Hub cache in tmp (module-wide)."""
  mp = pytest.MonkeyPatch()
  root = tmp_path_factory.mktemp("caches")
  mp.setenv("BERT_JAX_CACHE_DIR", str(root / "bert_jax"))
  mp.setenv("HF_HUB_CACHE", str(root / "hub"))
  mp.setenv("HF_HUB_OFFLINE", "1")
  yield root
  mp.undo()


def make_hub_cache(hub: pathlib.Path, repo_id: str, src: str, rev: str = "0" * 40) -> None:
  """`src`'s files laid out as huggingface_hub caches a download: blobs/<hash>, the
  snapshot's files linking to them, refs/main naming the revision."""
  repo = hub / ("models--" + repo_id.replace("/", "--"))
  snap = repo / "snapshots" / rev
  (repo / "blobs").mkdir(parents=True, exist_ok=True)
  snap.mkdir(parents=True, exist_ok=True)
  for name in HUB_FILES:
    blob = repo / "blobs" / f"{abs(hash((repo_id, name))):x}"
    shutil.copyfile(os.path.join(src, name), blob)
    (snap / name).symlink_to(os.path.relpath(blob, snap))
  (repo / "refs").mkdir(exist_ok=True)
  (repo / "refs" / "main").write_text(rev)


@pytest.fixture(scope="module")
def spellings(env, minilm_path, tmp_path_factory):
  """name -> (path as typed, expected format): MiniLM in every format and spelling."""
  from bert_jax.tools import convert
  root = tmp_path_factory.mktemp("spellings")
  google = root / "uncased_L-6_H-384_A-12"  # Google's naming: the casing is in the name
  convert.convert(minilm_path, str(google), to="tf")
  (google / weights.TOKENIZER_CONFIG).unlink()  # Google's release ships none
  with zipfile.ZipFile(root / "uncased_L-6_H-384_A-12.zip", "w") as z:
    for f in google.iterdir():
      z.write(f, f"uncased_L-6_H-384_A-12/{f.name}")
  converted = convert.convert(minilm_path, str(root / "converted"), to="bert_jax")
  make_hub_cache(env / "hub", "google-bert/bert-base-uncased", minilm_path)
  make_hub_cache(env / "hub", "sentence-transformers/all-MiniLM-L6-v2", minilm_path)
  return {
      "hf_dir": (minilm_path, "hf"),
      "tf_dir": (str(google), "tf"),
      "tf_prefix": (str(google / "bert_model.ckpt"), "tf"),
      "tf_zip": (str(root / "uncased_L-6_H-384_A-12.zip"), "tf"),
      "hub_legacy_id": ("bert-base-uncased", "hf"),
      "hub_org_name": ("sentence-transformers/all-MiniLM-L6-v2", "hf"),
      "converted": (converted, "bert_jax"),
  }


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
  """MRPC's fixture files cut to 16 train, 8 dev and 8 test rows (header kept)."""
  d = tmp_path_factory.mktemp("glue")
  (d / "MRPC").mkdir()
  for split, n in (("train", 16), ("dev", 8), ("test", 8)):
    lines = (GLUE_FIXTURES / "MRPC" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
    (d / "MRPC" / f"{split}.tsv").write_text("\n".join(lines[:n + 1]) + "\n", encoding="utf-8")
  return str(d)


def glue_config(init_checkpoint, data_dir=str(GLUE_FIXTURES), **overrides):
  from bert_jax import config as config_lib
  c = config_lib.load_config_file(str(REPO / "configs" / "glue.py"))
  c.init_checkpoint = init_checkpoint
  c.glue.task = "mrpc"
  c.glue.data_dir = data_dir
  c.data.max_seq_length = 32
  c.train.batch_size = 8  # one row per fake device
  c.train.learning_rate = 1e-3
  c.train.log_every = 1
  c.finetune.max_steps = 2
  c.finetune.max_train_examples = 16  # 2 steps
  c.finetune.eval_batch_size = 8
  c.finetune.bucket_multiple = 32  # one shape: one compilation
  c.finetune.save_best = False
  c.finetune.write_dev_predictions = False
  c.update_from_flattened_dict(overrides)
  return c


def first_loss(workdir) -> float:
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return next(l["train/loss"] for l in lines if l.get("step") == 1 and "train/loss" in l)


@pytest.fixture(scope="module")
def reference(spellings, glue_dir, tmp_path_factory, minilm_path):
  """Fine-tuning from the Hugging Face directory with learning rate 0, keeping best/:
  its workdir holds MiniLM's encoder unchanged (the run-workdir spelling)."""
  from bert_jax.tasks import glue
  workdir = str(tmp_path_factory.mktemp("run") / "mrpc")
  glue.run(glue_config(minilm_path, glue_dir, **{"train.learning_rate": 0.0,
                                                 "finetune.save_best": True}), workdir)
  return first_loss(workdir), workdir


NAMES = ("hf_dir", "tf_dir", "tf_prefix", "tf_zip", "hub_legacy_id", "hub_org_name",
         "converted", "run_workdir", "run_best_dir")


@pytest.mark.parametrize("name", NAMES)
def test_every_spelling_fine_tunes_to_the_same_first_step_loss(name, spellings, reference,
                                                               glue_dir, tmp_path):
  from bert_jax.tasks import glue
  loss0, run_dir = reference
  path, fmt = spellings.get(name, (None, None))
  if name == "run_workdir":
    path, fmt = run_dir, "bert_jax_best"
  elif name == "run_best_dir":
    path, fmt = os.path.join(run_dir, "best"), "bert_jax_best"
  r = checkpoints.resolve(path)
  assert r.format == fmt
  assert r.do_lower_case is True, r  # every spelling says uncased, each in its own way
  assert weights.check_vocab(r.vocab_file, checkpoints.load_pretrained(path)[0]) == 30522
  workdir = str(tmp_path / "w")
  glue.run(glue_config(path, glue_dir), workdir)
  # Same weights, same data, same seed: the same float32 computation, hence the same loss
  # to the float32 rounding of the loaded weights (0 for all but the transposes).
  np.testing.assert_allclose(first_loss(workdir), loss0, rtol=1e-6)


def test_every_spelling_loads_the_same_params(spellings, reference, minilm_path):
  _, ref = checkpoints.load_pretrained(minilm_path)
  _, run_dir = reference
  for path in [p for p, _ in spellings.values()] + [run_dir]:
    _, params = checkpoints.load_pretrained(path)
    flat_ref = jax.tree_util.tree_leaves_with_path(ref["bert"])
    flat = dict(jax.tree_util.tree_leaves_with_path(params["bert"]))
    for k, v in flat_ref:
      np.testing.assert_array_equal(flat[k], v, err_msg=f"{path}: {k}")


def test_gcs_spellings_resolve_and_load(spellings, fake_gcs, minilm_path):
  """Google's directory, prefix and .zip and a Hugging Face directory on gs://."""
  from bert_jax import paths
  tf_dir, _ = spellings["tf_dir"]
  paths.copytree(tf_dir, "gs://bkt/uncased_L-6_H-384_A-12")
  paths.copy(spellings["tf_zip"][0], "gs://bkt/zips/uncased_L-6_H-384_A-12.zip")
  for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"):
    paths.copy(os.path.join(minilm_path, name), f"gs://bkt/hf/{name}")
  _, ref = checkpoints.load_pretrained(minilm_path)
  word = ref["bert"]["embeddings"]["word_embeddings"]["embedding"]
  for path, fmt in (("gs://bkt/uncased_L-6_H-384_A-12", "tf"),
                    ("gs://bkt/uncased_L-6_H-384_A-12/bert_model.ckpt", "tf"),
                    ("gs://bkt/zips/uncased_L-6_H-384_A-12.zip", "tf"),
                    ("gs://bkt/hf", "hf")):
    r = checkpoints.resolve(path)
    assert (r.format, r.do_lower_case) == (fmt, True), path
    assert paths.read_text(r.vocab_file) == pathlib.Path(minilm_path, "vocab.txt").read_text()
    _, params = checkpoints.load_pretrained(path)
    np.testing.assert_array_equal(params["bert"]["embeddings"]["word_embeddings"]["embedding"],
                                  word)


def test_unknown_spelling_lists_what_was_tried(env, tmp_path):
  with pytest.raises(CheckpointError) as e:
    checkpoints.resolve("no-such-org/no-such-bert")
  msg = str(e.value)
  assert "\n" not in msg
  assert "no-such-org/no-such-bert: no such file or directory" in msg  # as a path
  assert "Hugging Face Hub id no-such-org/no-such-bert: offline" in msg  # as a Hub id
  with pytest.raises(CheckpointError) as e:
    checkpoints.resolve("bert-base-cased")  # tried under its google-bert/ name too
  assert "google-bert/bert-base-cased" in str(e.value)
  (tmp_path / "empty").mkdir()
  with pytest.raises(CheckpointError, match="bert_jax run: .* has no checkpoints.*none of config.json .* in it"):
    checkpoints.resolve(str(tmp_path / "empty"))
  with pytest.raises(CheckpointError, match=r"\.zip: .*missing.zip does not exist"):
    checkpoints.resolve(str(tmp_path / "missing.zip"))


def test_casing_comes_from_the_checkpoint_and_a_mismatch_is_an_error(
    spellings, tmp_path, minilm_path):
  # Google's name says cased: do_lower_case=True (the default) is refused, naming both.
  cased = tmp_path / "cased_L-6_H-384_A-12"
  shutil.copytree(spellings["tf_dir"][0], cased)
  assert weights.casing_of(str(cased), (str(cased),))[0] is False
  with pytest.raises(CheckpointError) as e:
    checkpoints.load_pretrained(str(cased / "bert_model.ckpt"), do_lower_case=True)
  msg = str(e.value)
  assert "config.do_lower_case=True" in msg and "is cased" in msg
  assert "cased_L-6_H-384_A-12" in msg and "--config.do_lower_case=False" in msg
  checkpoints.load_pretrained(str(cased), do_lower_case=False)  # agrees: fine
  # A Hugging Face tokenizer_config.json saying do_lower_case=false.
  hf = tmp_path / "hf_cased"
  hf.mkdir()
  for name in ("config.json", "model.safetensors", "vocab.txt"):
    (hf / name).symlink_to(os.path.join(minilm_path, name))
  (hf / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
  r = checkpoints.resolve(str(hf))
  assert (r.do_lower_case, r.casing_source) == (False, str(hf / "tokenizer_config.json"))
  # Fine-tuning stops before any work, with the same message.
  from bert_jax.tasks import glue
  with pytest.raises(CheckpointError, match="is cased.*--config.do_lower_case=False"):
    glue.run(glue_config(str(hf)), str(tmp_path / "w"))
  # Silent checkpoints (no tokenizer_config.json, no Google name) keep the config's value.
  (hf / "tokenizer_config.json").unlink()
  assert checkpoints.resolve(str(hf)).do_lower_case is None
  # The converter carries the casing it read into what it writes.
  from bert_jax.tools import convert
  out = convert.convert(str(cased), str(tmp_path / "conv"), to="bert_jax")
  assert checkpoints.resolve(out).do_lower_case is False


def test_pretraining_warm_starts_take_every_spelling(spellings, minilm_path):
  """train.check_run_inputs (before anything is built) resolves init_checkpoint the same
  way, casing included; checkpoints.warm_start loads through load_pretrained."""
  from bert_jax import config as config_lib
  from bert_jax import train
  c = config_lib.load_config_file(str(REPO / "configs" / "tiny.py"))
  c.vocab_file = os.path.join(minilm_path, "vocab.txt")
  c.model.vocab_size = 30522
  for name in ("tf_prefix", "tf_zip", "hub_legacy_id", "converted"):
    c.init_checkpoint = spellings[name][0]
    train.check_run_inputs(c)
  c.do_lower_case = False
  with pytest.raises(CheckpointError, match=r"config.do_lower_case=False but checkpoint "
                     r"\S*converted is uncased .*--config.do_lower_case=True"):
    train.check_run_inputs(c)
  c.init_checkpoint = "no/such-run"
  with pytest.raises(CheckpointError, match="config.init_checkpoint=no/such-run: .*tried"):
    train.check_run_inputs(c)
