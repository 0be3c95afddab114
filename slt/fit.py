"""Fit the learning coefficient λ and multiplicity m to t·E_t[K] at several t (experimental).

At finite inverse temperature t = nβ, the quantity every LLC estimator
targets is not λ but (REFERENCE §1; Watanabe 2009, ch. 6: the free energy
F(t) = λ log t - (m-1) log log t + O(1), and t·E_t[K] = dF/dlog t)

    y(t) = t·E_t[K] ≈ λ - (m-1)/(log t + c),

which approaches λ from below as slowly as 1/log t when m > 1: the plain
LLC at t = n/log n is biased low (for K = w1²w2², λ = 1/2, m = 2, it is
0.39 at t = 1e3 and 0.41 at t = 1e4). Fitting (λ, a = m-1, c) to y at several
t extrapolates to t → ∞.

Method: weighted least squares (weights 1/stderr²). For fixed c the model is
linear in (λ, a); c is profiled over a grid in (-min log t + 0.25, 50] and
refined by a bounded scalar minimisation. The parameter covariance is
(JᵀWJ)⁻¹ at the optimum (J the Jacobian in (λ, a, c)), scaled by χ²/dof when
that exceeds 1 (or always, without stderr). With ``multiplicity`` given, only
(λ, c) are fitted.

EXPERIMENTAL: the form is the first term of an asymptotic expansion; at
moderate t, higher-order terms bias the fit, and λ, m and c are strongly
correlated (m is poorly determined for m ≥ 3, see docs/free_energy.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import optimize

from slt import validation as check

C_MAX = 10.0
C_MARGIN = 0.25
GRID = 400


@dataclass
class LearningCoefficientFit:
    """Result of :func:`fit_learning_coefficient` (experimental)."""

    lam: float
    lam_stderr: float
    multiplicity: float  # m = a + 1 (continuous; round it for an integer)
    multiplicity_stderr: float  # 0 when fixed
    c: float
    c_stderr: float
    covariance: np.ndarray  # over (λ, a, c), or (λ, c) with fixed multiplicity
    chi2: float
    dof: int
    nbetas: np.ndarray  # t used in the fit
    values: np.ndarray  # y(t) used in the fit
    stderr: np.ndarray | None
    fixed_multiplicity: bool
    c_at_bound: bool
    plain_llc: float  # y at the largest t: what a single LLC estimate there gives
    warnings: list = field(default_factory=list)

    def predict(self, t) -> np.ndarray:
        """λ - (m-1)/(log t + c)."""
        return self.lam - (self.multiplicity - 1) / (np.log(np.asarray(t, np.float64)) + self.c)

    def to_dict(self) -> dict:
        """JSON-serialisable fit (λ, m, c with errors, χ², warnings)."""
        from slt.io import jsonable

        return jsonable(asdict(self))

    def __repr__(self) -> str:
        m = f"{self.multiplicity:.3g}" + ("" if self.fixed_multiplicity else f" ± {self.multiplicity_stderr:.2g}")
        return (f"LearningCoefficientFit(lam={self.lam:.4g} ± {self.lam_stderr:.2g}, m={m}, c={self.c:.3g}, "
                f"plain_llc={self.plain_llc:.4g})")


def _linear_fit(x, y, w, c, multiplicity):
    u = 1.0 / (x + c)
    if multiplicity is None:
        A = np.stack([np.ones_like(x), -u], axis=1)
        sw = np.sqrt(w)
        coef, *_ = np.linalg.lstsq(A * sw[:, None], y * sw, rcond=None)
        resid = y - A @ coef
        return float(np.sum(w * resid**2)), coef
    r = y + (multiplicity - 1) * u
    lam = float(np.sum(w * r) / np.sum(w))
    return float(np.sum(w * (r - lam) ** 2)), np.array([lam])


def fit_learning_coefficient(nbetas, values=None, stderr=None, *, multiplicity: int | None = None,
                             min_nbeta: float | None = None) -> LearningCoefficientFit:
    """Fit y(t) = t·E_t[K] ≈ λ - (m-1)/(log t + c) (EXPERIMENTAL; REFERENCE §1).

    Args:
      nbetas: the inverse temperatures t = nβ, or a
        :class:`slt.free_energy.FreeEnergyResult` (its ``llc`` = β·(E_β[nL_n] -
        nL_n(params)) and ``llc_stderr`` at ``nbetas`` are used; min_nbeta
        defaults to 10 then, since the form only holds at large t).
      values: y(t) at each t (e.g. LLC estimates at nβ = t with γ small).
      stderr: their standard errors (None: unweighted, errors from residuals).
      multiplicity: fix m (fit λ and c only).
      min_nbeta: use only t ≥ min_nbeta.

    Returns:
      :class:`LearningCoefficientFit` with λ, m, c, their standard errors and
      covariance, χ², and ``plain_llc`` (y at the largest t) for comparison.
    """
    if values is None and hasattr(nbetas, "llc"):
        result = nbetas
        nbetas, values, stderr = result.nbetas, result.llc, result.llc_stderr
        min_nbeta = 10.0 if min_nbeta is None else min_nbeta
    check.require(values is not None, "values is required (or pass a FreeEnergyResult as the first argument)")
    t = np.asarray(nbetas, np.float64).ravel()
    y = np.asarray(values, np.float64).ravel()
    check.require(t.shape == y.shape, f"nbetas and values differ in length ({t.size} vs {y.size})")
    check.require(bool(np.all(np.isfinite(t)) and np.all(t > 0)), "nbetas must be finite and > 0")
    check.require(bool(np.all(np.isfinite(y))), "values must be finite (drop failed estimates first)")
    if stderr is not None:
        se = np.asarray(stderr, np.float64).ravel()
        check.require(se.shape == t.shape, f"stderr has {se.size} values for {t.size} points")
        check.require(bool(np.all(np.isfinite(se)) and np.all(se > 0)), "stderr must be finite and > 0")
    else:
        se = None
    if multiplicity is not None:
        multiplicity = check.positive_int("multiplicity", multiplicity)
    if min_nbeta is not None:
        keep = t >= min_nbeta
        t, y = t[keep], y[keep]
        se = se[keep] if se is not None else None
    n_par = 3 if multiplicity is None else 2
    check.require(t.size >= n_par, f"need at least {n_par} points with distinct t to fit (have {t.size})")
    check.require(np.unique(t).size >= n_par, f"need at least {n_par} distinct values of t")

    x = np.log(t)
    w = 1.0 / se**2 if se is not None else np.ones_like(x)
    c_lo = -x.min() + C_MARGIN
    grid = c_lo + (C_MAX - c_lo) * np.linspace(0, 1, GRID) ** 2  # denser near c_lo
    chis = np.array([_linear_fit(x, y, w, c, multiplicity)[0] for c in grid])
    i = int(np.argmin(chis))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, GRID - 1)]
    if hi > lo:
        opt = optimize.minimize_scalar(lambda c: _linear_fit(x, y, w, c, multiplicity)[0], bounds=(lo, hi),
                                       method="bounded", options={"xatol": 1e-8})
        c = float(opt.x) if opt.fun <= chis[i] else float(grid[i])
    else:
        c = float(grid[i])
    chi2, coef = _linear_fit(x, y, w, c, multiplicity)
    lam = float(coef[0])
    a = float(coef[1]) if multiplicity is None else float(multiplicity - 1)
    u = 1.0 / (x + c)
    if multiplicity is None:
        J = np.stack([np.ones_like(x), -u, a * u**2], axis=1)
    else:
        J = np.stack([np.ones_like(x), a * u**2], axis=1)
    dof = int(t.size - n_par)
    info = J.T @ (J * w[:, None])
    cov = np.linalg.pinv(info)
    if dof > 0:
        scale = chi2 / dof
        cov = cov * (scale if se is None else max(1.0, scale))
    sd = np.sqrt(np.clip(np.diag(cov), 0, None))
    at_bound = bool(multiplicity != 1 and (c <= grid[1] or c >= grid[-2]))
    warnings = []
    if at_bound:
        warnings.append(f"c = {c:.3g} is at the edge of its range [{c_lo:.3g}, {C_MAX:g}]: λ and m are not "
                        "identified by these points; widen the range of t or fix the multiplicity")
    if multiplicity == 1:
        warnings.append("with multiplicity=1 the form is the constant λ (c plays no role): λ is the weighted mean "
                        "of the values, which the slower corrections of a real curve bias low")
    if dof == 0:
        warnings.append("as many parameters as points: no residual check of the form; use more t")
    order = np.argsort(t)
    return LearningCoefficientFit(
        lam=lam, lam_stderr=float(sd[0]),
        multiplicity=a + 1.0, multiplicity_stderr=float(sd[1]) if multiplicity is None else 0.0,
        c=c, c_stderr=float(sd[-1]), covariance=cov, chi2=float(chi2), dof=dof,
        nbetas=t[order], values=y[order], stderr=se[order] if se is not None else None,
        fixed_multiplicity=multiplicity is not None, c_at_bound=at_bound, plain_llc=float(y[order][-1]),
        warnings=warnings,
    )


__all__ = ["LearningCoefficientFit", "fit_learning_coefficient"]
