"""Metropolis-adjusted Langevin (Roberts & Tweedie 1996), full batch: the
exact reference sampler of the tempered local posterior.

Proposal w' = w - (ε/2)·∇U(w) + N(0, ε·I), accepted with the Metropolis–
Hastings probability. blackjax's ``mala`` kernel with ``step_size = ε/2``
and ``logdensity = -U``. The loss at each draw is recovered from the
log-density: L(w) = (U(w) - prior energy) / nβ.
"""

from __future__ import annotations

import blackjax

from slt.samplers.base import StepInfo

ACCEPTANCE = "exact"  # its own Metropolis–Hastings acceptance is reported
FULL_BATCH_ONLY = True
DEFAULTS: dict = {}


def init(position, rng_key, batch, hp, target, **options):
    """The MALA state at ``position`` (``rng_key`` draws any initial momentum)."""
    del rng_key

    return blackjax.mcmc.mala.init(position, lambda w: -target.energy(w, batch, hp)[0])


def build_kernel(target, **options):
    """``kernel(rng_key, state, batch, hp) -> (state, StepInfo)``: one MALA step on ``target``."""
    mala_kernel = blackjax.mcmc.mala.build_kernel()

    def kernel(rng_key, state, batch, hp):
        loss_before = (-state.logdensity - target.prior_energy(state.position, hp)) / hp.nbeta
        new_state, info = mala_kernel(
            rng_key, state, lambda w: -target.energy(w, batch, hp)[0], hp.step_size / 2
        )
        return new_state, StepInfo(loss=loss_before, acceptance=info.acceptance_rate)

    return kernel


def preconditioner(state, options):
    """None: MALA reports its own acceptance."""
    return None
