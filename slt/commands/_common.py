"""What the subcommands share: the help layout, one-line argument errors, the exit statuses, value parsers."""

from __future__ import annotations

import argparse
import math
import os
import sys

from slt.validation import SLTInputError

# Exit statuses of every ``slt`` command (printed in each --help).
EXIT_OK = 0  # finished; every result is healthy
EXIT_FAILURES = 1  # finished, everything finished is written, but some checkpoints failed
EXIT_USER = 2  # stopped before finishing: a mistake in the arguments or files, or the disk (one line on stderr)
EXIT_INTERRUPTED = 130  # Ctrl-C; finished results are kept (a rerun resumes)

EXIT_STATUS_HELP = """\
exit status:
  0    finished; every checkpoint has a healthy estimate
  1    finished with failures: some checkpoints could not be read or measured
       (a corrupt file, a non-finite loss, every chain of the model or of a
       component diverged); everything that finished is written and each
       failure is listed on stderr
  2    stopped by an error in the arguments, the input files or the disk (one
       line on stderr: bad option, missing or unreadable file, a store made with
       other settings or in use by another process, permission denied, disk full)
  130  interrupted (Ctrl-C); finished results are kept and a rerun resumes"""

AUTO = "auto"


class UserError(SLTInputError):
    """A mistake in what the user asked for: shown as one line, exit status 2.

    Raised by the commands and by the helpers they call (:mod:`slt.task`, :mod:`slt.demo`); importable as
    ``slt.cli.UserError`` too. An :class:`slt.validation.SLTInputError`, so library callers catch one class."""


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


#: Record statuses of a trajectory store that make a command exit with EXIT_FAILURES.
FAILED, DIVERGED = "failed", "diverged"


def _first_line(text) -> str:
    lines = str(text or "").strip().splitlines()
    return lines[0] if lines else ""


def _classify(entry: dict) -> str:
    """``failed`` or ``diverged`` for a failure entry: its recorded status, else read off its error text."""
    status = entry.get("status")
    if status in (FAILED, DIVERGED):
        return status
    return DIVERGED if "diverged" in str(entry.get("error") or "") else FAILED


def store_failures(path) -> list[tuple[int, str, str]] | None:
    """(step, status, why) of every checkpoint of a trajectory store without a healthy estimate, read from the
    records themselves (the latest per step): status "failed" (not read, non-finite L(w*)) or "diverged" (every
    chain diverged), a component of an "ok" record whose chains all diverged, an "ok" record with a NaN λ̂.
    None when there is no store at ``path``."""
    from slt.store import read_store, records_by_step

    if not path or not os.path.exists(path):
        return None
    _, records = read_store(path)
    out = []
    for step, rec in records_by_step(records).items():
        status = rec.get("status")
        if status != "ok":
            status = status if status in (FAILED, DIVERGED) else FAILED
            default = "every chain diverged" if status == DIVERGED else "failed"
            out.append((int(step), status, _first_line(rec.get("error")) or default))
            continue
        if (rec.get("diagnostics") or {}).get("healthy_chains") == 0:
            out.append((int(step), DIVERGED, "every chain diverged"))
        elif not _finite(rec.get("llc_mean")):
            out.append((int(step), FAILED, "λ̂ is NaN"))
        for name, part in (rec.get("components") or {}).items():
            if ((part or {}).get("diagnostics") or {}).get("healthy_chains") == 0:
                out.append((int(step), DIVERGED, f"component {name}: every chain diverged"))
            elif not _finite((part or {}).get("llc_mean")):
                out.append((int(step), FAILED, f"component {name}: λ̂ is NaN"))
    return out


def failed_checkpoints(traj) -> list[tuple[int, str, str]]:
    """(step, status, why) of every checkpoint of a trajectory without a healthy estimate.

    Read from its store when it has one (:func:`store_failures`: the records' own status, components
    included); otherwise from the trajectory in memory: its failed entries and any measured checkpoint with no
    healthy chain or a NaN λ̂."""
    from_store = store_failures(getattr(traj, "path", None))
    if from_store is not None:
        return sorted(from_store)
    out = [(int(f["step"]), _classify(f), _first_line(f.get("error")) or _classify(f)) for f in traj.failed]
    for step, mean, diag in zip(traj.steps, traj.llc_mean, traj.diagnostics):
        if (diag or {}).get("healthy_chains") == 0:
            out.append((int(step), DIVERGED, "every chain diverged"))
        elif not _finite(mean):
            out.append((int(step), FAILED, "λ̂ is NaN"))
    return sorted(out)


def report_failures(prog: str, failures: list[tuple[int, str, str]], total: int, where: str) -> int:
    """One stderr line per failed or diverged estimate (a summary after ten) and the exit status:
    EXIT_FAILURES with any, else EXIT_OK."""
    if not failures:
        return EXIT_OK
    for step, status, why in failures[:10]:
        print(f"{prog}: {'' if step is None else f'step {step} '}{status}: {why}", file=sys.stderr)
    if len(failures) > 10:
        print(f"{prog}: ... and {len(failures) - 10} more", file=sys.stderr)
    print(f"{prog}: {count_failures(failures)}; everything finished is in {where} (exit status {EXIT_FAILURES})",
          file=sys.stderr)
    return EXIT_FAILURES


def count_failures(failures: list[tuple[int, str, str]]) -> str:
    """``"2 checkpoints failed (1 not measured, 1 diverged)"``: checkpoints are counted (a checkpoint whose
    component diverged counts once, as diverged)."""
    steps = {}
    for step, status, _ in failures:
        steps[step] = FAILED if FAILED in (steps.get(step), status) else status
    n_div = sum(1 for s in steps.values() if s == DIVERGED)
    n_fail = len(steps) - n_div
    parts = [f"{n_fail} not measured"] * bool(n_fail) + [f"{n_div} diverged"] * bool(n_div)
    return f"{len(steps)} checkpoint{'s' * (len(steps) != 1)} failed ({', '.join(parts)})"


def _finite(v) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False
