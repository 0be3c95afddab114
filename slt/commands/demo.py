"""``slt demo grokking|induction --out DIR``: train, measure the LLC over training, detect transitions, report."""

from __future__ import annotations

import inspect
import math

from slt.commands._common import (
    FAILED,
    HelpFormatter,
    UserError,
    epilog,
    number_or_auto,
    one_line_errors,
    report_failures,
    steps_or_auto,
)

#: Wall-clock time of ``slt demo grokking --quick`` as shown in --help: the whole run, training and compilation
#: included, fresh compilation cache. Measured with `time slt demo grokking --quick --out /tmp/q` on 2 CPU cores
#: shared with other jobs: 138 s (report.json timing.total_seconds_this_run; another run 94 s; the settings then:
#: calibrated ε, automatic burn-in, 4 chains × 1000 draws, per-layer LLCs, 22 checkpoints; the earlier fixed-ε
#: settings, 2 chains × 500 draws, took 16 s). Re-measure when the demo changes.
QUICK_TIME = "about 2.5 minutes on 2 CPU cores"
#: ``slt demo induction --quick`` and the full run, the same way (bench/induction.py, seeds 0-2, idle 2 cores):
#: quick 37-53 s, full 121-128 s (report.json timing.total_seconds_this_run). Re-measure when the demo changes.
INDUCTION_QUICK_TIME = "under a minute"
INDUCTION_TIME = "about 2 minutes"

#: Every wall-clock time quoted in ``slt demo --help``: each a measured constant (tests/test_cli.py checks that the
#: help quotes no other time).
MEASURED_TIMES = (QUICK_TIME, INDUCTION_QUICK_TIME, INDUCTION_TIME)

DEMOS = ("grokking", "induction")
PROTOCOLS = ("converged", "published")

EXAMPLE = """slt demo grokking --out runs/grok --quick     # then open runs/grok/report.md"""

#: options of the grokking demo only (dest, flag): refused for the induction demo rather than ignored
GROKKING_ONLY = (("chains", "--chains"), ("draws", "--draws"), ("step_size", "--step-size"), ("burnin", "--burnin"),
                 ("protocol", "--protocol"), ("restart", "--restart"))


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run a built-in demonstration end to end (grokking, induction)",
        description="grokking: train the modular-addition MLP (p=53, train fraction 0.5), estimate the LLC (and "
        "each layer's) at every checkpoint, detect phase transitions, and write DIR/report.json, DIR/report.md "
        "and DIR/llc.png. induction: train a two-layer attention-only transformer on repeated-token sequences, "
        "measure the whole model's and every head's weight-refined LLC over the checkpoints, detect transitions "
        "per component beside the heads' prefix-matching and previous-token scores, and write DIR/report.json, "
        "DIR/report.md and plots (see docs/induction.md). Rerunning the same command resumes.",
        formatter_class=HelpFormatter,
        epilog=epilog(EXAMPLE),
    )
    one_line_errors(p, "slt demo")
    p.add_argument("name", choices=DEMOS, help="which demo")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created; reused to resume)")
    p.add_argument("--quick", action="store_true", help=f"fewer checkpoints (grokking: {QUICK_TIME}; induction: "
                   f"{INDUCTION_QUICK_TIME}, a preview: the full run, {INDUCTION_TIME}, is the one validated)")
    p.add_argument("--tiny", action="store_true",
                   help="seconds-long CI setting (grokking: p=23, 600 steps, no grokking); also env SLT_DEMO_TINY=1")
    p.add_argument("--seed", type=int, default=0, help="model initialisation, data and sampler seed")
    p.add_argument("--chains", type=int, default=None, metavar="K",
                   help="grokking: SGLD chains per checkpoint (default: by mode)")
    p.add_argument("--draws", type=int, default=None, metavar="D", help="grokking: draws per chain (default: by mode)")
    p.add_argument("--step-size", type=number_or_auto, default=None, metavar="EPS|auto",
                   help="grokking: SGLD step size ε, or auto (calibrated, one ε for every checkpoint) (default: "
                        "auto; 3e-3 with --protocol published or --tiny)")
    p.add_argument("--burnin", type=steps_or_auto, default=None, metavar="STEPS|auto",
                   help="grokking: burn-in steps per chain, or auto (until λ̂ has levelled off) (default: auto; 0 "
                        "with --protocol published or --tiny)")
    p.add_argument("--protocol", choices=PROTOCOLS, default=None,
                   help="grokking: converged: calibrated ε, automatic burn-in, enough draws; published: the short "
                        "protocol of the literature (ε = 3e-3, no burn-in, 500 draws; its chains have not converged, "
                        "and the report says so) (default: converged)")
    p.add_argument("--restart", action="store_true",
                   help="grokking: if DIR holds a run with other settings, replace it (the old LLC store is kept as "
                        "llc.jsonl.N; refused while another process writes to it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.name == "induction":
        return run_induction(args)
    return run_grokking(args)


def run_grokking(args) -> int:
    import os

    from slt.commands._common import store_failures
    from slt.demo import run_grokking_demo

    for name in ("chains", "draws"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise UserError(f"--{name} must be ≥ 1, got {v}")
    # sampler options only when given (None: the mode's own default), and only those this demo knows
    accepted = inspect.signature(run_grokking_demo).parameters
    extra = {}
    given = {"step_size": args.step_size, "num_burnin": args.burnin, "protocol": args.protocol}
    for kwarg, value in given.items():
        if value is None:
            continue
        if kwarg not in accepted:
            flag = {"num_burnin": "--burnin"}.get(kwarg, "--" + kwarg.replace("_", "-"))
            raise UserError(f"{flag} is not supported by this version of the demo")
        extra[kwarg] = value
    if "protocol" in accepted:
        extra.setdefault("protocol", PROTOCOLS[0])
    report = run_grokking_demo(
        args.out, quick=args.quick, seed=args.seed, tiny=True if args.tiny else None, num_chains=args.chains,
        num_draws=args.draws, restart=args.restart, progress=False if args.no_progress else None, **extra,
    )
    peak = report.get("llc_peak") or {}
    print(f"train acc ≥ 0.95 at step {report.get('memorization_step')}, test acc ≥ 0.95 at step "
          f"{report.get('grokking_step')}; LLC peak {_num(peak.get('llc_mean')):.1f} at step {peak.get('step')}, "
          f"final {_num((report.get('llc_final') or {}).get('llc_mean')):.1f}")
    for t in report.get("transitions_text") or []:
        print("  " + t)
    print(f"report: {args.out}/report.md")
    steps = [int(s) for s in report.get("steps") or []] + [int(f["step"]) for f in report.get("failed") or []]
    # the store's own record statuses (failed / diverged, the layers' estimates too), this run's steps only;
    # without a store (or without steps in it), what the report says
    failures = store_failures(os.path.join(os.fspath(args.out), "llc.jsonl"))
    failures = [f for f in failures or [] if f[0] in set(steps)]
    failures += _report_failures(report, {f[0] for f in failures})
    return report_failures("slt demo", sorted(failures), len(set(steps)), f"{args.out}/report.md")


def _report_failures(report: dict, known: set[int]) -> list[tuple[int, str, str]]:
    """(step, status, why) from a grokking report: its failed checkpoints and any NaN λ̂ (steps in ``known``,
    already read from the store, are left out)."""
    from slt.commands._common import DIVERGED

    out = []
    for f in report.get("failed") or []:
        error = str(f.get("error") or f.get("status") or FAILED)
        status = f.get("status") if f.get("status") in (FAILED, DIVERGED) else \
            DIVERGED if "diverged" in error else FAILED
        out.append((int(f["step"]), status, error.splitlines()[0]))
    out += [(int(s), DIVERGED, "λ̂ is NaN (every chain diverged)")
            for s, v in zip(report.get("steps") or [], report.get("llc_mean") or []) if not _finite(v)]
    return [f for f in out if f[0] not in known]


def run_induction(args) -> int:
    refused = [flag for dest, flag in GROKKING_ONLY if getattr(args, dest) not in (None, False)]
    if refused:
        raise UserError(f"{refused[0]} is an option of the grokking demo; the induction demo takes --quick, "
                        "--tiny, --seed and --no-progress")
    try:
        from slt.induction_demo import run_induction_demo
    except ModuleNotFoundError as err:
        if err.name != "slt.induction_demo":
            raise
        raise UserError("this installation of slt has no induction demo (slt.induction_demo is missing)") from None
    report = run_induction_demo(args.out, quick=args.quick, seed=args.seed,
                                progress=False if args.no_progress else None, tiny=True if args.tiny else None)
    heads = report.get("induction_heads") or []
    model = report.get("model") or {}
    print(f"induction heads (final prefix-matching ≥ 0.5): {', '.join(map(str, heads)) or 'none'}")
    print(f"whole model: {len(model.get('transitions') or [])} transition(s)")
    for name, comp in (report.get("components") or {}).items():
        marks = ", ".join(f"{'rise' if t.get('direction', 0) > 0 else 'fall'} at {t.get('step'):.4g}"
                          if isinstance(t.get("step"), (int, float)) else str(t.get("kind", "transition"))
                          for t in comp.get("transitions") or [])
        print(f"  {name}: {marks or 'no transitions'}")
    print(f"report: {args.out}/report.md")
    failures = [_induction_failure(f) for f in report.get("failed") or []]
    total = len(model.get("steps") or []) or len(failures)
    return report_failures("slt demo", sorted(failures, key=lambda f: (f[0] is None, f[0] or 0)), total,
                           f"{args.out}/report.md")


def _induction_failure(entry) -> tuple[int | None, str, str]:
    """(step, status, why) of one entry of the induction report's "failed" list (a record or a line of text)."""
    if not isinstance(entry, dict):
        return None, FAILED, str(entry).splitlines()[0] if str(entry) else FAILED
    why = str(entry.get("error") or entry.get("status") or FAILED).splitlines()[0]
    if entry.get("component"):
        why = f"{entry['component']}: {why}"
    step = entry.get("step")
    status = entry.get("status") if entry.get("status") in (FAILED, "diverged") else \
        "diverged" if "diverged" in why else FAILED
    return (int(step) if isinstance(step, (int, float)) else None), status, why


def _finite(v) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _num(v) -> float:
    return float(v) if _finite(v) else float("nan")
