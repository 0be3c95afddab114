"""Shared by the benchmarks: write a Markdown table between markers in a docs page, run a worker process."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def run_worker(script: str, python: str, side: str, spec_path: Path, seed: int, *, extra_args=(),
               cache: str = "off", cpu_devices: str = "off") -> dict:
    """Run ``script --worker SIDE --spec SPEC --seed SEED`` in a fresh ``python`` process (compilation cache, XLA
    CPU devices as given; warnings and bars off) and return the JSON of its last stdout line."""
    cmd = [python, str(Path(script).resolve()), "--worker", side, "--spec", str(spec_path), "--seed", str(seed),
           *map(str, extra_args)]
    env = dict(os.environ, SLT_COMPILATION_CACHE=cache, PYTHONWARNINGS="ignore", TQDM_DISABLE="1",
               SLT_CPU_DEVICES=cpu_devices)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT))
    if proc.returncode:
        raise RuntimeError(f"{side} worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine_line() -> str:
    """One line naming the machine and the versions, for every table."""
    import jax

    from slt.cpu import available_cores

    cores = available_cores()
    return (
        f"Machine: {platform.machine()} {cores} CPU cores, {jax.devices()[0].platform}; "
        f"Python {platform.python_version()}, jax {jax.__version__}"
    )


def write_section(page: str, name: str, markdown: str, *, heading: str | None = None) -> Path:
    """Replace the text between ``<!-- bench:NAME:start -->`` and ``<!-- bench:NAME:end -->`` in docs/PAGE.

    The markers are appended if the page lacks them (after ``heading``, if given); nothing else in the page
    is touched.
    """
    path = DOCS / page
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    text = path.read_text() if path.exists() else ""
    block = f"{start}\n{markdown.strip()}\n{end}"
    if start in text and end in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + ("\n\n" if text else "") + (f"{heading}\n\n" if heading else "") + block + "\n"
    path.write_text(text)
    return path


def markdown_table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def devinterp_versions(bench_python: str) -> tuple[str, str] | None:
    """(torch, devinterp) versions in the devinterp environment ``bench_python``; None if it cannot be asked."""
    import subprocess

    try:
        out = subprocess.run([bench_python, "-c", "import torch, importlib.metadata as m; "
                              "print(torch.__version__, m.version('devinterp'))"],
                             capture_output=True, text=True, check=True).stdout.split()
    except Exception:  # noqa: BLE001 (a missing or broken venv: the table says "?")
        return None
    return out[0], out[1]
