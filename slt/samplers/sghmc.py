"""Stochastic gradient Hamiltonian Monte Carlo (Chen et al. 2014, eq. 15)
with persistent momentum.

    p ← (1 - f)·p - h·∇U_B(w) + N(0, 2f·I)
    w ← w + h·p

with ``h = √(ε/2)`` and friction ``f = α·h`` per step. With ``f = 1`` this
is exactly SGLD with step ε (w ← w - (ε/2)·∇U + N(0, ε)), so step sizes
transfer; smaller friction keeps momentum between steps.

Written here, not taken from blackjax: blackjax's SGHMC kernel redraws the
momentum every step, and its ``diffusions.sghmc`` moves w with the *old*
momentum (explicit Euler), which heats the chain (measured: λ̂ 0.49 vs the
exact 0.354 on K = w1²w2², t = 100); the momentum-first order of the paper
(symplectic Euler) does not.

Options: ``friction`` (f, momentum damping per step, in (0, 1], default 0.1),
and the SGLD family's ``noise_level`` (scales the N(0, 2f) term) and ``bounding_box``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from slt.samplers.base import StepInfo, langevin_noise
from slt.samplers.noise import tree_normal
from slt.validation import SLTInputError

ACCEPTANCE = None  # the position update is not a Langevin proposal
FULL_BATCH_ONLY = False
DEFAULTS = {"friction": 0.1}


class SGHMCState(NamedTuple):
    position: object
    momentum: object


def check_own_options(options) -> None:
    """friction in (0, 1] (:func:`slt.samplers.base.check_options`)."""
    friction = options.get("friction", DEFAULTS["friction"])
    if not (isinstance(friction, (int, float)) and not isinstance(friction, bool) and 0 < friction <= 1):
        raise SLTInputError(f"sampler_options['friction'] must be in (0, 1], got {friction!r}")


def friction_option(options) -> float:
    """The friction f per step (options already checked)."""
    return float(options.get("friction", DEFAULTS["friction"]))


def init(position, rng_key, batch, hp, target, **options) -> SGHMCState:
    """The SGHMC state at ``position`` (``rng_key`` draws any initial momentum)."""
    del batch, hp, target
    return SGHMCState(position, tree_normal(rng_key, position))


def build_kernel(target, **options):
    """``kernel(rng_key, state, batch, hp) -> (state, StepInfo)``: one SGHMC step on ``target``."""
    friction = friction_option(options)

    def kernel(rng_key, state: SGHMCState, batch, hp):
        (_, loss), grad = target.value_and_grad(state.position, batch, hp)
        h = jnp.sqrt(hp.step_size / 2)
        noise = langevin_noise(rng_key, state.position, options)
        momentum = jax.tree.map(
            lambda p, g, z: (1 - friction) * p - h * g + jnp.sqrt(2 * friction) * z, state.momentum, grad, noise
        )
        position = jax.tree.map(lambda w, p: w + h * p, state.position, momentum)
        return SGHMCState(position, momentum), StepInfo(loss=loss)

    return kernel


def preconditioner(state, options):
    """None: no Langevin proposal preconditioner to report."""
    return None
