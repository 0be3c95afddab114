"""Sweeps over checkpoints: grouping, the crash-safe store, resume, failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slt.checkpoints import save_params
from slt.store import StoreError, StoreMismatchError, TrajectoryStore, read_store
from slt.trajectory import Trajectory, auto_group_size, llc_trajectory
from slt.validation import SLTInputError

HP = dict(step_size=1e-3, nbeta=20.0, localization=10.0, num_chains=2, num_draws=30, batch_size=32,
          acceptance_checks=0)
STEPS = [0, 10, 20, 30, 40, 50]


def make_problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 3)).astype(np.float32)
    w = rng.normal(size=(3, 4)).astype(np.float32)
    y = np.tanh(x @ w).sum(1, keepdims=True) + 0.1 * rng.normal(size=(128, 1)).astype(np.float32)
    data = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
    ckpts = [(s, {"w1": jnp.asarray(w + rng.normal(size=w.shape).astype(np.float32) / (1 + s)),
                  "w2": jnp.ones((4, 1), jnp.float32)}) for s in STEPS]
    return data, ckpts


def loss_fn(params, batch):
    pred = jnp.tanh(batch["x"] @ params["w1"]) @ params["w2"]
    return jnp.mean((pred - batch["y"]) ** 2)


DATA, CKPTS = make_problem()
TEMPLATE = CKPTS[0][1]


@pytest.fixture(scope="module")
def reference():
    """The one-at-a-time sweep, in memory."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return llc_trajectory(loss_fn, CKPTS, DATA, checkpoints_per_group=1, progress=False, **HP)


def write_dir(path, ckpts=CKPTS):
    os.makedirs(path, exist_ok=True)
    for s, p in ckpts:
        save_params(os.path.join(path, f"step_{s:04d}.safetensors"), p)
    return path


def test_grouped_equals_one_at_a_time(reference):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grouped = llc_trajectory(loss_fn, CKPTS, DATA, checkpoints_per_group=2, progress=False, **HP)
    # 6 checkpoints → 3 groups of 2: 2 checkpoints × 2 chains vmapped in one compiled program
    assert [t["group_size"] for t in grouped.timing] == [2] * 6
    assert not any(t["compile_seconds"] for t in grouped.timing[2:])  # one program for every group (at most the first compiles)
    np.testing.assert_array_equal(grouped.steps, STEPS)
    np.testing.assert_allclose(grouped.llc_per_chain, reference.llc_per_chain, rtol=1e-4, atol=1e-5)
    assert np.all(np.isfinite(reference.llc_mean))
    assert reference.llc_per_chain.shape == (6, 2)


def test_auto_group_size():
    assert auto_group_size(18, 4, 100) == 16
    assert auto_group_size(4428, 4, 100) == 8
    assert auto_group_size(10**6, 4, 100) == 1
    assert auto_group_size(18, 4, 3) == 3


def test_store_written_and_loaded(tmp_path, reference):
    out = tmp_path / "llc.jsonl"
    ckdir = write_dir(tmp_path / "ck")
    metrics = {s: {"train_loss": 1.0 / (1 + s)} for s in STEPS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traj = llc_trajectory(loss_fn, ckdir, DATA, out=out, template=TEMPLATE, checkpoints_per_group=1,
                              metrics=metrics, meta={"task": "toy"}, progress=False, **HP)
    lines = out.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["format"] == "slt-trajectory" and header["meta"] == {"task": "toy"}
    assert header["config"]["llc"]["step_size"] == HP["step_size"] and len(lines) == 1 + len(STEPS)
    np.testing.assert_allclose(traj.llc_per_chain, reference.llc_per_chain, rtol=1e-6)
    loaded = Trajectory.load(out)
    np.testing.assert_array_equal(loaded.llc_mean, traj.llc_mean)
    np.testing.assert_allclose(loaded.metrics["train_loss"], [1.0 / (1 + s) for s in STEPS])
    d = loaded.to_dict()
    json.dumps(d)
    assert set(d) >= {"steps", "llc_mean", "llc_std", "llc_per_chain", "failed", "config", "metrics"}
    assert loaded.sources[0].endswith("step_0000.safetensors")
    ax = loaded.plot(path=tmp_path / "llc.png")
    assert (tmp_path / "llc.png").stat().st_size > 1000
    import matplotlib.pyplot as plt

    plt.close(ax.figure)
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pandas"):
            loaded.to_dataframe()
    else:
        df = loaded.to_dataframe()
        assert list(df["step"]) == STEPS and "llc_chain1" in df


def test_changed_hyperparameter_refused(tmp_path):
    out = tmp_path / "llc.jsonl"
    few = CKPTS[:2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        llc_trajectory(loss_fn, few, DATA, out=out, checkpoints_per_group=1, progress=False, **HP)
        before = out.read_bytes()
        with pytest.raises(StoreMismatchError, match="step_size"):
            llc_trajectory(loss_fn, few, DATA, out=out, checkpoints_per_group=1, progress=False,
                           **dict(HP, step_size=2e-3))
        assert out.read_bytes() == before  # untouched
        with pytest.raises(StoreMismatchError, match="data"):  # other data: refused too
            llc_trajectory(loss_fn, few, jax.tree.map(lambda a: a + 1, DATA), out=out, checkpoints_per_group=1,
                           progress=False, **HP)
        traj = llc_trajectory(loss_fn, few, DATA, out=out, checkpoints_per_group=1, progress=False, restart=True,
                              **dict(HP, step_size=2e-3))
    assert (tmp_path / "llc.jsonl.1").read_bytes() == before  # old store moved aside, not mixed
    assert read_store(out)[0]["config"]["llc"]["step_size"] == 2e-3 and len(traj) == 2


def test_failed_checkpoints_recorded_and_retried(tmp_path, reference):
    ckdir = write_dir(tmp_path / "ck")
    good = ckdir / "step_0020.safetensors"
    raw = good.read_bytes()
    good.write_bytes(raw[: len(raw) // 2])  # truncated
    save_params(ckdir / "step_0030.safetensors", {"w1": jnp.zeros((3, 5)), "w2": jnp.zeros((5, 1))})  # mismatched
    paths = sorted(str(ckdir / f) for f in os.listdir(ckdir)) + [str(ckdir / "step_0060.safetensors")]  # missing
    out = tmp_path / "llc.jsonl"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traj = llc_trajectory(loss_fn, paths, DATA, out=out, template=TEMPLATE, checkpoints_per_group=1,
                              progress=False, **HP)
    failed = {f["step"]: f["error"] for f in traj.failed}
    assert set(failed) == {20, 30, 60}
    assert "step_0020.safetensors" in failed[20] and "truncated" in failed[20]
    assert "step_0030.safetensors" in failed[30] and "shape" in failed[30]
    assert "step_0060.safetensors" in failed[60] and "not found" in failed[60]
    np.testing.assert_array_equal(traj.steps, [0, 10, 40, 50])
    np.testing.assert_allclose(traj.llc_mean, reference.llc_mean[[0, 1, 4, 5]], rtol=1e-6)
    assert "failed" in traj.table()
    # fix one file and rerun: only the failed ones are retried
    good.write_bytes(raw)
    n_lines = len(out.read_text().splitlines())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traj = llc_trajectory(loss_fn, paths, DATA, out=out, template=TEMPLATE, checkpoints_per_group=1,
                              progress=False, **HP)
    assert len(out.read_text().splitlines()) == n_lines + 3  # 20 now ok, 30 and 60 failed again
    np.testing.assert_array_equal(traj.steps, [0, 10, 20, 40, 50])
    assert sorted(f["step"] for f in traj.failed) == [30, 60]


def test_torn_last_line(tmp_path):
    out = tmp_path / "s.jsonl"
    with TrajectoryStore(out, {"a": 1}) as st:
        st.append({"step": 1, "status": "ok", "llc_mean": 1.0})
        st.append({"step": 2, "status": "ok", "llc_mean": 2.0})
    with open(out, "ab") as f:
        f.write(b'{"step": 3, "status": "ok", "llc_me')  # killed mid-write
    header, records = read_store(out)
    assert [r["step"] for r in records] == [1, 2]
    assert Trajectory.load(out).steps.tolist() == [1, 2]
    with TrajectoryStore(out, {"a": 1}) as st:  # reopening cuts the torn tail
        assert sorted(st.done()) == [1, 2]
        st.append({"step": 3, "status": "ok", "llc_mean": 3.0})
    assert [json.loads(l)["step"] for l in out.read_text().splitlines()[1:]] == [1, 2, 3]
    with TrajectoryStore(out, {"a": 1}):  # a second writer is refused while one holds the store
        with pytest.raises(StoreError, match="another process"):
            TrajectoryStore(out, {"a": 1}).open()
    (tmp_path / "bad.jsonl").write_text('{"x": 1}\n')
    with pytest.raises(StoreError, match="not an slt trajectory store"):
        Trajectory.load(tmp_path / "bad.jsonl")


SWEEP_SCRIPT = textwrap.dedent("""
    import sys, time, warnings
    sys.path.insert(0, {tests!r})
    warnings.simplefilter("ignore")
    import slt.store
    from test_trajectory import loss_fn, DATA, TEMPLATE, HP
    from slt.trajectory import llc_trajectory
    append = slt.store.TrajectoryStore.append
    def slow_append(self, record):
        append(self, record)
        print("wrote", record["step"], flush=True)
        time.sleep(0.4)  # widen the window for the kill; the line is already durable
    slt.store.TrajectoryStore.append = slow_append
    llc_trajectory(loss_fn, sys.argv[1], DATA, out=sys.argv[2], template=TEMPLATE, checkpoints_per_group=1,
                   progress=False, **HP)
    print("finished", flush=True)
""")


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path, reference):
    ckdir = write_dir(tmp_path / "ck")
    out = tmp_path / "llc.jsonl"
    script = tmp_path / "sweep.py"
    script.write_text(SWEEP_SCRIPT.format(tests=os.path.dirname(__file__)))
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.path.dirname(os.path.dirname(__file__)))
    proc = subprocess.Popen([sys.executable, str(script), str(ckdir), str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        written = []
        deadline = time.time() + 80
        while len(written) < 2 and time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("wrote"):
                written.append(int(line.split()[1]))
        assert len(written) == 2, "the sweep subprocess did not start writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    _, records = read_store(out)
    finished = {r["step"]: r for r in records}
    assert 2 <= len(finished) < len(STEPS)  # killed mid-sweep, nothing finished was lost
    before = out.read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traj = llc_trajectory(loss_fn, ckdir, DATA, out=out, template=TEMPLATE, checkpoints_per_group=2,
                              progress=False, **HP)  # resumed with another grouping: same numbers
    after = out.read_bytes()
    assert after.startswith(before)  # append-only: finished lines untouched
    _, records = read_store(out)
    assert sorted(r["step"] for r in records) == STEPS  # each checkpoint once: finished ones were skipped
    for r in records:
        i = STEPS.index(r["step"])
        np.testing.assert_allclose(r["llc_per_chain"], reference.llc_per_chain[i], rtol=1e-4, atol=1e-5)
    for s, r in finished.items():  # the killed run's results are kept as they were
        assert r == next(x for x in records if x["step"] == s)
    np.testing.assert_array_equal(traj.steps, STEPS)


def test_bad_inputs():
    with pytest.raises(SLTInputError, match="share step"):
        llc_trajectory(loss_fn, [(1, TEMPLATE), (1, TEMPLATE)], DATA, **HP)
    with pytest.raises(SLTInputError, match='step_size must be a number or "auto"'):
        llc_trajectory(loss_fn, CKPTS, DATA, **dict(HP, step_size="big"))
    with pytest.raises(SLTInputError, match='localization must be a number or "scale"'):
        llc_trajectory(loss_fn, CKPTS, DATA, **dict(HP, localization="wide"))
    with pytest.raises(SLTInputError, match="pattern 'w3' matches no parameter; the paths are w1, w2"):
        llc_trajectory(loss_fn, CKPTS, DATA, components=["w3"], **HP)
    with pytest.raises(SLTInputError, match="empty"):
        llc_trajectory(loss_fn, [], DATA, **HP)
    with pytest.raises(SLTInputError, match="no such"):
        llc_trajectory(loss_fn, "/nonexistent/dir", DATA, **HP)
    with pytest.raises(SLTInputError, match="none of the 1 checkpoints"):
        llc_trajectory(loss_fn, ["/nonexistent/step_1.safetensors"], DATA, **HP)
    with pytest.raises(SLTInputError, match="step_size"):
        llc_trajectory(loss_fn, CKPTS, DATA, **dict(HP, step_size=-1.0))


AUTO = dict(nbeta=20.0, num_chains=2, num_draws=60, batch_size=32, acceptance_checks=0, progress=False)


@pytest.mark.slow
def test_auto_step_one_epsilon_for_all_checkpoints_recorded_and_reused(tmp_path, monkeypatch):
    import slt.calibration as calibration

    calls = []
    real = calibration.calibrate

    def counting(loss, params, data, **kw):
        calls.append(kw.get("localization"))
        return real(loss, params, data, **kw)

    monkeypatch.setattr(calibration, "calibrate", counting)
    out = tmp_path / "auto.jsonl"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traj = llc_trajectory(loss_fn, CKPTS, DATA, out=out, step_size="auto", localization="scale",
                              num_burnin="auto", calibrate_at=3, **AUTO)
    assert len(calls) == 3  # first, middle, last
    header, records = read_store(out)
    (note,) = [r for r in records if r.get("kind") == "settings"]
    assert header["config"]["llc"]["step_size"] == "auto" and header["config"]["llc"]["localization"] == "scale"
    steps = {c["step_size"] for c in note["calibration"]["calibrations"].values()}
    assert note["step_size"] == min(steps)  # the smallest healthy recommendation, for every checkpoint
    from slt.localization import scale_localization

    assert note["localization"] == pytest.approx(scale_localization(CKPTS[-1][1]))  # from the last checkpoint
    assert len(traj) == len(STEPS)
    assert all(d["burnin"]["steps"] > 0 for d in traj.diagnostics)  # automatic burn-in per group
    # resumed with one checkpoint missing: the recorded choice is reused, nothing is calibrated again
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:-1]) + "\n")
    calls.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = llc_trajectory(loss_fn, CKPTS, DATA, out=out, step_size="auto", localization="scale",
                               num_burnin="auto", calibrate_at=3, **AUTO)
    assert calls == [] and len(again) == len(STEPS)
    assert [r for r in read_store(out)[1] if r.get("kind") == "settings"] == [note]


@pytest.mark.slow
def test_components_sweep_matches_each_component_run_alone():
    from slt.llc import estimate_llc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traj = llc_trajectory(loss_fn, CKPTS[:2], DATA, components={"first": "w1", "second": "w2"},
                              checkpoints_per_group=2, progress=False, **HP)
        kwargs = {k: v for k, v in HP.items()}
        alone = estimate_llc(loss_fn, CKPTS[1][1], DATA, restrict="w2", **kwargs)
        whole = estimate_llc(loss_fn, CKPTS[1][1], DATA, **kwargs)
    assert set(traj.components) == {"first", "second"}
    second = traj.components["second"]
    np.testing.assert_allclose(second.llc_mean[1], alone.llc_mean, rtol=1e-5)
    np.testing.assert_allclose(traj.llc_mean[1], whole.llc_mean, rtol=1e-5)
    assert traj.components["first"].llc_mean[1] != pytest.approx(second.llc_mean[1])
    assert second.diagnostics[1].get("warnings") is not None


def test_a_component_is_measured_where_the_whole_model_diverges():
    """Stiff ``a`` (curvature 2e6) explodes every whole-model chain at this ε; gentle ``b`` alone does not."""
    def stiff(params, batch):
        return 1e6 * jnp.sum(params["a"] ** 2) + jnp.mean((batch["x"] * params["b"] - batch["y"]) ** 2)

    x = np.random.default_rng(0).normal(size=(64, 1)).astype(np.float32)
    data = {"x": x, "y": 0.5 * x}
    ckpts = [(s, {"a": jnp.zeros(2), "b": jnp.full((1,), 0.5)}) for s in (1, 2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traj = llc_trajectory(stiff, ckpts, data, components={"b": "b"}, progress=False,
                              **dict(HP, step_size=1e-3, nbeta=10.0, batch_size=None))
    assert len(traj.steps) == 0 and [f["step"] for f in traj.failed] == [1, 2]  # the whole model: diverged
    b = traj.components["b"]
    assert list(b.steps) == [1, 2] and np.isfinite(b.llc_mean).all() and not b.failed
