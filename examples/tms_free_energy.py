"""Bayesian phase transition in the toy model of superposition: 5-gon vs 6-gon at c = 6.

Chen et al. (arXiv 2310.06301; REFERENCE §4): with F_n ≈ nL + λ·log n, the
5-gon (L = 0.06874, λ = 7) has the lower free energy at small n and the 6-gon
(L = 0.04819, λ = 8.5) at large n, crossing near n ≈ 600. Here the *local*
free energy of each phase (prior N(k-gon, I/γ), γ = 1) is measured by
thermodynamic integration at several n, both phases with one compiled
program per n (:func:`slt.free_energy.free_energy_trajectory`).

The loss is TMS's squared error, treated as a negative log-likelihood
(Gaussian noise with σ² = 1/2 per output, up to n·(c/2)·log π, the same for
both phases, so ΔF is unaffected).

    python examples/tms_free_energy.py [--quick] [--out tms_free_energy.png]

Saves the plot (PNG) and the numbers (JSON next to it). About 6 minutes on
2 CPU cores (``--quick``: about 2). Results and caveats: docs/free_energy.md.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path

import jax
import numpy as np
from jax.flatten_util import ravel_pytree

import slt
from slt.free_energy import free_energy_trajectory
from slt.models.tms import kgon_params, population_loss, tms_data, tms_loss

C = 6
PHASES = {"5-gon": 5, "6-gon": 6}
LAM = {"5-gon": 7.0, "6-gon": 8.5}  # (3k - 1)/2


def largest_curvature(params, data) -> float:
    """Largest Hessian eigenvalue of L_n at params (18 parameters: exact)."""
    flat, unravel = ravel_pytree(params)
    hess = jax.hessian(lambda z: tms_loss(unravel(z), data))(flat)
    return float(np.linalg.eigvalsh(np.asarray(hess))[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer n and shorter chains")
    p.add_argument("--out", default="tms_free_energy.png")
    p.add_argument("--localization", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    ns = [30, 100, 300, 1000] if args.quick else [25, 50, 100, 200, 400, 800, 1600]
    draws = 800 if args.quick else 2000
    checkpoints = {name: kgon_params(C, k) for name, k in PHASES.items()}
    pop = {name: float(population_loss(w)) for name, w in checkpoints.items()}
    print("population losses:", {k: round(v, 5) for k, v in pop.items()})

    rows = []
    for n in ns:
        data = tms_data(C, n, rng=args.seed)
        h_max = max(largest_curvature(w, data) for w in checkpoints.values())
        # MALA step at the reference nβ = n/log n: ε·(largest precision) = 1/2
        step = 0.5 / (n / math.log(n) * h_max + args.localization)
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", slt.SLTWarning)
            traj = free_energy_trajectory(
                tms_loss, checkpoints, data, step_size=step, sampler="mala", localization=args.localization,
                num_betas=17, num_chains=4, num_draws=draws, num_burnin=draws // 2, seed=args.seed,
            )
        seconds = time.perf_counter() - start
        row = {"n": n, "localization": args.localization, "seconds": seconds,
               "warnings": [str(w.message) for w in caught]}
        for name, r in zip(traj.labels, traj.results):
            row[name] = {"F": r.value, "stderr": r.stderr, "nL_n": n * r.init_loss,
                         "llc_at_beta1": float(r.llc[-1]),
                         "compile_seconds": r.timing["compile_seconds"]}
        rows.append(row)
        f5, f6 = row["5-gon"], row["6-gon"]
        print(f"n={n:5d}  F(5-gon) = {f5['F']:9.2f} ± {f5['stderr']:.2f}   F(6-gon) = {f6['F']:9.2f} ± {f6['stderr']:.2f}   "
              f"ΔF = {f5['F'] - f6['F']:+7.2f}   ({seconds:.0f} s; 6-gon compile {f6['compile_seconds']:.1f} s)")
        for w in row["warnings"]:
            print("   !", w)

    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"population_loss": pop, "rows": rows}, indent=1))
    plot(rows, pop, out)
    print("saved", out, "and", out.with_suffix(".json"))


def plot(rows, pop, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = np.array([r["n"] for r in rows], float)
    grid = np.geomspace(n.min(), n.max(), 200)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, colour in (("5-gon", "C0"), ("6-gon", "C1")):
        penalty = np.array([r[name]["F"] - r[name]["nL_n"] for r in rows])
        se = np.array([r[name]["stderr"] for r in rows])
        ax1.errorbar(n, penalty, yerr=2 * se, fmt="o-", color=colour, capsize=3, label=f"{name}: TI ± 2 se")
        ax1.plot(grid, LAM[name] * np.log(grid), "--", color=colour, alpha=0.6, label=f"{LAM[name]:g}·log n")
    ax1.set_xscale("log")
    ax1.set_xlabel("n")
    ax1.set_ylabel("F − n·L_n(k-gon)  [nats]")
    ax1.set_title(f"Local free energy of each phase (γ = {rows[0]['localization']:g})")
    ax1.legend(fontsize=8)

    dF = np.array([r["5-gon"]["F"] - r["6-gon"]["F"] for r in rows])
    dse = np.array([math.hypot(r["5-gon"]["stderr"], r["6-gon"]["stderr"]) for r in rows])
    dL = pop["5-gon"] - pop["6-gon"]
    theory = grid * dL + (LAM["5-gon"] - LAM["6-gon"]) * np.log(grid)
    ax2.errorbar(n, dF, yerr=2 * dse, fmt="o-", color="C2", capsize=3, label="F(5-gon) − F(6-gon), TI ± 2 se")
    ax2.plot(grid, theory, "--", color="gray", label="n·ΔL − 1.5·log n (population ΔL; crossing ⋮)")
    ax2.axhline(0, color="k", lw=0.8)
    crossing = grid[np.argmin(np.abs(theory))]
    ax2.axvline(crossing, color="gray", lw=0.8, ls=":")
    ax2.set_xscale("log")
    ax2.set_xlabel("n")
    ax2.set_ylabel("ΔF  [nats]")
    ax2.set_title("5-gon preferred below 0, 6-gon above")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
