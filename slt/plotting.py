"""Plots of LLC trajectories (matplotlib; Agg backend is fine)."""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

__all__ = ["plot_trajectory", "plot_grokking"]

LLC_COLOR = "tab:blue"
# transitions in plot_grokking: not green/red, which are the train/test curves and their accuracy markers there
GROKKING_TRANSITION_COLORS = {"rise": "tab:purple", "fall": "tab:orange", "stage_boundary": "tab:gray"}


def _save(fig, path) -> None:
    if path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)
        fig.savefig(path, dpi=130, bbox_inches="tight")


def _llc_panel(ax, steps, mean, std, *, label="LLC λ̂", color=LLC_COLOR, failed_steps=()):
    steps = np.asarray(steps, float)
    mean, std = np.asarray(mean, float), np.asarray(std, float)
    ok = np.isfinite(mean)
    ax.plot(steps[ok], mean[ok], "-o", ms=3, color=color, label=label)
    band = ok & np.isfinite(std)
    if band.any():
        ax.fill_between(steps[band], (mean - std)[band], (mean + std)[band], color=color, alpha=0.25, lw=0,
                        label="±1 sd across chains")
    if len(failed_steps):
        ax.plot(failed_steps, np.zeros(len(failed_steps)), "x", color="k", transform=ax.get_xaxis_transform(),
                clip_on=False, label="failed checkpoint")
    ax.set_ylabel("LLC λ̂")


def plot_trajectory(traj, ax=None, *, log_x: bool = False, transitions=None, path=None, label: str = "LLC λ̂",
                    color: str = LLC_COLOR):
    """LLC mean over steps with a ±1 sd (across chains) band; failed checkpoints as ×.

    ``transitions``: a list of :class:`slt.transitions.Transition` (drawn with
    :func:`slt.transitions.plot_transitions`: a line at each step, a band over
    its window, both named in the legend), or True to run
    ``traj.detect()``. ``log_x``: log step axis (step-0 points are dropped).
    ``path``: save the figure there. Returns the Axes.
    """
    import matplotlib.pyplot as plt

    from slt.transitions import plot_transitions

    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 3.6))
    else:
        fig = ax.figure
    steps, mean, std = np.asarray(traj.steps, float), traj.llc_mean, traj.llc_std
    if log_x:
        keep = steps > 0
        steps, mean, std = steps[keep], mean[keep], std[keep]
    failed = [f["step"] for f in traj.failed if not log_x or f["step"] > 0]
    _llc_panel(ax, steps, mean, std, label=label, color=color, failed_steps=failed)
    if transitions is True:
        transitions = traj.detect(log_steps=True) if len(traj) >= 5 else []
    if transitions:
        plot_transitions(ax, transitions)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("training step")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)
    return ax


def plot_grokking(steps, llc_mean, llc_std, metrics: Mapping[str, Sequence[float]], *, transitions=(),
                  grokking_step=None, memorization_step=None, title=None, path=None):
    """Three panels over training steps: LLC ± sd; train/test accuracy; train/test loss (log y).

    Each panel shows the transitions of its own signals (the per-signal
    ``members`` of grouped transitions that moved on their own, co-moving ones
    left out): rises purple, falls orange, dashed at the step where half the
    change is done with a band over its 10–90 % window; stage boundaries grey,
    dotted, with a band between the moves. Dotted verticals mark where train
    (green) and test (red) accuracy first reach 0.95. Every panel's legend
    names what it shows. Returns the Figure.
    """
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, nothing to close

    from slt.transitions import plot_transitions

    fig = Figure(figsize=(8, 8.5))
    axes = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1, 1]})
    steps = np.asarray(steps, float)
    _llc_panel(axes[0], steps, llc_mean, llc_std)
    for name, style in (("train_acc", "-"), ("test_acc", "-")):
        if name in metrics:
            axes[1].plot(steps, metrics[name], style, label=name.replace("_", " "),
                         color="tab:green" if name.startswith("train") else "tab:red")
    axes[1].set_ylabel("accuracy")
    axes[1].set_ylim(-0.03, 1.03)
    for name in ("train_loss", "test_loss"):
        if name in metrics:
            axes[2].plot(steps, metrics[name], label=name.replace("_", " "),
                         color="tab:green" if name.startswith("train") else "tab:red")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("cross-entropy")
    axes[2].set_xlabel("training step")
    # each panel shows the per-signal transitions of its own signals
    members = [m for t in transitions for m in (t.members or (t,)) if not m.comoving]
    panel_signals = (("llc",), ("train_acc", "test_acc"), ("train_loss", "test_loss"))
    for ax, names in zip(axes, panel_signals):
        if members:
            plot_transitions(ax, members, signals=names, colors=GROKKING_TRANSITION_COLORS)
        for s, lab, c in ((memorization_step, "train acc ≥ 0.95", "tab:green"),
                          (grokking_step, "test acc ≥ 0.95", "tab:red")):
            if s is not None:
                ax.axvline(s, color=c, ls=":", lw=1.2, label=lab if ax is axes[1] else None)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    if title:
        axes[0].set_title(title)
    fig.tight_layout()
    _save(fig, path)
    return fig
