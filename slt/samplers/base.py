"""What every sampler module provides, and the registry of sampler names.

A sampler module (one file per algorithm, as in blackjax) defines

- ``init(position, rng_key, batch, hp, target, **options) -> State``
- ``build_kernel(target, **options) -> kernel(rng_key, state, batch, hp) -> (State, StepInfo)``
- ``LANGEVIN_PROPOSAL``: whether the position update is a (preconditioned)
  Langevin proposal, so that its MALA acceptance probability is defined, and
  ``preconditioner(state, options)`` giving its diagonal G (None = identity).
- ``FULL_BATCH_ONLY``: whether minibatches are refused (MALA).

``target`` is a :class:`slt.posterior.Target` (energy and its gradient);
``hp`` is :class:`slt.posterior.Hyperparameters`.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

import jax
import jax.numpy as jnp

SAMPLERS = ("sgld", "psgld", "sghmc", "sgnht", "mala")


class StepInfo(NamedTuple):
    loss: jax.Array  # L_B(w_t) at the position before the step (minibatch loss)
    energy: jax.Array  # U_B(w_t)
    acceptance: jax.Array = jnp.nan  # a real MH acceptance (MALA only)


def get_sampler(name: str):
    """The module implementing sampler ``name``."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler={name!r} is not known; choose one of {', '.join(SAMPLERS)}")
    return importlib.import_module(f"slt.samplers.{name}")
