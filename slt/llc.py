"""Local learning coefficient estimation (Lau et al. 2023, arXiv 2308.12108).

    λ̂(w*) = nβ · (E_w[L_B(w)] - L(w*)),   w ~ p(w) ∝ exp(-nβ·L(w) - γ/2·‖w - w*‖²)

with nβ = n/log n by default (Watanabe's β = 1/log n) and the expectation
taken over SGLD-family draws. L(w*) is the full-data loss at w*.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import jax
import numpy as np

from slt import diagnostics as diag
from slt import validation as check
from slt.burnin import AutoBurnin, burn_in, burnin_warnings, merge_runs
from slt.localization import resolve_localization
from slt.losses import initial_loss
from slt.posterior import Hyperparameters
from slt.samplers.base import get_sampler
from slt.settings import LLCConfig, run_config, validate_llc_inputs
from slt.store import jsonable
from slt.sampling import RunConfig, SamplingResult, run_chains

PyTree = Any


@dataclass
class LLCResult:
    """An LLC estimate with its traces and diagnostics.

    ``llc_mean`` and ``llc_std`` (sd across chains) use only chains that did
    not diverge; ``llc_per_chain`` has NaN for failed chains.
    """

    llc_mean: float
    llc_std: float
    llc_per_chain: np.ndarray  # [chains]
    loss_trace: np.ndarray  # [chains, draws] minibatch loss at each draw
    init_loss: float  # L(w*) on the full data
    nbeta: float
    config: LLCConfig
    diagnostics: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)
    num_params: int | None = None  # d: the coordinates the chains moved (the free ones under a restriction)

    @property
    def llc_trace(self) -> np.ndarray:
        """[chains, draws] of nβ·(L_B(w_t) - L(w*)), the per-draw LLC."""
        return self.nbeta * (self.loss_trace - self.init_loss)

    def to_dict(self, *, traces: bool = True) -> dict:
        """JSON-serialisable dict (NaN becomes None)."""
        out = {
            "llc_mean": self.llc_mean,
            "llc_std": self.llc_std,
            "llc_per_chain": self.llc_per_chain,
            "init_loss": self.init_loss,
            "nbeta": self.nbeta,
            "config": self.config.to_dict(),
            "diagnostics": self.diagnostics,
            "timing": self.timing,
            "num_params": self.num_params,
        }
        if traces:
            out["loss_trace"] = self.loss_trace
        return jsonable(out)

    def summary(self) -> str:
        """A readable report of the estimate and its health checks."""
        d = self.diagnostics
        c = self.config
        lines = [
            f"LLC  λ̂ = {self.llc_mean:.4g} ± {d.get('mcse', float('nan')):.2g} (MCSE), sd across chains {self.llc_std:.3g}",
            f"     {c.sampler}: ε={c.step_size:g}, nβ={self.nbeta:.4g}, γ={c.localization:g}, batch {c.batch_size}/{c.num_examples}, "
            f"{c.num_chains} chains × {c.num_draws} draws (+{c.num_burnin} burn-in"
            + (", automatic)" if "burnin" in d else ")"),
            "     per chain: " + ", ".join("failed" if not np.isfinite(v) else f"{v:.3g}" for v in self.llc_per_chain),
            f"     ESS {d.get('ess', float('nan')):.0f}, R-hat {d.get('rhat', float('nan')):.3f}"
            + (
                f", MALA acceptance {d['acceptance_mean']:.2f} (ideal ≈ {diag.ACCEPTANCE_TARGET})"
                if d.get("acceptance_mean") is not None
                else ""
            ),
            f"     L(w*) = {self.init_loss:.6g}; compile {self.timing.get('compile_seconds', 0):.2f} s, "
            f"sampling {self.timing.get('sample_seconds', 0):.2f} s"
            + (f" on {self.timing['num_devices']} devices" if self.timing.get("num_devices", 1) > 1 else ""),
        ]
        lines += [f"  !  {w}" for w in d.get("warnings", [])]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"LLCResult(llc_mean={self.llc_mean:.4g}, llc_std={self.llc_std:.3g}, sampler={self.config.sampler!r}, chains={len(self.llc_per_chain)})"


def num_parameters(params: PyTree) -> int:
    """d, the number of parameters (coordinates) of a pytree."""
    return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def llc_from_run(run: SamplingResult, init_loss: float, config: LLCConfig, *, num_params: int) -> LLCResult:
    """Turn the loss traces of a run into an LLC estimate with diagnostics (excluding failed chains).

    ``num_params``: d, the number of coordinates the chains move (the free ones under a restriction),
    the scale of a plausible λ̂ (:func:`slt.diagnostics.explosion_steps`).
    """
    nbeta = config.nbeta
    every_step = nbeta * (run.loss_trace.astype(np.float64) - init_loss)
    exploded = diag.explosion_steps(every_step, num_params, nbeta * abs(init_loss))
    failed = diag.failed_chains(run.divergent_step, exploded, config.step_size)
    healthy = np.ones(config.num_chains, bool)
    healthy[[f["chain"] for f in failed]] = False
    llc_trace = every_step[:, config.num_burnin :: config.steps_between_draws][:, : config.num_draws]
    draws = run.loss_trace[:, config.num_burnin :: config.steps_between_draws][:, : config.num_draws]
    per_chain = np.where(healthy, llc_trace.mean(axis=1) if llc_trace.size else np.nan, np.nan)
    good = llc_trace[healthy]
    llc_mean = float(np.mean(per_chain[healthy])) if healthy.any() else float("nan")
    llc_std = float(np.std(per_chain[healthy], ddof=1)) if healthy.sum() > 1 else float("nan")

    acc_mask = run.acceptance_steps >= config.num_burnin
    acc = run.acceptance[:, acc_mask] if run.acceptance.size else run.acceptance
    acc_per_chain = np.nanmean(acc, axis=1) if acc.size and np.isfinite(acc).any() else None
    acc_mean = float(np.nanmean(acc_per_chain[healthy])) if acc_per_chain is not None and healthy.any() else None
    levelled = diag.levelled_off(good) if good.size else (True, float("nan"), float("nan"))
    result_diag = {
        "ess": diag.ess(good),
        "rhat": diag.rhat(good),
        "mcse": diag.mcse(good),
        "ess_per_chain": [diag.ess(llc_trace[i : i + 1]) for i in range(config.num_chains)],
        "acceptance_mean": acc_mean,
        "acceptance_per_chain": acc_per_chain,
        "divergent_chains": failed,
        "healthy_chains": int(healthy.sum()),
        "first_half_mean": levelled[1],
        "second_half_mean": levelled[2],
    }
    messages = diag.few_draws_message(config.num_draws)
    messages += diag.chain_messages(failed=failed, num_chains=config.num_chains, chain_means=per_chain[healthy],
                                    rhat_value=result_diag["rhat"], acceptance=acc_mean, levelled=levelled,
                                    step_size=config.step_size)
    if np.isfinite(llc_mean) and llc_mean < 0:
        messages.append(
            f"λ̂ = {llc_mean:.3g} < 0: the sampled loss sits below L(w*) = {init_loss:.4g}; w* is not a local minimum "
            "(train longer or check the checkpoint), or the step size is too large"
        )
    result_diag["warnings"] = messages
    diag.emit(messages)
    return LLCResult(
        llc_mean=llc_mean,
        llc_std=llc_std,
        llc_per_chain=per_chain,
        loss_trace=draws,
        init_loss=float(init_loss),
        nbeta=nbeta,
        config=config,
        diagnostics=result_diag,
        timing={"compile_seconds": run.compile_seconds, "sample_seconds": run.sample_seconds,
                "num_devices": int(run.extras.get("num_devices", 1))},
        num_params=int(num_params),
    )


def estimate_llc(
    loss_fn: Callable[[PyTree, PyTree], Any],
    params: PyTree,
    data: PyTree,
    *,
    step_size: float | str,
    nbeta: float | None = None,
    localization: float | str = 1.0,
    num_chains: int = 4,
    num_draws: int = 1000,
    num_burnin: "int | str | AutoBurnin | None" = None,
    batch_size: int | None = None,
    sampler: str = "sgld",
    seed: int = 0,
    steps_between_draws: int = 1,
    sampler_options: dict | None = None,
    acceptance_checks: int = 100,
    init_loss: float | None = None,
    progress: bool | None = None,
    devices=None,
) -> LLCResult:
    """Estimate the local learning coefficient λ̂ at ``params``.

    λ̂ = nβ·(mean over draws of L_B(w_t) - L(w*)) with draws from the local
    tempered posterior exp(-nβ·L(w) - γ/2·‖w - w*‖²), sampled by ``sampler``
    (one of "sgld", "psgld", "sghmc", "sgnht", "mala") with the update
    Δw = -(ε/2)·(nβ·∇L_B + γ·(w - w*)) + N(0, ε) (Lau et al. 2023).

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss over the batch.
      params: pytree, the point w* measured (a trained checkpoint).
      data: pytree of arrays with leading axis n (examples).
      step_size: ε (same convention as Lau et al. and devinterp), or "auto" to
        run :func:`slt.calibrate` first (its choice is recorded in
        ``result.diagnostics["calibration"]``).
      nbeta: nβ; default n/log n.
      localization: γ, or "scale" for γ = 0.5·d/‖w*‖², a neighbourhood the
        size of the weights (:func:`slt.localization.scale_localization`);
        the number used is ``result.config.localization``.
      num_chains, num_draws, num_burnin, steps_between_draws: chain lengths;
        each chain runs num_burnin + num_draws·steps_between_draws steps.
        ``num_burnin="auto"`` (or an :class:`slt.burnin.AutoBurnin`) burns in
        until the λ̂ trace has levelled off (:mod:`slt.burnin`); the steps it
        took are in ``result.config.num_burnin``. Default (None): "auto" with
        ``step_size="auto"``, else 0 (the published protocols).
      batch_size: minibatch size; None = full batch.
      sampler_options: per-sampler options, e.g. {"friction": 0.1} for
        sghmc/sgnht, {"rmsprop_decay": 0.99} for psgld.
      acceptance_checks: how many times per chain to compute the MALA
        acceptance of the proposals (sgld/psgld); 0 = never.
      init_loss: L(w*) if already known; computed on the full data otherwise.
      progress: show a progress bar (default: on a terminal for long runs).
      devices: shard the chains over devices: None (the most devices whose
        number divides num_chains), "all", an int, or a list of devices
        (see :func:`slt.sharding.resolve_devices`).

    Returns:
      :class:`LLCResult`; ``result.summary()`` prints a readable report.
    """
    localization = resolve_localization(localization, params)
    calibration = None
    if isinstance(step_size, str):
        check.require(step_size == "auto", f'step_size must be a number or "auto", got {step_size!r}')
        from slt.calibration import calibrate

        calibration = calibrate(
            loss_fn, params, data, nbeta=nbeta, localization=localization, batch_size=batch_size,
            sampler=sampler, seed=seed, sampler_options=sampler_options, init_loss=init_loss,
        )
        step_size = calibration.step_size
        init_loss = calibration.init_loss  # L(w*) was computed once, for the calibration
    if num_burnin is None:
        num_burnin = "auto" if calibration is not None else 0
    auto_burnin = None
    if isinstance(num_burnin, (str, AutoBurnin)):
        check.require(num_burnin == "auto" or isinstance(num_burnin, AutoBurnin),
                      f'num_burnin must be a number of steps, "auto" or an AutoBurnin, got {num_burnin!r}')
        auto_burnin = num_burnin if isinstance(num_burnin, AutoBurnin) else AutoBurnin()
        num_burnin = 0
    n, batch, nbeta = validate_llc_inputs(
        loss_fn, params, data, step_size=step_size, nbeta=nbeta, localization=localization,
        num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin, batch_size=batch_size,
        sampler=sampler, steps_between_draws=steps_between_draws, sampler_options=sampler_options,
    )
    options = tuple(sorted((sampler_options or {}).items()))
    config = LLCConfig(
        sampler=sampler, step_size=float(step_size), nbeta=float(nbeta), localization=float(localization),
        num_chains=int(num_chains), num_draws=int(num_draws), num_burnin=int(num_burnin),
        steps_between_draws=int(steps_between_draws), batch_size=batch, num_examples=n, seed=int(seed),
        sampler_options=options,
    )
    if init_loss is None:
        init_loss = initial_loss(loss_fn, params, data)
    draw_config = run_config(config, acceptance_checks=acceptance_checks, progress=progress)
    if auto_burnin is None:
        result = run_chains(loss_fn, params, data, Hyperparameters(config.step_size, config.nbeta, config.localization),
                            config=draw_config, seed=config.seed, devices=devices)
        return _with_calibration(llc_from_run(result, init_loss, config, num_params=num_parameters(params)), calibration)
    adapt = calibration is not None  # a calibrated step: bias-checked (and acceptance-guarded for Langevin samplers)
    run, burn, config = _sample_with_auto_burnin(loss_fn, params, data, config, draw_config, auto_burnin, init_loss,
                                                 adapt_step=adapt, progress=progress, devices=devices)
    llc = llc_from_run(run, init_loss, config, num_params=num_parameters(params))
    llc.diagnostics["burnin"] = burn.to_dict()
    if llc.diagnostics["healthy_chains"] > 0:
        messages = burnin_warnings(burn)
        llc.diagnostics["warnings"].extend(messages)
        diag.emit(messages)
    return _with_calibration(llc, calibration)


def _sample_with_auto_burnin(loss_fn, params, data, config: LLCConfig, draw_config: RunConfig, rule: AutoBurnin,
                             init_loss: float, *, adapt_step: bool, progress, devices):
    """Burn in chunk by chunk until λ̂ levels off (:func:`slt.burnin.burn_in`), then draw from where it stopped.

    Returns (the burn-in and draws as one run, the burn-in record, the config with the burn-in and step used).
    """
    langevin = get_sampler(config.sampler).ACCEPTANCE == "checked"

    def run_chunk(state, steps, step):
        chunk_config = replace(draw_config, num_steps=steps, progress_every=0,
                               acceptance_every=max(1, steps // 20) if adapt_step and langevin else 0)
        return run_chains(loss_fn, params, data, Hyperparameters(step, config.nbeta, config.localization),
                          config=chunk_config, seed=config.seed, devices=devices, init_state=state, return_state=True)

    show = sys.stderr.isatty() if progress is None else progress
    burn = burn_in(run_chunk, lambda losses: config.nbeta * (losses - init_loss), rule.resolved(draw_config.num_steps),
                   step_size=config.step_size, adapt_step=adapt_step, progress=show)
    config = replace(config, num_burnin=burn.steps, step_size=burn.step_size)
    draws = run_chains(loss_fn, params, data, Hyperparameters(config.step_size, config.nbeta, config.localization),
                       config=draw_config, seed=config.seed, devices=devices, init_state=burn.state)
    return merge_runs(burn, draws), burn, config


def _with_calibration(llc: "LLCResult", calibration) -> "LLCResult":
    """Record the calibration (if any) that chose the step size."""
    if calibration is not None:
        llc.diagnostics["calibration"] = calibration.to_dict()
    return llc


