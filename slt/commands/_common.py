"""What the subcommands share: the help layout, one-line argument errors, the exit statuses, value parsers."""

from __future__ import annotations

import argparse
import math
import sys

# Exit statuses of every ``slt`` command (printed in each --help).
EXIT_OK = 0  # finished; every result is healthy
EXIT_FAILURES = 1  # finished, everything finished is written, but some checkpoints failed
EXIT_USER = 2  # stopped before finishing: a mistake in the arguments or files, or the disk (one line on stderr)
EXIT_INTERRUPTED = 130  # Ctrl-C; finished results are kept (a rerun resumes)

EXIT_STATUS_HELP = """\
exit status:
  0    finished; every checkpoint has a healthy estimate
  1    finished with failures: some checkpoints could not be read or measured
       (a corrupt file, a non-finite loss, every chain diverged); everything
       that finished is written and the failures are listed
  2    stopped by an error in the arguments, the input files or the disk (one
       line on stderr: bad option, missing or unreadable file, a store made with
       other settings or in use by another process, permission denied, disk full)
  130  interrupted (Ctrl-C); finished results are kept and a rerun resumes"""

AUTO = "auto"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown once: appended only where the help text does not already say its default, and never for
    None or False (the help says what no value means). Text with explicit line breaks (the epilog's example and
    exit statuses) is printed as written; one-line descriptions are wrapped."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "(default" in text or "%(default)" in text or action.default is None or action.default is False \
                or action.default == argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)

    def _fill_text(self, text, width, indent):
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def epilog(example: str, *, exit_status: str = EXIT_STATUS_HELP) -> str:
    """The epilog of a subcommand's --help: one example, then the exit statuses."""
    return "example:\n" + "\n".join("  " + line for line in example.strip("\n").splitlines()) + "\n\n" + exit_status


def one_line_errors(parser: argparse.ArgumentParser, prog: str) -> argparse.ArgumentParser:
    """Argument errors print one line (``slt CMD: error: ...``) and exit 2, without the usage block."""

    def error(message):
        print(f"{prog}: error: {message} (see {prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USER)

    parser.error = error
    return parser


def number_or_auto(text: str) -> float | str:
    """``--step-size``: a positive number, or ``auto``."""
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number or "{AUTO}", got {text!r}') from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f'expected a positive number or "{AUTO}", got {text!r}')
    return value


def steps_or_auto(text: str) -> int | str:
    """``--burnin``: a number of steps ≥ 0, or ``auto``."""
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a whole number of steps or "{AUTO}", got {text!r}') from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of steps ≥ 0, got {text!r}")
    return value


def failed_checkpoints(traj) -> list[tuple[int, str]]:
    """(step, why) of every checkpoint of a trajectory without a healthy estimate: failed records (not read,
    non-finite L(w*), every chain diverged) and any measured one with no healthy chain or a NaN λ̂."""
    out = [(int(f["step"]), (f.get("error") or f.get("status") or "failed").splitlines()[0]) for f in traj.failed]
    for step, mean, diag in zip(traj.steps, traj.llc_mean, traj.diagnostics):
        healthy = (diag or {}).get("healthy_chains")
        if healthy == 0:
            out.append((int(step), "every chain diverged"))
        elif mean is None or not math.isfinite(float(mean)):
            out.append((int(step), "λ̂ is NaN"))
    return sorted(out)


def report_failures(prog: str, failures: list[tuple[int, str]], total: int, where: str) -> int:
    """One stderr line per failed checkpoint (a summary after ten) and the exit status: 1 with failures, else 0."""
    if not failures:
        return EXIT_OK
    for step, why in failures[:10]:
        print(f"{prog}: step {step} failed: {why}", file=sys.stderr)
    if len(failures) > 10:
        print(f"{prog}: ... and {len(failures) - 10} more failed checkpoints", file=sys.stderr)
    print(f"{prog}: {len(failures)} of {total} checkpoints failed; the others are in {where} "
          f"(exit status {EXIT_FAILURES})", file=sys.stderr)
    return EXIT_FAILURES
