"""Every example runs end to end (small settings) and saves its plot."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "script, args, png",
    [
        ("tms_trajectory.py", ["--quick"], "tms_trajectory.png"),
        ("grokking_mlp.py", ["--tiny"], "seed_0/llc.png"),
        ("dln_llc_vs_theory.py", ["--quick"], "dln_llc_vs_theory.png"),
        ("grokking_transformer.py", ["--p", "7", "--train-frac", "0.6", "--epochs", "60", "--checkpoints", "6"],
         "grokking_transformer.png"),
    ],
)
@pytest.mark.slow
def test_example_runs_and_saves_plot(script, args, png, tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--out", str(tmp_path), *args],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / png).stat().st_size > 10_000
    assert "saved" in proc.stdout
