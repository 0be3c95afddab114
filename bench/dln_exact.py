"""The exact finite-t λ̂ of the accuracy benchmark's deep linear networks, by NUTS on the full-batch loss.

    python bench/dln_exact.py [--quick] [--no-write] [--only 0 4 ...]

With no-noise data the full-batch loss of a deep linear network is a quadratic form in its end-to-end
matrix W = W₁⋯W_L (slt.models.dln):

    L(w) = (1/d_out)·tr((W - W*)ᵀ S (W - W*)),   S = XᵀX/n   (d_in × d_in),

so L and its gradient cost a few products of layer-sized matrices, whatever n is. The tempered posterior
exp(-t·L(w) - γ/2·‖w - w*‖²), t = nβ = n/log n, is then sampled over all parameters with NUTS (numpyro,
float64): Metropolis-corrected, no minibatch noise, long trajectories that cross the flat directions
ballistically where Langevin steps diffuse. t·E[L] is the value a correct sampler gives at this finite t
(REFERENCE §1: at finite t it is not λ), with S from the same n = 1e5 sample SGLD's minibatches come from.

Checks, in the table: the same NUTS on the rank-0 [100, 100, 100] network with S = E[xxᵀ] must match
bench/rank0_exact.py's exact reduction to singular values; several chains from w* must agree (split
R-hat), and the first and second halves of the draws must agree (a trace still climbing would not).

Written to docs/calibration.md between ``<!-- bench:dln-exact:start -->`` and ``<!-- bench:dln-exact:end -->``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import DLN_SHAPES  # noqa: E402  (the accuracy benchmark's networks)
from common import machine_line, markdown_table, write_section  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "dln_exact.json"  # read by bench/calibration.py for its "vs exact" column
N_DATA = 100_000
MAX_TREE_DEPTH = 9
T = N_DATA / math.log(N_DATA)  # nβ = n/log n


def full_batch_tk(widths, rank: int, *, population: bool = False, seed: int = 0):
    """(w* flattened, t·L as a function of the flat parameters, Aoyagi's λ) for make_dln_task(widths, rank).

    ``population``: S = E[xxᵀ] = (100/3)·I for x ~ U[-10, 10] instead of the sample's XᵀX/n.
    """
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    from slt.models.dln import make_dln_task, product

    task = make_dln_task(list(widths), rank, N_DATA, seed=seed)
    w_star, unravel = ravel_pytree(jax.tree.map(lambda k: jnp.asarray(k, jnp.float64), task.params))
    if population:
        S = np.eye(widths[0]) * 20.0**2 / 12
    else:
        x = np.asarray(task.data["x"], np.float64)
        S = x.T @ x / len(x)
    S = jnp.asarray(S)
    target = product(unravel(w_star))

    def tk(flat):
        D = product(unravel(flat)) - target
        return T * jnp.sum(D * (S @ D)) / widths[-1]

    return w_star, tk, task.meta["lam"]


def exact_llc(widths, rank: int, gamma: float = 1.0, *, warmup: int, samples: int, chains: int = 2,
              max_tree_depth: int = MAX_TREE_DEPTH, population: bool = False, seed: int = 0) -> dict:
    """t·E[L] under exp(-t·L - γ/2‖w - w*‖²) by NUTS from w* (module docstring), with its checks."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer import MCMC, NUTS

    from slt import diagnostics as diag

    start = time.perf_counter()
    with jax.enable_x64(True):
        w_star, tk, lam = full_batch_tk(widths, rank, population=population)

        def potential(flat):
            return tk(flat) + 0.5 * gamma * jnp.sum((flat - w_star) ** 2)

        mcmc = MCMC(NUTS(potential_fn=potential, max_tree_depth=max_tree_depth), num_warmup=warmup,
                    num_samples=samples, num_chains=chains, chain_method="sequential", progress_bar=False)
        mcmc.run(jax.random.PRNGKey(seed), init_params=jnp.broadcast_to(w_star, (chains, w_star.size)),
                 extra_fields=("num_steps", "diverging"))
        draws = mcmc.get_samples(group_by_chain=True)
        values = np.asarray(jax.vmap(jax.vmap(tk))(draws))  # [chains, samples]
        extra = mcmc.get_extra_fields()
    _, *halves = diag.levelled_off(values)  # the means of the first and second half of the draws
    return {
        "value": float(values.mean()),
        "se": diag.mcse(values),
        "rhat": diag.rhat(values),
        "ess": diag.ess(values),
        "halves": halves,
        "lam": lam,
        "leapfrog_per_draw": float(np.mean(extra["num_steps"])),
        "divergences": int(np.sum(extra["diverging"])),
        "seconds": time.perf_counter() - start,
    }


def result_key(widths, rank: int) -> str:
    """The network's key in bench/dln_exact.json."""
    return f"{list(widths)} r={rank}"


def load_results() -> dict:
    """{"[widths] r=rank": {"value", "se", ...}} from the last full run (empty if none)."""
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def row(name: str, d: int, lam: float, r: dict, reference: str = "") -> list[str]:
    first, second = r["halves"]
    return [name, str(d), f"{lam:.5g}", f"{r['value']:.5g} ± {r['se']:.2g}", f"{100 * (r['value'] / lam - 1):+.1f}%",
            f"{100 * (second / first - 1):+.2f}%", f"{r['rhat']:.3f}", f"{r['ess']:.0f}",
            f"{r['leapfrog_per_draw']:.0f}", str(r["divergences"]), reference, f"{r['seconds']:.0f}"]


def section(table: str, warmup: int, samples: int, seconds: float) -> str:
    """The docs section around the table."""
    return "\n".join([
        f"γ = 1, nβ = n/log n, n = 1e5. NUTS (numpyro, float64) over all parameters of the tempered posterior with "
        f"the closed-form full-batch loss, {warmup} warm-up and {samples} draws per chain, 2 chains from w\\*, at "
        f"most {2 ** MAX_TREE_DEPTH - 1} leapfrog steps per draw. This is the value a correct sampler gives at this "
        "t; \"vs λ\" is its gap to Aoyagi's λ, which SGLD would show too if it were exact. The first row checks the "
        "method against the exact reduction of bench/rank0_exact.py.",
        "",
        table,
        "",
        f"_{machine_line()}; total {seconds:.0f} s; `python bench/dln_exact.py`._",
    ])


HEADER = ["network", "d", "Aoyagi λ", "exact t·E[L] (NUTS)", "vs λ", "2nd half vs 1st", "R-hat", "ESS",
          "leapfrog steps / draw", "divergences", "check", "s"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs on the first networks")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave docs/ alone")
    parser.add_argument("--only", type=int, nargs="*", help="indices into the accuracy benchmark's networks")
    args = parser.parse_args(argv)
    import slt

    slt.use_cpu_cores()
    start = time.perf_counter()
    warmup, samples = (200, 400) if args.quick else (500, 1000)
    rows = []
    if args.only is None:  # the NUTS over all parameters against the exact reduction of the rank-0 network
        from rank0_exact import exact_llc as reduction

        value, se, _ = reduction(1.0, warmup=warmup, samples=samples)
        r = exact_llc([100, 100, 100], 0, warmup=warmup, samples=samples, population=True)
        rows.append(row("[100, 100, 100] r=0, S = E[xxᵀ]", 20_000, 3750.0, r,
                        f"reduction {value:.5g} ± {se:.2g}: z = {(r['value'] - value) / math.hypot(r['se'], se):+.1f}"))
        print(rows[-1], flush=True)
    shapes = [DLN_SHAPES[i] for i in args.only] if args.only else DLN_SHAPES[:2 if args.quick else 6]
    for widths, rank in shapes:
        r = exact_llc(widths, rank, warmup=warmup, samples=samples)
        d = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
        rows.append(row(f"{widths} r={rank}", d, r["lam"], r))
        print(rows[-1], flush=True)
        if not args.quick:  # kept as it goes: a long run never loses finished networks
            saved = load_results()
            saved[result_key(widths, rank)] = {k: r[k] for k in ("value", "se", "rhat", "ess", "lam")}
            RESULTS.write_text(json.dumps(saved, indent=1) + "\n")
    table = markdown_table(HEADER, rows)
    print(table)
    if not args.no_write and not args.quick:
        write_section("calibration.md", "dln-exact", section(table, warmup, samples, time.perf_counter() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
