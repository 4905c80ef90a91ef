"""Scripts that use our iterators, writers and checkpoint managers exit 0, close() or not.

Each script runs in its own process (the failure is at interpreter exit, after the work is
done). Before cleanup.py the pipeline script printed its batch and then died with
`terminate called without an active exception` (SIGABRT, exit 134): prefetch threads were
still reading ArrayRecord shards when the interpreter was torn down. The checkpoint script
without close() exited 0 but left its last async save half-written, with an orbax
traceback ("cannot schedule new futures after interpreter shutdown").
"""
import os
import subprocess
import sys
import textwrap

import pytest

from bert_jax import config as config_lib
from bert_jax import paths
from bert_jax.data import shards as prep

VOCAB = os.path.join(config_lib.BUNDLED_DIR, "vocab.txt")
EVAL_TEXT = os.path.join(config_lib.BUNDLED_DIR, "corpus", "eval-*.txt")
TINY = os.path.join(config_lib.REPO_ROOT, "configs", "tiny.py")

# Big batches on 4 threads keep the prefetch threads inside the shard reader when the
# script ends (the old code aborted in most runs of this script; smaller batches let the
# threads finish first by chance, hiding the bug).
PIPELINE = """
import sys
from bert_jax import config as config_lib
from bert_jax import data, tokenization
c = config_lib.load_config_file({tiny!r})
c.data.train_files = {shards!r}
c.data.max_seq_length = 32
c.data.max_predictions_per_seq = 5
c.data.num_workers = 4
c.data.prefetch = 2
c.train.batch_size = 2048
tokenizer = tokenization.load_tokenizer({vocab!r})
it = data.make_pretraining_iterator(c, tokenizer, process_index=0, process_count=1)
batch = next(it)
{close}
print("RESULT", batch["input_ids"].shape, int(batch["masked_lm_weights"].sum()), flush=True)
"""

CHECKPOINTS = """
import jax.numpy as jnp
from bert_jax import config as config_lib
from bert_jax import checkpoints, metrics
c = config_lib.load_config_file({tiny!r})
ckpt = checkpoints.Checkpointer({workdir!r} + "/checkpoints", keep=2, async_save=True)
writer = metrics.MetricWriter({workdir!r}, enabled=True)
state = {{"w": jnp.ones((512, 512)), "b": jnp.zeros(512)}}
for step in (1, 2, 3):
  ckpt.save(step, state, {{"position": step}}, c)
  writer.write(step, {{"train/loss": 1.0 / step}})
{close}
print("RESULT saved", ckpt.manager.latest_step(), flush=True)
"""

CASES = {
    "pipeline-close": (PIPELINE, "it.close()"),
    "pipeline-no-close": (PIPELINE, ""),
    "checkpoints-close": (CHECKPOINTS, "ckpt.wait(); ckpt.close(); writer.close()"),
    "checkpoints-no-close": (CHECKPOINTS, ""),
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """Runs every script at once (separate processes) -> {case: (CompletedProcess, workdir)}."""
  root = tmp_path_factory.mktemp("clean_exit")
  shards = str(root / "shards")
  prep.run(EVAL_TEXT, VOCAB, shards, max_seq_length=32, dupe_factor=1, random_seed=0,
           documents_per_window=20, num_workers=1, progress=False)
  procs = {}
  for name, (template, close) in CASES.items():
    workdir = root / name
    script = textwrap.dedent(template).format(tiny=TINY, shards=shards, vocab=VOCAB,
                                              workdir=str(workdir), close=close)
    procs[name] = (subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True), workdir)
  results = {}
  for name, (p, workdir) in procs.items():
    out, err = p.communicate(timeout=300)
    results[name] = (subprocess.CompletedProcess(p.args, p.returncode, out, err), workdir)
  return results


def _check(result):
  r, _ = result
  assert r.returncode == 0, f"exit status {r.returncode}\n{r.stdout}\n{r.stderr[-3000:]}"
  assert "RESULT" in r.stdout, r.stdout
  assert "terminate called" not in r.stderr and "Traceback" not in r.stderr, r.stderr[-3000:]


@pytest.mark.parametrize("close", ["close", "no-close"])
def test_pipeline_script_exits_0(finished, close):
  result = finished[f"pipeline-{close}"]
  _check(result)
  assert "RESULT (2048, 32)" in result[0].stdout


@pytest.mark.parametrize("close", ["close", "no-close"])
def test_checkpoint_and_metrics_script_exits_0_with_every_save_finished(finished, close):
  result = finished[f"checkpoints-{close}"]
  _check(result)
  workdir = result[1]
  # keep=2: steps 2 and 3, both committed (no orbax tmp directory left behind).
  assert paths.checkpoint_steps(workdir / "checkpoints") == [2, 3]
  assert not [p for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name]
  assert len((workdir / "metrics.jsonl").read_text().splitlines()) == 3
  assert list((workdir / "tensorboard").iterdir())
