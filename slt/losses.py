"""Full-data loss L(w) = (1/n)·Σ_i ℓ(w; x_i), computed in chunks when data is large."""

from __future__ import annotations

import math
import weakref

import jax

from slt.validation import SLTInputError

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


def initial_loss(loss_fn, params, data, given: float | None = None) -> float:
    """L(w*): ``given``, or the full-data loss; a non-finite value is an error before any sampling.

    The data were checked finite (:func:`slt.validation.finite_data`), so a NaN or Inf here comes from the
    model at w* (an overflow, a log of 0), not from the sampler's step size.
    """
    value = float(full_data_loss(loss_fn, params, data) if given is None else given)
    if not math.isfinite(value):
        raise SLTInputError(
            f"L(w*) = {value}: the loss is not finite at the checkpoint on the full data; check the model's forward "
            "pass at these parameters (overflow, log of 0) and the loss function, not the sampler"
        )
    return value
