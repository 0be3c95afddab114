"""Run many chains of one sampler as one compiled program.

``lax.scan`` over steps × ``vmap`` over chains; minibatches are drawn on the
device; only scalars are recorded per step (the minibatch loss, and every
few steps the MALA acceptance probability of the proposal). The compiled
program is cached on (loss function, settings, shapes), so a second run with
the same shapes never recompiles; all numbers (ε, nβ, γ) are traced,
per-chain inputs.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from slt.posterior import Hyperparameters, Target, make_target
from slt.samplers.base import get_sampler

PyTree = Any


@dataclass(frozen=True)
class RunConfig:
    """Static settings of one sampling program (hashable: part of the compile-cache key)."""

    sampler: str
    num_chains: int
    num_steps: int
    batch_size: int
    sampler_options: tuple[tuple[str, Any], ...] = ()
    acceptance_every: int = 0  # check the MALA acceptance every k steps; 0 = never
    progress_every: int = 0  # advance the progress bar every k steps; 0 = no bar
    center_per_chain: bool = False  # center leaves carry a leading [num_chains] axis (several checkpoints in one run)


@dataclass
class SamplingResult:
    """Scalar traces of one run; nothing per-step is parameter-sized."""

    loss_trace: np.ndarray  # [chains, steps] minibatch loss L_B(w_t) before step t
    acceptance: np.ndarray  # [chains, checks] MALA acceptance probability at the checked steps
    acceptance_steps: np.ndarray  # [checks] step index of each check
    divergent_step: np.ndarray  # [chains] first step with a non-finite loss, -1 if none
    compile_seconds: float
    sample_seconds: float
    extras: dict = field(default_factory=dict)


def langevin_acceptance(target: Target, w, w_new, precond, batch, hp) -> jax.Array:
    """MALA acceptance probability of the Langevin move w → w_new.

    α = min(1, exp(U(w) - U(w') + log q(w|w') - log q(w'|w))),
    q(b|a) = N(b; a - (ε/2)·G·∇U(a), ε·G), with U the minibatch energy, as in
    the health check of Furman & Lau (arXiv 2402.03698).
    """
    (u0, _), g0 = target.value_and_grad(w, batch, hp)
    (u1, _), g1 = target.value_and_grad(w_new, batch, hp)
    eps = hp.step_size
    if precond is None:
        precond = jax.tree.map(lambda x: jnp.ones((), x.dtype), w)

    def log_q(to, frm, grad_frm):
        terms = jax.tree.map(
            lambda b, a, g, p: jnp.sum(jnp.square(b - a + 0.5 * eps * p * g) / p), to, frm, grad_frm, precond
        )
        return -sum(jax.tree.leaves(terms)) / (2 * eps)

    log_alpha = u0 - u1 + log_q(w, w_new, g1) - log_q(w_new, w, g0)
    return jnp.exp(jnp.minimum(0.0, log_alpha))


_progress_bar: list = [None]


def _progress_tick(step, every):
    bar = _progress_bar[0]
    if bar is not None:
        bar.update(int(every))


def _program(center, init_positions, data, hyper, chain_keys, *, loss_fn, log_prior, config: RunConfig):
    algo = get_sampler(config.sampler)
    options = dict(config.sampler_options)
    n = jax.tree.leaves(data)[0].shape[0]
    full_batch = config.batch_size >= n
    center_axis = 0 if config.center_per_chain else None

    def draw_batch(key):
        if full_batch:
            return data
        idx = jax.random.randint(key, (config.batch_size,), 0, n)
        return jax.tree.map(lambda x: jnp.take(x, idx, axis=0), data)

    if init_positions is None:
        if config.center_per_chain:
            init_positions = center
        else:
            init_positions = jax.tree.map(lambda x: jnp.broadcast_to(x, (config.num_chains,) + x.shape), center)

    def init_chain(position, key, hp, chain_center):
        key = jax.random.fold_in(key, config.num_steps)
        target = make_target(loss_fn, chain_center, log_prior)
        return algo.init(position, key, draw_batch(key), hp, target, **options)

    states = jax.vmap(init_chain, in_axes=(0, 0, 0, center_axis))(init_positions, chain_keys, hyper, center)
    check_acceptance = algo.LANGEVIN_PROPOSAL and config.acceptance_every > 0

    def chain_step(state, key, hp, chain_center, step, check):
        target = make_target(loss_fn, chain_center, log_prior)
        kernel = algo.build_kernel(target, **options)
        k_batch, k_move = jax.random.split(jax.random.fold_in(key, step))
        batch = draw_batch(k_batch)
        new_state, info = kernel(k_move, state, batch, hp)
        if check_acceptance:
            nan = jnp.full((), jnp.nan, info.loss.dtype)
            acc = jax.lax.cond(
                check,
                lambda: langevin_acceptance(
                    target, state.position, new_state.position, algo.preconditioner(new_state, options), batch, hp
                ).astype(info.loss.dtype),
                lambda: nan,
            )
        else:
            acc = jnp.asarray(info.acceptance, info.loss.dtype)
        return new_state, (info.loss, acc)

    step_all = jax.vmap(chain_step, in_axes=(0, 0, 0, center_axis, None, None))

    def body(carry, step):
        states, divergent_step = carry
        check = (step % max(config.acceptance_every, 1)) == 0
        states, (loss, acc) = step_all(states, chain_keys, hyper, center, step, check)
        bad = ~jnp.isfinite(loss)
        divergent_step = jnp.where(bad & (divergent_step < 0), step, divergent_step)
        if config.progress_every:
            jax.lax.cond(
                (step + 1) % config.progress_every == 0,
                lambda: jax.debug.callback(_progress_tick, step, config.progress_every),
                lambda: None,
            )
        return (states, divergent_step), (loss, acc)

    divergent0 = jnp.full((config.num_chains,), -1, jnp.int32)
    (_, divergent_step), (losses, accs) = jax.lax.scan(
        body, (states, divergent0), jnp.arange(config.num_steps, dtype=jnp.int32)
    )
    return losses.T, accs.T, divergent_step


_jitted_program = jax.jit(_program, static_argnames=("loss_fn", "log_prior", "config"))
_compiled_cache: OrderedDict = OrderedDict()
_CACHE_SIZE = 32


def _abstract_key(tree) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    return (treedef, tuple((np.shape(x), jnp.result_type(x), getattr(x, "sharding", None)) for x in leaves))


def compiled_program(loss_fn, log_prior, config: RunConfig, args: tuple):
    """The compiled sampling program for these settings and argument shapes, and its compile time (0 if cached)."""
    key = (loss_fn, log_prior, config, _abstract_key(args))
    if key in _compiled_cache:
        _compiled_cache.move_to_end(key)
        return _compiled_cache[key], 0.0
    start = time.perf_counter()
    compiled = _jitted_program.lower(*args, loss_fn=loss_fn, log_prior=log_prior, config=config).compile()
    seconds = time.perf_counter() - start
    _compiled_cache[key] = compiled
    if len(_compiled_cache) > _CACHE_SIZE:
        _compiled_cache.popitem(last=False)
    return compiled, seconds


def run_chains(
    loss_fn: Callable,
    center: PyTree,
    data: PyTree,
    hyper: Hyperparameters,
    *,
    config: RunConfig,
    seed: int | jax.Array = 0,
    init_positions: PyTree | None = None,
    log_prior: Callable | None = None,
    progress_desc: str = "sampling",
) -> SamplingResult:
    """Run ``config.num_chains`` chains of ``config.sampler`` on the local posterior at ``center``.

    ``hyper`` holds per-chain arrays of shape [num_chains] (broadcast from scalars).
    With ``config.center_per_chain``, every leaf of ``center`` has a leading
    [num_chains] axis: chain c is localized at its own w*_c (e.g. G
    checkpoints × K chains as one program).
    Inputs are assumed validated (see :mod:`slt.validation`).
    """
    dtype = jnp.result_type(*jax.tree.leaves(center))
    hyper = Hyperparameters(*(jnp.broadcast_to(jnp.asarray(v, dtype), (config.num_chains,)) for v in hyper))
    key = jax.random.PRNGKey(seed) if isinstance(seed, int) else seed
    chain_keys = jax.random.split(key, config.num_chains)
    center = jax.tree.map(jnp.asarray, center)
    data = jax.tree.map(jnp.asarray, data)
    args = (center, init_positions, data, hyper, chain_keys)
    compiled, compile_seconds = compiled_program(loss_fn, log_prior, config, args)

    bar = None
    if config.progress_every:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.num_steps, desc=progress_desc, unit="step", leave=False)
    _progress_bar[0] = bar
    try:
        start = time.perf_counter()
        losses, accs, divergent = jax.block_until_ready(compiled(*args))
        sample_seconds = time.perf_counter() - start
        jax.effects_barrier()
    finally:
        _progress_bar[0] = None
        if bar is not None:
            bar.close()

    accs = np.asarray(accs)
    if config.acceptance_every:
        steps = np.arange(0, config.num_steps, config.acceptance_every)
        accs = accs[:, steps]
    else:
        steps = np.flatnonzero(np.isfinite(accs).any(axis=0))
        accs = accs[:, steps]
    return SamplingResult(
        loss_trace=np.asarray(losses),
        acceptance=accs,
        acceptance_steps=steps,
        divergent_step=np.asarray(divergent),
        compile_seconds=compile_seconds,
        sample_seconds=sample_seconds,
    )
