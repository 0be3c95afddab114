"""A small optax training loop whose hot loop is one compiled program.

Between two checkpoints the steps run inside ``lax.fori_loop`` under ``jit``
(one compilation serves every chunk length; the carry is donated), so there
is no Python per step. At each checkpoint step the params are kept (host
copies), metrics are logged, and optionally written to ``checkpoint_dir`` with
:mod:`slt.checkpoints` as ``step_000100.safetensors`` (or ``.msgpack``,
``.npz``, or an orbax manager directory) plus ``metrics.jsonl``.

Minibatches: shuffled epochs without replacement (a fresh permutation of the
n examples each epoch, ``n // batch_size`` batches per epoch, the remainder
dropped), like a PyTorch ``DataLoader(shuffle=True, drop_last=True)``.

Coupled weight decay (PyTorch ``Adam(weight_decay=wd)``, the L2 penalty added
to the gradient before Adam) is ``optax.chain(optax.add_decayed_weights(wd),
optax.adam(lr))``; decoupled decay (AdamW) is ``optax.adamw``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["Task", "TrainResult", "train", "linear_steps", "log_steps", "coupled_adam"]

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Task:
    """What ``slt.estimate_llc(task.loss_fn, task.params, task.data, ...)`` needs.

    ``loss_fn(params, batch) -> scalar`` mean loss; ``params`` the point to
    measure (a pytree); ``data`` a pytree of arrays with leading axis n;
    ``meta`` a dict of facts (theoretical λ, widths, the NNX module, ...).
    """

    loss_fn: Callable[[PyTree, PyTree], jax.Array]
    params: PyTree
    data: PyTree
    meta: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class TrainResult:
    """``steps[i]``, ``params[i]`` and ``history[i]`` describe checkpoint ``i``."""

    steps: list[int]
    params: list[PyTree]
    history: list[dict]
    final_params: PyTree
    opt_state: Any
    train_seconds: float  # time in the compiled training loop (incl. compilation)

    @property
    def checkpoints(self) -> list[tuple[int, PyTree]]:
        """``[(step, params)]``, the form trajectory code takes."""
        return list(zip(self.steps, self.params))


def coupled_adam(lr: float, weight_decay: float, **adam_kwargs) -> optax.GradientTransformation:
    """PyTorch ``Adam(lr, weight_decay=wd)``: g <- g + wd·w, then Adam."""
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(lr, **adam_kwargs))


def linear_steps(total: int, k: int) -> list[int]:
    """``k`` evenly spaced steps from 0 to ``total`` inclusive (sorted, unique)."""
    if k < 2:
        return [int(total)]
    return sorted({int(round(s)) for s in np.linspace(0, total, k)})


def log_steps(total: int, k: int) -> list[int]:
    """0 and ``k - 1`` log-spaced steps from 1 to ``total`` (sorted, unique ints)."""
    if k < 2:
        return [int(total)]
    return sorted({0} | {int(round(s)) for s in np.geomspace(1, max(total, 1), k - 1)})


def _num_examples(data) -> int:
    sizes = {np.shape(x)[0] for x in jax.tree_util.tree_leaves(data)}
    if len(sizes) != 1:
        raise ValueError(f"all arrays in the data need the same leading axis, got sizes {sorted(sizes)}")
    return sizes.pop()


def _to_float(x) -> float | int:
    x = np.asarray(x)
    return x.item() if x.size == 1 else x.tolist()


def train(
    model_or_params,
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    train_data: PyTree,
    *,
    optimizer: optax.GradientTransformation,
    num_steps: int,
    batch_size: int | None = None,
    checkpoint_steps: Sequence[int] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    eval_fn: Callable[[PyTree], Mapping[str, jax.Array]] | None = None,
    seed: int = 0,
    checkpoint_format: str = "safetensors",
    keep_params: bool = True,
    verbose: bool = False,
) -> TrainResult:
    """Train with ``optimizer`` for ``num_steps`` steps, checkpointing on the way.

    Args:
      model_or_params: a params pytree, or a Flax NNX module (its ``nnx.Param``
        state as a pure dict is trained; ``loss_fn`` receives that dict, and
        the module is updated in place at the end).
      loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss.
      train_data: pytree of arrays with leading axis n.
      batch_size: minibatch size; None (or >= n) = full batch.
      checkpoint_steps: steps (0..num_steps) at which to keep params and log
        metrics; default ``linear_steps(num_steps, 11)``. Step s = after s updates.
      checkpoint_dir: if given, write ``step_{s:06d}.<format>`` files (orbax:
        the directory is a CheckpointManager with integer steps) and
        ``metrics.jsonl`` (one JSON object per checkpoint).
      eval_fn: ``eval_fn(params) -> {name: scalar}``, jitted, e.g. test loss and
        accuracy; merged into the history after ``train_loss`` (full train
        data), which it may override.
      seed: seeds the minibatch order.
      checkpoint_format: "safetensors", "msgpack", "npz" or "orbax".
      keep_params: keep the params of each checkpoint in memory (host copies).

    Returns:
      :class:`TrainResult` (steps, params, history per checkpoint, final params).
    """
    model = None
    try:
        from flax import nnx

        if isinstance(model_or_params, nnx.Module):
            model = model_or_params
            params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        else:
            params = model_or_params
    except ImportError:  # pragma: no cover
        params = model_or_params
    # A private copy: the carry is donated, the caller's arrays must survive.
    params = jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True), params)

    num_steps = int(num_steps)
    steps = sorted({int(s) for s in (checkpoint_steps if checkpoint_steps is not None else linear_steps(num_steps, 11))})
    if steps and (steps[0] < 0 or steps[-1] > num_steps):
        raise ValueError(f"checkpoint_steps must lie in [0, {num_steps}], got {steps[0]}..{steps[-1]}")
    if checkpoint_format not in ("safetensors", "msgpack", "npz", "orbax"):
        raise ValueError(f"unknown checkpoint_format {checkpoint_format!r}")

    train_data = jax.tree_util.tree_map(jnp.asarray, train_data)
    n = _num_examples(train_data)
    full_batch = batch_size is None or batch_size >= n
    bsz = n if full_batch else int(batch_size)
    per_epoch = n // bsz
    base_key = jax.random.key(seed)
    grad_fn = jax.value_and_grad(loss_fn)

    def one_step(carry, data):
        params, opt_state, step, perm = carry
        if full_batch:
            batch = data
        else:
            epoch, i = step // per_epoch, step % per_epoch
            perm = jax.lax.cond(
                i == 0,
                lambda: jax.random.permutation(jax.random.fold_in(base_key, epoch), n),
                lambda: perm,
            )
            idx = jax.lax.dynamic_slice_in_dim(perm, i * bsz, bsz)
            batch = jax.tree_util.tree_map(lambda a: jnp.take(a, idx, axis=0), data)
        _, grads = grad_fn(params, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, step + 1, perm

    def run_chunk(carry, data, num):  # num is traced: one compilation for all chunk lengths
        return jax.lax.fori_loop(0, num, lambda _, c: one_step(c, data), carry)

    run = jax.jit(run_chunk, donate_argnums=(0,))

    @jax.jit
    def metrics_fn(params, data):
        out = {"train_loss": loss_fn(params, data)}
        if eval_fn is not None:
            out.update(eval_fn(params))
        return out

    ckpt_dir = os.fspath(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt_dir is not None:
        os.makedirs(ckpt_dir, exist_ok=True)
    width = max(6, len(str(num_steps)))

    carry = (params, optimizer.init(params), jnp.asarray(0, jnp.int32), jnp.arange(n, dtype=jnp.int32))
    history: list[dict] = []
    kept: list[PyTree] = []
    t_train = 0.0
    t0 = time.perf_counter()
    done = 0
    targets = steps + ([num_steps] if not steps or steps[-1] != num_steps else [])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*donated buffers.*")
        for target in targets:
            if target > done:
                t1 = time.perf_counter()
                carry = run(carry, train_data, jnp.asarray(target - done, jnp.int32))
                jax.block_until_ready(carry)
                t_train += time.perf_counter() - t1
                done = target
            if target not in steps:
                continue
            p = carry[0]
            host = jax.device_get(p)
            rec = {"step": target}
            rec.update({k: _to_float(v) for k, v in metrics_fn(p, train_data).items()})
            rec["wall_seconds"] = round(time.perf_counter() - t0, 4)
            history.append(rec)
            if keep_params:
                kept.append(host)
            if ckpt_dir is not None:
                _write_checkpoint(ckpt_dir, target, host, checkpoint_format, width)
                _write_metrics(ckpt_dir, history)
            if verbose:
                print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()))

    final_params, opt_state = carry[0], carry[1]
    if model is not None:
        from flax import nnx

        nnx.update(model, final_params)
    return TrainResult(steps, kept, history, final_params, opt_state, t_train)


def _write_checkpoint(ckpt_dir: str, step: int, params, fmt: str, width: int) -> None:
    from slt.checkpoints import save_params

    if fmt == "orbax":
        save_params(ckpt_dir, params, step=step)
    else:
        save_params(os.path.join(ckpt_dir, f"step_{step:0{width}d}.{fmt}"), params)


def _write_metrics(ckpt_dir: str, history: list[dict]) -> None:
    from slt.io import atomic_write_bytes

    text = "".join(json.dumps(rec) + "\n" for rec in history)
    atomic_write_bytes(os.path.join(ckpt_dir, "metrics.jsonl"), text.encode())
