"""Health checks of a sampling run, each statistic in one place.

- ESS and split R-hat from numpyro (``effective_sample_size``,
  ``split_gelman_rubin``, Gelman et al. BDA3 §11.4–11.5); MCSE = sd/√ESS;
  :func:`standard_error` of a mean over several chains.
- :func:`window_difference` / :func:`levelled_off`: has a trace levelled off?
  Two windows' means compared (Geweke 1992), the error from the spread of the
  per-chain differences across independent chains. The estimate warns with
  the draws' halves; the burn-in (:mod:`slt.burnin`) decides with its own
  windows and tolerance.
- :func:`paired_difference`: λ̂(ε) - λ̂(ε/2) of coupled runs (same noise and
  minibatches), the step-halving check of the calibration and the burn-in.
- :func:`failed_chains`: chains that diverged, by a non-finite loss or by a
  loss that left any plausible range (:func:`explosion_steps`), each named
  with its step and a suggested step size; they are excluded, never averaged in.
- :func:`chain_messages`: the per-chain warnings of any estimator (LLC,
  free energy per β).

The MALA acceptance probability of SGLD proposals is the health check of
Furman & Lau (arXiv 2402.03698): about 0.9 is healthy.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin


class SLTWarning(UserWarning):
    """A sampling run finished but its result needs care."""


ACCEPTANCE_TARGET = 0.9
ACCEPTANCE_LOW = 0.7
RHAT_HIGH = 1.1
#: draws per chain below which ESS, R-hat and the MCSE are not defined (numpyro's split R-hat needs 4)
MIN_DRAWS = 4
#: draws per chain below which those diagnostics are too noisy to trust (a warning)
FEW_DRAWS = 100
#: a chain has exploded once nβ·(L - L(w*)) exceeds this many times its plausible scale (explosion_steps)
EXPLOSION_FACTOR = 100.0


# ----------------------------------------------------------------------------- sampling error


def ess(trace: np.ndarray) -> float:
    """Effective sample size of a [chains, draws] trace (numpyro)."""
    trace = np.asarray(trace, dtype=np.float64)
    if trace.ndim != 2 or trace.size == 0 or trace.shape[1] < MIN_DRAWS or not np.all(np.isfinite(trace)):
        return float("nan")
    if np.ptp(trace) == 0:
        return float(trace.size)
    return float(effective_sample_size(trace))


def rhat(trace: np.ndarray) -> float:
    """Split R-hat of a [chains, draws] trace (numpyro)."""
    trace = np.asarray(trace, dtype=np.float64)
    if (trace.ndim != 2 or trace.size == 0 or trace.shape[1] < MIN_DRAWS or not np.all(np.isfinite(trace))
            or np.ptp(trace) == 0):
        return float("nan")
    return float(split_gelman_rubin(trace))


def mcse(trace: np.ndarray) -> float:
    """Monte Carlo standard error of the mean of a [chains, draws] trace: sd/√ESS."""
    e = ess(trace)
    if not np.isfinite(e) or e <= 0:
        return float("nan")
    return float(np.std(trace, ddof=1) / np.sqrt(e))


def standard_error(trace: np.ndarray) -> float:
    """Standard error of the mean of a [chains, draws] trace: the larger of the MCSE and sd(chain means)/√chains
    (the second stays honest when a slow drift makes the ESS misleading); sd/√size when neither is defined."""
    trace = np.asarray(trace, np.float64)
    se = mcse(trace)
    if trace.shape[0] > 1:
        se = np.nanmax([se, np.std(trace.mean(axis=1), ddof=1) / math.sqrt(trace.shape[0])])
    if not np.isfinite(se) and trace.size > 1:
        se = float(np.std(trace) / math.sqrt(trace.size))
    return float(se)


def paired_difference(at_step: np.ndarray, at_half: np.ndarray) -> tuple[float, float]:
    """(mean, standard error) of ``at_step - at_half`` for coupled [chains, draws] traces (same noise and batches).

    The per-draw contrast is nearly free of the chains' own fluctuations (common random numbers), so
    λ̂(ε) - λ̂(ε/2) is measured far more precisely than either λ̂. Chains non-finite in either trace are
    left out; NaN when none is left.
    """
    a, b = np.asarray(at_step, np.float64), np.asarray(at_half, np.float64)
    keep = np.all(np.isfinite(a), axis=1) & np.all(np.isfinite(b), axis=1)
    d = (a - b)[keep]
    if d.shape[0] == 0 or d.shape[1] < 2:
        return float("nan"), float("nan")
    return float(d.mean()), standard_error(d)


# ----------------------------------------------------------------------------- levelling off


def window_difference(trace: np.ndarray, early: np.ndarray, late: np.ndarray,
                      weights: np.ndarray | None = None) -> tuple[float, float, float]:
    """(m₁, m₂, se of m₂ - m₁): the means of a [chains, T] trace over two windows (boolean [T] masks).

    ``weights`` ([T]) weighs each step (the burn-in's Langevin time). se comes from the spread of the
    per-chain differences across chains (independent chains): an ESS-based error would read a slow upward
    drift as autocorrelation and call it noise. With one chain, the windows' MCSEs combined. Chains with a
    non-finite value are left out (diverged chains are reported, not averaged in).
    """
    trace = np.asarray(trace, np.float64)
    trace = trace[np.all(np.isfinite(trace), axis=1)]
    w = np.ones(trace.shape[1]) if weights is None else np.asarray(weights, np.float64)
    if trace.shape[0] == 0 or early.sum() < MIN_DRAWS or late.sum() < MIN_DRAWS:
        return float("nan"), float("nan"), float("nan")
    first, second = trace[:, early], trace[:, late]
    w1, w2 = w[early], w[late]
    m1 = float(np.average(first, weights=np.broadcast_to(w1, first.shape)))
    m2 = float(np.average(second, weights=np.broadcast_to(w2, second.shape)))
    if trace.shape[0] > 1:
        diff = np.average(second, axis=1, weights=w2) - np.average(first, axis=1, weights=w1)
        se = float(np.std(diff, ddof=1) / np.sqrt(len(diff)))
    else:
        se = float(np.hypot(mcse(first), mcse(second)))
    return m1, m2, se


def halves(T: int) -> tuple[np.ndarray, np.ndarray]:
    """The windows [0, T/2) and [T/2, 2·⌊T/2⌋) of a trace of T draws."""
    index, half = np.arange(T), T // 2
    return index < half, (index >= half) & (index < 2 * half)


def is_level(m1: float, m2: float, se: float, *, z: float, rel: float) -> bool:
    """Whether two window means agree: |m₂ - m₁| ≤ max(rel·|m₂|, z·se) (True when undefined: nothing to judge)."""
    if not np.isfinite(m1 + m2):
        return True
    return abs(m2 - m1) <= max(rel * abs(m2), z * (se if np.isfinite(se) else 0.0))


def levelled_off(trace: np.ndarray, *, z: float = 4.0, rel: float = 0.1) -> tuple[bool, float, float]:
    """Compare the means of the first and second half of the draws: (ok, first-half mean, second-half mean).

    Not ok when the halves differ by more than ``z`` standard errors (:func:`window_difference`) and by
    more than ``rel`` of the second half's mean: the trace is still drifting (burn in longer).
    """
    trace = np.asarray(trace, np.float64)
    if trace.ndim != 2 or trace.shape[1] // 2 < MIN_DRAWS:
        return True, float("nan"), float("nan")
    m1, m2, se = window_difference(trace, *halves(trace.shape[1]))
    return is_level(m1, m2, se, z=z, rel=rel), m1, m2


# ----------------------------------------------------------------------------- failed chains


def explosion_steps(llc_trace: np.ndarray, num_params: int, scale: float = 0.0) -> np.ndarray:
    """[chains] first step at which a chain's nβ·(L - L(w*)) left any plausible range, -1 if never.

    At equilibrium nβ·E[L - L(w*)] is λ̂ ≤ d/2, with fluctuations of order √d and the minibatch noise
    nβ·|L_B - L|. A chain has exploded once its value exceeds ``EXPLOSION_FACTOR`` × (d + ``scale`` +
    its own first value): ``scale`` is the size of the loss on the nβ scale (nβ·|L(w*)|), and the first
    value (the minibatch noise at w*, or the energy of a start drawn from a prior) covers the rest. A
    step slightly above the stability limit grows geometrically (to 1e30 without reaching NaN) and
    passes any such bound within a few dozen steps; non-finite values count too.
    """
    trace = np.asarray(llc_trace, np.float64)
    if trace.size == 0:
        return np.full(trace.shape[0], -1)
    first = np.where(np.isfinite(trace[:, 0]), np.maximum(trace[:, 0], 0.0), 0.0)
    limit = EXPLOSION_FACTOR * (float(num_params) + abs(float(scale)) + first)
    bad = ~np.isfinite(trace) | (trace > limit[:, None])
    return np.where(bad.any(axis=1), np.argmax(bad, axis=1), -1)


def failed_chains(divergent_step: np.ndarray, exploded_step: np.ndarray | None, step_size: float) -> list[dict]:
    """One entry per failed chain: which chain, at which step, why, and what to do."""
    divergent = np.asarray(divergent_step)
    exploded = np.full_like(divergent, -1) if exploded_step is None else np.asarray(exploded_step)
    out = []
    for chain in np.flatnonzero((divergent >= 0) | (exploded >= 0)):
        nan_step, big_step = int(divergent[chain]), int(exploded[chain])
        if big_step >= 0 and (nan_step < 0 or big_step < nan_step):
            step, reason = big_step, f"the loss exploded (nβ·(L - L(w*)) above {EXPLOSION_FACTOR:g}× its plausible scale)"
        else:
            step, reason = nan_step, "the loss became NaN/Inf"
        out.append({
            "chain": int(chain), "step": step, "reason": reason,
            "suggestion": f"try step_size={step_size / 10:.3g} (10× smaller) or a larger localization",
        })
    return out


def few_draws_message(num_draws: int) -> list[str]:
    """The warning for too few draws per chain to judge the estimate (ESS, R-hat, MCSE)."""
    if num_draws < MIN_DRAWS:
        return [f"num_draws={num_draws}: ESS, R-hat and the standard error need at least {MIN_DRAWS} draws per chain, "
                f"so the estimate cannot be judged; use num_draws ≥ {FEW_DRAWS}"]
    if num_draws < FEW_DRAWS:
        return [f"num_draws={num_draws}: with fewer than {FEW_DRAWS} draws per chain ESS and R-hat are unreliable; "
                f"use num_draws ≥ {FEW_DRAWS}"]
    return []


def chain_messages(*, failed: list[dict], num_chains: int, chain_means: np.ndarray, rhat_value: float,
                   acceptance: float | None, levelled: tuple[bool, float, float], where: str = "",
                   step_size: float | None = None) -> list[str]:
    """The per-chain warnings of one set of chains (an LLC estimate, or one β of a free energy).

    ``where`` names the set (e.g. " at β = 0.1"); ``chain_means`` are the healthy chains' means.
    """
    messages = [f"chain {f['chain']}{where} diverged at step {f['step']} ({f['reason']}) and is excluded; "
                f"{f['suggestion']}" for f in failed]
    if len(failed) == num_chains:
        messages.append(f"every chain{where} diverged: no estimate; reduce step_size")
        return messages
    means = np.asarray(chain_means, np.float64)
    if len(means) > 2:
        centre = float(np.median(means))
        spread = float(np.median(np.abs(means - centre)))
        outliers = np.abs(means - centre) > max(10 * spread, 0.5 * abs(centre))
        if outliers.any():
            messages.append(
                f"the healthy chains{where} disagree wildly (per-chain means {', '.join(f'{m:.3g}' for m in means)}): "
                "some may be stuck or escaping; do not trust the mean, run longer or with a smaller step"
            )
    ok, m1, m2 = levelled
    if not ok:
        messages.append(
            f"the trace{where} has not levelled off (first half of draws {m1:.4g}, second half {m2:.4g}); "
            "increase num_burnin (or num_burnin='auto') or num_draws"
        )
    if acceptance is not None and acceptance < ACCEPTANCE_LOW:
        at = "" if step_size is None else f" (ε = {step_size:.3g})"
        messages.append(
            f"MALA acceptance{where} is {acceptance:.2f}{at} (healthy ≈ {ACCEPTANCE_TARGET}): the step size is too "
            "large for this posterior: reduce step_size"
        )
    if np.isfinite(rhat_value) and rhat_value > RHAT_HIGH:
        messages.append(f"split R-hat{where} = {rhat_value:.2f} > {RHAT_HIGH}: chains disagree; run longer draws or "
                        "more burn-in")
    return messages


def emit(messages: list[str]) -> None:
    """Raise each message as an :class:`SLTWarning`."""
    for message in messages:
        warnings.warn(message, SLTWarning, stacklevel=3)
