"""Accuracy of λ̂: against exact finite-t values, Aoyagi's DLN λ, and TMS k-gons.

    python bench/accuracy.py [--sections crossing,regression,dln,dln-auto,dln-published,tms] [--quick]

Prints Markdown tables and writes them into docs/benchmarks.md (section
``accuracy``). Targets (issue 2): exact-value cases within 3%; DLN median
relative error against Aoyagi's λ ≤ 5% with the published protocol
(Furman & Lau arXiv 2402.03698: no-noise data, x ~ U[-10, 10], γ = 1,
batch 500, nβ = n/log n, n = 1e5, ε = 5e-7, 10k steps).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from scipy import integrate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import slt  # noqa: E402
from slt.burnin import CAP_PER_DRAW_STEP  # noqa: E402
from bench.common import machine_line, markdown_table, write_section  # noqa: E402
from tests.exact import normal_crossing_w1sq_w2sq  # noqa: E402

warnings.simplefilter("ignore", slt.SLTWarning)


def se_of(result) -> float:
    return max(result.diagnostics["mcse"], result.llc_std / np.sqrt(len(result.llc_per_chain)))


# --- 1. K = w1²w2², data-free, exact by quadrature -------------------------------------------------------


def crossing_loss(w, batch):
    return (w[0] * w[1]) ** 2 + 0.0 * jnp.sum(batch)


def section_crossing(quick: bool):
    rows = []
    for t in [1e2, 1e3, 1e4]:
        exact = normal_crossing_w1sq_w2sq(t)
        for sampler in ["sgld", "sghmc", "mala"]:
            step = {"sgld": 1e-2 / t, "sghmc": 1e-2 / t, "mala": 0.3 / t}[sampler]
            draws = int((20_000 if quick else 60_000) * (t / 100) ** 0.5)
            burnin, chains = draws // 10, 64
            if sampler == "sgld" and not quick:
                # SGLD crosses between the axes only by diffusing along them, where nothing but the prior
                # (γ = 1) pulls: relaxation time 2/(εγ) = 200·t steps. Burn in 2 of them, draw ≥ 1.5 more.
                burnin, draws = round(4 / step), round(min(max(300_000, 6 / step), 4_000_000))
                chains = 64 if draws < 2_000_000 else 32  # the loss trace is [chains, steps] in memory
            start = time.perf_counter()
            r = slt.estimate_llc(crossing_loss, jnp.zeros(2), jnp.zeros((1, 1)), step_size=step, nbeta=t,
                                 num_chains=chains, num_draws=draws, num_burnin=burnin, sampler=sampler)
            rows.append([f"w1²w2², t={t:g}", sampler, f"{step:.1e}", f"{chains}×({burnin}+{draws})", exact, 0.5,
                         r.llc_mean, se_of(r),
                         f"{100 * (r.llc_mean - exact) / exact:+.1f}%", f"{time.perf_counter() - start:.1f}"])
            print(rows[-1], flush=True)
    header = ["case", "sampler", "ε", "chains×(burn-in+draws)", "exact t·E[K]", "λ", "λ̂", "± se", "vs exact", "s"]
    return ("### Normal crossing K = w1²w2² (λ = 1/2, m = 2), N(0, I) prior\n\n"
            "SGLD at ε = 1e-2/t moves between the two axes of the crossing only by diffusing along them, where "
            "only the prior pulls: its relaxation time is 2/(εγ) = 200·t steps, so its chains burn in for two "
            "of those and draw for at least 1.5 more. SGHMC's momentum and MALA's larger steps cross faster.\n\n"
            + markdown_table(header, rows))


# --- 2. Lau et al. normal-crossing regressions, exact per dataset ------------------------------------------


def regression_exact(x, y, k: int, sigma: float, t: float) -> float:
    """t·(E[L_n] - L_n(0)) for y = x·w1·w2^k + N(0, σ²), prior N(0, I), exactly.

    L_n(u) = A - 2B·u + C·u² with u = w1·w2^k; for fixed w2 the w1-integral is
    Gaussian (precision a = 1 + 2tC·s², linear term b = 2tB·s, s = w2^k), which
    leaves a 1-D quadrature over w2.
    """
    A, B, C = (np.mean(y * y), np.mean(x * y), np.mean(x * x))
    A, B, C = A / (2 * sigma**2), B / (2 * sigma**2), C / (2 * sigma**2)
    phi = lambda v: np.exp(-v * v / 2) / np.sqrt(2 * np.pi)

    def parts(v):
        s = v**k
        a = 1 + 2 * t * C * s * s
        b = 2 * t * B * s
        mu = b / a
        weight = a**-0.5 * np.exp(b * b / (2 * a)) * phi(v)
        mean_l = -2 * B * s * mu + C * s * s * (1 / a + mu * mu)  # E[L - A | w2]
        return weight, weight * mean_l

    den = integrate.quad(lambda v: parts(v)[0], -8, 8, points=[0], limit=400, epsabs=1e-14)[0]
    num = integrate.quad(lambda v: parts(v)[1], -8, 8, points=[0], limit=400, epsabs=1e-14)[0]
    return t * num / den


REGRESSION_CHAINS = 32  # per dataset: the ± (across 10 datasets) must resolve a 3% target on the slow w1·w2² row


def section_regression(quick: bool):
    global STEPS
    STEPS = {("sgld", 5e-4): 10_000, ("sgld", 1e-4): 30_000 if quick else 300_000,
             ("mala", 2e-3): 10_000 if quick else 30_000}
    n, sigma = 1000, 0.5
    t = n / np.log(n)
    published = {(1, 3): (0.17, "0.12 (0.04)", "0.11 (0.07)", 0.121), (1, 2): (0.25, "0.19 (0.11)", "0.14 (0.12)", 0.180),
                 (0, 1): (0.5, "0.41 (0.12)", "0.45 (0.11)", 0.423)}
    rows = []
    datasets = 5 if quick else 10
    for (k1, k2), (lam, mcmc, sgld_pub, exact_pub) in published.items():
        # model y = x·w1^k1·w2^k2; w1^0 means the one-parameter model y = x·w2 (λ = 1/2)
        def loss(w, batch, k1=k1, k2=k2):
            u = (w[0] ** k1) * (w[1] ** k2)
            return jnp.mean((batch["y"] - batch["x"] * u) ** 2) / (2 * sigma**2)

        exacts, estimates = [], {eps: [] for eps in STEPS}
        start = time.perf_counter()
        for seed in range(datasets):
            rng = np.random.default_rng(seed)
            x = rng.normal(size=n)
            y = sigma * rng.normal(size=n)  # the true function is 0
            data = {"x": x.astype(np.float32), "y": y.astype(np.float32)}
            if k1 == 0:  # y = x·w2 + noise: regular in w2, w1 only sees the prior
                B, C = np.mean(x * y) / (2 * sigma**2), np.mean(x * x) / (2 * sigma**2)
                prec = 1 + 2 * t * C
                mu = 2 * t * B / prec
                exacts.append(t * (-2 * B * mu + C * (1 / prec + mu * mu)))
            else:
                exacts.append(regression_exact(x, y, k2 if k1 == 1 else None, sigma, t))
            for (sampler, eps), draws in STEPS.items():
                # the published 10k-step run keeps its 1k burn-in; the others burn in for 2 relaxation times
                # 2/(εγ) of the directions that only the prior holds (see the crossing section)
                burnin = draws // 10 if (sampler, eps) == ("sgld", 5e-4) else max(draws // 10, round(4 / eps))
                r = slt.estimate_llc(loss, jnp.zeros(2), data, step_size=eps, num_chains=REGRESSION_CHAINS, num_draws=draws,
                                     num_burnin=burnin, seed=seed, sampler=sampler)
                estimates[sampler, eps].append(r.llc_mean)
        ex = np.mean(exacts)
        name = {(1, 3): "w1·w2³", (1, 2): "w1·w2²", (0, 1): "w2"}[(k1, k2)]
        for (sampler, eps), draws in STEPS.items():
            est = np.mean(estimates[sampler, eps])
            se = np.std(np.array(estimates[sampler, eps]) - np.array(exacts), ddof=1) / np.sqrt(datasets)
            rows.append([name, lam, exact_pub, ex, f"{sampler} {eps:g}, {draws // 1000}k", est, se,
                         f"{100 * (est - ex) / ex:+.1f}%", mcmc, sgld_pub])
            print(rows[-1], flush=True)
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
    header = ["model", "λ", "published exact (100 sets)", f"exact, mean of {datasets} sets", "sampler ε, steps", "slt λ̂",
              "± se", "vs exact", "Lau MCMC", "Lau SGLD"]
    return (f"### Normal-crossing regressions of Lau et al. (n = 1000, σ = 0.5, full batch, {REGRESSION_CHAINS} chains)\n\n"
            "Exact values per dataset by quadrature (bench/accuracy.py `regression_exact`); the published columns "
            "are mean (sd) over datasets. At the published ε = 5e-4 SGLD carries O(ε) discretisation bias (εa/4 ≈ 7% "
            "in the variance of the regular direction; the published SGLD column shows the same); ε = 1e-4 "
            "with longer chains, and MALA, remove it. The ε = 1e-4 chains burn in for 4/ε steps, two relaxation "
            "times of the directions that only the N(0, I) prior holds.\n\n" + markdown_table(header, rows))


# --- 3. Deep linear networks against Aoyagi's λ ---------------------------------------------------------------

DLN_SHAPES = [  # widths input → output, rank
    ([10, 10, 10], 3),
    ([20, 20, 20, 20], 5),
    ([50, 30, 50], 10),
    ([100, 50, 100], 10),
    ([60, 60, 60, 60, 60], 20),
    ([100, 100, 100], 0),
    ([300, 150, 300], 50),
    ([320, 160, 320], 50),  # d = 102,400: the top of the 1e2..1e5 range
]


def dln_chains_and_draws(d: int, quick: bool) -> tuple[int, int]:
    """Chains × draws for a DLN of d parameters: 4 × 10k, or 2 × 5k from 2e4 parameters (3k draws with quick)."""
    chains, draws = (4, 10_000) if d < 20_000 else (2, 5_000)
    return chains, (3_000 if quick else draws)


def section_dln(quick: bool, *, auto_burnin: bool = False, construction: str = "every_layer"):
    """DLNs at the published ε = 5e-7; burn-in fixed (= draws) or, with ``auto_burnin``, until λ̂ levels off.

    ``construction``: the true parameter (``slt.models.dln.make_target_kernels``): "every_layer" (every
    factor rank r, the most singular point) or "one_layer" (the published experiments' kind of point)."""
    from slt.models.dln import make_dln_task

    rows, errors = [], []
    n = 100_000
    shapes = DLN_SHAPES[:5] if quick else DLN_SHAPES
    for widths, rank in shapes:
        task = make_dln_task(widths, rank, n, seed=0, construction=construction)
        lam = task.meta["lam"]
        d = task.meta["num_params"]
        chains, steps = dln_chains_and_draws(d, quick)
        start = time.perf_counter()
        r = slt.estimate_llc(task.loss_fn, task.params, task.data, step_size=5e-7, batch_size=500,
                             num_chains=chains, num_draws=steps, num_burnin="auto" if auto_burnin else steps, seed=0)
        rel = (r.llc_mean - lam) / lam
        failed = len(r.diagnostics["divergent_chains"])
        errors.append(abs(rel) if np.isfinite(rel) else np.inf)
        acc = r.diagnostics["acceptance_mean"]
        burn = r.diagnostics.get("burnin")
        rows.append([str(widths), rank, d, lam, r.llc_mean, se_of(r),
                     f"{100 * rel:+.1f}%" if np.isfinite(rel) else f"{failed} of {chains} chains diverged",
                     "—" if acc is None else f"{acc:.2f}",
                     f"{chains}×({r.config.num_burnin}+{steps})" + ("" if burn is None or burn["levelled"] else " (cap)"),
                     f"{time.perf_counter() - start:.0f}"])
        print(rows[-1], flush=True)
    header = ["widths (in→out)", "rank", "d", "Aoyagi λ", "λ̂", "± se", "vs λ", "MALA acc.", "chains×(burn-in+draws)", "s"]
    if construction == "one_layer":
        intro = ("### Deep linear networks, the published kind of true parameter (n = 1e5, batch 500, ε = 5e-7)\n\n"
                 "The protocol of the first table, at the kind of point the published experiments used: every layer "
                 "random (N(0, 1/fan-in)), one random layer truncated to rank r (Lau et al.'s \"rand_rank\" with one "
                 "layer reduced). The product has the same rank r, but the point is less singular than Aoyagi's: its "
                 "local learning coefficient is above λ (for [10, 10, 10] it is the regular 50, against λ = 44), so "
                 "\"vs λ\" here is not an error against the exact value of this point. It shows how the published "
                 "agreement with Aoyagi's λ arises: a trace still rising after 10k steps, at a point whose exact "
                 "value is above λ.\n\n")
    elif auto_burnin:
        intro = ("### Deep linear networks, published ε with `num_burnin=\"auto\"` (n = 1e5, batch 500, ε = 5e-7)\n\n"
                 "The same networks, step and draws as the table above; the burn-in runs until the λ̂ trace has "
                 "levelled off (slt.burnin) instead of a fixed 10k (5k) steps. \"(cap)\": the burn-in reached its cap of "
                 f"{CAP_PER_DRAW_STEP}× the draws still rising.\n\n")
    else:
        intro = ("### Deep linear networks (n = 1e5, batch 500, ε = 5e-7, MSE over examples and outputs)\n\n"
                 "The LLC trace climbs for about 10k steps at this step size before it levels off, so half of each "
                 "chain is burn-in. Finite-t multiplicity bias (REFERENCE §1) puts the exact target slightly below "
                 "λ. The true parameter has every factor of rank r, the most singular point with a rank-r product, "
                 "where Aoyagi's λ is the local value (the published kind of point is in the third table).\n\n")
    return (intro + markdown_table(header, rows)
            + f"\n\nMedian |relative error| {100 * np.median(errors):.1f}% (target ≤ 5%).")


def section_dln_auto(quick: bool):
    return section_dln(quick, auto_burnin=True)


def section_dln_published(quick: bool):
    return section_dln(quick, construction="one_layer")


# --- 4. TMS k-gons ---------------------------------------------------------------------------------------------


def section_tms(quick: bool):
    from slt.models.tms import make_tms_task

    rows = []
    for init in ["5", "5+", "6"]:
        task = make_tms_task(c=6, n=1000, seed=0, init=init)
        start = time.perf_counter()
        r = slt.estimate_llc(task.loss_fn, task.params, task.data, step_size=1e-3, localization=1.0,
                             num_chains=8, num_draws=500 if quick else 2000, num_burnin=100)
        rows.append([f"{init}-gon", task.meta["lam"], task.meta["population_loss"], r.init_loss, r.llc_mean, se_of(r),
                     f"{100 * (r.llc_mean - task.meta['lam']) / task.meta['lam']:+.1f}%",
                     f"{time.perf_counter() - start:.0f}"])
        print(rows[-1], flush=True)
    header = ["critical point", "λ (Chen et al.)", "population loss", "L_n(w*)", "λ̂", "± se", "vs λ", "s"]
    return ("### Toy model of superposition, c = 6 (n = 1000, full batch, ε = 1e-3, γ = 1)\n\n"
            "The k-gons are critical points of the population loss, not of the n = 1000 sample, so λ̂ carries "
            "the centering gap of REFERENCE §1 (reported, not asserted).\n\n" + markdown_table(header, rows))


SECTIONS = {"crossing": section_crossing, "regression": section_regression, "dln": section_dln, "dln-auto": section_dln_auto,
            "dln-published": section_dln_published, "tms": section_tms}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="fewer draws and shapes (a smoke run)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    slt.use_cpu_cores()  # chains sharded over the cores (same numbers up to float32 rounding); before any JAX work
    stamp = f"_{machine_line()}; `python bench/accuracy.py --sections {{name}}{' --quick' if args.quick else ''}`._"
    for name in args.sections.split(","):
        table = SECTIONS[name](args.quick)  # each section is written as soon as it is done
        print(table, flush=True)
        if not args.no_write:
            write_section("benchmarks.md", f"accuracy-{name}", table + "\n\n" + stamp.format(name=name))


if __name__ == "__main__":
    main()
