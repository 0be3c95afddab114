"""Stochastic gradient Langevin dynamics (Welling & Teh 2011).

    Δw = -(ε/2)·∇U_B(w) + σ·N(0, ε·I)

with ``U_B = nβ·L_B + γ/2·‖w - w*‖²`` (Lau et al. 2023) and σ the
``noise_level`` option (1: SGLD; 0: noiseless descent, a diagnostic):
blackjax's overdamped Langevin step with ``h = ε/2``, written as one fused
update with one flat noise draw per step
(:func:`slt.samplers.noise.tree_normal`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from slt.samplers.base import StepInfo, langevin_noise

ACCEPTANCE = "checked"  # proposals are N(w - ε/2·∇U, ε·I): their MALA acceptance is defined
FULL_BATCH_ONLY = False
DEFAULTS: dict = {}


class SGLDState(NamedTuple):
    position: object


def init(position, rng_key, batch, hp, target, **options) -> SGLDState:
    """The SGLD state at ``position`` (``rng_key`` draws any initial momentum)."""
    del rng_key, batch, hp, target
    return SGLDState(position)


def build_kernel(target, **options):
    """``kernel(rng_key, state, batch, hp) -> (state, StepInfo)``: one SGLD step on ``target``."""

    def kernel(rng_key, state: SGLDState, batch, hp):
        (_, loss), grad = target.value_and_grad(state.position, batch, hp)
        noise = langevin_noise(rng_key, state.position, options)
        half, scale = 0.5 * hp.step_size, jnp.sqrt(hp.step_size)
        position = jax.tree.map(
            lambda w, g, z: w - (half * g).astype(w.dtype) + (scale * z).astype(w.dtype), state.position, grad, noise
        )
        return SGLDState(position), StepInfo(loss=loss)

    return kernel


def preconditioner(state, options):
    """Identity: SGLD proposals are isotropic."""
    return None
