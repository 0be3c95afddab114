"""Scale features of the runner: sharding, streaming, resumable state, memory, compilation cache, fast noise."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slt.posterior import Hyperparameters
from slt.sampling import RunConfig, chain_keys, ProgramInputs, compiled_program, run_chains

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def loss(w, batch):
    return jnp.mean((batch["x"] @ w["a"] + w["b"] - batch["y"]) ** 2)


rng = np.random.default_rng(0)
X = rng.normal(size=(300, 4)).astype(np.float32)
DATA = {"x": X, "y": (X @ np.arange(1.0, 5.0) + 0.1 * rng.normal(size=300)).astype(np.float32)}
PARAMS = {"a": jnp.arange(1.0, 5.0), "b": jnp.zeros(())}
HP = Hyperparameters(np.array([1e-3, 2e-3, 1e-3, 3e-3]), 50.0, 1.0)


def _run(data=DATA, **kw):
    config = kw.pop("config", RunConfig("sgld", 4, 60, 16, acceptance_every=10))
    return run_chains(loss, PARAMS, data, HP, config=config, seed=3, **kw)


def _subprocess(script: str, env_extra: dict, timeout: int = 240) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", **env_extra)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_sharded_run_equals_single_device_run():
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
    out = _subprocess(script, {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
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


def test_automatic_devices_use_the_most_that_divide_the_chains():
    script = """
        import json
        from slt.sharding import resolve_devices
        count = lambda chains: len(resolve_devices(None, chains) or [0])
        print(json.dumps({c: count(c) for c in (1, 2, 3, 4, 6, 8, 9)}))
    """
    out = _subprocess(script, {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    assert out == {"1": 1, "2": 2, "3": 3, "4": 4, "6": 3, "8": 4, "9": 3}


def test_use_cpu_cores_gives_one_device_per_core_and_shards_by_default():
    script = """
        import json, numpy as np, jax.numpy as jnp, slt
        out = {"set": slt.use_cpu_cores(2)}
        import jax
        out["devices"] = len(jax.devices())
        data = {"x": np.linspace(-1, 1, 200, dtype=np.float32)[:, None]}
        loss = lambda w, b: jnp.mean((b["x"] @ w) ** 2)
        res = slt.estimate_llc(loss, jnp.ones(1), data, step_size=1e-3, num_chains=4, num_draws=20, progress=False)
        out["num_devices"] = res.timing["num_devices"]
        out["summary_says"] = "on 2 devices" in res.summary()
        out["again_same"] = slt.use_cpu_cores(2)
        try:
            slt.use_cpu_cores(3)
            out["late_error"] = ""
        except RuntimeError as err:
            out["late_error"] = str(err)
        print(json.dumps(out))
    """
    out = _subprocess(script, {"XLA_FLAGS": ""})  # a forced count in the environment would win
    assert out["set"] == 2 and out["devices"] == 2 and out["again_same"] == 2
    assert out["num_devices"] == 2 and out["summary_says"]  # 4 chains sharded 2 + 2 without being asked
    assert "right after `import slt`" in out["late_error"] and "2 CPU device" in out["late_error"]


def test_use_cpu_cores_keeps_a_forced_count_and_reads_the_cli_setting():
    script = """
        import json, os, slt
        from slt.cpu import use_cpu_cores_from_env
        out = {"forced": slt.use_cpu_cores(5)}
        errors = []
        for bad in (0, -1, 1.5, True):
            try:
                slt.use_cpu_cores(bad)
            except ValueError:
                errors.append(bad)
        out["bad_refused"] = len(errors)
        os.environ["SLT_CPU_DEVICES"] = "off"
        out["off"] = use_cpu_cores_from_env()
        os.environ["SLT_CPU_DEVICES"] = "many"
        try:
            use_cpu_cores_from_env()
            out["env_error"] = ""
        except ValueError as err:
            out["env_error"] = str(err)
        import jax
        out["devices"] = len(jax.devices())
        print(json.dumps(out))
    """
    out = _subprocess(script, {"XLA_FLAGS": "--xla_force_host_platform_device_count=3"})
    assert out["forced"] == 3 and out["devices"] == 3  # XLA_FLAGS wins over the argument
    assert out["bad_refused"] == 4
    assert out["off"] is None and "SLT_CPU_DEVICES" in out["env_error"] and "'many'" in out["env_error"]


def test_vector_width_is_512_only_on_amd_avx512_unless_asked(tmp_path, monkeypatch):
    from slt.cpu import VECTOR_WIDTH_ENV, cpu_compiler_options, cpu_identity, preferred_vector_width

    avx512 = {"sse2", "avx2", "avx512f"}
    assert preferred_vector_width("AuthenticAMD", avx512) == 512
    assert preferred_vector_width("GenuineIntel", avx512) is None  # some Intel CPUs clock down for 512-bit code
    assert preferred_vector_width("AuthenticAMD", {"sse2", "avx2"}) is None
    assert preferred_vector_width("GenuineIntel", avx512, "512") == 512
    assert preferred_vector_width("AuthenticAMD", {"avx2"}, "512") is None  # no AVX-512: nothing to prefer
    assert preferred_vector_width("AuthenticAMD", avx512, " 256 ") == 256
    assert preferred_vector_width("AuthenticAMD", avx512, "XLA") is None
    with pytest.raises(ValueError, match=VECTOR_WIDTH_ENV):
        preferred_vector_width("AuthenticAMD", avx512, "wide")

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f\n\n"
                    "processor\t: 1\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu\n")
    assert cpu_identity(str(info)) == ("AuthenticAMD", frozenset({"fpu", "sse2", "avx2", "avx512f"}))
    assert cpu_identity(str(tmp_path / "missing")) == ("", frozenset())
    monkeypatch.setenv(VECTOR_WIDTH_ENV, "256")
    assert cpu_compiler_options() == {"xla_cpu_prefer_vector_width": 256}
    assert cpu_compiler_options("gpu") == {}  # CPU code generation only
    monkeypatch.setenv(VECTOR_WIDTH_ENV, "xla")
    assert cpu_compiler_options() == {}


@pytest.fixture
def compile_options_seen(monkeypatch):
    """The ``compiler_options`` of every ``Lowered.compile`` call from here on, in order."""
    seen = []
    compile_lowered = jax.stages.Lowered.compile

    def spy(self, compiler_options=None, **kw):
        seen.append(dict(compiler_options or {}))
        return compile_lowered(self, compiler_options=compiler_options, **kw)

    monkeypatch.setattr(jax.stages.Lowered, "compile", spy)
    return seen


def test_sampling_programs_compile_with_the_cpu_options_and_the_same_numbers(monkeypatch, compile_options_seen):
    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    loss = lambda w, b: jnp.mean(jnp.tanh(b["x"] @ w) ** 2)  # noqa: E731
    hp = Hyperparameters(1e-3, 50.0, 1.0)
    cfg = RunConfig("sgld", 2, 30, 16)
    traces = {}
    for width in ("256", "512"):
        monkeypatch.setenv("SLT_CPU_VECTOR_WIDTH", width)
        monkeypatch.setattr("slt.cpu.cpu_identity", lambda: ("AuthenticAMD", frozenset({"avx512f"})))
        traces[width] = run_chains(loss, jnp.full(3, 0.5), {"x": x}, hp, config=cfg, seed=4).loss_trace
    seen = compile_options_seen
    assert {"xla_cpu_prefer_vector_width": 256} in seen and {"xla_cpu_prefer_vector_width": 512} in seen
    np.testing.assert_allclose(traces["256"], traces["512"], rtol=1e-5)  # code generation, not arithmetic


def test_an_option_this_xla_does_not_know_is_dropped_not_fatal(monkeypatch, compile_options_seen):
    import slt.cpu

    monkeypatch.setattr(slt.cpu, "_rejected_options", set())
    monkeypatch.setattr("slt.sampling.cpu_compiler_options", lambda platform: {"xla_cpu_option_from_the_future": 1})
    x = np.linspace(-1, 1, 32, dtype=np.float32)[:, None]
    res = run_chains(lambda w, b: jnp.mean((b["x"] @ w) ** 2), jnp.ones(1), {"x": x}, Hyperparameters(1e-3, 10.0, 1.0),
                     config=RunConfig("sgld", 1, 5, 8), seed=0)
    assert np.isfinite(res.loss_trace).all()
    assert slt.cpu._rejected_options == {"xla_cpu_option_from_the_future"}  # remembered: later compiles skip it

    lowered = jax.jit(lambda v: v + 1).lower(jnp.ones(3))
    slt.cpu.compile_lowered(lowered, {"xla_cpu_option_from_the_past": 1, "xla_cpu_prefer_vector_width": 256})
    assert compile_options_seen[-1] == {"xla_cpu_prefer_vector_width": 256}  # only the unknown option is dropped
    monkeypatch.setenv("SLT_CPU_VECTOR_WIDTH", "256")
    monkeypatch.setattr(slt.cpu, "_rejected_options", {"xla_cpu_prefer_vector_width"})
    assert slt.cpu.cpu_compiler_options() == {}  # a refused option is not reported as in force


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


def test_streaming_equals_in_memory():
    memory = _run()
    streamed = _run(stream_chunks=20)
    np.testing.assert_allclose(streamed.loss_trace, memory.loss_trace, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(streamed.acceptance_steps, memory.acceptance_steps)
    assert streamed.extras["num_chunks"] == 3
    with pytest.raises(ValueError, match="full-batch"):
        _run(config=RunConfig("sgld", 4, 10, 1000), stream_chunks=5)


def test_streaming_from_a_memmap(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, DATA["x"])
    data = {"x": np.load(path, mmap_mode="r"), "y": DATA["y"]}
    a = _run(data, stream_chunks=40)  # 40 + 20 steps
    np.testing.assert_allclose(a.loss_trace, _run().loss_trace, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("sampler", ["psgld"])  # the richest state (position, square_avg, count)
def test_continuing_a_run_equals_one_long_run(sampler):
    full = _run(config=RunConfig(sampler, 4, 60, 16, acceptance_every=10))
    half = RunConfig(sampler, 4, 30, 16, acceptance_every=10)
    a = _run(config=half, return_state=True)
    b = _run(config=half, init_state=a.final_state, return_state=True)
    np.testing.assert_allclose(np.concatenate([a.loss_trace, b.loss_trace], 1), full.loss_trace, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.concatenate([a.acceptance_steps, b.acceptance_steps]), full.acceptance_steps)
    assert b.final_state.step == 60


@pytest.mark.parametrize("split", [0, 3, 25, 59])
def test_acceptance_checks_sit_on_global_steps_whatever_the_chunking(split):
    """Checks at the steps ≡ 0 mod every, with the same values, however the run is cut into programs."""
    every = 7
    full = _run(config=RunConfig("sgld", 4, 60, 16, acceptance_every=every))
    np.testing.assert_array_equal(full.acceptance_steps, np.arange(0, 60, every))
    assert np.isfinite(full.acceptance).all() and (full.acceptance > 0).all()
    parts = [full]
    if split:
        a = _run(config=RunConfig("sgld", 4, split, 16, acceptance_every=every), return_state=True)
        parts = [a, _run(config=RunConfig("sgld", 4, 60 - split, 16, acceptance_every=every), init_state=a.final_state)]
    steps = np.concatenate([p.acceptance_steps for p in parts])
    np.testing.assert_array_equal(steps, full.acceptance_steps)
    np.testing.assert_allclose(np.concatenate([p.acceptance for p in parts], 1), full.acceptance, rtol=1e-5)
    np.testing.assert_allclose(np.concatenate([p.loss_trace for p in parts], 1), full.loss_trace, rtol=1e-6, atol=1e-6)


def test_memory_and_traces_do_not_grow_with_steps():
    data = jax.tree.map(jnp.asarray, DATA)
    keys = jnp.asarray(chain_keys(0, 4, "counter_hash"))
    hp = Hyperparameters(*(jnp.asarray(np.broadcast_to(np.asarray(v, np.float32), (4,))) for v in HP))
    temp = {}
    for steps in (50, 5000):
        config = RunConfig("sgld", 4, steps, 16, acceptance_every=10)
        args = ProgramInputs(PARAMS, None, data, hp, keys, np.int32(0), None, None)
        compiled, _ = compiled_program(loss, None, config, args, return_states=True)
        stats = compiled.memory_analysis()
        temp[steps] = (stats.temp_size_in_bytes, stats.output_size_in_bytes)
    # only the scalar traces grow: 2 floats per chain-step (loss, acceptance) plus slack
    scalar_growth = (5000 - 50) * 4 * 2 * 4
    assert temp[5000][1] - temp[50][1] <= scalar_growth + 1024
    assert temp[5000][0] - temp[50][0] <= 2 * scalar_growth + 64 * 1024
    run = _run(return_state=True)
    assert run.loss_trace.shape == (4, 60)
    assert jax.tree.map(np.shape, run.final_state.sampler_state.position) == {"a": (4, 4), "b": (4,)}


def test_persistent_compilation_cache(tmp_path):
    from slt.compilation_cache import cache_dir_setting, default_cache_dir

    assert cache_dir_setting("off") is None
    assert cache_dir_setting(str(tmp_path)) == tmp_path
    assert default_cache_dir().parts[-2:] == ("slt-jax", "xla")
    script = """
        import json, time, numpy as np, jax.numpy as jnp
        from slt.compilation_cache import enable_persistent_cache
        directory = enable_persistent_cache()
        from slt.posterior import Hyperparameters
        from slt.sampling import RunConfig, run_chains
        X = np.ones((64, 3), np.float32)
        r = run_chains(lambda w, b: jnp.mean((b["x"] @ w) ** 2), jnp.ones(3), {"x": X},
                       Hyperparameters(1e-3, 10.0, 1.0), config=RunConfig("sgld", 2, 40, 8, acceptance_every=5))
        print(json.dumps({"dir": str(directory), "compile": r.compile_seconds}))
    """
    cache = tmp_path / "xla"
    first = _subprocess(script, {"SLT_COMPILATION_CACHE": str(cache)})
    files = list(cache.iterdir())
    assert first["dir"] == str(cache) and any("program" in f.name for f in files)
    second = _subprocess(script, {"SLT_COMPILATION_CACHE": str(cache)})
    assert second["compile"] < first["compile"]


def test_the_float32_gaussian_is_jax_normal_with_a_more_accurate_erfinv():
    from scipy import special

    from slt.samplers.noise import COUNTER_HASH, erfinv_f32, standard_normal

    x = np.concatenate([np.linspace(-1, 1, 2_000_001, dtype=np.float32)[1:-1],
                        1 - np.float32(2.0) ** -np.arange(1, 24, dtype=np.float32)])  # to 1 - 2⁻²³ (uniforms stop at 1 - 3·2⁻²⁴)
    exact = special.erfinv(x.astype(np.float64))
    ours = np.asarray(jax.jit(erfinv_f32)(x), np.float64)
    rel = np.max(np.abs(ours - exact) / np.maximum(np.abs(exact), 1e-30))
    assert rel < 5e-7  # float32 rounding (XLA's own log1p form: 5.8e-6)
    key = jax.random.key(3, impl=COUNTER_HASH)
    z, ref = standard_normal(key, (100_000,)), jax.random.normal(key, (100_000,))
    assert z.dtype == jnp.float32
    np.testing.assert_allclose(z, ref, rtol=2e-5, atol=1e-6)  # the same uniform draw, value for value
    half = standard_normal(key, (1000,), jnp.float16)  # other dtypes: jax.random.normal itself
    assert np.array_equal(half, jax.random.normal(key, (1000,), jnp.float16))


def test_counter_hash_noise_is_standard_normal_and_independent():
    from scipy import stats

    from slt.samplers.noise import COUNTER_HASH, standard_normal, tree_normal

    keys = jax.random.split(jax.random.key(7, impl=COUNTER_HASH), 3)
    z = np.asarray(jax.vmap(lambda k: standard_normal(k, (200_000,)))(keys), np.float64)
    for row in z:
        assert abs(row.mean()) < 0.015 and abs(row.var() - 1) < 0.015
        assert stats.kstest(row, "norm").pvalue > 1e-4
        assert abs(np.corrcoef(row[:-1], row[1:])[0, 1]) < 0.015
    assert abs(np.corrcoef(z[0], z[1])[0, 1]) < 0.015
    noise = tree_normal(keys[0], {"w": jnp.zeros((3, 5)), "b": jnp.zeros(4)})
    assert noise["w"].shape == (3, 5) and noise["b"].shape == (4,)
    idx = np.asarray(jax.random.randint(keys[0], (100_000,), 0, 10))
    assert np.all(np.abs(np.bincount(idx, minlength=10) / 1e4 - 1) < 0.05)
