"""Stochastic gradient Langevin dynamics (Welling & Teh 2011).

    Δw = -(ε/2)·∇U_B(w) + N(0, ε·I)

with ``U_B = nβ·L_B + γ/2·‖w - w*‖²`` (Lau et al. 2023): blackjax's
overdamped Langevin step with ``h = ε/2``, written as one fused update with
one flat noise draw per step (:func:`slt.samplers.noise.tree_normal`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from slt.samplers.base import StepInfo
from slt.samplers.noise import tree_normal

LANGEVIN_PROPOSAL = True  # proposals are N(w - ε/2·∇U, ε·I): MALA acceptance is defined
FULL_BATCH_ONLY = False


class SGLDState(NamedTuple):
    position: object


def init(position, rng_key, batch, hp, target, **options) -> SGLDState:
    """The SGLD state at ``position`` (``rng_key`` draws any initial momentum)."""
    del rng_key, batch, hp, target
    return SGLDState(position)


def build_kernel(target, **options):
    """``kernel(rng_key, state, batch, hp) -> (state, StepInfo)``: one SGLD step on ``target``."""
    if options:
        raise TypeError(f"sgld takes no sampler options, got {sorted(options)}")

    def kernel(rng_key, state: SGLDState, batch, hp):
        (energy, loss), grad = target.value_and_grad(state.position, batch, hp)
        noise = tree_normal(rng_key, state.position)
        half, scale = 0.5 * hp.step_size, jnp.sqrt(hp.step_size)
        position = jax.tree.map(
            lambda w, g, z: w - (half * g).astype(w.dtype) + (scale * z).astype(w.dtype), state.position, grad, noise
        )
        return SGLDState(position), StepInfo(loss=loss, energy=energy)

    return kernel


def preconditioner(state, options):
    """Identity: SGLD proposals are isotropic."""
    return None
