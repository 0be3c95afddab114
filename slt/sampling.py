"""Run many chains of one sampler as one compiled program.

``lax.scan`` over steps × ``vmap`` over chains (× ``shard_map`` over devices,
see :mod:`slt.sharding`); minibatches are drawn on the device; only scalars
are recorded per step (the minibatch loss, and every few steps the MALA
acceptance probability of the proposal), so memory is O(chains × params)
whatever the number of steps. The compiled program is cached on (loss
function, settings, shapes), so a second run with the same shapes never
recompiles; all numbers (ε, nβ, γ) are traced, per-chain inputs.

Randomness: chain c has its own key; step t of chain c uses
``fold_in(key_c, t)`` split into a minibatch key and a move key (see
:func:`step_keys`), so results do not depend on how chains are placed on
devices, and a run continued from its :class:`ChainState` equals one long run.

Data larger than device memory: ``stream_chunks=K`` keeps the data on the
host and feeds each K-step chunk a host-gathered [K, chains, batch] block
(the same minibatch indices as the in-memory run), carrying the sampler
state between chunks.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from slt import sharding as shard
from slt.compilation_cache import ensure_default_cache
from slt.cpu import compile_lowered, cpu_compiler_options
from slt.posterior import Hyperparameters, Target, make_target
from slt.samplers import base
from slt.samplers.base import get_sampler
from slt.samplers.moves import constrain

PyTree = Any

#: PRNG implementation of the sampling program when ``RunConfig.prng_impl`` is None
#: (environment variable ``SLT_PRNG_IMPL`` overrides): "counter_hash" (threefry keys,
#: bulk bits from a keyed counter hash: the noise costs about half of threefry's;
#: see :mod:`slt.samplers.noise` and docs/performance.md), or any jax.random name.
DEFAULT_PRNG_IMPL = os.environ.get("SLT_PRNG_IMPL", "counter_hash")
#: Threefry in its non-partitionable form: each chain's noise is drawn on one
#: device, so the partitionable variant (about twice the work per bit) buys nothing.
THREEFRY_PARTITIONABLE = False
_INIT_FOLD = 2**31 - 1  # fold_in tag of the key that initialises a chain (never a step index)


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
    mask: str | None = None  # a restriction: None, "shared" (one mask) or "per_chain" (leading [num_chains] axis)
    observer: Any = None  # an slt.observables.Observer recording statistics of the positions at draws
    prng_impl: str | None = None  # "counter_hash" or a jax.random implementation ("threefry2x32", "rbg", ...); None = DEFAULT_PRNG_IMPL


class ChainState(NamedTuple):
    """Where a run stopped; ``run_chains(..., init_state=state)`` continues it exactly."""

    sampler_state: PyTree  # per-chain sampler state (leading [num_chains] axis)
    divergent_step: Any  # [chains] first non-finite step, -1 if none
    step: int  # global index of the next step
    chain_keys: Any  # [chains, key words] raw per-chain keys
    prng_impl: str


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
    final_state: ChainState | None = None  # with run_chains(..., return_state=True)
    observations: dict | None = None  # the observer's accumulators [chains, ...] (config.observer)


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


# ----------------------------------------------------------------------------
# keys and minibatches (shared with bench/speed.py's floor and the streaming path)
# ----------------------------------------------------------------------------


def prng_impl(config: RunConfig) -> str:
    """The PRNG implementation for a run: the config's, else the default (env SLT_PRNG_IMPL or counter_hash)."""
    return config.prng_impl or DEFAULT_PRNG_IMPL


def resolve_impl(name: str):
    """The ``impl`` argument for jax.random of a PRNG name (jax's names, or "counter_hash")."""
    if name == "counter_hash":
        from slt.samplers.noise import COUNTER_HASH

        return COUNTER_HASH
    return name


def chain_keys(seed: int | jax.Array, num_chains: int, impl: str = "threefry2x32") -> np.ndarray:
    """Raw per-chain keys [num_chains, words] of PRNG ``impl`` from an int seed or a key."""
    impl = resolve_impl(impl)
    if isinstance(seed, (int, np.integer)):
        base = jax.random.key(int(seed), impl=impl)
    else:
        seed = seed if isinstance(seed, jax.Array) else jnp.asarray(seed)
        if jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key):
            same = str(jax.random.key_impl(seed)) == str(jax.random.key_impl(jax.random.key(0, impl=impl)))
            data = None if same else jax.random.key_data(seed)
            base = seed if same else None
        else:
            data, base = seed, None
        if base is None:  # a raw key (e.g. jax.random.PRNGKey(s)): threefry words, re-keyed for ``impl``
            words = jnp.asarray(data, jnp.uint32).reshape(-1)
            tf = jax.random.wrap_key_data(words[:2], impl="threefry2x32")
            for w in words[2:]:
                tf = jax.random.fold_in(tf, w)
            need = jax.random.key_data(jax.random.key(0, impl=impl)).shape[-1]
            if need == 2:
                base = jax.random.wrap_key_data(jax.random.key_data(tf), impl=impl)
            else:
                more = jax.random.key_data(jax.random.split(tf, need // 2)).reshape(-1)
                base = jax.random.wrap_key_data(more, impl=impl)
    return np.asarray(jax.random.key_data(jax.random.split(base, num_chains)))


def step_keys(key: jax.Array, step) -> tuple[jax.Array, jax.Array]:
    """(minibatch key, move key) of one chain at global step ``step``."""
    k_batch, k_move = jax.random.split(jax.random.fold_in(key, step))
    return k_batch, k_move


def minibatch_indices(key: jax.Array, batch_size: int, n: int) -> jax.Array:
    """The example indices of one minibatch (with replacement)."""
    return jax.random.randint(key, (batch_size,), 0, n)


def draw_minibatch(data: PyTree, key: jax.Array, batch_size: int) -> PyTree:
    """A minibatch of ``batch_size`` examples (the full data when ``batch_size >= n``)."""
    n = jax.tree.leaves(data)[0].shape[0]
    if batch_size >= n:
        return data
    idx = minibatch_indices(key, batch_size, n)
    return jax.tree.map(lambda x: jnp.take(x, idx, axis=0), data)


# ----------------------------------------------------------------------------
# the compiled program
# ----------------------------------------------------------------------------


class ProgramInputs(NamedTuple):
    """The traced inputs of one sampling program (every number a run can change without recompiling)."""

    center: PyTree  # w* (shared), or with leading [chains] axis (config.center_per_chain)
    init: PyTree | None  # fresh: starting positions [chains, ...] or None (= center); continued: sampler states
    data: PyTree | None  # the data (replicated); None when minibatches are streamed
    hyper: Hyperparameters  # [chains] each
    keys: Any  # [chains, key words] raw per-chain keys
    start_step: Any  # int32: global index of the first step
    divergent: Any  # [chains] first non-finite step so far (continued runs), None when fresh
    batches: PyTree | None  # streamed minibatches [steps, chains, batch, ...]
    mask: PyTree | None = None  # restriction (True = free), shared or with leading [chains] axis (config.mask)
    probes: PyTree | None = None  # the observer's probe data (replicated)
    observe_from: Any = 0  # int32: global step of the first observation
    observe_count: Any = 0  # int32: observations the whole run makes (the blocks are split over them)
    observations: PyTree | None = None  # the observer's accumulators so far (continued runs)


class ProgramOutputs(NamedTuple):
    losses: Any  # [chains, steps]
    accs: Any  # [chains, steps] (NaN where not checked)
    divergent: Any  # [chains]
    states: PyTree | None  # final sampler states (return_states)
    observations: PyTree | None  # the observer's accumulators [chains, ...]


class _ProgressHolder:
    """The bar the program's host callback advances (a plain holder: JAX runs callbacks on its own threads)."""

    bar = None


_progress = _ProgressHolder()


def _progress_tick(step, every):
    bar = getattr(_progress, "bar", None)
    if bar is not None:
        bar.update(float(every))


class _Carry(NamedTuple):
    states: PyTree
    divergent: Any
    observations: PyTree | None


def _chain_axes(config: RunConfig) -> tuple:
    """vmap axes of (center, mask) for the per-chain functions."""
    return (0 if config.center_per_chain else None, 0 if config.mask == "per_chain" else None)


def _initial_states(inputs: ProgramInputs, algo, options, config: RunConfig, loss_fn, log_prior, keys):
    """Every chain's sampler state at its starting point (at the center when no starting points are given)."""
    num_chains = inputs.keys.shape[0]
    init = inputs.init
    if init is None:
        init = inputs.center if config.center_per_chain else jax.tree.map(
            lambda x: jnp.broadcast_to(x, (num_chains,) + x.shape), inputs.center
        )
    streamed = inputs.batches is not None
    first = jax.tree.map(lambda x: x[0], inputs.batches) if streamed else None

    def init_chain(position, key, hp, center, mask, batch):
        target = make_target(loss_fn, center, log_prior, mask)
        if not streamed:
            batch = draw_minibatch(inputs.data, step_keys(key, inputs.start_step)[0], config.batch_size)
        return algo.init(position, jax.random.fold_in(key, _INIT_FOLD), batch, hp, target, **options)

    center_axis, mask_axis = _chain_axes(config)
    return jax.vmap(init_chain, in_axes=(0, 0, 0, center_axis, mask_axis, 0 if streamed else None))(
        init, keys, inputs.hyper, inputs.center, inputs.mask, first
    )


def _step_function(inputs: ProgramInputs, algo, options, config: RunConfig, loss_fn, log_prior, keys):
    """``step_all(states, step, batch, checked) -> (states, loss, acc)``: one step of every chain.

    A step is the sampler's kernel followed by the move's constraints (:func:`slt.samplers.moves.constrain`);
    ``checked`` adds the MALA acceptance of the proposal (its ∇U(w) is the step's own: XLA merges the two,
    so a check costs one gradient).
    """
    streamed = inputs.batches is not None
    box = dict(config.sampler_options).get("bounding_box")
    kernel_options = base.kernel_options(options)

    def chain_step(state, key, hp, center, mask, step, batch, checked):
        target = make_target(loss_fn, center, log_prior, mask)
        kernel = algo.build_kernel(target, **kernel_options)
        k_batch, k_move = step_keys(key, step)
        batch = batch if streamed else draw_minibatch(inputs.data, k_batch, config.batch_size)
        new_state, info = kernel(k_move, state, batch, hp)
        new_state = constrain(new_state, state.position, center, mask, box)
        if not checked:
            return new_state, info.loss, jnp.asarray(info.acceptance, info.loss.dtype)
        acc = langevin_acceptance(
            target, state.position, new_state.position, algo.preconditioner(new_state, options), batch, hp
        )
        return new_state, info.loss, acc.astype(info.loss.dtype)

    center_axis, mask_axis = _chain_axes(config)

    def step_all(states, step, batch, checked):
        return jax.vmap(partial(chain_step, checked=checked),
                        in_axes=(0, 0, 0, center_axis, mask_axis, None, 0 if streamed else None))(
            states, keys, inputs.hyper, inputs.center, inputs.mask, step, batch
        )

    return step_all


def _observe_function(inputs: ProgramInputs, observer):
    """``observe(observations, positions, step) -> observations``: the observer's update at the draws it takes.

    Draw j = (step - observe_from)/every (taken when whole and < observe_count) goes to block
    ⌊j·blocks/observe_count⌋; the positions observed are those *before* the step, like the loss trace.
    One ``lax.cond`` per step on the (unbatched) step index, so steps without a draw skip the work.
    """
    def observe(observations, positions, step):
        offset = step - inputs.observe_from
        draw = offset // observer.every
        take = (offset >= 0) & (offset % observer.every == 0) & (draw < inputs.observe_count)
        block = (draw * observer.blocks) // jnp.maximum(inputs.observe_count, 1)
        update = jax.vmap(observer.update, in_axes=(0, 0, None, None, None))
        return jax.lax.cond(take, lambda o: update(o, positions, inputs.probes, draw, block), lambda o: o,
                            observations)

    return observe


def _local_program(inputs: ProgramInputs, *, loss_fn, log_prior, config: RunConfig, fresh: bool, return_states: bool,
                   num_devices: int) -> ProgramOutputs:
    """The program on one device: its chains are the leading axis of ``inputs.keys``."""
    algo = get_sampler(config.sampler)
    options = dict(config.sampler_options)
    impl = prng_impl(config)
    num_chains = inputs.keys.shape[0]
    keys = jax.vmap(lambda k: jax.random.wrap_key_data(k, impl=resolve_impl(impl)))(inputs.keys)
    observer = config.observer

    if fresh:
        states = _initial_states(inputs, algo, options, config, loss_fn, log_prior, keys)
        divergent = jnp.full((num_chains,), -1, jnp.int32)
    else:
        states, divergent = inputs.init, inputs.divergent
    observations = None
    if observer is not None:
        observations = inputs.observations
        if observations is None:
            positions = states.position
            observations = jax.vmap(observer.init, in_axes=(0, None))(positions, inputs.probes)
    step_all = _step_function(inputs, algo, options, config, loss_fn, log_prior, keys)
    observe = _observe_function(inputs, observer) if observer is not None else None

    def advance(carry: _Carry, i, batch, checked):
        """Step ``start_step + i`` of every chain; records the first non-finite loss and ticks the bar."""
        step = inputs.start_step + i
        observations = carry.observations
        if observe is not None:
            observations = observe(observations, carry.states.position, step)
        states, loss, acc = step_all(carry.states, step, batch, checked)
        bad = ~jnp.isfinite(loss)
        divergent = jnp.where(bad & (carry.divergent < 0), step, carry.divergent)
        if config.progress_every:
            jax.lax.cond(
                (step + 1) % config.progress_every == 0,
                lambda: jax.debug.callback(_progress_tick, step, config.progress_every / num_devices),
                lambda: None,
            )
        return _Carry(states, divergent, observations), loss, acc

    carry = _Carry(states, divergent, observations)
    if algo.ACCEPTANCE == "checked" and config.acceptance_every > 0:
        carry, losses, accs = _checked_loop(advance, carry, inputs.batches, inputs.start_step, num_chains,
                                            config.num_steps, config.acceptance_every)
    else:
        def body(carry, xs):
            i, batch = xs
            carry, loss, acc = advance(carry, i, batch, checked=False)
            return carry, (loss, acc)

        index = jnp.arange(config.num_steps, dtype=jnp.int32)
        carry, (losses, accs) = jax.lax.scan(body, carry, (index, inputs.batches))
    return ProgramOutputs(losses.T, accs.T, carry.divergent, carry.states if return_states else None,
                          carry.observations)


def _checked_loop(advance, carry, batches, start_step, num_chains, num_steps, every):
    """All steps, with the MALA check at the global steps ``step % every == 0`` and nowhere else.

    The steps between two checks run in a loop of their own, so no step pays
    for a ``lax.cond`` (a per-step cond cost 5% on the grokking MLP even where
    no check ran; docs/performance.md): a loop over blocks, each one checked step and a
    loop of the unchecked steps up to the next check; the first block lacks its
    check when the run does not start on one.
    ``start_step`` is traced (chunked and streamed runs), so the loop bounds are too.
    Returns (carry, losses [steps, chains], accs [steps, chains]).
    """
    batch0 = None if batches is None else jax.tree.map(lambda b: b[0], batches)
    _, loss0, _ = jax.eval_shape(lambda: advance(carry, 0, batch0, False))
    first = jnp.remainder(-start_step, every)  # the first checked step, relative to this program
    num_checks = jnp.maximum(0, (num_steps - first + every - 1) // every)

    def one(checked):
        def fn(i, state):
            carry, losses, accs = state
            batch = None if batches is None else jax.tree.map(lambda b: b[i], batches)
            carry, loss, acc = advance(carry, i, batch, checked)
            losses = losses.at[i].set(loss)
            accs = accs.at[i].set(acc.astype(accs.dtype)) if checked else accs
            return carry, losses, accs
        return fn

    plain, checked = one(False), one(True)

    has_prefix = (first > 0).astype(num_checks.dtype)  # unchecked steps before the first check: a block without its check

    def block(j, state):
        at = first + (j - has_prefix) * every
        state = jax.lax.cond(at >= 0, lambda c: checked(at, c), lambda c: c, state)  # once per block, not per step
        return jax.lax.fori_loop(jnp.maximum(at + 1, 0), jnp.minimum(at + every, num_steps), plain, state)

    losses = jnp.zeros((num_steps, num_chains), loss0.dtype)
    accs = jnp.full((num_steps, num_chains), jnp.nan, loss0.dtype)
    return jax.lax.fori_loop(0, num_checks + has_prefix, block, (carry, losses, accs))


def _input_specs(config: RunConfig, inputs: ProgramInputs) -> ProgramInputs:
    """shard_map specs: per-chain inputs split along ``"chain"``, the data, probes and shared center replicated."""
    chain, rep = P(shard.CHAIN_AXIS), P()
    return ProgramInputs(
        center=chain if config.center_per_chain else rep, init=chain, data=rep, hyper=chain, keys=chain,
        start_step=rep, divergent=chain, batches=P(None, shard.CHAIN_AXIS),
        mask=chain if config.mask == "per_chain" else rep, probes=rep, observe_from=rep, observe_count=rep,
        observations=chain,
    )


def _program(inputs: ProgramInputs, *, mesh=None, **static) -> ProgramOutputs:
    """The whole sampling program; with a mesh, :func:`jax.shard_map` over the ``"chain"`` axis."""
    if mesh is None:
        return _local_program(inputs, num_devices=1, **static)
    chain = P(shard.CHAIN_AXIS)
    out_specs = ProgramOutputs(chain, chain, chain, chain if static["return_states"] else None,
                               chain if static["config"].observer is not None else None)
    body = jax.shard_map(
        lambda a: _local_program(a, num_devices=mesh.size, **static),
        mesh=mesh, in_specs=(_input_specs(static["config"], inputs),), out_specs=out_specs, check_vma=False,
    )
    return body(inputs)


_STATIC = ("loss_fn", "log_prior", "config", "fresh", "return_states", "mesh")
_jitted_program = jax.jit(_program, static_argnames=_STATIC)
_compiled_cache: OrderedDict = OrderedDict()
_CACHE_SIZE = 32


def _abstract_key(tree) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    return (treedef, tuple((np.shape(x), jnp.result_type(x), getattr(x, "sharding", None)) for x in leaves))


def compiled_program(loss_fn, log_prior, config: RunConfig, inputs: ProgramInputs, *, fresh: bool = True,
                     return_states: bool = False, mesh=None):
    """The compiled sampling program for these settings and input shapes, and its compile time (0 if cached).

    Call it as ``compiled(inputs) -> ProgramOutputs``.
    """
    static = dict(loss_fn=loss_fn, log_prior=log_prior, config=config, fresh=fresh, return_states=return_states, mesh=mesh)
    platform = mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()
    options = cpu_compiler_options(platform)
    key = (loss_fn, log_prior, config, fresh, return_states, mesh, prng_impl(config), _abstract_key(inputs),
           tuple(sorted(options.items())))
    if key in _compiled_cache:
        _compiled_cache.move_to_end(key)
        compiled, seconds = _compiled_cache[key], 0.0
    else:
        ensure_default_cache()  # a later process loads this program from disk instead of compiling it
        start = time.perf_counter()
        with jax.threefry_partitionable(THREEFRY_PARTITIONABLE):
            compiled = compile_lowered(_jitted_program.lower(inputs, **static), options)
        seconds = time.perf_counter() - start
        _compiled_cache[key] = compiled
        if len(_compiled_cache) > _CACHE_SIZE:
            _compiled_cache.popitem(last=False)
    return compiled, seconds


# ----------------------------------------------------------------------------
# streaming: minibatch indices on the device, gathering on the host
# ----------------------------------------------------------------------------


def _indices_fn(impl: str, num_steps: int, batch_size: int, n: int):
    def fn(raw_keys, start):
        keys = jax.vmap(lambda k: jax.random.wrap_key_data(k, impl=resolve_impl(impl)))(raw_keys)
        steps = start + jnp.arange(num_steps, dtype=jnp.int32)
        per = lambda s, k: minibatch_indices(step_keys(k, s)[0], batch_size, n)  # noqa: E731
        return jax.vmap(lambda s: jax.vmap(lambda k: per(s, k))(keys))(steps)  # [steps, chains, batch]

    return fn


_indices_cache: dict = {}


def stream_indices(raw_keys, start: int, num_steps: int, batch_size: int, n: int, impl: str = "threefry2x32") -> np.ndarray:
    """[num_steps, chains, batch] minibatch indices of steps start…start+num_steps-1 (as drawn in memory)."""
    key = (impl, num_steps, batch_size, n, np.shape(raw_keys))
    if key not in _indices_cache:
        with jax.threefry_partitionable(THREEFRY_PARTITIONABLE):
            _indices_cache[key] = jax.jit(_indices_fn(impl, num_steps, batch_size, n)).lower(
                jnp.asarray(raw_keys), np.int32(0)).compile()
    return _indices_cache[key](jnp.asarray(raw_keys), np.int32(start))


def _host_gather(data_host, idx: np.ndarray):
    return jax.tree.map(lambda x: np.asarray(x[idx.reshape(-1)]).reshape(idx.shape + x.shape[1:]), data_host)


# ----------------------------------------------------------------------------
# the entry point
# ----------------------------------------------------------------------------


class _Placement(NamedTuple):
    """How a run's inputs go onto its devices (identity on one device)."""

    mesh: Any
    chain: Callable  # per-chain inputs: split along "chain"
    replicated: Callable  # data, probes, a shared center or mask
    batches: Callable  # streamed [steps, chains, ...] blocks: split along axis 1


def _placement(mesh) -> _Placement:
    if mesh is None:
        same = lambda t: t  # noqa: E731
        return _Placement(None, same, same, same)
    return _Placement(
        mesh,
        lambda t: shard.put(t, shard.per_chain(mesh)),
        lambda t: shard.put(t, shard.replicated(mesh)),
        lambda t: shard.put(t, shard.per_chain(mesh, axis=1)),
    )


@contextmanager
def _progress_bar(config: RunConfig, desc: str):
    """The bar the program's host callback advances (``config.progress_every`` > 0), closed however the run ends."""
    bar = None
    if config.progress_every:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.num_steps, desc=desc, unit="step", leave=False)
    _progress.bar = bar
    try:
        yield bar
    finally:
        _progress.bar = None
        if bar is not None:
            bar.close()


def _starting_point(config: RunConfig, seed, chain_keys_, init_positions, init_state):
    """(raw chain keys, first global step, init, divergent so far, fresh) of a new or continued run."""
    impl = prng_impl(config)
    if init_state is not None:
        if init_state.prng_impl != impl:
            raise ValueError(f"init_state was sampled with prng_impl={init_state.prng_impl!r}, config has {impl!r}")
        return (np.asarray(init_state.chain_keys), int(init_state.step), init_state.sampler_state,
                init_state.divergent_step, False)
    if chain_keys_ is None:
        chain_keys_ = chain_keys(seed, config.num_chains, impl)
    return np.asarray(chain_keys_), 0, init_positions, None, True


def _observation_window(config: RunConfig, start: int, observe_from: int | None) -> tuple[int, int]:
    """(global step of the first observation, observations in the run) for ``config.observer``."""
    if config.observer is None:
        return 0, 0
    first = start if observe_from is None else int(observe_from)
    end = start + config.num_steps
    count = max(0, -(-(end - first) // config.observer.every)) if first < end else 0
    return first, count


def run_chains(
    loss_fn: Callable,
    center: PyTree,
    data: PyTree,
    hyper: Hyperparameters,
    *,
    config: RunConfig,
    seed: int | jax.Array = 0,
    chain_keys: np.ndarray | None = None,
    init_positions: PyTree | None = None,
    log_prior: Callable | None = None,
    mask: PyTree | None = None,
    probes: PyTree | None = None,
    observe_from: int | None = None,
    progress_desc: str = "sampling",
    devices=None,
    stream_chunks: int | None = None,
    init_state: ChainState | None = None,
    return_state: bool = False,
) -> SamplingResult:
    """Run ``config.num_chains`` chains of ``config.sampler`` on the local posterior at ``center``.

    The one way into the compiled sampling program: every estimator (LLC,
    sweeps, calibration, burn-in, free energy, observables) calls this.

    ``hyper`` holds per-chain arrays of shape [num_chains] (broadcast from scalars).
    With ``config.center_per_chain``, every leaf of ``center`` has a leading
    [num_chains] axis: chain c is localized at its own w*_c (e.g. G
    checkpoints × K chains as one program). ``chain_keys``: raw per-chain keys
    [num_chains, words] instead of ``seed`` (e.g. the same keys for every
    checkpoint of a group).

    ``mask`` (with ``config.mask`` "shared" or "per_chain": a pytree of
    booleans with the params' structure, leaves broadcastable to the leaves,
    per chain with a leading [num_chains] axis): only the True coordinates move
    (:mod:`slt.samplers.moves`). ``config.observer``
    (:class:`slt.observables.Observer`) records statistics of the positions
    every ``observer.every`` steps from global step ``observe_from`` (default:
    the run's first step) on; ``probes`` is its probe data.

    ``devices``: shard the chains over devices (see
    :func:`slt.sharding.resolve_devices`; default: the most devices whose
    number divides the chains). ``stream_chunks=K``: keep ``data``
    on the host (numpy arrays or memmaps) and stream [K, chains, batch]
    minibatch blocks to the device, K steps per compiled call; results equal
    the in-memory run's. ``init_state``: continue from a previous run's
    ``final_state`` (then ``seed``, ``chain_keys`` and ``init_positions`` are ignored) for
    ``config.num_steps`` more steps; ``return_state=True`` keeps the final
    state in ``result.final_state``.
    Inputs are assumed validated (see :mod:`slt.validation`).
    """
    impl = prng_impl(config)
    dtype = jnp.result_type(*jax.tree.leaves(center))
    place = _placement(shard.chain_mesh(devices, config.num_chains))
    raw_keys, start, init, divergent, fresh = _starting_point(config, seed, chain_keys, init_positions, init_state)
    first_observation, observe_count = _observation_window(config, start, observe_from)
    hyper = Hyperparameters(*(jnp.asarray(np.broadcast_to(np.asarray(v, dtype), (config.num_chains,))) for v in hyper))
    shared = place.chain if config.mask == "per_chain" else place.replicated
    inputs = ProgramInputs(
        center=(place.chain if config.center_per_chain else place.replicated)(jax.tree.map(jnp.asarray, center)),
        init=place.chain(init), data=None, hyper=place.chain(hyper), keys=place.chain(jnp.asarray(raw_keys)),
        start_step=np.int32(start), divergent=place.chain(divergent), batches=None,
        mask=None if mask is None else shared(jax.tree.map(jnp.asarray, mask)),
        probes=None if probes is None else place.replicated(jax.tree.map(jnp.asarray, probes)),
        observe_from=np.int32(first_observation), observe_count=np.int32(observe_count),
    )
    extras: dict = {"num_devices": 1 if place.mesh is None else place.mesh.size, "prng_impl": impl}
    with _progress_bar(config, progress_desc):
        if not stream_chunks:
            inputs = inputs._replace(data=place.replicated(jax.tree.map(jnp.asarray, data)))
            compiled, compile_seconds = compiled_program(loss_fn, log_prior, config, inputs, fresh=fresh,
                                                         return_states=return_state, mesh=place.mesh)
            t0 = time.perf_counter()
            out = jax.block_until_ready(compiled(inputs))
            sample_seconds = time.perf_counter() - t0
        else:
            out, compile_seconds, sample_seconds, chunk_extras = _run_streamed(
                loss_fn, log_prior, config, inputs, data, fresh, int(stream_chunks), place, return_state,
            )
            extras.update(chunk_extras)
        jax.effects_barrier()
    return _sampling_result(out, config, start, raw_keys, impl, compile_seconds, sample_seconds, extras, return_state)


def _sampling_result(out: ProgramOutputs, config: RunConfig, start: int, raw_keys, impl: str, compile_seconds: float,
                     sample_seconds: float, extras: dict, return_state: bool) -> SamplingResult:
    """The host-side record of a run: traces, the acceptance columns that were checked, the final state."""
    losses, accs, divergent = shard.fetch(out.losses), shard.fetch(out.accs), shard.fetch(out.divergent)
    if config.acceptance_every:
        cols = np.arange((-start) % config.acceptance_every, config.num_steps, config.acceptance_every)
    else:
        cols = np.flatnonzero(np.isfinite(accs).any(axis=0))
    final_state = None
    if return_state:
        final_state = ChainState(out.states, divergent, start + config.num_steps, raw_keys, impl)
    observations = None
    if out.observations is not None:
        observations = jax.tree.map(shard.fetch, out.observations)
    return SamplingResult(
        loss_trace=losses,
        acceptance=accs[:, cols],
        acceptance_steps=start + cols,
        divergent_step=divergent,
        compile_seconds=compile_seconds,
        sample_seconds=sample_seconds,
        extras=extras,
        final_state=final_state,
        observations=observations,
    )


def _run_streamed(loss_fn, log_prior, config, inputs: ProgramInputs, data, fresh, chunk, place: _Placement,
                  return_state):
    """K steps per compiled call, each fed a host-gathered [K, chains, batch] block; the next block is
    gathered on the host while the device runs the current one."""
    if chunk < 1:
        raise ValueError(f"stream_chunks must be a positive number of steps, got {chunk}")
    algo = get_sampler(config.sampler)
    data_host = jax.tree.map(lambda x: x if isinstance(x, np.ndarray) else np.asarray(x), data)
    n = jax.tree.leaves(data_host)[0].shape[0]
    if config.batch_size >= n or algo.FULL_BATCH_ONLY:
        raise ValueError("stream_chunks streams minibatches; a full-batch run (batch_size >= n, or MALA) cannot be streamed")
    impl = prng_impl(config)
    start = int(inputs.start_step)
    raw_keys = np.asarray(shard.fetch(inputs.keys))
    bounds = [(s, min(chunk, config.num_steps - (s - start))) for s in range(start, start + config.num_steps, chunk)]

    def gather(s, k):
        idx = np.asarray(stream_indices(raw_keys, s, k, config.batch_size, n, impl))
        return place.batches(jax.tree.map(jnp.asarray, _host_gather(data_host, idx)))

    compile_seconds, gather_seconds = 0.0, 0.0
    t0 = time.perf_counter()
    nxt = gather(*bounds[0])
    gather_seconds += time.perf_counter() - t0
    loss_parts, acc_parts = [], []
    t_run = time.perf_counter()
    for i, (s, k) in enumerate(bounds):
        cfg = replace(config, num_steps=k)
        inputs = inputs._replace(start_step=np.int32(s), batches=nxt)
        compiled, c = compiled_program(loss_fn, log_prior, cfg, inputs, fresh=fresh and i == 0, return_states=True,
                                       mesh=place.mesh)
        compile_seconds += c
        out = compiled(inputs)  # asynchronous: the host gathers the next block meanwhile
        loss_parts.append(out.losses)
        acc_parts.append(out.accs)
        inputs = inputs._replace(init=out.states, divergent=out.divergent, observations=out.observations)
        if i + 1 < len(bounds):
            t0 = time.perf_counter()
            nxt = gather(*bounds[i + 1])
            gather_seconds += time.perf_counter() - t0
    jax.block_until_ready((loss_parts, out.divergent, out.states))
    sample_seconds = time.perf_counter() - t_run - compile_seconds
    merged = ProgramOutputs(
        losses=np.concatenate([shard.fetch(x) for x in loss_parts], axis=1),
        accs=np.concatenate([shard.fetch(x) for x in acc_parts], axis=1),
        divergent=out.divergent, states=out.states if return_state else None, observations=out.observations,
    )
    extras = {"stream_chunks": chunk, "num_chunks": len(bounds), "host_gather_seconds": gather_seconds}
    return merged, compile_seconds, sample_seconds, extras
