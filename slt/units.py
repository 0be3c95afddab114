"""Several sets of chains ("units") in one compiled program: the batch axis of every LLC estimator.

A unit is one set of ``num_chains`` chains with its own centre w* and its own
restriction: a checkpoint of a sweep's group, a component of a refined LLC, or
both (checkpoint × component). :func:`run_units` stacks U units into U·C
chains of one program (:func:`slt.sampling.run_chains`): a centre shared by all
units stays one copy, otherwise it gets a per-chain axis; likewise the masks.
Every unit gets the chain keys ``estimate_llc(seed=seed)`` would give it, so a
unit run with others equals the same unit run alone (common random numbers
across checkpoints and components), and K units cost K× the chain-steps of one
with one compile.

With an :class:`slt.burnin.AutoBurnin` the units burn in together until every
unit's λ̂ has levelled off, then draw from where they stopped.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from typing import Any, Callable

import jax
import numpy as np

from slt import sampling
from slt.burnin import AutoBurnin, BurninResult, burn_in, merge_runs
from slt.posterior import Hyperparameters
from slt.samplers.base import get_sampler
from slt.settings import LLCConfig, run_config

PyTree = Any


@dataclass
class Unit:
    """One set of chains: localized at ``center`` (w*), moving the coordinates ``mask`` frees (None: all)."""

    center: PyTree
    init_loss: float  # L(w*) on the full data
    mask: PyTree | None = None


@dataclass
class UnitsRun:
    """Per-unit runs (burn-in and draws together) and the settings they ended with."""

    runs: list[sampling.SamplingResult]
    config: LLCConfig  # with the burn-in steps taken and the step the draws used
    burnin: BurninResult | None = None


def _stack(trees: list, num_chains: int):
    """[U·C, ...] host arrays: each unit's tree repeated for its chains."""
    return jax.tree.map(lambda *xs: np.repeat(np.stack([np.asarray(x) for x in xs]), num_chains, axis=0), *trees)


def program_layout(units: list[Unit], num_chains: int) -> tuple[PyTree, bool, PyTree | None, str | None]:
    """(centre, per chain?, mask, mask mode) of the program for these units (shared where all units share it)."""
    shared_center = all(u.center is units[0].center for u in units)
    center = units[0].center if shared_center else _stack([u.center for u in units], num_chains)
    masks = [u.mask for u in units]
    if all(m is None for m in masks):
        return center, not shared_center, None, None
    if all(m is masks[0] for m in masks):
        return center, not shared_center, masks[0], "shared"
    template = next(m for m in masks if m is not None)
    full = [m if m is not None else jax.tree.map(lambda x: np.ones(np.shape(x), bool), template) for m in masks]
    return center, not shared_center, _stack(full, num_chains), "per_chain"


def run_units(loss_fn: Callable, data: PyTree, units: list[Unit], config: LLCConfig, *, acceptance_checks: int = 100,
              progress: bool | None = None, desc: str = "sampling", devices=None,
              auto_burnin: AutoBurnin | None = None, adapt_step: bool = False, observer=None, probes=None,
              log_prior=None) -> UnitsRun:
    """Sample every unit with ``config`` (per unit: ``config.num_chains`` chains) as one program.

    ``auto_burnin``: burn in until every unit's λ̂ has levelled off (``config.num_burnin`` is then ignored);
    ``adapt_step``: the burn-in may halve a calibrated step (:func:`slt.burnin.burn_in`). ``observer``
    (:class:`slt.observables.Observer`, with its ``probes``) records statistics at the draws only, not
    during the burn-in. ``log_prior``: sample exp(-nβ·L)·φ instead of the localized posterior.
    """
    k, count = config.num_chains, len(units)
    center, per_chain_center, mask, mask_mode = program_layout(units, k)
    plain = replace(run_config(config, acceptance_checks=acceptance_checks, progress=progress),
                    num_chains=count * k, center_per_chain=per_chain_center, mask=mask_mode)
    draws = replace(plain, observer=observer)
    keys = np.tile(sampling.chain_keys(config.seed, k, sampling.prng_impl(draws)), (count, 1))
    hyper = Hyperparameters(config.step_size, config.nbeta, config.localization)

    def run(run_cfg, step, state=None, return_state=False, observe_from=None):
        return sampling.run_chains(loss_fn, center, data, hyper._replace(step_size=step), config=run_cfg,
                                   chain_keys=keys, mask=mask, progress_desc=desc, devices=devices,
                                   init_state=state, return_state=return_state, log_prior=log_prior,
                                   probes=probes, observe_from=observe_from)

    if auto_burnin is None:
        whole = run(draws, config.step_size, observe_from=config.num_burnin)
        return UnitsRun(split_units(whole, count, k), config)
    langevin = get_sampler(config.sampler).ACCEPTANCE == "checked"

    def run_chunk(state, steps, step):
        chunk = replace(plain, num_steps=steps, progress_every=0,
                        acceptance_every=max(1, steps // 20) if adapt_step and langevin else 0)
        return run(chunk, step, state, return_state=True)

    init_losses = np.repeat([u.init_loss for u in units], k)[:, None]
    show = sys.stderr.isatty() if progress is None else progress
    burn = burn_in(run_chunk, lambda losses: config.nbeta * (losses - init_losses),
                   auto_burnin.resolved(draws.num_steps), step_size=config.step_size, adapt_step=adapt_step,
                   progress=show, groups=[np.arange(u * k, (u + 1) * k) for u in range(count)] if count > 1 else None)
    config = replace(config, num_burnin=burn.steps, step_size=burn.step_size)
    whole = merge_runs(burn, run(draws, config.step_size, burn.state, observe_from=burn.steps))
    return UnitsRun(split_units(whole, count, k), config, burn)


def split_units(run: sampling.SamplingResult, count: int, num_chains: int) -> list[sampling.SamplingResult]:
    """The run of each of ``count`` units of ``num_chains`` chains (timing divided among them)."""
    return [split_chains(run, slice(u * num_chains, (u + 1) * num_chains), share=count) for u in range(count)]


def split_chains(run: sampling.SamplingResult, chains: slice, *, share: int = 1) -> sampling.SamplingResult:
    """The chains ``chains`` of a run as a run of their own (its timing divided among ``share`` such parts)."""
    return sampling.SamplingResult(
        loss_trace=run.loss_trace[chains], acceptance=run.acceptance[chains], acceptance_steps=run.acceptance_steps,
        divergent_step=run.divergent_step[chains], compile_seconds=run.compile_seconds / share,
        sample_seconds=run.sample_seconds / share, extras=dict(run.extras),
        observations=None if run.observations is None else jax.tree.map(lambda x: x[chains], run.observations),
    )
