"""Modular addition: the grokking model organisms.

Data: all p² pairs (a, b) with label (a + b) mod p, split at random into a
train fraction and the rest (test).

* :class:`ModularMLP` (the devinterp grokking example; REFERENCE §5): a shared
  embedding E (p × 12), two maps 12→48 (one per operand) summed, GELU, and a
  48→p map without bias:  logits = W_out·GELU(L(E[a]) + R(E[b])).  PyTorch
  initialisation (embedding N(0, 1), Linear U(±1/√fan_in)) and exact (erf)
  GELU (:func:`gelu_exact`), as in the original. Adam lr 5e-3 with coupled weight decay 2e-4,
  batch 128, train fraction 0.5 groks reliably.
* :class:`ModularTransformer` (Nanda et al. 2023, "Progress measures for
  grokking via mechanistic interpretability", arXiv 2301.05217): one layer, 4
  heads, d_model 128, d_mlp 512, ReLU, no LayerNorm, causal attention on the
  tokens "a b =" (``=`` is token p), logits read at the last position.
  Parameter names and shapes follow Nanda's PyTorch code (``embed.W_E`` is
  [d_model, p+1], ``blocks.0.attn.W_Q`` is [heads, d_head, d_model], ...), so
  his state dict converts with ``slt.checkpoints.from_torch_state_dict_file(
  path, template, key_map={"blocks.0.attn.mask": None}, transpose_linear=False)``
  (drop any other buffers the same way). AdamW lr 1e-3 (10-step warm-up),
  wd 1.0, betas (0.9, 0.98), full batch, train fraction 0.3.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from slt.models.train import coupled_adam

__all__ = [
    "ModularMLP",
    "gelu_exact",
    "ModularTransformer",
    "ModularTask",
    "modular_data",
    "make_modular_task",
    "default_optimizer",
]


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------


def modular_data(p: int, train_frac: float, seed: int = 0, *, with_eq: bool = False):
    """All pairs (a, b), label (a + b) mod p, split at random.

    Returns ``(train, test)``, each ``{"x": int32 [N, 2] (or [N, 3] with the
    '=' token p appended when ``with_eq``), "y": int32 [N]}``. The train set
    has ``round(train_frac · p²)`` examples.
    """
    if not 0.0 < train_frac <= 1.0:
        raise ValueError(f"train_frac must be in (0, 1], got {train_frac}")
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    x = np.stack([a.ravel(), b.ravel()], axis=1).astype(np.int32)
    y = ((x[:, 0] + x[:, 1]) % p).astype(np.int32)
    if with_eq:
        x = np.concatenate([x, np.full((x.shape[0], 1), p, np.int32)], axis=1)
    perm = np.random.default_rng(seed).permutation(p * p)
    n_train = int(round(train_frac * p * p))
    tr, te = perm[:n_train], perm[n_train:]
    return ({"x": jnp.asarray(x[tr]), "y": jnp.asarray(y[tr])}, {"x": jnp.asarray(x[te]), "y": jnp.asarray(y[te])})


# --------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------


def _torch_uniform(fan_in: int):
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def gelu_exact(x):
    """Exact GELU, x·Φ(x) = x/2·(1 + erf(x/√2)) (Hendrycks & Gimpel, arXiv 1606.08415).

    The formula PyTorch's ``F.gelu`` evaluates. ``jax.nn.gelu(approximate=False)``
    goes through ``erfc`` instead, which on CPU made the grokking MLP's whole
    SGLD step 1.35× slower; the two agree to 1e-6 absolute in float32.
    """
    return 0.5 * x * (1.0 + jax.lax.erf(x * (1.0 / math.sqrt(2.0))))


class ModularMLP(nnx.Module):
    """logits = W_out · GELU(L(E[a]) + R(E[b])); input ``x`` int [..., 2]."""

    def __init__(self, p: int = 53, embed_dim: int = 12, hidden: int = 48, *, rngs: nnx.Rngs):
        self.p = p
        self.embed = nnx.Embed(p, embed_dim, embedding_init=jax.nn.initializers.normal(1.0), rngs=rngs)
        lin = dict(kernel_init=_torch_uniform(embed_dim), bias_init=_torch_uniform(embed_dim), rngs=rngs)
        self.left = nnx.Linear(embed_dim, hidden, **lin)
        self.right = nnx.Linear(embed_dim, hidden, **lin)
        self.out = nnx.Linear(hidden, p, use_bias=False, kernel_init=_torch_uniform(hidden), rngs=rngs)

    def __call__(self, x):
        e = self.embed(x[..., :2])
        h = self.left(e[..., 0, :]) + self.right(e[..., 1, :])
        return self.out(gelu_exact(h))


def _randn(key, shape, scale):
    return jax.random.normal(key, shape, jnp.float32) * scale


class _Attention(nnx.Module):
    def __init__(self, d_model, num_heads, d_head, rngs):
        s = 1.0 / math.sqrt(d_model)
        self.W_K = nnx.Param(_randn(rngs.params(), (num_heads, d_head, d_model), s))
        self.W_Q = nnx.Param(_randn(rngs.params(), (num_heads, d_head, d_model), s))
        self.W_V = nnx.Param(_randn(rngs.params(), (num_heads, d_head, d_model), s))
        self.W_O = nnx.Param(_randn(rngs.params(), (d_model, d_head * num_heads), s))
        self.d_head = d_head

    def __call__(self, x):  # x [..., pos, d_model]
        k = jnp.einsum("ihd,...pd->...ihp", self.W_K[...], x)
        q = jnp.einsum("ihd,...pd->...ihp", self.W_Q[...], x)
        v = jnp.einsum("ihd,...pd->...ihp", self.W_V[...], x)
        scores = jnp.einsum("...ihp,...ihq->...ipq", k, q)  # [.., head, key pos, query pos]
        n_ctx = x.shape[-2]
        causal = jnp.tril(jnp.ones((n_ctx, n_ctx), bool))  # query q sees keys p <= q
        scores = jnp.where(causal.T, scores, -jnp.inf) / math.sqrt(self.d_head)
        attn = jax.nn.softmax(scores, axis=-2)
        z = jnp.einsum("...ihp,...ipq->...ihq", v, attn)
        z = jnp.swapaxes(z.reshape(*z.shape[:-3], -1, n_ctx), -1, -2)  # [.., pos, heads*d_head]
        return jnp.einsum("df,...qf->...qd", self.W_O[...], z)


class _MLP(nnx.Module):
    def __init__(self, d_model, d_mlp, act, rngs):
        s = 1.0 / math.sqrt(d_model)
        self.W_in = nnx.Param(_randn(rngs.params(), (d_mlp, d_model), s))
        self.b_in = nnx.Param(jnp.zeros(d_mlp))
        self.W_out = nnx.Param(_randn(rngs.params(), (d_model, d_mlp), s))
        self.b_out = nnx.Param(jnp.zeros(d_model))
        self.act = act

    def __call__(self, x):
        h = self.act(jnp.einsum("md,...pd->...pm", self.W_in[...], x) + self.b_in[...])
        return jnp.einsum("dm,...pm->...pd", self.W_out[...], h) + self.b_out[...]


class _Block(nnx.Module):
    def __init__(self, d_model, d_mlp, num_heads, d_head, act, rngs):
        self.attn = _Attention(d_model, num_heads, d_head, rngs)
        self.mlp = _MLP(d_model, d_mlp, act, rngs)

    def __call__(self, x):
        x = x + self.attn(x)
        return x + self.mlp(x)


class _Embed(nnx.Module):
    def __init__(self, d_vocab, d_model, rngs):
        self.W_E = nnx.Param(_randn(rngs.params(), (d_model, d_vocab), 1.0 / math.sqrt(d_model)))


class _PosEmbed(nnx.Module):
    def __init__(self, n_ctx, d_model, rngs):
        self.W_pos = nnx.Param(_randn(rngs.params(), (n_ctx, d_model), 1.0 / math.sqrt(d_model)))


class _Unembed(nnx.Module):
    def __init__(self, d_model, d_vocab_out, rngs):
        self.W_U = nnx.Param(_randn(rngs.params(), (d_model, d_vocab_out), 1.0 / math.sqrt(d_vocab_out)))


class ModularTransformer(nnx.Module):
    """Nanda et al.'s grokking transformer; input ``x`` int [..., 3] ("a b ="),
    output logits [..., p] at the last position."""

    def __init__(
        self,
        p: int = 113,
        d_model: int = 128,
        num_heads: int = 4,
        d_mlp: int = 512,
        num_layers: int = 1,
        n_ctx: int = 3,
        act: Callable = jax.nn.relu,
        *,
        rngs: nnx.Rngs,
    ):
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} must be divisible by num_heads={num_heads}")
        self.p = p
        self.embed = _Embed(p + 1, d_model, rngs)
        self.pos_embed = _PosEmbed(n_ctx, d_model, rngs)
        self.blocks = nnx.List(
            [_Block(d_model, d_mlp, num_heads, d_model // num_heads, act, rngs) for _ in range(num_layers)]
        )
        self.unembed = _Unembed(d_model, p, rngs)

    def residual(self, x):
        """Residual stream [..., pos, d_model] after the last block."""
        h = jnp.take(self.embed.W_E[...].T, x, axis=0) + self.pos_embed.W_pos[...][: x.shape[-1]]
        for block in self.blocks:
            h = block(h)
        return h

    def __call__(self, x):
        return self.residual(x)[..., -1, :] @ self.unembed.W_U[...]


# --------------------------------------------------------------------------
# task
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _graphdef(cls, p, config):
    return nnx.split(nnx.eval_shape(lambda: cls(p, **dict(config), rngs=nnx.Rngs(0))))[0]


@functools.partial(jax.jit, static_argnums=(0, 1, 2))  # one compilation per model config
def _init_params(cls, p, config, key):
    return nnx.to_pure_dict(nnx.state(cls(p, **dict(config), rngs=nnx.Rngs(key))))


@dataclasses.dataclass(frozen=True)
class ModularTask:
    """A modular-addition task.

    ``loss_fn(params, batch)`` mean cross-entropy, ``accuracy_fn(params, batch)``
    fraction correct, ``eval_fn(params)`` -> train/test loss and accuracy
    (for :func:`slt.models.train.train`); ``params`` the initial pure-dict
    params (``nnx.merge(graphdef, params)`` rebuilds the module).
    """

    model: nnx.Module
    graphdef: Any
    params: Any
    loss_fn: Callable
    accuracy_fn: Callable
    eval_fn: Callable
    train_data: dict
    test_data: dict
    optimizer: optax.GradientTransformation
    meta: dict

    @property
    def data(self):
        return self.train_data


def default_optimizer(kind: str) -> optax.GradientTransformation:
    """The published optimiser: "mlp" coupled Adam(5e-3, wd 2e-4); "transformer"
    AdamW(1e-3, wd 1.0, betas (0.9, 0.98)) with a 10-step linear warm-up."""
    if kind == "mlp":
        return coupled_adam(5e-3, 2e-4)
    if kind == "transformer":
        return optax.adamw(optax.linear_schedule(0.0, 1e-3, 10), b1=0.9, b2=0.98, weight_decay=1.0)
    raise ValueError(f"kind must be 'mlp' or 'transformer', got {kind!r}")


def make_modular_task(
    kind: str = "mlp",
    *,
    p: int | None = None,
    train_frac: float | None = None,
    seed: int = 0,
    data_seed: int | None = None,
    **model_kwargs,
) -> ModularTask:
    """Build model, data, loss and accuracy for modular addition.

    ``kind``: "mlp" (default p=53, train_frac=0.5; ``embed_dim``, ``hidden``)
    or "transformer" (default p=113, train_frac=0.3; ``d_model``,
    ``num_heads``, ``d_mlp``, ``num_layers``, ``act``). ``seed`` initialises the
    model; ``data_seed`` (default ``seed``) draws the train/test split.
    """
    if kind == "mlp":
        p = 53 if p is None else p
        train_frac = 0.5 if train_frac is None else train_frac
        cls, with_eq = ModularMLP, False
    elif kind == "transformer":
        p = 113 if p is None else p
        train_frac = 0.3 if train_frac is None else train_frac
        cls, with_eq = ModularTransformer, True
    else:
        raise ValueError(f"kind must be 'mlp' or 'transformer', got {kind!r}")
    train_data, test_data = modular_data(p, train_frac, seed if data_seed is None else data_seed, with_eq=with_eq)
    config = tuple(sorted(model_kwargs.items()))
    graphdef = _graphdef(cls, p, config)
    params = _init_params(cls, p, config, jax.random.key(seed))
    model = nnx.merge(graphdef, params)

    def logits_fn(params, x):
        return nnx.merge(graphdef, params)(x)

    def loss_fn(params, batch):
        logits = logits_fn(params, batch["x"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    def accuracy_fn(params, batch):
        return (jnp.argmax(logits_fn(params, batch["x"]), -1) == batch["y"]).mean()

    def eval_fn(params):
        out = {}
        for name, d in (("train", train_data), ("test", test_data)):
            logits = logits_fn(params, d["x"])
            out[f"{name}_loss"] = optax.softmax_cross_entropy_with_integer_labels(logits, d["y"]).mean()
            out[f"{name}_acc"] = (jnp.argmax(logits, -1) == d["y"]).mean()
        return out

    meta = {
        "kind": kind,
        "p": p,
        "train_frac": train_frac,
        "seed": seed,
        "num_params": sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params)),
        "batch_size": 128 if kind == "mlp" else None,
    }
    return ModularTask(model, graphdef, params, loss_fn, accuracy_fn, eval_fn, train_data, test_data,
                       default_optimizer(kind), meta)
