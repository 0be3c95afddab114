"""Stochastic gradient Hamiltonian Monte Carlo (Chen et al. 2014) with
persistent momentum.

Euler solver of dw = p·dt, dp = -∇U·dt - α·p·dt + √(2α)·dW (blackjax's
``diffusions.sghmc``), run with ``h = √(ε/2)`` and ``α = friction / h``:

    w ← w + h·p,   p ← (1 - friction)·p - h·∇U_B(w) + N(0, 2·friction)

With ``friction = 1`` this is exactly SGLD with step ε, so step sizes
transfer; smaller friction keeps momentum between steps. Written around the
blackjax solver because blackjax's SGHMC *kernel* redraws the momentum at
every step, which turns it into a noisy SGLD.

Options: ``friction`` (momentum damping per step, in (0, 1], default 0.1).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from blackjax.sgmcmc.diffusions import sghmc as sghmc_diffusion
from blackjax.util import generate_gaussian_noise

from slt.samplers.base import StepInfo

LANGEVIN_PROPOSAL = False
FULL_BATCH_ONLY = False
DEFAULTS = {"friction": 0.1}


class SGHMCState(NamedTuple):
    position: object
    momentum: object


def _options(options):
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"sghmc options are {sorted(DEFAULTS)}, got unknown {sorted(unknown)}")
    opts = {**DEFAULTS, **options}
    if not 0 < opts["friction"] <= 1:
        raise ValueError(f"friction must be in (0, 1], got {opts['friction']}")
    return opts


def init(position, rng_key, batch, hp, target, **options) -> SGHMCState:
    del batch, hp, target
    return SGHMCState(position, generate_gaussian_noise(rng_key, position))


def build_kernel(target, **options):
    friction = _options(options)["friction"]

    def kernel(rng_key, state: SGHMCState, batch, hp):
        (energy, loss), grad = target.value_and_grad(state.position, batch, hp)
        h = jnp.sqrt(hp.step_size / 2)
        solver = sghmc_diffusion(alpha=friction / h)
        logdensity_grad = jax.tree.map(lambda g: -g, grad)
        position, momentum = solver(rng_key, state.position, state.momentum, logdensity_grad, h)
        return SGHMCState(position, momentum), StepInfo(loss=loss, energy=energy)

    return kernel


def preconditioner(state, options):
    return None
