"""The samplers of slt.samplers: how they relate to each other, and what each one's extra machinery buys."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

import slt
from slt.posterior import Hyperparameters
from slt.sampling import RunConfig, run_chains


def quadratic(w, batch):
    return 0.5 * jnp.sum(w**2) + 0.0 * jnp.sum(batch)


def test_sghmc_at_friction_one_is_sgld_with_the_same_step():
    """p ← -h∇U + √2·z, w ← w + h·p with h = √(ε/2) is w - (ε/2)∇U + √ε·z: SGLD, on the same noise."""
    hp = Hyperparameters(1e-3, 100.0, 1.0)
    start = jnp.linspace(-0.3, 0.3, 6)
    runs = {s: run_chains(quadratic, start, jnp.zeros((1, 1)), hp, seed=5, return_state=True,
                          config=RunConfig(s, 3, 200, 1, sampler_options=opts))
            for s, opts in (("sgld", ()), ("sghmc", (("friction", 1.0),)))}
    np.testing.assert_allclose(runs["sghmc"].loss_trace, runs["sgld"].loss_trace, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(runs["sghmc"].final_state.sampler_state.position,
                               runs["sgld"].final_state.sampler_state.position, rtol=2e-5, atol=1e-7)


def injected_noise_problem(d=8, n=1000, variance=0.2, seed=0):
    """L_B(w) = ½‖w‖² + w·mean_B(z), the z centred over the data: L(w) = ½‖w‖² exactly, and each minibatch
    adds gradient noise of known variance (nβ²·variance/B per coordinate in U)."""
    z = np.random.default_rng(seed).normal(scale=np.sqrt(variance), size=(n, d))
    z -= z.mean(0)
    return (lambda w, b: 0.5 * jnp.sum(w**2) + jnp.mean(b @ w)), jnp.zeros(d), jnp.asarray(z, jnp.float32)


def test_the_sgnht_thermostat_absorbs_gradient_noise_that_heats_sghmc():
    """Injected minibatch-gradient noise heats SGHMC (measured +53% at these settings); SGNHT's thermostat ξ
    raises its friction until the kinetic energy is 1 again and lands within 3% of the exact value
    (measured +1.5%). With ξ frozen SGNHT is SGHMC, so this test fails without the thermostat."""
    loss, w0, data = injected_noise_problem()
    t = 100.0
    exact = 0.5 * w0.size * t / (t + 1.0)  # U = t·½‖w‖² + ½‖w‖²: t·E[L] = ½·d·t/(t + γ)
    kwargs = dict(step_size=1e-3, nbeta=t, batch_size=10, num_chains=8, num_draws=10_000, num_burnin=5000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hot = slt.estimate_llc(loss, w0, data, sampler="sghmc", **kwargs)
        thermostat = slt.estimate_llc(loss, w0, data, sampler="sgnht", **kwargs)
    assert hot.llc_mean > 1.3 * exact, hot.llc_mean
    assert abs(thermostat.llc_mean - exact) < 0.03 * exact, (thermostat.llc_mean, exact)
    assert thermostat.diagnostics["mcse"] < 0.01 * exact  # the 3% band is far outside the noise


# --------------------------------------------------------------------------- the noise (slt.samplers.noise)


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
