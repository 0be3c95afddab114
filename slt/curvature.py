"""Curvature of the loss at w*, the scale every step size is judged against.

- :func:`top_hessian_eigenvalue`: |largest eigenvalue| of ∇²L by power
  iteration with Hessian-vector products (Pearlmutter 1994): the stability
  limit of SGLD's drift, ε < 4/(nβ·h + γ) (:func:`slt.calibrate`).
- :func:`mean_hessian_eigenvalue`: tr(∇²f)/d by Hutchinson's estimator
  (Hutchinson 1990, Rademacher probes): the typical curvature, which sets each
  rung's step and starting spread in :func:`slt.free_energy`.

Both are jitted once per function (cached weakly on it) and run on a subset of
at most a few thousand examples.
"""

from __future__ import annotations

import math
import weakref

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

HUTCHINSON_PROBES = 8
HUTCHINSON_SUBSET = 4096


def _cached(cache: "weakref.WeakKeyDictionary", f, build):
    """``build(f)``, kept per function ``f`` (rebuilt each time for functions that cannot be weakly referenced)."""
    try:
        fn = cache.get(f)
    except TypeError:
        return build(f)
    if fn is None:
        fn = build(f)
        try:
            cache[f] = fn
        except TypeError:
            pass
    return fn


def _power_iteration(loss_fn, params, batch, key, iters):
    flat, unravel = ravel_pytree(params)
    grad = jax.grad(lambda f: loss_fn(unravel(f), batch))

    def hvp(v):
        return jax.jvp(grad, (flat,), (v,))[1]

    v0 = jax.random.normal(key, flat.shape, flat.dtype)
    v0 = v0 / jnp.linalg.norm(v0)

    def body(_, v):
        hv = hvp(v)
        return hv / jnp.maximum(jnp.linalg.norm(hv), jnp.finfo(flat.dtype).tiny)

    v = jax.lax.fori_loop(0, iters, body, v0)
    return jnp.abs(jnp.vdot(v, hvp(v)))


_power_iteration_jit = jax.jit(_power_iteration, static_argnames=("loss_fn", "iters"))


def top_hessian_eigenvalue(loss_fn, params, batch, *, seed: int = 0, iters: int = 30) -> float:
    """|largest eigenvalue| of ∇²L at ``params`` on ``batch`` by power iteration with Hessian-vector products."""
    try:
        value = _power_iteration_jit(loss_fn, params, batch, jax.random.PRNGKey(seed), iters)
    except TypeError:  # unhashable loss_fn: trace without the cache
        value = jax.jit(lambda p, b, k: _power_iteration(loss_fn, p, b, k, iters))(params, batch, jax.random.PRNGKey(seed))
    return float(value)


def _hutchinson(f):
    """jit of (params, args, key) -> tr(∇²f)/d estimated with Rademacher probes (Hutchinson 1990)."""

    def mean_curvature(params, args, key):
        leaves, treedef = jax.tree.flatten(params)
        d = sum(x.size for x in leaves)
        grad = jax.grad(lambda p: f(p, *args))

        def one(k):
            keys = jax.random.split(k, len(leaves))
            v = jax.tree.unflatten(
                treedef, [jax.random.rademacher(kk, x.shape, x.dtype) for kk, x in zip(keys, leaves)]
            )
            hv = jax.jvp(grad, (params,), (v,))[1]
            return sum(jnp.sum(a * b) for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(hv)))

        return jnp.mean(jax.vmap(one)(jax.random.split(key, HUTCHINSON_PROBES))) / d

    return jax.jit(mean_curvature)


_hutchinson_fns: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_negated_fns: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _nonnegative(value) -> float:
    value = float(value)
    return max(value, 0.0) if math.isfinite(value) else 0.0


def mean_hessian_eigenvalue(loss_fn, params, data, *, seed: int = 0) -> float:
    """tr(∇²L)/d at ``params`` (Hutchinson, on ≤ 4096 examples of ``data``); 0 if negative or not finite."""
    n = jax.tree.leaves(data)[0].shape[0]
    if n > HUTCHINSON_SUBSET:
        idx = np.random.default_rng(seed).choice(n, HUTCHINSON_SUBSET, replace=False)
        data = jax.tree.map(lambda x: jnp.asarray(x)[idx], data)
    fn = _cached(_hutchinson_fns, loss_fn, _hutchinson)
    return _nonnegative(fn(params, (data,), jax.random.PRNGKey(seed)))


def prior_curvature(log_prior, params, *, seed: int = 0) -> float:
    """tr(∇²(-log φ))/d at ``params`` (Hutchinson); 0 if negative or not finite."""
    negated = _cached(_negated_fns, log_prior, lambda lp: (lambda p: -lp(p)))
    fn = _cached(_hutchinson_fns, negated, _hutchinson)
    return _nonnegative(fn(params, (), jax.random.PRNGKey(seed)))
