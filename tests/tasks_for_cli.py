"""Task factories for the ``slt calibrate --task`` tests (tests/test_calibration.py)."""

from types import SimpleNamespace

import jax.numpy as jnp


def quadratic_loss(w, batch):
    """L(w) = Σ w² (curvature 2 in every direction), independent of the data."""
    return jnp.sum(w**2) + 0.0 * jnp.sum(batch)


def quadratic_task():
    """A tuple (loss_fn, params, data): 3 parameters at the minimum, 200 dummy examples."""
    return quadratic_loss, jnp.zeros(3), jnp.zeros((200, 1))


def quadratic_task_object():
    """The same task as an object with attributes loss_fn, params, data (like slt.models.train.Task)."""
    return SimpleNamespace(loss_fn=quadratic_loss, params=jnp.zeros(3), data=jnp.zeros((200, 1)), meta={})


def wrong_return():
    return quadratic_loss, jnp.zeros(3)


not_a_function = 3
