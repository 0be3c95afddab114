"""The Bayes quartet: Bayes and Gibbs, training and generalization losses, with WAIC (Watanabe 2010, 2018).

For a per-example negative log-likelihood ℓ(x; w) = -log p(x|w) and draws w from the posterior:

    Bayes training loss        T  = -(1/n)·Σᵢ log E_w p(xᵢ|w)
    Gibbs training loss        G_T = (1/n)·Σᵢ E_w ℓ(xᵢ; w)
    Bayes generalization loss  B  = -(1/m)·Σⱼ log E_w p(x′ⱼ|w)      (held-out x′)
    Gibbs generalization loss  G  = (1/m)·Σⱼ E_w ℓ(x′ⱼ; w)
    functional variance        V  = Σᵢ Var_w log p(xᵢ|w)
    WAIC                          = T + β·V/n

E[WAIC] ≈ E[B] asymptotically, singular models included (Watanabe 2010, JMLR
11:3571). The Gibbs - Bayes gaps are O(d/n), so their errors matter more than
the values': every difference is estimated jointly (the same draws,
jackknifed together). PSIS-LOO comes from ArviZ (``az.loo``) on the pointwise
log-likelihoods of the same draws.

With ``log_prior`` the chains sample the Bayes posterior at β = 1,
exp(-n·L_n(w))·φ(w). Without it they sample the local posterior
exp(-nβ·L_n(w) - γ/2·‖w - w*‖²) at β = 1 by default, i.e. the Bayes posterior
of a Gaussian prior N(w*, I/γ) centred at the checkpoint: the quartet of the
neighbourhood of w*, not of the model's global posterior.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from slt import validation as check
from slt.io import jsonable
from slt.observables import (DEFAULT_BLOCKS, DEFAULT_CHUNK, Observer, _arviz, check_like, jackknife, losses_on,
                             observation_count, per_example_losses, sample_observations, variance)

PyTree = Any
QUANTITIES = ("bayes_train", "gibbs_train", "bayes_test", "gibbs_test", "functional_variance", "waic")


@dataclass
class BayesQuartet:
    """The four losses (nats per example), V and WAIC, each with its standard error (``stderr[name]``).

    ``gaps`` holds the differences that matter (Gibbs - Bayes on train and test, WAIC - Bayes test,
    LOO - Bayes test) with their joint errors; ``loo`` is ArviZ's PSIS-LOO (-elpd/n) when computed.
    """

    bayes_train: float
    gibbs_train: float
    bayes_test: float
    gibbs_test: float
    functional_variance: float
    waic: float
    beta: float
    stderr: dict
    gaps: dict
    loo: dict | None
    llc: Any
    settings: dict = field(default_factory=dict)
    pointwise_loglik: np.ndarray | None = None  # [chains, draws, n_train] when kept (loo=True)

    def to_dict(self) -> dict:
        """JSON-serialisable dict (NaN becomes None)."""
        return jsonable({**{q: getattr(self, q) for q in QUANTITIES}, "beta": self.beta, "stderr": self.stderr,
                         "gaps": self.gaps, "loo": self.loo, "settings": self.settings})

    def summary(self) -> str:
        """A readable table of the quartet."""
        rows = [f"{q:<20} {getattr(self, q):>12.6g} ± {self.stderr[q]:.2g}" for q in QUANTITIES]
        rows += [f"{k:<20} {v['value']:>12.4g} ± {v['se']:.2g}" for k, v in self.gaps.items()]
        if self.loo:
            rows.append(f"{'loo (PSIS)':<20} {self.loo['loss']:>12.6g} ± {self.loo['se']:.2g}  "
                        f"(k̂ > 0.7 at {self.loo['bad_k']} points)")
        return "\n".join(rows)

    def to_arviz(self):
        """ArviZ InferenceData with the draws' per-example log-likelihoods (when kept) and the loss traces."""
        return self.llc.to_arviz(log_likelihood=self.pointwise_loglik)


def check_per_example_nll(loss_fn, params, data, count: int = 8) -> None:
    """``loss_fn(params, batch)`` must be the mean of per-example terms (a per-example NLL averaged over the
    batch): on the first ``count`` examples it must equal the mean of their one-example losses."""
    import jax
    import jax.numpy as jnp

    k = min(count, jax.tree.leaves(data)[0].shape[0])
    head = jax.tree.map(lambda x: jnp.asarray(x)[:k], data)
    whole = float(loss_fn(params, head))
    each = float(jnp.mean(per_example_losses(loss_fn, params, head, None)))
    check.require(
        math.isclose(whole, each, rel_tol=1e-4, abs_tol=1e-6),
        f"loss_fn is not a mean of per-example terms (on {k} examples: {whole:.6g}, mean of one-example losses "
        f"{each:.6g}); the quartet needs loss_fn(params, batch) = mean over the batch of -log p(x|w), e.g. "
        "optax.softmax_cross_entropy_with_integer_labels(...).mean(), or for Gaussian noise of variance σ² "
        "((y - f(x))²/(2σ²) + log(2πσ²)/2).mean()",
    )


def bayes_quartet(loss_fn: Callable, params: PyTree, train_data: PyTree, test_data: PyTree, *, step_size,
                  log_prior: Callable | None = None, nbeta: float | None = None, loo: bool = True,
                  chunk_size: int | None = DEFAULT_CHUNK, blocks: int = DEFAULT_BLOCKS, observe_every: int | None = None,
                  progress=None, devices=None, **estimate_kwargs) -> BayesQuartet:
    """The Bayes quartet and WAIC of the posterior at ``params`` (module docstring), from one sampling run.

    ``loss_fn`` must be the per-example negative log-likelihood averaged over the batch (checked on a few
    examples). ``log_prior``: the Bayes posterior at β = 1 (nβ = n); otherwise the local posterior,
    by default also at β = 1 (``nbeta=n``; another ``nbeta`` gives β = nbeta/n in WAIC = T + β·V/n).
    ``loo``: keep the draws' pointwise log-likelihoods on the training set for ArviZ's PSIS-LOO
    (memory chains × draws × n). Sampling arguments as :func:`slt.estimate_llc`.
    """
    check.require(callable(loss_fn), "loss_fn must be callable as loss_fn(params, batch)")
    check_like("test_data", test_data, train_data)
    n = check.data_size(train_data)
    check_per_example_nll(loss_fn, params, train_data)
    if log_prior is not None:
        from slt.free_energy import check_prior

        check_prior(log_prior, params)
        check.require(nbeta is None or nbeta == n, "with log_prior the quartet is that of the Bayes posterior: nβ = n")
    nbeta = float(n) if nbeta is None else nbeta
    draws = observation_count(int(estimate_kwargs.get("num_draws", 1000)),
                              int(estimate_kwargs.get("steps_between_draws", 1)), observe_every)
    observer = Observer(
        losses_on(loss_fn, ("train", "test"), chunk_size, log_likelihood=True), means=("train", "test"),
        squares=("train",), logsumexp=("logp:train", "logp:test"), traces=("logp:train",) if loo else (),
        blocks=blocks, trace_length=draws if loo else 0,
    )
    llc, batches, raw = sample_observations(loss_fn, params, train_data, observer,
                                            {"train": train_data, "test": test_data}, log_prior=log_prior,
                                            nbeta=nbeta, progress=progress, devices=devices, step_size=step_size,
                                            observe_every=observe_every, **estimate_kwargs)
    beta = nbeta / n

    def quartet(m):
        bayes_train = -float(np.mean(m["lse:logp:train"]))
        gibbs_train = float(np.mean(m["sum:train"]))
        bayes_test = -float(np.mean(m["lse:logp:test"]))
        gibbs_test = float(np.mean(m["sum:test"]))
        v = float(np.sum(variance(m, "train")))
        waic = bayes_train + beta * v / n
        return np.array([bayes_train, gibbs_train, bayes_test, gibbs_test, v, waic,
                         gibbs_train - bayes_train, gibbs_test - bayes_test, waic - bayes_test])

    values, se = jackknife(batches, quartet)
    stderr = dict(zip(QUANTITIES, map(float, se[:6])))
    gaps = {name: {"value": float(values[i]), "se": float(se[i])}
            for i, name in enumerate(("gibbs_minus_bayes_train", "gibbs_minus_bayes_test", "waic_minus_bayes_test"), 6)}
    pointwise, loo_result = None, None
    if loo:
        healthy = np.isfinite(llc.llc_per_chain)
        pointwise = np.asarray(raw["trace:logp:train"], np.float64)[healthy]
        loo_result = _psis_loo(pointwise, n)
        if loo_result is not None:
            loo_result["minus_bayes_test"] = loo_result["loss"] - float(values[2])
    return BayesQuartet(*map(float, values[:6]), beta=beta, stderr=stderr, gaps=gaps, loo=loo_result, llc=llc,
                        settings={**llc.config.to_dict(), "blocks": blocks, "log_prior": log_prior is not None},
                        pointwise_loglik=pointwise)


def _psis_loo(pointwise: np.ndarray, n: int) -> dict | None:
    """ArviZ's PSIS-LOO on [chains, draws, n] log-likelihoods: the LOO loss -elpd/n per example, its se, and
    how many Pareto k̂ exceed 0.7 (where PSIS is unreliable)."""
    if pointwise.shape[0] == 0:
        return None
    az = _arviz()
    data = az.from_dict(posterior={"draw_index": np.zeros(pointwise.shape[:2])}, log_likelihood={"x": pointwise})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = az.loo(data, pointwise=True)
    k = np.asarray(result.pareto_k)
    return {"loss": -float(result.elpd_loo) / n, "se": float(result.se) / n, "bad_k": int(np.sum(k > 0.7)),
            "p_loo": float(result.p_loo)}


__all__ = ["BayesQuartet", "bayes_quartet", "check_per_example_nll"]
