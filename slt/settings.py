"""The settings of an LLC estimate, checked once before anything is traced or compiled.

Every estimator (:func:`slt.estimate_llc`, :func:`slt.calibrate`,
:func:`slt.llc_trajectory`, :func:`slt.free_energy`) validates its inputs
here and records them in one frozen :class:`LLCConfig`, from which the static
settings of the sampling program (:class:`slt.sampling.RunConfig`) follow.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from typing import Any

from slt import validation as check
from slt.samplers.base import SAMPLERS, check_options, get_sampler
from slt.sampling import RunConfig


def default_nbeta(n: int) -> float:
    """nβ = n / log n (Watanabe 2013: β = 1/log n, the WBIC temperature)."""
    if n < 2:
        raise check.SLTInputError(f"nbeta defaults to n/log n, undefined for n={n}; pass nbeta explicitly")
    return n / math.log(n)


@dataclass(frozen=True)
class LLCConfig:
    """Everything that determined an LLC estimate (recorded with the result)."""

    sampler: str
    step_size: float
    nbeta: float
    localization: float
    num_chains: int
    num_draws: int
    num_burnin: int
    steps_between_draws: int
    batch_size: int
    num_examples: int
    seed: int
    sampler_options: tuple[tuple[str, Any], ...] = ()

    @property
    def num_steps(self) -> int:
        return self.num_burnin + self.num_draws * self.steps_between_draws

    def to_dict(self) -> dict:
        """JSON-serialisable settings (sampler options as a dict)."""
        out = asdict(self)
        out["sampler_options"] = dict(self.sampler_options)
        return out


def validate_llc_inputs(loss_fn, params, data, *, step_size, nbeta, localization, num_chains, num_draws,
                        num_burnin, batch_size, sampler, steps_between_draws=1, sampler_options=None) -> tuple[int, int, float]:
    """Check every argument (without compiling); return (n, batch_size, nβ)."""
    check.require(callable(loss_fn), f"loss_fn must be callable as loss_fn(params, batch), got {type(loss_fn).__name__}")
    check.require(sampler in SAMPLERS, f"sampler={sampler!r} is not known; choose one of {', '.join(SAMPLERS)}")
    check_options(sampler, sampler_options)
    n = check.data_size(data)
    check.finite_data(data)
    check.finite_params(params)
    check.positive_number("step_size", step_size)
    nbeta = default_nbeta(n) if nbeta is None else check.positive_number("nbeta", nbeta)
    check.positive_number("localization", localization, allow_zero=True)
    check.positive_int("num_chains", num_chains)
    check.positive_int("num_draws", num_draws)
    check.positive_int("num_burnin", num_burnin, minimum=0)
    check.positive_int("steps_between_draws", steps_between_draws)
    batch = check.batch_size(batch_size, n)
    if get_sampler(sampler).FULL_BATCH_ONLY:
        check.require(batch == n, f"sampler={sampler!r} is full-batch (exact Metropolis correction); use batch_size=None")
    check.scalar_loss(loss_fn, params, data, batch)
    return n, batch, nbeta


def run_config(config: LLCConfig, *, acceptance_checks: int = 100, progress: bool | None = None) -> RunConfig:
    """The static sampling-program settings for an :class:`LLCConfig`."""
    steps = config.num_steps
    if progress is None:
        progress = sys.stderr.isatty() and steps * config.num_chains >= 20_000
    return RunConfig(
        sampler=config.sampler,
        num_chains=config.num_chains,
        num_steps=steps,
        batch_size=config.batch_size,
        sampler_options=config.sampler_options,
        acceptance_every=max(1, steps // acceptance_checks) if acceptance_checks else 0,
        progress_every=max(1, steps // 100) if progress else 0,
    )
