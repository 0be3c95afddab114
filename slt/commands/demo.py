"""``slt demo grokking --out DIR``: train, measure the LLC over training, detect transitions, report."""

from __future__ import annotations

import inspect
import math

from slt.commands._common import (  # noqa: F401 (one_line_errors: imported from here by older code)
    HelpFormatter,
    epilog,
    number_or_auto,
    one_line_errors,
    report_failures,
    steps_or_auto,
)

#: Wall-clock time of ``slt demo grokking --quick`` as shown in --help: the whole run, training and compilation
#: included, fresh compilation cache. Measured with `time slt demo grokking --quick --out /tmp/q` on 2 CPU cores
#: shared with other jobs: 138 s (the settings then: calibrated ε, automatic burn-in, 4 chains × 1000 draws,
#: 22 checkpoints; the earlier fixed-ε settings, 2 chains × 500 draws, took 16 s). Re-measure when the demo changes.
QUICK_TIME = "about 2.5 minutes on 2 CPU cores"

EXAMPLE = """\
slt demo grokking --out runs/grok --quick     # then open runs/grok/report.md"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run a built-in demonstration end to end (grokking)",
        description="Grokking: train the modular-addition MLP (p=53, train fraction 0.5), estimate the LLC at every "
        "checkpoint, detect phase transitions, and write DIR/report.json, DIR/report.md and DIR/llc.png. "
        "Rerunning the same command resumes.",
        formatter_class=HelpFormatter,
        epilog=epilog(EXAMPLE),
    )
    one_line_errors(p, "slt demo")
    p.add_argument("name", choices=["grokking"], help="which demo")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created; reused to resume)")
    p.add_argument("--quick", action="store_true", help=f"fewer checkpoints ({QUICK_TIME})")
    p.add_argument("--tiny", action="store_true",
                   help="seconds-long CI setting (p=23, 600 steps; no grokking); also env SLT_DEMO_TINY=1")
    p.add_argument("--seed", type=int, default=0, help="model initialisation, data split and sampler seed")
    p.add_argument("--chains", type=int, default=None, metavar="K", help="SGLD chains per checkpoint (default: by mode)")
    p.add_argument("--draws", type=int, default=None, metavar="D", help="draws per chain (default: by mode)")
    p.add_argument("--step-size", type=number_or_auto, default=None, metavar="EPS|auto",
                   help="SGLD step size ε, or auto (calibrated, one ε for every checkpoint) (default: by mode: auto, "
                        "--tiny 3e-3)")
    p.add_argument("--burnin", type=steps_or_auto, default=None, metavar="STEPS|auto",
                   help="burn-in steps per chain, or auto (until λ̂ has levelled off) (default: by mode: auto, "
                        "--tiny 0)")
    p.add_argument("--protocol", choices=["converged", "published"], default=None,
                   help="converged: calibrated ε, automatic burn-in, enough draws; published: the short protocol of "
                        "the literature (ε = 3e-3, no burn-in, 500 draws; its chains have not converged, and the "
                        "report says so) (default: converged)")
    p.add_argument("--restart", action="store_true",
                   help="if DIR holds a run with other settings, replace it (the old LLC store is kept as "
                        "llc.jsonl.N; refused while another process writes to it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from slt.cli import UserError
    from slt.demo import run_grokking_demo

    for name in ("chains", "draws"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise UserError(f"--{name} must be ≥ 1, got {v}")
    # sampler options only when given (None: the mode's own default), and only those this demo knows
    accepted = inspect.signature(run_grokking_demo).parameters
    extra = {}
    for option, kwarg in (("step_size", "step_size"), ("burnin", "num_burnin"), ("protocol", "protocol")):
        value = getattr(args, option)
        if value is None:
            continue
        if kwarg not in accepted:
            raise UserError(f"--{option.replace('_', '-')} is not supported by this version of the demo")
        extra[kwarg] = value
    report = run_grokking_demo(
        args.out, quick=args.quick, seed=args.seed, tiny=True if args.tiny else None, num_chains=args.chains,
        num_draws=args.draws, restart=args.restart, progress=False if args.no_progress else None, **extra,
    )
    peak = report.get("llc_peak") or {}
    print(f"train acc ≥ 0.95 at step {report['memorization_step']}, test acc ≥ 0.95 at step {report['grokking_step']}; "
          f"LLC peak {_num(peak.get('llc_mean')):.1f} at step {peak.get('step')}, "
          f"final {_num((report.get('llc_final') or {}).get('llc_mean')):.1f}")
    for t in report["transitions_text"]:
        print("  " + t)
    print(f"report: {args.out}/report.md")
    failures = [(int(f["step"]), (f.get("error") or "failed").splitlines()[0]) for f in report.get("failed") or []]
    failures += [(int(s), "λ̂ is NaN (every chain diverged)")
                 for s, v in zip(report.get("steps") or [], report.get("llc_mean") or []) if not _finite(v)]
    total = len(report.get("steps") or []) + len(report.get("failed") or [])
    return report_failures("slt demo", sorted(failures), total, f"{args.out}/report.md")


def _finite(v) -> bool:
    return v is not None and math.isfinite(float(v))


def _num(v) -> float:
    return float(v) if _finite(v) else float("nan")
