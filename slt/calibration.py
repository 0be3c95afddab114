"""Choose the SGLD step size ε by measurement instead of by hand.

The tempered local posterior p(w) ∝ exp(-nβ·L(w) - γ/2·‖w - w*‖²) is
sampled with Δw = -(ε/2)·∇U_B(w) + N(0, ε·I) (Lau et al. 2023, arXiv
2308.12108). :func:`calibrate` recommends the *largest* ε whose chains are
healthy, because a larger ε mixes faster for the same cost:

1. **Curvature.** Power iteration on the Hessian of L at w* gives its top
   eigenvalue h, hence the stability limit of the update on the quadratic
   part of U, ε_stab = 4 / (nβ·h + γ) (gradient descent with rate ε/2 is
   stable for (ε/2)·(nβ·h + γ) < 2).
2. **Probe.** One short chain for each of 8 steps ε_stab·10⁻ᵏ, k = 0…7,
   brackets where the MALA acceptance of the SGLD proposals (Furman & Lau,
   arXiv 2402.03698) crosses the target (0.9). The decade window moves if it
   misses.
3. **Sweep.** A √2-spaced grid around the crossing, one chain per step,
   ``num_steps`` steps each (half burn-in): acceptance, divergence, λ̂, and
   whether the λ̂ trace levelled off within the burn-in.
4. **Verification.** The largest step passing 3 and the step half its size
   run with ``verify_chains`` chains each; the step is accepted when its
   chains pass again and λ̂(ε) agrees with λ̂(ε/2) — the discretisation bias
   of SGLD is O(ε), so the difference estimates half of it. Otherwise the
   next smaller grid step is verified.

Every stage over the whole grid (ε × γ × nβ × chains) is ONE compiled program
(:func:`slt.sampling.run_chains` takes per-chain ε, nβ, γ); a stage re-run
with moved steps reuses it.

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
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from slt import diagnostics as diag
from slt import validation as check
from slt.llc import _jsonable, validate_llc_inputs
from slt.losses import full_data_loss
from slt.posterior import Hyperparameters
from slt.samplers.base import get_sampler
from slt.sampling import RunConfig, run_chains

PyTree = Any

DEFAULT_LOCALIZATION = 1.0
TARGET_ACCEPTANCE = diag.ACCEPTANCE_TARGET  # 0.9, Furman & Lau (arXiv 2402.03698)
PROBE_DECADES = 8  # probe steps ε_stab·10^0 … ε_stab·10^-7
GRID_POINTS = 9  # sweep steps ε_x·2^(1), ε_x·2^(1/2), …, ε_x·2^(-3)
GRID_TOP = 2.0  # the sweep starts at GRID_TOP × the probe's acceptance crossing


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
        return _jsonable(
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
            "  stage   nβ         γ        ε          accept  λ̂ ± mcse            diverged levelled  λ̂(ε/2)    healthy"
        )
        for r in self.table:
            if r["stage"] == "probe":
                continue
            acc = "   -  " if r["acceptance"] is None else f"{r['acceptance']:.3f}"
            half = "-" if r["llc_half"] is None else _fmt(r["llc_half"])
            mark = "*" if r["chosen"] else " "
            lines.append(
                f" {mark}{r['stage']:<7}{r['nbeta']:<11.4g}{r['localization']:<9g}{r['step_size']:<11.3g}{acc:<8}"
                f"{_fmt(r['llc']):>8} ± {_fmt(r['llc_mcse']):<9} {r['diverged']:>3}/{r['chains']:<4} "
                f"{'yes' if r['levelled'] else 'no':<9} {half:<10}{'yes' if r['healthy'] else 'no'}"
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
        rows = [r for r in self.table if r["stage"] == "sweep"]
        combos = _unique((r["nbeta"], r["localization"]) for r in rows)
        many_nbeta = len({c[0] for c in combos}) > 1
        many_gamma = len({c[1] for c in combos}) > 1
        colors = [f"C{i % 10}" for i in range(len(combos))]
        for color, (nb, g) in zip(colors, combos):
            pts = sorted((r for r in rows if r["nbeta"] == nb and r["localization"] == g), key=lambda r: r["step_size"])
            pts = _dedupe_steps(pts)
            label = ", ".join(
                ([f"nβ={nb:.4g}"] if many_nbeta or not many_gamma else []) + ([f"γ={g:g}"] if many_gamma else [])
            )
            eps = np.array([r["step_size"] for r in pts])
            llc = np.array([np.nan if r["llc"] is None else r["llc"] for r in pts], float)
            err = np.array([np.nan if r["llc_mcse"] is None else r["llc_mcse"] for r in pts], float)
            ax_llc.errorbar(eps, llc, yerr=np.nan_to_num(err), color=color, lw=1, capsize=2, label=label)
            acc = np.array([np.nan if r["acceptance"] is None else r["acceptance"] for r in pts], float)
            ax_acc.plot(eps, acc, color=color, lw=1)
            for ax, ys in ((ax_llc, llc), (ax_acc, acc)):
                ok = np.array([r["healthy"] for r in pts], bool)
                ax.scatter(eps[ok], ys[ok], color=color, s=25, zorder=3)
                ax.scatter(eps[~ok], ys[~ok], facecolors="none", edgecolors=color, s=25, zorder=3)
            choice = next((c for c in self.choices if c["nbeta"] == nb and c["localization"] == g), None)
            if choice and choice["step_size"]:
                for ax in (ax_llc, ax_acc):
                    ax.axvline(choice["step_size"], color=color, ls="--", lw=0.8)
        ax_acc.axhline(self.target_acceptance, color="k", ls=":", lw=0.8, label=f"target {self.target_acceptance}")
        ax_llc.set_ylabel("λ̂ (short runs, ± MCSE)")
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


def _unique(items):
    out = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def _dedupe_steps(rows):
    """Keep one row per step (the last measured) for plotting sweeps that were moved and re-run."""
    by_step = {}
    for r in rows:
        by_step[round(math.log(r["step_size"]), 6)] = r
    return [by_step[k] for k in sorted(by_step)]


def _as_list(name: str, value, default) -> list:
    if value is None:
        return [default]
    if isinstance(value, (list, tuple, np.ndarray)):
        values = list(np.asarray(value, dtype=float).ravel())
        check.require(len(values) > 0, f"{name} is an empty sequence; pass a number or a non-empty list")
        return values
    return [value]


# --------------------------------------------------------------------------- curvature


def _top_eigenvalue(loss_fn, params, batch, key, iters):
    flat, unravel = ravel_pytree(params)
    grad = jax.grad(lambda f: loss_fn(unravel(f), batch))

    def hvp(v):
        return jax.jvp(grad, (flat,), (v,))[1]

    v0 = jax.random.normal(key, flat.shape, flat.dtype)
    v0 = v0 / jnp.linalg.norm(v0)

    def body(_, v):
        hv = hvp(v)
        return hv / jnp.maximum(jnp.linalg.norm(hv), jnp.finfo(flat.dtype).tiny)

    v = jax.lax.fori_loop(0, iters, body, v0)
    return jnp.abs(jnp.vdot(v, hvp(v)))


_top_eigenvalue_jit = jax.jit(_top_eigenvalue, static_argnames=("loss_fn", "iters"))


def top_hessian_eigenvalue(loss_fn, params, batch, *, seed: int = 0, iters: int = 30) -> float:
    """|largest eigenvalue| of ∇²L at ``params`` on ``batch`` by power iteration with Hessian-vector products."""
    try:
        value = _top_eigenvalue_jit(loss_fn, params, batch, jax.random.PRNGKey(seed), iters)
    except TypeError:  # unhashable loss_fn: trace without the cache
        value = jax.jit(lambda p, b, k: _top_eigenvalue(loss_fn, p, b, k, iters))(params, batch, jax.random.PRNGKey(seed))
    return float(value)


# --------------------------------------------------------------------------- measuring a grid


def _run_points(loss_fn, params, data, points, *, chains, steps, batch, sampler, options, seed, burnin, acc_every, init_loss):
    """Run ``chains`` chains at each (ε, nβ, γ) point as one program; one measurement dict per point."""
    eps = np.repeat([p[0] for p in points], chains)
    nb = np.repeat([p[1] for p in points], chains)
    gam = np.repeat([p[2] for p in points], chains)
    config = RunConfig(
        sampler=sampler,
        num_chains=len(eps),
        num_steps=steps,
        batch_size=batch,
        sampler_options=options,
        acceptance_every=acc_every,
    )
    run = run_chains(loss_fn, params, data, Hyperparameters(eps, nb, gam), config=config, seed=seed)
    out = []
    acc_mask = run.acceptance_steps >= burnin
    for i, (e, nbeta, g) in enumerate(points):
        sl = slice(i * chains, (i + 1) * chains)
        diverged = int(np.sum(run.divergent_step[sl] >= 0))
        trace = nbeta * (run.loss_trace[sl, burnin:].astype(np.float64) - init_loss)
        acc = run.acceptance[sl][:, acc_mask] if run.acceptance.size else run.acceptance
        acceptance = float(np.nanmean(acc)) if acc.size and np.isfinite(acc).any() else None
        if diverged or not np.all(np.isfinite(trace)):
            llc = mcse = float("nan")
            levelled = False
            acceptance = 0.0 if acceptance is not None else None
        else:
            llc = float(np.mean(trace))
            mcse = diag.mcse(trace)
            if not np.isfinite(mcse) and trace.shape[1] > 1:
                mcse = float(np.std(trace) / math.sqrt(trace.size))
            levelled = bool(diag.levelled_off(trace)[0])
        out.append(
            {
                "step_size": float(e),
                "nbeta": float(nbeta),
                "localization": float(g),
                "chains": chains,
                "diverged": diverged,
                "acceptance": acceptance,
                "llc": llc,
                "llc_mcse": mcse,
                "levelled": levelled,
            }
        )
    seconds = run.compile_seconds + run.sample_seconds
    return out, {"chain_steps": len(eps) * steps, "compile_seconds": run.compile_seconds, "seconds": seconds}


def _acceptance_ok(row, target) -> bool:
    return row["acceptance"] is None or row["acceptance"] >= target


def _crossing(rows, target) -> tuple[str, float]:
    """From probe rows (ε descending) of one (nβ, γ): ('ok', ε_x) at the acceptance crossing, or 'up'/'down'."""
    ok = [not r["diverged"] and _acceptance_ok(r, target) for r in rows]
    if ok[0]:
        return "up", rows[0]["step_size"]
    if not any(ok):
        return "down", rows[-1]["step_size"]
    k = ok.index(True)  # rows[k] passes, rows[k-1] (10× larger) fails
    hi, lo = rows[k - 1], rows[k]
    if hi["acceptance"] is None or lo["acceptance"] is None or hi["diverged"]:
        return "ok", lo["step_size"]
    # interpolate the acceptance linearly in log ε between the bracketing steps
    a_hi, a_lo = hi["acceptance"], lo["acceptance"]
    frac = (a_lo - target) / max(a_lo - a_hi, 1e-12)
    return "ok", float(np.exp(np.log(lo["step_size"]) + frac * (np.log(hi["step_size"]) - np.log(lo["step_size"]))))


def _halving(row, half, z, rel) -> bool | None:
    """Does λ̂(ε) agree with λ̂(ε/2)? None when the comparison is not meaningful."""
    if half is None or half["diverged"] or not half["levelled"] or not np.isfinite(half["llc"]) or not np.isfinite(row["llc"]):
        return None
    diff = abs(row["llc"] - half["llc"])
    se = math.hypot(row["llc_mcse"], half["llc_mcse"])
    return not (diff > z * se and diff > rel * abs(half["llc"]))


# --------------------------------------------------------------------------- the procedure


def calibrate(
    loss_fn: Callable[[PyTree, PyTree], Any],
    params: PyTree,
    data: PyTree,
    *,
    nbeta: float | Sequence[float] | None = None,
    localization: float | Sequence[float] = DEFAULT_LOCALIZATION,
    batch_size: int | None = None,
    sampler: str = "sgld",
    seed: int = 0,
    sampler_options: dict | None = None,
    target_acceptance: float = TARGET_ACCEPTANCE,
    step_sizes: Sequence[float] | None = None,
    num_steps: int = 300,
    probe_steps: int = 100,
    verify_chains: int = 6,
    halving_tolerance: float = 0.05,
    halving_z: float = 2.0,
    localization_tolerance: float = 0.1,
    max_rounds: int = 4,
    init_loss: float | None = None,
    warn: bool = True,
) -> Calibration:
    """Recommend the largest healthy SGLD step size ε for LLC estimation at ``params``.

    A step is healthy when its chains (i) never diverge, (ii) have MALA
    acceptance of their proposals ≥ ``target_acceptance`` (Furman & Lau,
    arXiv 2402.03698: α = min(1, e^{U(w)-U(w')}·q(w|w')/q(w'|w))), (iii) have
    a λ̂ trace that levelled off within the burn-in (first half of
    ``num_steps``), and (iv) give λ̂(ε) that agrees with λ̂(ε/2): a
    difference larger than ``halving_z`` standard errors *and* than
    ``halving_tolerance``·|λ̂| fails (SGLD's bias is O(ε), so the difference
    is about half the bias at ε). See the module docstring for the stages.

    Args:
      loss_fn, params, data, batch_size, sampler, sampler_options, seed: as
        for :func:`slt.estimate_llc`.
      nbeta: nβ, default n/log n; a list sweeps it (the first value is the
        one recommended; nβ defines the estimand, it is not tuned).
      localization: γ, default 1; a list sweeps it, picks the smallest γ whose
        λ̂ agrees with the next larger one, and warns when λ̂ depends on γ by
        more than ``localization_tolerance`` (relative, beyond noise).
      target_acceptance: the acceptance a healthy step must reach.
      step_sizes: sweep exactly these steps instead of probing for a range.
      num_steps: steps per chain in the sweep and verification (half burn-in).
      probe_steps: steps per chain in the range probe.
      verify_chains: chains per step in the verification of ε against ε/2.
      init_loss: L(w*) if known.
      warn: emit the calibration's warnings as :class:`slt.SLTWarning`.

    Returns:
      :class:`Calibration`; ``.step_size`` is the recommendation,
      ``.table`` the measurements, ``.plot()`` draws them.
    """
    start = time.perf_counter()
    nbetas = _as_list("nbeta", nbeta, None)
    gammas = _as_list("localization", localization, DEFAULT_LOCALIZATION)
    check.require(0 < target_acceptance < 1, f"target_acceptance must be in (0, 1), got {target_acceptance}")
    check.positive_int("num_steps", num_steps, minimum=16)
    check.positive_int("probe_steps", probe_steps, minimum=8)
    check.positive_int("verify_chains", verify_chains, minimum=1)
    resolved = []
    for nb in nbetas:
        for g in gammas:
            n, batch, nb_value = validate_llc_inputs(
                loss_fn, params, data, step_size=1.0, nbeta=nb, localization=g, num_chains=1, num_draws=1,
                num_burnin=0, batch_size=batch_size, sampler=sampler,
            )
            resolved.append((float(nb_value), float(g)))
    combos = _unique(resolved)
    if step_sizes is not None:
        grid_given = sorted({check.positive_number("step_sizes", s) for s in np.ravel(step_sizes)}, reverse=True)
        check.require(len(grid_given) >= 1, "step_sizes is empty")
    options = tuple(sorted((sampler_options or {}).items()))
    has_acceptance = bool(get_sampler(sampler).LANGEVIN_PROPOSAL) or sampler == "mala"
    if init_loss is None:
        init_loss = full_data_loss(loss_fn, params, data)
    init_loss = float(init_loss)
    messages: list[str] = []
    table: list[dict] = []
    cost = {"chain_steps": 0, "compile_seconds": 0.0, "programs": 0, "rounds": {"probe": 0, "sweep": 0, "verify": 0}}
    key = jax.random.PRNGKey(seed)
    counter = [0]

    def run(points, chains, steps, stage):
        counter[0] += 1
        rows, c = _run_points(
            loss_fn, params, data, points, chains=chains, steps=steps, batch=batch, sampler=sampler, options=options,
            seed=jax.random.fold_in(key, counter[0]), burnin=steps // 2 if stage != "probe" else steps // 5,
            acc_every=max(1, steps // (25 if stage == "probe" else 50)) if has_acceptance else 0,
            init_loss=init_loss,
        )
        cost["chain_steps"] += c["chain_steps"]
        cost["compile_seconds"] += c["compile_seconds"]
        cost["programs"] += c["compile_seconds"] > 0
        cost["rounds"][stage] += 1
        for r in rows:
            r["stage"] = stage
            r["round"] = cost["rounds"][stage]
            r.update(llc_half=None, halving_ok=None, healthy=False, chosen=False)
        return rows

    # 1. curvature: ε_stab = 4 / (nβ·h + γ)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=min(n, max(batch, 256)), replace=False))
    h = top_hessian_eigenvalue(loss_fn, params, jax.tree.map(lambda x: jnp.asarray(x)[idx], data), seed=seed)
    curvature_seconds = time.perf_counter() - t0
    stab = {c: 4.0 / max(c[0] * h + c[1], 1e-30) for c in combos}
    curvature = {
        "top_eigenvalue": h,
        "stability_limit": stab[combos[0]],
        "stability_limits": [{"nbeta": c[0], "localization": c[1], "stability_limit": stab[c]} for c in combos],
        "seconds": curvature_seconds,
    }

    # 2. probe: bracket the acceptance crossing within a decade
    if step_sizes is None:
        top = {c: stab[c] for c in combos}
        crossing = {}
        for _ in range(max_rounds):
            pending = [c for c in combos if c not in crossing]
            if not pending:
                break
            points = [(top[c] * 10.0**-k, c[0], c[1]) for c in combos for k in range(PROBE_DECADES)]
            rows = run(points, 1, probe_steps, "probe")
            table += rows
            for i, c in enumerate(combos):
                if c not in pending:
                    continue
                status, eps_x = _crossing(rows[i * PROBE_DECADES : (i + 1) * PROBE_DECADES], target_acceptance)
                if status == "ok":
                    crossing[c] = eps_x
                elif status == "up":
                    top[c] *= 10.0 ** (PROBE_DECADES - 2)
                else:
                    top[c] *= 10.0 ** -(PROBE_DECADES - 1)
        for c in combos:
            if c not in crossing:
                crossing[c] = top[c] * 10.0 ** -(PROBE_DECADES // 2)
                messages.append(
                    f"nβ={c[0]:.4g}, γ={c[1]:g}: the probe found no step size where the acceptance crosses "
                    f"{target_acceptance} within {max_rounds} rounds; the sweep is centred at {crossing[c]:.3g}"
                )
        grids = {c: [crossing[c] * GRID_TOP * 2.0 ** (-k / 2) for k in range(GRID_POINTS)] for c in combos}
    else:
        grids = {c: list(grid_given) for c in combos}

    # 3. sweep: √2 grid, one chain per step
    candidates: dict = {}
    sweep_rows: dict = {c: [] for c in combos}
    for _ in range(max_rounds if step_sizes is None else 1):
        pending = [c for c in combos if c not in candidates]
        if not pending:
            break
        points = [(e, c[0], c[1]) for c in combos for e in grids[c]]
        rows = run(points, 1, num_steps, "sweep")
        table += rows
        i = 0
        for c in combos:
            mine = rows[i : i + len(grids[c])]
            i += len(grids[c])
            if c not in pending:
                continue
            sweep_rows[c] = mine
            for r in mine:
                r["healthy"] = not r["diverged"] and _acceptance_ok(r, target_acceptance) and r["levelled"]
            passing = [r for r in mine if not r["diverged"] and _acceptance_ok(r, target_acceptance)]
            if step_sizes is None and mine[0]["healthy"]:
                grids[c] = [e * 2.0 ** ((GRID_POINTS - 3) / 2) for e in grids[c]]  # the top passed: move up
                continue
            if step_sizes is None and not passing:
                grids[c] = [e * 2.0 ** -((GRID_POINTS - 3) / 2) for e in grids[c]]  # nothing passed: move down
                continue
            healthy = [r for r in mine if r["healthy"]]
            if healthy:
                candidates[c] = (healthy[0]["step_size"], "")
            elif passing:
                candidates[c] = (
                    passing[0]["step_size"],
                    "not levelled off within the calibration burn-in at any step with acceptable acceptance; "
                    "raise num_steps",
                )
    for c in combos:
        if c not in candidates:
            fallback = min(grids[c])
            candidates[c] = (fallback, f"no healthy step in the swept range; using the smallest step tried, {fallback:.3g}")

    # 4. verification: ε against ε/2 with verify_chains chains each
    final: dict = {}
    current = {c: candidates[c][0] for c in combos}
    notes = {c: candidates[c][1] for c in combos}
    for _ in range(max_rounds):
        pending = [c for c in combos if c not in final]
        if not pending:
            break
        points = []
        for c in combos:
            points += [(current[c], c[0], c[1]), (current[c] / 2, c[0], c[1])]
        rows = run(points, verify_chains, num_steps, "verify")
        for j, c in enumerate(combos):
            row, half = rows[2 * j], rows[2 * j + 1]
            if c not in pending:
                continue
            table += [row, half]
            row["llc_half"] = half["llc"]
            row["halving_ok"] = _halving(row, half, halving_z, halving_tolerance)
            half["healthy"] = not half["diverged"] and _acceptance_ok(half, target_acceptance) and half["levelled"]
            row["healthy"] = (
                not row["diverged"] and _acceptance_ok(row, target_acceptance) and row["levelled"]
                and row["halving_ok"] is not False
            )
            if row["healthy"] or notes[c]:
                final[c] = row
                if row["halving_ok"] is None and not notes[c]:
                    notes[c] = "λ̂(ε/2) had not levelled off, so the halving check was skipped"
            else:
                current[c] /= math.sqrt(2)
    for c in combos:
        if c not in final:
            last = [r for r in table if r["stage"] == "verify" and (r["nbeta"], r["localization"]) == c][-2]
            final[c] = last
            notes[c] = f"no verified step after {max_rounds} rounds; using {last['step_size']:.3g}"
    for c in combos:
        final[c]["chosen"] = True

    choices = []
    for c in combos:
        r = final[c]
        status = notes[c] or ("ok" if r["healthy"] else "unhealthy")
        choices.append(
            {
                "nbeta": c[0],
                "localization": c[1],
                "step_size": r["step_size"],
                "llc": r["llc"],
                "llc_mcse": r["llc_mcse"],
                "llc_half": r["llc_half"],
                "acceptance": r["acceptance"],
                "healthy": r["healthy"],
                "status": status,
            }
        )
        if notes[c]:
            messages.append(f"nβ={c[0]:.4g}, γ={c[1]:g}: {notes[c]}")

    # recommendation: first nβ; γ from the plateau of λ̂(γ)
    nb0 = combos[0][0]
    gamma_rows = sorted((ch for ch in choices if ch["nbeta"] == nb0), key=lambda ch: ch["localization"])
    chosen_gamma = gamma_rows[0]["localization"] if len(gammas) == 1 else _pick_localization(
        gamma_rows, localization_tolerance, halving_z, messages
    )
    chosen = next(ch for ch in choices if ch["nbeta"] == nb0 and ch["localization"] == chosen_gamma)
    for r in table:
        r["chosen"] = r["chosen"] and (r["nbeta"], r["localization"]) in combos

    cost["seconds"] = time.perf_counter() - start
    result = Calibration(
        step_size=float(chosen["step_size"]),
        nbeta=float(nb0),
        localization=float(chosen_gamma),
        num_burnin=int(num_steps // 2),
        sampler=sampler,
        batch_size=int(batch),
        num_examples=int(n),
        init_loss=init_loss,
        target_acceptance=float(target_acceptance),
        table=table,
        choices=choices,
        warnings=messages,
        curvature=curvature,
        cost=cost,
        settings={
            "num_steps": num_steps,
            "probe_steps": probe_steps,
            "verify_chains": verify_chains,
            "halving_tolerance": halving_tolerance,
            "halving_z": halving_z,
            "localization_tolerance": localization_tolerance,
            "step_sizes": None if step_sizes is None else list(grid_given),
            "seed": seed,
            "sampler_options": dict(options),
        },
    )
    if warn:
        for m in messages:
            warnings.warn(m, diag.SLTWarning, stacklevel=2)
    return result


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
