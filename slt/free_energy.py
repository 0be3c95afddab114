"""Bayes free energy by thermodynamic integration (TI) and WBIC.

    F_n = -log ∫ exp(-n·L_n(w)) φ(w) dw

with ``L_n`` the mean **negative log-likelihood** per example and φ a
normalised prior. Free energies are statements about a likelihood: with an
arbitrary loss they are only defined up to the choice of temperature and an
additive constant. For a Gaussian-noise regression with MSE loss,
NLL = MSE/(2σ²) + log(2πσ²)/2 per example (per output): the constant shifts F
exactly, F[NLL] = F[MSE/(2σ²)] + n·log(2πσ²)/2, so passing MSE is the NLL at
σ² = 1/2 less n·log(π)/2; the factor 1/(2σ²) is a temperature and changes the
posterior (asymptotically nL_n(w0) scales by it, λ·log n does not).

- **Thermodynamic integration** (Ogata 1989; Friel & Pettitt 2008, "Marginal
  likelihood estimation via power posteriors", JRSS-B 70:589): with
  p_β(w) ∝ exp(-nβ·L_n(w)) φ(w), d/dβ log Z(β) = -E_β[nL_n] and Z(0) = 1, so

      F_n = ∫₀¹ E_β[nL_n] dβ.

  Here it is computed as ``F = c + ∫₀¹ (E_β[nL_n] - c) dβ`` with the
  constant c = E_1[nL_n] taken out exactly, and the rest integrated in
  s = log β, where the integrand β·(E_β[nL_n] - c) ≈ λ·(1 - β) near β = 1 is
  smooth, bounded, and → 0 exponentially as β → 0 (β·(E_β - nL_n(params)) is
  the LLC estimate at temperature t = nβ). The ladder is
  geometric (uniform in s) from β_min = nbeta_min/n to 1, dense near β = 0
  where E_β changes fastest; the integral is Simpson's rule in s, the piece
  [0, β_min] is β_min·E_{β_min} + β_min²·Var_{β_min}(nL)/2 (first-order Taylor,
  E_β' = -Var_β). The discretisation error is |S_h - S_2h|/15 (Richardson:
  Simpson on every other node) plus the Taylor term; the sampling error
  propagates the per-β Monte Carlo standard errors (ESS-based) through the
  quadrature weights. All β × chains run as one compiled program.
- **WBIC** (Watanabe 2013, JMLR 14:867): E_β[nL_n] at β = 1/log n. Same
  asymptotics as F_n (nL_n(w0) + λ log n + O_p(√log n)) but it differs from
  F_n at finite n (REFERENCE §7: by -α‖w0‖²/2 in the Gaussian linear model).

With ``log_prior=None`` the prior is the normalised localization Gaussian
N(params, I/γ) (γ = ``localization``): the *local* free energy of the
neighbourhood of ``params``. With a ``log_prior``, its normalising constant
does not matter (TI computes log Z(1)/Z(0)); it must be proper.

β = 0: the posterior is the prior, which is never sampled directly; the
smallest rung β_min (nβ_min = 1e-3 by default) is close enough to it, with
the Taylor correction above. With the Gaussian localization prior every
chain starts from a draw of N(params, 1/P_β) with P_β = nβ·h + γ (h the mean
Hessian eigenvalue of L_n at params, Hutchinson's estimator), so prior-like
rungs start in equilibrium.

Step sizes: ``step_size`` is ε at the LLC temperature nβ = n/log n (a value
tuned for :func:`slt.estimate_llc` transfers). Rung β gets
ε_β = ε·(h·n/log n + h₀)/(h·nβ + h₀) (h₀ the prior curvature, capped at
1000·ε): in a Gaussian approximation no rung is stiffer than the reference
relative to its step, and wide small-β posteriors mix as fast as the
reference one.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from slt import diagnostics as diag
from slt import validation as check
from slt.settings import validate_llc_inputs
from slt.io import jsonable
from slt.losses import initial_loss
from slt.posterior import Hyperparameters
from slt.curvature import mean_hessian_eigenvalue, prior_curvature
from slt.sampling import RunConfig, chain_keys, prng_impl, run_chains

PyTree = Any

METHODS = ("ti", "wbic")
RULES = ("simpson", "trapezoid")
DEFAULT_NUM_BETAS = 33
DEFAULT_NBETA_MIN = 1e-3
MAX_STEP_RATIO = 1e3


@dataclass(frozen=True)
class FreeEnergyConfig:
    """Everything that determined a free-energy estimate (recorded with the result)."""

    method: str
    sampler: str
    step_size: float  # ε at the reference nβ = n/log n (before per-β scaling)
    reference_nbeta: float
    localization: float
    num_chains: int  # per β
    num_draws: int
    num_burnin: int
    batch_size: int
    num_examples: int
    seed: int
    num_betas: int
    nbeta_min: float
    rule: str
    step_scaling: str
    sampler_options: tuple[tuple[str, Any], ...] = ()

    def to_dict(self) -> dict:
        """JSON-serialisable dict (NaN becomes None)."""
        out = asdict(self)
        out["sampler_options"] = dict(self.sampler_options)
        return out


@dataclass
class FreeEnergyResult:
    """A free-energy estimate F_n (nats) with everything that produced it.

    ``expectations[k]`` is E_β[nL_n] at ``betas[k]`` (minibatch n·L_B is an
    unbiased estimate of it) with Monte Carlo standard error
    ``expectation_stderr[k]``. ``stderr`` = √(sampling² + discretisation² + step_bias²), the last only
    with ``bias_check`` (then ``value`` is F at ε/2 and ``step_bias`` = F(ε) - F(ε/2)).
    """

    value: float
    stderr: float
    method: str
    betas: np.ndarray
    expectations: np.ndarray
    expectation_stderr: np.ndarray
    prior: dict
    num_examples: int
    init_loss: float  # L_n(params), full data
    sampling_stderr: float
    discretisation_error: float
    step_sizes: np.ndarray  # ε used at each β
    config: FreeEnergyConfig
    loss_trace: np.ndarray | None = None  # [betas, chains, draws] minibatch L_B
    diagnostics: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)
    step_bias: float | None = None  # F(ε) - F(ε/2) from coupled runs (bias_check): the bias left in the value, in stderr
    step_bias_se: float | None = None

    @property
    def nbetas(self) -> np.ndarray:
        """t = nβ of each rung."""
        return self.num_examples * np.asarray(self.betas)

    @property
    def llc(self) -> np.ndarray:
        """β·(E_β[nL_n] - nL_n(params)) = t·(E_t[L_n] - L_n(params)): the LLC estimate at each t = nβ."""
        return np.asarray(self.betas) * (np.asarray(self.expectations) - self.num_examples * self.init_loss)

    @property
    def llc_stderr(self) -> np.ndarray:
        return np.asarray(self.betas) * np.asarray(self.expectation_stderr)

    def to_dict(self, *, traces: bool = False) -> dict:
        """JSON-serialisable dict (NaN becomes None)."""
        out = {
            "value": self.value,
            "stderr": self.stderr,
            "method": self.method,
            "betas": self.betas,
            "nbetas": self.nbetas,
            "expectations": self.expectations,
            "expectation_stderr": self.expectation_stderr,
            "llc": self.llc,
            "llc_stderr": self.llc_stderr,
            "prior": self.prior,
            "num_examples": self.num_examples,
            "init_loss": self.init_loss,
            "sampling_stderr": self.sampling_stderr,
            "discretisation_error": self.discretisation_error,
            "step_bias": self.step_bias,
            "step_bias_se": self.step_bias_se,
            "step_sizes": self.step_sizes,
            "config": self.config.to_dict(),
            "diagnostics": self.diagnostics,
            "timing": self.timing,
        }
        if traces and self.loss_trace is not None:
            out["loss_trace"] = self.loss_trace
        return jsonable(out)

    def summary(self) -> str:
        """A readable report: value ± stderr, method, prior, and per-β expectations."""
        c = self.config
        name = {"ti": "thermodynamic integration", "wbic": "WBIC"}[self.method]
        lines = [
            f"F = {self.value:.6g} ± {self.stderr:.2g} nats ({name}; sampling {self.sampling_stderr:.2g}, "
            f"discretisation {self.discretisation_error:.2g}"
            + ("" if self.step_bias is None else f", step-size bias F(ε) - F(ε/2) = {self.step_bias:.2g} ± {self.step_bias_se:.1g}")
            + ")",
            f"    nL_n(params) = {self.num_examples * self.init_loss:.6g}, n = {self.num_examples}; prior: {self.prior['description']}",
            f"    {c.sampler}: ε = {c.step_size:g} at nβ = {c.reference_nbeta:.4g} ({c.step_scaling} scaling), "
            f"{len(self.betas)} β × {c.num_chains} chains × {c.num_draws} draws (+{c.num_burnin} burn-in), "
            f"batch {c.batch_size}",
        ]
        lines += [f"  !  {w}" for w in self.diagnostics.get("warnings", [])]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"FreeEnergyResult(value={self.value:.6g}, stderr={self.stderr:.3g}, method={self.method!r}, "
                f"betas={len(self.betas)}, prior={self.prior['kind']!r})")


# ---------------------------------------------------------------------------------------------------------------
# Ladder and quadrature (pure numpy)


def geometric_ladder(n: int, num_betas: int = DEFAULT_NUM_BETAS, nbeta_min: float = DEFAULT_NBETA_MIN) -> np.ndarray:
    """β_k = β_min^{1-k/K}, k = 0..K (K = num_betas - 1), β_min = nbeta_min/n: uniform in log β, ends at 1."""
    beta_min = nbeta_min / n
    return np.exp(np.linspace(math.log(beta_min), 0.0, num_betas))


def _trapezoid_weights(s: np.ndarray) -> np.ndarray:
    w = np.zeros_like(s)
    ds = np.diff(s)
    w[:-1] += ds / 2
    w[1:] += ds / 2
    return w


def _simpson_weights(s: np.ndarray) -> np.ndarray:
    h = s[1] - s[0]
    w = np.full(len(s), 2.0)
    w[1::2] = 4.0
    w[0] = w[-1] = 1.0
    return w * h / 3


def _coarse(s: np.ndarray) -> np.ndarray:
    """Indices of every other node, always keeping the last."""
    idx = np.arange(0, len(s), 2)
    return idx if idx[-1] == len(s) - 1 else np.append(idx, len(s) - 1)


def quadrature_weights(log_betas: np.ndarray, rule: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(weights, coarse weights on every other node, order) for ∫ g ds ≈ w·g over the nodes s = log β."""
    s = np.asarray(log_betas, np.float64)
    if rule == "simpson":
        w = _simpson_weights(s)
        wc = np.zeros_like(s)
        wc[::2] = _simpson_weights(s[::2])
        return w, wc, 4
    w = _trapezoid_weights(s)
    idx = _coarse(s)
    wc = np.zeros_like(s)
    wc[idx] = _trapezoid_weights(s[idx])
    return w, wc, 2


def integrate_ladder(betas, expectations, expectation_stderr, *, baseline: float | None = None,
                     rule: str = "simpson", tail_variance: float = 0.0) -> dict:
    """F = c + ∫₀¹ (E_β - c) dβ from E_β on a ladder ending at β = 1.

    c is ``baseline`` (default: E at β = 1, which makes the integrand
    β·(E_β - c) ≈ λ·(1 - β) smooth and small wherever the posterior is close
    to regular, whatever the point params). ∫_{β_0}^1 is taken in s = log β
    by ``rule``; [0, β_0] as β_0·(E_{β_0} - c) + β_0²·``tail_variance``/2.
    Returns value, sampling_stderr (per-β errors through the effective linear
    weights), discretisation_error (Richardson |I_h - I_2h|/(2^p - 1) plus the
    tail's Taylor term) and the weights such that value = weights·E + tail term.
    """
    b = np.asarray(betas, np.float64)
    e = np.asarray(expectations, np.float64)
    se = np.asarray(expectation_stderr, np.float64)
    c = float(e[-1]) if baseline is None else float(baseline)
    w, wc, order = quadrature_weights(np.log(b), rule)
    g = b * (e - c)
    tail_correction = b[0] ** 2 * max(float(tail_variance), 0.0) / 2
    weights = w * b
    weights[0] += b[0]  # the tail rectangle β_0·(E_{β_0} - c)
    value = c + float(weights @ (e - c)) + tail_correction
    if baseline is None:
        weights[-1] += 1.0 - weights.sum()  # value = Σ weights·E exactly: c = E_K enters linearly
    sampling = float(np.sqrt(np.sum((weights * se) ** 2)))
    richardson = abs(float((w - wc) @ g)) / (2**order - 1)
    return {
        "value": value,
        "sampling_stderr": sampling,
        "discretisation_error": richardson + tail_correction,
        "richardson_error": richardson,
        "baseline": c,
        "tail": float(b[0] * (e[0] - c) + tail_correction),
        "tail_correction": tail_correction,
        "weights": weights,
    }


INIT_SUBSET = 1024
INIT_HALVINGS = 32


def _subset(data, seed: int, size: int = INIT_SUBSET):
    n = jax.tree.leaves(data)[0].shape[0]
    if n <= size:
        return data
    idx = np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
    return jax.tree.map(lambda x: jnp.asarray(x)[idx], data)


def _init_impl(params, batch, nbetas, localization, prior_sd, key, *, loss_fn, log_prior):
    leaves, treedef = jax.tree.flatten(params)
    d = sum(x.size for x in leaves)
    keys = jax.random.split(key, len(leaves))
    noise = [jax.random.normal(k, (nbetas.shape[0],) + x.shape, x.dtype) for k, x in zip(keys, leaves)]
    loss0 = loss_fn(params, batch)

    def prior_energy(w):
        if log_prior is None:
            return 0.5 * localization * sum(jnp.sum(jnp.square(a - b)) for a, b in zip(jax.tree.leaves(w), leaves))
        return -log_prior(w)

    prior0 = prior_energy(params)

    def moved(xi, j):
        scale = prior_sd * jnp.exp2(-j.astype(leaves[0].dtype))
        return jax.tree.unflatten(treedef, [x + scale * z for x, z in zip(leaves, xi)])

    def energy_rise(xi, t, j):
        w = moved(xi, j)
        rise = t * (loss_fn(w, batch) - loss0) + prior_energy(w) - prior0
        return jnp.where(jnp.isfinite(rise), rise, jnp.inf)

    def one_chain(xi, t):
        def body(_, bounds):
            lo, hi = bounds
            mid = (lo + hi) // 2
            ok = energy_rise(xi, t, mid) <= d
            return jnp.where(ok, lo, mid + 1), jnp.where(ok, mid, hi)

        lo, _ = jax.lax.fori_loop(0, 6, body, (jnp.int32(0), jnp.int32(INIT_HALVINGS)))
        scale = jnp.where(lo >= INIT_HALVINGS, 0.0, prior_sd * jnp.exp2(-lo.astype(leaves[0].dtype)))
        return jax.tree.unflatten(treedef, [x + scale * z for x, z in zip(leaves, xi)]), scale

    return jax.vmap(one_chain)(noise, nbetas.astype(leaves[0].dtype))


_init_program = jax.jit(_init_impl, static_argnames=("loss_fn", "log_prior"))


def _starting_points(loss_fn, log_prior, params, batch, nbetas, localization, prior_sd, key):
    """Chain starts params + s·σ₀·ξ, ξ ~ N(0, I), σ₀ the prior scale (1/√γ, or 1/√(prior curvature)).

    Per chain, s = 2^-j is the largest with nβ·(L(w) - L(params)) + prior-energy rise ≤ d
    (bisection over j on a subset of ≤ 1024 examples): prior-like rungs start
    with prior draws, cold rungs close to params, none in a region the
    sampler cannot leave (a stiff start makes MALA reject everything).
    """
    if prior_sd <= 0:
        return None, np.zeros(len(nbetas))
    dtype = jnp.result_type(*jax.tree.leaves(params))
    positions, scales = _init_program(
        jax.tree.map(jnp.asarray, params), jax.tree.map(jnp.asarray, batch), jnp.asarray(nbetas, dtype),
        jnp.asarray(localization, dtype), jnp.asarray(prior_sd, dtype), key, loss_fn=loss_fn, log_prior=log_prior,
    )
    return positions, np.asarray(scales)


# ---------------------------------------------------------------------------------------------------------------
# Estimation


def _validate(loss_fn, params, data, *, method, log_prior, step_size, localization, num_chains, num_draws,
              num_burnin, batch_size, sampler, betas, num_betas, nbeta_min, rule, step_scaling, sampler_options):
    check.require(method in METHODS, f"method={method!r} is not known; choose one of {', '.join(METHODS)}")
    check.require(rule in RULES, f"rule={rule!r} is not known; choose one of {', '.join(RULES)}")
    check.require(step_scaling in ("curvature", "none"),
                  f"step_scaling={step_scaling!r} is not known; choose 'curvature' or 'none'")
    check.require(log_prior is None or callable(log_prior),
                  f"log_prior must be None or callable as log_prior(params) -> scalar, got {type(log_prior).__name__}")
    n = check.data_size(data)
    check.require(n >= 2, f"free energies need n ≥ 2 examples (β = 1/log n), got n={n}")
    per_beta_steps = None
    if isinstance(step_size, str):
        check.require(step_size == "auto", f'step_size must be a number, one per β, or "auto"; got {step_size!r}')
        reference_step = 1.0  # a placeholder while the rest is checked: the calibration chooses it
    elif not np.isscalar(step_size) and not (hasattr(step_size, "shape") and np.shape(step_size) == ()):
        per_beta_steps = np.asarray(step_size, np.float64)
        check.require(per_beta_steps.ndim == 1 and np.all(np.isfinite(per_beta_steps)) and np.all(per_beta_steps > 0),
                      "step_size must be a positive number or a 1-D sequence of positive numbers, one per β")
        reference_step = float(per_beta_steps[-1])
    else:
        reference_step = step_size
    n, batch, ref_nbeta = validate_llc_inputs(
        loss_fn, params, data, step_size=reference_step, nbeta=None, localization=localization,
        num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin, batch_size=batch_size, sampler=sampler,
        sampler_options=sampler_options,
    )
    if log_prior is None:
        check.require(float(localization) > 0,
                      "localization must be > 0 without a log_prior: the prior N(params, I/γ) must be proper")
    else:
        check_prior(log_prior, params)
    ladder = _ladder(n, method=method, betas=betas, num_betas=num_betas, nbeta_min=nbeta_min, rule=rule)
    if per_beta_steps is not None:
        check.require(len(per_beta_steps) == len(ladder),
                      f"step_size has {len(per_beta_steps)} values but there are {len(ladder)} β; give one per β or a number")
    return n, batch, ref_nbeta, ladder, per_beta_steps


#: distances (in units of 1 + the rms weight) at which a proper prior must have decayed
PRIOR_PROBE_SCALES = (10.0, 100.0, 1e3, 1e4)


def check_prior(log_prior, params) -> None:
    """A scalar, finite log density at ``params`` that decays away from it (else the prior is improper and F undefined).

    Probed along one random direction at 10…10⁴ × (1 + rms weight): a proper density must fall below
    log φ(params) - 1 somewhere; a flat (improper) one never does.
    """
    try:
        lp = log_prior(params)
    except Exception as err:
        raise check.SLTInputError(f"log_prior(params) failed: {type(err).__name__}: {err}") from err
    check.require(np.shape(lp) == (), f"log_prior must return a scalar log density, got shape {np.shape(lp)}")
    lp = float(lp)
    check.require(math.isfinite(lp), f"log_prior(params) = {lp}; start from a point inside the prior's support")
    leaves, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng(0)
    direction = [rng.standard_normal(np.shape(x)) for x in leaves]
    rms = math.sqrt(sum(float(np.sum(np.square(np.asarray(x, np.float64)))) for x in leaves)
                    / max(1, sum(np.size(x) for x in leaves)))
    far = []
    for scale in PRIOR_PROBE_SCALES:
        moved = [np.asarray(x) + (scale * (1 + rms) * u).astype(np.asarray(x).dtype) for x, u in zip(leaves, direction)]
        value = float(log_prior(jax.tree.unflatten(treedef, moved)))
        far.append(value)
        if not math.isfinite(value) or value < lp - 1.0:
            return
    raise check.SLTInputError(
        f"log_prior does not decay away from params (log φ = {lp:.4g} there, {far[-1]:.4g} at distance "
        f"{PRIOR_PROBE_SCALES[-1]:g}×(1 + rms weight)): an improper (e.g. flat) prior has no normalising constant, so the "
        "free energy is undefined; pass a normalised proper prior, or log_prior=None for the local free energy "
        "under N(params, I/γ)"
    )


def _ladder(n: int, *, method, betas, num_betas, nbeta_min, rule) -> np.ndarray:
    """The β ladder: 1/log n for WBIC, the given ``betas``, or ``num_betas`` geometric values from nbeta_min/n to 1."""
    if method == "wbic":
        ladder = np.array([1.0 / math.log(n)])
        check.require(betas is None, "betas is for method='ti'; WBIC uses β = 1/log n")
    elif betas is not None:
        ladder = np.asarray(betas, np.float64)
        check.require(ladder.ndim == 1 and len(ladder) >= 3, "betas must be a 1-D sequence of at least 3 values")
        check.require(bool(np.all(np.isfinite(ladder))) and ladder[0] > 0 and bool(np.all(np.diff(ladder) > 0)),
                      "betas must be finite, > 0 and strictly increasing (β = 0 is handled by the tail term)")
        check.require(abs(ladder[-1] - 1.0) < 1e-12, f"betas must end at β = 1 (the Bayes posterior), got {ladder[-1]}")
        if rule == "simpson":
            s = np.log(ladder)
            uniform = np.allclose(np.diff(s), s[1] - s[0], rtol=1e-6, atol=0)
            check.require(uniform and (len(ladder) - 1) % 4 == 0,
                          "rule='simpson' needs betas uniform in log β with a multiple of 4 intervals; "
                          "use rule='trapezoid' for other ladders")
    else:
        k = check.positive_int("num_betas", num_betas, minimum=3)
        nbeta_min = check.positive_number("nbeta_min", nbeta_min)
        check.require(nbeta_min < n, f"nbeta_min={nbeta_min} must be < n={n}")
        if rule == "simpson":
            check.require((k - 1) % 4 == 0,
                          f"rule='simpson' needs num_betas = 4j+1 (Simpson on every other node estimates the "
                          f"error), got {k}; try {4 * max(1, round((k - 1) / 4)) + 1}")
        ladder = geometric_ladder(n, k, nbeta_min)
    return ladder


def free_energy(
    loss_fn: Callable[[PyTree, PyTree], Any],
    params: PyTree,
    data: PyTree,
    *,
    method: str = "ti",
    log_prior: Callable[[PyTree], Any] | None = None,
    step_size: float | Iterable[float] | str,
    localization: float = 1.0,
    num_chains: int = 4,
    num_draws: int = 500,
    num_burnin: int = 200,
    batch_size: int | None = None,
    sampler: str = "sgld",
    seed: int = 0,
    betas: Iterable[float] | None = None,
    num_betas: int = DEFAULT_NUM_BETAS,
    nbeta_min: float = DEFAULT_NBETA_MIN,
    rule: str = "simpson",
    step_scaling: str = "curvature",
    sampler_options: dict | None = None,
    acceptance_checks: int = 50,
    init_loss: float | None = None,
    keep_traces: bool = True,
    progress: bool | None = None,
    bias_check: bool | None = None,
) -> FreeEnergyResult:
    """Bayes free energy F_n = -log ∫ exp(-nL_n(w)) φ(w) dw in nats.

    ``method="ti"``: thermodynamic integration F_n = ∫₀¹ E_β[nL_n] dβ over a
    geometric β ladder (Friel & Pettitt 2008), Simpson's rule in log β, error =
    sampling ⊕ discretisation (module docstring). ``method="wbic"``:
    E_β[nL_n] at β = 1/log n (Watanabe 2013), with its Monte Carlo error.

    Args:
      loss_fn: ``loss_fn(params, batch)`` = mean **negative log-likelihood**
        per example (not an arbitrary loss: MSE is the Gaussian NLL only up to
        a factor 1/(2σ²) and log(2πσ²)/2 per example, and F changes with both).
      params: the point w*; the centre of the default prior and where chains start.
      data: pytree of arrays with leading axis n.
      log_prior: normalised, proper log density log φ(w); None = local free energy
        with φ = N(params, I/γ), γ = ``localization``. A prior that does not
        decay away from params (improper, e.g. flat) is refused.
      step_size: ε at the reference nβ = n/log n (the LLC temperature), scaled per
        β (``step_scaling="curvature"``), one ε per β (sequence, used as is), or
        "auto": :func:`slt.calibrate` at the reference temperature chooses it
        (recorded in ``diagnostics["calibration"]``).
      num_chains: chains per β (all β × chains run as one compiled program).
      num_draws, num_burnin: draws kept and discarded per chain.
      batch_size: minibatch (None = full batch; ``sampler="mala"`` needs full batch).
      sampler: "sgld", "psgld", "sghmc", "sgnht" or "mala" (exact, full batch).
      betas: custom increasing ladder in (0, 1] ending at 1 (TI); default
        ``num_betas`` geometric values from nbeta_min/n to 1.
      rule: "simpson" (default) or "trapezoid", in s = log β.
      init_loss: L_n(params) if known (full data otherwise).
      bias_check: also run every rung at ε/2 with the same noise and minibatches
        (one program, twice the chains). SGLD's bias is O(ε), so the coupled
        difference D = F(ε) - F(ε/2) measures the step-size bias of F(ε/2),
        which is then the value, with |D| in its stated error (``step_bias``).
        Default: on with ``step_size="auto"``, off otherwise (MALA is exact: off).

    Returns:
      :class:`FreeEnergyResult` (``value``, ``stderr``, per-β ``expectations``).
    """
    n, batch, ref_nbeta, ladder, per_beta_steps = _validate(
        loss_fn, params, data, method=method, log_prior=log_prior, step_size=step_size, localization=localization,
        num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin, batch_size=batch_size, sampler=sampler,
        betas=betas, num_betas=num_betas, nbeta_min=nbeta_min, rule=rule, step_scaling=step_scaling,
        sampler_options=sampler_options,
    )
    h, h0 = _curvatures(loss_fn, log_prior, params, data, localization, seed)
    calibration = None
    if isinstance(step_size, str):
        calibration = _calibrate_reference(loss_fn, params, data, localization=localization if log_prior is None
                                           else max(h0, 1e-12), batch_size=batch_size, sampler=sampler, seed=seed,
                                           sampler_options=sampler_options, init_loss=init_loss)
        step_size, init_loss = calibration.step_size, calibration.init_loss
    coupled = (calibration is not None if bias_check is None else bool(bias_check)) and sampler != "mala"
    K, C = len(ladder), int(num_chains)
    ref_step = float(per_beta_steps[-1]) if per_beta_steps is not None else float(step_size)
    config = FreeEnergyConfig(
        method=method, sampler=sampler, step_size=ref_step, reference_nbeta=float(ref_nbeta),
        localization=float(localization), num_chains=C, num_draws=int(num_draws), num_burnin=int(num_burnin),
        batch_size=batch, num_examples=n, seed=int(seed), num_betas=K,
        nbeta_min=float(ladder[0] * n), rule=rule,
        step_scaling="per-beta" if per_beta_steps is not None else step_scaling,
        sampler_options=tuple(sorted((sampler_options or {}).items())),
    )
    init_loss = _initial_loss(loss_fn, params, data, init_loss)
    nbetas = n * ladder
    steps = rung_steps(ref_step, ref_nbeta, nbetas, h, h0, per_beta_steps=per_beta_steps, scaling=step_scaling)
    init_positions, init_scales = _starting_points(
        loss_fn, log_prior, params, _subset(data, seed), np.repeat(nbetas, C), float(localization),
        1.0 / math.sqrt(h0) if h0 > 0 else 0.0,
        jax.random.fold_in(jax.random.PRNGKey(seed), 0x5EED),  # the run itself uses the int seed
    )
    run = _sample_ladder(loss_fn, log_prior, params, data, config, steps, nbetas, init_positions, coupled=coupled,
                         acceptance_checks=acceptance_checks, progress=progress)
    d = sum(int(np.size(x)) for x in jax.tree.leaves(params))
    rungs = _rung_estimates(run, config, ladder, steps, init_loss, d, part=0)
    estimate = _integrate(method, ladder, rungs, rule)
    messages = list(rungs.messages) + estimate.messages
    bias = None
    if coupled:
        half_rungs = _rung_estimates(run, config, ladder, steps / 2, init_loss, d, part=1)
        half = _integrate(method, ladder, half_rungs, rule)
        bias = _step_bias(rungs, half_rungs, estimate, half, n)
        messages += [m for m in half_rungs.messages + half.messages if m not in messages] + bias.messages
        rungs, estimate = half_rungs, half
    diagnostics = {
        "per_beta": rungs.per_beta,
        "loss_curvature": h,
        "init_scales": init_scales.reshape(K, C),
        "prior_curvature": h0,
        "warnings": messages,
        **estimate.diagnostics,
    }
    if bias is not None:
        diagnostics["step_bias_check"] = bias.record
    if calibration is not None:
        diagnostics["calibration"] = calibration.to_dict()
    diag.emit(messages)
    bias_term = 0.0 if bias is None or not np.isfinite(bias.difference) else abs(bias.difference)
    return FreeEnergyResult(
        value=float(estimate.value),
        stderr=float(np.sqrt(estimate.sampling ** 2 + estimate.discretisation ** 2 + bias_term ** 2)),
        method=method, betas=ladder, expectations=rungs.expect, expectation_stderr=rungs.expect_se,
        prior=_describe_prior(log_prior, localization, h0), num_examples=n, init_loss=init_loss,
        sampling_stderr=float(estimate.sampling), discretisation_error=float(estimate.discretisation),
        step_sizes=np.asarray(steps / 2 if coupled else steps), config=config,
        loss_trace=rungs.traces if keep_traces else None, diagnostics=diagnostics,
        timing={"compile_seconds": run.compile_seconds, "sample_seconds": run.sample_seconds},
        step_bias=None if bias is None else float(bias.difference),
        step_bias_se=None if bias is None else float(bias.se),
    )


# ---------------------------------------------------------------------------------------------------------------
# The stages of free_energy


def _curvatures(loss_fn, log_prior, params, data, localization, seed) -> tuple[float, float]:
    """(h, h₀): mean Hessian eigenvalue of L_n and of the prior energy at params (Hutchinson)."""
    h = mean_hessian_eigenvalue(loss_fn, params, data, seed=seed)
    h0 = float(localization) if log_prior is None else prior_curvature(log_prior, params, seed=seed)
    return h, h0


def _calibrate_reference(loss_fn, params, data, **kwargs):
    """:func:`slt.calibrate` at the reference temperature nβ = n/log n, where ``step_size`` is defined."""
    from slt.calibration import calibrate

    return calibrate(loss_fn, params, data, **kwargs)


def _initial_loss(loss_fn, params, data, init_loss) -> float:
    """L_n(params) on the full data (or the given value); refused when it is not finite."""
    return initial_loss(loss_fn, params, data, init_loss)


def rung_steps(ref_step: float, ref_nbeta: float, nbetas: np.ndarray, h: float, h0: float, *,
               per_beta_steps=None, scaling: str = "curvature") -> np.ndarray:
    """ε_β = ε·(h·nβ_ref + h₀)/(h·nβ + h₀), capped at MAX_STEP_RATIO·ε (module docstring), or the given ones."""
    if per_beta_steps is not None:
        return np.asarray(per_beta_steps, np.float64)
    if scaling != "curvature":
        return np.full(len(nbetas), ref_step)
    ratio = (ref_nbeta * h + h0) / np.maximum(nbetas * h + h0, 1e-300)
    steps = ref_step * np.clip(ratio, 0.0, MAX_STEP_RATIO)
    return np.where(np.isfinite(steps) & (steps > 0), steps, ref_step)


def _sample_ladder(loss_fn, log_prior, params, data, config: FreeEnergyConfig, steps, nbetas, init_positions, *,
                   coupled: bool, acceptance_checks: int, progress):
    """Every β × chain in one program; ``coupled``: a second copy of every chain at ε/2 with the same keys."""
    K, C = config.num_betas, config.num_chains
    copies = 2 if coupled else 1
    total_steps = config.num_burnin + config.num_draws
    if progress is None:
        progress = sys.stderr.isatty() and total_steps * K * C * copies >= 200_000
    run_config = RunConfig(
        sampler=config.sampler, num_chains=copies * K * C, num_steps=total_steps, batch_size=config.batch_size,
        sampler_options=config.sampler_options,
        acceptance_every=max(1, total_steps // acceptance_checks) if acceptance_checks else 0,
        progress_every=max(1, total_steps // 100) if progress else 0,
    )
    chain_steps = np.concatenate([np.repeat(steps, C) / 2**c for c in range(copies)])
    hyper = Hyperparameters(step_size=chain_steps, nbeta=np.tile(np.repeat(nbetas, C), copies),
                            localization=np.full(copies * K * C, config.localization))
    keys = np.tile(chain_keys(config.seed, K * C, prng_impl(run_config)), (copies, 1))
    if init_positions is not None and copies > 1:
        init_positions = jax.tree.map(lambda x: jnp.concatenate([x] * copies), init_positions)
    return run_chains(loss_fn, params, data, hyper, config=run_config, chain_keys=keys, init_positions=init_positions,
                      log_prior=log_prior, progress_desc=f"free energy ({config.method})")


@dataclass
class _Rungs:
    """Per-β estimates of E_β[nL_n] from one copy of the ladder's chains."""

    expect: np.ndarray  # [K]
    expect_se: np.ndarray  # [K]
    variances: np.ndarray  # [K] Var_β(nL) (the tail's Taylor term)
    per_beta: list
    messages: list
    traces: np.ndarray  # [K, C, draws] minibatch L_B
    healthy: np.ndarray  # [K, C]


def _rung_estimates(run, config: FreeEnergyConfig, ladder, steps, init_loss: float, num_params: int,
                    *, part: int) -> _Rungs:
    """E_β[nL_n] ± MCSE at each β from copy ``part`` of the run's chains, failed chains left out and named
    (:func:`slt.diagnostics.failed_chains`, with the same per-chain checks as an LLC estimate)."""
    K, C, n = config.num_betas, config.num_chains, config.num_examples
    chains = slice(part * K * C, (part + 1) * K * C)
    every_step = run.loss_trace[chains].astype(np.float64).reshape(K, C, -1)
    divergent = run.divergent_step[chains].reshape(K, C)
    acc_mask = run.acceptance_steps >= config.num_burnin
    acc = run.acceptance[chains][:, acc_mask].reshape(K, C, -1) if run.acceptance.size else None
    traces = every_step[:, :, config.num_burnin:]
    out = _Rungs(np.full(K, np.nan), np.full(K, np.nan), np.full(K, np.nan), [], [], traces.astype(np.float32),
                 np.zeros((K, C), bool))
    for k in range(K):
        t = n * ladder[k]
        exploded = diag.explosion_steps(t * (every_step[k] - init_loss), num_params, t * abs(init_loss))
        failed = diag.failed_chains(divergent[k], exploded, float(steps[k]))
        healthy = np.ones(C, bool)
        healthy[[f["chain"] for f in failed]] = False
        out.healthy[k] = healthy
        good = n * traces[k][healthy]
        entry = {"beta": float(ladder[k]), "nbeta": float(t), "step_size": float(steps[k]),
                 "healthy_chains": int(healthy.sum())}
        acceptance = None
        if good.size:
            out.expect[k] = float(good.mean())
            out.variances[k] = float(good.var(ddof=1)) if good.size > 1 else 0.0
            se = diag.mcse(good)
            out.expect_se[k] = se if np.isfinite(se) else float(np.sqrt(out.variances[k] / good.size))
            entry.update(ess=diag.ess(good), rhat=diag.rhat(good))
            if acc is not None and acc.size:
                a = acc[k][healthy]
                acceptance = entry["acceptance"] = float(np.nanmean(a)) if np.isfinite(a).any() else None
        out.per_beta.append(entry)
        out.messages += diag.chain_messages(
            failed=failed, num_chains=C, chain_means=good.mean(axis=1) if good.size else np.array([]),
            rhat_value=entry.get("rhat", float("nan")), acceptance=acceptance,
            levelled=diag.levelled_off(good) if good.size else (True, np.nan, np.nan), where=f" at β = {ladder[k]:.3g}",
            step_size=float(steps[k]),
        )
    return out


@dataclass
class _Integral:
    value: float
    sampling: float
    discretisation: float
    weights: np.ndarray | None
    diagnostics: dict
    messages: list


def _integrate(method: str, ladder, rungs: _Rungs, rule: str) -> _Integral:
    """F from the per-β expectations: E at β = 1/log n (WBIC), or the TI quadrature (:func:`integrate_ladder`)."""
    if method == "wbic":
        return _Integral(float(rungs.expect[0]), float(rungs.expect_se[0]), 0.0, np.ones(1), {}, [])
    if not np.all(np.isfinite(rungs.expect)):
        return _Integral(float("nan"), float("nan"), float("nan"), None, {}, [])
    quad = integrate_ladder(ladder, rungs.expect, rungs.expect_se, rule=rule, tail_variance=rungs.variances[0])
    messages = []
    sampling, disc = quad["sampling_stderr"], quad["discretisation_error"]
    if np.isfinite(disc) and np.isfinite(sampling) and disc > max(sampling, 0.1):
        messages.append(f"discretisation error {disc:.3g} nats exceeds the sampling error {sampling:.3g}: "
                        "use more β (num_betas) or a smaller nbeta_min")
    extra = {key: quad[key] for key in ("tail", "tail_correction", "richardson_error", "weights")}
    return _Integral(quad["value"], sampling, disc, quad["weights"], extra, messages)


@dataclass
class _StepBias:
    difference: float  # F(ε) - F(ε/2): the O(ε) step-size bias of F(ε/2)
    se: float
    record: dict
    messages: list


def _step_bias(full: _Rungs, half: _Rungs, at_step: _Integral, at_half: _Integral, n: int) -> _StepBias:
    """D = F(ε) - F(ε/2) from the coupled copies, its standard error through the quadrature weights.

    Per β, :func:`slt.diagnostics.paired_difference` of n·L_B between the two copies' chains (healthy in
    both); SGLD's bias is O(ε), so D estimates the bias left in F(ε/2).
    """
    variance = 0.0
    for k in range(len(full.expect)):
        keep = full.healthy[k] & half.healthy[k]
        _, se = diag.paired_difference(n * full.traces[k][keep].astype(np.float64),
                                       n * half.traces[k][keep].astype(np.float64))
        if at_half.weights is not None:
            variance += (at_half.weights[k] * se) ** 2
    difference = float(at_step.value - at_half.value)
    se = float(np.sqrt(variance)) if at_half.weights is not None else float("nan")
    record = {"value_at_step": at_step.value, "value_at_half_step": at_half.value, "difference": difference, "se": se}
    messages = []
    if not np.isfinite(difference):
        messages.append("the step-size bias of F could not be bounded: the ε and ε/2 runs did not both give a value "
                        "(diverged rungs); reduce step_size")
    return _StepBias(difference, se, record, messages)


def _describe_prior(log_prior, localization, curvature) -> dict:
    if log_prior is None:
        return {
            "kind": "localization",
            "precision": float(localization),
            "description": f"normalised Gaussian N(params, I/γ), γ = {float(localization):g}: the local free energy "
                           "of the neighbourhood of params",
        }
    name = getattr(log_prior, "__name__", type(log_prior).__name__)
    return {"kind": "user", "name": name, "description": f"user log_prior {name} (must be normalised and proper)",
            "curvature_at_params": float(curvature)}


# ---------------------------------------------------------------------------------------------------------------
# Across checkpoints


@dataclass
class FreeEnergyTrajectory:
    """Free energies of a sequence of checkpoints (same data, settings and seed: common random numbers)."""

    labels: list
    results: list[FreeEnergyResult]
    calibration: dict | None = None  # step_size="auto": the shared step and each calibration (SharedStep.to_dict)

    @property
    def values(self) -> np.ndarray:
        return np.array([r.value for r in self.results])

    @property
    def stderrs(self) -> np.ndarray:
        return np.array([r.stderr for r in self.results])

    def to_dict(self) -> dict:
        """JSON-serialisable dict (NaN becomes None)."""
        return jsonable({"labels": list(self.labels), "values": self.values, "stderrs": self.stderrs,
                          "results": [r.to_dict() for r in self.results], "calibration": self.calibration})


def free_energy_trajectory(loss_fn, checkpoints: Mapping | Iterable, data: PyTree, **kwargs) -> FreeEnergyTrajectory:
    """:func:`free_energy` at each checkpoint, reusing one compiled sampling program.

    ``checkpoints``: a mapping label → params, a sequence of (label, params)
    pairs, or a sequence of params (labelled 0, 1, ...). All must share one
    pytree structure and shapes so the program compiles once; every checkpoint
    uses the same seed (common random numbers make differences of F more
    precise than the values). ``step_size="auto"``: one ε for every checkpoint,
    the smallest healthy one of :func:`slt.calibration.shared_step_size` (first,
    last and some checkpoints between), with the coupled ε/2 bias check on
    (recorded in ``FreeEnergyTrajectory.calibration``).
    """
    if isinstance(checkpoints, Mapping):
        items = list(checkpoints.items())
    else:
        items = list(checkpoints)
        if items and all(isinstance(i, tuple) and len(i) == 2 for i in items):
            items = [(label, p) for label, p in items]
        else:
            items = list(enumerate(items))
    check.require(len(items) > 0, "checkpoints is empty")
    structure = jax.tree.structure(items[0][1])
    for label, p in items:
        check.require(jax.tree.structure(p) == structure,
                      f"checkpoint {label!r} has a different pytree structure from the first; all must match")
    shared = None
    if isinstance(kwargs.get("step_size"), str):
        check.require(kwargs["step_size"] == "auto", f'step_size must be a number or "auto", got {kwargs["step_size"]!r}')
        from slt.calibration import shared_step_size

        calibrate_kwargs = {k: kwargs[k] for k in ("batch_size", "sampler", "seed", "sampler_options") if k in kwargs}
        if kwargs.get("log_prior") is None and "localization" in kwargs:
            calibrate_kwargs["localization"] = kwargs["localization"]
        shared = shared_step_size(loss_fn, items, data, **calibrate_kwargs)
        kwargs = {**kwargs, "step_size": shared.step_size, "bias_check": kwargs.get("bias_check", True)}
    results = [free_energy(loss_fn, p, data, **kwargs) for _, p in items]
    return FreeEnergyTrajectory([label for label, _ in items], results, shared.to_dict() if shared else None)


__all__ = [
    "FreeEnergyConfig",
    "FreeEnergyResult",
    "FreeEnergyTrajectory",
    "free_energy",
    "free_energy_trajectory",
    "geometric_ladder",
    "integrate_ladder",
]
