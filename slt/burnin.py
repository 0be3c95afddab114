"""Burn-in that lasts until the λ̂ trace has levelled off (``num_burnin="auto"``).

Chains start at w*, the bottom of the local posterior, so the loss trace
rises while they spread out. Along singular directions the spread is
diffusive: a direction whose posterior scale is x needs about x²/ε steps,
so at the small steps that deep networks need the rise can last tens of
thousands of steps (deep linear networks at ε = 5e-7: λ̂ still climbing after
40k steps). A fixed burn-in is a guess; this one is measured.

Rule (a window comparison in the spirit of Geweke 1992 and of split R-hat,
Gelman et al. BDA3 §11.4): the burn-in runs in chunks of one compiled
program, each continuing the last exactly. With T steps done, let m₁ and m₂
be the mean LLC over steps (T/4, 5T/8] and (5T/8, T]. The trace has levelled
when

    |m₂ - m₁| ≤ max(rel·|m₂|, z·se(m₂ - m₁)),

se from the spread of the per-chain differences across the independent
chains, i.e. the windows agree to ``rel`` or within ``z`` (default 2)
standard errors.
Because both windows scale with T, a trace that approaches its level like
e^(-t/τ) stops at T ≈ a few τ. The spread along singular directions is
diffusive, and its rise slower, like t^(-1/2): there m₂ - m₁ is about 2/5 of
the rise still to come, so rel = 1% stops with about 2.5% left. Adjacent
quarter-windows (T/2, 3T/4], (3T/4, T] see only 1/5 of it: with them the
[20]×4 deep linear network stopped 5.6% below its exact value
(docs/calibration.md).

For a step the calibration chose, the chains also get a bias check where
they are (:func:`halving_difference`): the next chunk is run twice from the
same state, at ε and at ε/2 with the same noise and minibatches, and
D = λ̂(ε) - λ̂(ε/2) is read over the chunks' second halves. SGLD's bias is
O(ε), so D is about half the bias at ε. When D exceeds both
``halving_rel``·λ̂ and ``halving_z`` standard errors, the chains continue
from the ε/2 run at ε/2. The check runs once the windows have levelled,
before the draws. After the acceptance guard of :func:`burn_in` has halved
the step during the climb it also runs while λ̂ still climbs: at the first
reading of the restarted windows, then each time the run has doubled. The
guard firing says the chains have spread into stiffer regions than the
calibration saw, where a step's bias grows as they go, and a trace rising
with its own bias never levels off for a check that waited
([100, 100, 100]: +32.5% at the cap). Earlier in the climb a coupled
difference overstates the bias: on [20]×4 it read 3.9% at 20k steps for a
step that passed the check at the level, and halving there stopped the
slowed climb 11% below λ. The calibration's own halving check sees only its
first 300 steps from w*, and its minibatch MALA acceptance reads high where
minibatch noise is large (docs/calibration.md).

After an acceptance-guard halving during the climb the windows keep the
whole climb in view, in Langevin time τ = Σε (a step at ε/2 moves the
chains half as far, so the windows are τ in (τ/4, 5τ/8] and (5τ/8, τ], each
step weighted by its ε). The guard runs the next chunk at ε and at ε/2 from
one state, as the bias check does, and takes the level shift
D = λ̂(ε) - λ̂(ε/2) out of the trace before the change; the windows then see
the same 2/5 of the climb still to come as at an unchanged step. Windows
restarted at the change see far less of it: on [60]×5 they read the climb at
the halved step as level 1.5% below its exact value. A shift the bias check
would call biased is not taken out: such a step's bias grew as the chains
spread, so the earlier trace carries less of it than D
([100, 100, 100]: D = 24% of λ̂ at the guard; with it and the next two
halvings' shifts taken out, the windows were still 11% apart at the cap). Then, and after a biased check, the
windows restart at the new step; during the climb they are read once they
span half the run so far (:func:`climb_window`), at the level after
``min_steps`` (only the new step's settling is left).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from slt import diagnostics as diag
from slt import validation as check
from slt.sampling import ChainState, SamplingResult


CAP_PER_DRAW_STEP = 50  # default max_steps: this many times the draws' steps (at least 10,000)


@dataclass(frozen=True)
class AutoBurnin:
    """Settings of the adaptive burn-in (pass one as ``num_burnin`` to change them).

    ``chunk``: steps per compiled call (None: a quarter of the draws' steps,
    at least 100). ``min_steps``/``max_steps``: bounds on the burn-in (None:
    4 chunks / 50× the draws' steps, at least 10,000). ``rel``, ``z``: the
    levelling rule of the module docstring. ``halving_rel``, ``halving_z``,
    ``max_halvings``: the bias check of a calibrated step (module docstring;
    the tolerance of :func:`slt.calibrate`'s halving check, so the bias left is
    about 5%); ``max_halvings=0`` turns it off.
    """

    chunk: int | None = None
    min_steps: int | None = None
    max_steps: int | None = None
    rel: float = 0.01
    z: float = 2.0
    halving_rel: float = 0.025
    halving_z: float = 2.0
    max_halvings: int = 6

    def __post_init__(self):
        for name in ("chunk", "min_steps", "max_steps"):
            if getattr(self, name) is not None:
                check.positive_int(f"AutoBurnin.{name}", getattr(self, name))
        check.positive_number("AutoBurnin.rel", self.rel, allow_zero=True)
        check.positive_number("AutoBurnin.z", self.z, allow_zero=True)
        check.positive_number("AutoBurnin.halving_rel", self.halving_rel, allow_zero=True)
        check.positive_number("AutoBurnin.halving_z", self.halving_z, allow_zero=True)
        check.require(isinstance(self.max_halvings, int) and self.max_halvings >= 0,
                      f"AutoBurnin.max_halvings must be a whole number ≥ 0, got {self.max_halvings!r}")

    def resolved(self, draw_steps: int) -> "AutoBurnin":
        """Fill the defaults that depend on the number of draw steps."""
        chunk = self.chunk or max(100, draw_steps // 4)
        max_steps = self.max_steps or max(10_000, CAP_PER_DRAW_STEP * draw_steps)
        min_steps = min(self.min_steps or 4 * chunk, max_steps)
        return replace(self, chunk=int(chunk), min_steps=int(min_steps), max_steps=int(max_steps))


@dataclass
class BurninResult:
    """Where the burn-in stopped, and why."""

    steps: int
    levelled: bool
    window_means: tuple[float, float]  # (m₁, m₂) of the last check, in LLC units
    state: ChainState
    loss_trace: np.ndarray  # [chains, steps] minibatch losses during burn-in
    compile_seconds: float
    sample_seconds: float
    step_size: float  # the step the draws use (halved from the calibration's when adapted)
    # [{"step", "reason", "from", "to", ...}]; an "acceptance" change also has the level shift it measured,
    # "difference" ± "se", and "biased" (the windows restarted instead of taking it out)
    step_changes: list = field(default_factory=list)
    # [{"step", "levelled", "step_size", "llc_half_step", "difference", "se", "biased", "healthy_chains"}
    #  or {"step", "step_size", "skipped"}]; "levelled": False for a check during the climb
    bias_checks: list = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-friendly summary (no traces)."""
        return {"steps": self.steps, "levelled": self.levelled, "window_means": list(self.window_means),
                "step_size": self.step_size, "step_changes": self.step_changes, "bias_checks": self.bias_checks}


def window_means(llc_trace: np.ndarray, step_sizes: np.ndarray | None = None) -> tuple[float, float, float]:
    """(m₁, m₂, se of m₂ - m₁) over steps (T/4, 5T/8] and (5T/8, T] of a [chains, T] trace.

    ``step_sizes`` ([T], the ε of each step): the windows are taken in Langevin time τ = Σε instead of
    steps, τ in (τ_T/4, 5τ_T/8] and (5τ_T/8, τ_T], each step weighted by its ε (the chains' spread
    grows with τ: a step at ε/2 moves them half as far). The statistic is
    :func:`slt.diagnostics.window_difference` (se from the spread of the per-chain differences).
    """
    T = np.shape(llc_trace)[1]
    if step_sizes is None or np.all(np.asarray(step_sizes) == np.asarray(step_sizes)[0]):
        index, weights = np.arange(T), None
        early, late = (index >= T // 4) & (index < (5 * T) // 8), index >= (5 * T) // 8
    else:
        weights = np.asarray(step_sizes, np.float64)
        tau = np.cumsum(weights)
        early, late = (tau > tau[-1] / 4) & (tau <= 5 * tau[-1] / 8), tau > 5 * tau[-1] / 8
    return diag.window_difference(llc_trace, early, late, weights)


def has_levelled(llc_trace: np.ndarray, rule: AutoBurnin,
                 step_sizes: np.ndarray | None = None) -> tuple[bool, float, float]:
    """Apply the levelling rule to a [chains, T] LLC trace (windows in Langevin time given ``step_sizes``): (levelled, m₁, m₂)."""
    m1, m2, se = window_means(llc_trace, step_sizes)
    if not np.isfinite(m1 + m2):
        return False, m1, m2
    return diag.is_level(m1, m2, se, z=rule.z, rel=rule.rel), m1, m2


def halving_difference(at_step: np.ndarray, at_half: np.ndarray) -> tuple[float, float, float]:
    """(D, se of D, λ̂ at ε/2) from coupled [chains, k] LLC traces run from one state at ε and at ε/2.

    D = mean λ̂(ε) - mean λ̂(ε/2) over the traces' second halves (the first half lets the stiff
    directions relax to the new step), :func:`slt.diagnostics.paired_difference`. Chains non-finite in
    either trace are left out.
    """
    a, b = (np.asarray(x, np.float64)[:, x.shape[1] // 2:] for x in (at_step, at_half))
    d, se = diag.paired_difference(a, b)
    keep = np.all(np.isfinite(a), axis=1) & np.all(np.isfinite(b), axis=1)
    return d, se, float(b[keep].mean()) if keep.any() and np.isfinite(d) else float("nan")


def bias_check(run_chunk, state, steps: int, step_size: float, to_llc,
               rule: AutoBurnin) -> tuple[dict, SamplingResult, tuple[SamplingResult, SamplingResult]]:
    """Run ``steps`` from ``state`` at ε and at ε/2 (same noise and batches); (the record, the run to keep, both runs).

    Biased when λ̂(ε) - λ̂(ε/2) > max(halving_rel·λ̂(ε/2), halving_z·se) (one-sided: SGLD's bias raises
    λ̂ with the step), or when the ε run lost chains to divergence that the ε/2 run kept. A biased
    check keeps the ε/2 run; otherwise the ε run, which is the chunk the burn-in would have run next.
    """
    full, half = run_chunk(state, steps, step_size), run_chunk(state, steps, step_size / 2)
    d, se, level = halving_difference(to_llc(full.loss_trace), to_llc(half.loss_trace))
    healthy = [int(np.sum(np.asarray(r.final_state.divergent_step) < 0)) for r in (full, half)]
    diverged = healthy[0] < healthy[1]
    biased = diverged or bool(np.isfinite(d) and np.isfinite(se)
                              and d > max(rule.halving_rel * abs(level), rule.halving_z * se))
    record = {"step_size": step_size, "llc_half_step": level, "difference": d, "se": se, "biased": biased,
              "healthy_chains": healthy}
    return record, half if biased else full, (full, half)


def climb_window(steps: int, rule: AutoBurnin) -> int:
    """Steps restarted windows need after a step change during the climb: half the run so far (room for a check kept).

    Also when the first bias check after the acceptance guard runs. Windows restarted with only
    ``min_steps`` read a slow climb as level: on [60]×5 the acceptance guard halved the step at 272k steps
    and 4 chunks later the climb, now slower, passed the windows 3% below the exact value
    (docs/calibration.md).
    """
    return max(rule.min_steps, min(steps // 2, rule.max_steps - steps - rule.chunk))


def read_windows(window: list, to_llc, rule: AutoBurnin, groups=None) -> tuple[bool, float, float]:
    """:func:`has_levelled` on the window's segments [(loss trace, ε, LLC shift)] in Langevin time, each shifted.

    ``groups`` (index arrays of chains, e.g. the chains of each checkpoint in a sweep's group): levelled when
    every group has levelled; the window means returned are those of the group furthest from level.
    """
    llc = np.concatenate([to_llc(trace) + shift for trace, _, shift in window], axis=1)
    step_sizes = np.concatenate([np.full(trace.shape[1], eps) for trace, eps, _ in window])
    if groups is None:
        return has_levelled(llc, rule, step_sizes)
    readings = [has_levelled(llc[g], rule, step_sizes) for g in groups]
    worst = max(readings, key=lambda r: (not r[0], abs(r[2] - r[1]) / max(abs(r[2]), 1e-12) if np.isfinite(r[1] + r[2])
                                         else np.inf))
    return all(r[0] for r in readings), worst[1], worst[2]


def shifted(window: list, difference: float) -> list:
    """The window's segments expressed at the level of the halved step: λ̂(ε/2) = λ̂(ε) - D.

    A negative D is noise (SGLD's bias raises λ̂ with ε), and taking it out would hide part of the rise,
    so it is taken as 0.
    """
    d = max(float(difference), 0.0)
    return [(trace, eps, shift - d) for trace, eps, shift in window]


def changes_by(changes: list[dict], reason: str) -> list[dict]:
    """The step changes made for ``reason`` ("acceptance" or "bias")."""
    return [c for c in changes if c["reason"] == reason]


def burn_in(
    run_chunk: Callable[[ChainState | None, int, float], SamplingResult],
    to_llc: Callable[[np.ndarray], np.ndarray],
    rule: AutoBurnin,
    *,
    step_size: float,
    adapt_step: bool = False,
    min_acceptance: float = diag.ACCEPTANCE_LOW,
    progress: bool = False,
    groups: list | None = None,
) -> BurninResult:
    """Run chunks until the LLC trace has levelled off (or ``rule.max_steps``).

    ``run_chunk(state, steps, step_size)`` runs ``steps`` more steps from
    ``state`` (None: the start at w*) and returns a :class:`SamplingResult`
    with its ``final_state``; ``to_llc`` maps losses to LLC units,
    nβ·(L - L(w*)). ``rule`` must be :meth:`AutoBurnin.resolved`.

    ``adapt_step`` (for a step the calibration chose, not one the user gave):
    the chunks also measure the MALA acceptance of the proposals where the
    chains are now, not at w* where the calibration's short runs measured it.
    While it is below ``min_acceptance`` (the estimate's own warning level) the
    step is halved, with the level shift of the halving measured on the next
    chunk (module docstring): a guard against steps near the stability limit.
    Bias is left to the check below,
    because the minibatch acceptance reads high where minibatch noise is
    large: the step's bias is checked where the chains are, during the climb
    and once levelled (module docstring), and the step halved while it is too
    large.

    ``groups``: index arrays of chains that estimate different things (the
    checkpoints of a sweep's group, the components of a refined estimate): the
    burn-in lasts until every group has levelled off.
    """
    b = _Burn(run_chunk, to_llc, rule, step_size, groups)
    checking = adapt_step and rule.max_halvings > 0
    if progress:
        from tqdm.auto import tqdm

        b.bar = tqdm(total=rule.max_steps, desc="burn-in (until λ̂ levels off)", unit="step", leave=False)
    try:
        while b.steps < rule.max_steps:
            run = b.advance(min(rule.chunk, rule.max_steps - b.steps))
            if not np.any(np.asarray(b.state.divergent_step) < 0):
                break  # every chain has diverged (the estimate reports it)
            acceptance = float(np.nanmean(run.acceptance)) if adapt_step and np.isfinite(run.acceptance).any() else None
            if acceptance is not None and acceptance < min_acceptance:
                b.halve_for_acceptance(acceptance)
                continue
            if b.since_change < b.needed:
                continue
            b.read()
            if not b.levelled and not (checking and b.steps >= b.next_climb_check):
                continue
            if not checking or b.check_bias() == "stop":
                break
    finally:
        if b.bar is not None:
            b.bar.close()
    return BurninResult(b.steps, b.levelled, (b.m1, b.m2), b.state, np.concatenate(b.parts, axis=1), b.compile_s,
                        b.sample_s, b.step_size, b.changes, b.bias_checks)


@dataclass
class _Burn:
    """The state of a burn-in between chunks, and its steps (:func:`burn_in`)."""

    run_chunk: Callable
    to_llc: Callable
    rule: AutoBurnin
    step_size: float
    groups: list | None
    parts: list = field(default_factory=list)  # every chunk's loss trace, in order
    window: list = field(default_factory=list)  # the levelling windows' segments: (loss trace, ε, LLC shift)
    state: ChainState | None = None
    steps: int = 0
    since_change: int = 0
    needed: int = 0  # steps at the current step size before the windows are read
    # bias checks while λ̂ still climbs, once the acceptance guard has halved the step: at the first reading of the
    # restarted windows, then each time the run has doubled (none before: module docstring)
    next_climb_check: float = float("inf")
    changes: list = field(default_factory=list)
    bias_checks: list = field(default_factory=list)
    compile_s: float = 0.0
    sample_s: float = 0.0
    levelled: bool = False
    m1: float = float("nan")
    m2: float = float("nan")
    bar: Any = None

    def __post_init__(self):
        self.needed = self.rule.min_steps

    def _took(self, runs, kept: SamplingResult, steps: int) -> None:
        self.compile_s += sum(r.compile_seconds for r in runs)
        self.sample_s += sum(r.sample_seconds for r in runs)
        self.parts.append(kept.loss_trace)
        self.state, self.steps = kept.final_state, self.steps + steps
        if self.bar is not None:
            self.bar.update(steps)

    def advance(self, steps: int) -> SamplingResult:
        """The next chunk at the current step; it joins the windows."""
        run = self.run_chunk(self.state, steps, self.step_size)
        self._took([run], run, steps)
        self.window.append((run.loss_trace, self.step_size, 0.0))
        self.since_change += steps
        return run

    def coupled_chunk(self, keep_half: bool) -> tuple[dict, SamplingResult]:
        """The next chunk at ε and at ε/2 from one state (:func:`bias_check`); the chains go on from the kept run."""
        record, kept, runs = bias_check(self.run_chunk, self.state, self.rule.chunk, self.step_size, self.to_llc,
                                        self.rule)
        kept = runs[1] if keep_half else kept
        self._took(runs, kept, self.rule.chunk)
        return record, kept

    def halve_for_acceptance(self, acceptance: float) -> None:
        """The acceptance guard: halve the step, with the level shift of the halving measured on the next chunk."""
        rule, steps = self.rule, self.steps
        change = {"step": steps, "reason": "acceptance", "acceptance": acceptance,
                  "from": self.step_size, "to": self.step_size / 2}
        self.needed = climb_window(steps, rule)
        self.next_climb_check = min(self.next_climb_check, steps + self.needed)
        if steps + rule.chunk > rule.max_steps:  # no room to measure the level shift: the windows restart
            self.changes.append(change)
            self.step_size, self.window, self.since_change, self.levelled = self.step_size / 2, [], 0, False
            return
        # the next chunk at ε and at ε/2 from one state measures the level shift D; the chains go on at ε/2
        measured, kept = self.coupled_chunk(keep_half=True)
        self.changes.append({**change, **{key: measured[key] for key in ("difference", "se", "biased")}})
        # a shift within the bias check's tolerance is taken out; a larger one is a bias that grew as the chains
        # spread, not a constant: the windows restart
        comparable = np.isfinite(measured["difference"]) and not measured["biased"]
        self.window = shifted(self.window, measured["difference"]) if comparable else []
        self.step_size, self.since_change, self.levelled = self.step_size / 2, self.rule.chunk, False
        self.window.append((kept.loss_trace, self.step_size, 0.0))

    def read(self) -> None:
        """Read the levelling windows."""
        self.levelled, self.m1, self.m2 = read_windows(self.window, self.to_llc, self.rule, self.groups)
        if self.bar is not None and np.isfinite(self.m2):
            self.bar.set_postfix_str(f"λ̂ windows {self.m1:.4g} → {self.m2:.4g}")

    def check_bias(self) -> str:
        """The coupled ε vs ε/2 check of a calibrated step, at the level or during the climb: "stop" or "go on"."""
        rule, steps = self.rule, self.steps
        skipped = ("max_halvings reached" if len(changes_by(self.changes, "bias")) >= rule.max_halvings
                   else "no room for a check under max_steps" if steps + rule.chunk > rule.max_steps else None)
        if skipped:
            if not self.levelled:
                return "go on"  # the windows decide; the check at the level records the skip
            self.bias_checks.append({"step": steps, "step_size": self.step_size, "skipped": skipped})
            return "stop"
        record, kept = self.coupled_chunk(keep_half=False)
        self.bias_checks.append({"step": steps, "levelled": self.levelled, **record})
        if not self.levelled:
            self.next_climb_check = 2 * self.steps
        if not record["biased"]:
            if self.levelled:
                return "stop"
            self.window.append((kept.loss_trace, self.step_size, 0.0))  # the ε run is the chunk the climb would have run next
            self.since_change += rule.chunk
            return "go on"
        self.changes.append({"step": steps, "reason": "bias", "difference": record["difference"],
                             "se": record["se"], "from": self.step_size, "to": self.step_size / 2})
        # the windows restart: levelled chains need only the new step's own settling, during a climb they must
        # see half the run again (a biased step's shift grew as the chains spread and cannot be taken out)
        self.needed = rule.min_steps if self.levelled else climb_window(self.steps, rule)
        self.step_size, self.since_change, self.levelled = self.step_size / 2, rule.chunk, False
        self.window = [(kept.loss_trace, self.step_size, 0.0)]
        return "go on"


def merge_runs(burn: BurninResult, draws: SamplingResult) -> SamplingResult:
    """One :class:`SamplingResult` covering burn-in and draws, as if run in one call."""
    return SamplingResult(
        loss_trace=np.concatenate([burn.loss_trace, draws.loss_trace], axis=1),
        acceptance=draws.acceptance,
        acceptance_steps=draws.acceptance_steps,
        divergent_step=draws.divergent_step,
        compile_seconds=burn.compile_seconds + draws.compile_seconds,
        sample_seconds=burn.sample_seconds + draws.sample_seconds,
        extras={**draws.extras, "burnin": burn.to_dict()},
        final_state=draws.final_state,
        observations=draws.observations,
    )


def burnin_warnings(burn: BurninResult) -> list[str]:
    """What a researcher must hear about a burn-in: it hit its cap still rising, or its step went unchecked."""
    if not burn.levelled:
        return [not_levelled_message(burn)]
    skipped = [c for c in burn.bias_checks if "skipped" in c]
    if not skipped:
        return []
    step = skipped[-1]["step_size"]
    if skipped[-1]["skipped"] == "max_halvings reached":
        halvings = len(changes_by(burn.step_changes, "bias"))
        return [
            f"the bias check halved the calibrated step {halvings} time{'s' if halvings != 1 else ''}, the most "
            f"AutoBurnin(max_halvings=...) allows, and did not check the step the draws use ({step:.3g}): λ̂ may "
            f"still be above its small-step value; raise max_halvings or compare with step_size={step / 2:.3g}"
        ]
    return [
        f"λ̂ levelled off at {burn.steps} steps, too close to the burn-in cap to check the calibrated step's bias "
        f"({step:.3g}) against half of it: raise AutoBurnin(max_steps=...) or compare with step_size={step / 2:.3g}"
    ]


def not_levelled_message(burn: BurninResult) -> str:
    """The warning for a burn-in that hit its cap still rising."""
    m1, m2 = burn.window_means
    halved = changes_by(burn.step_changes, "bias")
    if halved:  # the windows restarted after the last halving and did not level again before the cap
        return (
            f"num_burnin='auto' stopped at its cap ({burn.steps} steps) before λ̂ levelled off again after the bias "
            f"check halved the step to {halved[-1]['to']:.3g} (window means {m1:.4g} → {m2:.4g}): raise "
            "AutoBurnin(max_steps=...)"
        )
    return (
        f"num_burnin='auto' stopped at its cap of {burn.steps} steps before λ̂ levelled off (window means "
        f"{m1:.4g} → {m2:.4g}); the estimate is likely low: raise AutoBurnin(max_steps=...) or the step size "
        "(slt.calibrate)"
    )


__all__ = ["AutoBurnin", "BurninResult", "burn_in", "burnin_warnings", "halving_difference", "has_levelled", "merge_runs", "not_levelled_message", "window_means"]
