"""Gaussian noise for the samplers: one flat draw per step for the whole pytree.

One ``jax.random.normal`` call of the total parameter count, sliced into the
leaves, instead of one key split and one RNG call per leaf (blackjax's
``generate_gaussian_noise``): fewer, larger kernels, and the same noise for a
pytree however its leaves are split. The generator is the key's PRNG
implementation; :mod:`slt.sampling` picks it (see ``RunConfig.prng_impl``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def tree_normal(rng_key, tree):
    """N(0, I) noise shaped like ``tree`` (one RNG call, in the leaves' common dtype)."""
    leaves, treedef = jax.tree.flatten(tree)
    if not leaves:
        return tree
    dtype = jnp.result_type(*leaves)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.float32
    sizes = [math.prod(jnp.shape(x)) for x in leaves]
    flat = jax.random.normal(rng_key, (sum(sizes),), dtype)
    out, start = [], 0
    for x, size in zip(leaves, sizes):
        out.append(flat[start : start + size].reshape(jnp.shape(x)).astype(jnp.result_type(x)))
        start += size
    return jax.tree.unflatten(treedef, out)
