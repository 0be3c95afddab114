"""Constraints on every sampler's move, applied by the sampling program after each step.

- A restriction (``mask``, True = free): frozen coordinates are put back
  exactly where they were, so they stay at w* bit for bit (no drift, no
  noise). With the target evaluated at the restricted point
  (:func:`slt.posterior.restricted`) the gradient there is 0, so momentum
  samplers see those coordinates as free particles and their thermostats stay
  consistent; the free coordinates sample the weight-refined local posterior
  (Wang et al. 2024, arXiv 2410.02984).
- A bounding box (``bounding_box`` option, devinterp's
  ``bounding_box_size``): each coordinate is clamped to w* ± b.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def constrain(new_state, old_position, center, mask, bounding_box):
    """``new_state`` with its position clamped to ``center ± bounding_box`` (if given) and the frozen
    coordinates of ``mask`` (if given) set back to ``old_position``."""
    position = new_state.position
    if bounding_box is not None:
        position = jax.tree.map(
            lambda w, c: jnp.clip(w, c - jnp.asarray(bounding_box, w.dtype), c + jnp.asarray(bounding_box, w.dtype)),
            position, center,
        )
    if mask is not None:
        position = jax.tree.map(lambda w, o, m: jnp.where(m, w, o), position, old_position, mask)
    if position is new_state.position:
        return new_state
    return new_state._replace(position=position)
