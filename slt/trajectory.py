"""LLC over many checkpoints of a training run: one compiled program, resumable.

``llc_trajectory(loss_fn, checkpoints, data, out="llc.jsonl", step_size=...)``
estimates λ̂(w*_t) = nβ·(E[L_B(w)] - L(w*_t)) at every checkpoint w*_t (Lau et
al. 2023, arXiv 2308.12108), as :func:`slt.estimate_llc` does at one.

* Compiled once for all checkpoints of one structure. Small models are run
  ``checkpoints_per_group`` at a time: G checkpoints × K chains as G·K vmapped
  chains, chain (g, k) localized at w*_g (``RunConfig(center_per_chain=True)``).
* Every checkpoint uses the same chain keys (``split(PRNGKey(seed), K)``, as
  ``estimate_llc(seed=seed)``): common random numbers across checkpoints, and
  a grouped sweep gives the same numbers as a one-at-a-time sweep.
* With ``out``, results go to an append-only store (:mod:`slt.store`) the
  moment each checkpoint is done; rerunning resumes; a changed setting is
  refused. A checkpoint that cannot be loaded or does not match is recorded
  as failed and the sweep goes on.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import hashlib
import json
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from slt import sampling
from slt import sharding as shard
from slt import validation as check
from slt.checkpoints import CheckpointError, list_checkpoints, load_params
from slt.llc import LLCResult, llc_from_run
from slt.settings import LLCConfig, run_config, validate_llc_inputs
from slt.losses import full_data_loss
from slt.posterior import Hyperparameters
from slt.store import TrajectoryStore, jsonable, read_store, records_by_step

__all__ = ["llc_trajectory", "Trajectory", "auto_group_size"]

PyTree = Any
_STEP_RE = re.compile(r"(\d+)")

# vmapped chain-parameters per group: beyond this, grouping stops paying on CPU
# (measured in bench/sweep.py; see docs/sweeps.md).
GROUP_BUDGET = 150_000
MAX_GROUP = 16


# --------------------------------------------------------------------------
# checkpoint sources
# --------------------------------------------------------------------------


@dataclasses.dataclass
class _Item:
    step: int
    source: str | None  # file path, or None for in-memory params
    params: PyTree | None = None


def _step_from_path(path: str, default: int) -> int:
    nums = _STEP_RE.findall(os.path.splitext(os.path.basename(os.path.normpath(path)))[0])
    return int(nums[-1]) if nums else default


def _is_path(x) -> bool:
    return isinstance(x, (str, os.PathLike))


def _items(checkpoints) -> list[_Item]:
    """Normalise the accepted checkpoint forms to a step-sorted list of items."""
    if _is_path(checkpoints):
        path = os.fspath(checkpoints)
        if os.path.isdir(path) and not os.path.exists(os.path.join(path, "_METADATA")):
            try:
                found = list_checkpoints(path)
            except CheckpointError as err:
                raise check.SLTInputError(str(err)) from None
            check.require(bool(found), f"{path}: no checkpoints found (expected files like step_000100.safetensors)")
            items = [_Item(s, p) for s, p in found]
        else:
            check.require(os.path.exists(path), f"{path}: no such checkpoint file or directory")
            items = [_Item(_step_from_path(path, 0), path)]
    elif isinstance(checkpoints, Mapping):
        items = [_Item(int(s), p if _is_path(p) else None, None if _is_path(p) else p) for s, p in checkpoints.items()]
        items = [dataclasses.replace(it, source=os.fspath(it.source)) if it.source else it for it in items]
    elif isinstance(checkpoints, Iterable):
        items = []
        for i, entry in enumerate(checkpoints):
            if _is_path(entry):
                items.append(_Item(_step_from_path(os.fspath(entry), i), os.fspath(entry)))
            elif (
                isinstance(entry, (tuple, list))
                and len(entry) == 2
                and isinstance(entry[0], (int, np.integer))
                and not isinstance(entry[0], bool)
            ):
                step, p = entry
                items.append(_Item(int(step), os.fspath(p), None) if _is_path(p) else _Item(int(step), None, p))
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


def _signature(params) -> tuple:
    leaves, treedef = jax.tree.flatten(params)
    return treedef, tuple((tuple(np.shape(x)), str(jnp.result_type(x))) for x in leaves)


def _load(item: _Item, template, reference) -> PyTree:
    """Params of one checkpoint, checked against the reference structure.

    Raises ``CheckpointError`` (message naming the file) on any problem."""
    name = item.source or f"checkpoint at step {item.step}"
    if item.params is not None:
        params = item.params
    else:
        params = load_params(item.source, template)
    if reference is not None:
        ref_def, ref_leaves = reference
        treedef, leaves = _signature(params)
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


# --------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------


def data_fingerprint(data) -> dict:
    """sha256 over the bytes, shapes and dtypes of every data leaf (detects changed data on resume)."""
    h = hashlib.sha256()
    shapes = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(data)[0]:
        arr = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{arr.shape}|{arr.dtype}|".encode())
        h.update(arr.tobytes())
        shapes.append(list(arr.shape))
    return {"sha256": h.hexdigest()[:32], "shapes": shapes}


def auto_group_size(num_params: int, num_chains: int, num_checkpoints: int) -> int:
    """Checkpoints per vmapped group: as many as keep G·K·num_params ≤ GROUP_BUDGET (1..16)."""
    g = GROUP_BUDGET // max(1, num_params * num_chains)
    return int(max(1, min(MAX_GROUP, g, num_checkpoints)))


def _balanced_groups(items: list, size: int) -> list[list]:
    """Split into ceil(N/size) groups of near-equal length (the padding is < number of groups)."""
    if not items:
        return []
    m = math.ceil(len(items) / size)
    g = math.ceil(len(items) / m)
    return [items[i : i + g] for i in range(0, len(items), g)]


# --------------------------------------------------------------------------
# one group: G checkpoints × K chains in one program
# --------------------------------------------------------------------------


def _check_group_devices(devices, group_size: int, num_chains: int) -> None:
    """An :class:`SLTInputError` unless ``devices`` can split ``group_size`` × ``num_chains`` chains evenly."""
    if devices is None:  # automatic: the most devices that divide the chains, never an error
        return
    try:
        count = len(shard.requested_devices(devices))
    except ValueError as err:
        raise check.SLTInputError(str(err)) from None
    total = group_size * num_chains
    if total % count:
        raise check.SLTInputError(
            f"devices={devices!r}: {count} devices cannot split a group of {group_size} checkpoint(s) × "
            f"{num_chains} chain(s) = {total} chains evenly; set checkpoints_per_group or num_chains so that "
            f"{count} divides their product, or leave devices=None"
        )


def _group_keys(seed: int, num_chains: int, impl: str, group_size: int) -> np.ndarray:
    """Raw chain keys for a group: checkpoint g's K chains get the keys estimate_llc(seed=seed) would give them
    (the same for every group, so computed once per sweep; JAX's threefry setting is part of the cache key)."""
    return _cached_group_keys(seed, num_chains, impl, group_size, bool(jax.config.jax_threefry_partitionable))


@functools.lru_cache(maxsize=8)
def _cached_group_keys(seed: int, num_chains: int, impl: str, group_size: int, partitionable: bool) -> np.ndarray:
    del partitionable  # only a cache key: chain_keys reads the setting itself
    keys = np.tile(sampling.chain_keys(seed, num_chains, impl), (group_size, 1))
    keys.flags.writeable = False
    return keys


def _place_data(data, mesh):
    """The data on the devices once for the whole sweep: replicated over ``mesh``'s devices, or on the default one."""
    if mesh is None:
        return jax.tree.map(jnp.asarray, data)
    return shard.put(data, shard.replicated(mesh))


def _sample_group(loss_fn, params_list, data, config: LLCConfig, *, group_size: int, acceptance_checks: int,
                  progress: bool | None, desc: str, devices=None) -> list[sampling.SamplingResult]:
    """Run ``group_size`` × K chains (the group padded with its last checkpoint) as one program through
    :func:`slt.sampling.run_chains` (``data`` already placed, :func:`_place_data`); per-checkpoint results."""
    k = config.num_chains
    real = len(params_list)
    padded = list(params_list) + [params_list[-1]] * (group_size - real)
    # built on the host and sent once, shard by shard: a device array resharded over the mesh would compile a
    # slicing program per leaf shape
    centers = jax.tree.map(lambda *xs: np.repeat(np.stack([np.asarray(x) for x in xs]), k, axis=0), *padded)
    rc = dataclasses.replace(
        run_config(config, acceptance_checks=acceptance_checks, progress=progress),
        num_chains=group_size * k, center_per_chain=True,
    )
    keys = _group_keys(config.seed, k, sampling.prng_impl(rc), group_size)
    run = sampling.run_chains(
        loss_fn, centers, data, Hyperparameters(config.step_size, config.nbeta, config.localization), config=rc,
        chain_keys=keys, progress_desc=desc, devices=devices,
    )
    return [split_chains(run, slice(g * k, (g + 1) * k), share=real) for g in range(real)]


def split_chains(run: sampling.SamplingResult, chains: slice, *, share: int = 1) -> sampling.SamplingResult:
    """The chains ``chains`` of a run as a run of their own (its timing divided among ``share`` such parts)."""
    return sampling.SamplingResult(
        loss_trace=run.loss_trace[chains], acceptance=run.acceptance[chains], acceptance_steps=run.acceptance_steps,
        divergent_step=run.divergent_step[chains], compile_seconds=run.compile_seconds / share,
        sample_seconds=run.sample_seconds / share, extras=dict(run.extras),
        observations=None if run.observations is None else jax.tree.map(lambda x: x[chains], run.observations),
    )


# --------------------------------------------------------------------------
# the sweep
# --------------------------------------------------------------------------


def llc_trajectory(
    loss_fn: Callable[[PyTree, PyTree], Any],
    checkpoints,
    data: PyTree,
    *,
    out: str | os.PathLike | None = None,
    step_size: float,
    nbeta: float | None = None,
    localization: float = 1.0,
    num_chains: int = 4,
    num_draws: int = 1000,
    num_burnin: int = 0,
    batch_size: int | None = None,
    sampler: str = "sgld",
    seed: int = 0,
    steps_between_draws: int = 1,
    sampler_options: dict | None = None,
    acceptance_checks: int = 100,
    template: PyTree | None = None,
    checkpoints_per_group: int | None = None,
    metrics: Mapping[int, Mapping[str, float]] | None = None,
    meta: Mapping[str, Any] | None = None,
    restart: bool = False,
    progress: bool | None = None,
    devices=None,
) -> "Trajectory":
    """Estimate the LLC at every checkpoint of a training run.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss (as for :func:`slt.estimate_llc`).
      checkpoints: a directory (``slt.checkpoints.list_checkpoints``: files
        with a safe extension and the step in the name, or an orbax manager
        directory), a sequence of paths (step = last number in the file name),
        a sequence of ``(step, params)`` or ``(step, path)`` pairs, or a dict
        ``{step: params or path}``.
      data: pytree of arrays with leading axis n (the training data).
      out: path of the JSONL store (:mod:`slt.store`); each checkpoint's result is
        written the moment it is done, a rerun skips finished checkpoints and
        retries failed ones. None: keep results in memory only.
      step_size, nbeta, localization, num_chains, num_draws, num_burnin,
        batch_size, sampler, seed, steps_between_draws, sampler_options,
        acceptance_checks: as :func:`slt.estimate_llc`; the same for every
        checkpoint (``step_size="auto"`` is not supported here: calibrate one
        checkpoint with ``slt.calibrate`` and pass its step size).
      template: pytree giving the structure/dtypes of the params read from
        files (``slt.checkpoints.load_params``); without it files give nested
        dicts.
      checkpoints_per_group: checkpoints vmapped together in one program
        (default :func:`auto_group_size` from the parameter count; 1 = one at a
        time). Does not change the results, only the speed.
      metrics: ``{step: {name: value}}`` stored with each checkpoint (e.g. train
        and test loss) and returned as ``Trajectory.metrics``.
      meta: facts recorded in the store header and checked on resume (task name, ...).
      restart: if the store at ``out`` was made with other settings, move it to
        ``out.1`` (``.2``, ...) and start afresh instead of refusing.
      progress: progress bars over checkpoints and within long chains (default: on a terminal).
      devices: shard each group's chains over devices, as :func:`slt.estimate_llc`
        (default: the most devices whose number divides the group's chains;
        on a CPU see :func:`slt.use_cpu_cores`).

    Returns:
      :class:`Trajectory` of every finished checkpoint in the store (this run's
      and earlier ones) and the failed ones.
    """
    check.require(not isinstance(step_size, str),
                  'step_size="auto" is not supported in sweeps; calibrate one checkpoint (slt.calibrate) '
                  "and pass its step size")
    check.require(not isinstance(localization, str),
                  'localization="scale" is not supported in sweeps: each checkpoint would be measured with its own γ; '
                  "pass one number for all, e.g. slt.localization.scale_localization(params) of the final checkpoint")
    if checkpoints_per_group is not None:
        check.positive_int("checkpoints_per_group", checkpoints_per_group)
    items = _items(checkpoints)
    if progress is None:
        progress = sys.stderr.isatty()

    # The first checkpoint that loads fixes the structure and validates everything else.
    failures: dict[int, str] = {}
    first, reference = None, None
    for it in items:
        try:
            first = _load(it, template, None)
            reference = _signature(first)
            first_item = it
            break
        except CheckpointError as err:
            failures[it.step] = str(err)
    if first is None:
        raise check.SLTInputError(
            f"none of the {len(items)} checkpoints could be loaded; first error: {next(iter(failures.values()))}"
        )
    n, batch, nb = validate_llc_inputs(
        loss_fn, first, data, step_size=step_size, nbeta=nbeta, localization=localization, num_chains=num_chains,
        num_draws=num_draws, num_burnin=num_burnin, batch_size=batch_size, sampler=sampler,
        steps_between_draws=steps_between_draws, sampler_options=sampler_options,
    )
    check.positive_int("acceptance_checks", acceptance_checks, minimum=0)
    config = LLCConfig(
        sampler=sampler, step_size=float(step_size), nbeta=float(nb), localization=float(localization),
        num_chains=int(num_chains), num_draws=int(num_draws), num_burnin=int(num_burnin),
        steps_between_draws=int(steps_between_draws), batch_size=batch, num_examples=n, seed=int(seed),
        sampler_options=tuple(sorted((sampler_options or {}).items())),
    )
    header_config = {"llc": config.to_dict(), "acceptance_checks": int(acceptance_checks), "data": data_fingerprint(data)}
    metrics = {int(s): dict(m) for s, m in (metrics or {}).items()}

    store = TrajectoryStore(out, header_config, dict(meta or {}), restart=restart) if out is not None else None
    if store is not None:
        store.open()
        if store.moved_to:
            warnings.warn(f"{out}: settings changed; the old store was moved to {store.moved_to}", stacklevel=2)
        records = store.records
        done = store.done()
        header = store.header
    else:
        records, done = [], {}
        header = {"config": jsonable(header_config), "meta": jsonable(dict(meta or {}))}

    def write(record):
        if store is not None:
            store.append(record)
        else:
            records.append(json.loads(json.dumps(jsonable(record))))

    bar = None
    try:
        todo = [it for it in items if it.step not in done]
        num_params = sum(int(np.prod(s)) for s, _ in reference[1])
        group = checkpoints_per_group or auto_group_size(num_params, config.num_chains, len(todo))
        if progress and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc="checkpoints", unit="ckpt")
        groups = _balanced_groups(todo, group)
        # a bar within the chains too, when one group's run is long
        inner_bar = bool(progress) and config.num_steps * config.num_chains * max(map(len, groups), default=1) >= 20_000
        warned: list[int] = []
        size = max((len(g) for g in groups), default=1)
        mesh = device_data = None
        if groups:  # every group runs size × num_chains chains: check the devices before any sampling
            _check_group_devices(devices, size, config.num_chains)
            mesh = shard.chain_mesh(devices, size * config.num_chains)
            device_data = _place_data(data, mesh)
        for chunk in groups:
            loaded = []
            for it in chunk:
                if it.step not in failures:
                    try:
                        params = first if it is first_item else _load(it, template, reference)
                    except CheckpointError as err:
                        failures[it.step] = str(err)
                if it.step in failures:
                    write(_failed_record(it, failures[it.step], metrics.get(it.step)))
                    if bar is not None:
                        bar.update(1)
                    continue
                loaded.append((it, params))
            if not loaded:
                continue
            runs = _sample_group(
                loss_fn, [p for _, p in loaded], device_data, config, group_size=size,
                acceptance_checks=acceptance_checks, progress=inner_bar,
                desc=f"steps {loaded[0][0].step}..{loaded[-1][0].step}", devices=devices,
            )
            for (it, params), run in zip(loaded, runs):
                init_loss = full_data_loss(loss_fn, params, data)
                with warnings.catch_warnings(record=True):
                    warnings.simplefilter("always")
                    res = llc_from_run(run, init_loss, config, num_params=num_params)
                if res.diagnostics.get("warnings"):
                    warned.append(it.step)
                write(_ok_record(it, res, metrics.get(it.step), group=len(loaded)))
                if bar is not None:
                    bar.update(1)
        if warned:
            from slt.diagnostics import SLTWarning

            warnings.warn(
                f"{len(warned)} checkpoint(s) have estimator warnings (steps {_short_steps(warned)}); "
                "see Trajectory.diagnostics[i]['warnings']", SLTWarning, stacklevel=2,
            )
    finally:
        if bar is not None:
            bar.close()
        if store is not None:
            store.close()
    traj = Trajectory.from_records(header, records, path=os.fspath(out) if out is not None else None)
    return traj


def _short_steps(steps: list[int], n: int = 6) -> str:
    return ", ".join(map(str, steps[:n])) + (f", ... (+{len(steps) - n})" if len(steps) > n else "")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _ok_record(item: _Item, res: LLCResult, metrics, group: int) -> dict:
    diag = dict(res.diagnostics)
    rec = {
        "step": item.step,
        "status": "ok" if diag.get("healthy_chains", 1) > 0 else "diverged",
        "source": item.source,
        "llc_mean": res.llc_mean,
        "llc_std": res.llc_std,
        "llc_per_chain": res.llc_per_chain,
        "init_loss": res.init_loss,
        "nbeta": res.nbeta,
        "diagnostics": diag,
        "timing": dict(res.timing, group_size=group),
        "finished": _now(),
    }
    if rec["status"] != "ok":
        rec["error"] = "every chain diverged: " + "; ".join(
            f"chain {f['chain']} at step {f['step']} ({f['reason']})" for f in diag.get("divergent_chains", [])
        ) + f"; {diag['divergent_chains'][0]['suggestion']}" if diag.get("divergent_chains") else "every chain diverged"
    if metrics:
        rec["metrics"] = metrics
    return rec


def _failed_record(item: _Item, error: str, metrics) -> dict:
    rec = {"step": item.step, "status": "failed", "source": item.source, "error": error, "finished": _now()}
    if metrics:
        rec["metrics"] = metrics
    return rec


# --------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------


def _arr(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


@dataclasses.dataclass
class Trajectory:
    """LLC estimates over the checkpoints of a run (finished ones, sorted by step).

    ``llc_per_chain`` is [checkpoints, chains] (NaN for diverged chains);
    ``llc_sem`` = llc_std/√(healthy chains) is the standard error of
    ``llc_mean``; ``metrics`` holds aligned extra signals (NaN where missing);
    ``failed`` lists ``{"step", "source", "error"}`` of checkpoints that could
    not be measured.
    """

    steps: np.ndarray
    llc_mean: np.ndarray
    llc_std: np.ndarray
    llc_per_chain: np.ndarray
    init_loss: np.ndarray
    diagnostics: list[dict]
    metrics: dict[str, np.ndarray]
    failed: list[dict]
    config: dict
    meta: dict
    sources: list[str | None] = dataclasses.field(default_factory=list)
    timing: list[dict] = dataclasses.field(default_factory=list)
    path: str | None = None

    # -- construction --------------------------------------------------------
    @classmethod
    def from_records(cls, header: dict, records: Sequence[dict], *, path: str | None = None) -> "Trajectory":
        latest = records_by_step(records)
        ok = [r for r in latest.values() if r.get("status") == "ok"]
        failed = [
            {"step": r["step"], "source": r.get("source"), "error": r.get("error", "")}
            for r in latest.values() if r.get("status") != "ok"
        ]
        chains = max((len(r.get("llc_per_chain") or []) for r in ok), default=0)
        per_chain = np.full((len(ok), chains), np.nan)
        for i, r in enumerate(ok):
            pc = _arr(r.get("llc_per_chain") or [])
            per_chain[i, : len(pc)] = pc
        names: list[str] = []
        for r in ok:
            for k in (r.get("metrics") or {}):
                if k not in names:
                    names.append(k)
        metrics = {k: _arr([(r.get("metrics") or {}).get(k) for r in ok]) for k in names}
        return cls(
            steps=np.array([r["step"] for r in ok], dtype=np.int64),
            llc_mean=_arr([r.get("llc_mean") for r in ok]),
            llc_std=_arr([r.get("llc_std") for r in ok]),
            llc_per_chain=per_chain,
            init_loss=_arr([r.get("init_loss") for r in ok]),
            diagnostics=[r.get("diagnostics") or {} for r in ok],
            metrics=metrics,
            failed=failed,
            config=header.get("config", {}),
            meta=header.get("meta", {}),
            sources=[r.get("source") for r in ok],
            timing=[r.get("timing") or {} for r in ok],
            path=path,
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Trajectory":
        """Read a store written by :func:`llc_trajectory` (a torn last line is ignored)."""
        header, records = read_store(path)
        return cls.from_records(header, records, path=os.fspath(path))

    # -- views ---------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.steps)

    @property
    def llc_sem(self) -> np.ndarray:
        """Standard error of ``llc_mean``: sd across chains / √(healthy chains)."""
        k = np.sum(np.isfinite(self.llc_per_chain), axis=1) if self.llc_per_chain.size else np.zeros(len(self))
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.llc_std / np.sqrt(np.maximum(k, 1))

    def to_dict(self) -> dict:
        """JSON-serialisable dict (NaN → None)."""
        return jsonable({
            "steps": self.steps,
            "llc_mean": self.llc_mean,
            "llc_std": self.llc_std,
            "llc_sem": self.llc_sem,
            "llc_per_chain": self.llc_per_chain,
            "init_loss": self.init_loss,
            "metrics": self.metrics,
            "diagnostics": self.diagnostics,
            "failed": self.failed,
            "config": self.config,
            "meta": self.meta,
            "sources": self.sources,
        })

    def to_dataframe(self):
        """pandas DataFrame, one row per finished checkpoint (needs pandas)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Trajectory.to_dataframe needs pandas (pip install pandas); "
                              "Trajectory.to_dict() gives the same data without it") from None
        cols = {"step": self.steps, "llc_mean": self.llc_mean, "llc_std": self.llc_std, "llc_sem": self.llc_sem,
                "init_loss": self.init_loss}
        for c in range(self.llc_per_chain.shape[1] if self.llc_per_chain.ndim == 2 else 0):
            cols[f"llc_chain{c}"] = self.llc_per_chain[:, c]
        cols.update(self.metrics)
        cols["warnings"] = [len(d.get("warnings") or []) for d in self.diagnostics]
        return pd.DataFrame(cols)

    def signals(self, names: Sequence[str] | None = None) -> tuple[dict, dict]:
        """(values, stds) dicts of aligned signals, "llc" first (with its standard error)."""
        names = list(names) if names is not None else ["llc"]
        values, stds = {}, {}
        for name in names:
            if name == "llc":
                values["llc"], stds["llc"] = self.llc_mean, self.llc_sem
            elif name in self.metrics:
                values[name] = self.metrics[name]
            else:
                known = ", ".join(["llc", *self.metrics])
                raise check.SLTInputError(f"no signal {name!r} in this trajectory; known: {known}")
        return values, stds

    def detect(self, signals: Sequence[str] | None = None, *, log_steps: bool = True, **kwargs):
        """:func:`slt.transitions.detect_transitions` on the LLC (and other ``signals``).

        Checkpoints where a signal is not finite, or with step ≤ 0 when
        ``log_steps``, are left out."""
        from slt.transitions import detect_transitions

        values, stds = self.signals(signals)
        keep = np.ones(len(self), bool)
        for v in values.values():
            keep &= np.isfinite(v)
        for v in stds.values():
            keep &= np.isfinite(v)
        if log_steps:
            keep &= self.steps > 0
        steps = self.steps[keep].astype(float)
        return detect_transitions(
            steps, {k: v[keep] for k, v in values.items()}, stds={k: v[keep] for k, v in stds.items()},
            log_steps=log_steps, **kwargs,
        )

    def plot(self, ax=None, log_x: bool = False, transitions=None, path: str | os.PathLike | None = None, **kwargs):
        """LLC over steps with a ±1 sd (across chains) band; see :func:`slt.plotting.plot_trajectory`."""
        from slt.plotting import plot_trajectory

        return plot_trajectory(self, ax=ax, log_x=log_x, transitions=transitions, path=path, **kwargs)

    def table(self) -> str:
        """Plain-text table: step, λ̂ mean ± sd, warnings; failed checkpoints at the end."""
        lines = [f"{'step':>10}  {'llc_mean':>10}  {'llc_std':>8}  notes"]
        for i, s in enumerate(self.steps):
            w = self.diagnostics[i].get("warnings") or []
            note = f"{len(w)} warning(s)" if w else ""
            lines.append(f"{int(s):>10}  {self.llc_mean[i]:>10.4g}  {self.llc_std[i]:>8.3g}  {note}")
        for f in self.failed:
            lines.append(f"{int(f['step']):>10}  {'failed':>10}  {'':>8}  {f['error'].splitlines()[0]}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Trajectory({len(self)} checkpoints, {len(self.failed)} failed, path={self.path!r})"
