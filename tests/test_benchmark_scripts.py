"""The scripts under benchmarks/ are run by hand (minutes to hours), not by the suite; a
syntax error in one would only surface when someone next runs it. Each must compile."""
import pathlib
import py_compile

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")))
def test_benchmark_script_compiles(script, tmp_path):
  py_compile.compile(str(BENCHMARKS / script), cfile=str(tmp_path / "out.pyc"), doraise=True)
