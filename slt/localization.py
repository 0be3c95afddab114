"""A localization γ on the scale of the weights: ``localization="scale"``.

The local posterior exp(-nβ·L(w) - γ/2·‖w - w*‖²) holds the chains near w*
along the directions where the loss is flat only through γ; there the
chains spread to a distance 1/√γ per coordinate. γ = 1 (Lau et al. 2023)
is a fixed distance in whatever units the weights happen to have: for a
network whose weights are of size 0.06 it lets the chains travel 17 times
the size of the weights along its symmetries.

``scale_localization`` sets the spread to the size of the weights instead:

    γ = c · d / ‖w*‖²,   so that   1/√γ = ‖w*‖_rms / √c

(c = 0.5: the chains may move about 1.4 times the rms weight along the
flat directions). It is unchanged when the weights are rescaled together
with the loss, which γ = 1 is not. In stiff directions of curvature nβ·h it
still scales λ̂ by nβh/(nβh + γ), negligible while γ ≪ nβ·h. Own code:
neither blackjax nor devinterp has a scale-relative localization.

Measured (docs/calibration.md): on the deep linear networks of the accuracy
benchmark, with the burn-in's bias check, it localizes too hard (5 of 8
within 10% of Aoyagi's λ, against 7 of 8 at γ = 1 under the same burn-in
rule), so γ = 1 stays the default.
"""

from __future__ import annotations

import argparse
import math
import warnings

import jax
import numpy as np

from slt import validation as check
from slt.diagnostics import SLTWarning

#: c in γ = c·d/‖w*‖² (docs/calibration.md, "Localization on the scale of the weights")
SCALE_FRACTION = 0.5
#: the name that asks for it, wherever a localization γ is accepted
SCALE = "scale"


def scale_localization(params, fraction: float = SCALE_FRACTION, *, fallback: float = 1.0) -> float:
    """γ = fraction·d/‖w*‖² for the point ``params`` (d = number of parameters).

    A point with every weight zero has no scale: then ``fallback`` (γ = 1) is
    returned with an :class:`slt.SLTWarning` saying to pass a number.
    """
    check.require(isinstance(fraction, (int, float)) and math.isfinite(fraction) and fraction > 0,
                  f"fraction must be a positive number, got {fraction!r}")
    leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(params)]
    d = sum(x.size for x in leaves)
    sq = sum(float(np.sum(x * x)) for x in leaves)
    if d == 0 or not math.isfinite(sq) or sq == 0.0:
        warnings.warn(
            f'localization="scale": the weights at w* are all zero, so they set no scale; using γ = {fallback:g}. '
            "Pass localization=<number> to choose it.", SLTWarning, stacklevel=3,
        )
        return float(fallback)
    return float(fraction * d / sq)


def parse_localization(text: str):
    """A command-line γ: a number, or ``"scale"`` (kept as the string)."""
    if text == SCALE:
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number or "{SCALE}", got {text!r}') from None


def resolve_localization(localization, params):
    """The number γ for ``localization`` (a number, or ``"scale"`` → :func:`scale_localization`)."""
    if isinstance(localization, str):
        check.require(localization == SCALE, f'localization must be a number or "{SCALE}", got {localization!r}')
        return scale_localization(params)
    return localization
