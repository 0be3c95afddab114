"""Stochastic gradient Nosé–Hoover thermostat (Ding et al. 2014).

    w ← w + h·p
    p ← (1 - ξ·h)·p - h·∇U_B(w) + N(0, 2·A·h)
    ξ ← ξ + h·(‖p‖²/d - 1)

The thermostat ξ adapts the friction so that the kinetic energy per
dimension stays at 1, absorbing unknown minibatch-gradient noise. This is
blackjax's SGNHT kernel and state (it keeps p and ξ between steps), run with
``h = √(ε/2)`` and ``A = friction / h`` so that step sizes are on the SGLD
scale; ξ starts at A. The thermostat is kept: a version without it is SGHMC.

Options: ``friction`` (diffusion A·h per step, in (0, 1], default 0.1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from blackjax.sgmcmc.diffusions import sgnht as sgnht_diffusion
from blackjax.sgmcmc.sgnht import SGNHTState
from blackjax.util import generate_gaussian_noise

from slt.samplers.base import StepInfo

LANGEVIN_PROPOSAL = False
FULL_BATCH_ONLY = False
DEFAULTS = {"friction": 0.1}


def _options(options):
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"sgnht options are {sorted(DEFAULTS)}, got unknown {sorted(unknown)}")
    opts = {**DEFAULTS, **options}
    if not 0 < opts["friction"] <= 1:
        raise ValueError(f"friction must be in (0, 1], got {opts['friction']}")
    return opts


def init(position, rng_key, batch, hp, target, **options) -> SGNHTState:
    del batch, target
    friction = _options(options)["friction"]
    h = jnp.sqrt(hp.step_size / 2)
    return SGNHTState(position, generate_gaussian_noise(rng_key, position), friction / h)


def build_kernel(target, **options):
    friction = _options(options)["friction"]

    def kernel(rng_key, state: SGNHTState, batch, hp):
        (energy, loss), grad = target.value_and_grad(state.position, batch, hp)
        h = jnp.sqrt(hp.step_size / 2)
        solver = sgnht_diffusion(alpha=friction / h)
        logdensity_grad = jax.tree.map(lambda g: -g, grad)
        position, momentum, xi = solver(
            rng_key, state.position, state.momentum, state.xi, logdensity_grad, h
        )
        return SGNHTState(position, momentum, xi), StepInfo(loss=loss, energy=energy)

    return kernel


def preconditioner(state, options):
    return None
