"""The ``slt`` command line. Each subcommand lives in ``slt/commands/<name>.py``
and provides ``register(subparsers)`` (adding its parser, with ``func`` set).

Exit statuses (``slt.commands._common``, printed in every --help): 0 finished
and healthy; 1 finished with failed checkpoints (everything finished is
written); 2 a mistake in the arguments or files, or a disk/permission error
(one line on stderr, naming the file); 130 interrupted. A traceback means a bug.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from slt.commands._common import (
    EXIT_INTERRUPTED,
    EXIT_STATUS_HELP,
    EXIT_USER,
    HelpFormatter,
    UserError,
)
from slt.validation import SLTInputError

__all__ = ["EXIT_STATUS_HELP", "UserError", "build_parser", "main"]

COMMANDS = ("demo", "llc", "detect", "calibrate")


EPILOG = f"""\
example:
  slt demo grokking --out runs/grok --quick     # train, measure, detect, report
  slt COMMAND --help                            # each command's options, with an example

environment:
  SLT_CPU_DEVICES=auto|N|off        on a CPU, one JAX device per core so chains run in parallel (default auto)
  SLT_COMPILATION_CACHE=DIR|off     persistent XLA cache (default ~/.cache/slt-jax/xla)
  SLT_CPU_VECTOR_WIDTH=auto|512|256|xla
                                    XLA's CPU vector width (auto: 512 bits on AMD CPUs with AVX-512)

{EXIT_STATUS_HELP}"""


def os_error_line(err: OSError) -> str:
    """One line for a disk or permission error, naming the file: ``PATH: cannot write: No space left on device``."""
    what = err.strerror or str(err)
    files = [os.fspath(f) for f in (err.filename, getattr(err, "filename2", None)) if f]
    return f"{' -> '.join(files)}: {what}" if files else what


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slt",
        description="Singular learning theory on real training runs: LLC, free energy, phase transitions.",
        formatter_class=HelpFormatter,
        epilog=EPILOG,
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
        return EXIT_USER
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER
    try:
        return int(args.func(args) or 0)
    except SLTInputError as err:  # UserError and StoreError (disk, permissions, lock) are SLTInputErrors
        print(f"slt {args.command}: error: {_one_line(str(err))}", file=sys.stderr)
        return EXIT_USER
    except OSError as err:  # missing file, read-only directory, full disk: one line naming the file
        print(f"slt {args.command}: error: {_one_line(os_error_line(err))}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print(f"slt {args.command}: interrupted; finished results are kept (rerun to resume)", file=sys.stderr)
        return EXIT_INTERRUPTED


def _one_line(text: str) -> str:
    return " ".join(text.split("\n")).strip()


if __name__ == "__main__":  # `python -m slt.cli`
    sys.exit(main())
