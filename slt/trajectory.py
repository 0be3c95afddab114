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
import hashlib
import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from slt import sharding as shard
from slt import validation as check
from slt.burnin import AutoBurnin, burnin_warnings
from slt.checkpoints import CheckpointError
from slt.components import describe, num_free, resolve_components, restriction_mask
from slt.llc import LLCResult, llc_from_run, resolve_burnin
from slt.localization import scale_localization
from slt.losses import initial_loss
from slt.settings import LLCConfig, validate_llc_inputs
from slt.sources import Item, checkpoint_items, load_checkpoint, signature
from slt.io import jsonable
from slt.store import TrajectoryStore, read_store, records_by_step
from slt.units import Unit, run_units

__all__ = ["llc_trajectory", "Trajectory", "auto_group_size"]

PyTree = Any

# vmapped chain-parameters per group: beyond this, grouping stops paying on CPU
# (measured in bench/sweep.py; see docs/sweeps.md).
GROUP_BUDGET = 150_000
MAX_GROUP = 16


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


def _place_data(data, mesh):
    """The data on the devices once for the whole sweep: replicated over ``mesh``'s devices, or on the default one."""
    if mesh is None:
        return jax.tree.map(jnp.asarray, data)
    return shard.put(data, shard.replicated(mesh))


# --------------------------------------------------------------------------
# the sweep
# --------------------------------------------------------------------------


@dataclasses.dataclass
class _SweepPlan:
    """Everything a sweep does, checked before any sampling."""

    items: list[Item]
    first: Item  # the first checkpoint that loads: it fixes the structure
    first_params: PyTree
    reference: tuple  # its signature (treedef, shapes and dtypes)
    failures: dict[int, str]  # step -> why it cannot be measured
    config: LLCConfig  # with placeholders where "auto"/"scale" are still to be resolved
    auto_step: bool
    scale_localization: bool
    auto_burnin: AutoBurnin | None
    components: dict[str, Any]  # name -> restriction ({} without components)
    masks: dict[str, Any]  # name -> mask
    header: dict  # what the store's header records (and a resume checks)


def _plan_sweep(loss_fn, checkpoints, data, *, template, step_size, nbeta, localization, num_chains, num_draws,
                num_burnin, batch_size, sampler, seed, steps_between_draws, sampler_options, acceptance_checks,
                checkpoints_per_group, components) -> _SweepPlan:
    """Normalise the checkpoints, load the first, and check every setting against it (before any sampling)."""
    check.require(not isinstance(step_size, str) or step_size == "auto",
                  f'step_size must be a number or "auto", got {step_size!r}')
    check.require(not isinstance(localization, str) or localization == "scale",
                  f'localization must be a number or "scale", got {localization!r}')
    if checkpoints_per_group is not None:
        check.positive_int("checkpoints_per_group", checkpoints_per_group)
    check.positive_int("acceptance_checks", acceptance_checks, minimum=0)
    auto_step, scale = isinstance(step_size, str), isinstance(localization, str)
    auto_burnin = resolve_burnin(num_burnin, auto_step=False)
    items = checkpoint_items(checkpoints)
    failures: dict[int, str] = {}
    first = first_params = None
    for it in items:
        try:
            first_params, first = load_checkpoint(it, template, None), it
            break
        except CheckpointError as err:
            failures[it.step] = str(err)
    if first is None:
        raise check.SLTInputError(
            f"none of the {len(items)} checkpoints could be loaded; first error: {next(iter(failures.values()))}"
        )
    fixed_burnin = 0 if auto_burnin is not None or num_burnin is None else num_burnin
    n, batch, nb = validate_llc_inputs(
        loss_fn, first_params, data, step_size=1.0 if auto_step else step_size, nbeta=nbeta,
        localization=1.0 if scale else localization, num_chains=num_chains, num_draws=num_draws,
        num_burnin=fixed_burnin, batch_size=batch_size, sampler=sampler, steps_between_draws=steps_between_draws,
        sampler_options=sampler_options,
    )
    config = LLCConfig(
        sampler=sampler, step_size=1.0 if auto_step else float(step_size), nbeta=float(nb),
        localization=1.0 if scale else float(localization), num_chains=int(num_chains), num_draws=int(num_draws),
        num_burnin=int(fixed_burnin), steps_between_draws=int(steps_between_draws), batch_size=batch, num_examples=n,
        seed=int(seed), sampler_options=tuple(sorted((sampler_options or {}).items())),
    )
    named = {} if components is None else resolve_components(first_params, components)
    masks = {name: restriction_mask(first_params, r) for name, r in named.items()}
    recorded = config.to_dict()
    if auto_step:
        recorded["step_size"] = "auto"
    if scale:
        recorded["localization"] = "scale"
    if auto_burnin is not None:
        recorded["num_burnin"] = "auto" if auto_burnin == AutoBurnin() else dataclasses.asdict(auto_burnin)
    header = {"llc": recorded, "acceptance_checks": int(acceptance_checks), "data": data_fingerprint(data)}
    if named:
        header["components"] = {name: describe(r) for name, r in named.items()}
    return _SweepPlan(items, first, first_params, signature(first_params), failures, config, auto_step, scale,
                      auto_burnin, named, masks, header)


def _resolve_settings(loss_fn, data, plan: _SweepPlan, store, template, *, calibrate_at: int, progress) -> dict:
    """ε and γ for every checkpoint: the store's record when resuming, else chosen now and recorded.

    ``localization="scale"``: γ = :func:`slt.localization.scale_localization` of the last checkpoint (the
    trained model), one γ for all. ``step_size="auto"``: :func:`slt.calibration.shared_step_size` at
    ``calibrate_at`` checkpoints (first, last and evenly between), the smallest healthy step for all, so
    that the values along the trajectory are comparable.
    """
    settings = {"step_size": plan.config.step_size, "localization": plan.config.localization}
    if not (plan.auto_step or plan.scale_localization):
        return settings
    recorded = store.notes("settings") if store is not None else []
    if recorded:
        return {**settings, **{k: recorded[-1][k] for k in ("step_size", "localization")}}

    def loaded(indices):
        out = []
        for i in indices:
            it = plan.items[i]
            if it.step in plan.failures:
                continue
            try:
                out.append((it.step, plan.first_params if it is plan.first else
                            load_checkpoint(it, template, plan.reference)))
            except CheckpointError as err:
                plan.failures[it.step] = str(err)
        return out

    note = {"kind": "settings"}
    if plan.scale_localization:
        last = loaded(range(len(plan.items) - 1, -1, -1)[:1]) or [(plan.first.step, plan.first_params)]
        settings["localization"] = scale_localization(last[0][1])
        note["localization_from_step"] = last[0][0]
    if plan.auto_step:
        from slt.calibration import calibration_points, shared_step_size

        c = plan.config
        chosen = loaded(calibration_points(len(plan.items), calibrate_at)) or [(plan.first.step, plan.first_params)]
        if progress:
            print(f"calibrating the step size at steps {', '.join(str(s) for s, _ in chosen)} ...", file=sys.stderr)
        shared = shared_step_size(loss_fn, chosen, data, points=len(chosen), nbeta=c.nbeta,
                                  localization=settings["localization"], batch_size=c.batch_size
                                  if c.batch_size < c.num_examples else None, sampler=c.sampler, seed=c.seed,
                                  sampler_options=dict(c.sampler_options) or None)
        settings["step_size"] = shared.step_size
        note["calibration"] = shared.to_dict()
    note.update(settings)
    if store is not None:
        store.append(note)
    return settings


def llc_trajectory(
    loss_fn: Callable[[PyTree, PyTree], Any],
    checkpoints,
    data: PyTree,
    *,
    out: str | os.PathLike | None = None,
    step_size: float | str,
    nbeta: float | None = None,
    localization: float | str = 1.0,
    num_chains: int = 4,
    num_draws: int = 1000,
    num_burnin: "int | str | AutoBurnin" = 0,
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
    components=None,
    calibrate_at: int = 5,
) -> "Trajectory":
    """Estimate the LLC at every checkpoint of a training run.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss (as for :func:`slt.estimate_llc`).
      checkpoints: a directory (``slt.checkpoints.list_checkpoints``: files
        with a safe extension and the step in the name, or an orbax manager
        directory), a sequence of paths (step = last number in the file name),
        a sequence of ``(step, params)`` or ``(step, path)`` pairs, or a dict
        ``{step: params or path}`` (:mod:`slt.sources`).
      data: pytree of arrays with leading axis n (the training data).
      out: path of the JSONL store (:mod:`slt.store`); each checkpoint's result is
        written the moment it is done, a rerun skips finished checkpoints and
        retries failed ones. None: keep results in memory only.
      step_size: ε for every checkpoint, or "auto": calibrate at ``calibrate_at``
        checkpoints (the first, the last and evenly spaced between: the
        curvature changes most while the model learns) and use ONE ε for all,
        the smallest healthy recommendation (:func:`slt.calibration.shared_step_size`),
        so that the values along the trajectory are comparable. The choice and
        each calibration's table are recorded in the store; a resumed sweep reuses them.
      localization: γ, or "scale": γ of :func:`slt.localization.scale_localization`
        at the last checkpoint (the trained model), one γ for all (recorded likewise).
      num_burnin: steps, or "auto" / an :class:`slt.burnin.AutoBurnin`: each group of
        checkpoints burns in until every checkpoint's λ̂ has levelled off (the steps
        taken are in each record's ``diagnostics["burnin"]``).
      nbeta, num_chains, num_draws, batch_size, sampler, seed, steps_between_draws,
        sampler_options, acceptance_checks: as :func:`slt.estimate_llc`; the same for every checkpoint.
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
      components: also the weight-refined LLC of each component at every
        checkpoint, in the same program (``{name: restrict}``, patterns,
        "layers" or "heads", as :func:`slt.estimate_llc_components`); the whole
        model is always measured too. ``Trajectory.components[name]`` is each one's
        trajectory.
      calibrate_at: how many checkpoints ``step_size="auto"`` calibrates at.

    Returns:
      :class:`Trajectory` of every finished checkpoint in the store (this run's
      and earlier ones) and the failed ones.
    """
    plan = _plan_sweep(loss_fn, checkpoints, data, template=template, step_size=step_size, nbeta=nbeta,
                       localization=localization, num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin,
                       batch_size=batch_size, sampler=sampler, seed=seed, steps_between_draws=steps_between_draws,
                       sampler_options=sampler_options, acceptance_checks=acceptance_checks,
                       checkpoints_per_group=checkpoints_per_group, components=components)
    check.positive_int("calibrate_at", calibrate_at)
    if progress is None:
        progress = sys.stderr.isatty()
    metrics = {int(s): dict(m) for s, m in (metrics or {}).items()}
    store = TrajectoryStore(out, plan.header, dict(meta or {}), restart=restart) if out is not None else None
    records: list[dict] = []
    if store is not None:
        store.open()
        if store.moved_to:
            warnings.warn(f"{out}: settings changed; the old store was moved to {store.moved_to}", stacklevel=2)
        records, header = store.records, store.header
    else:
        header = {"config": jsonable(plan.header), "meta": jsonable(dict(meta or {}))}

    def write(record):
        if store is not None:
            store.append(record)
        else:
            records.append(json.loads(json.dumps(jsonable(record))))

    try:
        settings = _resolve_settings(loss_fn, data, plan, store, template, calibrate_at=calibrate_at, progress=progress)
        config = dataclasses.replace(plan.config, **settings)
        done = store.done() if store is not None else {}
        _measure(loss_fn, data, plan, config, [it for it in plan.items if it.step not in done], write, metrics,
                 template=template, acceptance_checks=acceptance_checks, checkpoints_per_group=checkpoints_per_group,
                 progress=progress, devices=devices)
    finally:
        if store is not None:
            store.close()
    return Trajectory.from_records(header, records, path=os.fspath(out) if out is not None else None)


def _measure(loss_fn, data, plan: _SweepPlan, config: LLCConfig, todo: list[Item], write, metrics, *, template,
             acceptance_checks, checkpoints_per_group, progress, devices) -> None:
    """Every checkpoint of ``todo`` in groups of one program each; each record written as soon as its group is done."""
    num_params = sum(int(np.prod(s)) for s, _ in plan.reference[1])
    masks = [None] + list(plan.masks.values())  # the whole model, then each component
    per_checkpoint = len(masks) * config.num_chains
    group = checkpoints_per_group or auto_group_size(num_params, per_checkpoint, len(todo))
    groups = _balanced_groups(todo, group)
    if not groups:
        return
    size = max(len(g) for g in groups)
    _check_group_devices(devices, size * len(masks), config.num_chains)  # before any sampling
    device_data = _place_data(data, shard.chain_mesh(devices, size * per_checkpoint))
    # a bar within the chains too, when one group's run is long
    inner_bar = bool(progress) and config.num_steps * per_checkpoint * size >= 20_000
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="checkpoints", unit="ckpt")
    warned: list[int] = []
    try:
        for chunk in groups:
            loaded = _load_group(loss_fn, data, plan, chunk, template, write, metrics, bar)
            if not loaded:
                continue
            padded = loaded + [loaded[-1]] * (size - len(loaded))
            units = [Unit(params, loss, mask) for _, params, loss in padded for mask in masks]
            sampled = run_units(loss_fn, device_data, units, config, acceptance_checks=acceptance_checks,
                                progress=inner_bar, desc=f"steps {loaded[0][0].step}..{loaded[-1][0].step}",
                                devices=devices, auto_burnin=plan.auto_burnin)
            for g, (it, _, loss) in enumerate(loaded):
                runs = sampled.runs[g * len(masks):(g + 1) * len(masks)]
                record = _checkpoint_record(it, runs, loss, sampled, plan, num_params, metrics.get(it.step),
                                            group=len(loaded), share=size * len(masks))
                if record["diagnostics"].get("warnings"):
                    warned.append(it.step)
                write(record)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if warned:
        from slt.diagnostics import SLTWarning

        warnings.warn(
            f"{len(warned)} checkpoint(s) have estimator warnings (steps {_short_steps(warned)}); "
            "see Trajectory.diagnostics[i]['warnings']", SLTWarning, stacklevel=3,
        )


def _load_group(loss_fn, data, plan: _SweepPlan, chunk: list[Item], template, write, metrics, bar) -> list[tuple]:
    """[(item, params, L(w*))] of the group's checkpoints that load and have a finite loss; the others are
    recorded as failed."""
    loaded = []
    for it in chunk:
        if it.step not in plan.failures:
            try:
                params = plan.first_params if it is plan.first else load_checkpoint(it, template, plan.reference)
                loaded.append((it, params, initial_loss(loss_fn, params, data)))
                continue
            except (CheckpointError, check.SLTInputError) as err:
                plan.failures[it.step] = str(err)
        write(_failed_record(it, plan.failures[it.step], metrics.get(it.step)))
        if bar is not None:
            bar.update(1)
    return loaded


def _checkpoint_record(it: Item, runs, init_loss: float, sampled, plan: _SweepPlan, num_params: int, metrics,
                       *, group: int, share: int) -> dict:
    """The store record of one checkpoint: the whole model's estimate, and each component's under "components"."""
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        whole = llc_from_run(runs[0], init_loss, sampled.config, num_params=num_params)
        parts = {name: llc_from_run(run, init_loss, sampled.config, num_params=num_free(plan.masks[name]))
                 for name, run in zip(plan.masks, runs[1:])}
    if sampled.burnin is not None:
        whole.diagnostics["burnin"] = sampled.burnin.to_dict()
        if whole.diagnostics["healthy_chains"] > 0:
            whole.diagnostics["warnings"].extend(burnin_warnings(sampled.burnin))
    record = _ok_record(it, whole, metrics, group=group)
    record["timing"]["share_of_group"] = 1 / share
    if parts:
        record["components"] = {name: _estimate_fields(res) for name, res in parts.items()}
    return record


def _short_steps(steps: list[int], n: int = 6) -> str:
    return ", ".join(map(str, steps[:n])) + (f", ... (+{len(steps) - n})" if len(steps) > n else "")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _estimate_fields(res: LLCResult) -> dict:
    """What a store record keeps of one estimate."""
    return {"llc_mean": res.llc_mean, "llc_std": res.llc_std, "llc_per_chain": res.llc_per_chain,
            "init_loss": res.init_loss, "nbeta": res.nbeta, "num_params": res.num_params,
            "diagnostics": dict(res.diagnostics)}


def _ok_record(item: Item, res: LLCResult, metrics, group: int) -> dict:
    diag = dict(res.diagnostics)
    rec = {
        "step": item.step,
        "status": "ok" if diag.get("healthy_chains", 1) > 0 else "diverged",
        "source": item.source,
        **_estimate_fields(res),
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


def _failed_record(item: Item, error: str, metrics) -> dict:
    rec = {"step": item.step, "status": "failed", "source": item.source, "error": error, "finished": _now()}
    if metrics:
        rec["metrics"] = metrics
    return rec


# --------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------


def _component_names(header: dict, ok: Sequence[dict]) -> list[str]:
    """The components a store measured: from its header, else from the records."""
    names = list((header.get("config") or {}).get("components") or {})
    if not names:
        return []
    for r in ok:
        names += [k for k in (r.get("components") or {}) if k not in names]
    return names


def _without_components(header: dict) -> dict:
    config = {k: v for k, v in (header.get("config") or {}).items() if k != "components"}
    return {**header, "config": config}


def _component_records(records, name: str) -> list[dict]:
    """One component's records, shaped like whole-model ones (its own healthy chains decide its status, also
    where the whole model's chains diverged: the component's chains are chains of their own)."""
    out = []
    for r in records:
        part = (r.get("components") or {}).get(name)
        if part is None:  # the checkpoint could not be measured at all
            out.append({k: r.get(k) for k in ("step", "status", "source", "error")})
            continue
        status = "ok" if (part.get("diagnostics") or {}).get("healthy_chains", 1) > 0 else "diverged"
        out.append({"step": r["step"], "status": status, "source": r.get("source"), **part,
                    "metrics": r.get("metrics"), "timing": r.get("timing"),
                    **({} if status == "ok" else {"error": f"component {name}: every chain diverged"})})
    return out


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
    components: dict[str, "Trajectory"] = dataclasses.field(default_factory=dict)  # name -> its refined LLC trajectory
    settings: dict = dataclasses.field(default_factory=dict)  # what step_size="auto"/localization="scale" chose
    num_params: int | None = None  # the coordinates the chains moved (a component's free ones)

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
            components={name: cls.from_records(_without_components(header), _component_records(latest.values(), name),
                                               path=path)
                        for name in _component_names(header, ok)},
            settings=next((r for r in reversed(records) if r.get("kind") == "settings"), {}),
            num_params=next((r.get("num_params") for r in ok if r.get("num_params") is not None), None),
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
    def compute_seconds(self) -> float:
        """Compile + sampling seconds of the programs that measured these checkpoints (whole model and
        components together). Each record holds its share of its group's program (``share_of_group`` of
        ``group_size`` checkpoints × units); diverged checkpoints' groups are not counted."""
        return float(sum((t.get("compile_seconds", 0) + t.get("sample_seconds", 0))
                         / t.get("share_of_group", 1) / t.get("group_size", 1) for t in self.timing))

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
