"""Training as a headless Slicer runs it (``Slicer --no-main-window --python-script EdranFusionLib/train.py --
...``): any failure ends the process with a traceback and exit status 1, and matplotlib (which Slicer lacks)
is not needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_training import REPO, TRAIN_SCRIPT, data, options, vgg_file  # noqa: F401 (fixtures)

from EdranFusionLib.commands import train

# What Slicer's --python-script does with the file: run it as __main__; an exception other than SystemExit is
# printed and the application keeps running (headless, forever), SystemExit ends it with its status.
AS_SLICER_RUNS_IT = """
import runpy, sys, traceback
import EdranFusionLib.commands.train as command

def broken(args):
    raise RuntimeError("simulated bug inside training")

command.run = broken
sys.argv = [{script!r}, "--", *{argv!r}]
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit:
    raise
except BaseException:
    traceback.print_exc()
print("Slicer is still running")
"""


def test_an_unexpected_failure_ends_headless_slicer_with_a_traceback_and_status_1(data, vgg_file, tmp_path):  # noqa: F811
    code = AS_SLICER_RUNS_IT.format(script=str(TRAIN_SCRIPT), argv=options(data, vgg_file, tmp_path / "run"))
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Slicer is still running" not in result.stdout
    assert "Traceback" in result.stderr and "RuntimeError: simulated bug inside training" in result.stderr


def test_training_without_matplotlib_runs_and_says_why_there_are_no_curves(data, vgg_file, tmp_path,  # noqa: F811
                                                                          monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as in Slicer's Python: `import matplotlib` fails
    run_dir = tmp_path / "run"
    with pytest.warns(RuntimeWarning, match="matplotlib is not installed"):
        assert train.main(options(data, vgg_file, run_dir, "--epochs", "1")) == 0
    assert (run_dir / "final.pt").is_file() and (run_dir / "metrics.jsonl").is_file()
    assert not Path(run_dir / "curves.png").exists()
