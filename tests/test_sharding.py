"""Chains sharded over devices (slt.sharding): the same numbers as one device, automatic device counts, multi-host."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.support import ROOT, in_subprocess


@pytest.mark.slow
def test_sharded_run_equals_single_devicerun():
    script = """
        import json, numpy as np, jax, jax.numpy as jnp
        from slt.posterior import Hyperparameters
        from slt.sampling import RunConfig, run_chains
        from slt.sharding import resolve_devices
        rng = np.random.default_rng(0)
        X = rng.normal(size=(300, 4)).astype(np.float32)
        data = {"x": X, "y": (X @ np.arange(1.0, 5.0)).astype(np.float32)}
        loss = lambda w, b: jnp.mean((b["x"] @ w["a"] + w["b"] - b["y"]) ** 2)
        params = {"a": jnp.arange(1.0, 5.0), "b": jnp.zeros(())}
        hp = Hyperparameters(np.array([1e-3, 2e-3, 1e-3, 3e-3]), 50.0, 1.0)
        out = {"devices": len(jax.devices())}
        for sampler in ("sgld",):
            cfg = RunConfig(sampler, 4, 60, 16, acceptance_every=10)
            one = run_chains(loss, params, data, hp, config=cfg, seed=3, devices=1)
            two = run_chains(loss, params, data, hp, config=cfg, seed=3, devices="all")
            auto = run_chains(loss, params, data, hp, config=cfg, seed=3)
            streamed = run_chains(loss, params, data, hp, config=cfg, seed=3, devices="all", stream_chunks=30)
            out[sampler] = {"num_devices": [two.extras["num_devices"], auto.extras["num_devices"]],
                            "equal": bool(np.array_equal(one.loss_trace, two.loss_trace)),
                            "equal_auto": bool(np.array_equal(one.loss_trace, auto.loss_trace)),
                            "acc_equal": bool(np.allclose(one.acceptance, two.acceptance, equal_nan=True)),
                            "streamed_diff": float(np.abs(one.loss_trace - streamed.loss_trace).max())}
        centers = jax.tree.map(lambda x: jnp.stack([x, x + 0.1, x, x + 0.1]), params)
        cfg = RunConfig("sgld", 4, 60, 16, acceptance_every=10, center_per_chain=True)
        a = run_chains(loss, centers, data, hp, config=cfg, seed=1, devices=1)
        b = run_chains(loss, centers, data, hp, config=cfg, seed=1, devices="all")
        out["per_chain_centers_equal"] = bool(np.array_equal(a.loss_trace, b.loss_trace))
        try:
            resolve_devices("all", 3)
            out["odd_chains_error"] = False
        except ValueError:
            out["odd_chains_error"] = True
        out["odd_chains_auto"] = resolve_devices(None, 3)
        import slt
        ckpts = [(i, jax.tree.map(lambda x, i=i: x + 0.05 * i, params)) for i in range(3)]
        kw = dict(step_size=1e-3, nbeta=50.0, num_chains=2, num_draws=40, batch_size=16, progress=False,
                  checkpoints_per_group=2)
        traj_one = slt.llc_trajectory(loss, ckpts, data, devices=1, **kw)
        traj_auto = slt.llc_trajectory(loss, ckpts, data, **kw)
        out["trajectory_equal"] = bool(np.array_equal(traj_one.llc_mean, traj_auto.llc_mean))
        out["trajectory_devices"] = [traj_one.timing[0]["num_devices"], traj_auto.timing[0]["num_devices"]]
        try:  # 1 checkpoint × 1 chain per group cannot be split over 2 devices: an input error before sampling
            slt.llc_trajectory(loss, ckpts, data, devices="all", **dict(kw, num_chains=1, checkpoints_per_group=1))
            out["trajectory_devices_error"] = ""
        except slt.SLTInputError as err:
            out["trajectory_devices_error"] = str(err)
        import tempfile
        store = tempfile.mkdtemp() + "/traj.jsonl"
        fine = dict(kw, num_chains=1, checkpoints_per_group=2)  # 2 checkpoints × 1 chain: 2 devices split them
        slt.llc_trajectory(loss, ckpts[:2], data, devices="all", out=store, **fine)
        resumed = slt.llc_trajectory(loss, ckpts[:2], data, devices="all", out=store, **fine)  # nothing left to run
        out["resumed_done"] = len(resumed.steps)
        print(json.dumps(out))
    """
    out = in_subprocess(script, {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert out["devices"] == 2
    for sampler in ("sgld",):
        r = out[sampler]
        assert r["num_devices"] == [2, 2]
        assert r["equal"] and r["equal_auto"] and r["acc_equal"], r  # per-chain keys: bitwise the same numbers
        assert r["streamed_diff"] < 1e-5
    assert out["per_chain_centers_equal"]
    assert out["odd_chains_error"] and out["odd_chains_auto"] is None
    assert out["trajectory_equal"] and out["trajectory_devices"] == [1, 2]  # checkpoint groups sharded too, same numbers
    assert "2 devices cannot split a group of 1 checkpoint(s) × 1 chain(s)" in out["trajectory_devices_error"]
    assert out["resumed_done"] == 2  # a finished store resumes without a devices check on an empty group

@pytest.mark.slow
def test_automatic_devices_use_the_most_that_divide_the_chains():
    script = """
        import json
        from slt.sharding import resolve_devices
        count = lambda chains: len(resolve_devices(None, chains) or [0])
        print(json.dumps({c: count(c) for c in (1, 2, 3, 4, 6, 8, 9)}))
    """
    out = in_subprocess(script, {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    assert out == {"1": 1, "2": 2, "3": 3, "4": 4, "6": 3, "8": 4, "9": 3}

MULTIHOST_WORKER = """
import json, sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.config.update("jax_num_cpu_devices", int(sys.argv[3]))
jax.distributed.initialize(coordinator_address="127.0.0.1:" + sys.argv[2], num_processes=2,
                           process_id=int(sys.argv[1]), initialization_timeout=120)
import numpy as np, jax.numpy as jnp, slt
X = np.random.default_rng(0).normal(size=(100, 2)).astype(np.float32)
loss = lambda w, b: jnp.mean((b["x"] @ w) ** 2)
kw = dict(step_size=1e-3, nbeta=50.0, num_chains=2, num_draws=20, progress=False)
r = slt.estimate_llc(loss, jnp.ones(2), {"x": X}, **kw)
t = slt.llc_trajectory(loss, [(0, jnp.ones(2)), (1, 1.1 * jnp.ones(2))], {"x": X}, checkpoints_per_group=1, **kw)
print(json.dumps({"llc": r.llc_mean, "devices": r.timing["num_devices"], "traj": [float(v) for v in t.llc_mean],
                  "traj_devices": t.timing[0]["num_devices"]}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("local_devices,expected_devices", [(1, 2), (2, 1)])
def test_multihost_estimate_and_trajectory(local_devices, expected_devices):
    """Two processes (jax.distributed, CPU): 2 chains span both hosts with one device each, and stay local
    with two each (4 devices cannot split 2 chains across both processes)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    procs = [subprocess.Popen([sys.executable, "-c", MULTIHOST_WORKER, str(i), port, str(local_devices)], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert results[0] == results[1]  # every process gets the same gathered numbers
    assert results[0]["devices"] == expected_devices and results[0]["traj_devices"] == expected_devices
    assert all(np.isfinite(results[0]["traj"]))


@pytest.mark.slow
def test_observables_sharded_over_devices_equal_one_device():
    """The BIF's observations (per-example losses at draws, reduced per chain) with chains split over 2 devices
    give the same numbers as on one device: the observer is part of the one program, sharded with the chains."""
    script = """
        import json, warnings
        import jax, jax.numpy as jnp, numpy as np
        import slt
        warnings.simplefilter("ignore")
        rng = np.random.default_rng(0)
        x = rng.normal(size=(60, 2)).astype(np.float32)
        y = (x @ np.ones(2) + rng.normal(size=60)).astype(np.float32)
        nll = lambda w, b: jnp.mean((b[1] - b[0] @ w) ** 2) / 2
        w = jnp.asarray(np.linalg.lstsq(x, y, rcond=None)[0], jnp.float32)
        kw = dict(step_size=1e-3, num_chains=4, num_draws=200, seed=1, progress=False)
        one = slt.bayesian_influence(nll, w, (x[:40], y[:40]), (x[40:], y[40:]), devices=jax.devices()[:1], **kw)
        two = slt.bayesian_influence(nll, w, (x[:40], y[:40]), (x[40:], y[40:]), devices="all", **kw)
        print(json.dumps({"devices": [one.llc.timing["num_devices"], two.llc.timing["num_devices"]],
                          "max_diff": float(np.max(np.abs(one.values - two.values))),
                          "scale": float(np.max(np.abs(one.values))),
                          "shape": list(two.values.shape)}))
    """
    out = in_subprocess(script, {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert out["devices"] == [1, 2] and out["shape"] == [40, 20]
    assert out["max_diff"] <= 1e-5 * out["scale"], out
