"""Accuracy of slt.free_energy (thermodynamic integration) and of the experimental (λ, m) fit.

    python bench/free_energy.py [--sections ti,fit_exact,fit_dln] [--quick] [--no-write]

0. ``auto``: TI with ``step_size="auto"`` (SGLD at the calibrated step, the coupled ε/2 run's
   difference in the stated error) on the same model, d ∈ {2, 10, 50} × n ∈ {1e2, 1e3, 1e4};
   target |TI - exact| ≤ 2 stated errors. Written between <!-- bench:free_energy_auto:... -->.
1. ``ti``: TI against the exact free energy of the conjugate Gaussian linear
   model y = Xw + N(0, 1), prior N(0, I), x ~ N(0, I), w0 = 1 (REFERENCE §7),
   d ∈ {2, 10, 50}, n ∈ {1e2, 1e3, 1e4}; MALA, 33 β × 4 chains in one program.
2. ``fit_exact``: the (λ, m) fit on exact t·E_t[K] curves (quadrature) of
   normal crossings, against the plain LLC at the largest t.
3. ``fit_dln``: the same fit on LLC curves sampled by one TI run (MALA) on
   deep linear networks at the most singular true parameter, population
   loss K(W) = ‖A₁⋯A_L - A₀‖²_F, local prior N(w0, I), t from 10 to 1e3.

Writes Markdown tables into docs/free_energy.md between
<!-- bench:free_energy:start --> and <!-- bench:free_energy:end -->.
A few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from scipy import integrate, special

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import slt  # noqa: E402
from bench.common import machine_line, markdown_table, write_section  # noqa: E402
from slt.fit import fit_learning_coefficient  # noqa: E402
from slt.free_energy import free_energy, geometric_ladder  # noqa: E402

warnings.simplefilter("ignore", slt.SLTWarning)
PAGE, NAME = "free_energy.md", "free_energy"


# --------------------------------------------------------------------------- #
# 1. TI against the exact Gaussian linear model
# --------------------------------------------------------------------------- #
def gaussian_linear(d, n, seed=0, alpha=1.0, sigma=1.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = X @ np.ones(d) + sigma * rng.normal(size=n)
    XtX, Xty = X.T @ X, X.T @ y

    def nL(w):
        r = y - X @ w
        return r @ r / (2 * sigma**2) + n * 0.5 * math.log(2 * math.pi * sigma**2)

    def post(beta):
        prec = alpha * np.eye(d) + beta * XtX / sigma**2
        cov = np.linalg.inv(prec)
        return cov @ (beta * Xty / sigma**2), cov, prec

    def expectation(beta):
        m, cov, _ = post(beta)
        return nL(m) + np.trace(XtX @ cov) / (2 * sigma**2)

    m1, _, prec1 = post(1.0)
    F = nL(m1) + alpha / 2 * m1 @ m1 + 0.5 * np.linalg.slogdet(prec1 / alpha)[1]
    lam_max = np.linalg.eigvalsh(XtX / sigma**2)[-1]
    return dict(X=X, y=y, F=F, expectation=expectation, mle=np.linalg.solve(XtX, Xty), lam_max=lam_max)


def nll(w, batch):
    x, y = batch
    return jnp.mean((y - x @ w) ** 2) / 2 + 0.5 * jnp.log(2 * jnp.pi)


def section_ti(quick: bool):
    ds = [2, 10] if quick else [2, 10, 50]
    ns = [100, 1000] if quick else [100, 1000, 10_000]
    rows = []
    for d in ds:

        def log_prior(w, d=d):  # N(0, I), normalised; a new function per d (its own compiled program)
            return -0.5 * jnp.sum(w**2) - 0.5 * d * math.log(2 * math.pi)

        for n in ns:
            m = gaussian_linear(d, n)
            t_ref = n / math.log(n)
            # MALA: ε·(largest precision at nβ = n/log n) ≈ (5/d)^(1/3) (optimal MALA scaling ∝ d^(-1/3))
            step = (5 / d) ** (1 / 3) / (t_ref * m["lam_max"] / n + 1.0)
            start = time.perf_counter()
            r = free_energy(nll, jnp.asarray(m["mle"], jnp.float32),
                            (jnp.asarray(m["X"], jnp.float32), jnp.asarray(m["y"], jnp.float32)),
                            log_prior=log_prior, step_size=step, sampler="mala", num_chains=4,
                            num_draws=400, num_burnin=200, seed=0)
            seconds = time.perf_counter() - start
            err = r.value - m["F"]
            acc = np.nanmean([e.get("acceptance") or np.nan for e in r.diagnostics["per_beta"]])
            wbic = m["expectation"](1 / math.log(n))
            rows.append([d, n, f"{m['F']:.2f}", f"{r.value:.2f}", f"{err:+.3f}", f"{r.stderr:.3f}",
                         f"{r.sampling_stderr:.3f} / {r.discretisation_error:.3f}", f"{err / r.stderr:+.1f}",
                         f"{wbic - m['F']:+.2f}", f"{acc:.2f}", f"{seconds:.0f}"])
            print(" | ".join(str(c) for c in rows[-1]), flush=True)
    header = ["d", "n", "exact F", "TI F̂", "error", "stderr", "sampling / discr.", "error/stderr",
              "exact WBIC − F", "MALA acc.", "seconds"]
    return markdown_table(header, rows)


def section_auto(quick: bool):
    """TI at the automatic step: |F - exact| against the stated error, and what F(ε) alone would have given."""
    ds = [2, 10] if quick else [2, 10, 50]
    ns = [100, 1000] if quick else [100, 1000, 10_000]
    rows, within = [], 0
    for d in ds:

        def log_prior(w, d=d):
            return -0.5 * jnp.sum(w**2) - 0.5 * d * math.log(2 * math.pi)

        for n in ns:
            m = gaussian_linear(d, n)
            start = time.perf_counter()
            r = free_energy(nll, jnp.asarray(m["mle"], jnp.float32),
                            (jnp.asarray(m["X"], jnp.float32), jnp.asarray(m["y"], jnp.float32)),
                            log_prior=log_prior, step_size="auto", num_chains=4, num_draws=400, num_burnin=200, seed=0)
            seconds = time.perf_counter() - start
            err = r.value - m["F"]
            at_step = r.diagnostics["step_bias_check"]["value_at_step"] - m["F"]
            z = err / r.stderr
            within += abs(z) <= 2
            rows.append([d, n, f"{r.config.step_size:.3g}", f"{m['F']:.2f}", f"{r.value:.2f}", f"{err:+.3f}",
                         f"{r.stderr:.3f}", f"{z:+.2f}", f"{r.step_bias:+.3f} ± {r.step_bias_se:.3f}",
                         f"{at_step:+.3f} ({at_step / max(r.sampling_stderr, 1e-12):+.1f})",
                         "; ".join(w[:60] for w in r.diagnostics["warnings"][:1]) or "-", f"{seconds:.0f}"])
            print(" | ".join(str(c) for c in rows[-1]), flush=True)
    header = ["d", "n", "auto ε", "exact F", "TI F̂ (at ε/2)", "error", "stated error", "error/stated",
              "F(ε) - F(ε/2)", "F(ε) alone: error (in sampling errors)", "first warning", "seconds"]
    return markdown_table(header, rows), within, len(rows)


# --------------------------------------------------------------------------- #
# 2. (λ, m) fit on exact curves
# --------------------------------------------------------------------------- #
def _phi(u):
    return np.exp(-u * u / 2) / np.sqrt(2 * np.pi)


def curve_from_g(g, t):
    """t·E_t[K] for K = w1²·g(u) under N(0, I): w1 integrated in closed form, u by quadrature."""
    num = integrate.quad(lambda u: g(u) * (1 + 2 * t * g(u)) ** -1.5 * _phi(u), -np.inf, np.inf, epsabs=1e-14, limit=400)[0]
    den = integrate.quad(lambda u: (1 + 2 * t * g(u)) ** -0.5 * _phi(u), -np.inf, np.inf, epsabs=1e-14, limit=400)[0]
    return t * num / den


def _log_z_w1w2w3(t):
    # Z(t) = E[(1 + 2t·w2²w3²)^(-1/2)]: the w3 integral is e^{1/4c}K0(1/4c)/√(2πc), c = 2t·w2²
    def inner(u):
        c = max(2 * t * u * u, 1e-300)
        return special.k0e(1 / (4 * c)) / np.sqrt(2 * np.pi * c)

    return math.log(2 * integrate.quad(lambda u: _phi(u) * inner(u), 0, np.inf, epsabs=0, epsrel=1e-13, limit=400)[0])


def curve_w1w2w3(t, h=1e-4):
    return -(_log_z_w1w2w3(t * math.exp(h)) - _log_z_w1w2w3(t * math.exp(-h))) / (2 * h)


EXACT_CASES = [
    ("w1²", 0.5, 1, lambda t: t / (1 + 2 * t)),
    ("w1²w2⁴", 0.25, 1, lambda t: curve_from_g(lambda u: u**4, t)),
    ("w1²w2²", 0.5, 2, lambda t: curve_from_g(lambda u: u**2, t)),
    ("w1²w2²w3²", 0.5, 3, curve_w1w2w3),
]


def section_fit_exact(quick: bool):
    rows = []
    for t_max in [1e3, 1e4, 1e6]:
        t = np.geomspace(10, t_max, 13)
        for name, lam, m, curve in EXACT_CASES:
            y = np.array([curve(x) for x in t])
            free = fit_learning_coefficient(t, y)
            fixed = fit_learning_coefficient(t, y, multiplicity=m)
            rows.append([name, lam, m, f"10–{t_max:.0e}", f"{y[-1]:.3f}",
                         f"{free.lam:.3f}", f"{free.multiplicity:.2f}", f"{fixed.lam:.3f}"])
            print(" | ".join(str(c) for c in rows[-1]), flush=True)
    header = ["K (prior N(0, I))", "λ", "m", "t range", "plain t·E_t[K] at t_max", "fit λ", "fit m",
              "fit λ (m fixed)"]
    return markdown_table(header, rows)


# --------------------------------------------------------------------------- #
# 3. (λ, m) fit on sampled DLN curves
# --------------------------------------------------------------------------- #
def dln_loss(widths, rank, seed=0):
    """Population loss ‖A⁽¹⁾⋯A⁽ᴸ⁾ - target‖²_F; widths output → input (Aoyagi); rank-r factors at w0."""
    rng = np.random.default_rng(seed)
    mats = []
    for a, b in zip(widths[:-1], widths[1:]):
        mats.append(rng.normal(size=(a, rank)) @ rng.normal(size=(rank, b)) if rank else np.zeros((a, b)))
    target = mats[0]
    for w in mats[1:]:
        target = target @ w
    target = jnp.asarray(target, jnp.float32)

    def loss(params, batch):
        p = params[0]
        for w in params[1:]:
            p = p @ w
        return jnp.sum((p - target) ** 2) + 0.0 * jnp.sum(batch)

    return loss, [jnp.asarray(w, jnp.float32) for w in mats]


DLN_CASES = [([1, 1, 1], 0, 2.0), ([1, 1, 1, 1], 0, 2.0), ([2, 1, 2], 0, 2.0), ([3, 1, 3], 0, 2.0),
             ([2, 2, 2], 1, 0.5)]


def section_fit_dln(quick: bool):
    n = 1000
    steps = 8000 if quick else 20_000
    cases = DLN_CASES[:2] if quick else DLN_CASES
    rows = []
    for widths, rank, c in cases:
        lc = slt.theory.dln(widths, rank)
        loss, params = dln_loss(widths, rank)
        t = n * geometric_ladder(n)
        start = time.perf_counter()
        # MALA, ε ∝ 1/t (the curvature across the singular set grows like t)
        r = free_energy(loss, params, jnp.zeros((n, 1)), step_size=c / (2 * t + 1), sampler="mala",
                        num_chains=4, num_draws=steps, num_burnin=steps // 4, seed=0)
        seconds = time.perf_counter() - start
        free = fit_learning_coefficient(r)  # t ≥ 10
        fixed = fit_learning_coefficient(r, multiplicity=lc.multiplicity)
        i_ref = int(np.argmin(abs(t - n / math.log(n))))
        rows.append([f"{widths}, r={rank}", float(lc.lam), lc.multiplicity,
                     f"{r.llc[i_ref]:.3f} ± {r.llc_stderr[i_ref]:.3f}", f"{r.llc[-1]:.3f} ± {r.llc_stderr[-1]:.3f}",
                     f"{free.lam:.3f} ± {free.lam_stderr:.3f}", f"{free.multiplicity:.2f} ± {free.multiplicity_stderr:.2f}",
                     f"{fixed.lam:.3f} ± {fixed.lam_stderr:.3f}", f"{seconds:.0f}"])
        print(" | ".join(str(x) for x in rows[-1]), flush=True)
    header = ["DLN (widths out→in)", "λ", "m", f"LLC at t=n/log n={n / math.log(n):.0f}", f"LLC at t={n}",
              "fit λ", "fit m", "fit λ (m fixed)", "seconds"]
    return markdown_table(header, rows), steps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", default="ti,fit_exact,fit_dln")
    p.add_argument("--quick", action="store_true", help="fewer cases (does not write the docs)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    sections = args.sections.split(",")
    parts = [machine_line() + "."]
    total = time.perf_counter()
    if "auto" in sections:
        table, within, count = section_auto(args.quick)
        auto = "\n".join([machine_line() + "; `python bench/free_energy.py --sections auto`.", "",
                          f"**TI at `step_size=\"auto\"`** (SGLD at the step `slt.calibrate` recommends at nβ = n/log n, "
                          "33 β × 4 chains × 400 draws (+200 burn-in), the coupled ε/2 copy of every chain in the same "
                          "program; the value is F at ε/2 and its stated error includes |F(ε) - F(ε/2)|). "
                          f"Within 2 stated errors: **{within}/{count}** (target: all).", "", table])
        print(auto)
        if not args.no_write and not args.quick:
            print("wrote", write_section(PAGE, "free_energy_auto", auto))
        sections = [x for x in sections if x != "auto"]
        if not sections:
            return
    if "ti" in sections:
        parts += ["", "**Thermodynamic integration vs the exact F_n** (Gaussian linear model, prior N(0, I); "
                  "MALA, 33 β from nβ = 1e-3 to n, 4 chains × 400 draws (+200 burn-in) per β; seconds include "
                  "compilation):", "", section_ti(args.quick)]
    if "fit_exact" in sections:
        parts += ["", "**(λ, m) fit on exact curves** t·E_t[K] (quadrature), 13 values of t geometric over the "
                  "range; *plain* is what a single exact LLC at t_max gives:", "", section_fit_exact(args.quick)]
    if "fit_dln" in sections:
        table, steps = section_fit_dln(args.quick)
        parts += ["", f"**(λ, m) fit on sampled DLN curves**: one TI run per network (MALA, 33 β × 4 chains × "
                  f"{steps} draws, n = 1000, local prior N(w0, I)); the fit uses the 11 rungs with t ≥ 10; "
                  "values ± standard error:", "", table]
    parts += ["", f"Total {time.perf_counter() - total:.0f} s."]
    text = "\n".join(parts)
    print(text)
    if not args.no_write and not args.quick and sections == ["ti", "fit_exact", "fit_dln"]:
        print("wrote", write_section(PAGE, NAME, text))


if __name__ == "__main__":
    main()
