"""``slt calibrate --task MODULE:FACTORY``: measure the SGLD step size (and check nβ, γ) for LLC estimation."""

from __future__ import annotations

import json
import sys

from slt.commands._common import (
    EXIT_FAILURES,
    EXIT_OK,
    HelpFormatter,
    UserError,
    epilog,
    one_line_errors,
)
from slt.localization import SCALE, parse_localization
from slt.samplers.base import SAMPLERS

EXAMPLE = """\
slt calibrate --task mytasks.py:make_task --nbeta 2 --localization 5 --batch-size 128 --out cal.json"""

EXIT_STATUS = """\
exit status:
  0    a healthy step size was found and is recommended
  1    finished, but failed to find a healthy step: no step size passed every check (the recommendation
       printed is the best there was); --out and --plot are written
  2    an error in the arguments or files (one line on stderr)
  130  interrupted"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "calibrate",
        help="choose the SGLD step size by measurement (acceptance, divergence, burn-in, step halving)",
        description="Sweep the step size ε with short vmapped chains at the params returned by FACTORY and "
        "recommend the largest healthy one: MALA acceptance of the proposals ≥ the target, no divergence, the "
        "λ̂ trace levelled off within the burn-in, and λ̂(ε) ≈ λ̂(ε/2). FACTORY (a function in an importable "
        "MODULE, or in a .py file: path/to/file.py:FACTORY) returns (loss_fn, params, data) or an object with "
        "those attributes. Pass several --nbeta or --localization values to sweep them too. See docs/calibration.md.",
        formatter_class=HelpFormatter,
        epilog=epilog(EXAMPLE, exit_status=EXIT_STATUS),
    )
    one_line_errors(p, "slt calibrate")
    p.add_argument("--task", required=True, metavar="MODULE:FACTORY", help="task factory, e.g. mypkg.tasks:make_task")
    p.add_argument("--nbeta", type=float, nargs="+", default=None, metavar="NBETA",
                   help="nβ; several values sweep it, the first is recommended (default: n/log n)")
    p.add_argument("--localization", type=parse_localization, nargs="+", default=None, metavar="GAMMA",
                   help='localization γ; several values sweep it and warn when λ̂ depends on γ; "scale" for '
                        "0.5·d/‖w*‖², a neighbourhood the size of the weights (default: 1)")
    p.add_argument("--batch-size", type=int, default=None, help="minibatch size (default: full batch)")
    p.add_argument("--sampler", default="sgld", choices=SAMPLERS, help="SGLD-family sampler")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration chains")
    p.add_argument("--target-acceptance", type=float, default=0.9, metavar="A",
                   help="MALA acceptance a healthy step must reach (Furman & Lau 2024)")
    p.add_argument("--steps", type=int, default=300, help="steps per calibration chain (half of them burn-in)")
    p.add_argument("--step-sizes", type=float, nargs="+", default=None, metavar="EPS",
                   help="sweep these step sizes instead of probing for the range")
    p.add_argument("--out", default=None, metavar="FILE.json", help="write the whole calibration as JSON")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="save λ̂ and acceptance against ε")
    p.set_defaults(func=run)


def run(args) -> int:
    from slt.calibration import calibrate
    from slt.task import load_task

    gammas = args.localization or [1.0]
    if SCALE in gammas:
        if len(gammas) > 1:
            raise UserError(f'--localization {SCALE} cannot be mixed with other values; sweep numbers instead')
        gammas = SCALE
    loss_fn, params, data = load_task(args.task)
    cal = calibrate(
        loss_fn, params, data, nbeta=args.nbeta, localization=gammas, batch_size=args.batch_size,
        sampler=args.sampler, seed=args.seed, target_acceptance=args.target_acceptance, num_steps=args.steps,
        step_sizes=args.step_sizes, warn=False,
    )
    print(cal.summary())
    try:
        if args.out:
            with open(args.out, "w") as fh:
                json.dump({"task": args.task, **cal.to_dict()}, fh, indent=1, allow_nan=False)
            print(f"calibration written to {args.out}")
        if args.plot:
            cal.plot(args.plot)
            print(f"plot written to {args.plot}")
    except OSError as err:
        raise UserError(f"cannot write output: {err}") from None
    print(f"use: --step-size {cal.step_size:.3g} --nbeta {cal.nbeta:.6g} --localization {cal.localization:g} "
          f"--burnin {cal.num_burnin}")
    if not any(r.get("healthy") for r in cal.table):
        print(f"slt calibrate: no step size passed every check (exit status {EXIT_FAILURES}); see the warnings above",
              file=sys.stderr)
        return EXIT_FAILURES
    return EXIT_OK
