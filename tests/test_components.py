"""Weight-refined LLCs (restrict=, estimate_llc_components) against exact values, and their bad input.

A deep linear network is linear in each single matrix, so its loss restricted to one matrix (or a slice of
one) is exactly quadratic, L = ½·δᵀHδ, and the local posterior exp(-t·L - γ/2·‖δ‖²) is Gaussian
(REFERENCE §9): t·E[L] = ½·Σᵢ t·hᵢ/(t·hᵢ + γ) over the eigenvalues hᵢ of the restricted Hessian. SGLD's own
stationary law on it is Gaussian too, with variance 1/(a(1 - εa/4)) along each eigenvector (a = t·h + γ),
so SGLD is checked against its exact discrete value and MALA against the continuous one.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import slt
from slt.components import attention_heads, heads, layers, num_free, restriction_mask
from slt.posterior import Hyperparameters
from slt.sampling import RunConfig, run_chains

Z_TOL = 4.0
T, GAMMA = 100.0, 1.0


def dln_problem(seed=0, n=256):
    """[3 → 4 → 2] linear network at a rank-2 true parameter with noise-free data (L(w*) = 0)."""
    rng = np.random.default_rng(seed)
    params = {"a": jnp.asarray(rng.normal(size=(3, 4)) / 2, jnp.float32),
              "b": jnp.asarray(rng.normal(size=(4, 2)) / 2, jnp.float32)}
    x = jnp.asarray(rng.normal(size=(n, 3)), jnp.float32)
    data = {"x": x, "y": x @ params["a"] @ params["b"]}
    return params, data


def dln_loss(p, batch):
    return jnp.mean((batch["x"] @ p["a"] @ p["b"] - batch["y"]) ** 2)


PARAMS, DATA = dln_problem()


def exact_restricted(mask, step=None, noise=1.0) -> float:
    """t·E[L] under the restricted local posterior (continuous, or SGLD's own law at ``step``)."""
    flat, unravel = ravel_pytree(PARAMS)
    free = np.asarray(ravel_pytree(jax.tree.map(lambda m: jnp.asarray(m, jnp.float32), mask))[0]) > 0
    hessian = np.asarray(jax.hessian(lambda f: dln_loss(unravel(f), DATA))(flat), np.float64)
    h = np.clip(np.linalg.eigvalsh(hessian[np.ix_(free, free)]), 0.0, None)  # L = ½ δᵀ H δ exactly
    a = T * h + GAMMA
    variance = noise**2 / a if step is None else noise**2 / (a * (1 - step * a / 4))
    return float(0.5 * T * np.sum(h * variance))


def top_precision(mask) -> float:
    flat, unravel = ravel_pytree(PARAMS)
    free = np.asarray(ravel_pytree(jax.tree.map(lambda m: jnp.asarray(m, jnp.float32), mask))[0]) > 0
    hessian = np.asarray(jax.hessian(lambda f: dln_loss(unravel(f), DATA))(flat), np.float64)
    return float(T * np.linalg.eigvalsh(hessian[np.ix_(free, free)])[-1] + GAMMA)


def standard_error(r) -> float:
    return max(r.diagnostics["mcse"], r.llc_std / np.sqrt(len(r.llc_per_chain)))


def check_exact(r, exact):
    se = standard_error(r)
    assert abs(r.llc_mean - exact) <= Z_TOL * se, f"λ̂ = {r.llc_mean:.4f}, exact {exact:.4f}, se {se:.4f}"
    assert se < 0.03 * exact  # small enough to fail


COLUMN = {"a": np.zeros((3, 4), bool), "b": np.eye(4, 2, dtype=bool)[:, ::-1] | np.eye(4, 2, dtype=bool)}


@pytest.mark.parametrize("restrict", ["a", "b", COLUMN], ids=["matrix a", "matrix b", "slice of b"])
def test_sgld_on_one_matrix_matches_its_exact_discrete_law(restrict):
    mask = restriction_mask(PARAMS, restrict)
    step = 0.5 / top_precision(mask)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = slt.estimate_llc(dln_loss, PARAMS, DATA, restrict=restrict, step_size=step, nbeta=T, localization=GAMMA,
                             num_chains=8, num_draws=6000, num_burnin=3000, seed=1)
    check_exact(r, exact_restricted(mask, step))
    assert r.num_params == num_free(mask) and r.diagnostics["restriction"]["num_free"] == num_free(mask)


def test_mala_on_one_matrix_matches_the_exact_gaussian_value():
    mask = restriction_mask(PARAMS, "b")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = slt.estimate_llc(dln_loss, PARAMS, DATA, restrict="b", step_size=1.0 / top_precision(mask), nbeta=T,
                             localization=GAMMA, num_chains=8, num_draws=6000, num_burnin=2000, sampler="mala", seed=2)
    check_exact(r, exact_restricted(mask))
    assert 0.5 < r.diagnostics["acceptance_mean"] < 1.0


def test_every_matrix_as_a_component_in_one_program_equals_each_run_alone():
    kwargs = dict(step_size=2e-3, nbeta=T, localization=GAMMA, num_chains=4, num_draws=400, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        together = slt.estimate_llc_components(dln_loss, PARAMS, DATA, components="layers", whole_model=True, **kwargs)
        alone = {name: slt.estimate_llc(dln_loss, PARAMS, DATA, restrict=None if name == "model" else name, **kwargs)
                 for name in ("a", "b", "model")}
    assert set(together) == {"a", "b", "model"}
    for name in alone:
        np.testing.assert_allclose(together[name].loss_trace, alone[name].loss_trace, rtol=1e-5, atol=1e-7)
    assert together["a"].num_params == 12 and together["b"].num_params == 8 and together["model"].num_params == 20
    # one program: the second call with the same shapes compiles nothing
    again = slt.estimate_llc_components(dln_loss, PARAMS, DATA, components="layers", whole_model=True, **kwargs)
    assert again["a"].timing["compile_seconds"] == 0.0


@pytest.mark.parametrize("sampler", slt.SAMPLERS)
def test_frozen_coordinates_stay_bitwise_at_w_star(sampler):
    mask = restriction_mask(PARAMS, COLUMN)
    config = RunConfig(sampler, 2, 50, 256, mask="shared")
    run = run_chains(dln_loss, PARAMS, DATA, Hyperparameters(1e-3, T, GAMMA), config=config, mask=mask,
                     return_state=True)
    final = run.final_state.sampler_state.position
    for leaf, m, start in zip(jax.tree.leaves(final), jax.tree.leaves(mask), jax.tree.leaves(PARAMS)):
        moved = np.asarray(leaf)
        np.testing.assert_array_equal(moved[:, ~m], np.broadcast_to(np.asarray(start)[~m], moved[:, ~m].shape))
        if m.any():
            assert np.all(moved[:, m] != np.asarray(start)[m])  # the free ones did move


@pytest.mark.slow
def test_bounding_box_and_noise_level():
    box = 1e-3
    config = RunConfig("sgld", 2, 200, 256, sampler_options=(("bounding_box", box),))
    run = run_chains(dln_loss, PARAMS, DATA, Hyperparameters(1e-3, T, GAMMA), config=config, return_state=True)
    for leaf, start in zip(jax.tree.leaves(run.final_state.sampler_state.position), jax.tree.leaves(PARAMS)):
        assert np.max(np.abs(np.asarray(leaf) - np.asarray(start))) <= box + 1e-6  # float32 rounding of w* ± b
    # noise_level = 0 at a minimum: noiseless descent stays exactly at w*, λ̂ = 0
    still = slt.estimate_llc(dln_loss, PARAMS, DATA, step_size=1e-3, nbeta=T, num_chains=2, num_draws=100,
                             sampler_options={"noise_level": 0.0})
    assert still.llc_mean == 0.0
    # σ = 1/2 samples the Gaussian with a quarter of the variance: a quarter of the exact value
    mask = restriction_mask(PARAMS, "b")
    step = 0.5 / top_precision(mask)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = slt.estimate_llc(dln_loss, PARAMS, DATA, restrict="b", step_size=step, nbeta=T, localization=GAMMA,
                             num_chains=8, num_draws=6000, num_burnin=3000, seed=4, sampler_options={"noise_level": 0.5})
    check_exact(r, exact_restricted(mask, step, noise=0.5))


def test_component_names():
    assert layers(PARAMS) == {"a": "a", "b": "b"}
    from slt.models.modular import make_modular_task

    t = make_modular_task("transformer", p=11, d_model=16, num_heads=4, d_mlp=32)
    found = heads(t.params)
    assert list(found) == ["L0H0", "L0H1", "L0H2", "L0H3"]
    q = np.asarray(found["L0H2"]["blocks"][0]["attn"]["W_Q"])
    assert q[2].all() and not q[[0, 1, 3]].any()  # head axis 0 of [heads, d_head, d_model]
    o = np.asarray(found["L0H2"]["blocks"][0]["attn"]["W_O"])
    assert o[:, 8:12].all() and o.sum() == 16 * 4  # columns 8..11 of [d_model, heads·d_head]
    assert not np.asarray(found["L0H2"]["embed"]["W_E"]).any()
    # a fused QKV weight [d, 3d] (GPT-2's Conv1D c_attn): head i frees its block of each of q, k, v
    fused = {"h": {"0": {"attn": {"c_attn": {"weight": jnp.zeros((8, 24))}, "c_proj": {"weight": jnp.zeros((8, 8))}}}}}
    masks = attention_heads(fused, "h/0/attn", 2, {"c_attn/weight": -1, "c_proj/weight": 0}, fused={"c_attn/weight": 3})
    w = np.asarray(masks["h/0/attn/h1"]["h"]["0"]["attn"]["c_attn"]["weight"])
    assert w[:, [4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23]].all() and w.sum() == 8 * 12
    proj = np.asarray(masks["h/0/attn/h1"]["h"]["0"]["attn"]["c_proj"]["weight"])
    assert proj[4:].all() and proj.sum() == 4 * 8  # its input rows (heads·d_head, axis 0)


@pytest.mark.parametrize(
    "restrict, message",
    [
        ("c", r"pattern 'c' matches no parameter; the paths are a, b"),
        ({"a": np.ones((3, 3), bool), "b": True}, r"mask for 'a' has shape \(3, 3\), the parameter has shape \(3, 4\)"),
        ({"a": np.ones((3, 4)), "b": True}, r"mask for 'a' has dtype float64; use booleans"),
        ({"a": False, "b": False}, r"restrict frees no parameter"),
        ({"a": True}, r"structure differs from the params'"),
        (lambda path, leaf: 1 / 0, r"restrict\('a', leaf\) failed: ZeroDivisionError"),
    ],
)
def test_bad_restrictions_are_refused_before_sampling(restrict, message, monkeypatch):
    monkeypatch.setattr(slt.sampling, "compiled_program", lambda *a, **k: pytest.fail("compiled before validating"))
    with pytest.raises(slt.SLTInputError, match=message):
        slt.estimate_llc(dln_loss, PARAMS, DATA, step_size=1e-3, restrict=restrict)
