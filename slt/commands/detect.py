"""``slt detect FILE``: phase transitions in a trajectory store (``slt llc`` / ``slt demo`` output)."""

from __future__ import annotations

import json

from slt.commands._common import HelpFormatter, UserError, epilog, one_line_errors

EXAMPLE = """\
slt detect runs/grok/llc.jsonl --signals llc,test_loss --plot transitions.png"""

EXIT_STATUS = """\
exit status:
  0    done (failed checkpoints in the store are left out; the first line counts them)
  2    an error in the arguments or the store (one line on stderr)
  130  interrupted"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "detect",
        help="find phase transitions in an LLC trajectory store",
        description="Detect rises, falls and stage boundaries of the LLC (and other stored signals such as test_loss) "
        "over training steps with slt.detect_transitions; prints a table. Signals are grouped into one event when "
        "their change points (where half of each change is done) are close; see docs/transitions.md.",
        formatter_class=HelpFormatter,
        epilog=epilog(EXAMPLE, exit_status=EXIT_STATUS),
    )
    one_line_errors(p, "slt detect")
    p.add_argument("file", metavar="FILE", help="trajectory store (.jsonl) written by slt llc or slt demo")
    p.add_argument("--signals", default="llc", help="comma-separated signals, the first leads (llc or a stored metric)")
    p.add_argument("--threshold", type=float, default=5.0, help="minimal z-score of a move")
    p.add_argument("--linear", action="store_true", help="smooth against step instead of log(step)")
    p.add_argument("--no-boundaries", action="store_true", help="do not report stage boundaries")
    p.add_argument("--plot", metavar="PNG", default=None, help="also save the LLC with the transitions marked")
    p.add_argument("--json", action="store_true", help="print the transitions as JSON instead of a table")
    p.set_defaults(func=run)


def run(args) -> int:
    from slt.trajectory import Trajectory

    traj = Trajectory.load(args.file)
    signals = [s.strip() for s in args.signals.split(",") if s.strip()]
    if not signals:
        raise UserError("--signals is empty")
    if args.threshold <= 0:
        raise UserError(f"--threshold must be > 0, got {args.threshold}")
    try:
        transitions = traj.detect(signals, log_steps=not args.linear, threshold=args.threshold,
                                  boundaries=not args.no_boundaries)
    except ValueError as err:
        raise UserError(f"{args.file}: {err}") from None
    if args.json:
        print(json.dumps([t.to_dict() for t in transitions], indent=1))
    else:
        print(f"{args.file}: {len(traj)} checkpoints ({len(traj.failed)} failed), signals {', '.join(signals)}")
        if not transitions:
            print("no transitions detected")
        else:
            print(f"{'kind':<15} {'step':>10} {'start':>10} {'end':>10} {'change':>10} {'score':>7}  signals")
            for t in transitions:
                print(f"{t.kind:<15} {t.step:>10.4g} {t.start:>10.4g} {t.end:>10.4g} {t.magnitude:>+10.4g} "
                      f"{t.score:>7.1f}  {','.join(t.signals)}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ax = traj.plot(transitions=transitions, log_x=not args.linear, path=args.plot)
        plt.close(ax.figure)
        print(f"plot: {args.plot}")
    return 0
