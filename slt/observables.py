"""Statistics of the local posterior recorded at draws, inside the one sampling program.

An :class:`Observer` evaluates ``fn(params, probes) -> {name: array}`` at the
chains' positions every ``every`` steps of the draws (inside the ``lax.scan``,
:mod:`slt.sampling`) and reduces online into per-(chain, block) accumulators:
sums (``means``), elementwise squares (``squares``), cross-products
(``crosses``: Σ x_a ⊗ x_b), log-sum-exps (``logsumexp``), and optionally every
draw (``traces``, for ArviZ). Memory is O(chains × blocks × size of the
statistic), never O(draws × examples) unless traces are asked for; per-example
losses of large probe sets are evaluated in chunks (:func:`per_example_losses`).

Errors come from the spread over the C·B (chain, block) batches: the
delete-one-batch jackknife of any smooth function of the pooled means
(:func:`jackknife`), a batch-means error that needs no ESS.
"""

from __future__ import annotations

import functools
import math
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
DEFAULT_BLOCKS = 8
DEFAULT_CHUNK = 4096


@dataclass(frozen=True)
class Observer:
    """What the program records at draws (hashable: part of the compile-cache key, so reuse the same ``fn``).

    ``fn(params, probes) -> dict[str, array]`` is evaluated at each chain's position before the step, at
    steps ``observe_from + j·every`` (j < the run's number of observations); draw j goes to block
    ⌊j·blocks/count⌋. ``traces`` keep every one of the first ``trace_length`` draws.
    """

    fn: Callable
    means: tuple[str, ...] = ()
    squares: tuple[str, ...] = ()
    crosses: tuple[tuple[str, str], ...] = ()
    logsumexp: tuple[str, ...] = ()
    traces: tuple[str, ...] = ()
    every: int = 1
    blocks: int = DEFAULT_BLOCKS
    trace_length: int = 0

    def _shapes(self, position, probes):
        return jax.eval_shape(self.fn, position, probes)

    def init(self, position, probes) -> dict:
        """Zero accumulators for one chain (``position`` gives the shapes)."""
        shapes = self._shapes(position, probes)

        def zeros(*shape, fill=0.0, dtype=jnp.float32):
            return jnp.full((self.blocks, *shape), fill, dtype)

        acc = {"count": jnp.zeros((self.blocks,), jnp.float32)}
        for name in self.means:
            acc[f"sum:{name}"] = zeros(*shapes[name].shape)
        for name in self.squares:
            acc[f"sq:{name}"] = zeros(*shapes[name].shape)
        for a, b in self.crosses:
            acc[f"cross:{a}:{b}"] = zeros(*shapes[a].shape, *shapes[b].shape)
        for name in self.logsumexp:
            acc[f"lse:{name}"] = zeros(*shapes[name].shape, fill=-jnp.inf)
        for name in self.traces:
            acc[f"trace:{name}"] = jnp.full((self.trace_length, *shapes[name].shape), jnp.nan, jnp.float32)
        return acc

    def update(self, acc: dict, position, probes, draw, block) -> dict:
        """One draw added to one chain's accumulators."""
        obs = {k: jnp.asarray(v, jnp.float32) for k, v in self.fn(position, probes).items()}
        out = dict(acc)
        out["count"] = acc["count"].at[block].add(1.0)
        for name in self.means:
            out[f"sum:{name}"] = acc[f"sum:{name}"].at[block].add(obs[name])
        for name in self.squares:
            out[f"sq:{name}"] = acc[f"sq:{name}"].at[block].add(obs[name] ** 2)
        for a, b in self.crosses:
            key = f"cross:{a}:{b}"
            out[key] = acc[key].at[block].add(jnp.tensordot(obs[a], obs[b], axes=0))
        for name in self.logsumexp:
            key = f"lse:{name}"
            out[key] = acc[key].at[block].set(jnp.logaddexp(acc[key][block], obs[name]))
        for name in self.traces:
            key = f"trace:{name}"
            out[key] = acc[key].at[jnp.minimum(draw, self.trace_length - 1)].set(
                jnp.where(draw < self.trace_length, obs[name], acc[key][jnp.minimum(draw, self.trace_length - 1)]))
        return out


# ----------------------------------------------------------------------------- observables


def _one(x):
    return jax.tree.map(lambda a: a[None], x)


def per_example_losses(loss_fn, params, data, chunk: int | None = DEFAULT_CHUNK) -> jax.Array:
    """[n] losses ℓ(zᵢ; params) = loss_fn(params, batch of zᵢ alone), in chunks of ``chunk`` examples
    (``lax.map`` over chunks, ``vmap`` within one) so that large probe sets fit in memory."""
    n = jax.tree.leaves(data)[0].shape[0]
    each = jax.vmap(lambda z: loss_fn(params, _one(z)))
    if chunk is None or n <= chunk:
        return each(data)
    pad = (-n) % chunk
    padded = jax.tree.map(lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]), data) if pad else data
    blocks = jax.tree.map(lambda x: x.reshape((-1, chunk) + x.shape[1:]), padded)
    return jax.lax.map(each, blocks).reshape(-1)[:n]


_observables: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _cached(loss_fn, key, build):
    try:
        cache = _observables.setdefault(loss_fn, {})
    except TypeError:  # not weak-referenceable: a new function (and a new compile) each time
        cache = {}
    if key not in cache:
        cache[key] = build()
    return cache[key]


def losses_on(loss_fn, names: Sequence[str], chunk: int | None = DEFAULT_CHUNK, *, log_likelihood: bool = False) -> Callable:
    """``fn(params, probes) -> {name: per-example losses on probes[name]}`` (and ``"logp:" + name``: their
    negatives, the log-likelihoods of a per-example NLL), the same object for the same (loss_fn, names,
    chunk), so a second run with the same shapes does not recompile."""
    names = tuple(names)

    def build():
        def fn(params, probes):
            out = {name: per_example_losses(loss_fn, params, probes[name], chunk) for name in names}
            if log_likelihood:
                out.update({f"logp:{name}": -out[name] for name in names})
            return out

        return fn

    return _cached(loss_fn, ("losses", names, chunk, log_likelihood), build)


def check_every(observe_every) -> int:
    """A positive whole number of steps between observations."""
    from slt.validation import positive_int

    return positive_int("observe_every", observe_every)


def observation_count(num_draws: int, steps_between_draws: int, observe_every: int | None) -> int:
    """How many observations the draws make (the length a trace needs)."""
    every = steps_between_draws if observe_every is None else observe_every
    return -(-(num_draws * steps_between_draws) // every)


def check_like(name: str, probe, data) -> None:
    """A probe set must look like the training data: the same pytree structure, per-example shapes and dtypes."""
    from slt.validation import SLTInputError, data_size

    data_size(probe)
    ref, got = jax.tree.structure(data), jax.tree.structure(probe)
    if ref != got:
        raise SLTInputError(f"{name} has a different structure from the training data ({got} vs {ref}); pass the same "
                            "kind of batch (same keys), e.g. a split of the same dataset")
    for a, b in zip(jax.tree.leaves(data), jax.tree.leaves(probe)):
        if np.shape(a)[1:] != np.shape(b)[1:] or jnp.result_type(a) != jnp.result_type(b):
            raise SLTInputError(f"{name}: examples of shape {np.shape(b)[1:]} {jnp.result_type(b)}, the training data's "
                                f"are {np.shape(a)[1:]} {jnp.result_type(a)}; pass examples of the same kind")


# ----------------------------------------------------------------------------- reductions on the host


@dataclass
class Batches:
    """An observer's accumulators as C·B batches (chain, block): per-batch sums and counts."""

    counts: np.ndarray  # [chains, blocks]
    sums: dict  # accumulator name -> [chains, blocks, ...]
    chains: int

    @classmethod
    def from_observations(cls, observations: dict, healthy: np.ndarray | None = None) -> "Batches":
        """From a run's observations; chains that are not ``healthy`` (diverged) are left out."""
        counts = np.asarray(observations["count"], np.float64)
        keep = np.ones(counts.shape[0], bool) if healthy is None else np.asarray(healthy, bool)
        sums = {k: np.asarray(v, np.float64)[keep] for k, v in observations.items()
                if k != "count" and not k.startswith("trace:")}
        return cls(counts[keep], sums, int(keep.sum()))

    def pooled(self, mask: np.ndarray | None = None) -> dict:
        """Means over the selected batches (``mask`` [chains, blocks], default all): {name: mean}."""
        m = np.ones(self.counts.shape, bool) if mask is None else mask
        total = float(self.counts[m].sum())
        out = {}
        for key, value in self.sums.items():
            if key.startswith("lse:"):
                out[key] = _logsumexp(value[m], axis=0) - math.log(max(total, 1.0))  # log of the mean of e^x
            else:
                out[key] = value[m].sum(axis=0) / max(total, 1.0)
        return out


def _logsumexp(x, axis):
    top = np.max(x, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return np.squeeze(top, axis=axis) + np.log(np.sum(np.exp(x - top), axis=axis))


def jackknife(batches: Batches, statistic: Callable[[dict], Any]) -> tuple[Any, Any]:
    """(value, standard error) of ``statistic(pooled means)``, the error by deleting one (chain, block)
    batch at a time: se² = (J-1)/J·Σⱼ (θ₋ⱼ - θ̄)² over the J non-empty batches."""
    value = statistic(batches.pooled())
    cells = [tuple(ix) for ix in np.argwhere(batches.counts > 0)]
    if len(cells) < 2:
        return value, jax.tree.map(lambda v: np.full(np.shape(v), np.nan), value)
    leave = []
    for c in cells:
        mask = batches.counts > 0
        mask[c] = False
        leave.append(statistic(batches.pooled(mask)))
    J = len(cells)
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *leave)
    se = jax.tree.map(lambda s: np.sqrt((J - 1) / J * np.sum((s - s.mean(axis=0)) ** 2, axis=0)), stacked)
    return value, se


def per_chain(batches: Batches, statistic: Callable[[dict], Any]) -> list:
    """``statistic`` of each chain's own pooled means."""
    out = []
    for c in range(batches.chains):
        mask = np.zeros(batches.counts.shape, bool)
        mask[c] = True
        out.append(statistic(batches.pooled(mask)))
    return out


def covariance(means: dict, a: str, b: str) -> np.ndarray:
    """Cov(x_a, x_b) = E[x_a ⊗ x_b] - E[x_a] ⊗ E[x_b] from pooled means."""
    return means[f"cross:{a}:{b}"] - np.multiply.outer(means[f"sum:{a}"], means[f"sum:{b}"])


def variance(means: dict, name: str) -> np.ndarray:
    """Var(x) elementwise from pooled means."""
    return means[f"sq:{name}"] - means[f"sum:{name}"] ** 2


@functools.lru_cache(maxsize=None)
def _arviz():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # ArviZ 0.x announces its 1.0 refactor on import
        import arviz

    return arviz


# ----------------------------------------------------------------------------- sampling with an observer


def sample_observations(loss_fn, params, data, observer: Observer, probes, *, restrict=None, log_prior=None,
                        progress=None, devices=None, acceptance_checks: int = 100, observe_every: int | None = None,
                        **estimate_kwargs):
    """Sample the local posterior as :func:`slt.estimate_llc` does, with ``observer`` recording every
    ``observe_every`` steps of the draws (default: at every draw, ``steps_between_draws``).

    Returns (the LLC estimate of the same run, its healthy chains' :class:`Batches`, the raw observations).
    One program: the observer is part of the sampling scan, the LLC comes from the same chains.
    """
    from dataclasses import replace

    from slt.components import describe, num_free, restriction_mask
    from slt.llc import llc_from_run, num_parameters, plan_estimate
    from slt.units import Unit, run_units

    mask = None if restrict is None else restriction_mask(params, restrict)
    plan = plan_estimate(loss_fn, params, data, **estimate_kwargs)
    every = plan.config.steps_between_draws if observe_every is None else check_every(observe_every)
    observer = replace(observer, every=every)
    sampled = run_units(loss_fn, data, [Unit(params, plan.init_loss, mask)], plan.config, observer=observer,
                        probes=probes, log_prior=log_prior, auto_burnin=plan.auto_burnin,
                        adapt_step=plan.calibration is not None, progress=progress, devices=devices,
                        acceptance_checks=acceptance_checks)
    run = sampled.runs[0]
    free = num_parameters(params) if mask is None else num_free(mask)
    llc = llc_from_run(run, plan.init_loss, sampled.config, num_params=free)
    if mask is not None:
        llc.diagnostics["restriction"] = {"description": describe(restrict), "num_free": free,
                                          "num_params": num_parameters(params)}
    if plan.calibration is not None:
        llc.diagnostics["calibration"] = plan.calibration.to_dict()
    healthy = np.isfinite(llc.llc_per_chain)
    return llc, Batches.from_observations(run.observations, healthy), run.observations
