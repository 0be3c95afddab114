"""What every sampler module provides, the registry of sampler names, and the checks of their options.

A sampler module (one file per algorithm, as in blackjax) defines

- ``init(position, rng_key, batch, hp, target, **options) -> State`` (a NamedTuple with a ``position`` field)
- ``build_kernel(target, **options) -> kernel(rng_key, state, batch, hp) -> (State, StepInfo)``
- ``ACCEPTANCE``: what its acceptance column means. ``"checked"``: the
  position update is a (preconditioned) Langevin proposal, so the program can
  compute the MALA acceptance probability of the proposal as a health check
  (Furman & Lau, arXiv 2402.03698), with ``preconditioner(state, options)``
  giving its diagonal G (None = identity). ``"exact"``: the sampler's own
  Metropolis–Hastings acceptance (MALA). ``None``: not defined (momentum samplers).
- ``FULL_BATCH_ONLY``: whether minibatches are refused (MALA).
- ``DEFAULTS``: its own options and their defaults.

Options shared by the SGLD family (never MALA, an exact sampler whose
Metropolis correction they would break), devinterp's ``noise_level`` and
``bounding_box_size``:

- ``noise_level`` (default 1): the Langevin noise is scaled by it; 0 gives
  noiseless (localized, tempered) gradient descent, a diagnostic.
- ``bounding_box`` (default None): after every step each coordinate is
  clamped to w* ± b (:func:`slt.samplers.moves.constrain`).

Every option is checked by :func:`check_options` when the estimate is set up,
before anything is traced or compiled.

``target`` is a :class:`slt.posterior.Target` (energy and its gradient);
``hp`` is :class:`slt.posterior.Hyperparameters`.
"""

from __future__ import annotations

import importlib
import math
from numbers import Real
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from slt.samplers.noise import tree_normal
from slt.validation import SLTInputError

SAMPLERS = ("sgld", "psgld", "sghmc", "sgnht", "mala")
#: options every SGLD-family sampler takes, with their defaults (module docstring)
SHARED_DEFAULTS = {"noise_level": 1.0, "bounding_box": None}


class StepInfo(NamedTuple):
    loss: jax.Array  # L_B(w_t) at the position before the step (minibatch loss)
    acceptance: jax.Array = jnp.nan  # a real MH acceptance (MALA only)


def get_sampler(name: str):
    """The module implementing sampler ``name``."""
    if name not in SAMPLERS:
        raise SLTInputError(f"sampler={name!r} is not known; choose one of {', '.join(SAMPLERS)}")
    return importlib.import_module(f"slt.samplers.{name}")


def _number(name: str, sampler: str, value: Any, *, low: float, low_open: bool, high: float | None = None) -> None:
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))
    ok = ok and (float(value) > low if low_open else float(value) >= low) and (high is None or float(value) <= high)
    if not ok:
        bound = f"{'>' if low_open else '≥'} {low:g}" + ("" if high is None else f" and ≤ {high:g}")
        raise SLTInputError(f"sampler_options[{name!r}] for {sampler} must be a finite number {bound}, got {value!r}")


def check_options(sampler: str, options: dict | None) -> tuple[tuple[str, Any], ...]:
    """Validate ``options`` for ``sampler``; the sorted (name, value) pairs a :class:`RunConfig` records.

    Unknown names, and values out of range, raise :class:`slt.SLTInputError` naming the option.
    """
    module = get_sampler(sampler)
    options = dict(options or {})
    known = dict(module.DEFAULTS)
    if not module.FULL_BATCH_ONLY:
        known.update(SHARED_DEFAULTS)
    unknown = sorted(set(options) - set(known))
    if unknown:
        hint = " (MALA is exact: noise_level and bounding_box would break its Metropolis correction)" if (
            module.FULL_BATCH_ONLY and set(unknown) & set(SHARED_DEFAULTS)) else ""
        raise SLTInputError(
            f"sampler_options {unknown} are not options of {sampler}; it takes {sorted(known) or 'none'}{hint}"
        )
    if "noise_level" in options:
        _number("noise_level", sampler, options["noise_level"], low=0.0, low_open=False)
    if options.get("bounding_box") is not None:
        _number("bounding_box", sampler, options["bounding_box"], low=0.0, low_open=True)
    check = getattr(module, "check_own_options", None)
    if check is not None:
        check(options)
    return tuple(sorted(options.items()))


def option(options: dict, name: str, module_defaults: dict | None = None):
    """The value of option ``name`` (its default when not given)."""
    defaults = {**SHARED_DEFAULTS, **(module_defaults or {})}
    return options.get(name, defaults[name])


def langevin_noise(rng_key, position, options: dict):
    """N(0, I) noise shaped like ``position``, scaled by the ``noise_level`` option (1 by default)."""
    noise = tree_normal(rng_key, position)
    level = option(options, "noise_level")
    if level == 1.0:
        return noise
    return jax.tree.map(lambda z: z * jnp.asarray(level, z.dtype), noise)


def kernel_options(options: dict) -> dict:
    """The options a kernel reads: all but ``bounding_box``, which the program applies after each step."""
    return {k: v for k, v in options.items() if k != "bounding_box"}
