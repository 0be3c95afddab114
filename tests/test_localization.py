"""localization="scale": γ = 0.5·d/‖w*‖², used by estimate_llc and calibrate, refused by sweeps."""

import jax.numpy as jnp
import numpy as np
import pytest

import slt
from slt.localization import SCALE_FRACTION, scale_localization
from tests.test_llc import DUMMY, Z_TOL, standard_error

CENTER = 0.3 * jnp.ones(10)  # d = 10, ‖w*‖² = 0.9: γ = 0.5·10/0.9 = 5.56
NBETA, CURVATURE = 10.0, 0.5


def shifted_quadratic(w, batch):
    """L(w) = c·‖w - w*‖², minimum at w* = CENTER."""
    return CURVATURE * jnp.sum((w - CENTER) ** 2) + 0.0 * jnp.sum(batch)


def test_scale_localization_formula_and_units():
    params = {"a": np.full((2, 3), 0.2), "b": np.array([0.1, -0.4])}
    d, sq = 8, 6 * 0.04 + 0.01 + 0.16
    assert scale_localization(params) == pytest.approx(SCALE_FRACTION * d / sq, rel=1e-12)
    assert scale_localization(params, fraction=2.0) == pytest.approx(2.0 * d / sq, rel=1e-12)
    # weights 10× larger: the neighbourhood grows with them, γ falls 100×
    scaled = {k: 10 * v for k, v in params.items()}
    assert scale_localization(scaled) == pytest.approx(scale_localization(params) / 100, rel=1e-12)


def test_zero_weights_fall_back_with_a_warning():
    with pytest.warns(slt.SLTWarning, match="all zero"):
        assert scale_localization({"w": np.zeros(5)}) == 1.0


def test_bad_values_are_refused_before_sampling():
    with pytest.raises(slt.SLTInputError, match='number or "scale"'):
        slt.estimate_llc(shifted_quadratic, CENTER, DUMMY, step_size=1e-2, localization="weights")
    with pytest.raises(slt.SLTInputError, match="fraction"):
        scale_localization(CENTER, fraction=0.0)


def test_estimate_uses_the_scale_and_matches_the_exact_value():
    """For L = c‖w - w*‖² the local posterior is Gaussian: t·E[L] = d·tc/(2tc + γ) exactly (MALA is exact)."""
    gamma = scale_localization(CENTER)
    assert gamma == pytest.approx(0.5 * 10 / 0.9)
    result = slt.estimate_llc(shifted_quadratic, CENTER, DUMMY, step_size=0.02, nbeta=NBETA, localization="scale",
                              num_chains=16, num_draws=4000, num_burnin=500, sampler="mala")
    assert result.config.localization == pytest.approx(gamma)
    tc = NBETA * CURVATURE
    exact = 10 * tc / (2 * tc + gamma)  # 3.21; at γ = 1 it would be 4.55
    se = standard_error(result)
    assert abs(result.llc_mean - exact) <= Z_TOL * se, (result.llc_mean, exact, se)
    assert se < 0.05 * exact


def test_calibrate_resolves_scale():
    cal = slt.calibrate(shifted_quadratic, CENTER, DUMMY, nbeta=NBETA, localization="scale", warn=False)
    assert cal.localization == pytest.approx(scale_localization(CENTER))


def test_cli_localization_argument():
    import argparse

    from slt.cli import build_parser
    from slt.localization import parse_localization

    assert parse_localization("scale") == "scale" and parse_localization("2.5") == 2.5
    with pytest.raises(argparse.ArgumentTypeError, match='"scale"'):
        parse_localization("wide")
    args = build_parser().parse_args(["calibrate", "--task", "m:f", "--localization", "scale"])
    assert args.localization == ["scale"]
