"""``slt llc --task MODULE:FACTORY --checkpoints PATH --out FILE``: LLC over your own checkpoints (resumable)."""

from __future__ import annotations

from slt.commands._common import (
    AUTO,
    HelpFormatter,
    UserError,
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

#: ``--components`` values that name components by themselves (:func:`slt.components.resolve_components`).
NAMED_COMPONENTS = ("layers", "heads")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "llc",
        help="estimate the LLC at every checkpoint of a run (resumable)",
        description="Estimate the local learning coefficient at each checkpoint in PATH. FACTORY (a function in an "
        "importable MODULE, or in a .py file: path/to/file.py:FACTORY, which may import the modules beside it) "
        "returns the loss function, the params template and the training data (--task), or a torch module, a "
        "torch loss(module, batch) and the data (--torch-model: the module goes through slt.from_torch, and a "
        "folder of its state_dict saved as safetensors loads as it is); see docs/sweeps.md. Results are appended "
        "to FILE as each checkpoint finishes; rerunning the same command resumes.",
        formatter_class=HelpFormatter,
        epilog=epilog(EXAMPLE),
    )
    one_line_errors(p, "slt llc")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--task", metavar="MODULE:FACTORY",
                        help="task factory returning (loss_fn, params, data) (see docs/sweeps.md)")
    source.add_argument("--torch-model", metavar="MODULE:FACTORY",
                        help="torch factory returning (module, loss, data), loss(module, batch) written in torch")
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
    p.add_argument("--components", nargs="+", default=None, metavar="layers|heads|PATTERN",
                   help="also the weight-refined LLC of each component, in the same program: layers (one per "
                        "top-level subtree), heads (every attention head), or glob patterns over '/'-joined "
                        "parameter paths, each its own component (NAME=PATTERN names it); the whole model is "
                        "always measured too")
    p.add_argument("--num-heads", type=int, default=None, metavar="H",
                   help="heads per attention layer, for --components heads on Hugging Face GPT-2 names (the "
                        "model's config.n_head; this package's transformers need none)")
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


def parse_components(values: list[str] | None):
    """``--components`` as ``llc_trajectory(components=...)``: "layers" / "heads" as they are, patterns as a
    list (each its own component), ``NAME=PATTERN`` as ``{NAME: PATTERN}``."""
    if not values:
        return None
    if len(values) == 1 and values[0] in NAMED_COMPONENTS:
        return values[0]
    named = [v for v in values if v in NAMED_COMPONENTS]
    if named:
        raise UserError(f"--components {named[0]} names every component by itself; give it alone, not with patterns")
    if not any("=" in v for v in values):
        return list(values)
    out = {}
    for v in values:
        name, _, pattern = v.partition("=") if "=" in v else (v, "", v)
        if not name or not pattern:
            raise UserError(f"--components {v!r}: expected NAME=PATTERN or a pattern")
        if name in out:
            raise UserError(f"--components: the name {name!r} is given twice")
        out[name] = pattern
    return out


def run(args) -> int:
    import sys
    import warnings

    from slt.trajectory import llc_trajectory

    for name in ("chains", "draws", "thin"):
        value = getattr(args, name)
        if value < 1:
            raise UserError(f"--{name} must be ≥ 1, got {value}")
    components = parse_components(args.components)
    if args.num_heads is not None:
        if components != "heads":
            raise UserError("--num-heads goes with --components heads")
        if args.num_heads < 1:
            raise UserError(f"--num-heads must be ≥ 1, got {args.num_heads}")
    num_burnin = args.burnin
    if num_burnin is None:
        num_burnin = AUTO if args.step_size == AUTO else 0
    if args.torch_model:
        from slt.task import load_torch_model

        loss_fn, params, data = load_torch_model(args.torch_model)
        meta = {"torch_model": args.torch_model}
    else:
        from slt.task import load_task

        loss_fn, params, data = load_task(args.task)
        meta = {"task": args.task}
    if components == "heads" and args.num_heads is not None:
        from slt.components import heads

        components = heads(params, num_heads=args.num_heads)  # {"L{l}H{h}": mask} by the parameter names
    extra = {} if components is None else {"components": components}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traj = llc_trajectory(
            loss_fn, args.checkpoints, data, out=args.out, template=params, step_size=args.step_size,
            nbeta=args.nbeta, localization=args.localization, num_chains=args.chains, num_draws=args.draws,
            num_burnin=num_burnin, steps_between_draws=args.thin, batch_size=args.batch_size,
            sampler=args.sampler, seed=args.seed, checkpoints_per_group=args.group, meta=meta,
            restart=args.restart, progress=False if args.no_progress else None, **extra,
        )
    for w in caught:
        print(f"note: {w.message}", file=sys.stderr)
    print(traj.table())
    for name, part in (getattr(traj, "components", None) or {}).items():
        print(f"\ncomponent {name}:")
        print(part.table())
    chosen = _chosen_settings(traj, args)
    if chosen:
        print(chosen)
    failures = failed_checkpoints(traj)
    total = len(traj) + len(traj.failed)
    bad = len({step for step, _, _ in failures})
    print(f"{total - bad} of {total} checkpoints measured, {bad} failed; store: {args.out}")
    return report_failures("slt llc", failures, total, args.out)


def _chosen_settings(traj, args) -> str:
    """What ``auto`` and ``scale`` chose (from the store's settings record), one line; "" when nothing was."""
    settings = getattr(traj, "settings", None) or {}
    parts = []
    if args.step_size == AUTO and settings.get("step_size") is not None:
        at = (settings.get("calibration") or {}).get("chosen_at")
        parts.append(f"step size ε = {settings['step_size']:.3g} (calibrated"
                     + (f", chosen at step {at})" if at is not None else ")"))
    if args.localization == SCALE and settings.get("localization") is not None:
        parts.append(f"γ = {settings['localization']:.4g} (scale, from step {settings.get('localization_from_step')})")
    return "settings: " + "; ".join(parts) if parts else ""
