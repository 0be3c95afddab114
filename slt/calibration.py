"""Choose the SGLD step size ε by measurement instead of by hand.

The tempered local posterior p(w) ∝ exp(-nβ·L(w) - γ/2·‖w - w*‖²) is
sampled with Δw = -(ε/2)·∇U_B(w) + N(0, ε·I) (Lau et al. 2023, arXiv
2308.12108). :func:`calibrate` recommends the *largest* ε whose chains are
healthy, because a larger ε mixes faster for the same cost:

1. **Curvature.** Power iteration on the Hessian of L at w* gives its top
   eigenvalue h, hence the stability limit of the update on the quadratic
   part of U, ε_stab = 4 / (nβ·h + γ) (the drift is gradient descent with
   rate ε/2, stable while (ε/2)·(nβ·h + γ) < 2).
2. **Sweep.** One chain at each of 8 steps √2 apart, from ε_stab down, for
   ``num_steps`` steps (half burn-in): MALA acceptance of the proposals
   (Furman & Lau, arXiv 2402.03698), divergence, λ̂, and whether the λ̂
   trace levelled off. The candidate is the largest step passing all three.
   If the window misses the acceptance crossing, a probe one decade apart
   brackets it and the sweep is redone around it.
3. **Verification.** 8 chains at ε, ε/2 and ε/4 driven by the *same* noise
   and minibatches (common random numbers), so the differences
   D1 = λ̂(ε) - λ̂(ε/2) and D2 = λ̂(ε/2) - λ̂(ε/4) are measured far more
   precisely than any λ̂. SGLD's bias is O(ε), so step-size bias shows as
   D2 ≈ D1/2 and the bias at ε is ≈ 2·D1: then the largest of ε/2, ε/4
   whose difference is within tolerance is chosen (or the steps move down
   8×). A D2 significantly above D1/2 means λ̂ is still rising (slow modes):
   not step-size bias, so the step is kept and a warning asks for long runs.
   While neither reading is clear, coupled replicates are added.

Every stage is the SAME compiled program (:func:`slt.sampling.run_chains`
takes per-chain ε, nβ, γ): 8 chains per (nβ, γ) pair swept, ``num_steps``
steps; the calls differ only in the step sizes. Typical cost: 4 calls,
32·``num_steps`` chain-steps per (nβ, γ) (9600 at the default 300 steps);
replicates and further rounds add 24·``num_steps`` each.

Defaults (REFERENCE.md §1, §3):

- nβ = n/log n: Watanabe's β = 1/log n (WBIC temperature), the convention of
  Lau et al. and Furman & Lau. nβ is part of what λ̂ measures, not a tuning
  knob: at finite t = nβ, t·E_t[K] approaches λ like λ - (m-1)/(log t + c).
- γ = 1 (Lau et al., Furman & Lau). In a direction of loss curvature h the
  localization scales λ̂ by nβh/(nβh + γ), negligible while γ ≪ nβ·h, while
  still keeping chains from wandering along flat (singular) directions.
  Sweep γ (``localization=[...]``) to check: λ̂ that changes with γ means the
  neighbourhood is too small (large γ confines the chain, λ̂ falls) or too
  large (small γ lets it leave the basin: drift, λ̂ < 0 or rising).
- target acceptance 0.9: Furman & Lau report 0.86–0.93 for the accurate DLN
  estimates at up to 1e8 parameters.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from slt import diagnostics as diag
from slt import validation as check
from slt.curvature import top_hessian_eigenvalue
from slt.settings import validate_llc_inputs
from slt.localization import resolve_localization
from slt.io import jsonable
from slt.losses import initial_loss
from slt.posterior import Hyperparameters
from slt.samplers.base import get_sampler
from slt.sampling import RunConfig, run_chains

PyTree = Any

DEFAULT_LOCALIZATION = 1.0
TARGET_ACCEPTANCE = diag.ACCEPTANCE_TARGET  # 0.9, Furman & Lau (arXiv 2402.03698)
POINTS = 8  # chains per (nβ, γ) in each call: 8 sweep steps, 8 probe decades, 8 verification chains per step
SLOW_Z = 3.0  # calling a too-large D1 slow mixing keeps the step, so it needs 3 standard errors
GRID_TOP = 2.0  # after a probe, the sweep starts at GRID_TOP × the acceptance crossing ε_x it found


@dataclass
class Calibration:
    """What :func:`calibrate` measured and what it recommends.

    ``step_size``, ``nbeta``, ``localization`` and ``num_burnin`` are the
    recommended settings for :func:`slt.estimate_llc`. ``table`` has one row
    (dict) per (stage, ε, nβ, γ) point measured; ``choices`` one row per
    (nβ, γ) pair swept.
    """

    step_size: float
    nbeta: float
    localization: float
    num_burnin: int
    sampler: str
    batch_size: int
    num_examples: int
    init_loss: float
    target_acceptance: float
    table: list[dict]
    choices: list[dict]
    warnings: list[str] = field(default_factory=list)
    curvature: dict = field(default_factory=dict)
    cost: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    @property
    def llc(self) -> float:
        """λ̂ measured at the recommended settings during verification (short runs: a rough value)."""
        return self._choice()["llc"]

    @property
    def acceptance(self) -> float | None:
        """Mean MALA acceptance of the proposals at the recommended step (None if not defined)."""
        return self._choice()["acceptance"]

    def _choice(self) -> dict:
        for c in self.choices:
            if c["nbeta"] == self.nbeta and c["localization"] == self.localization:
                return c
        return self.choices[0]

    def estimate_kwargs(self) -> dict:
        """Keyword arguments for :func:`slt.estimate_llc` with the recommended settings."""
        return {
            "step_size": self.step_size,
            "nbeta": self.nbeta,
            "localization": self.localization,
            "num_burnin": self.num_burnin,
            "sampler": self.sampler,
            "batch_size": self.batch_size if self.batch_size < self.num_examples else None,
        }

    def to_dict(self) -> dict:
        """JSON-serialisable dict (NaN becomes None)."""
        return jsonable(
            {
                "step_size": self.step_size,
                "nbeta": self.nbeta,
                "localization": self.localization,
                "num_burnin": self.num_burnin,
                "llc": self.llc,
                "acceptance": self.acceptance,
                "sampler": self.sampler,
                "batch_size": self.batch_size,
                "num_examples": self.num_examples,
                "init_loss": self.init_loss,
                "target_acceptance": self.target_acceptance,
                "choices": self.choices,
                "warnings": self.warnings,
                "curvature": self.curvature,
                "cost": self.cost,
                "settings": self.settings,
                "table": self.table,
            }
        )

    def summary(self) -> str:
        """A readable report: the recommendation, the sweep table and the warnings."""
        acc = self.acceptance
        lines = [
            f"calibration ({self.sampler}, batch {self.batch_size}/{self.num_examples}): "
            f"step_size ε = {self.step_size:.3g}, nβ = {self.nbeta:.4g}, γ = {self.localization:g}, "
            f"num_burnin ≥ {self.num_burnin}",
            f"  at that step: λ̂ ≈ {_fmt(self.llc)}"
            + (f", MALA acceptance {acc:.3f} (target {self.target_acceptance})" if acc is not None else ""),
            f"  stability limit 4/(nβ·h + γ) = {_fmt(self.curvature.get('stability_limit'))} "
            f"(top Hessian eigenvalue of L at w*: h = {_fmt(self.curvature.get('top_eigenvalue'))})",
            f"  cost: {self.cost.get('chain_steps', 0)} chain-steps, {self.cost.get('seconds', 0):.2f} s "
            f"({self.cost.get('compile_seconds', 0):.2f} s compiling)",
        ]
        if len(self.choices) > 1:
            lines.append("  per (nβ, γ):")
            for c in self.choices:
                lines.append(
                    f"    nβ={c['nbeta']:<10.4g} γ={c['localization']:<8g} ε={_fmt(c['step_size']):<10} "
                    f"λ̂={_fmt(c['llc']):<10} {c['status']}"
                )
        lines.append(
            "   stage   nβ         γ        ε          accept  λ̂ ± se               div   levelled  "
            "λ̂(ε)-λ̂(ε/2) ± se     healthy"
        )
        for r in self.table:
            if r["stage"] == "probe":
                continue
            acc = "  -   " if r["acceptance"] is None else f"{r['acceptance']:.3f}"
            diff = "" if r["halving_diff"] is None else f"{_fmt(r['halving_diff'])} ± {_fmt(r['halving_se'])}"
            mark = "*" if r["chosen"] else " "
            lines.append(
                f"  {mark}{r['stage']:<7} {r['nbeta']:<10.4g} {r['localization']:<8g} {r['step_size']:<10.3g} {acc:<7} "
                f"{_fmt(r['llc']):>8} ± {_fmt(r['llc_mcse']):<9} {r['diverged']:>2}/{r['chains']:<2}  "
                f"{'yes' if r['levelled'] else 'no':<9} {diff:<20} {'yes' if r['healthy'] else 'no'}"
            )
        lines += [f"  !  {w}" for w in self.warnings]
        return "\n".join(lines)

    def plot(self, path=None):
        """λ̂ (top) and MALA acceptance (bottom) against ε, one line per (nβ, γ).

        Filled markers are healthy steps, hollow ones failed a check; the
        dashed vertical line marks the chosen step, the dotted horizontal line
        the target acceptance. Uses matplotlib's Agg canvas (no pyplot state).
        Returns the Figure; with ``path`` it is also saved there (PNG, PDF…).
        """
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7, 6), constrained_layout=True)
        ax_llc, ax_acc = fig.subplots(2, 1, sharex=True)
        rows = [r for r in self.table if r["stage"] in ("sweep", "verify")]
        combos = _unique((r["nbeta"], r["localization"]) for r in rows)
        many_nbeta = len({c[0] for c in combos}) > 1
        many_gamma = len({c[1] for c in combos}) > 1
        shown = []
        for i, (nb, g) in enumerate(combos):
            color = f"C{i % 10}"
            pts = _dedupe_steps([r for r in rows if r["nbeta"] == nb and r["localization"] == g])
            label = ", ".join(
                ([f"nβ={nb:.4g}"] if many_nbeta or not many_gamma else []) + ([f"γ={g:g}"] if many_gamma else [])
            )
            eps = np.array([r["step_size"] for r in pts])
            llc = np.array([_num(r["llc"]) for r in pts])
            err = np.array([_num(r["llc_mcse"]) for r in pts])
            acc = np.array([_num(r["acceptance"]) for r in pts])
            ok = np.array([r["healthy"] for r in pts], bool)
            ax_llc.errorbar(eps, llc, yerr=np.nan_to_num(err), color=color, lw=1, capsize=2, label=label)
            ax_acc.plot(eps, acc, color=color, lw=1)
            for ax, ys in ((ax_llc, llc), (ax_acc, acc)):
                ax.scatter(eps[ok], ys[ok], color=color, s=25, zorder=3)
                ax.scatter(eps[~ok], ys[~ok], facecolors="none", edgecolors=color, s=25, zorder=3)
            shown += [v for v, r in zip(llc, pts) if np.isfinite(v) and (r["healthy"] or r["stage"] == "verify")]
            choice = next((c for c in self.choices if c["nbeta"] == nb and c["localization"] == g), None)
            if choice:
                ax_llc.scatter([choice["step_size"]], [_num(choice["llc"])], marker="*", s=160, color=color, zorder=4)
                ax_acc.scatter([choice["step_size"]], [_num(choice["acceptance"])], marker="*", s=160, color=color,
                               zorder=4)
                for ax in (ax_llc, ax_acc):
                    ax.axvline(choice["step_size"], color=color, ls="--", lw=0.8)
        if shown:  # scale to the healthy and verified steps; steps far past stability run off the top
            lo, hi = min(shown), max(shown)
            pad = 0.5 * max(hi - lo, 0.2 * abs(hi), 1e-12)
            ax_llc.set_ylim(lo - pad if lo < 0 else 0.0, hi + pad)
        ax_acc.axhline(self.target_acceptance, color="k", ls=":", lw=0.8, label=f"target {self.target_acceptance}")
        ax_llc.set_ylabel("λ̂ (short runs, ± se)")
        ax_acc.set_ylabel(f"MALA acceptance of {self.sampler}")
        ax_acc.set_xlabel("step size ε")
        ax_acc.set_xscale("log")
        ax_acc.set_ylim(-0.02, 1.02)
        ax_llc.legend(fontsize="small")
        ax_acc.legend(fontsize="small", loc="lower left")
        ax_llc.set_title(
            f"calibration: ε = {self.step_size:.3g} (nβ = {self.nbeta:.4g}, γ = {self.localization:g})", fontsize="medium"
        )
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig

    def __repr__(self) -> str:
        return (
            f"Calibration(step_size={self.step_size:.3g}, nbeta={self.nbeta:.4g}, localization={self.localization:g}, "
            f"llc≈{_fmt(self.llc)}, points={len(self.table)})"
        )


def _fmt(x) -> str:
    return "nan" if x is None or not np.isfinite(x) else f"{x:.4g}"


def _num(x) -> float:
    return float("nan") if x is None else float(x)


def _unique(items):
    out = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def _dedupe_steps(rows):
    """One row per step, ε ascending: the verification row (more chains) or else the last measured."""
    by_step = {}
    for r in rows:
        key = round(math.log(r["step_size"]), 6)
        if key not in by_step or r["stage"] == "verify" or by_step[key]["stage"] != "verify":
            by_step[key] = r
    return [by_step[k] for k in sorted(by_step)]


def _as_list(name: str, value, default) -> list:
    if value is None:
        return [default]
    if isinstance(value, (list, tuple, np.ndarray)):
        values = list(np.asarray(value, dtype=float).ravel())
        check.require(len(values) > 0, f"{name} is an empty sequence; pass a number or a non-empty list")
        return values
    return [value]


# --------------------------------------------------------------------------- measuring


def _measure(run, chains: np.ndarray, nbeta: float, burnin: int, init_loss: float) -> dict:
    """Acceptance, divergence, λ̂ ± MCSE and levelling-off of the chains ``chains`` of one run."""
    diverged = int(np.sum(run.divergent_step[chains] >= 0))
    trace = nbeta * (run.loss_trace[chains, burnin:].astype(np.float64) - init_loss)
    acc_mask = run.acceptance_steps >= burnin
    acc = run.acceptance[chains][:, acc_mask] if run.acceptance.size else np.empty((0, 0))
    acceptance = float(np.nanmean(acc)) if acc.size and np.isfinite(acc).any() else None
    if diverged or not np.all(np.isfinite(trace)):
        llc = mcse = float("nan")
        levelled = False
        acceptance = None if acceptance is None else 0.0
    else:
        llc = float(np.mean(trace))
        mcse = diag.standard_error(trace)
        levelled = bool(diag.levelled_off(trace)[0])
    return {
        "chains": int(len(chains)),
        "diverged": diverged,
        "acceptance": acceptance,
        "llc": llc,
        "llc_mcse": mcse,
        "levelled": levelled,
    }


def _acceptance_ok(row, target) -> bool:
    return row["acceptance"] is None or row["acceptance"] >= target


def _passes(row, target) -> bool:
    return not row["diverged"] and _acceptance_ok(row, target)


def _crossing(rows, target) -> tuple[str, float]:
    """From probe rows (ε descending) of one (nβ, γ): ('ok', ε_x) at the acceptance crossing, or 'up'/'down'."""
    ok = [_passes(r, target) for r in rows]
    if ok[0]:
        return "up", rows[0]["step_size"]
    if not any(ok):
        return "down", rows[-1]["step_size"]
    k = ok.index(True)  # rows[k] passes, rows[k-1] (10× larger) fails
    hi, lo = rows[k - 1], rows[k]
    if hi["acceptance"] is None or lo["acceptance"] is None or hi["diverged"]:
        return "ok", lo["step_size"]
    # interpolate the acceptance linearly in log ε between the bracketing steps
    frac = (lo["acceptance"] - target) / max(lo["acceptance"] - hi["acceptance"], 1e-12)
    log_lo, log_hi = math.log(lo["step_size"]), math.log(hi["step_size"])
    return "ok", float(math.exp(log_lo + min(max(frac, 0.0), 1.0) * (log_hi - log_lo)))


def _take(run, chains):
    """The chains ``chains`` of a sampling run (the fields :func:`_measure` reads)."""
    return SimpleNamespace(
        loss_trace=run.loss_trace[chains],
        acceptance=run.acceptance[chains] if run.acceptance.size else run.acceptance[: len(chains)],
        acceptance_steps=run.acceptance_steps,
        divergent_step=run.divergent_step[chains],
    )


def _concat(parts):
    """Stack the chains of several :func:`_take` results (replicates with the same settings)."""
    return SimpleNamespace(
        loss_trace=np.concatenate([p.loss_trace for p in parts]),
        acceptance=np.concatenate([p.acceptance for p in parts]),
        acceptance_steps=parts[0].acceptance_steps,
        divergent_step=np.concatenate([p.divergent_step for p in parts]),
    )


def _clear(rows, h, target, z, tolerance) -> bool:
    """Is the verification's reading clear, or should more coupled replicates be added?

    Judged on the first of ε, ε/2 that passes acceptance: clear when its difference is resolved to the
    tolerance (z·SE ≤ tolerance·|λ̂|), or when at ε a difference beyond tolerance reads clearly as slow mixing,
    or as bias and then the difference at ε/2 is clear too.
    """
    for k, r in enumerate(rows[:2]):
        if not _passes(r, target):
            continue
        if r["halving_diff"] is None or not (np.isfinite(r["halving_diff"]) and np.isfinite(r["halving_se"])):
            return True
        if r["halving_ok"]:
            return _resolved(r, z, tolerance)
        if h["slow"] or not h["bias"]:
            return h["slow"]
        if k == 1:
            return True  # biased at ε/2 as well: the decision moves down
    return True


def _resolved(row, z, tolerance) -> bool:
    """Whether the halving difference at ``row`` is measured finely enough: z·SE ≤ tolerance·|λ̂(ε/2)|."""
    return z * row["halving_se"] <= tolerance * abs(row["llc_half"])


def _halving_analysis(traces, rows, z, tolerance) -> dict:
    """Differences of λ̂ between coupled chains at ε, ε/2, ε/4 (``traces``: three [chains, draws] λ traces).

    Sets ``llc_half``, ``halving_diff`` ± ``halving_se`` and ``halving_ok`` on the rows at ε and ε/2 and
    returns D1 = λ̂(ε) - λ̂(ε/2), D2 = λ̂(ε/2) - λ̂(ε/4) and the two ways of reading a D1 that is too large:

    - ``bias``: D1 - D2 > z·SE in the direction of D1 — the difference shrinks as the step halves, as
      SGLD's O(ε) bias does (D2 ≈ D1/2);
    - ``slow``: D2 - D1/2 > max(z, 3)·SE in the direction of D1 — it does not shrink: λ̂ is still rising at this
      run length (the chain at ε has travelled further), which a smaller step would only slow down.

    The chains share their noise, so these per-draw contrasts are nearly free of the chains' own
    fluctuations (common random numbers).
    """
    diffs = []
    for k in range(2):
        finite = np.all(np.isfinite(traces[k] - traces[k + 1])) and not (rows[k]["diverged"] or rows[k + 1]["diverged"])
        mean, se = diag.paired_difference(traces[k], traces[k + 1]) if finite else (float("nan"), float("nan"))
        half = rows[k + 1]
        rows[k].update(llc_half=half["llc"], halving_diff=mean, halving_se=se)
        if finite:
            rows[k]["halving_ok"] = not (abs(mean) > z * se and abs(mean) > tolerance * abs(half["llc"]))
        diffs.append(mean)
    d1, d2 = diffs
    out = {"d1": d1, "d2": d2, "bias": False, "slow": False}
    if np.all(np.isfinite(diffs)) and d1 != 0:
        sign = np.sign(d1)
        shrink = sign * ((traces[0] - traces[1]) - (traces[1] - traces[2]))  # D1 - D2 per draw
        excess = sign * ((traces[1] - traces[2]) - 0.5 * (traces[0] - traces[1]))  # D2 - D1/2 per draw
        out["bias"] = bool(np.mean(shrink) > z * diag.standard_error(shrink))
        out["slow"] = bool(np.mean(excess) > max(z, SLOW_Z) * diag.standard_error(excess))
    return out


# --------------------------------------------------------------------------- the procedure


def calibrate(
    loss_fn: Callable[[PyTree, PyTree], Any],
    params: PyTree,
    data: PyTree,
    *,
    nbeta: float | Sequence[float] | None = None,
    localization: float | str | Sequence[float] = DEFAULT_LOCALIZATION,
    batch_size: int | None = None,
    sampler: str = "sgld",
    seed: int = 0,
    sampler_options: dict | None = None,
    target_acceptance: float = TARGET_ACCEPTANCE,
    step_sizes: Sequence[float] | None = None,
    num_steps: int = 300,
    points: int = POINTS,
    halving_tolerance: float = 0.025,
    halving_z: float = 2.0,
    localization_tolerance: float = 0.1,
    max_rounds: int = 3,
    max_replicates: int = 2,
    init_loss: float | None = None,
    warn: bool = True,
) -> Calibration:
    """Recommend the largest healthy SGLD step size ε for LLC estimation at ``params``.

    A step is healthy when its chains (i) never diverge, (ii) have a mean MALA
    acceptance probability of their proposals ≥ ``target_acceptance``
    (Furman & Lau, arXiv 2402.03698: α = min(1, e^{U(w)-U(w')}·q(w|w')/q(w'|w)),
    q the Langevin proposal), (iii) give a λ̂ trace that levelled off within
    the burn-in (the first half of ``num_steps``), and (iv) give λ̂(ε) that
    agrees with λ̂(ε/2): SGLD's bias is O(ε), so b(ε) ≈ 2·(λ̂(ε) - λ̂(ε/2));
    a difference larger than ``halving_z`` standard errors *and* than
    ``halving_tolerance``·|λ̂| fails (the default 0.025 caps the estimated
    step-size bias near 5%). The chains at ε, ε/2 and ε/4 share their Gaussian
    noise and minibatches, which makes the differences far more precise than
    any λ̂. A failing difference is read as bias when it shrinks as the step
    halves (D2 ≈ D1/2: a smaller step is chosen) and as slow mixing when it does
    not (D2 ≥ D1/2 by 3 SE: the step is kept, with a warning to run long).
    The stages are described in the module docstring.

    Args:
      loss_fn, params, data, batch_size, sampler, sampler_options, seed: as
        for :func:`slt.estimate_llc`.
      nbeta: nβ, default n/log n; a list sweeps it (the first value is the one
        recommended: nβ defines what is measured, it is not tuned).
      localization: γ, default 1; a list sweeps it, recommends the smallest γ
        whose λ̂ agrees with the next larger one, and warns when λ̂ depends on
        γ by more than ``localization_tolerance`` (relative, beyond noise).
        "scale": γ = 0.5·d/‖w*‖² (:func:`slt.localization.scale_localization`).
      target_acceptance: the acceptance a healthy step must reach.
      step_sizes: sweep these steps (the largest healthy one is verified)
        instead of probing for the range.
      num_steps: steps per chain in every stage (half of them burn-in).
      points: chains per (nβ, γ) in each call: steps per probe/sweep, chains
        per verification.
      max_rounds: how often each stage may move its window or step down.
      max_replicates: at most this many coupled replicates (of ``points``
        chains each) per verified step, added while the halving difference is
        not resolved to ``halving_tolerance``·|λ̂| (cheap for small models,
        whose λ̂ fluctuates most).
      init_loss: L(w*) if known.
      warn: emit the calibration's warnings as :class:`slt.SLTWarning`.

    Returns:
      :class:`Calibration`: ``.step_size`` is the recommendation, ``.table``
      the measurements, ``.plot()`` draws them, ``.to_dict()`` records them.
    """
    start = time.perf_counter()
    s = _session(loss_fn, params, data, nbeta=nbeta, localization=localization, batch_size=batch_size,
                 sampler=sampler, seed=seed, sampler_options=sampler_options, target_acceptance=target_acceptance,
                 step_sizes=step_sizes, num_steps=num_steps, points=points, halving_tolerance=halving_tolerance,
                 halving_z=halving_z, max_rounds=max_rounds, max_replicates=max_replicates, init_loss=init_loss)
    stab, curvature = _curvature_stage(s)
    candidates = _sweep_stage(s, stab)
    final, notes = _verify_stage(s, candidates)
    choices = _choices(s, final, notes)
    result = _recommendation(s, choices, curvature, localization_tolerance, start)
    if warn:
        for m in s.messages:
            warnings.warn(m, diag.SLTWarning, stacklevel=2)
    return result


# --------------------------------------------------------------------------- the stages


@dataclass
class _Session:
    """What every stage of a calibration shares: the problem, ONE program's settings, and the records so far.

    Every call is the same compiled program: ``points`` chains per (nβ, γ) pair, ``num_steps`` steps; the
    calls differ only in the per-chain step sizes and the seed.
    """

    loss_fn: Callable
    params: PyTree
    data: PyTree
    combos: list  # the (nβ, γ) pairs swept
    given_steps: list | None  # step_sizes, largest first (None: probe for them)
    init_loss: float
    n: int
    batch: int
    sampler: str
    options: tuple
    seed: int
    config: RunConfig
    burnin: int
    target: float  # acceptance a healthy step must reach
    halving_tolerance: float
    halving_z: float
    max_rounds: int
    max_replicates: int
    key: Any
    table: list = field(default_factory=list)
    messages: list = field(default_factory=list)
    cost: dict = field(default_factory=lambda: {"chain_steps": 0, "compile_seconds": 0.0, "sample_seconds": 0.0,
                                                "calls": {"probe": 0, "sweep": 0, "verify": 0}})
    seed_index: int = 0

    @property
    def points(self) -> int:
        return self.config.num_chains // len(self.combos)

    @property
    def num_steps(self) -> int:
        return self.config.num_steps

    def call(self, step_per_chain, stage: str, seed_index: int):
        """One run of the program with these per-chain steps (chains ordered combo by combo)."""
        chain_nbeta = np.repeat([c[0] for c in self.combos], self.points)
        chain_gamma = np.repeat([c[1] for c in self.combos], self.points)
        run = run_chains(
            self.loss_fn, self.params, self.data,
            Hyperparameters(np.asarray(step_per_chain, float), chain_nbeta, chain_gamma),
            config=self.config, seed=jax.random.fold_in(self.key, seed_index),
        )
        self.cost["chain_steps"] += self.config.num_chains * self.num_steps
        self.cost["compile_seconds"] += run.compile_seconds
        self.cost["sample_seconds"] += run.sample_seconds
        self.cost["calls"][stage] += 1
        return run

    def row(self, run, chains, c, step, stage) -> dict:
        """The table row of chains ``chains`` of a run at step ``step`` for combo ``c``."""
        r = {"stage": stage, "round": self.cost["calls"][stage], "step_size": float(step), "nbeta": c[0],
             "localization": c[1]}
        r.update(_measure(run, chains, c[0], self.burnin, self.init_loss))
        r.update(llc_half=None, halving_diff=None, halving_se=None, halving_ok=None, slow_mixing=None, healthy=False,
                 chosen=False)
        r["healthy"] = _passes(r, self.target) and r["levelled"]
        return r

    def grid_stage(self, grids: dict, stage: str, index: int) -> dict:
        """One chain per step: rows per combo, ε descending."""
        steps = np.concatenate([grids[c] for c in self.combos])
        run = self.call(steps, stage, index)
        out = {}
        for j, c in enumerate(self.combos):
            out[c] = [self.row(run, np.array([j * self.points + k]), c, grids[c][k], stage) for k in range(self.points)]
            self.table.extend(out[c])
        return out

    def next_seed(self) -> int:
        self.seed_index += 1
        return self.seed_index


def _session(loss_fn, params, data, *, nbeta, localization, batch_size, sampler, seed, sampler_options,
             target_acceptance, step_sizes, num_steps, points, halving_tolerance, halving_z, max_rounds,
             max_replicates, init_loss) -> _Session:
    """Check every setting (before anything is compiled) and set up the program every stage calls."""
    nbetas = _as_list("nbeta", nbeta, None)
    gammas = _as_list("localization", resolve_localization(localization, params), DEFAULT_LOCALIZATION)
    check.require(
        isinstance(target_acceptance, (int, float)) and 0 < target_acceptance < 1,
        f"target_acceptance must be in (0, 1), got {target_acceptance!r}",
    )
    check.positive_int("num_steps", num_steps, minimum=16)
    check.positive_int("points", points, minimum=2)
    check.positive_int("max_rounds", max_rounds)
    check.positive_int("max_replicates", max_replicates)
    resolved = []
    for nb in nbetas:
        for g in gammas:
            n, batch, nb_value = validate_llc_inputs(
                loss_fn, params, data, step_size=1.0, nbeta=nb, localization=g, num_chains=1, num_draws=1,
                num_burnin=0, batch_size=batch_size, sampler=sampler, sampler_options=sampler_options,
            )
            resolved.append((float(nb_value), float(g)))
    combos = _unique(resolved)
    given = None
    if step_sizes is not None:
        given = sorted({check.positive_number("step_sizes", s) for s in np.ravel(step_sizes)}, reverse=True)
        check.require(len(given) > 0, "step_sizes is empty; pass step sizes or None to probe for them")
    options = tuple(sorted((sampler_options or {}).items()))
    has_acceptance = get_sampler(sampler).ACCEPTANCE is not None
    config = RunConfig(
        sampler=sampler, num_chains=points * len(combos), num_steps=num_steps, batch_size=batch,
        sampler_options=options, acceptance_every=max(1, num_steps // 50) if has_acceptance else 0,
    )
    return _Session(loss_fn, params, data, combos, given, float(initial_loss(loss_fn, params, data, init_loss)), n,
                    batch, sampler, options, seed, config, num_steps // 2, float(target_acceptance),
                    halving_tolerance, halving_z, max_rounds, max_replicates, jax.random.PRNGKey(seed))


def _curvature_stage(s: _Session) -> tuple[dict, dict]:
    """1. Stability limit ε_stab = 4 / (nβ·h + γ) per combo, h the top Hessian eigenvalue of L at w*."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(s.seed)
    idx = np.sort(rng.choice(s.n, size=min(s.n, max(s.batch, 256)), replace=False))
    h = top_hessian_eigenvalue(s.loss_fn, s.params, jax.tree.map(lambda x: jnp.asarray(x)[idx], s.data), seed=s.seed)
    stab = {c: 4.0 / max(c[0] * h + c[1], 1e-30) for c in s.combos}
    curvature = {
        "top_eigenvalue": h,
        "stability_limit": stab[s.combos[0]],
        "stability_limits": [{"nbeta": c[0], "localization": c[1], "stability_limit": stab[c]} for c in s.combos],
        "seconds": time.perf_counter() - t0,
    }
    return stab, curvature


def _probe(s: _Session, grids: dict, tops: dict) -> dict:
    """Decades down from ``tops`` until each combo's MALA acceptance crosses the target: ε at the crossing."""
    crossing: dict = {}
    for _ in range(s.max_rounds):
        pending = [c for c in tops if c not in crossing]
        if not pending:
            break
        grid = {c: (tops[c] if c in tops else grids[c][0]) * 10.0 ** -np.arange(s.points) for c in s.combos}
        rows = s.grid_stage(grid, "probe", s.next_seed())
        for c in pending:
            status, eps_x = _crossing(rows[c], s.target)
            if status == "ok":
                crossing[c] = eps_x
            else:
                tops[c] *= 10.0 ** ((s.points - 2) if status == "up" else -(s.points - 1))
    for c in tops:
        if c not in crossing:
            crossing[c] = tops[c] * 10.0 ** -(s.points // 2)
            s.messages.append(
                f"nβ={c[0]:.4g}, γ={c[1]:g}: no step size brought the MALA acceptance across {s.target} "
                f"in {s.max_rounds} probes; sweeping around ε = {crossing[c]:.3g}"
            )
    return crossing


def _sweep_stage(s: _Session, stab: dict) -> dict:
    """2. Sweep √2 apart from ε_stab down (or the given steps): the candidate is the largest step passing
    divergence, acceptance and levelling. When the window misses the acceptance crossing, a probe one
    decade apart brackets it and the sweep is redone. Returns {combo: (step, note)}."""
    points = s.points
    if s.given_steps is None:
        grids = {c: stab[c] * 2.0 ** (-np.arange(points) / 2) for c in s.combos}
    else:
        given = s.given_steps
        padded = (given * points)[:points] if len(given) < points else given[:points]
        if len(given) > points:
            s.messages.append(f"only the {points} largest step_sizes are swept (points={points})")
        grids = {c: np.array(sorted(padded, reverse=True), float) for c in s.combos}
    candidates: dict = {}
    probed: set = set()
    rounds = s.max_rounds if s.given_steps is None else 1
    for rnd in range(rounds):
        pending = [c for c in s.combos if c not in candidates]
        if not pending:
            break
        rows = s.grid_stage(grids, "sweep", s.next_seed())
        need_probe = {}
        for c in pending:
            mine = rows[c]
            passing = [r for r in mine if _passes(r, s.target)]
            healthy = [r for r in mine if r["healthy"]]
            missed = s.given_steps is None and (mine[0]["healthy"] or not passing) and rnd < rounds - 1
            if missed and c not in probed:
                # up: even the top passed, probe 7 decades above it; down: nothing passed, probe below the bottom
                need_probe[c] = grids[c][0] * 10.0 ** (points - 1) if mine[0]["healthy"] else grids[c][-1]
            elif missed:
                grids[c] = grids[c] * 2.0 ** ((points - 2) / 2 * (1 if mine[0]["healthy"] else -1))
            elif healthy:
                candidates[c] = (healthy[0]["step_size"], "")
            elif passing:
                candidates[c] = (
                    passing[0]["step_size"],
                    "the λ̂ trace did not level off within the calibration burn-in at any step with acceptable "
                    f"acceptance; raise num_steps (now {s.num_steps})",
                )
            else:
                smallest = float(min(grids[c]))
                candidates[c] = (smallest, f"no swept step passed; using the smallest, {smallest:.3g}")
        if need_probe:
            for c, eps_x in _probe(s, grids, need_probe).items():
                grids[c] = eps_x * GRID_TOP * 2.0 ** (-np.arange(points) / 2)
                probed.add(c)
    return candidates


def _coupled_replicates(s: _Session, current: dict, pending: list) -> dict:
    """``points`` chains at ε, ε/2 and ε/4 on the same noise (same seed, same chain index), replicates added
    (≤ max_replicates) while the reading is unclear: {combo: (rows at ε, ε/2, ε/4, halving analysis)}."""
    points = s.points
    stacks = {c: [[], [], []] for c in pending}
    results: dict = {}
    unresolved = list(pending)
    for _rep in range(s.max_replicates):
        seed_index = s.next_seed()
        steps = np.repeat([current[c] for c in s.combos], points)
        runs = [s.call(steps / 2**k, "verify", seed_index) for k in range(3)]  # same seed: coupled chains
        for j, c in enumerate(s.combos):
            if c in unresolved:
                for k in range(3):
                    stacks[c][k].append(_take(runs[k], np.arange(j * points, (j + 1) * points)))
        for c in unresolved:
            merged = [_concat(stack) for stack in stacks[c]]
            everyone = np.arange(merged[0].loss_trace.shape[0])
            rows = [s.row(m, everyone, c, current[c] / 2**k, "verify") for k, m in enumerate(merged)]
            traces = [c[0] * m.loss_trace[:, s.burnin:].astype(np.float64) for m in merged]
            results[c] = (rows, _halving_analysis(traces, rows, s.halving_z, s.halving_tolerance))
        unresolved = [c for c in unresolved if not _clear(*results[c], s.target, s.halving_z, s.halving_tolerance)]
        if not unresolved:
            break
    return results


def _pick_verified(s: _Session, rows: list, h: dict) -> tuple[dict | None, bool]:
    """(the row chosen among ε, ε/2, ε/4, or None to move down; whether an unclear reading was kept).

    The largest step passing acceptance (at ε the sweep's single chain may have been lucky), if its
    difference is within tolerance or reads as slow mixing (D2 ≥ D1/2); if it reads as bias (D2 ≈ D1/2),
    the largest smaller step within tolerance.
    """
    a, b, q = rows
    first = a if _passes(a, s.target) else b if _passes(b, s.target) else None
    if first is None:
        return None, False
    if first["halving_ok"] is not False or h["slow"]:
        return first, False
    if h["bias"]:
        if b["halving_ok"] is not False:  # ε/2 (reached only when first is ε, whose difference failed)
            return b, False
        if abs(h["d2"]) / 2 <= max(s.halving_tolerance * abs(q["llc"]), s.halving_z * b["halving_se"] / 2):
            return q, False  # ε/4: the bias model predicts λ̂(ε/4) - λ̂(ε/8) ≈ D2/2 ± SE(D2)/2
        return None, False
    return first, True


def _verify_stage(s: _Session, candidates: dict) -> tuple[dict, dict]:
    """3. Coupled chains at ε, ε/2, ε/4: D1 = λ̂(ε) - λ̂(ε/2), D2 = λ̂(ε/2) - λ̂(ε/4). A D1 beyond tolerance is
    step-size bias if it shrinks as the step halves (D2 ≈ D1/2), slow mixing if it does not (then the step
    is kept: a smaller one would mix slower still). Returns ({combo: chosen row}, {combo: note})."""
    current = {c: candidates[c][0] for c in s.combos}
    notes = {c: candidates[c][1] for c in s.combos}
    final: dict = {}
    for rnd in range(s.max_rounds):
        pending = [c for c in s.combos if c not in final]
        if not pending:
            break
        results = _coupled_replicates(s, current, pending)
        last_round = rnd == s.max_rounds - 1
        for c in pending:
            rows, h = results[c]
            a, b, q = rows
            s.table.extend(rows)
            pick, kept_unclear = _pick_verified(s, rows, h)
            if pick is None and not last_round:
                current[c] /= 8 if _passes(b, s.target) else 4
                continue
            if pick is None:
                pick = q
                notes[c] = notes[c] or f"λ̂ still depends on the step size after {s.max_rounds} verification rounds"
            _settle(s, c, rows, h, pick, kept_unclear, notes)
            final[c] = pick
    return final, notes


def _settle(s: _Session, c, rows: list, h: dict, pick: dict, kept_unclear: bool, notes: dict) -> None:
    """Mark the verified rows' health, and note what the chosen step leaves unsettled."""
    a, _, q = rows
    for r in rows:
        r["healthy"] = r["healthy"] and (r["halving_ok"] is not False or (r is a and h["slow"]))
    pick["slow_mixing"] = h["slow"]
    pick["healthy"] = bool(
        _passes(pick, s.target) and pick["levelled"]
        and (pick["halving_ok"] is not False or h["slow"] or pick is q)
    )
    if h["slow"] and pick is a and not notes[c]:
        notes[c] = (
            f"λ̂(ε) - λ̂(ε/2) = {h['d1']:.3g} does not shrink at half the step (λ̂(ε/2) - λ̂(ε/4) = "
            f"{h['d2']:.3g}): λ̂ is still rising after the calibration's short runs (slow modes), which a "
            "smaller step would only slow down; estimate with long runs and check that λ̂ levels off"
        )
    too_coarse = (
        pick is not q and pick["halving_ok"] is not False and np.isfinite(_num(pick["halving_se"]))
        and not _resolved(pick, s.halving_z, s.halving_tolerance)
    )
    if not h["slow"] and (kept_unclear or too_coarse):
        bound = 2 * (abs(pick["halving_diff"]) + s.halving_z * pick["halving_se"]) / max(abs(pick["llc"]), 1e-12)
        s.messages.append(
            f"nβ={c[0]:.4g}, γ={c[1]:g}: λ̂(ε) - λ̂(ε/2) = {pick['halving_diff']:.3g} ± "
            f"{pick['halving_se']:.2g} could not be resolved to {s.halving_tolerance:.1%} of λ̂ with "
            f"{pick['chains']} chains of {s.num_steps} steps: the step-size bias at ε = {pick['step_size']:.3g} "
            f"may be up to ~{bound:.0%}; raise points or num_steps, or use a smaller step"
        )
    if not pick["levelled"] and not notes[c]:
        notes[c] = f"the λ̂ trace had not levelled off at the chosen step; raise num_steps (now {s.num_steps})"


def _choices(s: _Session, final: dict, notes: dict) -> list[dict]:
    """One row per (nβ, γ): the chosen step and what it measured."""
    choices = []
    for c in s.combos:
        r = final[c]
        r["chosen"] = True
        choices.append({
            "nbeta": c[0], "localization": c[1], "step_size": r["step_size"], "llc": r["llc"],
            "llc_mcse": r["llc_mcse"], "llc_half": r["llc_half"], "halving_diff": r["halving_diff"],
            "halving_se": r["halving_se"], "acceptance": r["acceptance"], "healthy": bool(r["healthy"]),
            "status": notes[c] or "ok",
        })
        if notes[c]:
            s.messages.append(f"nβ={c[0]:.4g}, γ={c[1]:g}: {notes[c]}")
    return choices


def _recommendation(s: _Session, choices: list, curvature: dict, localization_tolerance: float,
                    start: float) -> Calibration:
    """The first nβ; γ from the plateau of λ̂(γ) when γ is swept."""
    nb0 = s.combos[0][0]
    gamma_rows = sorted((ch for ch in choices if ch["nbeta"] == nb0), key=lambda ch: ch["localization"])
    chosen_gamma = (
        gamma_rows[0]["localization"]
        if len(gamma_rows) == 1
        else _pick_localization(gamma_rows, localization_tolerance, s.halving_z, s.messages)
    )
    chosen = next(ch for ch in choices if ch["nbeta"] == nb0 and ch["localization"] == chosen_gamma)
    s.cost["seconds"] = time.perf_counter() - start
    return Calibration(
        step_size=float(chosen["step_size"]), nbeta=float(nb0), localization=float(chosen_gamma),
        num_burnin=int(s.burnin), sampler=s.sampler, batch_size=int(s.batch), num_examples=int(s.n),
        init_loss=s.init_loss, target_acceptance=s.target, table=s.table, choices=choices, warnings=s.messages,
        curvature=curvature, cost=s.cost,
        settings={
            "num_steps": s.num_steps, "points": s.points, "halving_tolerance": s.halving_tolerance,
            "halving_z": s.halving_z, "localization_tolerance": localization_tolerance, "max_rounds": s.max_rounds,
            "max_replicates": s.max_replicates, "step_sizes": None if s.given_steps is None else list(s.given_steps),
            "seed": s.seed, "sampler_options": dict(s.options),
        },
    )


def _pick_localization(rows: list[dict], tolerance: float, z: float, messages: list[str]) -> float:
    """The smallest γ whose λ̂ agrees with the next larger γ; warn when λ̂ depends strongly on γ.

    In a direction of curvature nβ·h the localization scales λ̂ by
    nβh/(nβh + γ): a plateau over γ means neither the localization (too
    large: λ̂ falls as γ grows) nor the wider landscape (too small: the chain
    leaves the basin, λ̂ drifts or does not level off) dominates.
    """
    good = [r for r in rows if r["healthy"] and r["llc"] is not None and np.isfinite(r["llc"])]
    if not good:
        messages.append("no localization γ gave healthy chains; λ̂ cannot be trusted at any γ swept")
        return rows[0]["localization"]

    def agree(a, b):
        diff = abs(a["llc"] - b["llc"])
        se = math.hypot(a["llc_mcse"] or 0.0, b["llc_mcse"] or 0.0)
        return diff <= max(z * se, tolerance * max(abs(a["llc"]), abs(b["llc"])))

    pick = next((a for a, b in zip(good, good[1:]) if agree(a, b)), good[0])
    values = np.array([r["llc"] for r in good])
    ref = max(float(np.median(np.abs(values))), 1e-12)
    spread = float(values.max() - values.min())
    se = max(float(np.hypot(*sorted([r["llc_mcse"] or 0.0 for r in good])[-2:])) if len(good) > 1 else 0.0, 0.0)
    unhealthy = [r["localization"] for r in rows if not r["healthy"]]
    if len(good) > 1 and spread > tolerance * ref and spread > z * se:
        lo, hi = good[0], good[-1]
        trend = "falls" if hi["llc"] < lo["llc"] else "rises"
        messages.append(
            f"λ̂ depends strongly on the localization: {lo['llc']:.4g} at γ={lo['localization']:g} … "
            f"{hi['llc']:.4g} at γ={hi['localization']:g} ({spread / ref:.0%} of λ̂). λ̂ {trend} as γ grows: "
            + (
                "large γ confines the chain (neighbourhood too small); "
                if trend == "falls"
                else "small γ lets the chain leave the basin (neighbourhood too large); "
            )
            + f"using γ={pick['localization']:g}, where λ̂ agrees with the next larger γ"
        )
    if unhealthy:
        messages.append(
            f"γ = {', '.join(f'{g:g}' for g in unhealthy)} gave no healthy chains "
            "(too small: the chain drifts out of the basin; too large: check the step)"
        )
    return pick["localization"]


# --------------------------------------------------------------------------- one step for many checkpoints

#: checkpoints calibrated by :func:`shared_step_size` by default: the first, the last and three between
CALIBRATION_POINTS = 5


def calibration_points(count: int, points: int = CALIBRATION_POINTS) -> list[int]:
    """Indices of ``points`` checkpoints out of ``count``, evenly spaced in index, the first and last included.

    The first checkpoint (near initialisation) and the last (the trained model) bracket the run, and the
    ones between catch the stiffest middle: the curvature, and with it the largest stable step, changes
    most while the model learns (the grokking MLP's λ̂ peaks mid-run).
    """
    if count <= points:
        return list(range(count))
    return sorted({int(round(i * (count - 1) / (points - 1))) for i in range(points)})


@dataclass
class SharedStep:
    """One step size for a whole sequence of checkpoints (:func:`shared_step_size`)."""

    step_size: float
    chosen_at: Any  # the label of the checkpoint whose calibration gave it
    calibrations: dict  # label -> Calibration
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-serialisable dict: the choice and every calibration's record (with its table)."""
        return jsonable({"step_size": self.step_size, "chosen_at": self.chosen_at, "warnings": self.warnings,
                         "calibrations": {str(k): c.to_dict() for k, c in self.calibrations.items()}})


def shared_step_size(loss_fn, checkpoints: Sequence[tuple[Any, PyTree]], data, *, points: int = CALIBRATION_POINTS,
                     warn: bool = True, **calibrate_kwargs) -> SharedStep:
    """:func:`calibrate` at a few of the ``(label, params)`` checkpoints; ONE ε for all of them.

    The checkpoints calibrated are :func:`calibration_points`. The step is the smallest of their healthy
    recommendations, so that no checkpoint gets a step too large for it and values along a trajectory
    are measured with the same ε (comparable: SGLD's bias depends on ε). When no calibration is healthy the
    smallest recommendation is used, with a warning.
    """
    check.require(len(checkpoints) > 0, "no checkpoints to calibrate")
    chosen = [checkpoints[i] for i in calibration_points(len(checkpoints), points)]
    calibrations = {label: calibrate(loss_fn, params, data, warn=False, **calibrate_kwargs) for label, params in chosen}
    healthy = {label: c for label, c in calibrations.items() if c._choice()["healthy"]}
    pool = healthy or calibrations
    label = min(pool, key=lambda k: pool[k].step_size)
    messages = [f"checkpoint {k}: {m}" for k, c in calibrations.items() for m in c.warnings]
    if not healthy:
        messages.append(f"no calibrated checkpoint had a healthy step; using the smallest recommendation, "
                        f"{pool[label].step_size:.3g} (checkpoint {label}): check the warnings of each calibration")
    if warn:
        for m in messages:
            warnings.warn(m, diag.SLTWarning, stacklevel=2)
    return SharedStep(float(pool[label].step_size), label, calibrations, messages)
