"""Deep linear networks (DLN) with a true parameter of chosen rank.

f(x) = x·W₁·W₂⋯W_L (flax kernels W_s of shape [in, out]). **Widths are listed
input → output** here: ``widths = [d_in, h_1, ..., d_out]``. Aoyagi's theory
(and :func:`slt.theory.dln`) lists them output → input, y = A⁽¹⁾⋯A⁽ᴸ⁾x with
A⁽ˢ⁾ = W_{L+1-s}ᵀ; :func:`to_theory_widths` converts.

Protocol of Lau et al. (arXiv 2308.12108) and Furman & Lau (arXiv 2402.03698):
no-noise data x ~ U[-10, 10]^d_in, y = target(x); loss
L(w) = (1/(n·d_out)) Σᵢ ‖yᵢ - f(xᵢ; w)‖² (mean squared error over examples
and outputs, as PyTorch's ``MSELoss``); λ̂ is measured at the true parameter w*, L(w*) = 0.

The true parameter: every factor has rank exactly r, W_s = P_s Q_sᵀ with
Gaussian P_s [h_in, r], Q_s [h_out, r] (so the product has rank r almost
surely). This is the most singular kind of point with a rank-r product, the
one Aoyagi's λ describes (Aoyagi 2024, Neural Networks 172:106132); a point
where only one factor is rank-deficient has a larger local learning
coefficient. (The published experiments instead rank-reduce random layers
and keep the others full rank: for [10, 10, 10] with one rank-3 layer the
product map is then a submersion, the local λ is the regular 50 rather than
Aoyagi's 44, and SGLD at the published settings measures 46.2.)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from slt import theory
from slt.models.train import Task

__all__ = ["DLN", "to_theory_widths", "make_target_kernels", "product", "dln_loss", "make_dln_task"]


class DLN(nnx.Module):
    """Bias-free deep linear network, ``widths`` listed input → output."""

    def __init__(self, widths: Sequence[int], *, rngs: nnx.Rngs):
        widths = [int(w) for w in widths]
        if len(widths) < 2:
            raise ValueError(f"widths needs at least [d_in, d_out], got {widths}")
        self.widths = tuple(widths)
        self.layers = nnx.List(
            [nnx.Linear(a, b, use_bias=False, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])]
        )

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def to_theory_widths(widths: Sequence[int]) -> list[int]:
    """Input→output widths to Aoyagi's output→input order [H(1), ..., H(L+1)]."""
    return [int(w) for w in reversed(list(widths))]


def _rng(seed_or_rng) -> np.random.Generator:
    return seed_or_rng if isinstance(seed_or_rng, np.random.Generator) else np.random.default_rng(seed_or_rng)


CONSTRUCTIONS = ("every_layer", "one_layer")


def make_target_kernels(widths: Sequence[int], rank: int, rng=0, construction: str = "every_layer") -> list[np.ndarray]:
    """Kernels of a true parameter whose product has rank ``rank``. float32 arrays [h_in, h_out].

    ``construction="every_layer"`` (default, the most singular point):
    W_s = P_s Q_sᵀ with P_s ~ N(0, 1/h_in), Q_s ~ N(0, 1/r) entrywise, so every
    layer has rank r and roughly keeps the scale of its input; ``rank=0``
    gives all-zero kernels.

    ``construction="one_layer"`` (the published experiments' kind of point):
    every layer N(0, 1/h_in) (flax's default ``lecun_normal`` scale), then one
    layer, chosen at random, truncated to rank r by its SVD. This is Lau et
    al.'s "rand_rank" true parameter with exactly one layer reduced; its local
    learning coefficient is above Aoyagi's λ (see the module docstring).

    ``rng``: a seed or a ``np.random.Generator``.
    """
    widths = [int(w) for w in widths]
    if not 0 <= rank <= min(widths):
        raise ValueError(f"rank must be in [0, min(widths)={min(widths)}], got {rank}")
    if construction not in CONSTRUCTIONS:
        raise ValueError(f"construction must be one of {CONSTRUCTIONS}, got {construction!r}")
    rng = _rng(rng)
    if construction == "one_layer":
        kernels = [rng.standard_normal((a, b)) / np.sqrt(a) for a, b in zip(widths[:-1], widths[1:])]
        s = int(rng.integers(len(kernels)))
        u, sv, vt = np.linalg.svd(kernels[s], full_matrices=False)
        kernels[s] = (u[:, :rank] * sv[:rank]) @ vt[:rank]
        return [k.astype(np.float32) for k in kernels]
    kernels = []
    for h_in, h_out in zip(widths[:-1], widths[1:]):
        if rank == 0:
            kernels.append(np.zeros((h_in, h_out), np.float32))
            continue
        P = rng.standard_normal((h_in, rank)) / np.sqrt(h_in)
        Q = rng.standard_normal((h_out, rank)) / np.sqrt(rank)
        kernels.append((P @ Q.T).astype(np.float32))
    return kernels


def product(params) -> jax.Array:
    """The end-to-end matrix W₁⋯W_L ([d_in, d_out]) of DLN params."""
    layers = params["layers"]
    kernels = [layers[i]["kernel"] for i in sorted(layers)] if isinstance(layers, dict) else [l["kernel"] for l in layers]
    out = jnp.asarray(kernels[0])
    for k in kernels[1:]:
        out = out @ k
    return out


def dln_loss(pred, y):
    """Mean squared error over examples and outputs, (1/(n·d_out)) Σᵢ ‖yᵢ - predᵢ‖².

    PyTorch's ``MSELoss`` (devinterp, Furman & Lau): summing over outputs
    instead multiplies the curvature by d_out, and the published ε = 5e-7
    then diverges.
    """
    return jnp.mean((y - pred) ** 2)


@functools.lru_cache(maxsize=64)
def _graphdef(widths: tuple[int, ...]):
    return nnx.split(nnx.eval_shape(lambda: DLN(widths, rngs=nnx.Rngs(0))))[0]


def make_dln_task(widths: Sequence[int], rank: int, n: int, seed: int = 0, construction: str = "every_layer") -> Task:
    """DLN task at the true parameter (loss 0).

    ``widths`` input → output; ``construction``: how the true parameter of
    product rank ``rank`` is built (:func:`make_target_kernels`). ``task.params`` (pure dict
    ``{"layers": {i: {"kernel": W_i}}}``) is the true parameter;
    ``task.meta``: ``widths``, ``theory_widths`` (output → input), ``rank``,
    ``lam`` and ``multiplicity`` from :func:`slt.theory.dln`,
    ``num_params``, ``target`` (the product), ``graphdef``.
    """
    widths = [int(w) for w in widths]
    graphdef = _graphdef(tuple(widths))

    def loss_fn(params, batch):
        return dln_loss(nnx.merge(graphdef, params)(batch["x"]), batch["y"])

    rng = np.random.default_rng(seed)
    kernels = make_target_kernels(widths, rank, rng, construction)
    params = {"layers": {i: {"kernel": jnp.asarray(k)} for i, k in enumerate(kernels)}}
    target = product(params)
    x = jnp.asarray(rng.uniform(-10.0, 10.0, (int(n), widths[0])).astype(np.float32))
    # y from the network's own forward pass, so that L(w*) is 0 to rounding.
    data = {"x": x, "y": jax.jit(lambda p, x: nnx.merge(graphdef, p)(x))(params, x)}

    lc = theory.dln(to_theory_widths(widths), int(rank))
    lam, mult = float(lc.lam), int(lc.multiplicity)
    meta = {
        "widths": widths,
        "theory_widths": to_theory_widths(widths),
        "rank": int(rank),
        "lam": lam,
        "multiplicity": mult,
        "num_params": sum(a * b for a, b in zip(widths[:-1], widths[1:])),
        "n": int(n),
        "seed": seed,
        "construction": construction,
        "target": target,
        "graphdef": graphdef,
    }
    return Task(loss_fn, params, data, meta)
