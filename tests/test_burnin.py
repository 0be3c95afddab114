"""num_burnin="auto": burn in until the λ̂ trace levels off (slt.burnin)."""

import warnings

import jax.numpy as jnp
import numpy as np
import pytest

import slt
from slt.burnin import AutoBurnin, has_levelled, window_means
from tests.exact import quartic

Z_TOL = 4.0
DIM, T, CHAINS = 16, 1000.0, 32  # 16 quartic coordinates: t·E[Σ w⁴] → 16/4 as t → ∞
STEP = 1e-5  # posterior scale t^(-1/4) ≈ 0.18, so spreading out from w* = 0 takes ~0.18²/ε ≈ 3000 steps


def quartic_loss(w, batch):
    return jnp.sum(w**4) + 0.0 * jnp.sum(batch)


def estimate(num_burnin, **kw):
    return slt.estimate_llc(quartic_loss, jnp.zeros(DIM), jnp.zeros((1, 1)), step_size=STEP, nbeta=T,
                            num_chains=CHAINS, num_draws=2000, num_burnin=num_burnin, seed=0, **kw)


def standard_error(r):
    return max(r.diagnostics["mcse"], r.llc_std / np.sqrt(CHAINS))


def test_window_rule_on_synthetic_traces():
    rng = np.random.default_rng(0)
    flat = 10.0 + rng.normal(size=(4, 4000))
    rising = flat + np.linspace(0.0, 5.0, 4000)  # +1.25 between the two quarter-windows, noise se ≈ 0.02
    rule = AutoBurnin(rel=0.01, z=1.0)
    assert has_levelled(flat, rule)[0]
    ok, m1, m2 = has_levelled(rising, rule)
    assert not ok and m2 - m1 == pytest.approx(1.25, abs=0.1)
    # a diverged chain is left out, not averaged in
    broken = flat.copy()
    broken[0, 3000] = np.nan
    assert np.isfinite(window_means(broken)[0]) and has_levelled(broken, rule)[0]


def test_auto_burnin_reaches_the_exact_value_where_a_short_burnin_does_not():
    exact = DIM * quartic(T)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", slt.SLTWarning)
        auto, cold = estimate("auto"), estimate(0)
    assert abs(auto.llc_mean - exact) <= Z_TOL * standard_error(auto), (auto.llc_mean, exact, standard_error(auto))
    # without burn-in the draws still carry the climb from w*: the test above could fail
    assert exact - cold.llc_mean > Z_TOL * standard_error(cold)
    assert auto.config.num_burnin == auto.diagnostics["burnin"]["steps"] >= 2000
    assert auto.diagnostics["burnin"]["levelled"]
    assert auto.loss_trace.shape == (CHAINS, 2000)


def test_auto_burnin_is_deterministic_and_continues_the_chains_exactly():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", slt.SLTWarning)
        a = estimate(AutoBurnin(chunk=500, min_steps=1000, max_steps=1000))
        b = estimate(AutoBurnin(chunk=500, min_steps=1000, max_steps=1000))
        fixed = estimate(1000)
    np.testing.assert_array_equal(a.loss_trace, b.loss_trace)
    # two chunks of 500 then the draws are the same chain as one 1000-step burn-in program
    np.testing.assert_allclose(a.loss_trace, fixed.loss_trace, rtol=1e-6)


def test_cap_reached_is_reported():
    with pytest.warns(slt.SLTWarning, match="stopped at its cap of 300 steps"):
        r = estimate(AutoBurnin(chunk=100, max_steps=300, rel=1e-6, z=0.0))
    assert r.config.num_burnin == 300 and not r.diagnostics["burnin"]["levelled"]
    assert any("cap" in w for w in r.diagnostics["warnings"])


def test_bad_num_burnin_is_refused_before_sampling():
    with pytest.raises(slt.SLTInputError, match="num_burnin"):
        estimate("sometimes")


def test_burnin_halves_a_calibrated_step_whose_acceptance_drops_after_w_star():
    """The calibration measures acceptance near w*; where the chains settle it can be lower (stubbed here)."""
    from slt.burnin import burn_in
    from slt.sampling import ChainState, SamplingResult

    calls = []

    def run_chunk(state, steps, step):
        calls.append(step)
        acceptance = np.full((2, 5), 0.95 if step <= 0.25 else 0.4)  # healthy only from ε ≤ 0.25
        final = ChainState(None, np.full(2, -1), (state.step if state else 0) + steps, None, "threefry2x32")
        flat = np.ones((2, steps)) + 0.001 * np.random.default_rng(len(calls)).normal(size=(2, steps))
        return SamplingResult(flat, acceptance, np.arange(5), np.full(2, -1), 0.0, 0.0, final_state=final)

    rule = AutoBurnin(chunk=100, min_steps=400, max_steps=5000).resolved(100)
    burn = burn_in(run_chunk, lambda losses: losses, rule, step_size=1.0, adapt_step=True)
    assert burn.step_size == 0.25 and calls[:3] == [1.0, 0.5, 0.25]
    assert [c["to"] for c in burn.step_changes] == [0.5, 0.25]
    # the levelling windows start again after the last change: 4 more chunks at the final step
    assert burn.levelled and burn.steps == 2 * 100 + 400
    # a step the user gave is never changed
    fixed = burn_in(run_chunk, lambda losses: losses, rule, step_size=1.0, adapt_step=False)
    assert fixed.step_size == 1.0 and not fixed.step_changes


@pytest.mark.parametrize("bad", [dict(chunk=0), dict(max_steps=-5), dict(rel=-0.1), dict(z=float("nan"))])
def test_bad_auto_burnin_settings_are_refused(bad):
    with pytest.raises(slt.SLTInputError, match="AutoBurnin"):
        AutoBurnin(**bad)
