"""CPU set-up (slt.cpu, slt.compilation_cache): one device per core, XLA CPU options, the persistent cache."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slt.posterior import Hyperparameters
from slt.sampling import RunConfig, run_chains
from tests.support import in_subprocess


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
    out = in_subprocess(script, {"XLA_FLAGS": ""})  # a forced count in the environment would win
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
    out = in_subprocess(script, {"XLA_FLAGS": "--xla_force_host_platform_device_count=3"})
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
    tanh_loss = lambda w, b: jnp.mean(jnp.tanh(b["x"] @ w) ** 2)  # noqa: E731
    hp = Hyperparameters(1e-3, 50.0, 1.0)
    cfg = RunConfig("sgld", 2, 30, 16)
    traces = {}
    for width in ("256", "512"):
        monkeypatch.setenv("SLT_CPU_VECTOR_WIDTH", width)
        monkeypatch.setattr("slt.cpu.cpu_identity", lambda: ("AuthenticAMD", frozenset({"avx512f"})))
        traces[width] = run_chains(tanh_loss, jnp.full(3, 0.5), {"x": x}, hp, config=cfg, seed=4).loss_trace
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

@pytest.mark.slow
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
    first = in_subprocess(script, {"SLT_COMPILATION_CACHE": str(cache)})
    files = list(cache.iterdir())
    assert first["dir"] == str(cache) and any("program" in f.name for f in files)
    second = in_subprocess(script, {"SLT_COMPILATION_CACHE": str(cache)})
    assert second["compile"] < first["compile"]


@pytest.mark.slow
def test_the_library_turns_the_persistent_cache_on_at_its_first_compile(tmp_path):
    script = """
        import json, numpy as np, jax, jax.numpy as jnp
        from slt.posterior import Hyperparameters
        from slt.sampling import RunConfig, run_chains
        before = jax.config.jax_compilation_cache_dir
        run_chains(lambda w, b: jnp.mean((b["x"] @ w) ** 2), jnp.ones(3), {"x": np.ones((16, 3), np.float32)},
                   Hyperparameters(1e-3, 10.0, 1.0), config=RunConfig("sgld", 2, 10, 8))
        print(json.dumps({"before": before, "after": jax.config.jax_compilation_cache_dir}))
    """
    cache = tmp_path / "xla"
    seen = in_subprocess(script, {"SLT_COMPILATION_CACHE": str(cache)})
    assert seen["before"] is None and seen["after"] == str(cache) and any(cache.iterdir())
    assert in_subprocess(script, {"SLT_COMPILATION_CACHE": "off"})["after"] is None
