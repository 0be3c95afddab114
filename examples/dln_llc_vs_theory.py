"""λ̂ of deep linear networks against Aoyagi's theoretical λ, across shapes.

Protocol of Furman & Lau (arXiv 2402.03698): no-noise data, x ~ U[-10, 10],
λ̂ at the true parameter, γ = 1, batch 500, nβ = n/log n, SGLD ε = 5e-7.

    python examples/dln_llc_vs_theory.py [--out examples/out] [--quick]

About 5 minutes on 2 CPU cores (--quick: about a minute). Saves dln_llc_vs_theory.png.
"""

import argparse
import os
import time
import warnings

import numpy as np

import slt
from slt.models.dln import make_dln_task

SHAPES = [  # widths input → output, rank of the product
    ([5, 5, 5], 1), ([5, 5, 5], 3), ([10, 10, 10], 3), ([8, 12, 8, 6], 2),
    ([20, 20, 20, 20], 5), ([30, 20, 30], 10), ([50, 30, 50], 10), ([40, 40, 40, 40], 12),
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="examples/out")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    warnings.simplefilter("ignore", slt.SLTWarning)

    n = 20_000 if args.quick else 100_000
    steps = 1500 if args.quick else 10_000
    shapes = SHAPES[:4] if args.quick else SHAPES
    rows = []
    for widths, rank in shapes:
        task = make_dln_task(widths, rank, n, seed=0)
        start = time.perf_counter()
        r = slt.estimate_llc(task.loss_fn, task.params, task.data, step_size=5e-7, batch_size=500, num_chains=4,
                             num_draws=steps, num_burnin=steps)  # the trace climbs for ~10k steps: burn in
        lam = task.meta["lam"]
        rows.append((widths, rank, task.meta["num_params"], lam, r.llc_mean, r.llc_std))
        print(f"{str(widths):22s} r={rank:2d} d={task.meta['num_params']:5d}  λ={lam:7.2f}  λ̂={r.llc_mean:7.2f} ± "
              f"{r.llc_std:.2f}  ({100 * (r.llc_mean - lam) / lam:+.1f}%, {time.perf_counter() - start:.0f} s)")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lam = np.array([r[3] for r in rows])
    est = np.array([r[4] for r in rows])
    err = np.array([r[5] for r in rows])
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.errorbar(lam, est, yerr=err, fmt="o")
    lim = [0.8 * lam.min(), 1.2 * lam.max()]
    ax.plot(lim, lim, "k--", lw=1, label="λ̂ = λ")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("Aoyagi λ (theory)")
    ax.set_ylabel("λ̂ (SGLD)")
    ax.set_title(f"Deep linear networks, n = {n:g}")
    ax.legend()
    fig.tight_layout()
    path = os.path.join(args.out, "dln_llc_vs_theory.png")
    fig.savefig(path, dpi=120)
    print(f"median |relative error| {100 * np.median(np.abs(est - lam) / lam):.1f}%; saved {path}")
    return rows


if __name__ == "__main__":
    main()
