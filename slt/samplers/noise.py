"""Gaussian noise for the samplers: one flat draw per step for the whole pytree.

One Gaussian draw of the total parameter count (:func:`standard_normal`:
``jax.random.normal``'s, with a cheaper erf⁻¹ for float32), sliced into the
leaves, instead of one key split and one RNG call per leaf (blackjax's
``generate_gaussian_noise``): fewer, larger kernels, and the same noise for a
pytree however its leaves are split. The generator is the key's PRNG
implementation; :mod:`slt.sampling` picks it (see ``RunConfig.prng_impl``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def tree_normal(rng_key, tree):
    """N(0, I) noise shaped like ``tree`` (one RNG call, in the leaves' common dtype)."""
    leaves, treedef = jax.tree.flatten(tree)
    if not leaves:
        return tree
    dtype = jnp.result_type(*leaves)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.float32
    sizes = [math.prod(jnp.shape(x)) for x in leaves]
    flat = standard_normal(rng_key, (sum(sizes),), dtype)
    out, start = [], 0
    for x, size in zip(leaves, sizes):
        out.append(flat[start : start + size].reshape(jnp.shape(x)).astype(jnp.result_type(x)))
        start += size
    return jax.tree.unflatten(treedef, out)


# ----------------------------------------------------------------------------
# the Gaussian transform
# ----------------------------------------------------------------------------

# Giles (2010), "Approximating the erfinv function" (GPU Computing Gems), single precision: the polynomials
# XLA's ErfInv uses, in w - 2.5 for w < 5 and in sqrt(w) - 3 beyond, w = -log(1 - x²).
_ERFINV_CENTRAL = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
                   -0.00125372503, -0.00417768164, 0.246640727, 1.50140941)
_ERFINV_TAIL = (-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
                -0.0076224613, 0.00943887047, 1.00167406, 2.83297682)


def erfinv_f32(x):
    """erf⁻¹(x) for float32 x in the open interval (-1, 1) (at ±1 it is not ±inf; the uniforms of
    :func:`standard_normal` never reach ±1): Giles' polynomials in w = -log((1 - x)(1 + x)).

    XLA's own ErfInv takes w = -log1p(-x²); on CPU its log1p costs about as
    much as the rest of the Gaussian draw together, and the SGLD step of the
    grokking MLP is 5% faster with log((1 - x)(1 + x)) (docs/performance.md).
    It is also more accurate: max relative error 2.5e-7 against erf⁻¹ in
    float64, XLA's 5.8e-6, on a grid of 2·10⁶ points in (-1, 1).
    """
    w = -jnp.log((1.0 - x) * (1.0 + x))
    central = w < 5.0
    t = jnp.where(central, w - 2.5, jnp.sqrt(w) - 3.0)
    p = jnp.where(central, jnp.float32(_ERFINV_CENTRAL[0]), jnp.float32(_ERFINV_TAIL[0]))
    for c, d in zip(_ERFINV_CENTRAL[1:], _ERFINV_TAIL[1:]):
        p = jnp.where(central, jnp.float32(c), jnp.float32(d)) + p * t
    return p * x


def standard_normal(rng_key, shape, dtype=jnp.float32):
    """N(0, 1) values: ``jax.random.normal``'s draw (u uniform on (-1, 1), z = √2·erf⁻¹(u)) with
    :func:`erfinv_f32` for float32; other dtypes are ``jax.random.normal`` itself."""
    if jnp.dtype(dtype) != jnp.float32:
        return jax.random.normal(rng_key, shape, dtype)
    lo = np.nextafter(np.float32(-1.0), np.float32(0.0))
    u = jax.random.uniform(rng_key, shape, jnp.float32, lo, 1.0)
    return jnp.float32(math.sqrt(2.0)) * erfinv_f32(u)


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
