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
