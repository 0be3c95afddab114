"""Stochastic gradient Langevin dynamics (Welling & Teh 2011).

    Δw = -(ε/2)·∇U_B(w) + N(0, ε·I)

with ``U_B = nβ·L_B + γ/2·‖w - w*‖²`` (Lau et al. 2023). The update is
blackjax's overdamped Langevin solver with its step ``h = ε/2``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
from blackjax.sgmcmc.diffusions import overdamped_langevin

from slt.samplers.base import StepInfo

LANGEVIN_PROPOSAL = True  # proposals are N(w - ε/2·∇U, ε·I): MALA acceptance is defined
FULL_BATCH_ONLY = False


class SGLDState(NamedTuple):
    position: object


def init(position, rng_key, batch, hp, target, **options) -> SGLDState:
    del rng_key, batch, hp, target
    return SGLDState(position)


def build_kernel(target, **options):
    if options:
        raise TypeError(f"sgld takes no sampler options, got {sorted(options)}")
    diffusion = overdamped_langevin()

    def kernel(rng_key, state: SGLDState, batch, hp):
        (energy, loss), grad = target.value_and_grad(state.position, batch, hp)
        logdensity_grad = jax.tree.map(lambda g: -g, grad)
        position = diffusion(rng_key, state.position, logdensity_grad, hp.step_size / 2)
        return SGLDState(position), StepInfo(loss=loss, energy=energy)

    return kernel


def preconditioner(state, options):
    """Identity: SGLD proposals are isotropic."""
    return None
