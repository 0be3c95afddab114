"""Small file and JSON utilities shared by the store, checkpoints, reports and the models' training loops."""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any

import numpy as np


def jsonable(obj: Any) -> Any:
    """Plain-JSON form: numpy → Python, tuples → lists, NaN/Inf → None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if hasattr(obj, "shape") and np.shape(obj) == ():  # jax scalar
        return jsonable(np.asarray(obj).item())
    return obj


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same directory, fsync, ``os.replace``.

    A reader sees the old file or the new one, never a part; the directory is created if needed.
    """
    path = os.fspath(path)
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


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 1) -> None:
    """``obj`` as JSON (:func:`jsonable` first, NaN → null), written with :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, (json.dumps(jsonable(obj), indent=indent) + "\n").encode())
