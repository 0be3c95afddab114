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

LANGEVIN_PROPOSAL = False  # its real acceptance rate is reported instead
FULL_BATCH_ONLY = True


def init(position, rng_key, batch, hp, target, **options):
    """The MALA state at ``position`` (``rng_key`` draws any initial momentum)."""
    del rng_key

    return blackjax.mcmc.mala.init(position, lambda w: -target.energy(w, batch, hp)[0])


def build_kernel(target, **options):
    """``kernel(rng_key, state, batch, hp) -> (state, StepInfo)``: one MALA step on ``target``."""
    if options:
        raise TypeError(f"mala takes no sampler options, got {sorted(options)}")
    mala_kernel = blackjax.mcmc.mala.build_kernel()

    def kernel(rng_key, state, batch, hp):
        energy_before = -state.logdensity
        loss_before = (energy_before - target.prior_energy(state.position, hp)) / hp.nbeta
        new_state, info = mala_kernel(
            rng_key, state, lambda w: -target.energy(w, batch, hp)[0], hp.step_size / 2
        )
        return new_state, StepInfo(loss=loss_before, energy=energy_before, acceptance=info.acceptance_rate)

    return kernel


def preconditioner(state, options):
    """None: no Langevin proposal preconditioner to report."""
    return None
