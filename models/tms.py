"""Toy model of superposition (Elhage et al. 2022; Chen et al., arXiv 2310.06301).

f(x) = ReLU(WᵀW x + b), W ∈ R^{2×c}, b ∈ R^c; params ``{"W": [2, c], "b": [c]}``.
Each input has exactly one active feature i (uniform over c) with magnitude
u ~ U[0, 1]: x = u·e_i. Loss L = E‖x - f(x)‖² (squared error summed over the
c features, mean over examples). With G = WᵀW the population loss is exact:

    L = (1/c) Σ_i Σ_j ∫₀¹ (u·δ_ij - ReLU(u·G_ji + b_j))² du,

each integrand piecewise quadratic in u with one kink at u = -b_j/G_ji;
:func:`population_loss` splits [0, 1] there and integrates each piece with
2-point Gauss–Legendre, which is exact (and differentiable).

Regular k-gons are critical points (:func:`kgon_params`): columns W_i = ρ(cos
2πi/k, sin 2πi/k) for k features, bias b* on them, the other c - k columns 0.
(ρ, b*) minimise L over that 2-parameter family; by symmetry this is a critical
point of L in all 3c parameters. The missing features' biases are negative
(flat: the loss does not depend on them, λ = (3k - 1)/2, Chen et al.) or, for
the "k⁺" point, 1/(2c) (each one then adds 3/2 to λ). At c = 6:
L(5-gon) = 0.06874, L(5⁺) = 0.06180, L(6-gon) = 0.04819.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from slt.models.train import Task

__all__ = [
    "tms_forward",
    "tms_loss",
    "tms_data",
    "population_loss",
    "kgon_params",
    "kgon_radius_bias",
    "make_tms_task",
]

_GL_NODES = np.array([0.5 - 0.5 / np.sqrt(3.0), 0.5 + 0.5 / np.sqrt(3.0)])  # on [0, 1], weights 1/2


def tms_forward(params, x):
    """f(x) = ReLU(x·WᵀW + b) for x of shape [..., c]."""
    W, b = params["W"], params["b"]
    return jax.nn.relu((x @ W.T) @ W + b)


def tms_loss(params, batch):
    """(1/n) Σᵢ ‖xᵢ - f(xᵢ)‖²; ``batch = {"x": [n, c]}``."""
    x = batch["x"]
    return jnp.mean(jnp.sum((x - tms_forward(params, x)) ** 2, axis=-1))


def tms_data(c: int, n: int, rng=0) -> dict:
    """n inputs, each u·e_i with i ~ U{0..c-1}, u ~ U[0, 1]: ``{"x": [n, c]}``.

    ``rng``: a seed or a ``np.random.Generator``.
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    idx = rng.integers(0, c, n)
    x = np.zeros((n, c), np.float32)
    x[np.arange(n), idx] = rng.uniform(0.0, 1.0, n)
    return {"x": jnp.asarray(x)}


def _population_loss(W, b, xp):
    c = W.shape[1]
    G = W.T @ W  # G[j, i] = response of output j to feature i
    a = G  # slope in u of the pre-activation of output j when feature i is on
    bj = b[:, None]
    delta = xp.eye(c, dtype=W.dtype)
    safe_a = xp.where(a == 0, 1.0, a)
    t = xp.clip(xp.where(a == 0, 0.0, -bj / safe_a), 0.0, 1.0)  # kink, clipped to [0, 1]

    def piece(lo, hi):
        total = 0.0
        for node in _GL_NODES:
            u = lo + (hi - lo) * node
            r = u * delta - xp.maximum(u * a + bj, 0.0)
            total = total + 0.5 * (hi - lo) * r * r
        return total

    per = piece(0.0, t) + piece(t, 1.0)  # [j, i]
    return per.sum() / c


def population_loss(params) -> jax.Array:
    """Exact E‖x - f(x)‖² over the data distribution (differentiable)."""
    W = jnp.asarray(params["W"])
    return _population_loss(W, jnp.asarray(params["b"], W.dtype), jnp)


_jit_population_loss = jax.jit(population_loss)


def _kgon_arrays(c, k, radius, bias, inactive_bias, phase, xp=np):
    theta = phase + 2 * np.pi * np.arange(k) / k
    W = np.zeros((2, c))
    W[0, :k], W[1, :k] = np.cos(theta), np.sin(theta)
    W = W * radius if xp is np else xp.asarray(W) * radius
    b = xp.concatenate([xp.full((k,), 1.0) * bias, xp.full((c - k,), 1.0) * inactive_bias]) if c > k else xp.full((k,), 1.0) * bias
    return W, b


@functools.lru_cache(maxsize=None)
def kgon_radius_bias(c: int, k: int) -> tuple[float, float]:
    """(ρ, b*) of the regular k-gon critical point among c features (float64).

    Found by minimising the exact population loss over the two scalars, in
    float64 (scipy), and polishing with Newton steps on the stationarity
    condition.
    """
    from scipy.optimize import minimize

    if not 2 <= k <= c:
        raise ValueError(f"need 2 <= k <= c, got k={k}, c={c}")

    def f(z):
        W, b = _kgon_arrays(c, k, z[0], z[1], -1.0, 0.0)
        return float(_population_loss(W, b, np))

    best = None
    for r0, b0 in ((1.0, -0.1), (1.2, -0.3), (0.8, 0.0)):
        res = minimize(f, np.array([r0, b0]), method="Nelder-Mead",
                       options={"xatol": 1e-13, "fatol": 1e-16, "maxiter": 20000})
        if best is None or res.fun < best.fun:
            best = res
    z = best.x
    # Newton polish on the gradient (central differences, float64).
    h = 1e-5
    for _ in range(5):
        g = np.array([(f(z + h * e) - f(z - h * e)) / (2 * h) for e in np.eye(2)])
        H = np.array([[(f(z + h * (ei + ej)) - f(z + h * (ei - ej)) - f(z - h * (ei - ej)) + f(z - h * (ei + ej))) / (4 * h * h)
                       for ej in np.eye(2)] for ei in np.eye(2)])
        try:
            step = np.linalg.solve(H, g)
        except np.linalg.LinAlgError:
            break
        if f(z - step) <= f(z) + 1e-15:
            z = z - step
    return abs(float(z[0])), float(z[1])


def kgon_params(
    c: int,
    k: int,
    *,
    plus: bool = False,
    inactive_bias: float | None = None,
    phase: float = 0.0,
    dtype=jnp.float32,
) -> dict:
    """Params of the regular k-gon critical point among c features.

    Features 0..k-1 sit on a regular k-gon (vertex i at angle ``phase`` + 2πi/k)
    of radius ρ with bias b*; features k..c-1 have zero columns and bias
    ``inactive_bias`` (default: b* < 0, so the loss is flat in them), or
    1/(2c) when ``plus`` (the k⁺ critical point of Chen et al.).
    """
    rho, bias = kgon_radius_bias(int(c), int(k))
    if inactive_bias is None:
        inactive_bias = 1.0 / (2 * c) if plus else min(bias, -0.1)
    W, b = _kgon_arrays(c, k, rho, bias, inactive_bias, phase)
    return {"W": jnp.asarray(W, dtype), "b": jnp.asarray(b, dtype)}


def make_tms_task(c: int = 6, n: int = 1000, seed: int = 0, init="random", *, init_scale: float = 0.5) -> Task:
    """TMS task with n samples.

    ``init``: "random" (W ~ N(0, init_scale²), b = 0), an int k (k-gon),
    a string "k" or "k+" (e.g. "5+", the k⁺ point), or a params dict.
    ``meta``: c, n, ``population_loss`` of the params, ``k``/``plus`` and the
    expected ``lam`` for k-gons ((3k-1)/2, + 3/2 per positive missing bias).
    """
    rng = np.random.default_rng(seed)
    data = tms_data(c, n, rng)
    meta = {"c": c, "n": n, "seed": seed, "init": init, "k": None, "plus": None, "lam": None}
    if isinstance(init, str) and init != "random":
        plus = init.endswith("+")
        k = int(init.rstrip("+"))
        init = (k, plus)
    elif isinstance(init, (int, np.integer)):
        init = (int(init), False)
    if isinstance(init, tuple):
        k, plus = init
        params = kgon_params(c, k, plus=plus)
        meta.update(k=k, plus=plus, lam=(3 * k - 1) / 2 + (1.5 * (c - k) if plus else 0.0))
    elif isinstance(init, str):
        params = {"W": jnp.asarray(init_scale * rng.standard_normal((2, c)), jnp.float32), "b": jnp.zeros((c,))}
    else:
        params = jax.tree_util.tree_map(jnp.asarray, dict(init))
        meta["init"] = "params"
    meta["population_loss"] = float(_jit_population_loss(params))
    return Task(tms_loss, params, data, meta)
