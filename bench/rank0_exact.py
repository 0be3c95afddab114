"""The exact λ̂ of the rank-0 [100, 100, 100] deep linear network, against SGLD and Aoyagi's λ.

    python bench/rank0_exact.py [--quick] [--no-write]

At the true parameter W = 0 of a two-layer linear net f(x) = x·W₁·W₂ (W₁ [M, H], W₂ [H, N]), with
x ~ U[-10, 10]^M and y = 0, the population loss is K = c·‖W₁W₂‖²_F with c = (100/3)/N. The tempered
posterior exp(-t·K - γ/2·‖W‖²) can be reduced exactly:

* given W₁ with singular values s_i, the columns of W₂ are Gaussian with precision 2tc·W₁ᵀW₁ + γI, so
  t·E[K | W₁] = N·Σ_i a_i/(2a_i + γ) with a_i = tc·s_i²;
* integrating W₂ out and changing to singular values leaves a density on the min(M, H) values s,
  p(s) ∝ Π_{i<j}|s_i² - s_j²|·Π_i s_i^|M-H|·exp(-γ/2·Σ s_i²)·Π_i (2a_i + γ)^(-N/2).

That 100-dimensional density is sampled with NUTS (numpyro, float64), so t·E[K] is known to a standard
error of about 0.03% at every γ: the exact value the samplers should reproduce (REFERENCE §1: at finite t
it is not λ). tests/test_llc.py checks the same formula on a 2→2→3 net by quadrature against MALA.

The table compares it with Aoyagi's λ, with SGLD as ``step_size="auto"`` runs it, and with SGLD at fixed
steps at γ = 100, and measures the MALA acceptance that the calibration relies on for chains run on two
minibatch sizes. The loss used by SGLD is the n = 1e5 sample's, the exact value the
population's (x's sample covariance differs by O(n^-1/2)). Written to docs/calibration.md between
``<!-- bench:rank0-exact:start -->`` and ``<!-- bench:rank0-exact:end -->``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, markdown_table, write_section  # noqa: E402

WIDTHS = (100, 100, 100)
N_DATA = 100_000
BATCH = 500
T = N_DATA / math.log(N_DATA)  # nβ = n/log n
C = (20.0**2 / 12) / WIDTHS[-1]  # E[x²] = 100/3 per input, mean over the N outputs
AOYAGI = 3750.0


def exact_llc(gamma: float, *, warmup: int, samples: int, chains: int = 2, seed: int = 0) -> tuple[float, float, float]:
    """(t·E[K], its standard error, split R-hat) by NUTS over the singular values of W₁ (module docstring)."""
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS, init_to_value

    from slt import diagnostics as diag

    m, h, n_out = WIDTHS
    k = min(m, h)
    with jax.enable_x64(True):
        pairs = jnp.triu_indices(k, 1)

        def model():
            u = numpyro.sample("u", dist.ImproperUniform(dist.constraints.real, (), (k,)))  # u = log s
            s2 = jnp.exp(2 * u)
            log_p = (jnp.sum(jnp.log(jnp.abs(s2[:, None] - s2[None, :])[pairs])) + (abs(m - h) + 1) * jnp.sum(u)
                     - gamma / 2 * jnp.sum(s2) - n_out / 2 * jnp.sum(jnp.log(2 * T * C * s2 + gamma)))
            numpyro.factor("log_p", log_p)

        init = init_to_value(values={"u": jnp.log(jnp.linspace(0.01, 1.0, k))})
        mcmc = MCMC(NUTS(model, init_strategy=init), num_warmup=warmup, num_samples=samples, num_chains=chains,
                    chain_method="sequential", progress_bar=False)
        mcmc.run(jax.random.PRNGKey(seed))
        a = T * C * np.exp(2 * np.asarray(mcmc.get_samples(group_by_chain=True)["u"]))
    llc = n_out * np.sum(a / (2 * a + gamma), axis=-1)  # [chains, draws]
    return float(llc.mean()), diag.mcse(llc), diag.rhat(llc)


def sgld_estimate(task, gamma: float, step, chains: int, draws: int):
    import slt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return slt.estimate_llc(task.loss_fn, task.params, task.data, step_size=step, localization=gamma,
                                batch_size=BATCH, num_chains=chains, num_draws=draws, num_burnin="auto", seed=0,
                                progress=False)


def acceptance_by_batch(task, gamma: float, step: float, batches, *, steps: int = 6000, chains: int = 2) -> dict:
    """{batch size: (λ̂, MALA acceptance)} of SGLD chains run on minibatches of that size.

    Both over the second half of ``steps`` (:func:`slt.sampling.run_chains`, the acceptance checked on each
    step's own minibatch every 50 steps, as the calibration and the estimate check it).
    """
    import jax.numpy as jnp

    from slt.posterior import Hyperparameters
    from slt.sampling import RunConfig, run_chains

    hp = Hyperparameters(jnp.float32(step), jnp.float32(T), jnp.float32(gamma))
    out = {}
    for size in batches:
        run = run_chains(task.loss_fn, task.params, task.data, hp,
                         config=RunConfig("sgld", chains, steps, size, acceptance_every=50), seed=1)
        late = run.acceptance_steps >= steps // 2
        out[size] = (T * float(run.loss_trace[:, steps // 2:].mean()), float(np.nanmean(run.acceptance[:, late])))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short NUTS runs, two γ")
    parser.add_argument("--no-write", action="store_true", help="print the tables, leave docs/ alone")
    args = parser.parse_args(argv)
    import slt
    from slt.models.dln import make_dln_task

    slt.use_cpu_cores()
    start = time.perf_counter()
    task = make_dln_task(list(WIDTHS), 0, N_DATA, seed=0)
    gammas = [1.0, 100.0] if args.quick else [1.0, 100.0, 300.0, 3000.0]
    warmup, samples = (300, 500) if args.quick else (1000, 2000)
    exact = {g: exact_llc(g, warmup=warmup, samples=samples) for g in gammas}
    for g, (value, se, rhat) in exact.items():
        print(f"γ = {g:g}: exact {value:.1f} ± {se:.1f} (R-hat {rhat:.3f})", flush=True)

    rows = []
    for g in gammas:
        value, se, rhat = exact[g]
        auto = sgld_estimate(task, g, "auto", chains=2, draws=5000)
        rows.append([f"{g:g}", f"{value:.1f} ± {se:.1f}", f"{100 * (value / AOYAGI - 1):+.1f}%", "auto",
                     f"{auto.config.step_size:.3g}", f"{auto.diagnostics['acceptance_mean']:.2f}", f"{auto.llc_mean:.0f}",
                     f"{100 * (auto.llc_mean / value - 1):+.1f}%", f"{100 * (auto.llc_mean / AOYAGI - 1):+.1f}%"])
        print(rows[-1], flush=True)
    fixed = {}
    for step in [1.78e-4, 8.9e-5, 4.45e-5, 2.2e-5]:
        r = sgld_estimate(task, 100.0, step, chains=2, draws=5000)
        fixed[step] = r.llc_mean
        value = exact[100.0][0]
        rows.append(["100", f"{value:.1f} ± {exact[100.0][1]:.1f}", f"{100 * (value / AOYAGI - 1):+.1f}%", "fixed",
                     f"{step:.3g}", f"{r.diagnostics['acceptance_mean']:.2f}", f"{r.llc_mean:.0f}",
                     f"{100 * (r.llc_mean / value - 1):+.1f}%", f"{100 * (r.llc_mean / AOYAGI - 1):+.1f}%"])
        print(rows[-1], flush=True)
    (e1, l1), (e2, l2) = sorted(fixed.items())[:2]
    extrapolated = l1 - (l2 - l1) / (e2 - e1) * e1  # SGLD's bias is O(ε): the line through the two smallest steps
    header = ["γ", "exact t·E[K]", "exact vs λ", "SGLD step", "ε", "MALA acc. (batch 500)", "λ̂", "vs exact", "vs λ"]
    probe = acceptance_by_batch(task, 100.0, 8.9e-5, (BATCH, 5000))
    probe_rows = [[f"{b}", f"{llc:.0f}", f"{100 * (llc / exact[100.0][0] - 1):+.1f}%", f"{acc:.2f}"]
                  for b, (llc, acc) in probe.items()]
    markdown = (
        "### The rank-0 [100, 100, 100] network: exact λ̂ against SGLD (n = 1e5, batch 500, nβ = n/log n)\n\n"
        f"Exact t·E[K] by NUTS over W₁'s singular values (bench/rank0_exact.py); Aoyagi's λ = {AOYAGI:g}. "
        "SGLD: 2 chains × 5,000 draws after `num_burnin=\"auto\"`; \"auto\" rows use `step_size=\"auto\"` (the "
        "step after the burn-in's own halvings).\n\n"
        + markdown_table(header, rows)
        + f"\n\nAt γ = 100 the line through the two smallest fixed steps extrapolates to {extrapolated:.0f} at ε → 0 "
        f"(exact {exact[100.0][0]:.0f}).\n\n"
        "SGLD at ε = 8.9e-5, γ = 100 on two minibatch sizes: 2 chains × 6,000 steps each, λ̂ and the MALA "
        "acceptance (checked on each step's own minibatch, as the calibration checks it) over the second half:\n\n"
        + markdown_table(["batch", "λ̂", "vs exact", "MALA acc."], probe_rows)
        + f"\n\n_{machine_line()}; total {time.perf_counter() - start:.0f} s; `python bench/rank0_exact.py`._"
    )
    print(markdown)
    if not args.no_write:
        print("written to", write_section("calibration.md", "rank0-exact", markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
