"""Bad input gets a clear error naming the argument, before anything is compiled."""

import jax.numpy as jnp
import numpy as np
import pytest

import slt
import slt.llc
import slt.losses
import slt.sampling


@pytest.fixture(autouse=True)
def nothing_compiles(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("compiled something before validating the input")

    monkeypatch.setattr(slt.sampling, "compiled_program", forbidden)
    monkeypatch.setattr(slt.llc, "initial_loss", forbidden)


def loss(w, batch):
    return jnp.mean((batch["x"] @ w - batch["y"]) ** 2)


PARAMS = jnp.ones(3)
DATA = {"x": np.ones((10, 3), np.float32), "y": np.ones(10, np.float32)}


def call(**overrides):
    kwargs = dict(loss_fn=loss, params=PARAMS, data=DATA, step_size=1e-3)
    kwargs.update(overrides)
    return slt.estimate_llc(kwargs.pop("loss_fn"), kwargs.pop("params"), kwargs.pop("data"), **kwargs)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(step_size=0.0), "step_size must be a finite number > 0"),
        (dict(step_size=-1e-3), "step_size"),
        (dict(step_size=float("nan")), "step_size"),
        (dict(step_size="big"), 'step_size must be a number or "auto"'),
        (dict(nbeta=0.0), "nbeta must be a finite number > 0"),
        (dict(nbeta=-5), "nbeta"),
        (dict(localization=-1.0), "localization must be a finite number ≥ 0"),
        (dict(batch_size=11), "batch_size=11 is larger than the number of examples n=10"),
        (dict(batch_size=0), "batch_size must be an integer ≥ 1"),
        (dict(num_chains=0), "num_chains must be an integer ≥ 1"),
        (dict(num_draws=2.5), "num_draws must be an integer"),
        (dict(num_burnin=-1), "num_burnin must be an integer ≥ 0"),
        (dict(sampler="nuts"), "sampler='nuts' is not known"),
        (dict(sampler="mala", batch_size=5), "full-batch"),
        (dict(data={}), "data is empty"),
        (dict(data={"x": np.ones((0, 3)), "y": np.ones(0)}), "data has 0 examples"),
        (dict(data={"x": np.ones((10, 3)), "y": np.ones(9)}), "leading axis sizes \\[9, 10\\]"),
        (dict(data={"x": np.ones((10, 3)), "y": np.float32(1.0)}), "scalar"),
        (dict(params=jnp.array([1.0, jnp.nan, 0.0])), "params contains NaN or Inf"),
        (dict(params={"w": jnp.ones(3, jnp.int32)}), "dtype int32"),
        (dict(params=jnp.ones(4)), "loss_fn\\(params, batch\\) failed"),
        (dict(loss_fn=lambda w, b: (b["x"] @ w - b["y"]) ** 2), "must return a scalar mean loss, got shape \\(10,\\)"),
        (dict(loss_fn="loss"), "loss_fn must be callable"),
        (dict(data={"x": np.where(np.eye(10, 3, k=-4) > 0, np.nan, 1.0), "y": np.ones(10)}),
         r"data\['x'\] has 3 NaN/Inf value\(s\), in example\(s\) 4, 5, 6; clean or drop them"),
    ],
)
def test_bad_input_is_refused_before_compiling(overrides, message):
    with pytest.raises(slt.SLTInputError, match=message):
        call(**overrides)


def test_default_nbeta_needs_two_examples():
    with pytest.raises(slt.SLTInputError, match="pass nbeta explicitly"):
        call(data={"x": np.ones((1, 3)), "y": np.ones(1)})


@pytest.mark.parametrize(
    "sampler, options, message",
    [
        ("sghmc", {"momentum": 0.9}, r"\['momentum'\] are not options of sghmc; it takes \['bounding_box', 'friction'"),
        ("sgnht", {"friction": 2.0}, r"friction'\] must be in \(0, 1\], got 2.0"),
        ("psgld", {"rmsprop_decay": 1.5}, r"rmsprop_decay'\] for psgld must be in \[0, 1\)"),
        ("sgld", {"noise_level": -1.0}, r"noise_level'\] for sgld must be a finite number ≥ 0"),
        ("sgld", {"bounding_box": 0.0}, r"bounding_box'\] for sgld must be a finite number > 0"),
        ("mala", {"noise_level": 0.5}, r"MALA is exact"),
    ],
)
def test_sampler_options_are_checked_before_compiling(sampler, options, message):
    batch = None if sampler == "mala" else 5
    with pytest.raises(slt.SLTInputError, match=message):
        call(sampler=sampler, sampler_options=options, batch_size=batch)


def test_input_error_is_a_value_error():
    assert issubclass(slt.SLTInputError, ValueError)


def test_a_non_finite_loss_at_w_star_is_a_data_error_not_a_step_size_one(monkeypatch):
    monkeypatch.setattr(slt.llc, "initial_loss", slt.losses.initial_loss)
    with pytest.raises(slt.SLTInputError, match=r"L\(w\*\) = (nan|-?inf): the loss is not finite at the checkpoint"):
        call(loss_fn=lambda w, b: jnp.mean(jnp.log(b["x"] @ w - 3.0)))  # log(0) at w* = 1
