"""Local learning coefficient estimation (Lau et al. 2023, arXiv 2308.12108).

    λ̂(w*) = nβ · (E_w[L_B(w)] - L(w*)),   w ~ p(w) ∝ exp(-nβ·L(w) - γ/2·‖w - w*‖²)

with nβ = n/log n by default (Watanabe's β = 1/log n) and the expectation
taken over SGLD-family draws. L(w*) is the full-data loss at w*.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import numpy as np

from slt import diagnostics as diag
from slt import validation as check
from slt.burnin import AutoBurnin, burnin_warnings
from slt.localization import resolve_localization
from slt.losses import initial_loss
from slt.settings import LLCConfig, validate_llc_inputs
from slt.io import jsonable
from slt.sampling import SamplingResult
from slt.units import Unit, run_units

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

    def to_arviz(self, log_likelihood: np.ndarray | None = None):
        """ArviZ InferenceData: posterior ``llc`` and ``loss`` [chains, draws] (the per-draw nβ·(L_B - L(w*)) and
        L_B), sample_stats ``diverging``, the settings as attributes; ``log_likelihood`` [chains, draws, n]
        (per-example log-likelihoods, e.g. from :func:`slt.bayes_quartet`) in its group. Diverged chains
        are left out (ArviZ's diagnostics would average them in)."""
        from slt.observables import _arviz

        healthy = np.isfinite(self.llc_per_chain)
        draws = self.loss_trace.shape[1]
        diverging = np.zeros((int(healthy.sum()), draws), bool)
        groups = {
            "posterior": {"llc": self.llc_trace[healthy], "loss": self.loss_trace[healthy]},
            "sample_stats": {"diverging": diverging},
        }
        if log_likelihood is not None:
            groups["log_likelihood"] = {"x": np.asarray(log_likelihood)}
        attrs = {k: (str(v) if isinstance(v, (dict, tuple, list)) else v) for k, v in self.config.to_dict().items()}
        return _arviz().from_dict(**groups, attrs={**attrs, "init_loss": self.init_loss})

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
    restrict=None,
) -> LLCResult:
    """Estimate the local learning coefficient λ̂ at ``params``.

    λ̂ = nβ·(mean over draws of L_B(w_t) - L(w*)) with draws from the local
    tempered posterior exp(-nβ·L(w) - γ/2·‖w - w*‖²), sampled by ``sampler``
    (one of "sgld", "psgld", "sghmc", "sgnht", "mala") with the update
    Δw = -(ε/2)·(nβ·∇L_B + γ·(w - w*)) + N(0, ε) (Lau et al. 2023).

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss over the batch.
      params: pytree, the point w* measured (a trained checkpoint).
      data: pytree of arrays with leading axis n (examples). Passing a
        sub-dataset gives the data-refined LLC of Wang et al. 2024 (arXiv
        2410.02984): the posterior and the measured loss are both that
        distribution's.
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
        sghmc/sgnht, {"rmsprop_decay": 0.99} for psgld; for every SGLD-family
        sampler ``noise_level`` (σ scaling the Langevin noise; 0 gives noiseless
        descent, a diagnostic) and ``bounding_box`` (clamp each coordinate to
        w* ± b after every step, devinterp's ``bounding_box_size``). Checked
        before anything is compiled.
      acceptance_checks: how many times per chain to compute the MALA
        acceptance of the proposals (sgld/psgld); 0 = never.
      init_loss: L(w*) if already known; computed on the full data otherwise.
      progress: show a progress bar (default: on a terminal for long runs).
      devices: shard the chains over devices: None (the most devices whose
        number divides num_chains), "all", an int, or a list of devices
        (see :func:`slt.sharding.resolve_devices`).
      restrict: the weight-refined LLC (Wang et al. 2024): only these
        coordinates move, the rest stay exactly at w*. A glob pattern or list
        of patterns over '/'-joined key paths (``"blocks/0/attn/*"``), a
        pytree of booleans or boolean arrays with the params' structure, or a
        callable ``(path, leaf) -> bool | mask`` (:mod:`slt.components`). The
        result records it and the number of free parameters
        (``result.num_params``, ``diagnostics["restriction"]``).

    Returns:
      :class:`LLCResult`; ``result.summary()`` prints a readable report.
    """
    results = estimate_llc_components(
        loss_fn, params, data, components={"": restrict}, step_size=step_size, nbeta=nbeta,
        localization=localization, num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin,
        batch_size=batch_size, sampler=sampler, seed=seed, steps_between_draws=steps_between_draws,
        sampler_options=sampler_options, acceptance_checks=acceptance_checks, init_loss=init_loss,
        progress=progress, devices=devices,
    )
    return results[""]


def estimate_llc_components(
    loss_fn: Callable[[PyTree, PyTree], Any],
    params: PyTree,
    data: PyTree,
    *,
    components,
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
    whole_model: bool = False,
) -> dict[str, LLCResult]:
    """The weight-refined LLC of every component in ONE compiled program: ``{name: LLCResult}``.

    ``components``: ``{name: restrict}`` (each a restriction as for :func:`estimate_llc`, None = the whole
    model), a list of patterns (each its own component), ``"layers"`` (:func:`slt.components.layers`) or
    ``"heads"`` (:func:`slt.components.heads`). ``whole_model=True`` adds the unrestricted model as
    ``"model"``. The masks are inputs batched with the chains: K components cost K× the chain-steps of one,
    and one compile; each component gets the chains (and keys) ``estimate_llc(restrict=...)`` would give it,
    so its result equals the same restriction run alone. Other arguments as :func:`estimate_llc`;
    ``step_size="auto"`` calibrates once on the whole model (the stiffest posterior: its step is safe for
    every restriction) and the burn-in lasts until every component has levelled off.
    """
    from slt.components import describe, num_free, resolve_components, restriction_mask

    named = resolve_components(params, components)
    if whole_model:
        named = {**named, "model": None}
    masks = {name: None if r is None else restriction_mask(params, r) for name, r in named.items()}
    plan = plan_estimate(loss_fn, params, data, step_size=step_size, nbeta=nbeta, localization=localization,
                 num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin, batch_size=batch_size,
                 sampler=sampler, seed=seed, steps_between_draws=steps_between_draws, sampler_options=sampler_options,
                 init_loss=init_loss)
    units = [Unit(params, plan.init_loss, masks[name]) for name in named]
    sampled = run_units(loss_fn, data, units, plan.config, acceptance_checks=acceptance_checks, progress=progress,
                        devices=devices, auto_burnin=plan.auto_burnin, adapt_step=plan.calibration is not None)
    total = num_parameters(params)
    out = {}
    for (name, restrict), run in zip(named.items(), sampled.runs):
        free = total if masks[name] is None else num_free(masks[name])
        llc = llc_from_run(run, plan.init_loss, sampled.config, num_params=free)
        if masks[name] is not None:
            llc.diagnostics["restriction"] = {"description": describe(restrict), "num_free": free,
                                              "num_params": total}
        out[name] = _with_burnin(_with_calibration(llc, plan.calibration), sampled.burnin)
    return out


@dataclass
class EstimatePlan:
    """The settings of an estimate once "auto" and "scale" are resolved."""

    config: LLCConfig
    init_loss: float
    auto_burnin: AutoBurnin | None
    calibration: Any


def plan_estimate(loss_fn, params, data, *, step_size, nbeta=None, localization=1.0, num_chains=4, num_draws=1000,
                  num_burnin=None, batch_size=None, sampler="sgld", seed=0, steps_between_draws=1,
                  sampler_options=None, init_loss=None) -> EstimatePlan:
    """Check every setting (before anything is compiled), then resolve γ="scale", ε="auto" and the burn-in."""
    check.require(not isinstance(step_size, str) or step_size == "auto",
                  f'step_size must be a number or "auto", got {step_size!r}')
    auto_burnin = resolve_burnin(num_burnin, auto_step=isinstance(step_size, str))
    num_burnin = 0 if num_burnin is None or auto_burnin is not None else num_burnin
    localization = resolve_localization(localization, params)
    n, batch, nb = validate_llc_inputs(
        loss_fn, params, data, step_size=1.0 if isinstance(step_size, str) else step_size, nbeta=nbeta,
        localization=localization, num_chains=num_chains, num_draws=num_draws,
        num_burnin=num_burnin, batch_size=batch_size, sampler=sampler,
        steps_between_draws=steps_between_draws, sampler_options=sampler_options,
    )
    calibration = None
    if isinstance(step_size, str):
        from slt.calibration import calibrate

        calibration = calibrate(
            loss_fn, params, data, nbeta=nbeta, localization=localization, batch_size=batch_size,
            sampler=sampler, seed=seed, sampler_options=sampler_options, init_loss=init_loss,
        )
        step_size, init_loss = calibration.step_size, calibration.init_loss  # L(w*) computed once, for both
    config = LLCConfig(
        sampler=sampler, step_size=float(step_size), nbeta=float(nb), localization=float(localization),
        num_chains=int(num_chains), num_draws=int(num_draws), num_burnin=int(num_burnin),
        steps_between_draws=int(steps_between_draws), batch_size=batch, num_examples=n, seed=int(seed),
        sampler_options=tuple(sorted((sampler_options or {}).items())),
    )
    return EstimatePlan(config, initial_loss(loss_fn, params, data, init_loss), auto_burnin, calibration)


def resolve_burnin(num_burnin, *, auto_step: bool) -> AutoBurnin | None:
    """The :class:`AutoBurnin` rule for ``num_burnin`` ("auto", an AutoBurnin, or None with an automatic step),
    or None for a fixed number of steps."""
    if num_burnin is None:
        return AutoBurnin() if auto_step else None
    if isinstance(num_burnin, (str, AutoBurnin)):
        check.require(num_burnin == "auto" or isinstance(num_burnin, AutoBurnin),
                      f'num_burnin must be a number of steps, "auto" or an AutoBurnin, got {num_burnin!r}')
        return num_burnin if isinstance(num_burnin, AutoBurnin) else AutoBurnin()
    return None


def _with_burnin(llc: "LLCResult", burn) -> "LLCResult":
    """Record the automatic burn-in (if any) and warn about what it could not settle."""
    if burn is not None:
        llc.diagnostics["burnin"] = burn.to_dict()
        if llc.diagnostics["healthy_chains"] > 0:
            messages = burnin_warnings(burn)
            llc.diagnostics["warnings"].extend(messages)
            diag.emit(messages)
    return llc


def _with_calibration(llc: "LLCResult", calibration) -> "LLCResult":
    """Record the calibration (if any) that chose the step size."""
    if calibration is not None:
        llc.diagnostics["calibration"] = calibration.to_dict()
    return llc


