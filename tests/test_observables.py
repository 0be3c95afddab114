"""Posterior observables (BIF, susceptibilities, the Bayes quartet) against the conjugate Gaussian model.

y = Xw + N(0, σ²) with σ = 1 and per-example NLL ℓᵢ(w) = (yᵢ - xᵢᵀw)²/2 + log(2π)/2 (REFERENCE §8).
The local posterior exp(-nβ·L_n(w) - γ/2·‖w - w*‖²) is N(m, S) with S⁻¹ = nβ·XᵀX/n + γI and
m = S·(nβ·Xᵀy/n + γw*); with r = y - Xm and cᵢⱼ = xᵢᵀSxⱼ:
Cov(ℓᵢ, ℓⱼ) = rᵢrⱼcᵢⱼ + cᵢⱼ²/2, E_w p(y|x, w) = N(y; xᵀm, 1 + xᵀSx), E_w ℓ = log(2π)/2 + (r² + c)/2,
Var_w ℓ = r²c + c²/2, and for quadratics f = ½wᵀAw + aᵀw, g = ½wᵀBw + bᵀw:
Cov(f, g) = ½·tr(ASBS) + (Am + a)ᵀS(Bm + b).
"""

from __future__ import annotations

import math
import warnings

import jax.numpy as jnp
import numpy as np
import pytest

import slt
from slt.validation import SLTInputError

N, D, GAMMA = 200, 3, 1.0
RNG = np.random.default_rng(0)
X = RNG.normal(size=(N, D))
Y = X @ np.ones(D) + RNG.normal(size=N)
TRAIN = (jnp.asarray(X[:150], jnp.float32), jnp.asarray(Y[:150], jnp.float32))
QUERY = (jnp.asarray(X[150:], jnp.float32), jnp.asarray(Y[150:], jnp.float32))
W_STAR = jnp.asarray(np.linalg.lstsq(X[:150], Y[:150], rcond=None)[0], jnp.float32)
SAMPLING = dict(step_size=1e-3, num_chains=4, num_draws=2000, num_burnin=500)


def nll(w, batch):
    x, y = batch
    return jnp.mean((y - x @ w) ** 2) / 2 + 0.5 * jnp.log(2 * jnp.pi)


def posterior(nbeta: float):
    """(m, S) of the local posterior at ``nbeta`` on the training set (float64)."""
    x, y, w0 = X[:150], Y[:150], np.asarray(W_STAR, np.float64)
    prec = nbeta * x.T @ x / 150 + GAMMA * np.eye(D)
    cov = np.linalg.inv(prec)
    return cov @ (nbeta * x.T @ y / 150 + GAMMA * w0), cov


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def test_bayesian_influence_matches_the_exact_covariances():
    inf = quiet(slt.bayesian_influence, nll, W_STAR, TRAIN, QUERY, **SAMPLING)
    m, S = posterior(150 / math.log(150))
    r_train, r_query = Y[:150] - X[:150] @ m, Y[150:] - X[150:] @ m
    c = X[:150] @ S @ X[150:].T
    exact = -(np.outer(r_train, r_query) * c + c**2 / 2)
    assert inf.values.shape == inf.stderr.shape == (150, 50)
    z = (inf.values - exact) / inf.stderr
    assert np.sqrt(np.mean(z**2)) <= 2.0  # measured 0.71
    assert np.corrcoef(inf.values.ravel(), exact.ravel())[0, 1] >= 0.95  # measured 0.996
    assert np.mean(inf.stderr) < 0.3 * np.mean(np.abs(exact))  # small enough to fail (measured 0.22)
    assert inf.per_chain.shape == (4, 150, 50)
    assert inf.llc.diagnostics["healthy_chains"] == 4


def test_the_bayes_quartet_resolves_the_gibbs_bayes_gaps():
    q = quiet(slt.bayes_quartet, nll, W_STAR, TRAIN, QUERY, **{**SAMPLING, "num_draws": 4000, "num_burnin": 1000})
    m, S = posterior(150.0)  # β = 1 by default
    exact = {}
    for name, (x, y) in {"train": (X[:150], Y[:150]), "test": (X[150:], Y[150:])}.items():
        r, c = y - x @ m, np.einsum("ij,jk,ik->i", x, S, x)
        exact[f"bayes_{name}"] = float(np.mean(0.5 * np.log(2 * np.pi * (1 + c)) + r**2 / (2 * (1 + c))))
        exact[f"gibbs_{name}"] = float(np.mean(0.5 * np.log(2 * np.pi) + (r**2 + c) / 2))
        if name == "train":
            exact["functional_variance"] = float(np.sum(r**2 * c + c**2 / 2))
    exact["waic"] = exact["bayes_train"] + exact["functional_variance"] / 150
    for name, value in exact.items():
        assert abs(getattr(q, name) - value) <= 3 * q.stderr[name], (name, getattr(q, name), value, q.stderr[name])
    for split in ("train", "test"):
        gap = exact[f"gibbs_{split}"] - exact[f"bayes_{split}"]  # ≈ d/2n: about 0.01
        measured = q.gaps[f"gibbs_minus_bayes_{split}"]
        assert abs(measured["value"] - gap) <= 3 * measured["se"]
        assert measured["se"] < 0.05 * gap  # the test resolves the gap, not just the values
    assert q.loo is not None and q.loo["bad_k"] == 0
    assert abs(q.loo["loss"] - q.waic) < 3 * q.loo["se"]
    assert q.pointwise_loglik.shape == (4, 4000, 150)
    idata = q.to_arviz()
    assert set(idata.groups()) >= {"posterior", "log_likelihood", "sample_stats"}


def test_susceptibility_of_a_quadratic_observable_is_exact():
    a_mat = np.diag([1.0, 2.0, 0.5])
    phi = lambda w: 0.5 * w @ jnp.asarray(a_mat, jnp.float32) @ w  # noqa: E731
    probe = (QUERY[0] * 1.5, QUERY[1])
    s = quiet(slt.susceptibilities, nll, W_STAR, TRAIN, {"shifted": probe, "held_out": QUERY},
              observables={"quadratic": phi}, **{**SAMPLING, "num_draws": 4000})
    nbeta = 150 / math.log(150)
    m, S = posterior(nbeta)
    x_t, y_t = X[:150], Y[:150]
    for j, (x_p, y_p) in enumerate(((1.5 * X[150:], Y[150:]), (X[150:], Y[150:]))):
        B = x_p.T @ x_p / len(y_p) - x_t.T @ x_t / 150  # L_p - L_train = ½wᵀBw + bᵀw + const
        b = -(x_p.T @ y_p / len(y_p) - x_t.T @ y_t / 150)
        cov = 0.5 * np.trace(a_mat @ S @ B @ S) + (a_mat @ m) @ S @ (B @ m + b)
        exact = -nbeta * cov
        assert abs(s.values[0, j] - exact) <= 3 * s.stderr[0, j], (j, s.values[0, j], exact, s.stderr[0, j])
        assert s.stderr[0, j] < 0.25 * abs(exact)  # a wrong sign or factor cannot pass
    assert s.observables == ["quadratic"] and s.probes == ["shifted", "held_out"]
    assert "quadratic" in s.table()


@pytest.mark.slow
def test_component_observables_and_observer_memory():
    s = quiet(slt.susceptibilities, nll, W_STAR, TRAIN, {"held_out": QUERY}, components=None,
              observables={"w0": lambda w: w[0]}, step_size=1e-3, num_chains=2, num_draws=300)
    assert s.values.shape == (1, 1) and np.isfinite(s.values).all()
    # accumulators do not grow with the draws: [chains, blocks, ...] whatever the run length
    from slt.observables import Observer, losses_on
    from slt.posterior import Hyperparameters
    from slt.sampling import RunConfig, run_chains

    obs = Observer(losses_on(nll, ("q",)), means=("q",), crosses=(("q", "q"),), blocks=4)
    for steps in (40, 400):
        run = run_chains(nll, W_STAR, TRAIN, Hyperparameters(1e-3, 30.0, 1.0), probes={"q": QUERY},
                         config=RunConfig("sgld", 2, steps, 150, observer=obs))
        assert run.observations["cross:q:q"].shape == (2, 4, 50, 50)
        assert run.observations["count"].sum() == 2 * steps


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: slt.bayesian_influence(nll, W_STAR, TRAIN, {"x": QUERY[0]}, step_size=1e-3),
         "query_data has a different structure from the training data"),
        (lambda: slt.bayesian_influence(nll, W_STAR, TRAIN, (QUERY[0][:, :2], QUERY[1]), step_size=1e-3),
         r"query_data: examples of shape \(2,\)"),
        (lambda: slt.bayes_quartet(lambda w, b: jnp.sum((b[1] - b[0] @ w) ** 2), W_STAR, TRAIN, QUERY, step_size=1e-3),
         "loss_fn is not a mean of per-example terms"),
        (lambda: slt.bayes_quartet(nll, W_STAR, TRAIN, QUERY, step_size=1e-3, log_prior=lambda w: 0.0 * jnp.sum(w)),
         "log_prior does not decay"),
        (lambda: slt.susceptibilities(nll, W_STAR, TRAIN, {"q": QUERY}, step_size=1e-3,
                                      observables={"vector": lambda w: w}), "must return a scalar"),
        (lambda: slt.susceptibilities(nll, W_STAR, TRAIN, {"q": QUERY}, step_size=1e-3),
         "give observables"),
    ],
)
def test_bad_input_is_refused_before_sampling(call, message, monkeypatch):
    monkeypatch.setattr(slt.sampling, "compiled_program", lambda *a, **k: pytest.fail("compiled before validating"))
    with pytest.raises(SLTInputError, match=message):
        call()


def test_observables_over_checkpoints_resume_and_record_failures(tmp_path):
    """observable_trajectory: the BIF at each checkpoint equals a direct call (same seed); a rerun loads the
    finished checkpoints instead of sampling; a checkpoint that cannot load is recorded as failed."""
    from functools import partial

    from slt.checkpoints import save_params

    measure = partial(quiet, slt.bayesian_influence, nll, train_data=TRAIN, query_data=QUERY, step_size=1e-3,
                      num_chains=2, num_draws=200, progress=False)
    shifted = W_STAR + 0.05
    save_params(tmp_path / "ck" / "step_20.safetensors", {"w": shifted})
    (tmp_path / "ck" / "step_30.safetensors").write_bytes(b"\x10\x00")  # truncated
    ckpts = [(10, {"w": W_STAR}), (20, str(tmp_path / "ck" / "step_20.safetensors")),
             (30, str(tmp_path / "ck" / "step_30.safetensors"))]
    wrapped = lambda p: measure(params=p["w"])  # noqa: E731
    traj = slt.observable_trajectory(wrapped, ckpts, out=tmp_path / "bif", template={"w": W_STAR})
    assert traj.steps == [10, 20, 30] and traj.failed == [30] and "step_30" in traj.errors[30]
    direct = measure(params=shifted)
    np.testing.assert_allclose(traj.results[20].values, direct.values, rtol=1e-5, atol=1e-7)
    assert traj.results[20].llc.timing["compile_seconds"] == 0.0  # the first checkpoint's program reused
    calls = []
    again = slt.observable_trajectory(lambda p: calls.append(p), ckpts[:2], out=tmp_path / "bif")
    assert calls == []  # nothing recomputed
    np.testing.assert_array_equal(again.values()[1], traj.results[20].values)
    assert again.results[20]["settings"]["n_query"] == 50 and again.status == {10: "ok", 20: "ok"}
    again.status[20] = "diverged"  # as a checkpoint whose every chain diverged is recorded
    assert np.isnan(again.values()[1]).all() and np.isfinite(again.values()[0]).all()
