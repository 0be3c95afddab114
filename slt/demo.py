"""Grokking demo: train the modular-addition MLP, measure the LLC at every
checkpoint, find the phase transitions, write a report.

The model and recipe of REFERENCE §5 (the devinterp grokking example): p = 53,
train fraction 0.5, embedding 12, hidden 48, GELU; Adam lr 5e-3 with coupled
weight decay 2e-4, batch 128. Train accuracy reaches 0.95 in ~2k steps
(memorisation), test accuracy in ~9k-16k (grokking). The LLC (SGLD, ε = 3e-3,
nβ = 2, γ = 5, batch 128; Lau et al. 2023) rises during memorisation and falls
before and through grokking, as the network trades a memorising solution for
a simpler, generalising one (Watanabe's free energy F_n ≈ nL_n + λ log n:
lower λ wins once the loss gap closes).

Everything is resumable: checkpoints and training metrics are kept in
``OUT/checkpoints``, LLC results in the store ``OUT/llc.jsonl``; rerunning
the same command skips what is done.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable

import numpy as np

from slt.io import atomic_write_json, jsonable

__all__ = ["DemoSettings", "SETTINGS", "run_grokking_demo", "first_step_reaching"]


#: the grokking MLP's layers, for the per-layer (weight-refined) LLC: the embedding, the two 12→48 maps, the 48→p map
LAYERS = {"embedding": "embed", "hidden": ["left", "right"], "unembedding": "out"}


@dataclass(frozen=True)
class DemoSettings:
    """What a demo run does (recorded in the store and the report)."""

    p: int = 53
    train_frac: float = 0.5
    num_steps: int = 20_000
    checkpoint_steps: tuple[int, ...] = (0, 100, 250, *range(500, 20_001, 500))
    train_batch: int = 128
    # LLC: the hyperparameters of REFERENCE §5 (nβ, γ, batch), a calibrated step and an automatic burn-in, and
    # enough draws that split R-hat ≤ 1.1 at every checkpoint (measured: 500 draws without burn-in, the published
    # protocol, give R-hat 1.2–1.25 everywhere; with the automatic burn-in 500 draws still give 1.13, 1000 give ≤ 1.05)
    step_size: float | str = "auto"
    nbeta: float = 2.0
    localization: float = 5.0
    llc_batch: int = 128
    num_chains: int = 4
    num_draws: int = 1000
    num_burnin: int | str = "auto"
    acceptance_checks: int = 20
    layers: bool = True  # also the refined LLC of each layer (LAYERS) at every checkpoint
    protocol: str = "converged"
    # transitions
    threshold: float = 5.0


SETTINGS = {
    "default": DemoSettings(),
    "quick": DemoSettings(
        checkpoint_steps=(0, 250, 500, 1000, 1500, 2000, 2500, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10_000,
                          11_000, 12_000, 13_000, 14_000, 16_000, 18_000, 20_000),
        acceptance_checks=0,
    ),
    "tiny": DemoSettings(  # for CI: the pipeline end to end, not grokking
        p=23, num_steps=600, checkpoint_steps=(0, 100, 200, 300, 400, 500, 600), num_chains=2, num_draws=40,
        acceptance_checks=0, step_size=3e-3, num_burnin=0,
    ),
}
#: the published short protocol (Lau et al.'s settings in devinterp's grokking example, REFERENCE §5): a fixed
#: ε = 3e-3, no burn-in, 500 draws; reproduces the published curve but its chains have not converged
PUBLISHED = {"step_size": 3e-3, "num_burnin": 0, "num_draws": 500, "layers": False, "protocol": "published"}
PROTOCOLS = ("converged", "published")

THRESHOLD_ACC = 0.95
SIGNALS = ("llc", "train_loss", "test_loss", "train_acc", "test_acc")


def first_step_reaching(steps, values, level: float = THRESHOLD_ACC):
    """First step whose value is ≥ level (None if never)."""
    for s, v in zip(steps, values):
        if v is not None and np.isfinite(v) and v >= level:
            return int(s)
    return None


def reuse_or_train(out: str, wanted: dict, run_training: Callable[[str], object], *, restart: bool, log,
                   announce: str, holds: str, hint: str) -> tuple[dict, bool]:
    """The training record of ``out/checkpoints`` (``train.json``), reused if made with the ``wanted`` settings,
    else from ``run_training(ckpt_dir)`` (a :class:`slt.models.train.TrainResult`); returns (record, trained now).

    Other settings without ``restart`` are a one-line ``UserError``: "{out} holds {holds} with other training
    settings (…); {hint}". The record is written (atomically) only once the training has finished.
    """
    from slt.commands._common import UserError

    ckpt_dir = os.path.join(out, "checkpoints")
    record_path = os.path.join(ckpt_dir, "train.json")
    if os.path.exists(record_path):
        with open(record_path) as f:
            rec = json.load(f)
        if rec.get("settings") == wanted:
            log(f"training: reusing {len(rec['history'])} checkpoints in {ckpt_dir}")
            return rec, False
        if not restart:
            changed = sorted(k for k in wanted if rec.get("settings", {}).get(k) != wanted[k])
            raise UserError(f"{out} holds {holds} with other training settings ({', '.join(changed)}); {hint}")
        os.remove(record_path)  # replaced below once the new training has finished
    log(announce)
    t0 = time.perf_counter()
    res = run_training(ckpt_dir)
    rec = {"settings": wanted, "history": res.history, "train_seconds": res.train_seconds,
           "wall_seconds": time.perf_counter() - t0}
    atomic_write_json(record_path, rec)
    log(f"training: done in {rec['wall_seconds']:.1f} s")
    return rec, True


def _train(out: str, settings: DemoSettings, seed: int, task, restart: bool, log) -> dict:
    """Train (or reuse a finished training in ``out/checkpoints``); returns the training record."""
    from slt.models.train import train

    wanted = {"p": settings.p, "train_frac": settings.train_frac, "num_steps": settings.num_steps,
              "checkpoint_steps": list(settings.checkpoint_steps), "batch_size": settings.train_batch, "seed": seed,
              "optimizer": "coupled Adam lr 5e-3 wd 2e-4"}

    def run_training(ckpt_dir):
        return train(task.params, task.loss_fn, task.train_data, optimizer=task.optimizer,
                     num_steps=settings.num_steps, batch_size=settings.train_batch,
                     checkpoint_steps=settings.checkpoint_steps, checkpoint_dir=ckpt_dir, eval_fn=task.eval_fn,
                     seed=seed, keep_params=False)

    rec, _ = reuse_or_train(
        out, wanted, run_training, restart=restart, log=log, holds="a run",
        hint="use another --out, or --restart to replace it",
        announce=f"training the modular-addition MLP (p={settings.p}, train fraction {settings.train_frac}) for "
                 f"{settings.num_steps} steps, {len(settings.checkpoint_steps)} checkpoints ...")
    return rec


def run_grokking_demo(
    out: str | os.PathLike,
    quick: bool = False,
    seed: int = 0,
    *,
    tiny: bool | None = None,
    num_chains: int | None = None,
    num_draws: int | None = None,
    step_size: float | str | None = None,
    num_burnin: int | str | None = None,
    protocol: str = "converged",
    restart: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train, measure the LLC at every checkpoint (and of each layer), detect transitions, and report.

    Writes ``out/report.json``, ``out/report.md``, ``out/llc.png`` and ``out/layers.png`` (plus
    ``out/checkpoints/`` and the LLC store ``out/llc.jsonl``) and returns the
    report dict. ``tiny`` (default: env ``SLT_DEMO_TINY=1``) runs a seconds-long
    CI version (p = 23, 600 steps: no grokking). ``num_chains``, ``num_draws``, ``step_size`` (a number or
    "auto") and ``num_burnin`` (steps or "auto") override the mode's sampler settings. ``protocol``:
    "converged" (default: calibrated step, automatic burn-in, 1000 draws) or "published" (the short
    protocol of REFERENCE §5, labelled as such in the report: its chains have not converged).
    """
    import warnings

    from slt.diagnostics import SLTWarning
    from slt.models.modular import make_modular_task
    from slt.plotting import plot_grokking

    t_start = time.perf_counter()
    out = os.fspath(out)
    if log is None:
        def log(msg):
            print(f"[slt demo] {msg}", file=sys.stderr, flush=True)
    if tiny is None:
        tiny = os.environ.get("SLT_DEMO_TINY", "") not in ("", "0")
    mode = "tiny" if tiny else "quick" if quick else "default"
    settings = demo_settings(mode, protocol=protocol, num_chains=num_chains, num_draws=num_draws,
                             step_size=step_size, num_burnin=num_burnin)
    os.makedirs(out, exist_ok=True)

    task = make_modular_task("mlp", p=settings.p, train_frac=settings.train_frac, seed=seed)
    rec = _train(out, settings, seed, task, restart, log)
    history = {h["step"]: {k: h[k] for k in ("train_loss", "test_loss", "train_acc", "test_acc")}
               for h in rec["history"]}

    log(f"LLC at {len(history)} checkpoints{' and of each layer' if settings.layers else ''} "
        f"({settings.num_chains} chains × {settings.num_draws} draws, ε={settings.step_size}, "
        f"burn-in {settings.num_burnin}, nβ={settings.nbeta:g}, γ={settings.localization:g}) ...")
    t_llc = time.perf_counter()
    meta = {"demo": "grokking", "mode": mode, "seed": seed, "p": settings.p, "train_frac": settings.train_frac,
            "num_steps": settings.num_steps}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SLTWarning)
        traj = _sweep(task, out, settings, seed, history, meta, restart, progress)
    for w in caught:
        if issubclass(w.category, SLTWarning):
            log(f"note: {w.message}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    llc_seconds = time.perf_counter() - t_llc
    log(f"LLC: done in {llc_seconds:.1f} s ({len(traj)} checkpoints, {len(traj.failed)} failed)")

    t_det = time.perf_counter()
    report = build_report(traj, settings, mode=mode, seed=seed, num_params=task.meta["num_params"])
    detect_seconds = time.perf_counter() - t_det
    report["timing"] = {
        "train_seconds": rec["wall_seconds"],
        "llc_seconds_this_run": llc_seconds,
        "llc_compute_seconds": traj.compute_seconds,
        "detect_seconds": detect_seconds,
        "total_seconds_this_run": time.perf_counter() - t_start,
    }
    plot_grokking(
        traj.steps, traj.llc_mean, traj.llc_std, traj.metrics, transitions=report["_transitions"],
        grokking_step=report["grokking_step"], memorization_step=report["memorization_step"],
        title=f"Grokking, modular addition p={settings.p} (seed {seed}, {mode}, {settings.protocol} protocol)",
        path=os.path.join(out, "llc.png"),
    )
    if traj.components:
        plot_layers(traj, report, os.path.join(out, "layers.png"))
    report.pop("_transitions")
    report["timing"]["total_seconds_this_run"] = time.perf_counter() - t_start
    atomic_write_json(os.path.join(out, "report.json"), report)
    from slt.io import atomic_write_bytes

    atomic_write_bytes(os.path.join(out, "report.md"), report_markdown(report).encode())
    log(f"wrote {out}/report.json, report.md, llc.png in {report['timing']['total_seconds_this_run']:.1f} s")
    return report


def _sweep(task, out, settings: DemoSettings, seed, history, meta, restart, progress):
    from slt.checkpoints import list_checkpoints
    from slt.trajectory import llc_trajectory

    # exactly this run's steps (a missing file is recorded as failed; other files are not ours)
    ckpt_dir = os.path.join(out, "checkpoints")
    found = dict(list_checkpoints(ckpt_dir))
    width = max(6, len(str(settings.num_steps)))  # slt.models.train's file names
    ckpts = [(s, found.get(s, os.path.join(ckpt_dir, f"step_{s:0{width}d}.safetensors")))
             for s in settings.checkpoint_steps]
    return llc_trajectory(
        task.loss_fn, ckpts, task.train_data, out=os.path.join(out, "llc.jsonl"),
        template=task.params, step_size=settings.step_size, nbeta=settings.nbeta, localization=settings.localization,
        num_chains=settings.num_chains, num_draws=settings.num_draws, num_burnin=settings.num_burnin,
        batch_size=settings.llc_batch, seed=seed, acceptance_checks=settings.acceptance_checks,
        metrics=history, meta=meta, restart=restart, progress=progress,
        components=LAYERS if settings.layers else None,
    )


def demo_settings(mode: str, *, protocol: str = "converged", num_chains=None, num_draws=None, step_size=None,
                  num_burnin=None) -> DemoSettings:
    """The settings of a mode and protocol, with the given overrides (checked: a clear error, not a traceback)."""
    from slt.validation import SLTInputError

    if protocol not in PROTOCOLS:
        raise SLTInputError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    settings = SETTINGS[mode]
    if protocol == "published":
        settings = replace(settings, **PUBLISHED)
    overrides = {"num_chains": num_chains, "num_draws": num_draws, "step_size": step_size, "num_burnin": num_burnin}
    return replace(settings, **{k: v for k, v in overrides.items() if v is not None})


def build_report(traj, settings: DemoSettings, *, mode: str, seed: int, num_params: int | None = None) -> dict:
    """The report dict (plus ``_transitions``, the Transition objects, for plotting)."""
    steps = [int(s) for s in traj.steps]
    m = traj.metrics
    grok = first_step_reaching(steps, m.get("test_acc", []))
    half = first_step_reaching(steps, m.get("test_acc", []), 0.5)
    memo = first_step_reaching(steps, m.get("train_acc", []))
    transitions, note = [], None
    if len(traj) >= 6:
        values = {"llc": traj.llc_mean}
        for name in SIGNALS[1:]:
            if name in m:
                v = m[name]
                values[name] = np.log(np.maximum(v, 1e-12)) if name.endswith("loss") else v
        keep = np.ones(len(traj), bool)
        for v in values.values():
            keep &= np.isfinite(v)
        keep &= np.isfinite(traj.llc_sem)
        from slt.transitions import detect_transitions

        try:
            transitions = detect_transitions(
                traj.steps[keep].astype(float), {k: v[keep] for k, v in values.items()},
                stds={"llc": traj.llc_sem[keep]}, threshold=settings.threshold, log_steps=False,
            )
        except ValueError as err:
            note = f"transition detection skipped: {err}"
    else:
        note = f"transition detection needs ≥ 6 checkpoints, have {len(traj)}"

    llc = traj.llc_mean
    finite = np.isfinite(llc)
    peak_i = int(np.nanargmax(np.where(finite, llc, -np.inf))) if finite.any() else None

    def at(step):
        if step is None:
            return None
        i = steps.index(step)
        return {"step": step, "llc_mean": float(llc[i]), "llc_std": float(traj.llc_std[i])}

    report = {
        "demo": "grokking",
        "mode": mode,
        "seed": seed,
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(settings).items()},
        "num_params": num_params,
        "steps": steps,
        "llc_mean": traj.llc_mean,
        "llc_std": traj.llc_std,
        "llc_sem": traj.llc_sem,
        "train_loss": m.get("train_loss"),
        "test_loss": m.get("test_loss"),
        "train_acc": m.get("train_acc"),
        "test_acc": m.get("test_acc"),
        "memorization_step": memo,
        "grokking_step": grok,
        "llc_peak": at(steps[peak_i]) if peak_i is not None else None,
        "llc_at_test_acc_half": at(half),
        "llc_at_grokking": at(grok),
        "llc_final": at(steps[-1]) if steps else None,
        "transitions": [t.to_dict() for t in transitions],
        "transitions_text": [t.describe() for t in transitions],
        "failed": traj.failed,
        "warnings": {int(s): d.get("warnings") for s, d in zip(steps, traj.diagnostics) if d.get("warnings")},
        "rhat": [d.get("rhat") for d in traj.diagnostics],
        "burnin_steps": [(d.get("burnin") or {}).get("steps", settings.num_burnin) for d in traj.diagnostics],
        "step_size_used": traj.settings.get("step_size", (traj.config.get("llc") or {}).get("step_size")),
        "components": {name: _component_report(part, settings) for name, part in traj.components.items()},
    }
    rh = np.array([np.nan if v is None else v for v in report["rhat"]], float)
    report["converged_fraction"] = float(np.mean(np.isfinite(rh) & (rh <= 1.1))) if len(rh) else None
    if note:
        report["transitions_note"] = note
    out = jsonable(report)
    out["_transitions"] = transitions
    return out


def _at_step(component: dict, step):
    """A component's λ̂ at ``step`` (None where it has none: its rows are its own checkpoints, not the model's)."""
    steps = list(component.get("steps") or [])
    return component["llc"][steps.index(step)] if step in steps else None


def _component_report(part, settings: DemoSettings) -> dict:
    """One layer's trajectory and its transitions (the LLC alone, against step)."""
    from slt.transitions import detect_transitions

    keep = np.isfinite(part.llc_mean) & np.isfinite(part.llc_sem)
    transitions = []
    if keep.sum() >= 6:
        try:
            transitions = detect_transitions(part.steps[keep].astype(float), {"llc": part.llc_mean[keep]},
                                             stds={"llc": part.llc_sem[keep]}, threshold=settings.threshold,
                                             log_steps=False)
        except ValueError:
            transitions = []
    return jsonable({"steps": part.steps, "llc": part.llc_mean, "llc_std": part.llc_std,
                     "num_params": part.num_params,
                     "transitions": [t.to_dict() for t in transitions],
                     "warnings": {int(s): d.get("warnings") for s, d in zip(part.steps, part.diagnostics)
                                  if d.get("warnings")}})


def plot_layers(traj, report: dict, path: str) -> None:
    """Each layer's refined LLC over training (±1 sd across chains) beside the whole model's, with the
    memorisation and grokking steps marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4), constrained_layout=True)
    ax = fig.subplots()
    ax.plot(traj.steps, traj.llc_mean, color="k", lw=1.5, label="whole model")
    for name, part in traj.components.items():
        line, = ax.plot(part.steps, part.llc_mean, lw=1.2, label=f"{name} (refined)")
        ax.fill_between(part.steps, part.llc_mean - part.llc_std, part.llc_mean + part.llc_std, color=line.get_color(),
                        alpha=0.2, lw=0)
    for key, style, label in (("memorization_step", ":", "train acc ≥ 0.95"), ("grokking_step", "--", "test acc ≥ 0.95")):
        if report.get(key) is not None:
            ax.axvline(report[key], color="gray", ls=style, lw=1, label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel("λ̂ (bands: ±1 sd across chains)")
    ax.set_title("Per-layer (weight-refined) LLC over training", fontsize="medium")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)


def report_markdown(r: dict) -> str:
    """Human-readable report (Markdown)."""
    s = r["settings"]

    def f(x, fmt=".3g"):
        return "—" if x is None else format(x, fmt)

    def llc_at(key):
        v = r.get(key)
        return "—" if not v else f"{v['llc_mean']:.1f} ± {v['llc_std']:.1f} at step {v['step']}"

    lines = [
        f"# Grokking demo ({r['mode']}, seed {r['seed']})",
        "",
        f"Modular addition mod {s['p']}, train fraction {s['train_frac']}, MLP (embed 12, hidden 48, GELU); "
        f"Adam lr 5e-3, coupled weight decay 2e-4, batch {s['train_batch']}, {s['num_steps']} steps, "
        f"{len(r['steps'])} checkpoints.",
        f"LLC ({r['settings']['protocol']} protocol): SGLD ε = {_fmt_step(r)}, nβ = {s['nbeta']:g}, "
        f"γ = {s['localization']:g}, batch {s['llc_batch']}, {s['num_chains']} chains × {s['num_draws']} draws, "
        f"burn-in {_fmt_burnin(r)}.",
        "" if s["protocol"] == "converged" else
        "\n**The published short protocol**: a fixed step, no burn-in and 500 draws, as in REFERENCE §5. It "
        "reproduces the published curve, but its chains have not converged (see the warnings below); rerun "
        "without `--protocol published` for the converged estimate.\n",
        f"Converged (split R-hat ≤ 1.1): **{f((r.get('converged_fraction') or 0) * 100, '.0f')}%** of the checkpoints.",
        "",
        "![LLC, accuracy and loss over training](llc.png)",
        "",
        "## Summary",
        "",
        f"- train accuracy ≥ 0.95 first at step **{f(r['memorization_step'], 'd')}** (memorisation)",
        f"- test accuracy ≥ 0.95 first at step **{f(r['grokking_step'], 'd')}** (grokking)",
        f"- LLC peak: {llc_at('llc_peak')}",
        f"- LLC when test accuracy reaches 0.5: {llc_at('llc_at_test_acc_half')}",
        f"- LLC when test accuracy reaches 0.95: {llc_at('llc_at_grokking')}",
        f"- LLC at the end: {llc_at('llc_final')}",
        f"- time: training {f(r['timing']['train_seconds'], '.0f')} s, LLC {f(r['timing']['llc_seconds_this_run'], '.0f')} s "
        f"(calibration, burn-in and draws of this run), {f(r['timing']['total_seconds_this_run'], '.0f')} s in total",
        "",
        "## Transitions",
        "",
    ]
    if r["transitions"]:
        lines.append("Detected jointly on the LLC, log train/test loss and train/test accuracy (smoothed against "
                     "step; an event groups the signals whose change points lie close together, the first one "
                     "leads; the bands in the plot are the events' windows, the lines their change points):")
        lines.append("")
        for text, t in zip(r["transitions_text"], r["transitions"]):
            lines.append(f"- {text}")
            for m in t.get("members") or []:
                lines.append(f"  - {m['signals'][0]}: {m['kind'].replace('_', ' ')} at step {m['step']:.0f} "
                             f"[{m['start']:.0f}, {m['end']:.0f}], change {m['magnitude']:+.3g}, score {m['score']:.1f}")
    else:
        lines.append(f"- none detected{' (' + r['transitions_note'] + ')' if r.get('transitions_note') else ''}")
    if r.get("components"):
        lines += ["", "## Per layer", "", "The weight-refined LLC of each layer (Wang et al. 2024): only that layer's "
                  "weights move, the rest stay at the checkpoint; measured in the same program as the whole model.",
                  "", "![per-layer LLC](layers.png)", ""]
        for name, c in r["components"].items():
            llc = [v for v in c["llc"] if v is not None]
            events = "; ".join(f"{'rise' if t['direction'] > 0 else 'fall'} at step {t['step']:.0f}"
                               for t in c["transitions"]) or "none"
            lines.append(f"- **{name}** ({c.get('num_params') or '?'} parameters): λ̂ from {f(llc[0] if llc else None, '.1f')} "
                         f"to a peak of {f(max(llc) if llc else None, '.1f')}, {f(llc[-1] if llc else None, '.1f')} at the end; "
                         f"transitions: {events}")
    if r["failed"]:
        lines += ["", "## Failed checkpoints", ""] + [f"- step {x['step']}: {x['error']}" for x in r["failed"]]
    names = list(r.get("components") or {})
    lines += ["", "## Per checkpoint", "",
              "| step | LLC | ± sd | R-hat | " + "".join(f"{n} | " for n in names)
              + "train acc | test acc | train loss | test loss | warnings |",
              "|---:|---:|---:|---:|" + "---:|" * len(names) + "---:|---:|---:|---:|---:|"]
    warned = r.get("warnings") or {}
    for i, step in enumerate(r["steps"]):
        def col(k, fmt):
            v = r.get(k)
            return f(v[i] if v else None, fmt)

        layer_cols = "".join(f"{f(_at_step(r['components'][n], step), '.2f')} | " for n in names)
        count = len(warned.get(str(step)) or warned.get(step) or [])
        lines.append(f"| {step} | {col('llc_mean', '.2f')} | {col('llc_std', '.2f')} | {col('rhat', '.3f')} | "
                     f"{layer_cols}{col('train_acc', '.3f')} | {col('test_acc', '.3f')} | {col('train_loss', '.3g')} | "
                     f"{col('test_loss', '.3g')} | {count or ''} |")
    if warned:
        lines += ["", "## Warnings", "", "Every warning of every checkpoint's estimate (whole model):", ""]
        for step, messages in warned.items():
            for m in messages:
                lines.append(f"- step {step}: {m}")
    return "\n".join(lines) + "\n"


def _fmt_step(r: dict) -> str:
    step = r["settings"]["step_size"]
    if isinstance(step, str):
        used = r.get("step_size_used")
        return f"auto ({used:.3g}, the smallest healthy calibrated step)" if used and np.isfinite(used) else "auto"
    return f"{step:g}"


def _fmt_burnin(r: dict) -> str:
    burn = r["settings"]["num_burnin"]
    if isinstance(burn, str):
        used = [b for b in r.get("burnin_steps") or [] if b is not None]
        return f"automatic ({min(used)}–{max(used)} steps)" if used else "automatic"
    return f"{burn} steps"
