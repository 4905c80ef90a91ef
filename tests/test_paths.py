"""bert_jax.paths: local and gs:// paths through the same code (gs:// backed by an in-memory
fsspec filesystem standing in for gcsfs), and the checkpoint step the launcher reads
agreeing with orbax's own CheckpointManager."""
import fsspec
import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from bert_jax import paths


class FakeGCS(MemoryFileSystem):
  """gcsfs stand-in: 'bucket/key' paths (no leading slash), kept in memory."""
  protocol = ("gs", "gcs")
  root_marker = ""
  store = {}
  pseudo_dirs = [""]

  @classmethod
  def _strip_protocol(cls, path):
    for prefix in ("gs://", "gcs://"):
      if path.startswith(prefix):
        path = path[len(prefix):]
    return path.rstrip("/")


@pytest.fixture
def fake_gcs(monkeypatch):
  from etils.epath import gpath
  monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)  # use fsspec for gs://
  for proto in ("gs", "gcs"):
    fsspec.register_implementation(proto, FakeGCS, clobber=True)
  FakeGCS.store.clear()
  FakeGCS.pseudo_dirs[:] = [""]
  from etils.epath import backend
  backend.fsspec_backend._get_filesystem.cache_clear()
  yield FakeGCS
  FakeGCS.store.clear()
  backend.fsspec_backend._get_filesystem.cache_clear()


def _make_steps(root, finished, unfinished=(), marker=False):
  for step in finished:
    d = paths.as_path(root) / "checkpoints" / str(step)
    d.mkdir(parents=True, exist_ok=True)
    (d / "state").write_text("x")
    if marker:
      (d / paths.COMMIT_MARKER).write_text("")
  for name in unfinished:
    d = paths.as_path(root) / "checkpoints" / name
    d.mkdir(parents=True, exist_ok=True)


def test_local_steps_ignore_unfinished(tmp_path):
  assert paths.latest_checkpoint_step(tmp_path) is None
  _make_steps(tmp_path, [100, 20], unfinished=["300.orbax-checkpoint-tmp-17", "tmp"])
  assert paths.checkpoint_steps(tmp_path) == [20, 100]
  assert paths.latest_checkpoint_step(str(tmp_path)) == 100


def test_gcs_same_code_path_needs_commit_marker(fake_gcs):
  _make_steps("gs://bkt/run a", [100], marker=True)
  _make_steps("gs://bkt/run a", [200], marker=False)  # still being written
  assert paths.is_remote("gs://bkt/run a") and not paths.is_remote("/tmp/x")
  assert paths.latest_checkpoint_step("gs://bkt/run a") == 100
  assert "bkt/run a/checkpoints/100/commit_success.txt" in fake_gcs.store
  paths.write_text("gs://bkt/data/a.txt", "one\ntwo\n")
  paths.write_text("gs://bkt/data/b.txt", "three\n")
  assert paths.expand_files("gs://bkt/data/*.txt") == ["gs://bkt/data/a.txt",
                                                      "gs://bkt/data/b.txt"]
  assert list(paths.read_lines("gs://bkt/data/a.txt")) == ["one", "two"]


def test_agrees_with_orbax_checkpoint_manager(tmp_path):
  import orbax.checkpoint as ocp
  with ocp.CheckpointManager(tmp_path / "checkpoints",
                             options=ocp.CheckpointManagerOptions(max_to_keep=2)) as mngr:
    for step in (5, 10, 15):
      mngr.save(step, args=ocp.args.StandardSave({"w": np.arange(3.0) * step}))
    mngr.wait_until_finished()
    assert paths.latest_checkpoint_step(tmp_path) == mngr.latest_step() == 15
    assert paths.checkpoint_steps(tmp_path) == list(mngr.all_steps()) == [10, 15]


def test_expand_files_local(tmp_path):
  (tmp_path / "d").mkdir()
  for name in ("b.txt", "a.txt", "c.json"):
    (tmp_path / "d" / name).write_text(name)
  got = paths.expand_files(f"{tmp_path}/d/*.txt, {tmp_path}/d/c.json")
  assert got == [f"{tmp_path}/d/a.txt", f"{tmp_path}/d/b.txt", f"{tmp_path}/d/c.json"]
  assert paths.expand_files(str(tmp_path / "d")) == sorted(
      str(tmp_path / "d" / n) for n in ("a.txt", "b.txt", "c.json"))
  with pytest.raises(paths.PathError, match=r"\*.tsv: the glob matches no file"):
    paths.expand_files(f"{tmp_path}/d/*.tsv")
  with pytest.raises(paths.PathError, match="no such file"):
    paths.expand_files(f"{tmp_path}/missing.txt")
