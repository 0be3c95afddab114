"""``slt llc --task MODULE:FACTORY --checkpoints PATH --out FILE``: LLC over your own checkpoints (resumable)."""

from __future__ import annotations

import argparse

from slt.commands.demo import one_line_errors


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "llc",
        help="estimate the LLC at every checkpoint of a run (resumable)",
        description="Estimate the local learning coefficient at each checkpoint in PATH. FACTORY (a function in an "
        "importable MODULE, or in a .py file: path/to/file.py:FACTORY) returns the loss function, the params "
        "template and the training data; see docs/sweeps.md. Results are appended to FILE as each checkpoint "
        "finishes; rerunning the same command resumes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    one_line_errors(p, "slt llc")
    p.add_argument("--task", required=True, metavar="MODULE:FACTORY", help="task factory (see docs/sweeps.md)")
    p.add_argument("--checkpoints", required=True, metavar="PATH",
                   help="directory of checkpoints (step number in each name), an orbax manager directory, or one file")
    p.add_argument("--out", required=True, metavar="FILE", help="trajectory store to write (.jsonl)")
    p.add_argument("--step-size", type=float, required=True, metavar="EPS", help="SGLD step size ε")
    p.add_argument("--nbeta", type=float, default=None, help="nβ (default: n/log n)")
    p.add_argument("--localization", type=float, default=1.0, metavar="GAMMA", help="localization γ")
    p.add_argument("--chains", type=int, default=4, help="chains per checkpoint")
    p.add_argument("--draws", type=int, default=1000, help="draws per chain")
    p.add_argument("--burnin", type=int, default=0, help="burn-in steps per chain")
    p.add_argument("--thin", type=int, default=1, help="sampler steps between draws")
    p.add_argument("--batch-size", type=int, default=None, help="minibatch size (default: full batch)")
    p.add_argument("--sampler", default="sgld", help="sgld, psgld, sghmc, sgnht or mala")
    p.add_argument("--seed", type=int, default=0, help="sampler seed")
    p.add_argument("--group", type=int, default=None, metavar="G",
                   help="checkpoints vmapped together (default: from the parameter count)")
    p.add_argument("--restart", action="store_true",
                   help="if FILE was made with other settings, move it to FILE.N and start a new store")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys
    import warnings

    from slt.cli import UserError
    from slt.task import load_task
    from slt.trajectory import llc_trajectory

    loss_fn, params, data = load_task(args.task)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            traj = llc_trajectory(
                loss_fn, args.checkpoints, data, out=args.out, template=params, step_size=args.step_size,
                nbeta=args.nbeta, localization=args.localization, num_chains=args.chains, num_draws=args.draws,
                num_burnin=args.burnin, steps_between_draws=args.thin, batch_size=args.batch_size,
                sampler=args.sampler, seed=args.seed, checkpoints_per_group=args.group, meta={"task": args.task},
                restart=args.restart, progress=False if args.no_progress else None,
            )
    except OSError as err:
        raise UserError(str(err)) from None
    for w in caught:
        print(f"note: {w.message}", file=sys.stderr)
    print(traj.table())
    print(f"{len(traj)} checkpoints measured, {len(traj.failed)} failed; store: {args.out}")
    return 0
