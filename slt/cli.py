"""The ``slt`` command line. Each subcommand lives in ``slt/commands/<name>.py``
and provides ``register(subparsers)`` (adding its parser, with ``func`` set).

User mistakes (bad arguments, missing files) print one clear line and exit 2;
a traceback means a bug.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from slt.validation import SLTInputError

COMMANDS = ("demo", "llc", "detect", "calibrate")


class UserError(Exception):
    """A mistake in what the user asked for: shown as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slt",
        description="Singular learning theory on real training runs: LLC, free energy, phase transitions.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Environment: SLT_CPU_DEVICES=auto|N|off (on a CPU, one JAX device per core so chains run in "
               "parallel; default auto), SLT_COMPILATION_CACHE=DIR|off (persistent XLA cache; default "
               "~/.cache/slt-jax/xla), SLT_CPU_VECTOR_WIDTH=auto|512|256|xla (XLA's CPU vector width; auto: "
               "512 bits on AMD CPUs with AVX-512).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"slt.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"slt.commands.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from slt.compilation_cache import enable_persistent_cache

    from slt.cpu import cpu_compiler_options, use_cpu_cores_from_env

    enable_persistent_cache()  # SLT_COMPILATION_CACHE=dir or "off"; default ~/.cache/slt-jax/xla
    try:
        use_cpu_cores_from_env()  # SLT_CPU_DEVICES=auto|N|off; default one CPU device per core (chains sharded)
        cpu_compiler_options()  # SLT_CPU_VECTOR_WIDTH checked now, not at the first compile
    except (ValueError, RuntimeError) as err:
        print(f"slt: error: {err}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (UserError, SLTInputError, FileNotFoundError) as err:
        print(f"slt {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"slt {args.command}: interrupted; finished results are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":  # `python -m slt.cli`: run the imported module, whose UserError the commands raise
    from slt.cli import main as _main

    sys.exit(_main())
