"""PyTorch modules and Hugging Face transformers as ``(loss_fn, params)``, through torchax.

``from_torch(module, loss)`` is the PyTorch counterpart of :func:`slt.from_nnx`:
``loss(module, batch)`` is written in torch and returns a scalar; the returned
``loss_fn(params, batch)`` is a pure JAX function (``jit``/``grad``/``vmap``)
that every estimator accepts. torchax (https://github.com/google/torchax)
runs the torch code on JAX arrays: each torch op is lowered to its JAX
counterpart while JAX traces, so the compiled program is ordinary XLA and the
torch code runs only once, at tracing.

``params`` is a dict of the module's trainable parameters under their torch
names (``'0.weight'``, ``'transformer.h.0.attn.c_attn.weight'``), in torch's
layout (Linear weights ``[out, in]``): a torch ``state_dict`` saved as
safetensors loads into it as it is (:func:`slt.checkpoints.load_params`).

Held fixed (closed over, never sampled): buffers (batch-norm statistics,
masks) and parameters with ``requires_grad=False``. Tied parameters (GPT-2's
``lm_head.weight`` is ``transformer.wte.weight``) appear once, under the first
name, and stay tied.

Integers. Without ``jax_enable_x64`` JAX has no 64-bit integers; integer
batch leaves (labels, token ids) enter torch as int32, and torchax lowers
torch's Long ops (``cross_entropy``, ``nll_loss``, ``embedding``, ``gather``,
``one_hot``, ``.long()``, ``arange``) to JAX's int32 ops, so losses that torch
runs with Long labels run unchanged; x64 need not be enabled. A loss that
itself tests ``y.dtype == torch.long`` sees ``torch.int32``.

Compatibility. torch 2.13 removed the named-tensor (``Dimname``) overloads
of 21 aten ops that torchax 0.0.13 names in its op tables; they are tolerated
(mapped to inert placeholders) while torchax loads, which changes nothing for
code that does not use named tensors. Importing torchax renames torch's
``privateuse1`` backend to ``"jax"`` and turns off torch's fused MHA fast path.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from slt.validation import SLTInputError, require

__all__ = ["from_torch", "torch_layout", "TorchLayout"]

INSTALL_HINT = 'pip install "slt-jax[torch]"  (torch, torchax, transformers, safetensors at versions that work together)'


class _RemovedOverload:
    """Stands for an aten overload this torch no longer has; torchax only uses it as a table key."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self):
        return f"<removed aten overload {self.name}>"


@contextlib.contextmanager
def _tolerate_removed_overloads(torch):
    """While torchax builds its op tables, ``torch.ops.aten.OP.OVERLOAD`` of a removed overload is a placeholder."""
    packet = torch._ops.OpOverloadPacket
    original = packet.__getattr__

    def getattr_or_placeholder(self, key):
        try:
            return original(self, key)
        except AttributeError:
            if key.startswith("_"):
                raise
            return _RemovedOverload(f"{self._qualified_op_name}.{key}")

    packet.__getattr__ = getattr_or_placeholder
    try:
        yield
    finally:
        packet.__getattr__ = original


@functools.cache
def _torchax():
    """``(torch, torchax, env)``: imported once, torchax's default environment built."""
    try:
        import torch
    except ImportError:
        raise SLTInputError(f"slt.from_torch needs PyTorch and torchax: {INSTALL_HINT}") from None
    with _tolerate_removed_overloads(torch):
        try:
            import torchax
        except ImportError:
            raise SLTInputError(f"slt.from_torch needs torchax: {INSTALL_HINT}") from None
        env = torchax.default_env()
    return torch, torchax, env


# --------------------------------------------------------------------------
# what the checkpoint reader needs to know about a bridged model
# --------------------------------------------------------------------------


class TorchLayout(NamedTuple):
    """Names around a ``from_torch`` params dict: tied copies and the fixed tensors (buffers, frozen)."""

    tied: dict[str, str]  # alias -> the name it is stored under in params
    fixed: dict[str, Any]  # name -> the value held fixed (jax array)


_LAYOUTS: dict[tuple, TorchLayout] = {}


def _signature(params: dict) -> tuple:
    return tuple(sorted((k, tuple(np.shape(v))) for k, v in params.items()))


def torch_layout(template) -> TorchLayout | None:
    """The :class:`TorchLayout` of a ``from_torch`` params dict (matched by names and shapes), else None."""
    if not isinstance(template, dict) or not template:
        return None
    try:
        return _LAYOUTS.get(_signature(template))
    except TypeError:  # non-array leaves
        return None


# --------------------------------------------------------------------------
# the bridge
# --------------------------------------------------------------------------


def _split_state(jittable) -> tuple[dict, dict, dict]:
    """``(trainable, fixed, tied)`` torch tensors by name from torchax's de-duplicated module view."""
    trainable = {k: v for k, v in jittable.params.items() if v.requires_grad}
    fixed = {k: v for k, v in jittable.params.items() if not v.requires_grad}
    fixed.update(jittable.buffers)
    tied = {alias: name for name, aliases in jittable._extra_dumped_weights.items() for alias in aliases}
    return trainable, fixed, tied


@contextlib.contextmanager
def _eval_mode(module):
    """The module in eval mode (dropout off, batch norm on its running statistics), restored after."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def from_torch(module, loss: Callable[[Any, Any], Any]) -> tuple[Callable, dict]:
    """``(loss_fn, params)`` for a ``torch.nn.Module`` (Hugging Face models included).

    ``loss(module, batch) -> scalar tensor`` is torch code (e.g.
    ``F.cross_entropy(module(x), y)`` or ``module(input_ids=ids, labels=ids).loss``).
    ``params``: ``{torch name: jax array}`` of the trainable parameters.
    ``loss_fn(params, batch)``: the same loss as a pure JAX function of the
    params and a batch pytree of arrays, evaluated in eval mode. The module's
    own tensors are copied once and not changed.
    """
    require(callable(loss), f"loss must be a function loss(module, batch) -> scalar, got {type(loss).__name__}")
    torch, torchax, env = _torchax()
    require(isinstance(module, torch.nn.Module),
            f"from_torch takes a torch.nn.Module, got {type(module).__name__} "
            "(for Flax use slt.from_nnx / slt.from_linen, for Equinox slt.from_equinox)")
    from torchax.interop import JittableModule

    jittable = JittableModule(module)
    trainable, fixed, tied = _split_state(jittable)
    require(len(trainable) > 0, f"{type(module).__name__} has no trainable parameters (requires_grad=True) to sample")
    params = env.t2j_copy(trainable)
    fixed = env.t2j_copy(fixed)
    names = frozenset(params)
    _LAYOUTS[_signature(params)] = TorchLayout(dict(tied), dict(fixed))

    def loss_fn(params, batch):
        _check_names(params, names)
        state = {**fixed, **params}
        batch = jax.tree.map(lambda x: jnp.asarray(x) if isinstance(x, np.ndarray) else x, batch)
        state, batch = env.j2t_iso((state, batch))
        with env, torch.device("jax"), _eval_mode(module):
            value = jittable.functional_call(loss, state, {}, batch)
        value = env.t2j_iso(value)
        require(isinstance(value, jax.Array) and value.shape == (),
                f"loss(module, batch) must return a scalar tensor, got "
                f"{getattr(value, 'shape', type(value).__name__)}; reduce it (e.g. .mean())")
        return value

    loss_fn.__name__ = f"from_torch({type(module).__name__}, {getattr(loss, '__name__', 'loss')})"
    return loss_fn, params


def _check_names(params, names: frozenset) -> None:
    """At tracing: params must hold exactly the bridged parameter names."""
    require(isinstance(params, dict),
            f"params must be the dict from from_torch ({{torch name: array}}), got {type(params).__name__}")
    if set(params) != names:
        missing, extra = sorted(names - set(params)), sorted(set(params) - names)
        raise SLTInputError(
            "params do not match the torch module's parameter names"
            + (f"; missing {missing[:5]}" if missing else "") + (f"; unexpected {extra[:5]}" if extra else "")
            + ": pass the params returned by from_torch, or load checkpoints with them as the template "
            "(load_params(path, params), llc_trajectory(..., template=params)), which reads tied copies once "
            "and leaves out the buffers and frozen parameters that from_torch holds fixed"
        )
