"""Flax NNX and Linen models plug in through thin adapters and sample the right posterior."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen, nnx

import slt
from tests.test_llc import Z_TOL, standard_error


def linear_data(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0]], np.float32) + 0.5).astype(np.float32)
    return {"x": x, "y": y}


def exact_llc(data, nbeta, gamma=1.0):
    """Linear regression y = x·W + b at its exact fit: t·tr(S(2tS + γI)⁻¹), S the second moment of [x, 1]."""
    z = np.concatenate([data["x"], np.ones((len(data["x"]), 1), np.float32)], 1).astype(np.float64)
    s = z.T @ z / len(z)
    return float(nbeta * np.trace(s @ np.linalg.inv(2 * nbeta * s + gamma * np.eye(3))))


def mse(model, batch):
    return jnp.mean((model(batch["x"]) - batch["y"]) ** 2)


@pytest.mark.slow
def test_nnx_module():
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    model.kernel[...] = jnp.array([[1.0], [-2.0]])
    model.bias[...] = jnp.array([0.5])
    loss_fn, params = slt.from_nnx(model, mse)
    data = linear_data()
    assert float(loss_fn(params, data)) == pytest.approx(0.0, abs=1e-10)
    result = slt.estimate_llc(loss_fn, params, data, step_size=1e-4, batch_size=100, num_chains=16,
                              num_draws=3000, num_burnin=300)
    assert abs(result.llc_mean - exact_llc(data, result.nbeta)) <= Z_TOL * standard_error(result)
    # the model itself is untouched by sampling
    np.testing.assert_array_equal(model.kernel[...], jnp.array([[1.0], [-2.0]]))


@pytest.mark.slow
def test_linen_module():
    module = linen.Dense(1)
    variables = module.init(jax.random.PRNGKey(0), jnp.ones((1, 2)))
    variables = {"params": {"kernel": jnp.array([[1.0], [-2.0]]), "bias": jnp.array([0.5])}}
    loss_fn, params = slt.from_linen(module, variables, mse)
    data = linear_data()
    assert float(loss_fn(params, data)) == pytest.approx(0.0, abs=1e-10)
    result = slt.estimate_llc(loss_fn, params, data, step_size=1e-4, batch_size=100, num_chains=16,
                              num_draws=3000, num_burnin=300)
    assert abs(result.llc_mean - exact_llc(data, result.nbeta)) <= Z_TOL * standard_error(result)
