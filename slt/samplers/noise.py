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


# ----------------------------------------------------------------------------
# a fast counter-based PRNG for bulk noise
# ----------------------------------------------------------------------------

_WEYL = 0x9E3779B9


def _fmix32(x):
    """MurmurHash3's 32-bit finalizer (a bijection with full avalanche)."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def counter_hash_bits(key_words, shape, salt: int = 0):
    """32 random bits per element: ``fmix32(fmix32(i·φ + k0) ⊕ k1)`` for element index i and key (k0, k1)."""
    n = math.prod(shape)
    if n >= 2**32:
        raise ValueError("counter_hash draws at most 2**32 values per key")
    i = jax.lax.iota(jnp.uint32, n)
    k0, k1 = key_words[..., 0], key_words[..., 1] ^ jnp.uint32(salt)
    return _fmix32(_fmix32(i * jnp.uint32(_WEYL) + k0) ^ k1).reshape(shape)


def _counter_hash_random_bits(key_words, bit_width, shape):
    bits = counter_hash_bits(key_words, shape)
    if bit_width == 32:
        return bits
    if bit_width in (8, 16):
        return bits.astype(jnp.dtype(f"uint{bit_width}"))
    if bit_width == 64:
        high = counter_hash_bits(key_words, shape, salt=0x5BD1E995)
        return (high.astype(jnp.uint64) << 32) | bits.astype(jnp.uint64)
    raise ValueError(f"bit_width {bit_width}")


def _make_counter_hash_impl():
    from jax.extend.random import define_prng_impl, threefry_prng_impl as tf

    return define_prng_impl(
        key_shape=tf.key_shape,
        seed=tf.seed,
        split=tf.split,
        fold_in=tf.fold_in,
        random_bits=_counter_hash_random_bits,
        name="counter_hash",
        tag="chash",
    )


#: PRNG implementation "counter_hash": threefry for keys (seed, split, fold_in),
#: a keyed counter hash for bulk bits (noise, minibatch indices), several
#: times cheaper than threefry on CPU. Use it as ``jax.random.key(s, impl=COUNTER_HASH)``.
COUNTER_HASH = _make_counter_hash_impl()
