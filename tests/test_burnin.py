"""num_burnin="auto": burn in until the λ̂ trace levels off (slt.burnin)."""

import json
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
    rising = flat + np.linspace(0.0, 5.0, 4000)  # windows (T/4, 5T/8], (5T/8, T]: +1.875 apart, noise se ≈ 0.013
    rule = AutoBurnin(rel=0.01, z=2.0)
    assert has_levelled(flat, rule)[0]
    ok, m1, m2 = has_levelled(rising, rule)
    assert not ok and m2 - m1 == pytest.approx(1.875, abs=0.1)
    # a diverged chain is left out, not averaged in
    broken = flat.copy()
    broken[0, 3000] = np.nan
    assert np.isfinite(window_means(broken)[0]) and has_levelled(broken, rule)[0]


def test_window_rule_stops_a_diffusive_rise_with_little_of_it_left():
    """λ̂(t) = 100 - 40/√(1 + t/100), the slow rise of chains spreading along singular directions.

    The windows see about 2/5 of the rise still to come, so the default 1% stops with about 2.5% left
    (adjacent quarter-windows see 1/5 and stop with 5% left).
    """
    steps = np.arange(1, 400_001)
    curve = 100 - 40 / np.sqrt(1 + steps / 100)
    trace = curve + 0.01 * np.random.default_rng(1).normal(size=(4, steps.size))
    stop = next(T for T in range(2000, steps.size + 1, 2000) if has_levelled(trace[:, :T], AutoBurnin())[0])
    assert 1.5 < 100 - curve[stop - 1] < 3.0, (stop, 100 - curve[stop - 1])


@pytest.mark.slow
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


def chunk_result(state, steps: int, trace, acceptance, *, sampler_state=None, divergent=None):
    """The SamplingResult a stubbed run_chunk returns: ``steps`` more steps from ``state`` (None: the start)."""
    from slt.sampling import ChainState, SamplingResult

    divergent = np.full(2, -1) if divergent is None else divergent
    final = ChainState(sampler_state, divergent, (state.step if state else 0) + steps, None, "threefry2x32")
    return SamplingResult(trace, acceptance, np.arange(5), divergent, 0.0, 0.0, final_state=final)


def test_burnin_halves_a_calibrated_step_whose_acceptance_drops_after_w_star():
    """The calibration measures acceptance near w*; where the chains settle it can be lower (stubbed here)."""
    from slt.burnin import burn_in

    calls = []

    def run_chunk(state, steps, step):
        calls.append(step)
        acceptance = np.full((2, 5), 0.8 if step <= 0.25 else 0.4)  # ≥ 0.7 (no longer unstable) from ε ≤ 0.25
        flat = np.ones((2, steps)) + 0.001 * np.random.default_rng(len(calls)).normal(size=(2, steps))
        return chunk_result(state, steps, flat, acceptance)

    rule = AutoBurnin(chunk=100, min_steps=400, max_steps=5000).resolved(100)
    burn = burn_in(run_chunk, lambda losses: losses, rule, step_size=1.0, adapt_step=True)
    # each halving runs the next chunk at ε and at ε/2 from one state (the level shift D, 0 here) and goes on
    # from the ε/2 run
    assert burn.step_size == 0.25 and calls[:6] == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    assert [c["to"] for c in burn.step_changes] == [0.5, 0.25]
    assert [c["reason"] for c in burn.step_changes] == ["acceptance", "acceptance"]
    assert [c["difference"] for c in burn.step_changes] == pytest.approx([0.0, 0.0], abs=1e-3)
    # the windows are read once the minimum burn-in has run at the final step, then the bias check's chunk
    # (its trace is flat at every step here, so the step stays)
    assert burn.levelled and burn.steps == 4 * 100 + 300 + 100
    assert calls[-2:] == [0.25, 0.125] and [c["biased"] for c in burn.bias_checks] == [False]
    # a step the user gave is never changed
    fixed = burn_in(run_chunk, lambda losses: losses, rule, step_size=1.0, adapt_step=False)
    assert fixed.step_size == 1.0 and not fixed.step_changes


def stub_chunk_with_bias(bias_per_step: float, calls: list, *, chain_noise: float = 0.0, diverge_above: float = np.inf):
    """A run_chunk whose λ̂ trace sits at 1 + bias_per_step·ε (SGLD's O(ε) bias), flat in time.

    Its state records the step of the run that made it (``sampler_state``); ``calls`` gets (ε, the state's ε).
    ``chain_noise``: per-chain offsets ±chain_noise whose sign flips from call to call. Chain 0 diverges in runs with ε > ``diverge_above``.
    """

    def run_chunk(state, steps, step):
        calls.append((step, state.sampler_state if state else None))
        divergent = np.array([0 if step > diverge_above else -1, -1])
        rng = np.random.default_rng(len(calls))
        offsets = chain_noise * np.array([[1.0], [-1.0]]) * (-1) ** len(calls)  # flips between the coupled runs
        trace = 1.0 + bias_per_step * step + offsets + 1e-4 * rng.normal(size=(2, steps))
        return chunk_result(state, steps, trace, np.full((2, 5), 1.0), sampler_state=step, divergent=divergent)

    return run_chunk


RULE = AutoBurnin(chunk=100, min_steps=400, max_steps=10_000).resolved(100)


def test_burnin_halves_a_calibrated_step_while_its_bias_shows_where_the_chains_are():
    """λ̂(ε) = 1 + 0.15ε: D = λ̂(ε) - λ̂(ε/2) is 7%, 3.6%, 1.8% of λ̂ at ε = 1, 0.5, 0.25; the tolerance is 2.5%."""
    from slt.burnin import burn_in

    calls: list = []
    burn = burn_in(stub_chunk_with_bias(0.15, calls), lambda losses: losses, RULE, step_size=1.0, adapt_step=True)
    assert burn.step_size == 0.25 and burn.levelled
    assert [c["biased"] for c in burn.bias_checks] == [True, True, False]
    assert [c["difference"] for c in burn.bias_checks] == pytest.approx([0.075, 0.0375, 0.01875], abs=1e-4)
    assert [(c["reason"], c["to"]) for c in burn.step_changes] == [("bias", 0.5), ("bias", 0.25)]
    # each check runs its chunk at ε and at ε/2 from the same state; after a biased check the chains go on
    # from the ε/2 run's state and the windows restart with its chunk
    steps = [step for step, _ in calls]
    assert steps == [1.0] * 4 + [1.0, 0.5] + [0.5] * 3 + [0.5, 0.25] + [0.25] * 3 + [0.25, 0.125]
    assert calls[5] == (0.5, 1.0) and calls[6] == (0.5, 0.5) and calls[10] == (0.25, 0.5) and calls[11] == (0.25, 0.25)
    # the passing check keeps the ε run: its state, its trace, and steps that match both
    assert burn.state.sampler_state == 0.25 and burn.state.step == burn.steps == burn.loss_trace.shape[1]
    assert burn.steps == 4 * 100 + 2 * (100 + 3 * 100) + 100
    assert burn.loss_trace[:, 400:500].mean() == pytest.approx(1 + 0.15 * 0.5, abs=1e-3)
    assert burn.loss_trace[:, -1].mean() == pytest.approx(1 + 0.15 * 0.25, abs=1e-3)
    assert json.loads(json.dumps(burn.to_dict()))["bias_checks"][0]["biased"] is True
    # turned off, or for a step the user gave, the step stays
    off = AutoBurnin(chunk=100, min_steps=400, max_steps=10_000, max_halvings=0).resolved(100)
    for rule, adapt in ((RULE, False), (off, True)):
        kept = burn_in(stub_chunk_with_bias(0.15, []), lambda losses: losses, rule, step_size=1.0, adapt_step=adapt)
        assert kept.step_size == 1.0 and not kept.bias_checks


def test_bias_check_needs_the_difference_beyond_noise_and_halves_on_divergence():
    from slt.burnin import burn_in

    # D = 7% of λ̂, but the per-chain differences are 0.075 ± 0.1 (se 0.1): not resolved, so the step stays
    noisy = burn_in(stub_chunk_with_bias(0.15, [], chain_noise=0.05), lambda losses: losses, RULE, step_size=1.0,
                    adapt_step=True)
    assert noisy.step_size == 1.0 and not noisy.bias_checks[0]["biased"]
    assert noisy.bias_checks[0]["difference"] < RULE.halving_z * noisy.bias_checks[0]["se"]
    # no bias, but ε loses a chain that ε/2 keeps: halve
    calls: list = []
    burn = burn_in(stub_chunk_with_bias(0.0, calls, diverge_above=0.5), lambda losses: losses, RULE, step_size=1.0,
                   adapt_step=True)
    assert burn.step_size == 0.5 and burn.bias_checks[0]["healthy_chains"] == [1, 2]
    # no room for a check under the cap: recorded, not run
    tight = AutoBurnin(chunk=100, min_steps=400, max_steps=400).resolved(100)
    capped = burn_in(stub_chunk_with_bias(0.15, []), lambda losses: losses, tight, step_size=1.0, adapt_step=True)
    assert capped.steps == 400 and capped.bias_checks == [{"step": 400, "step_size": 1.0,
                                                            "skipped": "no room for a check under max_steps"}]


def test_an_unchecked_calibrated_step_is_warned_about():
    from slt.burnin import burn_in, burnin_warnings

    # D is 7% of λ̂ at ε = 1 and 3.6% at ε = 0.5: one halving allowed, so ε = 0.5 is drawn from unchecked
    one = AutoBurnin(chunk=100, min_steps=400, max_steps=10_000, max_halvings=1).resolved(100)
    burn = burn_in(stub_chunk_with_bias(0.15, []), lambda losses: losses, one, step_size=1.0, adapt_step=True)
    assert burn.step_size == 0.5 and burn.bias_checks[-1]["skipped"] == "max_halvings reached"
    [message] = burnin_warnings(burn)
    assert "halved the calibrated step 1 time," in message and "step_size=0.25" in message
    # levelled with no room left under the cap for the check
    tight = AutoBurnin(chunk=100, min_steps=400, max_steps=400).resolved(100)
    capped = burn_in(stub_chunk_with_bias(0.15, []), lambda losses: losses, tight, step_size=1.0, adapt_step=True)
    [message] = burnin_warnings(capped)
    assert "levelled off at 400 steps, too close to the burn-in cap" in message and "step_size=0.5" in message
    # checked and passed, or a step the user gave: nothing to say
    assert burnin_warnings(burn_in(stub_chunk_with_bias(0.15, []), lambda losses: losses, RULE, step_size=1.0,
                                   adapt_step=True)) == []
    assert burnin_warnings(burn_in(stub_chunk_with_bias(0.15, []), lambda losses: losses, one, step_size=1.0)) == []


def stub_in_langevin_time(level, guard_at):
    """A run_chunk whose λ̂ trace is ``level(τ, ε)`` at Langevin time τ = Σε (its state carries τ).

    The acceptance is 0.4 in the chunk that ends at step ``guard_at`` (the guard halves the step there), 0.9 elsewhere.
    """

    def run_chunk(state, steps, step):
        start = state.step if state else 0
        tau = (state.sampler_state if state else 0.0) + step * np.arange(1, steps + 1)
        acceptance = np.full((2, 5), 0.4 if start + steps == guard_at else 0.9)
        trace = np.broadcast_to(level(tau, step), (2, steps)).copy()
        return chunk_result(state, steps, trace, acceptance, sampler_state=tau[-1])

    return run_chunk


def test_after_a_halving_in_the_climb_the_windows_keep_the_whole_climb_in_langevin_time():
    """λ̂ = 100 - 40/√(1 + τ/100) + 4ε, a diffusive climb in Langevin time τ = Σε plus an O(ε) bias.

    The acceptance drops once, at step 8000, and the guard halves ε = 1 to 0.5. The windows go on over the
    whole run in τ, the segment before the change shifted down by the measured level shift D = λ̂(ε) - λ̂(ε/2)
    (2 here), so the burn-in stops with as much of the climb left as at an unchanged step (2.3). Windows in
    steps instead of τ stop with 3.6 left; without the shift, 4.0; restarted at the change (the rule before), 4.0.
    """
    from slt.burnin import burn_in

    def curve(tau):
        return 100 - 40 / np.sqrt(1 + tau / 100)

    def level(tau, step):
        return curve(tau) + 4 * step

    rule = AutoBurnin(chunk=100, min_steps=400, max_steps=200_000).resolved(100)
    unchanged = burn_in(stub_in_langevin_time(level, None), lambda losses: losses, rule, step_size=1.0, adapt_step=True)
    burn = burn_in(stub_in_langevin_time(level, 8000), lambda losses: losses, rule, step_size=1.0, adapt_step=True)
    [change] = burn.step_changes
    assert (change["reason"], change["step"], change["to"], change["biased"]) == ("acceptance", 8000, 0.5, False)
    assert change["difference"] == pytest.approx(2.0, abs=0.05)  # 2 of bias, and a little of the climb
    assert not unchanged.step_changes and unchanged.levelled and burn.levelled and burn.step_size == 0.5
    left, left_unchanged = (100 - curve(b.state.sampler_state) for b in (burn, unchanged))
    assert 1.5 < left_unchanged < 3.0  # as in the synthetic test above
    assert left == pytest.approx(left_unchanged, abs=0.2), (burn.steps, left, left_unchanged)
    assert burn.bias_checks[-1]["levelled"] and not burn.bias_checks[-1]["biased"]


def test_a_level_shift_the_bias_check_calls_biased_restarts_the_windows():
    """λ̂ = 100 - 40·e^(-τ/200) + 8ε·min(τ, 2000)/2000: a fast climb, then a bias that grows as the chains spread.

    The guard halves ε = 1 at step 2000, where D = λ̂(ε) - λ̂(ε/2) = 4 (4%: biased). The trace before the
    change carried less bias than that, so taking D out would fake a rise (windows 103 → 104) that holds the
    burn-in to 6900 steps; restarted windows see the flat trace at the new step and level once they span
    half the run (1000 steps), and the check there passes (D = 2%).
    """
    from slt.burnin import burn_in

    def level(tau, step):
        return 100 - 40 * np.exp(-tau / 200) + 8 * step * np.minimum(tau, 2000) / 2000

    burn = burn_in(stub_in_langevin_time(level, 2000), lambda losses: losses, RULE, step_size=1.0, adapt_step=True)
    [guard] = burn.step_changes
    assert guard["difference"] == pytest.approx(4.0, abs=0.01) and guard["biased"]
    assert burn.levelled and burn.steps == 2000 + 100 + 900 + 100  # the guard's chunk, the windows, the check
    assert burn.window_means == pytest.approx((104.0, 104.0), abs=0.01)
    assert [(c["step"], c["biased"]) for c in burn.bias_checks] == [(3000, False)]


def test_a_step_whose_bias_grows_as_the_chains_spread_is_halved_before_the_level():
    """λ̂ = 1 + 1e-3·ε·s with a spread s that grows by ε a step: the bias grows as the chains spread out.

    The acceptance at ε = 1 drops below 0.7 once s ≥ 600 and the guard halves the step. At ε = 0.5 λ̂ still
    rises 2.5e-4 a step and never levels off: a bias check that waited for the level would never run (the
    cap, λ̂ = 3.7). Checked during the climb after the guard fired, at the first reading of the windows and
    each time the run has doubled, the step is halved until D = λ̂(ε) - λ̂(ε/2) is within 2.5%. The guard's own
    level shift is biased (24% of λ̂, grown with the spread), so the windows restart instead of taking it out.
    """
    from slt.burnin import burn_in

    def run_chunk(state, steps, step):
        spread = (state.sampler_state if state else 0.0) + step * np.arange(steps)
        trace = np.broadcast_to(1 + 1e-3 * step * spread, (2, steps)).copy()
        acceptance = np.full((2, 5), 0.4 if step == 1.0 and spread[-1] >= 600 else 0.9)
        return chunk_result(state, steps, trace, acceptance, sampler_state=spread[-1] + step)

    burn = burn_in(run_chunk, lambda losses: losses, RULE, step_size=1.0, adapt_step=True)
    guard = burn.step_changes[0]
    assert (guard["reason"], guard["step"], guard["biased"]) == ("acceptance", 700, True)
    climb = [c for c in burn.bias_checks if not c["levelled"]]
    # the first reading of the windows: half the run at the change (350 steps) is less than the minimum burn-in
    assert climb and climb[0]["step"] == 700 + 400 and climb[0]["biased"]
    assert burn.levelled and burn.steps < RULE.max_steps
    assert burn.bias_checks[-1]["levelled"] and not burn.bias_checks[-1]["biased"]
    assert burn.loss_trace[:, -1].mean() < 1.1


def test_halving_difference_with_one_chain_and_a_diverged_one():
    from slt.burnin import halving_difference

    rng = np.random.default_rng(0)
    a, b = 2.0 + 0.1 * rng.normal(size=(1, 400)), 1.0 + 0.1 * rng.normal(size=(1, 400))
    d, se, level = halving_difference(a, b)
    assert d == pytest.approx(1.0, abs=0.05) and 0 < se < 0.05 and level == pytest.approx(1.0, abs=0.05)
    a2, b2 = np.vstack([a, a]), np.vstack([b, b])
    a2[1, 300] = np.nan  # a diverged chain is left out, not averaged in
    assert halving_difference(a2, b2)[0] == pytest.approx(d)


def test_bias_check_on_real_chains_stops_where_the_exact_sgld_bias_is_small():
    """SGLD on U = t·Σw² + ½‖w‖² (20 coordinates) has the exact stationary law for every ε (tests/exact.py).

    From ε = 0.012 (λ̂ +152%) the coupled checks halve to 7.5e-4, the first step whose exact
    D = λ̂(ε) - λ̂(ε/2) is below 2.5% of λ̂ (1.9%; 4.1% at 1.5e-3), and the draws that continue from the
    kept chains match the exact law at that step.
    """
    from dataclasses import replace as dc_replace

    from slt.burnin import burn_in
    from slt.posterior import Hyperparameters
    from slt.sampling import RunConfig, run_chains
    from tests.exact import quadratic

    t, d, chains = 100.0, 20, 32
    c = np.ones(d)
    loss = lambda w, batch: jnp.sum(w**2) + 0.0 * jnp.sum(batch)
    data = jnp.zeros((1, 1))
    config = RunConfig(sampler="sgld", num_chains=chains, num_steps=400, batch_size=1)

    def run_chunk(state, steps, step):
        return run_chains(loss, jnp.zeros(d), data, Hyperparameters(step, t, 1.0), config=dc_replace(config, num_steps=steps),
                          seed=0, init_state=state, return_state=True)

    def exact_d(eps):
        return quadratic(t, c, sgld_step=eps) - quadratic(t, c, sgld_step=eps / 2)

    rule = AutoBurnin(chunk=400, min_steps=1600, max_steps=40_000).resolved(400)
    burn = burn_in(run_chunk, lambda losses: t * losses, rule, step_size=0.012, adapt_step=True)
    assert burn.step_size == pytest.approx(0.012 / 16)
    assert exact_d(burn.step_size) < 0.025 * quadratic(t, c, sgld_step=burn.step_size / 2) < exact_d(2 * burn.step_size)
    for check in burn.bias_checks:  # each coupled difference matches the exact one
        assert check["difference"] == pytest.approx(exact_d(check["step_size"]), abs=Z_TOL * check["se"])
    draws = run_chains(loss, jnp.zeros(d), data, Hyperparameters(burn.step_size, t, 1.0),
                       config=dc_replace(config, num_steps=4000), init_state=burn.state)
    per_chain = t * draws.loss_trace.mean(axis=1)
    se = per_chain.std(ddof=1) / np.sqrt(chains)
    assert abs(per_chain.mean() - quadratic(t, c, sgld_step=burn.step_size)) <= Z_TOL * se


@pytest.mark.parametrize("bad", [dict(chunk=0), dict(max_steps=-5), dict(rel=-0.1), dict(z=float("nan")),
                                 dict(halving_rel=-1.0), dict(max_halvings=-1), dict(max_halvings=1.5)])
def test_bad_auto_burnin_settings_are_refused(bad):
    with pytest.raises(slt.SLTInputError, match="AutoBurnin"):
        AutoBurnin(**bad)


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["sgld", "sghmc"])
def test_auto_step_gets_the_bias_check_for_every_sampler(sampler):
    """estimate_llc(step_size="auto") bias-checks the calibrated step; a step the user gives is left alone."""
    loss = lambda w, batch: jnp.sum(w**2) + 0.0 * jnp.sum(batch)
    kwargs = dict(nbeta=100.0, num_chains=8, num_draws=400, sampler=sampler, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", slt.SLTWarning)
        auto = slt.estimate_llc(loss, jnp.zeros(10), jnp.zeros((1, 1)), step_size="auto", **kwargs)
        given = slt.estimate_llc(loss, jnp.zeros(10), jnp.zeros((1, 1)), step_size=1e-3, num_burnin="auto", **kwargs)
    checks = auto.diagnostics["burnin"]["bias_checks"]
    assert checks and checks[-1]["step_size"] == auto.config.step_size and not checks[-1]["biased"]
    assert given.diagnostics["burnin"]["bias_checks"] == [] and given.config.step_size == 1e-3
