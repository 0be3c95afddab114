"""The local tempered posterior that every sampler in slt targets.

    p(w) ∝ exp(-U(w)),   U_B(w) = nβ·L_B(w) + γ/2·‖w - w*‖²

(Lau et al. 2023, arXiv 2308.12108, eq. 9). ``L_B`` is the mean loss on a
minibatch B, ``nβ`` the inverse temperature times the number of examples, and
``γ`` the strength of the Gaussian localization around the point ``w*`` being
measured. β is folded into the likelihood term here and never into blackjax's
``temperature``, which would also temper the localization term.

With a ``log_prior`` (free energies), the localization term is replaced by
``-log φ(w)``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

PyTree = Any
LossFn = Callable[[PyTree, PyTree], jax.Array]


class Hyperparameters(NamedTuple):
    """Per-chain numbers of the target and the sampler (traced, so changing them never recompiles)."""

    step_size: jax.Array  # ε in the convention Δw = -(ε/2)·∇U + N(0, ε)
    nbeta: jax.Array  # nβ
    localization: jax.Array  # γ


def tree_sq_dist(a: PyTree, b: PyTree) -> jax.Array:
    """‖a - b‖² summed over all leaves of two pytrees of the same structure."""
    leaves = jax.tree.leaves(jax.tree.map(lambda x, y: jnp.sum(jnp.square(x - y)), a, b))
    return sum(leaves, jnp.zeros((), leaves[0].dtype)) if leaves else jnp.zeros(())


class Target(NamedTuple):
    """The energy U of the local posterior and the pieces samplers need."""

    energy: Callable  # (w, batch, hp) -> (U_B(w), L_B(w))
    value_and_grad: Callable  # (w, batch, hp) -> ((U_B, L_B), ∇U_B)
    prior_energy: Callable  # (w, hp) -> γ/2·‖w - w*‖²  or  -log φ(w)


def restricted(position: PyTree, center: PyTree, mask: PyTree | None) -> PyTree:
    """The point with the free coordinates (``mask`` True) of ``position`` and the frozen ones of ``center``."""
    if mask is None:
        return position
    return jax.tree.map(lambda w, c, m: jnp.where(m, w, c), position, center, mask)


def make_target(loss_fn: LossFn, center: PyTree, log_prior: Callable | None = None, mask: PyTree | None = None) -> Target:
    """Build the :class:`Target` for ``U_B(w) = nβ·L_B(w) + prior energy``.

    The prior energy is ``γ/2·‖w - w*‖²`` (localization at ``center = w*``)
    or, with ``log_prior``, ``-log φ(w)``. With a ``mask`` (a pytree of
    booleans, True = free; the weight-refined LLC of Wang et al. 2024, arXiv
    2410.02984) U is evaluated with the frozen coordinates at ``center``,
    so its gradient there is exactly 0 for every sampler.
    """

    def prior_energy(position: PyTree, hp: Hyperparameters):
        position = restricted(position, center, mask)
        if log_prior is None:
            return 0.5 * hp.localization * tree_sq_dist(position, center)
        return -log_prior(position)

    def energy(position: PyTree, batch: PyTree, hp: Hyperparameters):
        position = restricted(position, center, mask)
        loss = loss_fn(position, batch)
        return hp.nbeta * loss + prior_energy(position, hp), loss

    return Target(energy, jax.value_and_grad(energy, has_aux=True), prior_energy)
