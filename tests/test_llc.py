"""LLC estimator: accuracy against exact finite-t values, determinism, divergence handling.

Accuracy targets are exact values of t·E_t[K] (quadrature or closed form,
tests/exact.py), never λ itself. Tolerances are Z_TOL Monte Carlo standard
errors, the larger of the ESS-based MCSE and the across-chain standard error.
"""

import json

import jax.numpy as jnp
import numpy as np
import pytest

import slt
from slt.posterior import Hyperparameters
from slt.sampling import RunConfig, run_chains
from tests.exact import normal_crossing_w1sq_w2sq, quadratic, rank0_linear_net

Z_TOL = 4.0  # |estimate - exact| ≤ 4 standard errors: fails by chance with p < 1e-4
DUMMY = jnp.zeros((1, 1))  # data for potentials that do not depend on data


def crossing_loss(w, batch):
    return (w[0] * w[1]) ** 2 + 0.0 * jnp.sum(batch)


def standard_error(result) -> float:
    chains = len(result.llc_per_chain)
    return max(result.diagnostics["mcse"], result.llc_std / np.sqrt(chains))


def assert_matches(result, exact):
    se = standard_error(result)
    assert abs(result.llc_mean - exact) <= Z_TOL * se, (
        f"{result.config.sampler}: λ̂ = {result.llc_mean:.4f}, exact {exact:.4f}, "
        f"{(result.llc_mean - exact) / se:+.1f} standard errors ({se:.4f})"
    )
    # the test must be able to fail: the standard error is small against the value
    assert se < 0.05 * exact


SINGULAR_SETTINGS = {
    # sampler: (step size, options, draws); small steps keep discretisation bias ≪ MCSE
    "sgld": (1e-4, None, 40_000),
    "psgld": (3e-4, {"adapt_steps": 2000}, 40_000),  # G frozen after burn-in: exact
    "sghmc": (1e-4, None, 20_000),
    "sgnht": (1e-4, None, 20_000),
    "mala": (3e-3, None, 20_000),
}


@pytest.mark.parametrize("sampler", slt.SAMPLERS)
def test_normal_crossing_matches_quadrature(sampler):
    """K = w1²w2² (λ = 1/2, m = 2) at t = 100: exact t·E_t[K] = 0.3542 (REFERENCE.md §1)."""
    step, options, draws = SINGULAR_SETTINGS[sampler]
    t = 100.0
    result = slt.estimate_llc(
        crossing_loss, jnp.zeros(2), DUMMY, step_size=step, nbeta=t, num_chains=64,
        num_draws=draws, num_burnin=2000, sampler=sampler, sampler_options=options,
    )
    assert_matches(result, normal_crossing_w1sq_w2sq(t))


def test_psgld_adapting_throughout_is_biased_and_freezing_fixes_it():
    """Documented behaviour: a preconditioner that keeps adapting (no Γ term) biases λ̂ upward."""
    t = 100.0
    kwargs = dict(step_size=3e-4, nbeta=t, num_chains=64, num_draws=40_000, num_burnin=2000, sampler="psgld")
    adapting = slt.estimate_llc(crossing_loss, jnp.zeros(2), DUMMY, **kwargs)
    exact = normal_crossing_w1sq_w2sq(t)
    assert adapting.llc_mean - exact > Z_TOL * standard_error(adapting)


def test_mala_matches_exact_rank0_linear_network():
    """K = ‖W₁W₂‖² at W = 0 (a 2→2→3 linear net, d = 10) at t = 100: exact t·E_t[K] = 1.7626 by quadrature.

    A singular point whose finite-t value is neither Aoyagi's λ = 2 nor the d/4 = 2.5 of a homogeneous
    quartic; the same formula gives the [100, 100, 100] network of docs/calibration.md.
    """
    loss = lambda p, batch: jnp.sum((p["w1"] @ p["w2"]) ** 2) + 0.0 * jnp.sum(batch)
    params = {"w1": jnp.zeros((2, 2)), "w2": jnp.zeros((2, 3))}
    result = slt.estimate_llc(loss, params, DUMMY, step_size=2e-3, nbeta=100.0, num_chains=64, num_draws=20_000,
                              num_burnin=2000, sampler="mala")
    exact = rank0_linear_net(100.0, 2, 2, 3)
    assert_matches(result, exact)
    assert abs(exact - float(slt.theory.dln([3, 2, 2], 0).lam)) > 0.2  # the test can tell it from λ


@pytest.mark.parametrize("step", [2e-3, 8e-3])
def test_sgld_quadratic_matches_exact_discrete_stationary_law(step):
    """SGLD on U = t·Σc_i w_i² + ½‖w‖² has a Gaussian stationary law known exactly for every ε."""
    c = np.array([0.5, 1.0, 2.0])
    t = 30.0
    loss = lambda w, batch: jnp.sum(jnp.asarray(c) * w**2) + 0.0 * jnp.sum(batch)
    result = slt.estimate_llc(loss, jnp.zeros(3), DUMMY, step_size=step, nbeta=t, num_chains=32,
                              num_draws=4000, num_burnin=500)
    assert_matches(result, quadratic(t, c, sgld_step=step))
    # and the step-size bias is resolved: the continuous-time value is excluded at the larger step
    if step == 8e-3:
        assert abs(result.llc_mean - quadratic(t, c)) > Z_TOL * standard_error(result)


def regression_task(n=2000, d=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w0 = np.arange(1, d + 1, dtype=np.float32)
    data = {"x": x, "y": x @ w0}  # noise-free: w0 is the empirical minimum (no centering bias)

    def loss(w, batch):
        return jnp.mean((batch["x"] @ w - batch["y"]) ** 2)

    return loss, jnp.asarray(w0), data


def regression_exact(data, nbeta, gamma):
    """t·E[L] for L(w) = (w-w0)ᵀS(w-w0), S = XᵀX/n: t·tr(S·(2tS + γI)⁻¹)."""
    s = data["x"].T.astype(np.float64) @ data["x"] / len(data["x"])
    return float(nbeta * np.trace(s @ np.linalg.inv(2 * nbeta * s + gamma * np.eye(len(s)))))


@pytest.mark.parametrize("sampler", ["sgld", "sghmc", "sgnht"])
def test_minibatch_regular_model(sampler):
    """Regular model (λ = d/2) with minibatches: t·E[L] = t·tr(S(2tS+γI)⁻¹) ≈ d/2 at nβ = n/log n."""
    loss, w0, data = regression_task()
    result = slt.estimate_llc(loss, w0, data, step_size=1e-4, batch_size=100, num_chains=16,
                              num_draws=4000, num_burnin=500, sampler=sampler)
    assert_matches(result, regression_exact(data, result.nbeta, 1.0))


def test_same_seed_same_result_and_no_recompile():
    loss, w0, data = regression_task()
    kwargs = dict(step_size=1e-4, batch_size=64, num_chains=3, num_draws=200, seed=7)
    first = slt.estimate_llc(loss, w0, data, **kwargs)
    second = slt.estimate_llc(loss, w0, data, **kwargs)
    np.testing.assert_array_equal(first.loss_trace, second.loss_trace)
    assert second.timing["compile_seconds"] == 0.0  # the cached program was reused
    other = slt.estimate_llc(loss, w0, data, **{**kwargs, "seed": 8})
    assert not np.array_equal(first.loss_trace, other.loss_trace)
    # a new step size is a traced input: still no recompilation
    third = slt.estimate_llc(loss, w0, data, **{**kwargs, "step_size": 2e-4})
    assert third.timing["compile_seconds"] == 0.0


def test_result_contents_and_json():
    loss, w0, data = regression_task()
    result = slt.estimate_llc(loss, w0, data, step_size=1e-4, batch_size=64, num_chains=2, num_draws=50,
                              num_burnin=10)
    assert result.loss_trace.shape == (2, 50)
    assert result.llc_per_chain.shape == (2,)
    assert result.nbeta == pytest.approx(2000 / np.log(2000))
    assert result.init_loss == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(result.llc_per_chain, result.nbeta * (result.loss_trace.mean(1) - result.init_loss), rtol=1e-5)
    d = json.loads(json.dumps(result.to_dict()))
    assert d["config"]["step_size"] == 1e-4 and d["config"]["sampler"] == "sgld"
    assert {"ess", "rhat", "mcse", "acceptance_mean", "divergent_chains", "warnings"} <= set(d["diagnostics"])
    assert "λ̂" in result.summary()


def test_divergent_chain_is_reported_and_excluded():
    """Chain 1 gets a step far beyond stability: it is named, with its step, and left out of the mean."""
    loss = lambda w, batch: jnp.sum(w**4) + jnp.sum(w**2) + 0.0 * jnp.sum(batch)
    params = jnp.zeros(4)
    config = slt.LLCConfig(sampler="sgld", step_size=1e-3, nbeta=100.0, localization=1.0, num_chains=3,
                           num_draws=300, num_burnin=0, steps_between_draws=1, batch_size=1, num_examples=1, seed=0)
    run = run_chains(loss, params, DUMMY, Hyperparameters(jnp.array([1e-3, 5.0, 1e-3]), 100.0, 1.0),
                     config=RunConfig("sgld", 3, 300, 1))
    with pytest.warns(slt.SLTWarning, match="chain 1 diverged at step"):
        result = slt.llc.llc_from_run(run, 0.0, config, num_params=4)
    assert [d["chain"] for d in result.diagnostics["divergent_chains"]] == [1]
    assert 0 <= result.diagnostics["divergent_chains"][0]["step"] < 300
    assert "step_size=" in result.diagnostics["divergent_chains"][0]["suggestion"]
    assert np.isnan(result.llc_per_chain[1])
    assert np.isfinite(result.llc_mean)
    assert result.llc_mean == pytest.approx(np.mean(result.llc_per_chain[[0, 2]]))


def test_all_chains_diverge_gives_nan_not_a_number():
    loss = lambda w, batch: jnp.sum(w**4) + 0.0 * jnp.sum(batch)
    with pytest.warns(slt.SLTWarning, match="every chain diverged"):
        result = slt.estimate_llc(loss, jnp.ones(3), DUMMY, step_size=10.0, nbeta=100.0, num_chains=2,
                                  num_draws=50)
    assert np.isnan(result.llc_mean)
    assert len(result.diagnostics["divergent_chains"]) == 2


def test_negative_llc_warns_when_not_at_a_minimum():
    loss = lambda w, batch: jnp.sum((w - 1.0) ** 2) + 0.0 * jnp.sum(batch)
    with pytest.warns(slt.SLTWarning, match="not a local minimum"):
        result = slt.estimate_llc(loss, jnp.zeros(2), DUMMY, step_size=1e-3, nbeta=100.0, num_chains=2,
                                  num_draws=500, localization=0.0)
    assert result.llc_mean < 0


def test_drifting_trace_warns():
    """Localization 0 and a flat valley: the chain keeps drifting downhill; the halves differ."""
    loss = lambda w, batch: jnp.sum((w - 3.0) ** 2) + 0.0 * jnp.sum(batch)
    with pytest.warns(slt.SLTWarning, match="not levelled off"):
        slt.estimate_llc(loss, jnp.zeros(2), DUMMY, step_size=2e-5, nbeta=100.0, num_chains=2,
                         num_draws=400, localization=0.0)


def test_mala_acceptance_diagnostic():
    """Small steps are accepted almost always; a step at the stability limit is flagged."""
    loss = lambda w, batch: jnp.sum(w**2) + 0.0 * jnp.sum(batch)
    kwargs = dict(nbeta=100.0, num_chains=4, num_draws=500)
    small = slt.estimate_llc(loss, jnp.zeros(50), DUMMY, step_size=1e-4, **kwargs)
    assert small.diagnostics["acceptance_mean"] > 0.95
    with pytest.warns(slt.SLTWarning, match="MALA acceptance"):  # εa/2 = 1: each step forgets w entirely
        large = slt.estimate_llc(loss, jnp.zeros(50), DUMMY, step_size=1e-2, **kwargs)
    assert large.diagnostics["acceptance_mean"] < slt.diagnostics.ACCEPTANCE_LOW
    mala = slt.estimate_llc(loss, jnp.zeros(50), DUMMY, step_size=1e-2, sampler="mala", **kwargs)
    assert 0.0 < mala.diagnostics["acceptance_mean"] < 1.0


def test_pytree_params_match_flat_params():
    """A dict of arrays samples the same target as the flat vector: same exact value."""
    loss_flat, w0, data = regression_task()

    def loss_tree(p, batch):
        return loss_flat(jnp.concatenate([p["a"], p["b"]]), batch)

    params = {"a": w0[:1], "b": w0[1:]}
    result = slt.estimate_llc(loss_tree, params, data, step_size=1e-4, batch_size=100, num_chains=16,
                              num_draws=3000, num_burnin=300)
    assert_matches(result, regression_exact(data, result.nbeta, 1.0))


def test_a_chain_that_explodes_without_reaching_nan_is_divergent_not_a_number():
    """SGLD slightly above its stability limit on w²/2 (×1.1 per step): w² reaches ~1e25 in 300 steps, finite
    in float32. It used to be averaged in (λ̂ = 1e25); now every chain is named, with its step, and excluded."""
    loss = lambda w, batch: 0.5 * jnp.sum(w**2) + 0.0 * jnp.sum(batch)
    limit = 4 / (100.0 + 1.0)  # 4/(nβ·h + γ)
    with pytest.warns(slt.SLTWarning, match=r"chain 0 diverged at step \d+ \(the loss exploded"):
        result = slt.estimate_llc(loss, jnp.full(3, 0.1), DUMMY, step_size=1.05 * limit, nbeta=100.0,
                                  num_chains=2, num_draws=300)
    assert np.all(np.isfinite(result.loss_trace))  # never NaN: the old rule saw nothing
    assert np.isnan(result.llc_mean) and result.diagnostics["healthy_chains"] == 0
    steps = [d["step"] for d in result.diagnostics["divergent_chains"]]
    assert len(steps) == 2 and all(0 < s < 300 for s in steps)
    assert "every chain diverged" in " ".join(result.diagnostics["warnings"])
    # just below the limit the chains are healthy: the rule does not fire
    ok = slt.estimate_llc(loss, jnp.full(3, 0.1), DUMMY, step_size=0.9 * limit, nbeta=100.0, num_chains=2,
                          num_draws=300)
    assert ok.diagnostics["healthy_chains"] == 2 and np.isfinite(ok.llc_mean)


def test_too_few_draws_are_warned_about():
    loss = lambda w, batch: jnp.sum(w**2) + 0.0 * jnp.sum(batch)
    with pytest.warns(slt.SLTWarning, match=r"num_draws=1: ESS, R-hat and the standard error need at least 4"):
        result = slt.estimate_llc(loss, jnp.zeros(2), DUMMY, step_size=1e-3, nbeta=100.0, num_chains=2, num_draws=1)
    assert np.isnan(result.diagnostics["mcse"])
    with pytest.warns(slt.SLTWarning, match=r"num_draws=50: with fewer than 100 draws"):
        slt.estimate_llc(loss, jnp.zeros(2), DUMMY, step_size=1e-3, nbeta=100.0, num_chains=2, num_draws=50)


def test_wildly_disagreeing_healthy_chains_are_reported():
    from slt.diagnostics import chain_messages

    common = dict(failed=[], num_chains=4, rhat_value=1.0, acceptance=None, levelled=(True, 1.0, 1.0))
    assert not chain_messages(chain_means=np.array([10.0, 10.5, 9.8, 10.2]), **common)
    (message,) = chain_messages(chain_means=np.array([10.0, 10.5, 9.8, 80.0]), **common)
    assert "disagree wildly" in message and "80" in message
