"""``slt demo grokking --out DIR``: train, measure the LLC over training, detect transitions, report."""

from __future__ import annotations

import argparse
import sys


def one_line_errors(parser: argparse.ArgumentParser, prog: str) -> argparse.ArgumentParser:
    """Argument errors print one line (``slt CMD: error: ...``) and exit 2, without the usage block."""

    def error(message):
        print(f"{prog}: error: {message} (see {prog} --help)", file=sys.stderr)
        sys.exit(2)

    parser.error = error
    return parser


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run a built-in demonstration end to end (grokking)",
        description="Grokking: train the modular-addition MLP (p=53, train fraction 0.5), estimate the LLC at every "
        "checkpoint, detect phase transitions, and write DIR/report.json, DIR/report.md and DIR/llc.png. "
        "Rerunning the same command resumes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    one_line_errors(p, "slt demo")
    p.add_argument("name", choices=["grokking"], help="which demo")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created; reused to resume)")
    p.add_argument("--quick", action="store_true", help="fewer checkpoints and draws (about 3 minutes)")
    p.add_argument("--tiny", action="store_true",
                   help="seconds-long CI setting (p=23, 600 steps; no grokking); also env SLT_DEMO_TINY=1")
    p.add_argument("--seed", type=int, default=0, help="model initialisation, data split and sampler seed")
    p.add_argument("--chains", type=int, default=None, metavar="K", help="SGLD chains per checkpoint (default: by mode)")
    p.add_argument("--draws", type=int, default=None, metavar="D", help="draws per chain (default: by mode)")
    p.add_argument("--restart", action="store_true",
                   help="if DIR holds a run with other settings, replace it (the old LLC store is kept as llc.jsonl.N)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from slt.cli import UserError
    from slt.demo import run_grokking_demo

    for name in ("chains", "draws"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise UserError(f"--{name} must be ≥ 1, got {v}")
    report = run_grokking_demo(
        args.out, quick=args.quick, seed=args.seed, tiny=True if args.tiny else None, num_chains=args.chains,
        num_draws=args.draws, restart=args.restart, progress=False if args.no_progress else None,
    )
    peak = report.get("llc_peak") or {}
    print(f"train acc ≥ 0.95 at step {report['memorization_step']}, test acc ≥ 0.95 at step {report['grokking_step']}; "
          f"LLC peak {peak.get('llc_mean', float('nan')):.1f} at step {peak.get('step')}, "
          f"final {(report.get('llc_final') or {}).get('llc_mean', float('nan')):.1f}")
    for t in report["transitions_text"]:
        print("  " + t)
    print(f"report: {args.out}/report.md")
    return 0
