"""Bayesian influence functions and susceptibilities: posterior covariances of the local posterior.

Both are linear responses of posterior expectations to a reweighting of the
data (fluctuation–dissipation), estimated from one sampling run whose
:class:`slt.observables.Observer` accumulates the needed cross-moments at every
draw (no per-draw storage).

- Bayesian influence function (Kreer et al. 2025, arXiv 2509.26544):
  BIF(zᵢ, z_q) = -Cov_w(ℓ(zᵢ; w), ℓ(z_q; w)).
- Susceptibility (Baker et al. 2025, arXiv 2504.18274; Elliott & Murfet 2026,
  arXiv 2605.07980): for the data perturbation q_h = (1-h)·q + h·q′,
  χ = d/dh E_h[φ] at h = 0 = -nβ·Cov_w(φ(w), L_{q′}(w) - L_q(w)), with q the
  training distribution and L_{q′} the mean loss on a probe set drawn from q′.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from slt import validation as check
from slt.io import jsonable
from slt.observables import (DEFAULT_BLOCKS, DEFAULT_CHUNK, Observer, _cached, check_like, covariance, jackknife,
                             per_chain, per_example_losses, sample_observations)

PyTree = Any


@dataclass
class Influence:
    """BIF values[i, q] = -Cov_w(ℓ(zᵢ), ℓ(z_q)) under the local posterior, with jackknife standard errors.

    ``per_chain`` [chains, n_train, n_query] are each healthy chain's own estimates; ``llc`` is the LLC
    estimate of the same run (its diagnostics say whether the chains can be trusted).
    """

    values: np.ndarray  # [n_train, n_query]
    stderr: np.ndarray  # [n_train, n_query]
    per_chain: np.ndarray
    settings: dict
    llc: Any = None
    diagnostics: dict = field(default_factory=dict)

    def top(self, query: int, k: int = 5) -> list[tuple[int, float]]:
        """The ``k`` training examples with the largest |BIF| on query ``query``: [(index, value)]."""
        col = self.values[:, query]
        order = np.argsort(-np.abs(col))[:k]
        return [(int(i), float(col[i])) for i in order]

    def to_dict(self) -> dict:
        """JSON-serialisable dict (NaN becomes None)."""
        return jsonable({"values": self.values, "stderr": self.stderr, "settings": self.settings,
                         "diagnostics": self.diagnostics, "llc": None if self.llc is None else self.llc.to_dict(traces=False)})

    def to_arviz(self):
        """ArviZ InferenceData of the run (loss traces, sampler statistics): see :meth:`slt.LLCResult.to_arviz`."""
        return self.llc.to_arviz()


def bayesian_influence(loss_fn: Callable, params: PyTree, train_data: PyTree, query_data: PyTree, *, step_size,
                       chunk_size: int | None = DEFAULT_CHUNK, blocks: int = DEFAULT_BLOCKS, restrict=None,
                       observe_every: int | None = None, progress=None, devices=None,
                       **estimate_kwargs) -> Influence:
    """The Bayesian influence of every training example on every query example (Kreer et al. 2025).

    values[i, q] = -Cov_w(ℓ(zᵢ; w), ℓ(z_q; w)), w from the local posterior at ``params``
    (exp(-nβ·L_n(w) - γ/2·‖w - w*‖²), sampled as :func:`slt.estimate_llc` would: same arguments, e.g.
    ``num_chains``, ``num_draws``, ``nbeta``, ``localization``, ``restrict``; ``step_size="auto"`` works).
    ℓ(z; w) = ``loss_fn(w, batch of z alone)``. At every draw the per-example losses on both sets are
    evaluated (in chunks of ``chunk_size``; ``observe_every=k``: every k steps instead, which cuts the cost
    when the sets are large against the minibatch) and the running sums Σℓ, Σℓ_q and Σℓᵢℓ_q accumulated per
    (chain, block); the error is the delete-one-batch jackknife over the chains × ``blocks`` batches.
    Memory: chains × blocks × n_train × n_query floats.
    """
    check.require(callable(loss_fn), "loss_fn must be callable as loss_fn(params, batch)")
    check_like("query_data", query_data, train_data)
    check.positive_int("blocks", blocks, minimum=2)
    observer = Observer(_losses(loss_fn, ("train", "query"), chunk_size), means=("train", "query"),
                        crosses=(("train", "query"),), blocks=blocks)
    llc, batches, _ = sample_observations(loss_fn, params, train_data, observer, {"train": train_data, "query": query_data},
                                          restrict=restrict, progress=progress, devices=devices, step_size=step_size,
                                          observe_every=observe_every, **estimate_kwargs)

    def bif(means):
        return -covariance(means, "train", "query")

    values, stderr = jackknife(batches, bif)
    settings = {**llc.config.to_dict(), "blocks": blocks, "chunk_size": chunk_size, "observe_every": observe_every,
                "n_train": int(values.shape[0]), "n_query": int(values.shape[1])}
    return Influence(values, stderr, np.stack(per_chain(batches, bif)) if batches.chains else np.empty((0,) + values.shape),
                     settings, llc, {"warnings": list(llc.diagnostics.get("warnings", []))})


def _losses(loss_fn, names, chunk):
    from slt.observables import losses_on

    return losses_on(loss_fn, names, chunk)


@dataclass
class Susceptibilities:
    """χ[c, p] = -nβ·Cov_w(φ_c, L_p - L_train): rows the observables (components), columns the probes."""

    values: np.ndarray  # [observables, probes]
    stderr: np.ndarray
    observables: list[str]
    probes: list[str]
    per_chain: np.ndarray
    settings: dict
    llc: Any = None

    def table(self) -> str:
        """Plain-text table of χ ± se."""
        width = max(len(p) for p in self.probes) + 14
        lines = ["observable".ljust(16) + "".join(p.rjust(width) for p in self.probes)]
        for i, name in enumerate(self.observables):
            cells = "".join(f"{self.values[i, j]:>{width - 10}.4g} ± {self.stderr[i, j]:<7.2g}" for j in range(len(self.probes)))
            lines.append(name.ljust(16) + cells)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-serialisable dict (NaN becomes None)."""
        return jsonable({"values": self.values, "stderr": self.stderr, "observables": self.observables,
                         "probes": self.probes, "settings": self.settings})


def component_observable(loss_fn, center: PyTree, mask: PyTree) -> Callable:
    """φ_C(w) = L_train(w_C, w*_rest): the training loss with only the component's coordinates from w, the
    rest at w* (an observable localized on the component; its posterior mean is the component's refined
    LLC over nβ, plus L(w*))."""
    from slt.posterior import restricted

    def phi(params, train):
        return loss_fn(restricted(params, center, mask), train)

    return phi


def susceptibilities(loss_fn: Callable, params: PyTree, train_data: PyTree, probes: Mapping[str, PyTree], *,
                     step_size, observables: Mapping[str, Callable] | None = None, components=None,
                     blocks: int = DEFAULT_BLOCKS, observe_every: int | None = None, progress=None, devices=None,
                     **estimate_kwargs) -> Susceptibilities:
    """The response of each observable to shifting the data towards each probe distribution.

    χ[c, p] = d/dh E_h[φ_c] at h = 0 for q_h = (1-h)·q_train + h·q_p, which by fluctuation–dissipation is
    -nβ·Cov_w(φ_c(w), L_p(w) - L_train(w)) under the local posterior at ``params`` (Baker et al. 2025,
    arXiv 2504.18274, eq. for the susceptibility; Elliott & Murfet 2026, arXiv 2605.07980). L_p is the mean
    loss on ``probes[p]``, L_train on ``train_data`` (each evaluated in full at every draw).

    ``observables``: ``{name: φ(params) -> scalar}``; ``components`` (as :func:`slt.estimate_llc_components`)
    adds φ_C = :func:`component_observable` for each. Sampling arguments as :func:`slt.estimate_llc`.
    """
    from slt.components import resolve_components, restriction_mask

    check.require(isinstance(probes, Mapping) and len(probes) > 0, "probes must be a dict {name: dataset} with ≥ 1 entry")
    for name, probe in probes.items():
        check_like(f"probes[{name!r}]", probe, train_data)
    phis: dict[str, Callable] = {}
    for name, fn in (observables or {}).items():
        check.require(callable(fn), f"observables[{name!r}] must be callable as φ(params) -> scalar")
        phis[name] = (lambda f: (lambda w, train: f(w)))(fn)
    if components is not None:
        for name, restrict in resolve_components(params, components).items():
            phis[name] = component_observable(loss_fn, params, restriction_mask(params, restrict))
    check.require(len(phis) > 0, "give observables={name: φ} and/or components=... to measure")
    for name, phi in phis.items():
        try:
            out = jax.eval_shape(phi, params, train_data)
        except Exception as err:
            raise check.SLTInputError(f"observable {name!r} failed on params: {type(err).__name__}: {err}") from err
        check.require(getattr(out, "shape", None) == (), f"observable {name!r} must return a scalar, got shape "
                                                         f"{getattr(out, 'shape', None)}")
    names, probe_names = list(phis), list(probes)
    fn = _susceptibility_observable(loss_fn, tuple(names), tuple(phis[n] for n in names), tuple(probe_names))
    observer = Observer(fn, means=("phi", "delta"), crosses=(("phi", "delta"),), blocks=blocks)
    llc, batches, _ = sample_observations(loss_fn, params, train_data, observer, {"train": train_data, **probes},
                                          progress=progress, devices=devices, step_size=step_size,
                                          observe_every=observe_every, **estimate_kwargs)
    nbeta = llc.nbeta

    def chi(means):
        return -nbeta * covariance(means, "phi", "delta")

    values, stderr = jackknife(batches, chi)
    return Susceptibilities(values, stderr, names, probe_names,
                            np.stack(per_chain(batches, chi)) if batches.chains else np.empty((0,) + values.shape),
                            {**llc.config.to_dict(), "blocks": blocks}, llc)


def _susceptibility_observable(loss_fn, names, phis, probe_names):
    def build():
        def fn(params, data):
            train = loss_fn(params, data["train"])
            phi = jnp.stack([p(params, data["train"]) for p in phis])
            delta = jnp.stack([loss_fn(params, data[p]) - train for p in probe_names])
            return {"phi": phi, "delta": delta}

        return fn

    return _cached(loss_fn, ("susceptibility", names, phis, probe_names), build)


__all__ = ["Influence", "Susceptibilities", "bayesian_influence", "component_observable", "per_example_losses",
           "susceptibilities"]
