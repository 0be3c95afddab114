"""Where a sweep's checkpoints come from, normalised to a step-sorted list of items that load on demand.

Accepted: a directory (:func:`slt.checkpoints.list_checkpoints`: files with a
safe extension and the step in the name, or an orbax manager directory), a
single file, a sequence of paths (step = last number in the file name), a
sequence of ``(step, params)`` or ``(step, path)`` pairs, or a dict
``{step: params or path}``. Loading checks every checkpoint against the first
one's structure, shapes and dtypes, and that it is finite; any problem is a
``CheckpointError`` naming the file, so a sweep records it as failed and goes on.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from slt import validation as check
from slt.checkpoints import CheckpointError, list_checkpoints, load_params

PyTree = Any
_STEP_RE = re.compile(r"(\d+)")




@dataclasses.dataclass
class Item:
    step: int
    source: str | None  # file path, or None for in-memory params
    params: PyTree | None = None


def _step_from_path(path: str, default: int) -> int:
    nums = _STEP_RE.findall(os.path.splitext(os.path.basename(os.path.normpath(path)))[0])
    return int(nums[-1]) if nums else default


def _is_path(x) -> bool:
    return isinstance(x, (str, os.PathLike))


def checkpoint_items(checkpoints) -> list[Item]:
    """Normalise the accepted checkpoint forms to a step-sorted list of items."""
    if _is_path(checkpoints):
        path = os.fspath(checkpoints)
        if os.path.isdir(path) and not os.path.exists(os.path.join(path, "_METADATA")):
            try:
                found = list_checkpoints(path)
            except CheckpointError as err:
                raise check.SLTInputError(str(err)) from None
            check.require(bool(found), f"{path}: no checkpoints found (expected files like step_000100.safetensors)")
            items = [Item(s, p) for s, p in found]
        else:
            check.require(os.path.exists(path), f"{path}: no such checkpoint file or directory")
            items = [Item(_step_from_path(path, 0), path)]
    elif isinstance(checkpoints, Mapping):
        items = [Item(int(s), p if _is_path(p) else None, None if _is_path(p) else p) for s, p in checkpoints.items()]
        items = [dataclasses.replace(it, source=os.fspath(it.source)) if it.source else it for it in items]
    elif isinstance(checkpoints, Iterable):
        items = []
        for i, entry in enumerate(checkpoints):
            if _is_path(entry):
                items.append(Item(_step_from_path(os.fspath(entry), i), os.fspath(entry)))
            elif (
                isinstance(entry, (tuple, list))
                and len(entry) == 2
                and isinstance(entry[0], (int, np.integer))
                and not isinstance(entry[0], bool)
            ):
                step, p = entry
                items.append(Item(int(step), os.fspath(p), None) if _is_path(p) else Item(int(step), None, p))
            else:
                raise check.SLTInputError(
                    f"checkpoints[{i}] is a {type(entry).__name__}; pass a directory, a list of paths, "
                    "or a list of (step, params) / (step, path) pairs"
                )
    else:
        raise check.SLTInputError(
            f"checkpoints must be a directory, a list of paths, or (step, params) pairs; got {type(checkpoints).__name__}"
        )
    check.require(len(items) > 0, "checkpoints is empty: nothing to measure")
    steps = [it.step for it in items]
    dup = sorted({s for s in steps if steps.count(s) > 1})
    if dup:
        raise check.SLTInputError(f"two checkpoints share step {dup[0]}; give each checkpoint its own step")
    return sorted(items, key=lambda it: it.step)


def signature(params) -> tuple:
    leaves, treedef = jax.tree.flatten(params)
    return treedef, tuple((tuple(np.shape(x)), str(jnp.result_type(x))) for x in leaves)


def load_checkpoint(item: Item, template, reference) -> PyTree:
    """Params of one checkpoint, checked against the reference structure.

    Raises ``CheckpointError`` (message naming the file) on any problem."""
    name = item.source or f"checkpoint at step {item.step}"
    if item.params is not None:
        params = item.params
    else:
        params = load_params(item.source, template)
    if reference is not None:
        ref_def, ref_leaves = reference
        treedef, leaves = signature(params)
        if treedef != ref_def:
            raise CheckpointError(f"{name}: tree structure differs from the other checkpoints ({treedef} vs {ref_def})")
        bad = [f"{a[0]} vs {b[0]}" for a, b in zip(leaves, ref_leaves) if a[0] != b[0]]
        if bad:
            raise CheckpointError(f"{name}: parameter shapes differ from the other checkpoints ({', '.join(bad[:3])})")
        params = jax.tree.unflatten(
            ref_def, [jnp.asarray(x, dtype=d) for x, (_, d) in zip(jax.tree.leaves(params), ref_leaves)]
        )
    try:
        check.finite_params(params)
    except check.SLTInputError as err:
        raise CheckpointError(f"{name}: {err}") from None
    return params


