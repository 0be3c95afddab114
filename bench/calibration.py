"""Validation of ``step_size="auto"``: λ̂ on deep linear networks against Aoyagi's λ, and what calibrating costs.

    python bench/calibration.py [--quick] [--no-write] [--only 0 2 ...]

Protocol (Lau et al. arXiv 2308.12108, Furman & Lau arXiv 2402.03698, scaled to 2 CPU cores): no-noise
data x ~ U[-10, 10]^d, y = x·W*, mean-squared loss, λ̂ at the true parameter W* (every factor of rank r,
slt.models.dln), n = 1e5, batch 500, nβ = n/log n, γ = 1, SGLD, on the networks of bench/accuracy.py with
its chains × draws (4 × 10,000; 2 × 5,000 from 2e4 parameters). The step size is ``"auto"`` and nothing
else is set: the burn-in is then ``"auto"`` too (until the λ̂ trace levels off, :mod:`slt.burnin`). The cost of the
calibration is reported against the estimation it precedes, both in chain-steps (gradient evaluations on
a batch) and in wall-clock seconds including compilation. The table goes to docs/calibration.md between
``<!-- bench:calibration:start -->`` and ``<!-- bench:calibration:end -->``.

:func:`auto_vs_hand` compares ``"auto"`` with a hand-tuned step on any task within standard errors
(e.g. the grokking demo's hand-tuned ε = 3e-3, nβ = 2, γ = 5 of REFERENCE §5 once it exists).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import slt  # noqa: E402
from accuracy import DLN_SHAPES, dln_chains_and_draws, se_of  # noqa: E402  (the accuracy benchmark's networks)
from common import machine_line, markdown_table, write_section  # noqa: E402
from dln_exact import load_results, result_key  # noqa: E402  (exact values for the "vs exact" column)
from slt.localization import SCALE, parse_localization  # noqa: E402

N = 100_000
BATCH = 500


def auto_vs_hand(loss_fn, params, data, hand: dict, **common) -> dict:
    """λ̂ with ``step_size="auto"`` and with a hand-tuned ``hand`` (e.g. {"step_size": 3e-3}), and their z-score.

    ``common`` goes to both calls of :func:`slt.estimate_llc` (nbeta, localization, batch_size, chains...).
    """
    auto = slt.estimate_llc(loss_fn, params, data, step_size="auto", **common)
    manual = slt.estimate_llc(loss_fn, params, data, **{**common, **hand})
    se = math.hypot(se_of(auto), se_of(manual))
    return {
        "auto_step": auto.config.step_size,
        "auto_llc": auto.llc_mean,
        "hand_llc": manual.llc_mean,
        "z": (auto.llc_mean - manual.llc_mean) / se,
        "auto": auto,
        "hand": manual,
    }


def step_column(calibrated: float, used: float) -> str:
    """The calibration's step, and the step the draws used when the burn-in's checks halved it."""
    return f"{calibrated:.3g}" if used == calibrated else f"{calibrated:.3g} → {used:.3g}"


EXACT_COLUMN = 12  # where the row has "exact λ̂" and "vs exact"


def run_dln(shape, rank, *, quick, localization: float | str = 1.0, seed: int = 0):
    from slt.models.dln import make_dln_task

    task = make_dln_task(shape, rank, N, seed=0)
    loss_fn, params, data, lam, d = task.loss_fn, task.params, task.data, task.meta["lam"], task.meta["num_params"]
    chains, draws = dln_chains_and_draws(d, quick)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", slt.SLTWarning)
        # step_size="auto" and nothing else: the burn-in defaults to "auto" (until λ̂ levels off)
        result = slt.estimate_llc(loss_fn, params, data, step_size="auto", batch_size=BATCH, num_chains=chains,
                                  num_draws=draws, seed=seed, localization=localization)
    cal = result.diagnostics["calibration"]
    # the same calibration again, its program already compiled (as for every checkpoint after the first)
    from slt.calibration import calibrate

    warm = calibrate(loss_fn, params, data, batch_size=BATCH, seed=seed, warn=False, localization=localization).cost["seconds"]
    est_compile = result.timing["compile_seconds"]
    est_seconds = est_compile + result.timing["sample_seconds"]
    burnin = result.config.num_burnin
    est_steps = chains * (draws + burnin)
    rel = (result.llc_mean - lam) / lam
    flags = []
    if any("still rising" in w for w in cal["warnings"]):
        flags.append("calibration: λ̂ still rising at 300 steps")
    burn = result.diagnostics["burnin"]
    if not burn["levelled"] or any("has not levelled off" in str(w.message) for w in caught):  # burn-in or draws
        flags.append("estimate: not levelled off")
    if any("skipped" in c for c in burn["bias_checks"]):
        flags.append("estimate: step not bias-checked")

    full_product = rank == min(shape[0], shape[-1])
    return {
        "row": [
            str(shape), rank, "full" if full_product else "deficient", d,
            lam, f"{result.config.localization:.3g}", step_column(cal["step_size"], result.config.step_size), f"{chains}×({burnin}+{draws})", f"{result.diagnostics['acceptance_mean']:.2f}", result.llc_mean,
            se_of(result), f"{100 * rel:+.1f}%", "-", "-", f"{cal['cost']['chain_steps'] / est_steps:.0%}",
            f"{cal['cost']['seconds']:.1f} ({cal['cost']['compile_seconds']:.1f})",
            f"{est_seconds:.1f} ({est_compile:.1f})", f"{warm:.1f}", "; ".join(flags) or "-",
        ],
        "rel": rel,
        "llc": result.llc_mean,
        "rank": rank,
        "step_frac": cal["cost"]["chain_steps"] / est_steps,
        "time_frac": cal["cost"]["seconds"] / est_seconds,
        "warm_frac": warm / result.timing["sample_seconds"],
        "full_product": full_product,
        "shape": shape,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 networks, 3,000 draws")
    parser.add_argument("--only", type=int, nargs="*", help="indices into DLN_SHAPES (default: all)")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave docs/ alone")
    parser.add_argument("--seed", type=int, default=0,
                        help="the estimates' seed (default 0, the documented tables; another seed only prints)")
    parser.add_argument("--localization", type=parse_localization, default=1.0,
                        help='γ for calibration and estimate (default 1, the package default; another value is '
                             'written to its own section, calibration-gamma<γ>); "scale": γ = 0.5·d/‖w*‖² '
                             "per network (section calibration-scale)")
    args = parser.parse_args(argv)
    slt.use_cpu_cores()  # chains sharded over the cores; before any JAX work
    shapes = DLN_SHAPES[:3] if args.quick else DLN_SHAPES
    if args.only:
        shapes = [DLN_SHAPES[i] for i in args.only]
    start = time.perf_counter()
    results = []
    for shape, rank in shapes:
        results.append(run_dln(shape, rank, quick=args.quick, localization=args.localization, seed=args.seed))
        print(results[-1]["row"], flush=True)
    header = ["widths (in→out)", "rank", "product", "d", "Aoyagi λ", "γ", "auto ε (calibrated → draws)", "chains×(auto burn-in+draws)", "MALA acc.", "λ̂", "± se", "vs λ",
              "exact λ̂ (NUTS, bench/dln_exact.py)", "vs exact", "calibration chain-steps / estimation", "calibration s (compile)", "estimation s (compile)",
              "calibration s, compiled", "flags"]
    # the exact values at γ = 1, read now: bench/dln_exact.py may have been running alongside
    exact_values = load_results() if args.localization == 1.0 else {}
    for r in results:
        exact = exact_values.get(result_key(r["shape"], r["rank"]))
        r["rel_exact"] = r["llc"] / exact["value"] - 1 if exact else None
        if exact:
            r["row"][EXACT_COLUMN:EXACT_COLUMN + 2] = [f"{exact['value']:.5g} ± {exact['se']:.2g}",
                                                      f"{100 * r['rel_exact']:+.1f}%"]
    gamma_text = ('0.5·d/‖w*‖² (localization="scale"; γ = 1 where w* = 0)' if args.localization == SCALE
                  else f"{args.localization:g}")
    within = [r for r in results if abs(r["rel"]) <= 0.10]
    missed = [f"{r['shape']} ({100 * r['rel']:+.0f}%)" for r in results if abs(r["rel"]) > 0.10]
    markdown = (
        f"### step_size=\"auto\" on the accuracy benchmark's deep linear networks (n = 1e5, batch {BATCH}, "
        f"nβ = n/log n, γ = {gamma_text}, SGLD; the burn-in is num_burnin=\"auto\", the default with "
        "step_size=\"auto\")\n\n"
        + markdown_table(header, [r["row"] for r in results])
        + f"\n\n{len(within)}/{len(results)} networks within 10% of Aoyagi's λ "
        f"(median |error| {100 * np.median([abs(r['rel']) for r in results]):.1f}%)"
        + (f"; missed: {', '.join(missed)}" if missed else "")
        + (f". Against the exact finite-t value (NUTS, where computed): median |error| "
           f"{100 * np.median([abs(r['rel_exact']) for r in results if r['rel_exact'] is not None]):.1f}%, "
           f"largest {100 * max(abs(r['rel_exact']) for r in results if r['rel_exact'] is not None):.1f}%"
           if any(r["rel_exact"] is not None for r in results) else "")
        + ". Calibration cost: median "
        f"{np.median([r['step_frac'] for r in results]):.0%} of the estimation's chain-steps (target ≤ 25%); in "
        f"wall-clock time {np.median([r['time_frac'] for r in results]):.0%} of the estimation when both compile "
        f"(on CPU compilation dominates these small networks), {np.median([r['warm_frac'] for r in results]):.0%} "
        "of the estimation's sampling time once the calibration program is compiled (every checkpoint after the "
        "first, in a trajectory). λ̂ on these networks is still rising after the calibration's 300 "
        "steps; the calibration recognises that (the halving difference does not shrink with the step), keeps "
        "the acceptance-limited step instead of shrinking it, and the automatic burn-in then runs until the λ̂ "
        "trace has levelled off (slt.burnin), checks the step's bias there against ε/2 (during the climb too, "
        "once the acceptance guard has halved the step) and halves it while the bias shows (\"→\" in the ε "
        "column), before the draws.\n\n"
        f"{machine_line()}; total {time.perf_counter() - start:.0f} s."
    )
    print(markdown)
    if not args.no_write and args.seed == 0:
        section = ("calibration" if args.localization == 1.0 else "calibration-scale" if args.localization == SCALE
                   else f"calibration-gamma{args.localization:g}")
        print("written to", write_section("calibration.md", section, markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
