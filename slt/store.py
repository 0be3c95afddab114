"""Append-only, crash-safe store of per-checkpoint results (JSON Lines).

Format (one JSON object per line, UTF-8)::

    {"format": "slt-trajectory", "version": 1, "config": {...}, "meta": {...}, "created": "..."}
    {"step": 0, "status": "ok", "llc_mean": 14.1, "llc_std": 0.3, "llc_per_chain": [...], ...}
    {"step": 500, "status": "failed", "source": "ckpt/step_000500.safetensors", "error": "..."}
    ...

* The first line (the header) records everything that determined the results
  (sampler hyperparameters, data fingerprint, caller metadata). It is written
  atomically (temporary file + ``os.replace``): a store either has a full header
  or does not exist.
* Each later line is one finished checkpoint, appended with a single
  ``write`` followed by ``flush`` and ``fsync`` the moment it is done, so a kill
  at any moment loses at most the line being written. A torn last line (no
  trailing newline, or not valid JSON) is detected, ignored, and cut off before
  the next append.
* Reopening with a different header ``config``/``meta`` raises
  :class:`StoreMismatchError` naming what changed; ``restart=True`` moves the
  old store aside (``FILE.1``, ``FILE.2``, ...) and starts a new one. Results
  made under different settings are never mixed in one file.
* For a step written more than once (a failed checkpoint retried), the last
  line wins.
* Lines without a ``"step"`` are notes about the sweep, with a ``"kind"``:
  ``{"kind": "settings", ...}`` records the step size and localization an
  automatic sweep chose (with each calibration's table), so that a resumed
  sweep reuses them.
* While a sweep writes to a store it holds an exclusive ``flock`` on it; a
  second writer is refused, and so is ``restart=True`` (the live store is
  never moved aside under its writer).
* Disk and permission errors (a read-only directory, a full disk) raise
  :class:`StoreError` in one line naming the file; what was written before
  stays intact (a line cut short by a full disk is cut off at the next open).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
from typing import Any, Iterable


from slt.io import atomic_write_bytes, jsonable  # noqa: F401 (jsonable: re-exported)
from slt.validation import SLTInputError

__all__ = ["TrajectoryStore", "StoreError", "StoreMismatchError", "read_store", "FORMAT", "VERSION"]

FORMAT = "slt-trajectory"
VERSION = 1


class StoreError(SLTInputError):
    """A trajectory store cannot be read or written as asked."""


class StoreMismatchError(StoreError):
    """The store was made with different settings than the current run."""


@contextlib.contextmanager
def _os_errors(path: str, action: str):
    """OSError (disk full, permission denied, ...) → one-line :class:`StoreError` naming ``path``."""
    try:
        yield
    except StoreError:
        raise
    except OSError as err:
        what = err.strerror or str(err)
        name = errno_name(err)
        other = ""  # the file the OS names, when it is not the store or its temporary file beside it
        if err.filename and os.path.dirname(os.path.abspath(os.fspath(err.filename))) != \
                os.path.dirname(os.path.abspath(path)):
            other = f" ({os.fspath(err.filename)})"
        raise StoreError(f"{path}: cannot {action}{other}: {what}{f' [{name}]' if name else ''}") from None


def errno_name(err: OSError) -> str:
    """``ENOSPC`` for errno 28, etc. ("" when unknown)."""
    import errno as _errno

    return _errno.errorcode.get(err.errno, "") if err.errno else ""


def _dumps(obj: Any) -> str:
    return json.dumps(jsonable(obj), separators=(",", ":"), allow_nan=False)


def _parse_lines(raw: bytes, path: str) -> tuple[dict | None, list[dict], int, bool]:
    """(header, records, length of the intact prefix in bytes, torn?)."""
    header, records = None, []
    good_end, pos, torn = 0, 0, False
    while pos < len(raw):
        nl = raw.find(b"\n", pos)
        if nl < 0:  # no newline: a write was cut short
            torn = True
            break
        line = raw[pos:nl].strip()
        pos = nl + 1
        if not line:
            good_end = pos
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            if not raw[pos:].strip():  # the last line only: a write cut short
                torn = True
                break
            lineno = raw.count(b"\n", 0, nl) + 1
            raise StoreError(f"{path}: line {lineno} is not valid JSON; the store is corrupt") from None
        if header is None:
            if not isinstance(obj, dict) or obj.get("format") != FORMAT:
                raise StoreError(f"{path}: not an slt trajectory store (first line is not a {FORMAT!r} header)")
            if obj.get("version", 0) > VERSION:
                raise StoreError(f"{path}: store version {obj.get('version')} is newer than this slt (reads ≤ {VERSION})")
            header = obj
        else:
            records.append(obj)
        good_end = pos
    return header, records, good_end, torn


def read_store(path: str | os.PathLike) -> tuple[dict, list[dict]]:
    """(header, records) of a store; a torn last line is ignored. Read-only."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise StoreError(f"{path}: no such trajectory store")
    with _os_errors(path, "read the store"), open(path, "rb") as f:
        raw = f.read()
    header, records, _, _ = _parse_lines(raw, path)
    if header is None:
        what = "empty" if not raw.strip() else f"not an slt trajectory store (no {FORMAT!r} header line)"
        raise StoreError(f"{path}: {what}")
    return header, records


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            name = f"{prefix}.{k}" if prefix else k
            if k not in old:
                out.append(f"{name}: not in the store, now {new[k]!r}")
            elif k not in new:
                out.append(f"{name}: store has {old[k]!r}, now unset")
            else:
                out += _diff(old[k], new[k], name)
        return out
    return [] if old == new else [f"{prefix}: store has {old!r}, now {new!r}"]


class TrajectoryStore:
    """Writer for one store file; use as a context manager.

    ``TrajectoryStore(path, config, meta).open()`` creates the file (header
    only) or reopens it, checking that ``config`` and ``meta`` match the header.
    ``done()`` gives ``{step: record}`` of what is already there;
    ``append(record)`` adds one line durably.
    """

    def __init__(self, path: str | os.PathLike, config: dict, meta: dict | None = None, *, restart: bool = False):
        self.path = os.fspath(path)
        self.config = json.loads(_dumps(config))
        self.meta = json.loads(_dumps(meta or {}))
        self.restart = restart
        self.header: dict | None = None
        self.records: list[dict] = []
        self.moved_to: str | None = None
        self._fh = None

    # -- lifecycle -------------------------------------------------------
    def __enter__(self) -> "TrajectoryStore":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> "TrajectoryStore":
        """Open the store for appending (creating it with its header), taking the write lock.

        With ``restart`` and other settings in the file, the old store is moved aside only while
        no other process holds its lock; otherwise :class:`StoreError`."""
        if os.path.isdir(self.path):
            raise StoreError(f"{self.path}: is a directory; pass a file path for the store (e.g. {self.path}/llc.jsonl)")
        if os.path.exists(self.path):
            header, records, good_end, torn = self._read()
            if header is not None:
                problems = _diff(header.get("config", {}), self.config) + _diff(header.get("meta", {}), self.meta, "meta")
                if problems and not self.restart:
                    raise StoreMismatchError(
                        f"{self.path} was made with different settings ({'; '.join(problems[:4])}"
                        f"{'; ...' if len(problems) > 4 else ''}); use another output file, or restart to move it "
                        "aside and start a new store"
                    )
                with _os_errors(self.path, "open the store for writing"):
                    self._fh = open(self.path, "r+b", buffering=0)
                self._lock()
                if problems:  # restart: ours alone (locked), so it can be moved aside
                    old = self._fh
                    try:
                        self._move_aside()
                        self._fh = None
                        self._create()
                    finally:
                        old.close()  # releases the old store's lock only now
                    return self
                self.header, self.records = header, records
                with _os_errors(self.path, "repair the store's torn last line"):
                    if torn:  # cut the torn tail so the next line starts clean
                        self._fh.truncate(good_end)
                        os.fsync(self._fh.fileno())
                    self._fh.seek(0, os.SEEK_END)
                return self
        self._create()
        return self

    def close(self) -> None:
        """Release the write lock and close the file."""
        if self._fh is not None:
            self._fh.close()  # releases the flock
            self._fh = None

    # -- reading/writing -----------------------------------------------------
    def done(self, *, include_failed: bool = False) -> dict[int, dict]:
        """``{step: last record}``; failed ones only with ``include_failed``."""
        out = records_by_step(self.records)
        return out if include_failed else {s: r for s, r in out.items() if r.get("status") == "ok"}

    def notes(self, kind: str) -> list[dict]:
        """The records of ``kind`` that are not checkpoints (e.g. a sweep's resolved settings), in order."""
        return [r for r in self.records if "step" not in r and r.get("kind") == kind]

    def append(self, record: dict) -> None:
        """Write one record as one line, then flush and fsync."""
        if self._fh is None:
            raise StoreError(f"{self.path}: store is not open")
        line = (_dumps(record) + "\n").encode()
        fd = self._fh.fileno()
        with _os_errors(self.path, "append to the store"):
            view = memoryview(line)
            while view:  # os.write may write part of the line
                view = view[os.write(fd, view):]
            os.fsync(fd)
        self.records.append(json.loads(line))

    # -- internals -----------------------------------------------------------
    def _read(self):
        with _os_errors(self.path, "read the store"), open(self.path, "rb") as f:
            raw = f.read()
        if not raw.strip():
            return None, [], 0, False
        return _parse_lines(raw, self.path)

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh.close()
            self._fh = None
            raise StoreError(f"{self.path}: another process is writing to this store") from None

    def _move_aside(self) -> None:
        i = 1
        while os.path.exists(f"{self.path}.{i}"):
            i += 1
        with _os_errors(self.path, f"move the old store aside to {self.path}.{i}"):
            os.replace(self.path, f"{self.path}.{i}")
        self.moved_to = f"{self.path}.{i}"

    def _create(self) -> None:
        header = {
            "format": FORMAT,
            "version": VERSION,
            "config": self.config,
            "meta": self.meta,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        with _os_errors(self.path, "create the store"):
            atomic_write_bytes(self.path, (_dumps(header) + "\n").encode())
            self._fh = open(self.path, "r+b", buffering=0)
        self.header, self.records = json.loads(_dumps(header)), []
        self._lock()
        self._fh.seek(0, os.SEEK_END)


def records_by_step(records: Iterable[dict]) -> dict[int, dict]:
    """Last record per step, in step order (records without a step, such as a sweep's settings, are skipped)."""
    out: dict[int, dict] = {}
    for rec in records:
        if "step" in rec:
            out[rec["step"]] = rec
    return dict(sorted(out.items()))
