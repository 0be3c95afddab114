"""``slt llc --task MODULE:FACTORY --checkpoints PATH --out FILE``: LLC over your own checkpoints (resumable)."""

from __future__ import annotations

from slt.commands._common import (
    AUTO,
    HelpFormatter,
    epilog,
    failed_checkpoints,
    number_or_auto,
    one_line_errors,
    report_failures,
    steps_or_auto,
)
from slt.localization import SCALE, parse_localization

EXAMPLE = """\
slt llc --task mytasks.py:make_task --checkpoints runs/exp1/checkpoints --out runs/exp1/llc.jsonl \\
        --nbeta 2 --localization 5 --chains 4 --draws 500 --batch-size 128"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "llc",
        help="estimate the LLC at every checkpoint of a run (resumable)",
        description="Estimate the local learning coefficient at each checkpoint in PATH. FACTORY (a function in an "
        "importable MODULE, or in a .py file: path/to/file.py:FACTORY) returns the loss function, the params "
        "template and the training data; see docs/sweeps.md. Results are appended to FILE as each checkpoint "
        "finishes; rerunning the same command resumes.",
        formatter_class=HelpFormatter,
        epilog=epilog(EXAMPLE),
    )
    one_line_errors(p, "slt llc")
    p.add_argument("--task", required=True, metavar="MODULE:FACTORY", help="task factory (see docs/sweeps.md)")
    p.add_argument("--checkpoints", required=True, metavar="PATH",
                   help="directory of checkpoints (step number in each name), an orbax manager directory, or one file")
    p.add_argument("--out", required=True, metavar="FILE", help="trajectory store to write (.jsonl)")
    p.add_argument("--step-size", type=number_or_auto, default=AUTO, metavar="EPS|auto",
                   help="SGLD step size ε, or auto: calibrated at a few checkpoints, one ε for all, recorded in "
                        "the store (default: auto)")
    p.add_argument("--nbeta", type=float, default=None, help="nβ (default: n/log n)")
    p.add_argument("--localization", type=parse_localization, default=1.0, metavar="GAMMA|scale",
                   help=f'localization γ, or "{SCALE}": 0.5·d/‖w*‖² of the last checkpoint, one γ for all '
                        "(default: 1)")
    p.add_argument("--chains", type=int, default=4, help="chains per checkpoint")
    p.add_argument("--draws", type=int, default=1000, help="draws per chain")
    p.add_argument("--burnin", type=steps_or_auto, default=None, metavar="STEPS|auto",
                   help="burn-in steps per chain, or auto: until every checkpoint's λ̂ trace has levelled off "
                        "(default: auto with --step-size auto, else 0)")
    p.add_argument("--thin", type=int, default=1, help="sampler steps between draws")
    p.add_argument("--batch-size", type=int, default=None, help="minibatch size (default: full batch)")
    p.add_argument("--sampler", default="sgld", help="sgld, psgld, sghmc, sgnht or mala")
    p.add_argument("--seed", type=int, default=0, help="sampler seed")
    p.add_argument("--group", type=int, default=None, metavar="G",
                   help="checkpoints vmapped together (default: from the parameter count)")
    p.add_argument("--restart", action="store_true",
                   help="if FILE was made with other settings, move it to FILE.N and start a new store (refused "
                        "while another process writes to FILE)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys
    import warnings

    from slt.task import load_task
    from slt.trajectory import llc_trajectory

    num_burnin = args.burnin
    if num_burnin is None:
        num_burnin = AUTO if args.step_size == AUTO else 0
    loss_fn, params, data = load_task(args.task)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traj = llc_trajectory(
            loss_fn, args.checkpoints, data, out=args.out, template=params, step_size=args.step_size,
            nbeta=args.nbeta, localization=args.localization, num_chains=args.chains, num_draws=args.draws,
            num_burnin=num_burnin, steps_between_draws=args.thin, batch_size=args.batch_size,
            sampler=args.sampler, seed=args.seed, checkpoints_per_group=args.group, meta={"task": args.task},
            restart=args.restart, progress=False if args.no_progress else None,
        )
    for w in caught:
        print(f"note: {w.message}", file=sys.stderr)
    print(traj.table())
    failures = failed_checkpoints(traj)
    total = len(traj) + len(traj.failed)
    print(f"{total - len(failures)} of {total} checkpoints measured, {len(failures)} failed; store: {args.out}")
    return report_failures("slt llc", failures, total, args.out)
