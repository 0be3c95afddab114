"""Closed-form learning coefficients (real log canonical thresholds).

For a model whose average log-loss ``K(w)`` has real log canonical threshold
``lam`` with multiplicity ``m``, the Bayes free energy behaves as

    F_n = n S_n + lam * log n - (m - 1) * log log n + O_p(1)

(Watanabe 2009, *Algebraic Geometry and Statistical Learning Theory*).
This module collects exact values of ``(lam, m)`` for a few model classes,
useful as ground truth for LLC estimators.  All arithmetic is done with
:class:`fractions.Fraction`, so ``lam`` is exact (``float(result)`` or
``float(result.lam)`` gives a float).
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple, Sequence

__all__ = [
    "LearningCoefficient",
    "regular",
    "normal_crossing",
    "power_norm",
    "rrr",
    "dln",
    "dln_num_params",
]


class LearningCoefficient(NamedTuple):
    """Learning coefficient ``lam`` (exact Fraction) and multiplicity ``m``.

    Unpacks as ``lam, m = ...``; ``float(lc)`` returns ``float(lc.lam)``.
    """

    lam: Fraction
    multiplicity: int

    def __float__(self) -> float:
        return float(self.lam)


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def regular(d: int) -> LearningCoefficient:
    """Regular model with ``d`` parameters: ``lam = d/2``, ``m = 1``.

    Positive-definite Fisher information at the true parameter
    (Watanabe 2009; the classical BIC penalty).
    """
    _check_int("d", d, 0)
    return LearningCoefficient(Fraction(d, 2), 1)


def normal_crossing(k: Sequence[int], h: Sequence[int] | None = None) -> LearningCoefficient:
    """Normal crossing ``K(w) = prod_i w_i^{2 k_i}``, prior ``~ prod_i |w_i|^{h_i}`` near 0.

    ``lam = min_{i: k_i > 0} (h_i + 1) / (2 k_i)`` and ``m`` is the number of
    indices attaining the minimum (Watanabe 2009, Ch. 6: the standard form
    that resolution of singularities reduces every ``K`` to).  ``h`` defaults
    to zeros (prior positive at the origin).
    """
    k = [_check_int("k_i", ki, 0) for ki in k]
    h = [0] * len(k) if h is None else [_check_int("h_i", hi, 0) for hi in h]
    if len(h) != len(k):
        raise ValueError(f"k and h must have equal length, got {len(k)} and {len(h)}")
    ratios = [Fraction(hi + 1, 2 * ki) for ki, hi in zip(k, h) if ki > 0]
    if not ratios:
        raise ValueError("normal_crossing needs at least one k_i > 0")
    lam = min(ratios)
    return LearningCoefficient(lam, ratios.count(lam))


def power_norm(d: int, k: int) -> LearningCoefficient:
    """``K(w) = |w|^{2k}`` on ``R^d`` (prior positive at 0): ``lam = d/(2k)``, ``m = 1``.

    Blow up the origin once: ``K = t^{2k} * (unit)``, Jacobian ``t^{d-1}``
    (Watanabe 2009).
    """
    _check_int("d", d, 1)
    _check_int("k", k, 1)
    return LearningCoefficient(Fraction(d, 2 * k), 1)


def rrr(M: int, H: int, N: int, r: int) -> LearningCoefficient:
    """Reduced-rank regression ``y = B A x`` (Aoyagi & Watanabe 2005, Main Theorem).

    Input dim ``M``, hidden ``H``, output ``N``, true rank ``r`` (``r <= min(M, H, N)``).

    * If ``N+r <= M+H``, ``M+r <= N+H`` and ``H+r <= M+N``:
      ``lam = [2(H+r)(M+N) - (M-N)^2 - (H+r)^2] / 8`` with ``m = 1`` when
      ``M+H+N+r`` is even, and ``lam + 1/8`` with ``m = 2`` when it is odd.
    * elif ``M+H < N+r``: ``lam = (HM - Hr + Nr)/2``;
      elif ``N+H < M+r``: ``lam = (HN - Hr + Mr)/2``; else ``lam = MN/2``
      (``m = 1``).

    M. Aoyagi, S. Watanabe, "Stochastic complexities of reduced rank
    regression in Bayesian estimation", Neural Networks 18 (2005) 924-933.
    """
    for name, v in (("M", M), ("H", H), ("N", N)):
        _check_int(name, v, 1)
    _check_int("r", r, 0)
    if r > min(M, H, N):
        raise ValueError(f"rank r={r} exceeds min(M, H, N)={min(M, H, N)}")
    if N + r <= M + H and M + r <= N + H and H + r <= M + N:
        lam = Fraction(2 * (H + r) * (M + N) - (M - N) ** 2 - (H + r) ** 2, 8)
        if (M + H + N + r) % 2:
            return LearningCoefficient(lam + Fraction(1, 8), 2)
        return LearningCoefficient(lam, 1)
    if M + H < N + r:
        return LearningCoefficient(Fraction(H * M - H * r + N * r, 2), 1)
    if N + H < M + r:
        return LearningCoefficient(Fraction(H * N - H * r + M * r, 2), 1)
    return LearningCoefficient(Fraction(M * N, 2), 1)


def _check_widths(widths: Sequence[int]) -> list[int]:
    widths = list(widths)
    if len(widths) < 2:
        raise ValueError(f"widths needs at least 2 entries (output, input), got {widths}")
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, int):
            raise TypeError(f"widths must be ints, got {w!r}")
        if w <= 0:
            raise ValueError(f"widths must be positive, got {widths}")
    return widths


def dln_num_params(widths: Sequence[int]) -> int:
    """Number of weights of a bias-free deep linear net: ``sum_s H(s) H(s+1)``."""
    widths = _check_widths(widths)
    return sum(a * b for a, b in zip(widths[:-1], widths[1:]))


def dln(widths: Sequence[int], rank: int) -> LearningCoefficient:
    """Deep linear network ``y = A(1) ... A(L) x`` (Aoyagi 2024, Thm 1).

    ``A(s)`` is ``H(s) x H(s+1)``; ``widths = [H(1), ..., H(L+1)]`` lists the
    widths from output ``H(1)`` to input ``H(L+1)``; ``rank`` is the rank
    ``r`` of the true product (``r <= min(widths)``).  With
    ``M(s) = H(s) - r``, choose the subset ``S`` (``l = |S| - 1``,
    ``Sigma = sum_{k in S} M(k)``) with

    (i) ``max_{k in S} M(k) < min_{k not in S} M(k)``,
    (ii) ``Sigma >= l M(k)`` for ``k in S``, (iii) ``Sigma < l M(k)`` for ``k not in S``.

    With ``Mbar = ceil(Sigma / l)`` and ``a = Sigma - (Mbar - 1) l``:

        lam = [-r^2 + r(H(1) + H(L+1))]/2 + a(l-a)/(4l) - (l(l-1)/4)(Sigma/l)^2
              + 1/2 sum_{i<j in S} M(i) M(j),
        m = a(l-a) + 1.

    ``S`` is found as a prefix of the ascending sort of ``M``; by the strict
    condition (i), a prefix may never end inside a block of equal values.
    Agrees with :func:`rrr` for two layers: ``dln([N, H, M], r) == rrr(M, H, N, r)``.

    M. Aoyagi, "Consideration on the learning efficiency of multiple-layered
    neural networks with linear units", Neural Networks 172 (2024) 106132.
    """
    widths = _check_widths(widths)
    r = _check_int("rank", rank, 0)
    if r > min(widths):
        raise ValueError(f"rank={r} exceeds min(widths)={min(widths)} for widths={widths}")

    Ms = sorted(w - r for w in widths)
    n = len(Ms)
    for size in range(1, n + 1):
        if size < n and Ms[size - 1] == Ms[size]:
            continue  # (i) is strict: cannot split a tie block
        ell, sigma = size - 1, sum(Ms[:size])
        if all(sigma >= ell * m for m in Ms[:size]) and all(sigma < ell * m for m in Ms[size:]):
            break
    else:  # pragma: no cover - Aoyagi (2024) guarantees existence
        raise RuntimeError(f"no admissible subset found for widths={widths}, rank={r}")

    base = Fraction(-r * r + r * (widths[0] + widths[-1]), 2)
    if ell == 0:  # only reachable with a single-entry set; kept for completeness
        return LearningCoefficient(base, 1)
    S = Ms[:size]
    mbar = -(-sigma // ell)  # ceil for ints (sigma >= 0)
    a = sigma - (mbar - 1) * ell
    pair_sum = (sigma * sigma - sum(m * m for m in S)) // 2  # sum_{i<j} M(i) M(j)
    lam = (
        base
        + Fraction(a * (ell - a), 4 * ell)
        - Fraction(ell * (ell - 1), 4) * Fraction(sigma, ell) ** 2
        + Fraction(pair_sum, 2)
    )
    return LearningCoefficient(lam, a * (ell - a) + 1)
