"""Exact finite-t values that a correct sampler of p(w) ∝ exp(-t·K(w))·N(w; 0, I/γ) reproduces.

Test targets are t·E_t[K], not λ (REFERENCE.md §1): at finite t they differ.
"""

import numpy as np
from scipy import integrate


def normal_crossing_w1sq_w2sq(t: float) -> float:
    """t·E_t[w1²w2²] under the N(0, I) prior, by 1-D quadrature after integrating w1 in closed form.

    For fixed u = w2, ∫ e^{-t u² w1²} N(w1) dw1 = (1 + 2tu²)^{-1/2} and
    ∫ w1² e^{-t u² w1²} N(w1) dw1 = (1 + 2tu²)^{-3/2}.
    """
    phi = lambda u: np.exp(-u * u / 2) / np.sqrt(2 * np.pi)
    num = integrate.quad(lambda u: u * u * (1 + 2 * t * u * u) ** -1.5 * phi(u), -np.inf, np.inf, epsabs=1e-13)[0]
    den = integrate.quad(lambda u: (1 + 2 * t * u * u) ** -0.5 * phi(u), -np.inf, np.inf, epsabs=1e-13)[0]
    return t * num / den


def quadratic(t: float, c: np.ndarray, gamma: float = 1.0, sgld_step: float | None = None) -> float:
    """t·E[Σ c_i w_i²] for U = t·Σ c_i w_i² + γ/2·‖w‖²: Var w_i = 1/a_i, a_i = 2t·c_i + γ.

    With ``sgld_step`` ε, the exact stationary variance of the SGLD chain
    w ← (1 - εa/2)·w + √ε·ξ instead: 1 / (a·(1 - εa/4)).
    """
    a = 2 * t * np.asarray(c) + gamma
    var = 1 / a if sgld_step is None else 1 / (a * (1 - sgld_step * a / 4))
    return float(t * np.sum(np.asarray(c) * var))


def quartic(t: float, gamma: float = 1.0) -> float:
    """t·E[w⁴] for U = t·w⁴ + γ/2·w² (one coordinate), by quadrature; λ = 1/4 as t → ∞."""
    weight = lambda w: np.exp(-t * w**4 - gamma * w * w / 2)
    num = integrate.quad(lambda w: w**4 * weight(w), -np.inf, np.inf, epsabs=1e-14)[0]
    return t * num / integrate.quad(weight, -np.inf, np.inf, epsabs=1e-14)[0]


def rank0_linear_net(t: float, m: int, h: int, n_out: int, c: float = 1.0, gamma: float = 1.0) -> float:
    """t·E[K] for the two-layer linear net K = c·‖W₁W₂‖²_F at its rank-0 true parameter W = 0.

    W₁ is [m, h] with min(m, h) = 2, W₂ is [h, n_out], prior N(0, I/γ). Given W₁ with singular values
    s_i, W₂'s columns are Gaussian with precision 2tc·W₁ᵀW₁ + γI, so (a_i = tc·s_i²)

        t·E[K | W₁] = n_out · Σ_i a_i/(2a_i + γ),
        p(s) ∝ |s₁² - s₂²|·(s₁s₂)^|m-h|·exp(-γ/2·Σs_i²)·Π_i (2a_i + γ)^(-n_out/2)

    (the second line: W₂ integrated out, times the Jacobian of the singular value decomposition).
    A 2-D quadrature in log s over s₁ > s₂ (the density is symmetric).
    """
    if min(m, h) != 2:
        raise ValueError("this quadrature is written for min(m, h) = 2")

    def log_weight_and_value(u1, u2):
        s1, s2 = np.exp(u1), np.exp(u2)
        a1, a2 = t * c * s1 * s1, t * c * s2 * s2
        log_w = (np.log(s1 * s1 - s2 * s2) + (abs(m - h) + 1) * (u1 + u2) - gamma / 2 * (s1 * s1 + s2 * s2)
                 - n_out / 2 * (np.log(2 * a1 + gamma) + np.log(2 * a2 + gamma)))  # +1: ds = s du
        return log_w, n_out * (a1 / (2 * a1 + gamma) + a2 / (2 * a2 + gamma))

    shift = log_weight_and_value(0.5, -3.0)[0]
    lo, hi = -14.0, 4.0  # s from 8e-7 to 55: the weight is negligible outside for γ ≥ 0.1, t ≤ 1e4

    def integral(moment):
        def f(u2, u1):
            if u2 >= u1:
                return 0.0
            log_w, value = log_weight_and_value(u1, u2)
            return np.exp(log_w - shift) * (value if moment else 1.0)

        return integrate.dblquad(f, lo, hi, lambda u1: lo, lambda u1: u1, epsabs=0, epsrel=1e-10)[0]

    return integral(True) / integral(False)
