"""Health checks of a sampling run: ESS, R-hat, MCSE, acceptance, divergences.

ESS and split R-hat come from numpyro (``effective_sample_size``,
``split_gelman_rubin``, Gelman et al. BDA3 §11.4–11.5). MCSE = sd/√ESS.
The MALA acceptance probability of SGLD proposals is the health check of
Furman & Lau (arXiv 2402.03698): about 0.9 is healthy.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin


class SLTWarning(UserWarning):
    """A sampling run finished but its result needs care."""


ACCEPTANCE_TARGET = 0.9
ACCEPTANCE_LOW = 0.7
RHAT_HIGH = 1.1


def ess(trace: np.ndarray) -> float:
    """Effective sample size of a [chains, draws] trace (numpyro)."""
    trace = np.asarray(trace, dtype=np.float64)
    if trace.ndim != 2 or trace.size == 0 or trace.shape[1] < 4 or not np.all(np.isfinite(trace)):
        return float("nan")
    if np.ptp(trace) == 0:
        return float(trace.size)
    return float(effective_sample_size(trace))


def rhat(trace: np.ndarray) -> float:
    """Split R-hat of a [chains, draws] trace (numpyro)."""
    trace = np.asarray(trace, dtype=np.float64)
    if trace.ndim != 2 or trace.size == 0 or trace.shape[1] < 4 or not np.all(np.isfinite(trace)) or np.ptp(trace) == 0:
        return float("nan")
    return float(split_gelman_rubin(trace))


def mcse(trace: np.ndarray) -> float:
    """Monte Carlo standard error of the mean of a [chains, draws] trace: sd/√ESS."""
    e = ess(trace)
    if not np.isfinite(e) or e <= 0:
        return float("nan")
    return float(np.std(trace, ddof=1) / np.sqrt(e))


def levelled_off(trace: np.ndarray, *, z: float = 4.0, rel: float = 0.1) -> tuple[bool, float, float]:
    """Compare the means of the first and second half of the draws.

    Returns (ok, first-half mean, second-half mean); not ok when the halves
    differ by more than ``z`` standard errors and by more than ``rel`` of the
    overall mean (the trace is still drifting: burn in longer).
    """
    half = trace.shape[1] // 2
    if half < 4:
        return True, float("nan"), float("nan")
    first, second = trace[:, :half], trace[:, half : 2 * half]
    m1, m2 = float(np.mean(first)), float(np.mean(second))
    se = np.hypot(mcse(first), mcse(second))
    scale = max(abs(float(np.mean(trace))), 1e-12)
    drifting = np.isfinite(se) and abs(m2 - m1) > z * se and abs(m2 - m1) > rel * scale
    return not drifting, m1, m2


def divergence_report(divergent_step: np.ndarray, step_size: float) -> list[dict]:
    """One entry per failed chain: which chain, at which step, and what to do."""
    out = []
    for chain in np.flatnonzero(np.asarray(divergent_step) >= 0):
        out.append(
            {
                "chain": int(chain),
                "step": int(divergent_step[chain]),
                "suggestion": f"the loss became NaN/Inf; try step_size={step_size / 10:.3g} (10× smaller) "
                "or a larger localization",
            }
        )
    return out


def emit(messages: list[str]) -> None:
    """Raise each message as an :class:`SLTWarning`."""
    for message in messages:
        warnings.warn(message, SLTWarning, stacklevel=3)
