"""Grokking with the modular-addition MLP, the LLC at every checkpoint, transitions flagged.

The same pipeline as ``slt demo grokking`` (REFERENCE §5: p = 53, train
fraction 0.5, Adam lr 5e-3 with coupled weight decay 2e-4, batch 128; LLC with
SGLD ε = 3e-3, nβ = 2, γ = 5, 500 draws), run for several seeds so that the
transitions can be compared across runs.

    python examples/grokking_mlp.py [--out examples/out/grokking] [--seeds 0 1 2] [--quick]

About 10 minutes per seed on 2 CPU cores (--quick: about 3). Each seed writes
report.md, report.json and llc.png under OUT/seed_S; a summary table of the
transitions per seed is printed at the end.
"""

import argparse
import os

from slt.demo import run_grokking_demo


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="examples/out/grokking")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="seconds-long pipeline check (no grokking)")
    args = parser.parse_args(argv)
    reports = {}
    for seed in args.seeds:
        out = os.path.join(args.out, f"seed_{seed}")
        reports[seed] = run_grokking_demo(out, quick=args.quick, seed=seed, tiny=args.tiny)
        print(f"seed {seed}: report in {out}/report.md, plot {out}/llc.png")
    print("\nseed  train acc ≥ 0.95  test acc ≥ 0.95  transitions (step, kind, direction)")
    for seed, report in reports.items():
        events = ", ".join(f"{t['step']:.0f} {t['kind']} {'+' if t['direction'] > 0 else '-'}"
                           for t in report.get("transitions", []))
        print(f"{seed:4d}  {str(report.get('memorization_step')):>16}  {str(report.get('grokking_step')):>15}  {events}")
    print(f"saved plots under {args.out}")
    return reports


if __name__ == "__main__":
    main()
