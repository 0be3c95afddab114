"""JAX's persistent compilation cache, so a second run of a command does not recompile.

The ``slt`` command line turns it on at start-up, and the library at the
first compile of a sampling program (:func:`ensure_default_cache`) unless
JAX's cache is configured already. The directory is, in order:
the ``path`` argument, the environment variable ``SLT_COMPILATION_CACHE``
(a directory, or "off" to disable), or ``~/.cache/slt-jax/xla``
(``$XDG_CACHE_HOME/slt-jax/xla`` when that is set).

Programs with host callbacks (the progress bar) are not cached by JAX.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

ENV_VAR = "SLT_COMPILATION_CACHE"
_OFF = {"off", "0", "false", "no", "none", "disable", "disabled"}


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/slt-jax/xla (default ~/.cache/slt-jax/xla)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "slt-jax" / "xla"


def cache_dir_setting(path: str | os.PathLike | None = None) -> Path | None:
    """The directory the cache would use (None when it is turned off)."""
    setting = os.fspath(path) if path is not None else os.environ.get(ENV_VAR)
    if setting is not None and setting.strip().lower() in _OFF:
        return None
    return Path(setting).expanduser() if setting else default_cache_dir()


def enable_persistent_cache(path: str | os.PathLike | None = None, *, min_compile_seconds: float = 0.0) -> Path | None:
    """Turn on JAX's persistent compilation cache; return its directory (None if turned off).

    ``path``: the directory, or "off"; default ``$SLT_COMPILATION_CACHE``
    or ``~/.cache/slt-jax/xla``. Programs that compiled faster than
    ``min_compile_seconds`` are not written. A directory that cannot be
    created leaves the cache off (and returns None) rather than failing.
    """
    directory = cache_dir_setting(path)
    if directory is None:
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory


_default_checked = [False]


def ensure_default_cache() -> Path | None:
    """Turn the persistent cache on at the first compile of a sampling program, unless it is configured already.

    A user who set ``jax_compilation_cache_dir`` keeps theirs; ``SLT_COMPILATION_CACHE=off`` keeps it off.
    So a second process (a rerun of a script, a notebook restart) loads a program of the same shapes from
    disk instead of compiling it again: on the grokking MLP a 500-draw estimate's compile goes from 3.5 s to
    0.6 s (docs/benchmarks.md, "Compile time").
    """
    if _default_checked[0]:
        return None
    _default_checked[0] = True
    if jax.config.jax_compilation_cache_dir:
        return None
    return enable_persistent_cache()
