"""Induction heads: a two-layer attention-only transformer and repeated random tokens.

The organism of Olsson et al. 2022 ("In-context learning and induction
heads"; Elhage et al. 2021, "A mathematical framework for transformer
circuits") at a size that trains on two CPU cores in seconds.

Data (:func:`repeated_tokens`): each sequence is a prefix of ``prefix_len``
distinct tokens drawn uniformly from ``vocab`` followed by its exact repeat
(length ``2·prefix_len``). The prefix is unpredictable (loss log V at best);
the repeat is predictable only in context, by finding the earlier occurrence
of the current token and copying the token after it: an induction head in
layer 1 composed (K-composition) with a previous-token head in layer 0.

Model: token and learned positional embeddings, ``num_layers`` attention
blocks (residual, no MLP, no LayerNorm, no biases), unembedding. Params are a
plain dict (the key paths are those :func:`slt.checkpoints.save_params`
writes)::

    embed/W_E            [d_model, vocab]
    pos_embed/W_pos      [n_ctx, d_model]
    blocks/{l}/attn/W_Q  [heads, d_head, d_model]    q_h = W_Q[h] @ x
    blocks/{l}/attn/W_K  [heads, d_head, d_model]    k_h = W_K[h] @ x
    blocks/{l}/attn/W_V  [heads, d_head, d_model]    v_h = W_V[h] @ x
    blocks/{l}/attn/W_O  [heads, d_model, d_head]    out = Σ_h W_O[h] @ z_h
    unembed/W_U          [d_model, vocab]

``l`` is the layer as a string ("0", "1"). Every attention weight has the
head on axis 0 (:data:`HEAD_AXIS`), so one head's weights are
``W[h]`` and :func:`head_masks` builds a per-head restriction for
``slt.estimate_llc(..., restrict=...)``. (Nanda's layout, as in
:mod:`slt.models.modular`, except W_O, which there is
[d_model, heads·d_head].)

Mechanistic ground truth (Olsson et al. 2022, §2 and appendix), from the
attention patterns on repeated random tokens (:func:`head_scores`):

* prefix-matching score of a head: mean attention from each token of the
  repeat to the token right after its earlier occurrence;
* previous-token score: mean attention from each position (≥ 1) to the
  position before;
* in-context loss (:func:`in_context_loss`): loss at a late token minus loss
  at an early token (Olsson et al.: token 500 minus token 50 of 512; here
  by default the last predicted position and the one at 10 % of the context).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from slt.models.train import Task, linear_steps, log_steps

__all__ = [
    "HEAD_AXIS",
    "InductionConfig",
    "init_params",
    "config_of",
    "forward",
    "attention_patterns",
    "per_token_loss",
    "in_context_loss_sem",
    "loss_fn",
    "repeated_tokens",
    "prefix_matching_score",
    "previous_token_score",
    "head_scores",
    "in_context_loss",
    "mechanism_fn",
    "formation_step",
    "attention_paths",
    "head_names",
    "head_masks",
    "log_linear_steps",
    "make_induction_task",
    "train_induction",
    "mechanism_history",
    "formation_summary",
]

HEAD_AXIS = 0
"""The axis of W_Q, W_K, W_V and W_O that indexes the head."""

ATTN_WEIGHTS = ("W_Q", "W_K", "W_V", "W_O")


# --------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class InductionConfig:
    """Shape of the model: ``d_model = num_heads · d_head`` is not required."""

    vocab: int = 32
    n_ctx: int = 32
    d_model: int = 32
    num_layers: int = 2
    num_heads: int = 4
    d_head: int = 8

    def __post_init__(self):
        from slt.validation import positive_int

        for name in ("vocab", "n_ctx", "d_model", "num_layers", "num_heads", "d_head"):
            positive_int(name, getattr(self, name))


def init_params(key, config: InductionConfig = InductionConfig(), *, scale: float = 1.0) -> dict:
    """Gaussian initial params (std ``scale/√fan_in``, W_U ``scale/√d_model``)."""
    c = config
    keys = iter(jax.random.split(key, 3 + 4 * c.num_layers))

    def randn(shape, fan_in):
        return jax.random.normal(next(keys), shape, jnp.float32) * (scale / math.sqrt(fan_in))

    params = {
        "embed": {"W_E": randn((c.d_model, c.vocab), c.d_model)},
        "pos_embed": {"W_pos": randn((c.n_ctx, c.d_model), c.d_model)},
        "blocks": {},
        "unembed": {"W_U": randn((c.d_model, c.vocab), c.d_model)},
    }
    for layer in range(c.num_layers):
        params["blocks"][str(layer)] = {
            "attn": {
                "W_Q": randn((c.num_heads, c.d_head, c.d_model), c.d_model),
                "W_K": randn((c.num_heads, c.d_head, c.d_model), c.d_model),
                "W_V": randn((c.num_heads, c.d_head, c.d_model), c.d_model),
                "W_O": randn((c.num_heads, c.d_model, c.d_head), c.d_head * c.num_heads),
            }
        }
    return params


def _layers(params) -> list[dict]:
    blocks = params["blocks"]
    return [blocks[k]["attn"] for k in sorted(blocks, key=int)]


def config_of(params) -> InductionConfig:
    """The :class:`InductionConfig` read off the params' shapes."""
    attn = _layers(params)
    h, dh, dm = attn[0]["W_Q"].shape
    return InductionConfig(
        vocab=params["embed"]["W_E"].shape[1],
        n_ctx=params["pos_embed"]["W_pos"].shape[0],
        d_model=dm,
        num_layers=len(attn),
        num_heads=h,
        d_head=dh,
    )


def _attention(attn, x):
    """One attention layer on x [..., pos, d_model] -> (output, pattern [..., head, query, key])."""
    q = jnp.einsum("hed,...pd->...hpe", attn["W_Q"], x)
    k = jnp.einsum("hed,...pd->...hpe", attn["W_K"], x)
    v = jnp.einsum("hed,...pd->...hpe", attn["W_V"], x)
    scores = jnp.einsum("...hqe,...hke->...hqk", q, k) / math.sqrt(q.shape[-1])
    n = x.shape[-2]
    causal = jnp.tril(jnp.ones((n, n), bool))  # query q sees keys k <= q
    pattern = jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1)
    z = jnp.einsum("...hqk,...hke->...hqe", pattern, v)
    return jnp.einsum("hde,...hqe->...qd", attn["W_O"], z), pattern


def _run(params, tokens):
    tokens = jnp.asarray(tokens)
    n = tokens.shape[-1]
    n_ctx = params["pos_embed"]["W_pos"].shape[0]
    if n > n_ctx:
        raise ValueError(f"sequence length {n} exceeds the model's context n_ctx={n_ctx}")
    x = jnp.take(params["embed"]["W_E"].T, tokens, axis=0) + params["pos_embed"]["W_pos"][:n]
    patterns = []
    for attn in _layers(params):
        out, pattern = _attention(attn, x)
        x = x + out
        patterns.append(pattern)
    return x @ params["unembed"]["W_U"], patterns


def forward(params, tokens):
    """Logits [..., pos, vocab] for int tokens [..., pos]."""
    return _run(params, tokens)[0]


def attention_patterns(params, tokens) -> jax.Array:
    """Attention patterns [layer, ..., head, query, key] (rows sum to 1, zero above the diagonal)."""
    return jnp.stack(_run(params, tokens)[1])


def per_token_loss(params, tokens) -> jax.Array:
    """Next-token cross-entropy [..., pos - 1]: entry t is the loss of predicting token t+1."""
    logits = forward(params, tokens)[..., :-1, :]
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[..., 1:])


def loss_fn(params, batch) -> jax.Array:
    """Mean next-token cross-entropy over the batch and positions; ``batch = {"tokens": int [n, pos]}``."""
    return per_token_loss(params, batch["tokens"]).mean()


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------


def repeated_tokens(n: int, vocab: int, length: int, seed=0, *, period=None, distinct: bool = True) -> np.ndarray:
    """n sequences, each a random segment of m tokens repeated to fill ``length``: int32 [n, length].

    ``period`` m: an int, or an inclusive range ``(lo, hi)`` drawn uniformly
    per sequence (then the copy distance varies and position alone cannot
    predict the repeat). Default ``length // 2`` with ``length`` even: a random
    prefix followed by its repeat, Olsson et al.'s test sequences. Segment
    tokens are uniform over ``vocab``; without repeats within the segment when
    ``distinct`` (needs m ≤ vocab), so with m = length/2 each token of the
    repeat has exactly one earlier occurrence; i.i.d. otherwise. ``seed``: an
    int or a ``numpy.random.Generator``.
    """
    if period is None:
        if length % 2:
            raise ValueError(f"the default period length // 2 needs an even length, got {length}")
        period = length // 2
    lo, hi = (int(period), int(period)) if np.ndim(period) == 0 else (int(period[0]), int(period[1]))
    if n < 0 or vocab < 1 or not 1 <= lo <= hi <= length:
        raise ValueError(f"need n >= 0, vocab >= 1 and 1 <= period <= length; got n={n}, vocab={vocab}, "
                         f"length={length}, period={period}")
    if distinct and hi > vocab:
        raise ValueError(f"distinct segments need period <= vocab, got {hi} > {vocab}")
    rng = np.random.default_rng(seed)
    m = rng.integers(lo, hi + 1, n)[:, None]  # period of each sequence
    if distinct:
        seg = np.argsort(rng.random((n, vocab)), axis=1)[:, :hi]
    else:
        seg = rng.integers(0, vocab, (n, hi))
    idx = np.arange(length)[None, :] % m
    return np.take_along_axis(seg, idx, axis=1).astype(np.int32)


# --------------------------------------------------------------------------
# mechanistic scores
# --------------------------------------------------------------------------


def _check_pattern(pattern, prefix_len=None):
    pattern = jnp.asarray(pattern)
    if pattern.ndim < 2 or pattern.shape[-1] != pattern.shape[-2]:
        raise ValueError(f"attention pattern must be [..., query, key] with query == key, got {pattern.shape}")
    if prefix_len is not None and pattern.shape[-1] != 2 * prefix_len:
        raise ValueError(f"pattern length {pattern.shape[-1]} != 2·prefix_len = {2 * prefix_len}")
    return pattern


def prefix_matching_score(pattern, prefix_len: int) -> jax.Array:
    """Olsson et al. 2022: mean attention from each token of the repeat to the token after its earlier occurrence.

    ``pattern`` [..., query, key] on ``prefix + prefix`` sequences (distinct
    prefix tokens); query ``prefix_len + i`` (token x_i) should attend to key
    ``i + 1``, i = 0..prefix_len-1. Averaged over those queries (and any
    leading batch axes the caller averages itself): shape ``pattern.shape[:-2]``.
    """
    pattern = _check_pattern(pattern, prefix_len)
    i = jnp.arange(prefix_len)
    return pattern[..., prefix_len + i, i + 1].mean(-1)


def previous_token_score(pattern) -> jax.Array:
    """Mean attention from each query position t ≥ 1 to key t - 1 (Olsson et al. 2022); shape ``pattern.shape[:-2]``."""
    pattern = _check_pattern(pattern)
    t = jnp.arange(1, pattern.shape[-1])
    return pattern[..., t, t - 1].mean(-1)


def head_scores(params, tokens) -> dict[str, jax.Array]:
    """``{"prefix_matching", "previous_token"}``, each [layer, head], averaged over the sequences.

    ``tokens`` [n, 2·prefix_len]: repeated random tokens (:func:`repeated_tokens`).
    """
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] % 2:
        raise ValueError(f"tokens must be [n, 2·prefix_len], got {tokens.shape}")
    pattern = attention_patterns(params, tokens)  # [layer, n, head, q, k]
    return {
        "prefix_matching": prefix_matching_score(pattern, tokens.shape[1] // 2).mean(1),
        "previous_token": previous_token_score(pattern).mean(1),
    }


def _positions(n: int, early: int | None, late: int | None) -> tuple[int, int]:
    early = max(1, round(0.1 * n)) if early is None else early
    late = n - 1 if late is None else late
    if not 1 <= early < n or not 1 <= late < n:
        raise ValueError(f"early and late must lie in [1, {n - 1}], got {early}, {late}")
    return early, late


def _in_context_gain(params, tokens, early, late) -> jax.Array:
    """Per sequence: loss at token ``late`` minus loss at token ``early`` [n_sequences]."""
    tokens = jnp.asarray(tokens)
    n = tokens.shape[-1]
    early, late = _positions(n, early, late)
    per_tok = per_token_loss(params, tokens).reshape(-1, n - 1)
    return per_tok[:, late - 1] - per_tok[:, early - 1]


def in_context_loss(params, tokens, *, early: int | None = None, late: int | None = None) -> jax.Array:
    """Loss at token ``late`` minus loss at token ``early`` (Olsson et al. 2022: 500 minus 50).

    Positions index the predicted token (1..pos-1); defaults: ``early`` at 10 %
    of the context (≥ 1), ``late`` the last token. Negative when the model
    learns in context. The mean over sequences of their own differences.
    """
    return _in_context_gain(params, tokens, early, late).mean()


def _sem(d: jax.Array) -> jax.Array:
    return d.std(ddof=1) / jnp.sqrt(d.shape[0])


def in_context_loss_sem(params, tokens, *, early: int | None = None, late: int | None = None) -> jax.Array:
    """Standard error of :func:`in_context_loss` over the sequences: sd of the per-sequence differences / √n."""
    return _sem(_in_context_gain(params, tokens, early, late))


def mechanism_fn(score_tokens, icl_tokens=None, *, early: int | None = None, late: int | None = None):
    """A jitted ``fn(params) -> dict`` of the mechanistic ground truth, for ``train``'s ``eval_fn``.

    Keys: ``prefix_matching`` and ``previous_token`` [layer, head] on
    ``score_tokens`` (prefix + repeat, :func:`head_scores`);
    ``in_context_loss`` on ``icl_tokens`` (default ``score_tokens``; Olsson et
    al. measure it on the training distribution) and its standard error
    ``in_context_loss_sem``; ``repeat_loss``, the mean
    loss of predicting the second half of ``score_tokens``' repeat (after its
    first token), which only in-context learning lowers.
    """
    score_tokens = jnp.asarray(score_tokens)
    icl_tokens = score_tokens if icl_tokens is None else jnp.asarray(icl_tokens)
    half = score_tokens.shape[1] // 2

    @jax.jit
    def fn(params):
        out = head_scores(params, score_tokens)
        gain = _in_context_gain(params, icl_tokens, early, late)  # one forward pass for the loss and its error
        out["in_context_loss"], out["in_context_loss_sem"] = gain.mean(), _sem(gain)
        out["repeat_loss"] = per_token_loss(params, score_tokens)[:, half:].mean()
        return out

    return fn


def formation_step(steps: Sequence[int], scores: Sequence[float], *, lo: float = 0.1, hi: float = 0.9) -> dict:
    """When a score climbs from ``lo`` to ``hi`` of the way from its initial to its final value.

    Linear interpolation between checkpoints, first upward crossing of each
    level. Returns ``{"start", "end", "mid", "initial", "final"}`` (steps as
    floats; ``mid`` the 50 % crossing); start/end/mid are None when the score
    does not rise.
    """
    steps = np.asarray(steps, float)
    s = np.asarray(scores, float)
    if steps.shape != s.shape or steps.ndim != 1 or len(steps) < 2:
        raise ValueError(f"need matching 1-d steps and scores of length >= 2, got {steps.shape}, {s.shape}")
    s0, s1 = float(s[0]), float(s[-1])
    out = {"start": None, "end": None, "mid": None, "initial": s0, "final": s1}
    if s1 <= s0:
        return out

    def crossing(frac):
        level = s0 + frac * (s1 - s0)
        j = int(np.argmax(s >= level))  # first index at or above the level (exists: s[-1] = s1)
        if j == 0:
            return float(steps[0])
        a, b = s[j - 1], s[j]
        return float(steps[j - 1] + (level - a) / (b - a) * (steps[j] - steps[j - 1]))

    out.update(start=crossing(lo), end=crossing(hi), mid=crossing(0.5))
    return out


# --------------------------------------------------------------------------
# components (per-head restrictions)
# --------------------------------------------------------------------------


def attention_paths(params) -> dict[int, tuple[str, ...]]:
    """``{layer: ("blocks/l/attn/W_Q", ".../W_K", ".../W_V", ".../W_O")}``; the head is axis :data:`HEAD_AXIS` of each."""
    return {
        int(layer): tuple(f"blocks/{layer}/attn/{w}" for w in ATTN_WEIGHTS)
        for layer in sorted(params["blocks"], key=int)
    }


def head_names(params) -> list[str]:
    """``["L0H0", "L0H1", ..., "L1H3"]``: layer-major."""
    c = config_of(params)
    return [f"L{l}H{h}" for l in range(c.num_layers) for h in range(c.num_heads)]


def head_masks(params) -> dict[str, Any]:
    """``{"L0H1": mask}``: a boolean pytree like ``params`` (True = free), True on W_Q/W_K/W_V/W_O[h] of layer l only.

    One head's weight-refined component (Wang et al. 2024, arXiv 2410.02984).
    """
    c = config_of(params)
    masks = {}
    for l in range(c.num_layers):
        for h in range(c.num_heads):
            mask = jax.tree_util.tree_map(lambda x: np.zeros(np.shape(x), bool), params)
            for w in ATTN_WEIGHTS:
                m = np.zeros(np.shape(params["blocks"][str(l)]["attn"][w]), bool)
                m[h] = True
                mask["blocks"][str(l)]["attn"][w] = m
            masks[f"L{l}H{h}"] = mask
    return masks


# --------------------------------------------------------------------------
# task
# --------------------------------------------------------------------------


def log_linear_steps(num_steps: int, k: int = 40) -> list[int]:
    """Union of ``k/2`` log-spaced and ``k/2`` evenly spaced steps in [0, num_steps]."""
    return sorted(set(log_steps(num_steps, k // 2)) | set(linear_steps(num_steps, k - k // 2)))


DEFAULTS = dict(vocab=32, n_ctx=32, period=(4, 16), distinct=False, d_model=32, num_heads=3, d_head=8, num_layers=2)
TRAIN_DEFAULTS = dict(lr=5e-3, batch_size=32, num_steps=2000, n=4096)


def make_induction_task(
    seed: int = 0,
    *,
    vocab: int = DEFAULTS["vocab"],
    n_ctx: int = DEFAULTS["n_ctx"],
    period=DEFAULTS["period"],
    distinct: bool = DEFAULTS["distinct"],
    d_model: int = DEFAULTS["d_model"],
    num_heads: int = DEFAULTS["num_heads"],
    d_head: int = DEFAULTS["d_head"],
    num_layers: int = DEFAULTS["num_layers"],
    n: int = TRAIN_DEFAULTS["n"],
    n_eval: int = 512,
    init_scale: float = 1.0,
    lr: float = TRAIN_DEFAULTS["lr"],
    data_seed: int | None = None,
) -> Task:
    """The induction-head organism as a :class:`~slt.models.train.Task`.

    ``data``: ``{"tokens": int32 [n, n_ctx]}``, random segments tiled with a
    period drawn from ``period`` per sequence (:func:`repeated_tokens`;
    ``data_seed``, default ``seed``); ``params``: the initialisation
    (``seed``). ``meta``: ``config`` (:class:`InductionConfig`),
    ``eval_tokens`` (``n_eval`` held-out prefix + repeat sequences of length
    ``n_ctx``, where the scores are defined), ``mechanism_fn`` (scores and
    in-context loss on them, for ``train``'s ``eval_fn``), ``optimizer``
    (Adam ``lr``), ``batch_size``, ``num_steps`` (the training the bench
    measured), ``num_params``.
    """
    if n_ctx % 2:
        raise ValueError(f"n_ctx must be even (the score sequences are a prefix and its repeat), got {n_ctx}")
    config = InductionConfig(vocab, n_ctx, d_model, num_layers, num_heads, d_head)
    data_seed = seed if data_seed is None else data_seed
    rng = np.random.default_rng([data_seed, 1])
    tokens = repeated_tokens(n, vocab, n_ctx, rng, period=period, distinct=distinct)
    icl_tokens = repeated_tokens(n_eval, vocab, n_ctx, rng, period=period, distinct=distinct)
    score_tokens = repeated_tokens(n_eval, vocab, n_ctx, rng)
    params = _jit_init(config, float(init_scale))(jax.random.key(seed))
    meta = {
        "config": config,
        "period": period,
        "seed": seed,
        "data_seed": data_seed,
        "score_tokens": jnp.asarray(score_tokens),
        "icl_tokens": jnp.asarray(icl_tokens),
        "mechanism_fn": mechanism_fn(score_tokens, icl_tokens),
        "optimizer": optax.adam(lr),
        "lr": lr,
        "batch_size": TRAIN_DEFAULTS["batch_size"],
        "num_steps": TRAIN_DEFAULTS["num_steps"],
        "num_params": sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params)),
    }
    return Task(loss_fn, params, {"tokens": jnp.asarray(tokens)}, meta)


@functools.lru_cache(maxsize=16)
def _jit_init(config: InductionConfig, scale: float):
    return jax.jit(lambda key: init_params(key, config, scale=scale))


def train_induction(
    task: Task,
    *,
    num_steps: int | None = None,
    checkpoint_steps: Sequence[int] | None = None,
    checkpoint_dir=None,
    checkpoint_format: str = "safetensors",
    verbose: bool = False,
):
    """Train ``task`` with its optimizer and batch size (:func:`slt.models.train.train`), scores logged at each checkpoint.

    Defaults: ``task.meta["num_steps"]``, :func:`log_linear_steps` checkpoints,
    the minibatch order seeded by ``task.meta["seed"]``. Each history record
    holds ``train_loss`` and the keys of :func:`mechanism_fn`; with
    ``checkpoint_dir`` the params go there as ``step_NNNNNN.safetensors`` (or
    another safe format) with ``metrics.jsonl``. Returns a ``TrainResult``.
    """
    from slt.models.train import train

    num_steps = task.meta["num_steps"] if num_steps is None else int(num_steps)
    steps = log_linear_steps(num_steps) if checkpoint_steps is None else checkpoint_steps
    return train(
        task.params,
        task.loss_fn,
        task.data,
        optimizer=task.meta["optimizer"],
        num_steps=num_steps,
        batch_size=task.meta["batch_size"],
        checkpoint_steps=steps,
        checkpoint_dir=checkpoint_dir,
        checkpoint_format=checkpoint_format,
        eval_fn=task.meta["mechanism_fn"],
        seed=task.meta["seed"],
        verbose=verbose,
    )


MECHANISM_KEYS = ("prefix_matching", "previous_token", "in_context_loss", "repeat_loss")


def mechanism_history(history: Sequence[Mapping]) -> dict[str, np.ndarray]:
    """Training history records -> ``{"steps" [C], "prefix_matching" [C, L, H], "previous_token" [C, L, H], ...}``.

    ``history``: a ``TrainResult.history`` (or ``metrics.jsonl`` rows) logged
    with :func:`mechanism_fn` as ``eval_fn``.
    """
    if not history:
        raise ValueError("empty history")
    missing = [k for k in MECHANISM_KEYS if k not in history[0]]
    if missing:
        raise ValueError(f"history lacks {missing}: train with eval_fn=mechanism_fn(...) (train_induction does)")
    out = {"steps": np.array([h["step"] for h in history])}
    optional = ("train_loss", "in_context_loss_sem")  # the latter absent from histories logged before it existed
    for k in MECHANISM_KEYS + tuple(k for k in optional if k in history[0]):
        out[k] = np.array([h[k] for h in history], float)
    return out


def formation_summary(history: Sequence[Mapping], *, threshold: float = 0.5) -> dict:
    """Per-head roles and formation windows, and the in-context loss's phase change.

    A head is an ``"induction"`` head when its final prefix-matching score is
    ≥ ``threshold``, else a ``"previous_token"`` head when its final
    previous-token score is, else ``"none"``; ``formation`` is
    :func:`formation_step` of the score of its role (10 % → 90 % of the way
    from initial to final). ``in_context_loss``: its values, the 10 % → 90 %
    window of its fall, and ``steepest_drop``, the pair of consecutive
    checkpoints between which it falls most.
    """
    m = mechanism_history(history)
    steps = m["steps"]
    _, num_layers, num_heads = m["prefix_matching"].shape
    heads, roles = {}, {"induction": [], "previous_token": [], "none": []}
    for l in range(num_layers):
        for h in range(num_heads):
            name = f"L{l}H{h}"
            pm, pt = m["prefix_matching"][:, l, h], m["previous_token"][:, l, h]
            role = "induction" if pm[-1] >= threshold else "previous_token" if pt[-1] >= threshold else "none"
            score = pm if role == "induction" else pt if role == "previous_token" else None
            heads[name] = {
                "role": role,
                "prefix_matching": pm.tolist(),
                "previous_token": pt.tolist(),
                "formation": None if score is None else formation_step(steps, score),
            }
            roles[role].append(name)
    icl = m["in_context_loss"]
    j = int(np.argmin(np.diff(icl)))
    return {
        "steps": steps.tolist(),
        "heads": heads,
        "induction_heads": roles["induction"],
        "previous_token_heads": roles["previous_token"],
        "other_heads": roles["none"],
        "in_context_loss": {
            "values": icl.tolist(),
            "fall": formation_step(steps, -icl),
            "steepest_drop": [int(steps[j]), int(steps[j + 1])],
        },
    }
