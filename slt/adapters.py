"""Thin adapters from Flax and Equinox models to the ``loss_fn(params, batch)`` + pytree the samplers use.

All take ``loss(model, batch) -> scalar`` where ``model`` is callable like
the network (``model(x)``), so one loss definition serves NNX, Linen and
Equinox. PyTorch modules: :func:`slt.from_torch` (``slt.torch_bridge``).
"""

from __future__ import annotations

from typing import Any, Callable

from flax import nnx


def from_nnx(model: nnx.Module, loss: Callable[[Any, Any], Any], *, wrt=nnx.Param):
    """``(loss_fn, params)`` for a Flax NNX module.

    ``params`` is the ``nnx.State`` of the ``wrt`` variables (default
    ``nnx.Param``) from ``nnx.split``; other state (batch stats, RNG counters)
    is held fixed at its current value. ``loss_fn(params, batch)`` merges the
    module back (``nnx.merge``) and calls ``loss(model, batch)``.
    """
    graphdef, params, rest = nnx.split(model, wrt, ...)

    def loss_fn(params, batch):
        return loss(nnx.merge(graphdef, params, rest, copy=True), batch)

    return loss_fn, params


def from_linen(module, variables: dict, loss: Callable[[Any, Any], Any], *, collection: str = "params"):
    """``(loss_fn, params)`` for a Flax Linen module and its ``variables``.

    ``params = variables[collection]``; other collections are held fixed.
    ``loss_fn(params, batch)`` calls ``loss(apply, batch)`` with
    ``apply(*args) = module.apply({collection: params, ...}, *args)``.
    """
    fixed = {k: v for k, v in variables.items() if k != collection}

    def loss_fn(params, batch):
        def apply(*args, **kwargs):
            return module.apply({collection: params, **fixed}, *args, **kwargs)

        return loss(apply, batch)

    return loss_fn, variables[collection]


def from_equinox(model, loss: Callable[[Any, Any], Any], *, filter_spec=None):
    """``(loss_fn, params)`` for an Equinox module (``pip install "slt-jax[equinox]"``).

    ``params, static = eqx.partition(model, filter_spec)`` with
    ``filter_spec = eqx.is_inexact_array`` by default: the floating-point
    arrays are sampled, everything else (integer arrays, activation functions,
    sizes) is held fixed. ``loss_fn(params, batch)`` rebuilds the module with
    ``eqx.combine(params, static)`` and calls ``loss(model, batch)``.
    """
    try:
        import equinox as eqx
    except ImportError:
        from slt.validation import SLTInputError

        raise SLTInputError('slt.from_equinox needs equinox: pip install "slt-jax[equinox]"') from None
    params, static = eqx.partition(model, eqx.is_inexact_array if filter_spec is None else filter_spec)

    def loss_fn(params, batch):
        return loss(eqx.combine(params, static), batch)

    return loss_fn, params
