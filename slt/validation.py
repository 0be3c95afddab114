"""Checks of user input, run before anything is compiled.

Every error names the argument, says what was wrong and what to do.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


class SLTInputError(ValueError):
    """Raised for bad arguments, before any long computation starts."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`SLTInputError` with ``message`` unless ``condition``."""
    if not condition:
        raise SLTInputError(message)


def positive_number(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """A finite real number > 0 (or ≥ 0)."""
    ok = isinstance(value, (Real, np.floating, np.integer)) and not isinstance(value, bool)
    ok = ok or (hasattr(value, "shape") and np.shape(value) == ())
    require(ok, f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    bound_ok = value >= 0 if allow_zero else value > 0
    require(math.isfinite(value) and bound_ok, f"{name} must be a finite number {'≥' if allow_zero else '>'} 0, got {value}")
    return value


def positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """An integer ≥ ``minimum`` (bools refused)."""
    require(
        isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum,
        f"{name} must be an integer ≥ {minimum}, got {value!r}",
    )
    return int(value)


def data_size(data: Any) -> int:
    """n, the common leading axis of every array in ``data``."""
    leaves = jax.tree.leaves(data)
    require(len(leaves) > 0, "data is empty: pass a pytree of arrays whose leading axis indexes examples")
    sizes = set()
    for path, leaf in jax.tree_util.tree_flatten_with_path(data)[0]:
        shape = np.shape(leaf)
        where = jax.tree_util.keystr(path) or "data"
        require(len(shape) >= 1, f"data{where if where != 'data' else ''} is a scalar; every leaf needs a leading axis of examples")
        sizes.add(shape[0])
    require(len(sizes) == 1, f"data leaves disagree on the number of examples (leading axis sizes {sorted(sizes)}); align them")
    n = sizes.pop()
    require(n > 0, "data has 0 examples; pass at least one")
    return int(n)


def finite_data(data: Any) -> None:
    """Every floating-point leaf of ``data`` is finite (NaN or Inf in the data is a data error, not a step-size one)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(data)[0]:
        arr = np.asarray(leaf)
        if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.complexfloating):
            continue
        bad = ~np.isfinite(arr)
        if bad.any():
            where = jax.tree_util.keystr(path)
            rows = np.unique(np.nonzero(bad.reshape(bad.shape[0], -1) if bad.ndim > 1 else bad)[0])
            raise SLTInputError(
                f"data{where} has {int(bad.sum())} NaN/Inf value(s), in example(s) {', '.join(map(str, rows[:5]))}"
                f"{' ...' if len(rows) > 5 else ''}; clean or drop them before estimating (the sampler cannot)"
            )


def finite_params(params: Any) -> None:
    """Every leaf of ``params`` is a finite float array."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    require(len(leaves) > 0, "params is empty: pass the pytree of parameters to measure")
    for path, leaf in leaves:
        arr = np.asarray(leaf)
        where = jax.tree_util.keystr(path) or "params"
        require(
            np.issubdtype(arr.dtype, np.floating),
            f"params{where} has dtype {arr.dtype}; samplers move real parameters, cast it to float32",
        )
        require(
            bool(np.all(np.isfinite(arr))),
            f"params{where} contains NaN or Inf; measure at a finite checkpoint (check how it was saved)",
        )


def batch_size(value: int | None, n: int) -> int:
    """The minibatch size: n for None, else an integer in [1, n]."""
    if value is None:
        return n
    value = positive_int("batch_size", value)
    require(value <= n, f"batch_size={value} is larger than the number of examples n={n}; use batch_size ≤ {n} or None")
    return value


def scalar_loss(loss_fn, params, data, batch: int) -> None:
    """Trace (not compile) ``loss_fn`` on one batch and check it returns a float scalar."""
    example = jax.tree.map(lambda x: jax.ShapeDtypeStruct((batch,) + tuple(np.shape(x)[1:]), jnp.result_type(x)), data)
    params_shape = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)), params)
    try:
        out = jax.eval_shape(loss_fn, params_shape, example)
    except Exception as err:  # the user's function failed: say where
        raise SLTInputError(
            f"loss_fn(params, batch) failed on a batch of {batch} examples: {type(err).__name__}: {err}"
        ) from err
    shape = getattr(out, "shape", None)
    require(
        shape == (),
        f"loss_fn must return a scalar mean loss, got shape {shape}; reduce it with jnp.mean over the batch",
    )
    require(
        jnp.issubdtype(out.dtype, jnp.floating),
        f"loss_fn must return a float, got {out.dtype}",
    )
