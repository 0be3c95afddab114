"""The command line: slt demo (tiny, end to end), slt llc, slt detect, errors."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from slt.checkpoints import save_params
from slt.cli import main

REPORT_KEYS = {
    "steps", "llc_mean", "llc_std", "train_loss", "test_loss", "train_acc", "test_acc", "transitions",
    "grokking_step", "memorization_step", "llc_peak", "llc_final", "settings", "timing", "failed",
}


def one_line_error(capsys, argv, prefix):
    """Run, expect exit status 2 and exactly one line on stderr starting with ``prefix``."""
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(prefix), err
    return err


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "grokking", "--tiny", "--out", str(out), "--no-progress"]) == 0
    return out


def test_demo_tiny_end_to_end(demo_dir, capsys):
    report = json.loads((demo_dir / "report.json").read_text())
    assert REPORT_KEYS <= set(report)
    n = len(report["steps"])
    assert n == 7 and report["steps"][0] == 0
    for key in ("llc_mean", "llc_std", "train_loss", "test_loss", "train_acc", "test_acc"):
        assert len(report[key]) == n and all(v is not None for v in report[key]), key
    assert report["mode"] == "tiny" and report["memorization_step"] is not None
    assert report["llc_peak"]["llc_mean"] == max(report["llc_mean"])
    for t in report["transitions"]:
        assert {"step", "start", "end", "direction", "kind", "signals"} <= set(t)
    md = (demo_dir / "report.md").read_text()
    assert "# Grokking demo" in md and "llc.png" in md and "| step |" in md
    assert (demo_dir / "llc.png").read_bytes()[:4] == b"\x89PNG"
    # rerunning resumes: training reused, no LLC recomputed
    store = (demo_dir / "llc.jsonl").read_bytes()
    capsys.readouterr()
    assert main(["demo", "grokking", "--tiny", "--out", str(demo_dir), "--no-progress"]) == 0
    assert "reusing" in capsys.readouterr().err
    assert (demo_dir / "llc.jsonl").read_bytes() == store
    # another seed into the same directory: refused, one line
    one_line_error(capsys, ["demo", "grokking", "--tiny", "--seed", "1", "--out", str(demo_dir)], "slt demo: error:")


def test_detect_on_store(demo_dir, capsys, tmp_path):
    png = tmp_path / "t.png"
    rc = main(["detect", str(demo_dir / "llc.jsonl"), "--signals", "llc,train_acc", "--linear", "--plot", str(png)])
    out = capsys.readouterr().out
    assert rc == 0 and "7 checkpoints" in out and ("no transitions" in out or "kind" in out)
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["detect", str(demo_dir / "llc.jsonl"), "--json", "--linear"]) == 0
    json.loads(capsys.readouterr().out)
    one_line_error(capsys, ["detect", str(demo_dir / "llc.jsonl"), "--signals", "nope"], "slt detect: error:")


TASK = textwrap.dedent("""
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    X = rng.normal(size=(96, 3)).astype(np.float32)
    Y = X @ np.array([[1.0], [-2.0], [0.5]], np.float32) + 0.1 * rng.normal(size=(96, 1)).astype(np.float32)

    def loss_fn(params, batch):
        return jnp.mean((batch["x"] @ params["w"] + params["b"] - batch["y"]) ** 2)

    def make():
        return loss_fn, {"w": jnp.zeros((3, 1)), "b": jnp.zeros((1,))}, {"x": jnp.asarray(X), "y": jnp.asarray(Y)}
""")


def test_llc_on_task_module(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "toytask_cli.py").write_text(TASK)
    ck = tmp_path / "ck"
    rng = np.random.default_rng(1)
    w = np.array([[1.0], [-2.0], [0.5]], np.float32)
    for s in (100, 200, 300):
        save_params(ck / f"step_{s}.safetensors", {"w": w + rng.normal(size=w.shape).astype(np.float32) / s,
                                                   "b": np.zeros(1, np.float32)})
    (ck / "step_400.safetensors").write_bytes(b"\x10\x00\x00")  # truncated
    out = tmp_path / "llc.jsonl"
    args = ["llc", "--task", "toytask_cli:make", "--checkpoints", str(ck), "--out", str(out), "--step-size", "1e-3",
            "--nbeta", "20", "--localization", "10", "--chains", "2", "--draws", "30", "--batch-size", "32",
            "--no-progress"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "3 checkpoints measured, 1 failed" in text and "step_400.safetensors" in text
    lines = out.read_text().splitlines()
    assert len(lines) == 5 and json.loads(lines[0])["meta"] == {"task": "toytask_cli:make"}
    recs = {r["step"]: r for r in map(json.loads, lines[1:])}
    assert recs[400]["status"] == "failed" and "truncated" in recs[400]["error"]
    assert all(recs[s]["status"] == "ok" and recs[s]["llc_mean"] > 0 for s in (100, 200, 300))
    # resume: nothing recomputed for finished checkpoints (the failed one is retried)
    assert main(args) == 0
    assert out.read_text().splitlines()[:5] == lines and len(out.read_text().splitlines()) == 6
    # a changed hyperparameter is refused in one line
    bad = list(args)
    bad[bad.index("--step-size") + 1] = "2e-3"
    err = one_line_error(capsys, bad, "slt llc: error:")
    assert "step_size" in err
    # user mistakes: one line each
    one_line_error(capsys, ["llc", "--task", "no_such_module_xyz:make", "--checkpoints", str(ck), "--out",
                            str(tmp_path / "o.jsonl"), "--step-size", "1e-3"], "slt llc: error:")
    one_line_error(capsys, ["llc", "--task", "toytask_cli:make", "--checkpoints", str(tmp_path / "nope"), "--out",
                            str(tmp_path / "o.jsonl"), "--step-size", "1e-3"], "slt llc: error:")
    one_line_error(capsys, ["llc", "--task", "toytask_cli:make", "--checkpoints", str(ck), "--out",
                            str(tmp_path / "o.jsonl"), "--step-size", "-1"], "slt llc: error:")


def test_bad_arguments_one_line(capsys, tmp_path):
    one_line_error(capsys, ["demo", "grokking"], "slt demo: error:")  # --out missing
    one_line_error(capsys, ["demo", "nosuchdemo", "--out", str(tmp_path)], "slt demo: error:")
    one_line_error(capsys, ["demo", "grokking", "--out", str(tmp_path), "--chains", "0"], "slt demo: error:")
    one_line_error(capsys, ["demo", "grokking", "--out", str(tmp_path), "--seed", "x"], "slt demo: error:")
    one_line_error(capsys, ["detect", str(tmp_path / "missing.jsonl")], "slt detect: error:")
    one_line_error(capsys, ["llc", "--checkpoints", "x"], "slt llc: error:")
    (tmp_path / "notastore.jsonl").write_text("hello\n")
    one_line_error(capsys, ["detect", str(tmp_path / "notastore.jsonl")], "slt detect: error:")


def test_bad_cpu_devices_setting_one_line(capsys, monkeypatch):
    monkeypatch.setenv("SLT_CPU_DEVICES", "lots")
    one_line_error(capsys, ["detect", "--help"], "slt: error: SLT_CPU_DEVICES")


def test_bad_vector_width_setting_one_line(capsys, monkeypatch):
    monkeypatch.setenv("SLT_CPU_VECTOR_WIDTH", "wide")  # refused at start-up, not at the first compile
    one_line_error(capsys, ["detect", "--help"], "slt: error: SLT_CPU_VECTOR_WIDTH")


@pytest.mark.parametrize("command", ["demo", "llc", "detect"])
def test_help_shows_defaults(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: slt " + command in out and "(default:" in out
