"""A real GCS-protocol server for tests: gcp-storage-emulator in a subprocess.

Our code talks HTTP to it exactly as to storage.googleapis.com: gcsfs (behind etils.epath)
through STORAGE_EMULATOR_HOST, and orbax's tensorstore through TENSORSTORE_GCS_HTTP_URL.
Nothing of the project is mocked. `client_env` is what a process needs to use it.
"""
from __future__ import annotations

import contextlib
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def client_env(url: str) -> dict[str, str]:
  """Environment for a process that reads and writes gs:// through the emulator at url."""
  return {
      "STORAGE_EMULATOR_HOST": url,  # gcsfs: this endpoint, no credentials needed
      "FSSPEC_GCS_TOKEN": "anon",  # gcsfs: no metadata-server probe for credentials
      # gcsfs >= 2025: its gRPC bucket-type probe would time out (60 s) on an emulator.
      "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
      "EPATH_USE_TF": "false",  # epath: gcsfs, not tf.io.gfile (which ignores the emulator)
      "TENSORSTORE_GCS_HTTP_URL": url,  # orbax's tensorstore: the same server
      "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",  # tensorstore: skip credential lookup
  }


@contextlib.contextmanager
def emulator(bucket: str, log_path):
  """Starts the server with an empty in-memory `bucket`; yields its URL; stops it."""
  port = _free_port()
  url = f"http://127.0.0.1:{port}"
  with open(log_path, "w") as log:
    proc = subprocess.Popen(
        [sys.executable, str(pathlib.Path(__file__).with_name("_gcs_server.py")), "start",
         "--host=127.0.0.1",
         f"--port={port}", "--in-memory", f"--default-bucket={bucket}"],
        stdout=log, stderr=subprocess.STDOUT)
  try:
    deadline = time.time() + 60
    while True:
      try:
        urllib.request.urlopen(f"{url}/storage/v1/b/{bucket}", timeout=2).read()
        break
      except OSError:
        if proc.poll() is not None or time.time() > deadline:
          raise RuntimeError(f"GCS emulator did not start: {open(log_path).read()[-2000:]}")
        time.sleep(0.2)
    yield url
  finally:
    proc.terminate()
    try:
      proc.wait(10)
    except subprocess.TimeoutExpired:
      proc.kill()


def filesystem(url: str):
  """A gcsfs client of the emulator for the test's own checks (not the code under test)."""
  import gcsfs
  return gcsfs.GCSFileSystem(endpoint_url=url, token="anon", skip_instance_cache=True)
