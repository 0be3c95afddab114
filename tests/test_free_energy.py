"""Free energy (TI, WBIC) against the conjugate Gaussian linear model, where everything is exact.

y = Xw + N(0, σ²), prior N(μ, I/α), NLL per example (y - x·w)²/(2σ²) + log(2πσ²)/2
(REFERENCE §7). Every tempered posterior is N(m_β, S_β), S_β⁻¹ = αI + βXᵀX/σ²,
m_β = S_β·(αμ + βXᵀy/σ²), E_β[nL_n] = nL_n(m_β) + tr(XᵀX·S_β)/(2σ²), and
F_n = min_w [nL_n(w) + α/2‖w - μ‖²] + ½·log det(S_1⁻¹/α).
"""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from slt.fit import fit_learning_coefficient
from slt.free_energy import (
    FreeEnergyResult,
    free_energy,
    free_energy_trajectory,
    geometric_ladder,
    integrate_ladder,
)
from slt.validation import SLTInputError
from tests.exact import normal_crossing_w1sq_w2sq

D, N, ALPHA, SIGMA = 5, 1000, 1.0, 1.0
Z_TOL = 3.0


class GaussianLinear:
    def __init__(self, d=D, n=N, alpha=ALPHA, sigma=SIGMA, seed=0):
        rng = np.random.default_rng(seed)
        self.d, self.n, self.alpha, self.sigma = d, n, alpha, sigma
        self.X = rng.normal(size=(n, d))
        self.y = self.X @ np.ones(d) + sigma * rng.normal(size=n)
        self.XtX, self.Xty = self.X.T @ self.X, self.X.T @ self.y
        self.data = (jnp.asarray(self.X, jnp.float32), jnp.asarray(self.y, jnp.float32))

    def nL(self, w):
        r = self.y - self.X @ w
        return r @ r / (2 * self.sigma**2) + self.n * 0.5 * math.log(2 * math.pi * self.sigma**2)

    def posterior(self, beta, mu):
        prec = self.alpha * np.eye(self.d) + beta * self.XtX / self.sigma**2
        cov = np.linalg.inv(prec)
        return cov @ (self.alpha * mu + beta * self.Xty / self.sigma**2), cov, prec

    def expectation(self, beta, mu=None):
        mu = np.zeros(self.d) if mu is None else np.asarray(mu, np.float64)
        m, cov, _ = self.posterior(beta, mu)
        return self.nL(m) + np.trace(self.XtX @ cov) / (2 * self.sigma**2)

    def free_energy(self, mu=None):
        mu = np.zeros(self.d) if mu is None else np.asarray(mu, np.float64)
        m, _, prec = self.posterior(1.0, mu)
        return self.nL(m) + self.alpha / 2 * np.sum((m - mu) ** 2) + 0.5 * np.linalg.slogdet(prec / self.alpha)[1]

    @property
    def mle(self):
        return np.linalg.solve(self.XtX, self.Xty)


MODEL = GaussianLinear()


def nll(w, batch):
    x, y = batch
    return jnp.mean((y - x @ w) ** 2) / (2 * SIGMA**2) + 0.5 * jnp.log(2 * jnp.pi * SIGMA**2)


def log_prior(w):
    return -0.5 * ALPHA * jnp.sum(w**2) + 0.5 * D * jnp.log(ALPHA / (2 * jnp.pi))


# MALA step at the reference nβ = n/log n: ε·(largest precision) ≈ 1 there (acceptance ≈ 0.85)
STEP = 1.0 / (1.2 * N / math.log(N) + ALPHA)
COMMON = dict(step_size=STEP, sampler="mala", num_chains=4)


@pytest.fixture(scope="module")
def ti_result():
    return free_energy(nll, jnp.asarray(MODEL.mle, jnp.float32), MODEL.data, log_prior=log_prior,
                       num_draws=600, num_burnin=200, seed=1, **COMMON)


@pytest.mark.slow
def test_ti_matches_exact_free_energy(ti_result):
    r = ti_result
    exact = MODEL.free_energy()
    assert r.stderr < 0.25  # small enough for the test to be able to fail
    assert abs(r.value - exact) <= Z_TOL * r.stderr, f"TI {r.value:.3f} vs exact {exact:.3f} (± {r.stderr:.3f})"
    assert abs(r.value - exact) <= 0.5
    # per-β expectations agree with the closed form: mean squared z-score ~ 1
    z = (r.expectations - np.array([MODEL.expectation(b) for b in r.betas])) / r.expectation_stderr
    assert np.mean(z**2) < 3.0, np.round(z, 1)
    assert r.discretisation_error < 0.05
    assert not r.diagnostics["warnings"]


def test_ti_result_contents(ti_result):
    r = ti_result
    assert isinstance(r, FreeEnergyResult) and r.method == "ti" and r.prior["kind"] == "user"
    assert r.betas[-1] == pytest.approx(1.0) and np.all(np.diff(r.betas) > 0)
    assert r.betas[0] * N == pytest.approx(1e-3)
    assert r.loss_trace.shape == (33, 4, 600)
    # value = Σ weights·E + tail term: the weights carry the error propagation
    w = np.asarray(r.diagnostics["weights"])
    assert w @ r.expectations + r.diagnostics["tail_correction"] == pytest.approx(r.value, abs=1e-6)
    assert r.sampling_stderr == pytest.approx(np.sqrt(np.sum((w * r.expectation_stderr) ** 2)))
    d = json.loads(json.dumps(r.to_dict()))
    assert d["value"] == pytest.approx(r.value) and len(d["expectations"]) == 33
    assert "F =" in r.summary()
    # at large t, β·(E_β - nL(MLE)) is the LLC: d/2 for this regular model
    fit = fit_learning_coefficient(r, min_nbeta=30)
    assert abs(fit.lam - D / 2) < max(3 * fit.lam_stderr, 0.3), fit


def test_wbic_local_and_checkpoints_reuse_program():
    # local free energy: prior N(params, I/γ), at two checkpoints with one compiled program
    centres = {"origin": np.zeros(D), "mle": MODEL.mle}
    traj = free_energy_trajectory(
        nll, {k: jnp.asarray(v, jnp.float32) for k, v in centres.items()}, MODEL.data, method="wbic",
        localization=ALPHA, num_draws=1500, num_burnin=200, seed=3, **COMMON,
    )
    assert traj.labels == ["origin", "mle"]
    assert traj.results[1].timing["compile_seconds"] == 0.0
    beta = 1 / math.log(N)
    for (label, mu), r in zip(centres.items(), traj.results):
        exact = MODEL.expectation(beta, mu)
        assert r.prior["kind"] == "localization" and r.betas == pytest.approx([beta])
        assert r.stderr < 0.5
        assert abs(r.value - exact) <= 4 * r.stderr, f"{label}: WBIC {r.value:.3f} vs exact {exact:.3f} ± {r.stderr:.3f}"
    # WBIC is not F at finite n: with the prior N(0, I/α), WBIC - F ≈ -α‖w0‖²/2 = -2.5 (REFERENCE §7)
    wbic, se = traj.results[0].value, traj.results[0].stderr
    assert wbic - MODEL.free_energy() < -2.0 + 4 * se
    assert json.loads(json.dumps(traj.to_dict()))["labels"] == ["origin", "mle"]


def test_quadrature_on_exact_curves():
    for d, n in [(2, 100), (5, 1000), (10, 10_000)]:
        model = GaussianLinear(d=d, n=n, seed=2)
        betas = geometric_ladder(n)
        e = np.array([model.expectation(b) for b in betas])
        q = integrate_ladder(betas, e, np.zeros_like(e))
        err = abs(q["value"] - model.free_energy())
        assert err < 0.01, (d, n, err)
        assert q["discretisation_error"] < 0.05
        # a coarse ladder is worse, and its Richardson estimate sees it
        coarse = geometric_ladder(n, 9)
        qc = integrate_ladder(coarse, np.array([model.expectation(b) for b in coarse]), np.zeros(9))
        assert abs(qc["value"] - model.free_energy()) > err
        assert qc["discretisation_error"] > 0.2 * abs(qc["value"] - model.free_energy())
        # the trapezoid rule converges too, more slowly
        qt = integrate_ladder(betas, e, np.zeros_like(e), rule="trapezoid")
        assert err < abs(qt["value"] - model.free_energy()) < 0.2


def test_fit_recovers_lambda_and_m_on_synthetic_curves():
    t = np.geomspace(10, 1e4, 13)
    rng = np.random.default_rng(0)
    for lam, m, c in [(0.75, 3, 3.0), (2.0, 2, 1.0), (1.5, 1, 2.0)]:
        se = np.full(t.size, 0.005)
        y = lam - (m - 1) / (np.log(t) + c) + se * rng.normal(size=t.size)
        fit = fit_learning_coefficient(t, y, se)
        assert abs(fit.lam - lam) <= 3 * fit.lam_stderr + 1e-3, fit
        assert abs(fit.multiplicity - m) <= 3 * fit.multiplicity_stderr + 1e-2, fit
        assert fit.lam_stderr < 0.1
        fixed = fit_learning_coefficient(t, y, se, multiplicity=m)
        assert abs(fixed.lam - lam) <= 3 * fixed.lam_stderr + 1e-3 and fixed.lam_stderr < fit.lam_stderr
        assert fixed.predict(t) == pytest.approx(y, abs=5 * 0.005)
    assert json.loads(json.dumps(fit.to_dict()))["lam"] == pytest.approx(fit.lam)


def test_fit_on_exact_normal_crossing_beats_plain_llc():
    # K = w1²w2², N(0, I) prior: λ = 1/2, m = 2; exact t·E_t[K] by quadrature (REFERENCE §1)
    t = np.geomspace(10, 1e4, 13)
    y = np.array([normal_crossing_w1sq_w2sq(x) for x in t])
    fit = fit_learning_coefficient(t, y)
    assert fit.plain_llc < 0.42  # the LLC at t = 1e4 is biased low by m > 1
    assert abs(fit.lam - 0.5) < 0.03 and abs(fit.multiplicity - 2) < 0.5, fit
    fixed = fit_learning_coefficient(t, y, multiplicity=2)
    assert abs(fixed.lam - 0.5) < 0.01, fixed


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="bic"), "method"),
        (dict(rule="midpoint"), "rule"),
        (dict(num_betas=10), "num_betas = 4j"),
        (dict(num_betas=2), "num_betas"),
        (dict(nbeta_min=0.0), "nbeta_min"),
        (dict(nbeta_min=5000.0), "nbeta_min"),
        (dict(betas=[0.1, 0.5, 0.9], rule="trapezoid"), "end at β = 1"),
        (dict(betas=[0.5, 0.1, 1.0], rule="trapezoid"), "increasing"),
        (dict(betas=[0.0, 0.5, 1.0], rule="trapezoid"), "> 0"),
        (dict(betas=[0.01, 0.3, 0.5, 0.7, 1.0]), "simpson"),
        (dict(method="wbic", betas=[0.1, 0.5, 1.0]), "betas is for"),
        (dict(log_prior="gaussian"), "log_prior must be"),
        (dict(log_prior=lambda w: w), "scalar"),
        (dict(log_prior=lambda w: jnp.log(jnp.sum(w) * 0.0)), "support"),
        (dict(localization=0.0), "proper"),
        (dict(log_prior=lambda w: 0.0 * jnp.sum(w)), "log_prior does not decay away from params"),
        (dict(step_size="small"), 'one per β, or "auto"'),
        (dict(step_size=[1e-3, 1e-3]), "one per β"),
        (dict(step_size=-1.0), "step_size"),
        (dict(step_scaling="fast"), "step_scaling"),
        (dict(sampler="mala", batch_size=100), "full-batch"),
        (dict(sampler="hmc"), "sampler"),
    ],
)
def test_bad_inputs_raise_before_sampling(kwargs, message):
    args = dict(step_size=1e-3, num_draws=10)
    args.update(kwargs)
    with pytest.raises(SLTInputError, match=message):
        free_energy(nll, jnp.zeros(D), MODEL.data, **args)


def test_bad_inputs_data_and_fit():
    one = (jnp.zeros((1, D)), jnp.zeros(1))
    with pytest.raises(SLTInputError, match="n ≥ 2"):
        free_energy(nll, jnp.zeros(D), one, step_size=1e-3)
    with pytest.raises(SLTInputError, match="checkpoints is empty"):
        free_energy_trajectory(nll, [], MODEL.data, step_size=1e-3)
    t = np.array([10.0, 100.0, 1000.0])
    with pytest.raises(SLTInputError, match="at least 3"):
        fit_learning_coefficient(t[:2], [0.1, 0.2])
    with pytest.raises(SLTInputError, match="length"):
        fit_learning_coefficient(t, [0.1, 0.2])
    with pytest.raises(SLTInputError, match="finite"):
        fit_learning_coefficient(t, [0.1, np.nan, 0.3])
    with pytest.raises(SLTInputError, match="stderr"):
        fit_learning_coefficient(t, [0.1, 0.2, 0.3], [0.1, 0.0, 0.1])
    with pytest.raises(SLTInputError, match="multiplicity"):
        fit_learning_coefficient(t, [0.1, 0.2, 0.3], multiplicity=0)


@pytest.mark.slow
def test_auto_step_states_an_error_that_covers_its_bias():
    """SGLD at the calibrated step, d = 3, n = 500: F(ε) alone is several sampling errors off (the step's O(ε)
    bias; measured +0.88 nats, 4.9 errors). The coupled ε/2 run gives the value and puts D = F(ε) - F(ε/2) in
    the stated error, which then covers the exact value (measured z = +0.8)."""
    model = GaussianLinear(d=3, n=500, seed=0)
    lp = lambda w: -0.5 * jnp.sum(w**2) - 1.5 * jnp.log(2 * jnp.pi)
    r = free_energy(nll, jnp.asarray(model.mle, jnp.float32), model.data, log_prior=lp, step_size="auto",
                    num_chains=4, num_draws=400, num_burnin=200, seed=0)
    exact = model.free_energy()
    at_step = r.diagnostics["step_bias_check"]["value_at_step"]
    assert at_step - exact > 3 * r.sampling_stderr  # the bias is real at ε: the check has something to catch
    assert r.step_bias > 2 * r.step_bias_se  # and it measures it
    assert abs(r.value - exact) <= 2 * r.stderr, (r.value, exact, r.stderr)
    assert r.stderr < 1.0  # small enough to fail
    assert r.config.step_size == r.diagnostics["calibration"]["step_size"]
    np.testing.assert_allclose(r.step_sizes, 0.5 * rung_steps_of(r))


def rung_steps_of(r):
    from slt.free_energy import rung_steps

    return rung_steps(r.config.step_size, r.config.reference_nbeta, r.nbetas, r.diagnostics["loss_curvature"],
                      r.diagnostics["prior_curvature"])
