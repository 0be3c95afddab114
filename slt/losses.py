"""Full-data loss L(w) = (1/n)·Σ_i ℓ(w; x_i), computed in chunks when data is large."""

from __future__ import annotations

import weakref

import jax

_jitted: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _jit(loss_fn):
    try:
        fn = _jitted.get(loss_fn)
        if fn is None:
            fn = _jitted[loss_fn] = jax.jit(loss_fn)
        return fn
    except TypeError:  # not weak-referenceable
        return jax.jit(loss_fn)


def full_data_loss(loss_fn, params, data, *, chunk_size: int = 65536) -> float:
    """Mean loss over all n examples: one call when n ≤ chunk_size, else a size-weighted mean of chunks.

    ``loss_fn`` must be a mean over its batch, so chunk means combine as Σ_c n_c·L_c / n.
    """
    fn = _jit(loss_fn)
    n = jax.tree.leaves(data)[0].shape[0]
    if n <= chunk_size:
        return float(fn(params, data))
    total = 0.0
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        chunk = jax.tree.map(lambda x: x[start:stop], data)
        total += float(fn(params, chunk)) * (stop - start)
    return total / n
