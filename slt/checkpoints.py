"""Read and write parameter pytrees in safe formats.

Supported (chosen by extension, or a directory for orbax):

=================  ============================================================
``.safetensors``   flat ``{'a/b/kernel': array}`` (read and written with the
                   ``safetensors`` library; bfloat16/float8 through ml_dtypes).
                   PyTorch state dicts load as they are into ``slt.from_torch``
                   params; into a flax tree with ``key_map`` or
                   :func:`from_torch_state_dict_file` (names mapped, kernels transposed).
``.msgpack``       flax msgpack (``flax.serialization``): nested dict of arrays.
``.npz``           numpy archive, always read with ``allow_pickle=False``.
``.npy``           a single array (read only, ``allow_pickle=False``).
directory          orbax: a ``CheckpointManager`` directory (integer step
                   sub-directories) or a single ``StandardCheckpointer`` dir.
=================  ============================================================

Pickle-based files (``.pkl``, ``.pickle``, ``.pt``, ``.pth``, ``.bin``,
``.ckpt``, ``.joblib``, object arrays in ``.npy``/``.npz``) are refused: loading
a pickle runs arbitrary code from the file.

Keys. A pytree leaf is named by its path joined with ``'/'``: dict keys,
attribute names and sequence indices (``{'layers': [{'kernel': W}]}`` ->
``'layers/0/kernel'``). Flax NNX ``State`` trees and their pure-dict form
(``nnx.to_pure_dict``) give the same keys (the ``Variable.value`` level is
dropped). Loading without a template returns nested dicts with string keys;
pass ``template`` (any pytree with the wanted structure, e.g. the model's
params or ``jax.eval_shape`` of them) to get the exact structure back, with
shapes checked and dtypes cast to the template's.

``key_map`` (:func:`load_params`) renames, drops or transposes the file's
tensors before they meet the template.

Errors: a missing, truncated, unreadable or mismatched checkpoint raises
:class:`CheckpointError`, whose message names the file and what was expected
versus found. All writes are atomic (temporary file, then ``os.replace``).
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import tempfile
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "CheckpointError",
    "load_params",
    "save_params",
    "list_checkpoints",
    "from_torch_state_dict_file",
    "torch_to_flax",
    "flatten_params",
    "unflatten_params",
    "SAFE_EXTENSIONS",
    "PICKLE_EXTENSIONS",
]

SAFE_EXTENSIONS = (".safetensors", ".msgpack", ".npz", ".npy")
PICKLE_EXTENSIONS = (".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt", ".joblib")
_ROOT_KEY = "__root__"  # key of a pytree that is a single array
_NPZ_DTYPES_KEY = "__slt_dtypes__"  # npz side-table for dtypes numpy cannot name
_STEP_RE = re.compile(r"(\d+)")


class CheckpointError(Exception):
    """A checkpoint is missing, unreadable, unsafe, or does not match its template."""


# --------------------------------------------------------------------------
# pytree <-> flat {'a/b': array}
# --------------------------------------------------------------------------


def _is_variable(x) -> bool:
    try:
        from flax import nnx
    except Exception:  # pragma: no cover - flax is a dependency
        return False
    return isinstance(x, nnx.Variable)


def _key_str(entry) -> str:
    tu = jax.tree_util
    if isinstance(entry, tu.DictKey):
        k = entry.key
    elif isinstance(entry, tu.GetAttrKey):
        k = entry.name
    elif isinstance(entry, tu.SequenceKey):
        k = entry.idx
    elif isinstance(entry, tu.FlattenedIndexKey):
        k = entry.key
    else:  # pragma: no cover - custom key types
        k = str(entry)
    k = str(k)
    if "/" in k:
        raise CheckpointError(f"pytree key {k!r} contains '/', which is the key separator")
    return k


def _leaves_with_keys(tree) -> list[tuple[str, Any]]:
    """[(key, leaf)] in jax's flatten order, NNX Variables read through ``.value``."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_variable)
    out = []
    for path, leaf in flat:
        if _is_variable(leaf):
            leaf = leaf.get_value() if hasattr(leaf, "get_value") else leaf.value
        key = "/".join(_key_str(p) for p in path) or _ROOT_KEY
        out.append((key, leaf))
    return out


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, jax.ShapeDtypeStruct):
        raise CheckpointError("cannot save abstract (ShapeDtypeStruct) leaves")
    return np.asarray(jax.device_get(x))


def flatten_params(params) -> dict[str, np.ndarray]:
    """Pytree -> ``{'a/b/kernel': np.ndarray}`` (host copies)."""
    flat: dict[str, np.ndarray] = {}
    for key, leaf in _leaves_with_keys(params):
        if key in flat:
            raise CheckpointError(f"duplicate key {key!r} when flattening params")
        flat[key] = _to_numpy(leaf)
    return flat


def _nest(flat: Mapping[str, Any]) -> Any:
    """``{'a/b': x}`` -> ``{'a': {'b': x}}`` (string keys); ``{__root__: x}`` -> x."""
    if set(flat) == {_ROOT_KEY}:
        return flat[_ROOT_KEY]
    root: dict = {}
    for key, value in flat.items():
        node = root
        *parents, last = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise CheckpointError(f"key {key!r} clashes with a leaf at {p!r}")
        node[last] = value
    return root


def _flatten_nested(tree) -> dict[str, np.ndarray]:
    """Flatten a nested dict as restored from msgpack/orbax."""
    return {k: np.asarray(v) for k, v in _leaves_with_keys(tree)}


def unflatten_params(flat: Mapping[str, Any], template=None, *, source: str = "<memory>"):
    """Inverse of :func:`flatten_params`.

    Without ``template``: nested dicts with string keys (jax arrays at leaves).
    With ``template``: the template's exact structure; keys, shapes checked
    and dtypes cast to the template's. Mismatches raise :class:`CheckpointError`.
    """
    if template is None:
        return jax.tree_util.tree_map(jnp.asarray, _nest(dict(flat)))

    tmpl = _leaves_with_keys(template)
    used: set[str] = set()
    values, missing, bad_shape = [], [], []
    for key, leaf in tmpl:
        found = key if key in flat else (key + "/value" if key + "/value" in flat else None)
        if found is None:
            missing.append(key)
            continue
        used.add(found)
        arr = np.asarray(flat[found])
        want_shape = tuple(leaf.shape) if hasattr(leaf, "shape") else np.shape(leaf)
        if tuple(arr.shape) != want_shape:
            bad_shape.append(f"{key}: expected shape {want_shape}, found {tuple(arr.shape)}")
            continue
        want_dtype = getattr(leaf, "dtype", None)
        if want_dtype is None:
            want_dtype = np.asarray(leaf).dtype
        values.append(jnp.asarray(arr, dtype=want_dtype))
    unexpected = sorted(set(flat) - used)
    if missing or unexpected:
        lines = [f"{source}: tree structure differs from the template"]
        if missing:
            lines.append(f"  expected but not found ({len(missing)}): {_short(missing)}")
        if unexpected:
            lines.append(f"  found but not expected ({len(unexpected)}): {_short(unexpected)}")
        if bad_shape:
            lines.append(f"  shape mismatches: {_short(bad_shape)}")
        hint = _naming_hint([k for k, _ in tmpl], missing, unexpected)
        if hint:
            lines.append(f"  {hint}")
        raise CheckpointError("\n".join(lines))
    if bad_shape:
        raise CheckpointError(f"{source}: shape mismatch with the template:\n  " + "\n  ".join(bad_shape))
    treedef = jax.tree_util.tree_structure(template)
    if treedef.num_leaves != len(values):  # pragma: no cover - exotic Variables
        raise CheckpointError(f"{source}: template has leaves that are not arrays")
    return jax.tree_util.tree_unflatten(treedef, values)


def _torch_style(keys) -> bool:
    """Most keys look like a PyTorch state dict's (``'fc1.weight'``: dots, no '/')."""
    keys = list(keys)
    return bool(keys) and sum("." in k and "/" not in k for k in keys) * 2 > len(keys)


def _naming_hint(template_keys, missing, unexpected) -> str:
    """What to do when the file's names and the template's differ by convention."""
    if not missing or not unexpected:
        return ""
    if _torch_style(unexpected) and not _torch_style(template_keys):
        return (
            "the file holds a PyTorch state dict (dotted names, Linear weights [out, in]) and the template is a "
            "JAX/flax tree: build the model with slt.from_torch(module, loss) and pass its params as the template "
            "(no key map needed), or rename with key_map={'fc1.weight': ('fc1/kernel', 'T'), ...} ('T' transposes "
            "torch's [out, in] to [in, out]), or read it with slt.checkpoints.from_torch_state_dict_file(path, "
            "template), which maps names and transposes kernels by rule"
        )
    if _torch_style(template_keys) and not _torch_style(unexpected):
        return (
            "the template has PyTorch names (slt.from_torch params) but the file was written from a JAX/flax tree: "
            "save torch checkpoints with safetensors.torch.save_file(model.state_dict(), path), or rename with "
            "key_map={'fc1/kernel': ('fc1.weight', 'T'), ...}"
        )
    return "rename the file's tensors with key_map={file name: template name} (None drops a tensor)"


def _short(items, n=8) -> str:
    items = list(items)
    s = ", ".join(repr(i) if not isinstance(i, str) or ":" not in i else i for i in items[:n])
    return s + (f", ... (+{len(items) - n} more)" if len(items) > n else "")


# --------------------------------------------------------------------------
# atomic writes
# --------------------------------------------------------------------------


def _atomic_write_bytes(path: str, data: bytes) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------
# safetensors, through the safetensors library (its parser checks the header,
# offsets and length); numpy has no bfloat16/float8, ml_dtypes names them
# --------------------------------------------------------------------------

_ST_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8",
    "BOOL": "bool", "C64": "complex64", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}


def _np_dtype(name: str) -> np.dtype:
    try:
        return np.dtype(name)
    except TypeError:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, name))


def _safetensors_bytes(flat: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None) -> bytes:
    import safetensors.numpy

    arrays = {}
    for key, arr in flat.items():
        arr = np.asarray(arr, order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)
        if arr.dtype.name not in _ST_DTYPES.values():
            raise CheckpointError(f"safetensors cannot store dtype {arr.dtype} (key {key!r})")
        arrays[key] = arr
    meta = {str(k): str(v) for k, v in metadata.items()} if metadata else None
    return safetensors.numpy.save(arrays, metadata=meta)


def _read_safetensors(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    import safetensors

    with open(path, "rb") as f:
        data = f.read()
    try:
        entries = safetensors.deserialize(data)
    except Exception as e:  # safetensors.SafetensorError on a bad header or a short file
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({e})") from None
    out = {}
    for key, info in entries:
        try:
            dtype = _np_dtype(_ST_DTYPES[info["dtype"]])
        except (KeyError, AttributeError):
            raise CheckpointError(f"{path}: tensor {key!r} has dtype {info['dtype']}, which slt cannot read") from None
        out[key] = np.frombuffer(info["data"], dtype=dtype.newbyteorder("<")).reshape(tuple(info["shape"])).astype(dtype)
    (n,) = struct.unpack("<Q", data[:8])
    meta = json.loads(data[8 : 8 + n]).get("__metadata__") or {}
    return out, meta


# --------------------------------------------------------------------------
# npz / npy
# --------------------------------------------------------------------------


def _npz_bytes(flat: Mapping[str, np.ndarray]) -> bytes:
    arrays, dtypes = {}, {}
    for k, a in flat.items():
        if a.dtype.kind == "O":
            raise CheckpointError(f"refusing to save object array {k!r} to npz (it would need pickle)")
        if a.dtype.kind == "V" or a.dtype.type.__module__.startswith("ml_dtypes"):
            dtypes[k] = a.dtype.name
            a = a.view(f"uint{8 * a.dtype.itemsize}")
        arrays[k] = a
    if dtypes:
        arrays[_NPZ_DTYPES_KEY] = np.array(json.dumps(dtypes))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


_PICKLE_HINT = (
    "Pickle-based files can run arbitrary code when loaded, so slt refuses them. "
    "Convert the file once, in an environment you trust, to .safetensors "
    "(e.g. safetensors.torch.save_file(model.state_dict(), 'model.safetensors') for PyTorch, "
    "or slt.checkpoints.save_params('params.safetensors', params)), flax .msgpack, "
    "an orbax directory, or .npz without object arrays."
)
_TORCH_PICKLES = (".pt", ".pth", ".bin", ".ckpt")


def _convert_line(files: str, single: bool) -> str:
    """The one-line conversion of torch state-dict pickles to safetensors (run once, where the files are trusted)."""
    save = ("st.save_file({k: v.contiguous().clone() for k, v in torch.load(f, weights_only=True).items()}, "
            "f.rsplit('.', 1)[0] + '.safetensors')")
    if single:
        return f"python -c \"import torch, safetensors.torch as st; f = {files!r}; {save}\""
    return f"python -c \"import glob, torch, safetensors.torch as st; [{save} for f in glob.glob({files!r})]\""


def _pickle_hint(path: str, names=()) -> str:
    """Why pickles are refused and, for torch files, the command that converts them."""
    exts = {_ext(n) for n in names} or {_ext(path)}
    torch_ext = next((e for e in sorted(exts) if e in _TORCH_PICKLES), None)
    if torch_ext is None:
        return _PICKLE_HINT
    line = _convert_line(os.path.join(path, "*" + torch_ext), single=False) if names else _convert_line(path, single=True)
    return (
        "Pickle-based files can run arbitrary code when loaded, so slt refuses them. If the file is a torch "
        f"state dict you trust, convert it once to safetensors (torch's weights_only loader): {line}"
    )


def _read_npz(path: str) -> dict[str, np.ndarray]:
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as z:
            flat = {k: z[k] for k in z.files}
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise CheckpointError(f"{path}: contains object arrays (pickled Python objects). {_PICKLE_HINT}") from None
        raise CheckpointError(f"{path}: unreadable npz file ({e})") from None
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt npz file ({type(e).__name__}: {e})") from None
    dtypes = flat.pop(_NPZ_DTYPES_KEY, None)
    if dtypes is not None:
        for k, name in json.loads(str(dtypes)).items():
            flat[k] = flat[k].view(_np_dtype(name))
    return flat


def _read_npy(path: str) -> dict[str, np.ndarray]:
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise CheckpointError(f"{path}: contains an object array (pickled Python objects). {_PICKLE_HINT}") from None
        raise CheckpointError(f"{path}: truncated or corrupt npy file ({e})") from None
    except (EOFError, OSError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt npy file ({e})") from None
    return {_ROOT_KEY: arr}


# --------------------------------------------------------------------------
# msgpack
# --------------------------------------------------------------------------


def _read_msgpack(path: str) -> dict[str, np.ndarray]:
    from flax import serialization

    with open(path, "rb") as f:
        data = f.read()
    try:
        tree = serialization.msgpack_restore(data)
    except Exception as e:  # msgpack raises several types on truncation
        raise CheckpointError(f"{path}: truncated or corrupt msgpack file ({type(e).__name__}: {e})") from None
    if not isinstance(tree, (dict, np.ndarray)):
        raise CheckpointError(f"{path}: msgpack file holds a {type(tree).__name__}, expected a dict of arrays")
    return _flatten_nested(tree)


# --------------------------------------------------------------------------
# orbax
# --------------------------------------------------------------------------


def _int_subdirs(path: str) -> list[int]:
    try:
        names = os.listdir(path)
    except OSError:
        return []
    return sorted(int(n) for n in names if n.isdigit() and os.path.isdir(os.path.join(path, n)))


def _orbax_item_dir(path: str) -> str:
    """A manager step dir holds its item in ``default/``."""
    sub = os.path.join(path, "default")
    if not os.path.exists(os.path.join(path, "_METADATA")) and os.path.isdir(sub):
        return sub
    return path


def _read_orbax(path: str, step: int | None) -> dict[str, np.ndarray]:
    import orbax.checkpoint as ocp

    steps = _int_subdirs(path)
    try:
        if steps or step is not None:
            if step is None:
                step = steps[-1]
            if step not in steps:
                raise CheckpointError(f"{path}: no orbax checkpoint for step {step}; found steps {steps}")
            with ocp.CheckpointManager(os.path.abspath(path)) as mngr:
                tree = mngr.restore(step, args=ocp.args.StandardRestore())
        else:
            with ocp.StandardCheckpointer() as ckptr:
                tree = ckptr.restore(os.path.abspath(_orbax_item_dir(path)))
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(
            f"{path}: could not restore orbax checkpoint (step={step}): {type(e).__name__}: {e}"
        ) from None
    return _flatten_nested(tree)


def _write_orbax(path: str, flat: Mapping[str, np.ndarray], step: int | None) -> None:
    import orbax.checkpoint as ocp

    tree = _nest(dict(flat))
    if not isinstance(tree, dict):
        tree = {_ROOT_KEY: tree}
    path = os.path.abspath(path)
    if step is None:
        if os.path.exists(path):
            raise CheckpointError(f"{path}: already exists; orbax writes a new directory (pass step= to add to a manager)")
        with ocp.StandardCheckpointer() as ckptr:  # orbax writes to a tmp dir and renames
            ckptr.save(path, tree)
            ckptr.wait_until_finished()
    else:
        with ocp.CheckpointManager(path) as mngr:
            saved = mngr.save(int(step), args=ocp.args.StandardSave(tree))
            mngr.wait_until_finished()
        if not saved:
            raise CheckpointError(
                f"{path}: orbax did not save step {step} (steps must increase; existing: {_int_subdirs(path)})"
            )


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------


def _ext(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def _refuse_pickle(path: str) -> None:
    if _ext(path) in PICKLE_EXTENSIONS:
        raise CheckpointError(f"{path}: refusing to load a pickle-based file ({_ext(path)}). {_pickle_hint(path)}")


def load_params(path: str | os.PathLike, template=None, *, step: int | None = None, key_map=None):
    """Load a params pytree from ``path`` (format by extension; a directory is orbax).

    ``template``: pytree (arrays, ``jax.ShapeDtypeStruct`` or NNX State) giving
    the structure, shapes and dtypes; without it nested string-keyed dicts are
    returned. ``step``: which step of an orbax ``CheckpointManager`` directory
    (default: the latest).

    ``key_map`` renames the file's tensors before they meet the template: a
    dict ``{file name: value}`` (names not in it are kept) or a callable
    ``name -> value``, where a value is the template name, ``None`` (drop the
    tensor), or ``(template name, "T")`` to also transpose torch's layout to
    flax's (Linear ``[out, in]`` -> ``[in, out]``, Conv ``[out, in, *k]`` ->
    ``[*k, in, out]``; a function of the array may stand for ``"T"``).

    PyTorch state dicts (safetensors) load into ``slt.from_torch`` params as
    they are: same names, same layout. A tied weight stored under its other
    name (``lm_head.weight`` for ``transformer.wte.weight``) or twice is read
    once; buffers and frozen parameters in the file are not read (from_torch
    holds them fixed) and a warning says when the file's values differ.
    """
    path = os.fspath(path)
    _refuse_pickle(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    ext = _ext(path)
    if os.path.isdir(path):
        flat = _read_orbax(path, step)
    elif ext == ".safetensors":
        flat, _ = _read_safetensors(path)
    elif ext == ".msgpack":
        flat = _read_msgpack(path)
    elif ext == ".npz":
        flat = _read_npz(path)
    elif ext == ".npy":
        flat = _read_npy(path)
    else:
        raise CheckpointError(
            f"{path}: unknown checkpoint format {ext!r}; expected one of {SAFE_EXTENSIONS} or an orbax directory"
        )
    flat = _apply_key_map(flat, key_map, path)
    if _ROOT_KEY in flat and len(flat) == 1 and template is None:
        return jnp.asarray(flat[_ROOT_KEY])
    flat = _fit_torch_layout(flat, template)
    return unflatten_params(flat, template, source=path)


def torch_to_flax(arr: np.ndarray) -> np.ndarray:
    """Torch weight layout to flax kernel layout: ``[out, in, *k]`` -> ``[*k, in, out]`` (``"T"`` in a key map)."""
    arr = np.asarray(arr)
    return arr if arr.ndim < 2 else np.transpose(arr, (*range(2, arr.ndim), 1, 0))


def _apply_key_map(flat: dict, key_map, source: str) -> dict:
    """Rename, drop or transpose the file's tensors as ``key_map`` asks (see :func:`load_params`)."""
    if key_map is None:
        return flat
    if not (callable(key_map) or isinstance(key_map, Mapping)):
        raise CheckpointError(f"key_map must be a dict or a function of the file's names, got {type(key_map).__name__}")
    out: dict[str, np.ndarray] = {}
    for key, arr in flat.items():
        target = key_map(key) if callable(key_map) else key_map.get(key, key)
        if target is None:
            continue
        transform = None
        if isinstance(target, tuple) and len(target) == 2:
            target, transform = target
        if not isinstance(target, str):
            raise CheckpointError(
                f"key_map[{key!r}] must be a name, None, or (name, 'T'), got {target!r}"
            )
        if transform is not None:
            if transform == "T":
                transform = torch_to_flax
            if not callable(transform):
                raise CheckpointError(f"key_map[{key!r}]: the transform must be 'T' or a function, got {transform!r}")
            arr = np.asarray(transform(arr))
        if target in out:
            raise CheckpointError(f"{source}: key_map sends two tensors to {target!r} (the second: {key!r})")
        out[target] = arr
    return out


def _fit_torch_layout(flat: dict, template) -> dict:
    """For ``slt.from_torch`` params: tied copies read once, fixed tensors (buffers, frozen) left out."""
    import sys

    bridge = sys.modules.get("slt.torch_bridge")  # only loaded once from_torch ran: no torch import here
    layout = bridge.torch_layout(template) if bridge is not None else None
    if layout is None:
        return flat
    flat = dict(flat)
    for alias, name in layout.tied.items():
        if alias in flat:
            value = flat.pop(alias)
            flat.setdefault(name, value)  # stored once under the alias (safetensors' save_model), or twice
    differing = []
    for name, value in layout.fixed.items():
        if name in flat and name not in template:
            stored = flat.pop(name)
            same = np.shape(stored) == np.shape(value) and np.array_equal(np.asarray(stored), np.asarray(value))
            if not same and not name.endswith("num_batches_tracked"):
                differing.append(name)
    if differing:
        warnings.warn(
            f"checkpoints hold values of buffers or frozen parameters that differ from those slt.from_torch holds "
            f"fixed ({_short(differing)}); they are not read. To measure with a checkpoint's buffers, load its "
            "state dict into the torch module and call slt.from_torch again.",
            stacklevel=3,
        )
    return flat


def save_params(path: str | os.PathLike, params, *, step: int | None = None, metadata: Mapping[str, str] | None = None) -> str:
    """Write ``params`` to ``path`` atomically; returns the path.

    Format by extension: ``.safetensors`` (``metadata``: str->str header),
    ``.msgpack``, ``.npz``; anything else is an orbax directory (with ``step``:
    a ``CheckpointManager`` directory gaining that step).
    """
    path = os.fspath(path)
    ext = _ext(path)
    if ext in PICKLE_EXTENSIONS or ext == ".npy":
        raise CheckpointError(f"{path}: refusing to write {ext}; use .safetensors, .msgpack, .npz or an orbax directory")
    flat = flatten_params(params)
    if ext == ".safetensors":
        _atomic_write_bytes(path, _safetensors_bytes(flat, metadata))
    elif ext == ".msgpack":
        from flax import serialization

        tree = _nest(flat)
        if not isinstance(tree, dict):
            tree = {_ROOT_KEY: tree}
        _atomic_write_bytes(path, serialization.msgpack_serialize(tree))
    elif ext == ".npz":
        _atomic_write_bytes(path, _npz_bytes(flat))
    else:
        _write_orbax(path, flat, step)
    return path


def list_checkpoints(path: str | os.PathLike) -> list[tuple[int, str]]:
    """Sorted ``[(step, path)]`` of the checkpoints in a directory.

    An orbax ``CheckpointManager`` directory gives its integer step
    sub-directories; otherwise files with a safe extension and a number in the
    name (the last number, e.g. ``step_000100.safetensors`` -> 100) and
    sub-directories with a number in the name (orbax checkpoints).
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: not a directory of checkpoints")
    steps = _int_subdirs(path)
    if steps:
        return [(s, os.path.join(path, str(s))) for s in steps]
    found: dict[int, str] = {}
    pickles = []
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        stem, ext = os.path.splitext(name)
        if name.startswith("."):
            continue
        if ext.lower() in PICKLE_EXTENSIONS:
            pickles.append(name)
            continue
        if os.path.isdir(full):
            stem = name
        elif ext.lower() not in SAFE_EXTENSIONS:
            continue
        nums = _STEP_RE.findall(stem)
        if not nums:
            continue
        s = int(nums[-1])
        if s in found:
            raise CheckpointError(f"{path}: two checkpoints for step {s}: {found[s]} and {full}")
        found[s] = full
    if pickles:
        if not found:
            raise CheckpointError(
                f"{path}: only pickle-based checkpoints found ({_short(pickles)}). {_pickle_hint(path, pickles)}"
            )
        warnings.warn(f"{path}: ignoring pickle-based files {_short(pickles)}", stacklevel=2)
    return sorted(found.items())


# --------------------------------------------------------------------------
# PyTorch state dicts (safetensors only)
# --------------------------------------------------------------------------

_TORCH_SKIP = ("num_batches_tracked",)
_TORCH_LEAF_CANDIDATES = {
    "weight": ("kernel", "weight", "scale", "embedding"),
    "bias": ("bias",),
    "running_mean": ("mean", "running_mean"),
    "running_var": ("var", "running_var"),
}


def from_torch_state_dict_file(
    path: str | os.PathLike,
    template,
    key_map: Mapping[str, str | None] | Callable[[str], str | None] | None = None,
    transpose_linear: bool = True,
):
    """Load a PyTorch ``state_dict`` saved as ``.safetensors`` into a flax template.

    Key map. Each torch key (``'encoder.0.weight'``) becomes a flax key:
    ``key_map`` (a dict, or a callable returning the flax key) is consulted
    first; a value of ``None`` drops the tensor. Otherwise the default rule
    replaces ``'.'`` by ``'/'`` and maps the last name ``weight`` to the first
    of ``kernel``/``weight``/``scale``/``embedding`` present in the template
    (``running_mean``/``running_var`` -> ``mean``/``var``;
    ``num_batches_tracked`` is dropped).

    Transpose. With ``transpose_linear``, a torch ``weight`` that lands on a
    flax ``kernel`` is transposed (also through ``key_map``): Linear ``[out, in]`` -> ``[in, out]``,
    Conv ``[out, in, *k]`` -> ``[*k, in, out]``. Embeddings and norms are not.

    Torch pickles (``.pt``, ``.pth``, ``.bin``) are refused; convert them with
    ``safetensors.torch.save_file(model.state_dict(), 'model.safetensors')``.
    """
    path = os.fspath(path)
    _refuse_pickle(path)
    if _ext(path) != ".safetensors":
        raise CheckpointError(f"{path}: expected a .safetensors file of a PyTorch state_dict")
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    torch_flat, _ = _read_safetensors(path)
    tmpl_keys = {k for k, _ in _leaves_with_keys(template)}
    mapped: dict[str, np.ndarray] = {}
    for tkey, arr in torch_flat.items():
        if callable(key_map):
            fkey = key_map(tkey)
        elif key_map is not None and tkey in key_map:
            fkey = key_map[tkey]
        else:
            fkey = _default_torch_key(tkey, tmpl_keys)
        if fkey is None:
            continue
        leaf = tkey.rsplit(".", 1)[-1]
        if transpose_linear and fkey.rsplit("/", 1)[-1] == "kernel" and leaf == "weight" and arr.ndim >= 2:
            arr = np.transpose(arr, (*range(2, arr.ndim), 1, 0))
        if fkey in mapped:
            raise CheckpointError(f"{path}: two torch tensors map to flax key {fkey!r} (last: {tkey!r})")
        mapped[fkey] = arr
    return unflatten_params(mapped, template, source=path)


def _default_torch_key(tkey: str, tmpl_keys: set[str]) -> str | None:
    parts = tkey.split(".")
    if parts[-1] in _TORCH_SKIP:
        return None
    base = "/".join(parts[:-1])
    for cand in _TORCH_LEAF_CANDIDATES.get(parts[-1], (parts[-1],)):
        k = f"{base}/{cand}" if base else cand
        if k in tmpl_keys:
            return k
    return "/".join(parts)  # reported as unexpected if not in the template
