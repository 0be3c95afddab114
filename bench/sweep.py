"""Speed of an LLC sweep: one checkpoint at a time vs G checkpoints vmapped together.

    python bench/sweep.py [--draws 200] [--reps 3] [--write]

For each model, 16 checkpoints × 4 chains are swept with
``slt.llc_trajectory(..., checkpoints_per_group=G)``. G = 1 is one program per
checkpoint with its 4 chains vmapped (what ``estimate_llc`` in a loop does,
compile cache included); G > 1 runs G·4 chains as one program. Reported:
compile time (once per G), sampling time per checkpoint (wall and process
CPU time, best of ``--reps`` runs: the machine is shared), and the speed-up of
the sampling over G = 1. Every G gives the same numbers (the last column: the
largest difference of a per-chain LLC from G = 1). With ``--write`` the table
goes into docs/sweeps.md.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import slt  # noqa: E402
from bench.common import machine_line, markdown_table, write_section  # noqa: E402
from slt.trajectory import auto_group_size, llc_trajectory  # noqa: E402

warnings.simplefilter("ignore", slt.SLTWarning)


def models():
    from slt.models.dln import make_dln_task
    from slt.models.modular import make_modular_task
    from slt.models.tms import make_tms_task

    tms = make_tms_task(c=6, n=1000, seed=0)
    yield "TMS c=6 h=2", tms.loss_fn, tms.params, tms.data, dict(step_size=1e-3, nbeta=50.0, localization=100.0,
                                                                  batch_size=100)
    dln = make_dln_task([10, 10, 10], rank=3, n=1000, seed=0)
    yield "DLN 10-10-10", dln.loss_fn, dln.params, dln.data, dict(step_size=1e-4, nbeta=50.0, localization=100.0,
                                                                  batch_size=100)
    mod = make_modular_task("mlp", seed=0)
    yield "modular MLP p=53", mod.loss_fn, mod.params, mod.train_data, dict(step_size=3e-3, nbeta=2.0,
                                                                            localization=5.0, batch_size=128)


def checkpoints(params, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [(s, jax.tree.map(lambda x: x + 0.01 * jnp.asarray(rng.normal(size=x.shape), x.dtype), params))
            for s in range(k)]


def run(draws: int, reps: int, n_ckpt: int = 16, chains: int = 4) -> str:
    rows = []
    for name, loss_fn, params, data, hp in models():
        num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
        cks = checkpoints(params, n_ckpt)
        auto = auto_group_size(num_params, chains, n_ckpt)
        groups = sorted({1, 4, 16, auto})
        best = {g: (np.inf, np.inf) for g in groups}
        compile_s, ref, diff = {}, None, {}
        for rep in range(reps):  # interleaved repeats, best of: robust to other load on the machine
            for g in groups:
                c0 = time.process_time()
                traj = llc_trajectory(loss_fn, cks, data, num_chains=chains, num_draws=draws,
                                      checkpoints_per_group=g, acceptance_checks=0, progress=False, **hp)
                cpu = time.process_time() - c0
                sample = sum(t["sample_seconds"] for t in traj.timing)
                if rep == 0:
                    compile_s[g] = sum(t["compile_seconds"] for t in traj.timing)
                    ref = traj.llc_per_chain if ref is None else ref
                    diff[g] = float(np.nanmax(np.abs(traj.llc_per_chain - ref)))
                else:  # cached program: the CPU time is the sampling (+ a little Python)
                    best[g] = (min(best[g][0], sample), min(best[g][1], cpu))
            print(f"{name}: rep {rep + 1}/{reps} done", file=sys.stderr, flush=True)
        for g in groups:
            wall, cpu = best[g]
            rows.append([name, num_params, f"{g}{' (auto)' if g == auto else ''}", f"{compile_s[g]:.1f}",
                         f"{1e3 * wall / n_ckpt:.0f}", f"{1e3 * cpu / n_ckpt:.0f}",
                         f"{best[1][0] / wall:.2f}×", f"{best[1][1] / cpu:.2f}×", f"{diff[g]:.1e}"])
    head = (f"{n_ckpt} checkpoints × {chains} chains × {draws} draws, acceptance checks off. "
            f"Best of {reps - 1} timed runs after the compiling one. {machine_line()}.\n\n")
    table = markdown_table(
        ["model", "params", "G", "compile s", "ms / ckpt (wall)", "ms / ckpt (CPU)", "speed-up (wall)",
         "speed-up (CPU)", "largest λ̂ difference vs G=1"], rows)
    return head + table + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--reps", type=int, default=3, help="runs per setting (the first compiles)")
    ap.add_argument("--write", action="store_true", help="write the table into docs/sweeps.md")
    args = ap.parse_args(argv)
    text = run(args.draws, max(2, args.reps))
    print(text)
    if args.write:
        print(f"wrote {write_section('sweeps.md', 'sweep', text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
