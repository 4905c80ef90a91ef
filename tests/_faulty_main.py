"""`python -m bert_jax.main` with the reliability tests' faults installed (tests/_faults.py).

Run as `python tests/_faulty_main.py --config=... --workdir=...`; the environment
variables of _faults.py choose the faults (none: the plain CLI).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _faults  # noqa: E402

from bert_jax import main  # noqa: E402

if __name__ == "__main__":
  _faults.install()
  main.start()
