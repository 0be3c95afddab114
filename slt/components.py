"""Which coordinates the chains move: restrictions for the weight-refined LLC, and names for components.

The weight-refined LLC of a component V (Wang et al. 2024, "Differentiation
and specialization of attention heads via the refined local learning
coefficient", arXiv 2410.02984) samples only V's coordinates, the rest held
at w*:

    λ̂_V(w*) = nβ·(E[L_B(w)] - L(w*)),   w = (w_V, w*_rest),   w_V ~ exp(-nβ·L - γ/2·‖w_V - w*_V‖²).

A restriction (``restrict=`` of :func:`slt.estimate_llc`) is turned into a
mask, a pytree of booleans with the params' structure (True = free), by
:func:`restriction_mask`. It may be

- a glob pattern, or a list of them, over '/'-joined key paths
  (``"blocks/0/attn/*"``; torch-style dotted names are one key:
  ``"transformer.h.0.attn.*"``); a pattern naming a subtree frees all of it;
- a pytree with the params' structure of booleans (per leaf) or boolean arrays
  of the leaf's shape (per element, e.g. one head's rows of a fused QKV matrix);
- a callable ``(path, leaf) -> bool | boolean array``.

Components are named by :func:`layers` (top-level subtrees) and
:func:`attention_heads` (head slices of attention weights, fused QKV
included); :func:`heads` finds the attention layers of this package's
transformers and of Hugging Face GPT-2-style names by themselves.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from slt.validation import SLTInputError, require

PyTree = Any


# ----------------------------------------------------------------------------- key paths


def _key_name(entry) -> str:
    tu = jax.tree_util
    if isinstance(entry, tu.DictKey):
        return str(entry.key)
    if isinstance(entry, tu.GetAttrKey):
        return str(entry.name)
    if isinstance(entry, tu.SequenceKey):
        return str(entry.idx)
    if isinstance(entry, tu.FlattenedIndexKey):
        return str(entry.key)
    return str(entry)


def leaf_paths(params: PyTree) -> list[str]:
    """The '/'-joined key path of every leaf of ``params``, in jax's flatten order."""
    return ["/".join(_key_name(k) for k in path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def _matches(pattern: str, path: str) -> bool:
    """``pattern`` matches ``path`` or one of its ancestors (a pattern naming a subtree frees all of it)."""
    parts = path.split("/")
    return any(fnmatch.fnmatchcase("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1))


def _ends_with(path: str, pattern: str) -> bool:
    """``pattern`` matches the end of ``path``: the whole path, its last keys ("c_attn/weight"), or the end of
    a dotted key ("c_attn.weight" in "h.0.attn.c_attn.weight")."""
    return any(fnmatch.fnmatchcase(path, p) for p in (pattern, f"*/{pattern}", f"*.{pattern}"))


def _listing(paths: Sequence[str], n: int = 12) -> str:
    return ", ".join(paths[:n]) + (f", ... ({len(paths) - n} more)" if len(paths) > n else "")


# ----------------------------------------------------------------------------- masks


def _leaf_mask(value, leaf, path: str) -> np.ndarray:
    """A boolean mask for one leaf: a bool (the whole leaf) or a boolean array of the leaf's shape."""
    arr = np.asarray(value)
    if arr.dtype != np.bool_:
        raise SLTInputError(f"restrict: the mask for {path!r} has dtype {arr.dtype}; use booleans (True = free)")
    shape = np.shape(leaf)
    if arr.shape == ():
        return np.broadcast_to(arr, shape)
    if arr.shape != shape:
        raise SLTInputError(f"restrict: the mask for {path!r} has shape {arr.shape}, the parameter has shape {shape}; "
                            "give one boolean for the whole leaf or a boolean array of its shape")
    return arr


def restriction_mask(params: PyTree, restrict) -> PyTree:
    """The mask (a pytree of boolean arrays with the params' structure and leaf shapes, True = free) of a restriction.

    Errors name what was wrong: a pattern that matches nothing lists the available paths; a mask of the
    wrong shape or dtype names the leaf; a restriction that frees nothing is refused.
    """
    leaves, treedef = jax.tree.flatten(params)
    paths = leaf_paths(params)
    if isinstance(restrict, str) or (isinstance(restrict, Sequence) and restrict
                                     and all(isinstance(p, str) for p in restrict)):
        patterns = [restrict] if isinstance(restrict, str) else list(restrict)
        for pattern in patterns:
            require(any(_matches(pattern, p) for p in paths),
                    f"restrict: pattern {pattern!r} matches no parameter; the paths are {_listing(paths)}")
        masks = [np.broadcast_to(np.asarray(any(_matches(q, p) for q in patterns)), np.shape(x))
                 for p, x in zip(paths, leaves)]
    elif callable(restrict):
        masks = []
        for p, x in zip(paths, leaves):
            try:
                value = restrict(p, x)
            except Exception as err:
                raise SLTInputError(f"restrict({p!r}, leaf) failed: {type(err).__name__}: {err}") from err
            masks.append(_leaf_mask(value, x, p))
    else:
        try:
            given = treedef.flatten_up_to(restrict)
        except (ValueError, TypeError) as err:
            raise SLTInputError(
                "restrict must be a pattern, a list of patterns, a pytree of booleans with the params' structure, or a "
                f"callable (path, leaf) -> bool | mask; got a {type(restrict).__name__} whose structure differs from "
                f"the params' ({err})"
            ) from None
        masks = [_leaf_mask(v, x, p) for v, x, p in zip(given, leaves, paths)]
    require(any(m.any() for m in masks), "restrict frees no parameter: at least one coordinate must move")
    return jax.tree.unflatten(treedef, [np.ascontiguousarray(m) for m in masks])


def num_free(mask: PyTree) -> int:
    """The number of free coordinates of a mask."""
    return int(sum(np.count_nonzero(m) for m in jax.tree.leaves(mask)))


def describe(restrict) -> str:
    """A short description of a restriction, for records (patterns as given; masks and callables by kind)."""
    if restrict is None:
        return "all parameters"
    if isinstance(restrict, str):
        return restrict
    if isinstance(restrict, Sequence) and all(isinstance(p, str) for p in restrict):
        return ", ".join(restrict)
    if callable(restrict):
        return f"callable {getattr(restrict, '__name__', type(restrict).__name__)}"
    return "mask"


# ----------------------------------------------------------------------------- naming components


def layers(params: PyTree, depth: int = 1) -> dict[str, str]:
    """One component per subtree at ``depth`` (1: the top-level keys): ``{name: pattern}``.

    For this package's transformer: embed, pos_embed, blocks, unembed (depth 2 splits blocks/0, blocks/1, ...).
    """
    require(isinstance(depth, int) and depth >= 1, f"depth must be an integer ≥ 1, got {depth!r}")
    out: dict[str, str] = {}
    for path in leaf_paths(params):
        prefix = "/".join(path.split("/")[:depth])
        out.setdefault(prefix, prefix)
    return out


def attention_heads(params: PyTree, path: str, num_heads: int, axis: int | Mapping[str, int] = 0, *,
                    fused: Mapping[str, int] | None = None, name: str | None = None) -> dict[str, PyTree]:
    """One mask per attention head of the layer at ``path``: ``{f"{name}h{i}": mask}``.

    Every leaf under ``path`` whose head axis is known is split into ``num_heads`` equal contiguous blocks
    along it (length ``num_heads`` for [heads, d_head, d_model] weights, ``num_heads·d_head`` for concatenated
    ones); head i frees block i. ``axis``: one axis for all leaves, or ``{leaf-name pattern: axis}`` (leaves
    matching none are left out, e.g. a shared bias). ``fused``: ``{leaf-name pattern: k}`` for k matrices
    concatenated along the axis (a fused QKV weight: k = 3; head i frees block i of each). ``name`` prefixes
    the component names (default: ``path`` + "/"). Leaf patterns match the end of a leaf's path
    (``"W_Q"``, ``"c_attn/weight"``, or ``"c_attn.weight"`` of a dotted torch name).
    """
    require(isinstance(num_heads, int) and num_heads >= 1, f"num_heads must be an integer ≥ 1, got {num_heads!r}")
    leaves, treedef = jax.tree.flatten(params)
    paths = leaf_paths(params)
    inside = [i for i, p in enumerate(paths) if _matches(path, p)]
    require(bool(inside), f"attention_heads: {path!r} matches no parameter; the paths are {_listing(paths)}")
    name = f"{path}/" if name is None else name

    def leaf_rule(p: str, rules, default):
        if isinstance(rules, Mapping):
            return next((v for pat, v in rules.items() if _ends_with(p, pat)), default)
        return rules

    heads: list[list[np.ndarray]] = [[np.zeros(np.shape(x), bool) for x in leaves] for _ in range(num_heads)]
    used = 0
    for i in inside:
        ax = leaf_rule(paths[i], axis, None)
        if ax is None:
            continue
        shape = np.shape(leaves[i])
        require(-len(shape) <= ax < len(shape), f"attention_heads: axis {ax} is out of range for {paths[i]!r} of shape {shape}")
        k = leaf_rule(paths[i], fused or {}, 1) if fused else 1
        length = shape[ax]
        require(length % (k * num_heads) == 0,
                f"attention_heads: axis {ax} of {paths[i]!r} has length {length}, not a multiple of {k}×{num_heads} heads")
        block = length // (k * num_heads)
        for h in range(num_heads):
            index = np.zeros(length, bool)
            for j in range(k):
                start = j * length // k + h * block
                index[start:start + block] = True
            view = [1] * len(shape)
            view[ax] = length
            heads[h][i] = np.broadcast_to(index.reshape(view), shape).copy()
        used += 1
    require(used > 0, f"attention_heads: no parameter under {path!r} has a head axis in {axis!r}")
    return {f"{name}h{h}": jax.tree.unflatten(treedef, heads[h]) for h in range(num_heads)}


_QKV = re.compile(r"^(.*)/(W_Q|W_K|W_V)$")
_GPT2 = re.compile(r"^(.*\bh\.(\d+)\.attn)\.c_attn\.weight$")


def heads(params: PyTree, num_heads: int | None = None) -> dict[str, PyTree]:
    """Every attention head of the model, found by the parameter names: ``{"L{l}H{h}": mask}``.

    Knows this package's transformers (``.../attn/W_Q`` of shape [heads, d_head, d_model] and ``W_O`` of
    shape [d_model, heads·d_head]: the heads are read off W_Q) and Hugging Face GPT-2 names
    (``transformer.h.{l}.attn.c_attn.weight`` fused QKV [d, 3d], ``c_proj.weight`` [d, d], which need
    ``num_heads``: the model's ``config.n_head``).
    """
    paths = leaf_paths(params)
    leaves = jax.tree.leaves(params)
    out: dict[str, PyTree] = {}
    layers_seen = sorted({m.group(1) for p in paths if (m := _QKV.match(p))}, key=_natural)
    for layer, attn in enumerate(layers_seen):
        q = leaves[paths.index(f"{attn}/W_Q")]
        h = int(np.shape(q)[0]) if num_heads is None else num_heads
        axis = {"W_Q": 0, "W_K": 0, "W_V": 0, "W_O": -1 if np.ndim(leaves[paths.index(f"{attn}/W_O")]) == 2 else 0}
        for k, mask in attention_heads(params, attn, h, axis).items():
            out[f"L{layer}H{k.rsplit('h', 1)[1]}"] = mask
    gpt2 = sorted({(int(m.group(2)), m.group(1)) for p in paths if (m := _GPT2.match(p))})
    if gpt2:
        require(num_heads is not None, "heads: Hugging Face attention weights need num_heads (the model's config.n_head)")
        for layer, attn in gpt2:
            rules = {"c_attn.weight": -1, "c_attn.bias": -1, "c_proj.weight": 0}
            masks = attention_heads(params, f"{attn}.c_*", num_heads, rules,
                                    fused={"c_attn.weight": 3, "c_attn.bias": 3}, name="")
            for k, mask in masks.items():
                out[f"L{layer}H{k[1:]}"] = mask
    require(bool(out), "heads: found no attention weights (this package's .../attn/W_Q or Hugging Face "
                       "...h.N.attn.c_attn.weight); name the heads with slt.attention_heads(params, path, num_heads, axis)")
    return out


def _natural(text: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def resolve_components(params: PyTree, components) -> dict[str, Any]:
    """``{name: restrict}`` from a dict, a list of patterns (each its own component), or "layers" / "heads"."""
    if isinstance(components, str):
        if components == "layers":
            return layers(params)
        if components == "heads":
            return heads(params)
        return {components: components}
    if isinstance(components, Mapping):
        require(len(components) > 0, "components is empty: name at least one")
        return {str(k): v for k, v in components.items()}
    if isinstance(components, Sequence):
        require(len(components) > 0 and all(isinstance(c, str) for c in components),
                "components must be a dict {name: restrict}, a list of patterns, 'layers' or 'heads'")
        return {c: c for c in components}
    raise SLTInputError(
        f"components must be a dict {{name: restrict}}, a list of patterns, 'layers' or 'heads'; got "
        f"{type(components).__name__}"
    )


__all__ = ["attention_heads", "describe", "heads", "layers", "leaf_paths", "num_free", "resolve_components",
           "restriction_mask"]
