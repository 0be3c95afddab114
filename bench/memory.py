"""Memory stays O(chains × params) whatever the number of draws.

Two measurements:

* peak resident memory (``ru_maxrss``) of a fresh process that runs
  ``run_chains`` for 10², 10³, 10⁴, 10⁵ steps (grokking MLP, 4 chains);
* XLA's own accounting of the compiled program (``memory_analysis``:
  arguments, outputs, temporaries) for the ~1M-parameter MLP at 10² … 10⁶
  steps (compiled, not run).

The only per-step outputs are two scalars per chain (loss, acceptance), so
the growth is 8 bytes × chains × steps.

    python bench/memory.py [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _worker(name: str, steps: int, chains: int, compile_only: bool) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    sys.path.insert(0, str(HERE))
    from speed import make_model

    from slt.posterior import Hyperparameters
    from slt.sampling import RunConfig, chain_keys, ProgramInputs, compiled_program, run_chains

    model = make_model(name, num_chains=chains, num_steps=steps)
    data = jax.tree.map(jnp.asarray, model.data)
    config = RunConfig("sgld", chains, steps, model.batch_size, acceptance_every=max(1, steps // 100))
    hp = Hyperparameters(model.step_size, model.nbeta, model.localization)
    out = {"model": name, "num_params": model.num_params, "steps": steps, "chains": chains}
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if compile_only:
        hyper = Hyperparameters(*(jnp.full((chains,), v, jnp.float32) for v in hp))
        args = ProgramInputs(jax.tree.map(jnp.asarray, model.params), None, data, hyper,
                             jnp.asarray(chain_keys(0, chains, "counter_hash")), np.int32(0), None, None)
        compiled, _ = compiled_program(model.loss_fn, None, config, args)
        m = compiled.memory_analysis()
        out.update(argument_bytes=m.argument_size_in_bytes, output_bytes=m.output_size_in_bytes,
                   temp_bytes=m.temp_size_in_bytes)
    else:
        run = run_chains(model.loss_fn, model.params, data, hp, config=config, seed=0)
        out.update(trace_bytes=int(run.loss_trace.nbytes + run.acceptance.nbytes), sample_seconds=run.sample_seconds)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["rss_before_mb"] = base / 1024
    return out


def _spawn(name: str, steps: int, chains: int, compile_only: bool) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--steps", str(steps), "--chains", str(chains)]
    if compile_only:
        cmd.append("--compile-only")
    env = dict(os.environ, SLT_COMPILATION_CACHE="off", JAX_PLATFORMS="cpu")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--compile-only", action="store_true")
    ap.add_argument("--run-steps", default="100,1000,10000,100000")
    ap.add_argument("--compile-steps", default="100,10000,1000000")
    ap.add_argument("--write", action="store_true", help="append the tables to docs/performance.md's memory section")
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, args.steps, args.chains, args.compile_only)))
        return 0
    runs = [_spawn("grokking_mlp", int(s), 4, False) for s in args.run_steps.split(",")]
    comp = [_spawn("mlp_1m", int(s), 4, True) for s in args.compile_steps.split(",")]
    lines = ["Peak resident memory of a fresh process running `run_chains` (grokking MLP, "
             f"{runs[0]['num_params']:,} params, 4 chains):", "",
             "| steps | peak RSS MB | scalar traces MB | sampling s |", "|---:|---:|---:|---:|"]
    for r in runs:
        lines.append(f"| {r['steps']:,} | {r['peak_rss_mb']:.0f} | {r['trace_bytes'] / 2**20:.2f} | {r['sample_seconds']:.1f} |")
    lines += ["", f"XLA's accounting of the compiled program (MLP, {comp[0]['num_params']:,} params, 4 chains, batch 256):", "",
              "| steps | arguments MB | outputs MB | temporaries MB |", "|---:|---:|---:|---:|"]
    for r in comp:
        lines.append(f"| {r['steps']:,} | {r['argument_bytes'] / 2**20:.1f} | {r['output_bytes'] / 2**20:.2f} | "
                     f"{r['temp_bytes'] / 2**20:.1f} |")
    text = "\n".join(lines)
    print(text)
    if args.write:
        sys.path.insert(0, str(HERE))
        from common import write_section

        write_section("performance.md", "memory", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
