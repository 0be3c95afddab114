"""Thin adapters from Flax models to the ``loss_fn(params, batch)`` + pytree the samplers use.

Both take ``loss(model, batch) -> scalar`` where ``model`` is callable like
the network (``model(x)``), so one loss definition serves NNX and Linen.
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
