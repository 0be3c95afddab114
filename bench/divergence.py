"""The divergence-by-magnitude rule on healthy runs (false alarms) and on unstable ones (detection).

    python bench/divergence.py [--no-write]

A chain is divergent once nβ·(L - L(w*)) exceeds ``EXPLOSION_FACTOR`` × (d + nβ·|L(w*)| + its first value)
(:func:`slt.diagnostics.explosion_steps`). For every chain of a set of healthy runs of the benchmarks'
models (the published or calibrated steps) this prints the largest value of nβ·(L - L(w*)) over the run
as a fraction of that limit: a false alarm is a fraction ≥ 1, and the largest fraction is the margin.
Then the same models at steps past their stability limit: how many chains the rule names, at which step,
and how many of them never reached NaN (which the NaN-only rule missed).

Writes a table into docs/diagnostics.md between <!-- bench:divergence:... --> markers.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import slt  # noqa: E402
from bench.common import machine_line, markdown_table, write_section  # noqa: E402
from slt.diagnostics import EXPLOSION_FACTOR  # noqa: E402

warnings.simplefilter("ignore")


def cases():
    """(name, loss_fn, params, data, settings) of healthy runs: each model at its benchmark or published step."""
    from slt.models.dln import make_dln_task
    from slt.models.modular import make_modular_task
    from slt.models.tms import make_tms_task
    from speed import make_model

    out = []
    g = make_modular_task("mlp", seed=0)
    out.append(("grokking MLP at init", g.loss_fn, g.params, g.train_data,
                dict(step_size=3e-3, nbeta=2.0, localization=5.0, batch_size=128, num_draws=2000)))
    for widths, rank in (([10, 10, 10], 3), ([20, 20, 20, 20], 5), ([50, 30, 50], 10)):
        t = make_dln_task(widths, rank, n=100_000, seed=0)
        out.append((f"DLN {widths} (published ε = 5e-7)", t.loss_fn, t.params, t.data,
                    dict(step_size=5e-7, batch_size=500, num_draws=5000)))
    tms = make_tms_task(c=6, n=1000, seed=0)
    out.append(("TMS c = 6 at a random init (not a minimum: λ̂ < 0)", tms.loss_fn, tms.params, tms.data, dict(step_size=1e-3, num_draws=2000)))
    for name in ("mlp_small",):
        m = make_model(name)
        out.append((f"{name} (bench/speed.py)", m.loss_fn, m.params, m.data,
                    dict(step_size=m.step_size, nbeta=m.nbeta, localization=m.localization, batch_size=m.batch_size,
                         num_draws=2000)))
    x = np.random.default_rng(0).normal(size=(1000, 1)).astype(np.float32)
    data = {"x": x, "y": (x * 0.0 + 0.5 * np.random.default_rng(1).normal(size=(1000, 1))).astype(np.float32)}
    out.append(("Lau et al. w1·w2² regression", lambda w, b: jnp.mean((b["y"] - b["x"] * w[0] * w[1] ** 2) ** 2) / (2 * 0.25),
                jnp.zeros(2), data, dict(step_size=5e-4, num_draws=10_000)))
    return out


def fraction_of_limit(r, d: int) -> np.ndarray:
    """Per chain: max over the run of nβ·(L - L(w*)) / the rule's limit."""
    trace = r.nbeta * (np.asarray(r.loss_trace, np.float64) - r.init_loss)
    first = np.maximum(trace[:, 0], 0.0)
    limit = EXPLOSION_FACTOR * (d + r.nbeta * abs(r.init_loss) + first)
    return np.nanmax(trace, axis=1) / limit


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    rows, chains, alarms, worst = [], 0, 0, 0.0
    unstable = []
    for name, loss, params, data, kw in cases():
        d = sum(int(np.size(v)) for v in slt.llc.jax.tree.leaves(params))
        r = slt.estimate_llc(loss, params, data, num_chains=4, seed=0, progress=False, **kw)
        frac = fraction_of_limit(r, d)
        flagged = len(r.diagnostics["divergent_chains"])
        chains += 4
        alarms += flagged
        worst = max(worst, float(np.nanmax(frac)))
        rows.append([name, d, f"{kw['step_size']:g}", f"{r.llc_mean:.4g}", f"{np.nanmax(frac):.2e}", flagged])
        print(rows[-1], flush=True)
        # the same model past its stability limit: 8 and 64 × its step
        for factor in (8.0, 64.0):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                bad = slt.estimate_llc(loss, params, data, num_chains=4, seed=0, progress=False,
                                       **{**kw, "step_size": kw["step_size"] * factor, "num_draws": 500})
            named = bad.diagnostics["divergent_chains"]
            exploded = [f for f in named if "exploded" in f["reason"]]
            unstable.append([name, f"{factor:g}×", len(named), len(exploded),
                             (f"{min(f['step'] for f in named)}–{max(f['step'] for f in named)}" if named else "-"),
                             "no number" if not np.isfinite(bad.llc_mean) else f"{bad.llc_mean:.4g}"])
            print(unstable[-1], flush=True)
    table = markdown_table(["healthy run", "d", "ε", "λ̂", "max nβ·(L − L(w*)) / limit", "chains flagged"], rows)
    table2 = markdown_table(["model", "step × the healthy one", "chains named divergent (of 4)",
                             "of them by magnitude first", "at steps", "λ̂ reported"], unstable)
    text = "\n".join([
        machine_line() + f"; `python bench/divergence.py` ({time.perf_counter() - t0:.0f} s).", "",
        f"**False alarms**: {alarms} of {chains} healthy chains flagged; the largest value any of them reached is "
        f"{worst:.2e} of the limit (a margin of {1 / max(worst, 1e-300):.0f}×).", "", table, "",
        "**Unstable steps** (500 draws): chains named and excluded; a result with no healthy chain is NaN, "
        "never a number.", "", table2,
    ])
    print(text)
    if not args.no_write:
        print("wrote", write_section("diagnostics.md", "divergence", text))


if __name__ == "__main__":
    main()
