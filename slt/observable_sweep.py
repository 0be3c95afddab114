"""Posterior observables over a sequence of checkpoints: resumable, one result file per checkpoint.

``slt.observable_trajectory(measure, checkpoints, out=DIR)`` calls ``measure(params)`` at every checkpoint
(e.g. ``functools.partial(slt.bayesian_influence, loss_fn, train_data=..., query_data=..., step_size=...)``
with ``params`` as its second argument, or a lambda), in step order. Checkpoints of one shape reuse the same
compiled sampling program, so only the first one compiles. With ``out``, each finished checkpoint is
written at once (``step_<step>.json``: the result's ``to_dict()`` less its arrays; ``step_<step>.npz``:
its arrays, read back with ``allow_pickle=False``), and a rerun skips the finished ones: a long sweep never
loses finished work. A checkpoint that fails to load, or whose chains all diverged, is recorded with its
status and error and the sweep goes on; ``failed`` lists them.
"""

from __future__ import annotations

import io
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from slt.checkpoints import CheckpointError
from slt.io import atomic_write_bytes, atomic_write_json
from slt.sources import checkpoint_items, load_checkpoint, signature

#: Result attributes stored as arrays in the .npz file rather than in the JSON.
ARRAY_FIELDS = ("values", "stderr", "per_chain")


@dataclass
class ObservableTrajectory:
    """Per checkpoint: ``results[step]`` (the measure's result object, or on resume its stored dict with the
    arrays back as numpy arrays), and ``status[step]`` in {"ok", "failed", "diverged"}."""

    steps: list[int]
    results: dict[int, Any]
    status: dict[int, str]
    errors: dict[int, str] = field(default_factory=dict)

    @property
    def failed(self) -> list[int]:
        """Steps whose checkpoint failed to load or whose every chain diverged."""
        return [s for s in self.steps if self.status[s] != "ok"]

    def values(self) -> np.ndarray:
        """``[checkpoints, ...]`` stacked ``values`` of the healthy checkpoints' results (NaN for failed or
        diverged ones: a failure is never shown as a number)."""
        arrays = [_field(self.results.get(s), "values") if self.status[s] == "ok" else None for s in self.steps]
        shape = next((a.shape for a in arrays if a is not None), None)
        if shape is None:
            raise ValueError("no checkpoint has a result with values")
        return np.stack([a if a is not None else np.full(shape, np.nan) for a in arrays])


def _field(result, name):
    if result is None:
        return None
    value = result.get(name) if isinstance(result, dict) else getattr(result, name, None)
    return None if value is None else np.asarray(value)


def _diverged(result) -> bool:
    llc = getattr(result, "llc", None)
    return llc is not None and not math.isfinite(float(getattr(llc, "llc_mean", 0.0)))


def _paths(out: str, step: int) -> tuple[str, str]:
    return os.path.join(out, f"step_{step}.json"), os.path.join(out, f"step_{step}.npz")


def _save(out: str, step: int, status: str, result=None, error: str | None = None) -> None:
    json_path, npz_path = _paths(out, step)
    record = {"step": step, "status": status, "error": error}
    if result is not None:
        arrays = {name: np.asarray(getattr(result, name)) for name in ARRAY_FIELDS
                  if getattr(result, name, None) is not None}
        if arrays:
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            atomic_write_bytes(npz_path, buf.getvalue())
        record["result"] = {k: v for k, v in result.to_dict().items() if k not in arrays}
        record["arrays"] = sorted(arrays)
    atomic_write_json(json_path, record)  # written last: its presence marks the checkpoint done


def _load(out: str, step: int):
    import json

    json_path, npz_path = _paths(out, step)
    if not os.path.exists(json_path):
        return None
    with open(json_path) as fh:
        record = json.load(fh)
    result = record.get("result")
    if result is not None and record.get("arrays"):
        with np.load(npz_path, allow_pickle=False) as z:
            result.update({name: z[name] for name in record["arrays"]})
    return record["status"], result, record.get("error")


def observable_trajectory(measure: Callable[[Any], Any], checkpoints, *, out: str | os.PathLike | None = None,
                          template=None, progress: bool | None = None) -> ObservableTrajectory:
    """``measure(params)`` at every checkpoint, resumable with ``out`` (see the module docstring).

    ``checkpoints``: anything :func:`slt.llc_trajectory` accepts (a directory, paths, ``(step, params)``
    pairs, a dict); ``template``: the params pytree that safetensors files load into (as for
    :func:`slt.checkpoints.load_params`).
    """
    if not callable(measure):
        from slt.validation import SLTInputError

        raise SLTInputError("measure must be a function of the checkpoint's params, e.g. "
                            "lambda p: slt.bayesian_influence(loss_fn, p, train, query, step_size=1e-3)")
    items = checkpoint_items(checkpoints)
    out = None if out is None else os.fspath(out)
    if out is not None:
        os.makedirs(out, exist_ok=True)
    traj = ObservableTrajectory([it.step for it in items], {}, {})
    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc="checkpoints", unit="ckpt")
    reference = None
    for item in items:
        done = None if out is None else _load(out, item.step)
        if done is not None:
            traj.status[item.step], traj.results[item.step], error = done
            if error:
                traj.errors[item.step] = error
        else:
            params = _measure_one(measure, item, template, reference, traj, out)
            if reference is None and params is not None:
                reference = signature(params)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return traj


def _measure_one(measure, item, template, reference, traj: ObservableTrajectory, out):
    """Load and measure one checkpoint, record (and with ``out`` save) it; its params, None if it failed to load."""
    step = item.step
    try:
        params = load_checkpoint(item, template, reference)
    except CheckpointError as err:
        traj.status[step], traj.errors[step], traj.results[step] = "failed", str(err), None
        if out is not None:
            _save(out, step, "failed", error=str(err))
        return None
    result = measure(params)
    status = "diverged" if _diverged(result) else "ok"
    traj.status[step], traj.results[step] = status, result
    if status == "diverged":
        traj.errors[step] = "every chain diverged: no estimate; reduce step_size"
    if out is not None:
        _save(out, step, status, result, traj.errors.get(step))
    return params


__all__ = ["ObservableTrajectory", "observable_trajectory"]
