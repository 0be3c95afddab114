"""Induction-head demo: train the two-layer attention-only transformer of :mod:`slt.models.induction`,
measure the whole model's LLC and every head's weight-refined LLC at every checkpoint, find the
transitions of each, and check them against the mechanism (prefix-matching and previous-token scores,
in-context loss).

The organism (Olsson et al. 2022): random segments repeated to fill a context of 32 tokens, vocabulary
32, periods 4..16 per sequence; 2 layers × 3 heads, d_model 32, no MLP; Adam lr 5e-3, batch 32, 2000
steps. Its layer-1 heads become induction heads and one or two layer-0 heads previous-token heads, all
together at steps ~300-800 (``bench/induction.py``, ``docs/induction.md``).

The LLC: SGLD with a fixed step ε = 2e-4 (the smallest healthy recommendation of
:func:`slt.calibration.calibrate` at steps 0, 400 and 2000 of seed 0 was 1.4e-4 to 6e-4; the automatic
calibration at five checkpoints costs ~3 minutes on 2 cores, more than the whole quick budget), γ = 100,
nβ = n/log n, SGLD batch 16, a fixed burn-in. The 6 heads and the whole model are 7 masks batched with
the chains of one compiled program per checkpoint group (``llc_trajectory(components=...)``).

Everything is resumable: checkpoints and the training record in ``OUT/checkpoints``, LLC results in the
store ``OUT/llc.jsonl``; rerunning the same command skips what is done.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from slt.io import atomic_write_bytes, atomic_write_json, jsonable

__all__ = ["InductionSettings", "SETTINGS", "run_induction_demo", "validate_report", "plot_induction"]


@dataclass(frozen=True)
class InductionSettings:
    """What a demo run does (recorded in the store's meta and in the report)."""

    # the organism (slt.models.induction.make_induction_task) and its training
    vocab: int = 32
    n_ctx: int = 32
    period: tuple[int, int] = (4, 16)
    d_model: int = 32
    num_heads: int = 3
    d_head: int = 8
    n: int = 4096
    n_eval: int = 512
    lr: float = 5e-3
    train_batch: int = 32
    num_steps: int = 2000
    checkpoint_steps: tuple[int, ...] = (0, 20, 60, 120, 200, 260, 320, 380, 440, 500, 575, 650, 750, 900, 1200,
                                         1600, 2000)
    # LLC
    step_size: float | str = 2e-4
    nbeta: float | None = None  # n / log n
    localization: float = 100.0
    llc_batch: int = 16
    num_chains: int = 3
    num_draws: int = 200
    num_burnin: int | str = 100
    # transitions and roles
    threshold: float = 5.0  # detector z-score
    role_threshold: float = 0.5  # an induction head: final prefix-matching ≥ this
    slack: float = 1.5  # a transition matches a formation window stretched by this factor in step (log-step slack)


SETTINGS = {
    "default": InductionSettings(),
    "quick": InductionSettings(
        checkpoint_steps=(0, 20, 60, 120, 200, 280, 360, 440, 520, 650, 900, 2000),
        num_chains=2, num_draws=120, num_burnin=60,
    ),
    "tiny": InductionSettings(  # for CI: the pipeline end to end on a toy size (induction need not form)
        vocab=12, n_ctx=12, period=(3, 6), d_model=16, num_heads=2, d_head=4, n=256, n_eval=32,
        num_steps=120, checkpoint_steps=(0, 10, 20, 40, 60, 90, 120), num_chains=2, num_draws=30, num_burnin=10,
        llc_batch=16,
    ),
}

TRAIN_KEYS = ("vocab", "n_ctx", "period", "d_model", "num_heads", "d_head", "n", "n_eval", "lr", "train_batch",
              "num_steps", "checkpoint_steps")
SCALAR_METRICS = ("train_loss", "in_context_loss", "repeat_loss")


# --------------------------------------------------------------------------
# training (reused on rerun)
# --------------------------------------------------------------------------


def _task(settings: InductionSettings, seed: int):
    from slt.models import induction as ind

    s = settings
    return ind.make_induction_task(seed, vocab=s.vocab, n_ctx=s.n_ctx, period=s.period, d_model=s.d_model,
                                   num_heads=s.num_heads, d_head=s.d_head, n=s.n, n_eval=s.n_eval, lr=s.lr)


def _train(out: str, settings: InductionSettings, seed: int, task, restart: bool, log) -> tuple[dict, bool]:
    """Train (or reuse a finished training in ``out/checkpoints``); returns (training record, trained now)."""
    from slt.demo import reuse_or_train
    from slt.models.train import train

    wanted = jsonable({**{k: getattr(settings, k) for k in TRAIN_KEYS}, "seed": seed, "optimizer": "adam"})
    wanted = {k: (list(v) if isinstance(v, tuple) else v) for k, v in wanted.items()}

    def run_training(ckpt_dir):
        return train(task.params, task.loss_fn, task.data, optimizer=task.meta["optimizer"],
                     num_steps=settings.num_steps, batch_size=settings.train_batch,
                     checkpoint_steps=settings.checkpoint_steps, checkpoint_dir=ckpt_dir,
                     eval_fn=task.meta["mechanism_fn"], seed=seed, keep_params=False)

    return reuse_or_train(
        out, wanted, run_training, restart=restart, log=log, holds="an induction run",
        hint="use another --out (a quick, full and tiny run each need their own)",
        announce=f"training the attention-only transformer ({settings.num_heads} heads × 2 layers, vocab "
                 f"{settings.vocab}, context {settings.n_ctx}) for {settings.num_steps} steps, "
                 f"{len(settings.checkpoint_steps)} checkpoints ...")


# --------------------------------------------------------------------------
# the demo
# --------------------------------------------------------------------------


def run_induction_demo(
    out: str | os.PathLike,
    *,
    quick: bool = False,
    seed: int = 0,
    progress: bool | None = True,
    tiny: bool | None = False,
    restart: bool = False,
    settings: InductionSettings | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train, sweep the whole model's and every head's LLC over the checkpoints, detect transitions, report.

    Writes ``out/report.json``, ``out/report.md`` and ``out/induction.png`` (plus ``out/checkpoints/`` and the
    LLC store ``out/llc.jsonl``) and returns the report dict. ``quick``: fewer checkpoints, chains and draws
    (under 2 minutes on 2 cores); ``tiny`` (None: env ``SLT_DEMO_TINY=1``): a seconds-long toy run of the
    pipeline. ``progress``: log lines and progress bars on stderr (None: bars on a terminal only).
    ``restart``: replace a run made with other settings in ``out`` instead of refusing. ``settings``
    overrides the mode's :class:`InductionSettings`. ``report["failed"]`` lists the checkpoints (and
    components) whose estimate failed or diverged.
    """
    from slt.diagnostics import SLTWarning
    from slt.models import induction as ind

    t_start = time.perf_counter()
    out = os.fspath(out)
    if tiny is None:
        tiny = os.environ.get("SLT_DEMO_TINY", "") not in ("", "0")
    mode = "tiny" if tiny else "quick" if quick else "default"
    settings = settings or SETTINGS[mode]
    if log is None:
        def log(msg):
            if progress is not False:
                print(f"[slt demo induction] {msg}", file=sys.stderr, flush=True)
    os.makedirs(out, exist_ok=True)

    task = _task(settings, seed)
    rec, trained = _train(out, settings, seed, task, restart, log)
    history = rec["history"]
    metrics = {h["step"]: {k: h[k] for k in SCALAR_METRICS if k in h} for h in history}
    masks = ind.head_masks(task.params)

    log(f"LLC of the whole model and of {len(masks)} heads at {len(history)} checkpoints "
        f"({settings.num_chains} chains × {settings.num_draws} draws, burn-in {settings.num_burnin}, "
        f"ε={settings.step_size}, γ={settings.localization:g}, batch {settings.llc_batch}) ...")
    t_llc = time.perf_counter()
    meta = {"demo": "induction", "mode": mode, "seed": seed, "training": rec["settings"]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SLTWarning)
        traj = _sweep(task, out, settings, seed, metrics, meta, masks, restart or trained, progress)
    notes = [str(w.message) for w in caught if issubclass(w.category, SLTWarning)]
    for w in caught:
        if not issubclass(w.category, SLTWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    llc_seconds = time.perf_counter() - t_llc
    log(f"LLC: done in {llc_seconds:.1f} s")

    t_det = time.perf_counter()
    report = build_report(traj, history, settings, mode=mode, seed=seed, num_params=task.meta["num_params"])
    report["notes"] = notes
    report["validation"] = validate_report(report, slack=settings.slack)
    report["timing"] = {
        "train_seconds": rec["wall_seconds"],
        "trained_this_run": trained,
        "llc_seconds_this_run": llc_seconds,
        "llc_compute_seconds": traj.compute_seconds,
        "detect_seconds": time.perf_counter() - t_det,
    }
    plot_induction(report, os.path.join(out, "induction.png"))
    report["timing"]["total_seconds_this_run"] = time.perf_counter() - t_start
    report = jsonable(report)
    atomic_write_json(os.path.join(out, "report.json"), report)
    atomic_write_bytes(os.path.join(out, "report.md"), report_markdown(report).encode())
    log(f"wrote {out}/report.json, report.md, induction.png in {report['timing']['total_seconds_this_run']:.1f} s")
    return report


def _sweep(task, out, settings: InductionSettings, seed, metrics, meta, masks, restart, progress):
    from slt.checkpoints import list_checkpoints
    from slt.trajectory import llc_trajectory

    ckpt_dir = os.path.join(out, "checkpoints")
    found = dict(list_checkpoints(ckpt_dir))
    width = max(6, len(str(settings.num_steps)))  # slt.models.train's file names
    ckpts = [(s, found.get(s, os.path.join(ckpt_dir, f"step_{s:0{width}d}.safetensors")))
             for s in settings.checkpoint_steps]
    return llc_trajectory(
        task.loss_fn, ckpts, task.data, out=os.path.join(out, "llc.jsonl"), template=task.params,
        step_size=settings.step_size, nbeta=settings.nbeta, localization=settings.localization,
        num_chains=settings.num_chains, num_draws=settings.num_draws, num_burnin=settings.num_burnin,
        batch_size=settings.llc_batch, seed=seed, acceptance_checks=0, metrics=metrics, meta=meta,
        restart=restart, progress=None if progress is None else bool(progress), components=masks,
    )


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------


def _transitions(steps, values, sems, threshold) -> list:
    """Rises and falls of one signal against log step (steps ≤ 0 and non-finite points left out)."""
    from slt.transitions import detect_transitions

    steps, values = np.asarray(steps, float), np.asarray(values, float)
    keep = (steps > 0) & np.isfinite(values)
    if sems is not None:
        sems = np.asarray(sems, float)
        if np.isfinite(sems[keep]).any():
            keep &= np.isfinite(sems)
        else:  # e.g. a standard error over a single sequence: the detector estimates the noise itself
            sems = None
    if keep.sum() < 6:
        return []
    try:
        found = detect_transitions(steps[keep], values[keep], stds=None if sems is None else sems[keep],
                                   threshold=threshold, log_steps=True, boundaries=False)
    except ValueError:
        return []
    return [{"step": t.step, "start": t.start, "end": t.end, "direction": t.direction, "kind": t.kind,
             "score": t.score, "magnitude": t.magnitude} for t in found]


def build_report(traj, history, settings: InductionSettings, *, mode: str, seed: int, num_params=None) -> dict:
    """The report dict: per head, the LLC, its transitions, the scores and the role; the whole model; the
    in-context loss."""
    from slt.models import induction as ind

    mech = ind.mechanism_history(history)
    summary = ind.formation_summary(history, threshold=settings.role_threshold)
    mech_steps = [int(s) for s in mech["steps"]]
    index = {s: i for i, s in enumerate(mech_steps)}

    failed = [{"step": int(f["step"]), "component": None, "status": "diverged" if "diverged" in f["error"]
               else "failed", "error": f["error"]} for f in traj.failed]
    components = {}
    for name, part in traj.components.items():
        l, h = int(name[1]), int(name[3:])
        steps = [int(s) for s in part.steps]
        rows = [index[s] for s in steps]
        head = summary["heads"][name]
        components[name] = {
            "steps": steps,
            "llc": part.llc_mean,
            "llc_std": part.llc_std,
            "num_params": part.num_params,
            "transitions": _transitions(part.steps, part.llc_mean, part.llc_sem, settings.threshold),
            "prefix_matching": mech["prefix_matching"][rows, l, h],
            "previous_token": mech["previous_token"][rows, l, h],
            "role": head["role"],
            "formation": head["formation"],
        }
        known = {f["step"] for f in failed}
        for f in part.failed:
            if f["step"] not in known:
                failed.append({"step": int(f["step"]), "component": name, "status": "diverged",
                               "error": f["error"]})
    icl = mech["in_context_loss"]
    model_steps = [int(s) for s in traj.steps]
    report = {
        "demo": "induction",
        "mode": mode,
        "seed": seed,
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(settings).items()},
        "num_params": num_params,
        "components": components,
        "induction_heads": summary["induction_heads"],
        "previous_token_heads": summary["previous_token_heads"],
        "other_heads": summary["other_heads"],
        "model": {
            "steps": model_steps,
            "llc": traj.llc_mean,
            "llc_std": traj.llc_std,
            "transitions": _transitions(traj.steps, traj.llc_mean, traj.llc_sem, settings.threshold),
            "rhat": [d.get("rhat") for d in traj.diagnostics],
        },
        "in_context_loss": {
            "steps": mech_steps,
            "values": icl,
            # with its Monte Carlo standard error: a nearly noise-free signal left to the detector's own noise
            # estimate was over-fitted between sparse early checkpoints (a fall of -3.2 "at 60-91", seed 2)
            "transitions": _transitions(mech["steps"], icl, mech.get("in_context_loss_sem"), settings.threshold),
            "sem": mech.get("in_context_loss_sem"),
            "fall": summary["in_context_loss"]["fall"],
            "steepest_drop": summary["in_context_loss"]["steepest_drop"],
        },
        "train_loss": mech.get("train_loss"),
        "repeat_loss": mech["repeat_loss"],
        "failed": sorted(failed, key=lambda f: (f["step"], f["component"] or "")),
        "warnings": {int(s): d.get("warnings") for s, d in zip(model_steps, traj.diagnostics) if d.get("warnings")},
        "step_size_used": traj.settings.get("step_size", (traj.config.get("llc") or {}).get("step_size")),
    }
    return jsonable(report)


def _window_hits(transitions, window, slack):
    """The transitions whose change point lies in ``window`` (start, end) stretched by ``slack`` in step."""
    if not window or window.get("start") is None:
        return []
    lo, hi = max(window["start"], 1e-9) / slack, window["end"] * slack
    return [t for t in transitions if lo <= t["step"] <= hi]


def validate_report(report: dict, *, slack: float = 1.5) -> dict:
    """The checks of the validation, from a report.

    * each induction head and each previous-token head: a flagged rise/fall of its own LLC whose change
      point lies inside its score's 10 % → 90 % window, stretched by ``slack`` (÷ at the start, × at the
      end: slack in log step);
    * heads of neither role: every flagged transition counts as a false alarm;
    * the whole model's LLC and the in-context loss: a transition of each whose windows overlap (the same
      phase change), and the distance of their change points in log step.
    """
    heads = {}
    for name, c in report["components"].items():
        role = c["role"]
        hits = _window_hits(c["transitions"], c["formation"], slack) if role != "none" else []
        heads[name] = {"role": role, "formation": c["formation"], "transitions": len(c["transitions"]),
                       "hits": [t["step"] for t in hits],
                       "ok": bool(hits) if role != "none" else None,
                       "false_alarms": len(c["transitions"]) if role == "none" else 0}
    model_t, icl_t = report["model"]["transitions"], report["in_context_loss"]["transitions"]
    pairs = [(abs(math.log(a["step"]) - math.log(b["step"])), a, b) for a in model_t for b in icl_t
             if a["start"] <= b["end"] and b["start"] <= a["end"]]
    together = None
    if pairs:
        d, a, b = min(pairs, key=lambda p: p[0])
        together = {"llc_step": a["step"], "icl_step": b["step"], "log_step_distance": d,
                    "llc_window": [a["start"], a["end"]], "icl_window": [b["start"], b["end"]]}
    specialised = [h for h in heads.values() if h["role"] != "none"]
    return {
        "slack": slack,
        "heads": heads,
        "induction_ok": all(h["ok"] for h in heads.values() if h["role"] == "induction")
        and any(h["role"] == "induction" for h in heads.values()),
        "previous_token_ok": all(h["ok"] for h in heads.values() if h["role"] == "previous_token")
        and any(h["role"] == "previous_token" for h in heads.values()),
        "specialised_hit": sum(bool(h["ok"]) for h in specialised),
        "specialised": len(specialised),
        "false_alarms": sum(h["false_alarms"] for h in heads.values()),
        "non_specialising_heads": sum(h["role"] == "none" for h in heads.values()),
        "model_and_icl_together": together,
    }


def _fmt(x, fmt=".3g"):
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def _window(f):
    return "—" if not f or f.get("start") is None else f"{f['start']:.0f}–{f['end']:.0f}"


def _events(ts):
    return "; ".join(f"{t['kind']} at {t['step']:.0f} [{t['start']:.0f}, {t['end']:.0f}] (z {t['score']:.1f})"
                     for t in ts) or "none"


def report_markdown(r: dict) -> str:
    """Human-readable report (Markdown)."""
    s, v = r["settings"], r["validation"]
    lines = [
        f"# Induction-head demo ({r['mode']}, seed {r['seed']})",
        "",
        f"Two-layer attention-only transformer ({s['num_heads']} heads per layer, d_model {s['d_model']}, "
        f"{r['num_params']} parameters) on random segments of period {s['period'][0]}–{s['period'][1]} repeated "
        f"to a context of {s['n_ctx']} (vocab {s['vocab']}, n = {s['n']}); Adam lr {s['lr']:g}, batch "
        f"{s['train_batch']}, {s['num_steps']} steps, {len(s['checkpoint_steps'])} checkpoints.",
        f"LLC: SGLD ε = {_fmt(r.get('step_size_used'))}, γ = {s['localization']:g}, nβ = n/log n, batch "
        f"{s['llc_batch']}, {s['num_chains']} chains × {s['num_draws']} draws after {s['num_burnin']} burn-in "
        "steps; the whole model and each head's weight-refined LLC (W_Q, W_K, W_V, W_O of that head free, "
        "the rest held at the checkpoint) in one program per checkpoint.",
        f"Transitions: `slt.detect_transitions` on each LLC against log step (z ≥ {s['threshold']:g}).",
        "",
        "![per-head LLC, scores and in-context loss](induction.png)",
        "",
        "## Summary",
        "",
        f"- induction heads (final prefix-matching ≥ {s['role_threshold']:g}): "
        f"**{', '.join(r['induction_heads']) or 'none'}**",
        f"- previous-token heads: **{', '.join(r['previous_token_heads']) or 'none'}**; neither: "
        f"{', '.join(r['other_heads']) or 'none'}",
        f"- specialised heads with an LLC transition inside their formation window (×/÷ {v['slack']:g}): "
        f"**{v['specialised_hit']} of {v['specialised']}**",
        f"- false alarms (transitions of heads that never specialise): **{v['false_alarms']}** on "
        f"{v['non_specialising_heads']} head(s)",
        f"- whole-model LLC: {_events(r['model']['transitions'])}",
        f"- in-context loss: {_events(r['in_context_loss']['transitions'])}; steepest drop between steps "
        f"{r['in_context_loss']['steepest_drop'][0]} and {r['in_context_loss']['steepest_drop'][1]}; final "
        f"{_fmt(r['in_context_loss']['values'][-1], '+.2f')}",
    ]
    t = v["model_and_icl_together"]
    lines.append("- whole-model LLC and in-context loss together: " + (
        f"yes (change points {t['llc_step']:.0f} and {t['icl_step']:.0f}, windows overlap)" if t else "**no**"))
    tm = r["timing"]
    lines += [f"- time: training {tm['train_seconds']:.0f} s{'' if tm['trained_this_run'] else ' (reused)'}, "
              f"LLC {tm['llc_seconds_this_run']:.0f} s, {tm['total_seconds_this_run']:.0f} s in total", ""]
    lines += ["## Heads", "",
              "| head | role | final PM | final PT | formation 10–90 % | LLC transitions | in window |",
              "|---|---|---:|---:|---|---|---|"]
    for name, c in r["components"].items():
        h = v["heads"][name]
        ok = "—" if h["ok"] is None else ("yes" if h["ok"] else "**no**")
        lines.append(f"| {name} | {c['role']} | {_fmt(c['prefix_matching'][-1], '.2f')} | "
                     f"{_fmt(c['previous_token'][-1], '.2f')} | {_window(c['formation'])} | "
                     f"{_events(c['transitions'])} | {ok} |")
    if r["failed"]:
        lines += ["", "## Failed checkpoints", ""] + [
            f"- step {f['step']}{' (' + f['component'] + ')' if f['component'] else ''}: {f['error']}"
            for f in r["failed"]]
    names = list(r["components"])
    lines += ["", "## Per checkpoint", "",
              "| step | model LLC | ± sd | " + " | ".join(names) + " | in-context loss |",
              "|---:|---:|---:|" + "---:|" * len(names) + "---:|"]
    icl = dict(zip(r["in_context_loss"]["steps"], r["in_context_loss"]["values"]))
    for i, step in enumerate(r["model"]["steps"]):
        cols = []
        for n in names:
            c = r["components"][n]
            cols.append(_fmt(c["llc"][c["steps"].index(step)], ".1f") if step in c["steps"] else "—")
        lines.append(f"| {step} | {_fmt(r['model']['llc'][i], '.1f')} | {_fmt(r['model']['llc_std'][i], '.1f')} | "
                     + " | ".join(cols) + f" | {_fmt(icl.get(step), '+.2f')} |")
    if r.get("notes"):
        lines += ["", "## Notes from the estimator", ""] + [f"- {n}" for n in r["notes"]]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# plot
# --------------------------------------------------------------------------


def plot_induction(report: dict, path: str | None = None):
    """One panel per head (its LLC ± sd, flagged transitions as lines with their windows shaded, and on a
    second axis its prefix-matching and previous-token scores, the formation window hatched), then the
    whole model's LLC beside the in-context loss. Log-step axis (step 0 drawn at the axis' linear part)."""
    from matplotlib.figure import Figure

    comps = report["components"]
    names = list(comps)
    layers = sorted({n[:2] for n in names})
    per_layer = max(sum(n.startswith(l) for n in names) for l in layers)
    fig = Figure(figsize=(3.6 * per_layer, 2.7 * (len(layers) + 1)), constrained_layout=True)
    grid = fig.add_gridspec(len(layers) + 1, per_layer)

    def xaxis(ax):
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(0, max(report["model"]["steps"] or [1]))

    def marks(ax, ts, color):
        for t in ts:
            ax.axvspan(t["start"], t["end"], color=color, alpha=0.12, lw=0)
            ax.axvline(t["step"], color=color, lw=1.2, ls="-" if t["direction"] > 0 else "--")

    for li, l in enumerate(layers):
        for hi, name in enumerate(n for n in names if n.startswith(l)):
            c = comps[name]
            ax = fig.add_subplot(grid[li, hi])
            steps = np.asarray(c["steps"], float)
            llc = np.array([np.nan if x is None else x for x in c["llc"]], float)
            sd = np.array([np.nan if x is None else x for x in c["llc_std"]], float)
            ax.plot(steps, llc, color="k", lw=1.4, marker=".", ms=4, label="head LLC")
            ax.fill_between(steps, llc - sd, llc + sd, color="k", alpha=0.15, lw=0)
            marks(ax, c["transitions"], "tab:purple")
            f = c.get("formation")
            if f and f.get("start") is not None:
                ax.axvspan(f["start"], f["end"], facecolor="none", edgecolor="tab:green", hatch="//", alpha=0.4,
                           lw=0)
            xaxis(ax)
            ax.set_title(f"{name} ({c['role'].replace('_', '-')})", fontsize="medium")
            if hi == 0:
                ax.set_ylabel("λ̂ (head)")
            ax2 = ax.twinx()
            ax2.plot(steps, c["prefix_matching"], color="tab:red", lw=1, label="prefix-matching")
            ax2.plot(steps, c["previous_token"], color="tab:blue", lw=1, label="previous-token")
            ax2.set_ylim(0, 1)
            if li == 0 and hi == 0:
                h1, l1 = ax.get_legend_handles_labels()
                h2, l2 = ax2.get_legend_handles_labels()
                ax.legend(h1 + h2, l1 + l2, fontsize="x-small", loc="upper left")
    ax = fig.add_subplot(grid[len(layers), :])
    m = report["model"]
    llc = np.array([np.nan if x is None else x for x in m["llc"]], float)
    sd = np.array([np.nan if x is None else x for x in m["llc_std"]], float)
    ax.plot(m["steps"], llc, color="k", lw=1.5, marker=".", label="whole-model LLC")
    ax.fill_between(m["steps"], llc - sd, llc + sd, color="k", alpha=0.15, lw=0)
    marks(ax, m["transitions"], "tab:purple")
    ax.set_ylabel("λ̂ (whole model)")
    ax.set_xlabel("training step (lines: flagged LLC transitions, solid rise, dashed fall; hatched: formation "
                  "window of the head's score)")
    xaxis(ax)
    ax2 = ax.twinx()
    icl = report["in_context_loss"]
    ax2.plot(icl["steps"], icl["values"], color="tab:orange", lw=1.2, label="in-context loss")
    marks(ax2, icl["transitions"], "tab:orange")
    ax2.set_ylabel("in-context loss (nats)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize="small", loc="center left")
    fig.suptitle(f"Induction heads, seed {report['seed']} ({report['mode']}): per-head LLC vs mechanism",
                 fontsize="medium")
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
