"""Where the first call's time goes: a 500-draw LLC estimate of the grokking MLP in a fresh process.

    python bench/compile_time.py [--repeats 3] [--no-write]

Each row is a fresh Python process running one ``slt.estimate_llc`` (4 chains × 500 draws, ε = 3e-3,
nβ = 2, γ = 5, batch 128; the job of bench/vs_devinterp.py's grokking row), timed in stages: imports,
building the model, tracing + lowering the sampling program to StableHLO, XLA compilation, sampling, and
the rest of the estimate (diagnostics). Rows: the persistent compilation cache off (a first run), the
cache warm (the same program compiled by an earlier process: what a rerun, the CLI and library users get
by default), and the same without the MALA acceptance checks (``acceptance_checks=0``, as devinterp has
none). Medians over ``--repeats`` processes. Writes a table into docs/benchmarks.md (``compile`` markers).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import machine_line, markdown_table, write_section  # noqa: E402

DEVINTERP_WALL_S = 1.89  # devinterp's whole 4 × 500 estimate in a fresh process (docs/benchmarks.md, vs devinterp)

WORKER = r"""
import json, sys, time
t0 = time.perf_counter()
import jax
import slt
import slt.sampling as S
from slt.models.modular import make_modular_task
t_import = time.perf_counter() - t0
t1 = time.perf_counter()
task = make_modular_task("mlp", p=53)
t_task = time.perf_counter() - t1
stages = {}
lower = S._jitted_program.lower
def timed_lower(*a, **k):
    t = time.perf_counter(); out = lower(*a, **k); stages["trace_lower"] = time.perf_counter() - t; return out
S._jitted_program.lower = timed_lower
compile_lowered = S.compile_lowered
def timed_compile(lowered, options):
    t = time.perf_counter(); out = compile_lowered(lowered, options); stages["xla"] = time.perf_counter() - t; return out
S.compile_lowered = timed_compile
checks = int(sys.argv[1])
t2 = time.perf_counter()
r = slt.estimate_llc(task.loss_fn, task.params, task.train_data, step_size=3e-3, nbeta=2.0, localization=5.0,
                     batch_size=128, num_chains=4, num_draws=500, acceptance_checks=checks, progress=False, seed=0)
total = time.perf_counter() - t2
print(json.dumps({"import": t_import, "task": t_task, "estimate": total, "sample": r.timing["sample_seconds"],
                  "llc": r.llc_mean, **stages}))
"""


def run_worker(checks: int, cache: str) -> dict:
    env = {**os.environ, "SLT_COMPILATION_CACHE": cache, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", WORKER, str(checks)], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_row(runs: list[dict]) -> dict:
    keys = ("import", "task", "trace_lower", "xla", "sample", "estimate")
    return {k: statistics.median(r.get(k, 0.0) for r in runs) for k in keys}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows = []
    for checks, label in ((100, "default (100 MALA acceptance checks)"), (0, "acceptance_checks=0")):
        with tempfile.TemporaryDirectory() as cache:
            cold = [run_worker(checks, "off") for _ in range(args.repeats)]
            run_worker(checks, cache)  # fills the cache
            warm = [run_worker(checks, cache) for _ in range(args.repeats)]
        for runs, how in ((cold, "cache off (first run)"), (warm, "cache warm (a rerun)")):
            m = median_row(runs)
            rest = m["estimate"] - m["trace_lower"] - m["xla"] - m["sample"]
            rows.append([f"{label}, {how}", f"{m['import']:.2f}", f"{m['task']:.2f}", f"{m['trace_lower']:.2f}",
                         f"{m['xla']:.2f}", f"{m['sample']:.2f}", f"{rest:.2f}", f"{m['estimate']:.2f}",
                         f"{DEVINTERP_WALL_S / m['estimate']:.1f}×"])
            print(rows[-1], flush=True)
    table = markdown_table(["run", "import s", "model s", "trace + lower s", "XLA compile s", "sampling s",
                            "rest of the estimate s", "estimate s", "devinterp's 1.89 s ÷ estimate"], rows)
    text = "\n".join([
        machine_line() + f"; `python bench/compile_time.py` (medians of {args.repeats} fresh processes each, "
        f"{time.perf_counter() - t0:.0f} s in all).", "", table, "",
        "The estimate column is the call to `slt.estimate_llc`, from the model's parameters to the result "
        "(imports and model construction apart, as devinterp's 1.89 s excludes `import torch`). "
        "XLA compile is 0 when the warm persistent cache supplies the executable (then its load time is in "
        "that column).",
    ])
    print(text)
    if not args.no_write:
        print("wrote", write_section("benchmarks.md", "compile", text))


if __name__ == "__main__":
    main()
