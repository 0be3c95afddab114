"""The trajectory store: the lock respected by restart, disk and permission errors as one-line StoreErrors."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import pytest

from slt.store import StoreError, TrajectoryStore, read_store
from slt.validation import SLTInputError

CONFIG = {"step_size": 1e-3, "nbeta": 10.0}


def make_store(path, n=2, config=CONFIG):
    with TrajectoryStore(path, config, {"task": "t"}) as st:
        for s in range(n):
            st.append({"step": 100 * s, "status": "ok", "llc_mean": float(s)})
    return path.read_bytes()


def one_line(err: BaseException) -> str:
    msg = str(err)
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


def test_restart_refused_while_another_handle_holds_the_lock(tmp_path):
    path = tmp_path / "llc.jsonl"
    before = make_store(path)
    holder = TrajectoryStore(path, CONFIG, {"task": "t"}).open()
    try:
        with pytest.raises(StoreError) as e:
            TrajectoryStore(path, {**CONFIG, "step_size": 2e-3}, {"task": "t"}, restart=True).open()
        assert "another process" in one_line(e.value) and str(path) in str(e.value)
        assert path.read_bytes() == before and not (tmp_path / "llc.jsonl.1").exists()  # the live store stays
        holder.append({"step": 300, "status": "ok", "llc_mean": 3.0})  # and its writer keeps writing to it
    finally:
        holder.close()
    assert [r["step"] for r in read_store(path)[1]] == [0, 100, 300]
    # once the writer is done, restart moves the store aside as before
    with TrajectoryStore(path, {**CONFIG, "step_size": 2e-3}, {"task": "t"}, restart=True) as st:
        assert st.moved_to == f"{path}.1" and st.records == []
    assert [r["step"] for r in read_store(f"{path}.1")[1]] == [0, 100, 300]


HOLD = textwrap.dedent("""
    import sys, time
    from slt.store import TrajectoryStore
    st = TrajectoryStore(sys.argv[1], {"step_size": 1e-3, "nbeta": 10.0}, {"task": "t"}).open()
    print("holding", flush=True)
    sys.stdin.read()   # until the test closes our stdin
    st.close()
""")


def test_restart_refused_while_another_process_holds_the_lock(tmp_path):
    path = tmp_path / "llc.jsonl"
    before = make_store(path)
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "holding"
        for restart in (True, False):  # a mismatched restart and a plain reopen: both refused
            cfg = {**CONFIG, "step_size": 2e-3} if restart else CONFIG
            with pytest.raises(StoreError, match="another process is writing"):
                TrajectoryStore(path, cfg, {"task": "t"}, restart=restart).open()
        assert path.read_bytes() == before and not (tmp_path / "llc.jsonl.1").exists()
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert proc.returncode == 0


def _raise(code, filename=None):
    raise OSError(code, os.strerror(code), filename)


def test_full_disk_on_append_is_one_line_naming_the_file(tmp_path, monkeypatch):
    path = tmp_path / "llc.jsonl"
    make_store(path)
    st = TrajectoryStore(path, CONFIG, {"task": "t"}).open()
    fd = st._fh.fileno()
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda f, b: _raise(errno.ENOSPC) if f == fd else real_write(f, b))
    with pytest.raises(StoreError) as e:
        st.append({"step": 200, "status": "ok", "llc_mean": 2.0})
    msg = one_line(e.value)
    assert str(path) in msg and "No space left on device" in msg
    assert isinstance(e.value, SLTInputError)
    monkeypatch.undo()
    st.close()
    # what was written before is intact, and a rerun appends again
    assert [r["step"] for r in read_store(path)[1]] == [0, 100]
    with TrajectoryStore(path, CONFIG, {"task": "t"}) as st:
        st.append({"step": 200, "status": "ok", "llc_mean": 2.0})
    assert [r["step"] for r in read_store(path)[1]] == [0, 100, 200]


def test_partial_write_then_full_disk_leaves_a_store_that_resumes(tmp_path, monkeypatch):
    path = tmp_path / "llc.jsonl"
    make_store(path)
    st = TrajectoryStore(path, CONFIG, {"task": "t"}).open()
    fd = st._fh.fileno()
    real_write = os.write
    calls = []

    def write(f, b):
        if f != fd:
            return real_write(f, b)
        calls.append(len(b))
        if len(calls) == 1:
            return real_write(f, b[:7])  # the disk fills up mid-line
        _raise(errno.ENOSPC)

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(StoreError, match="No space left"):
        st.append({"step": 200, "status": "ok", "llc_mean": 2.0})
    monkeypatch.undo()
    st.close()
    assert not path.read_bytes().endswith(b"\n")  # a torn line ...
    with TrajectoryStore(path, CONFIG, {"task": "t"}) as st:  # ... cut off at the next open
        assert sorted(st.done()) == [0, 100]
        st.append({"step": 200, "status": "ok", "llc_mean": 2.0})
    assert [r["step"] for r in read_store(path)[1]] == [0, 100, 200]


def readonly(monkeypatch, directory):
    """Simulate a read-only directory (the tests may run as root, which chmod does not stop)."""
    import builtins

    directory = os.path.abspath(directory)
    inside = lambda p: os.path.abspath(os.fspath(p)).startswith(directory + os.sep) or \
        os.path.abspath(os.fspath(p)) == directory  # noqa: E731
    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def fake_open(file, mode="r", *a, **k):
        if isinstance(file, (str, bytes, os.PathLike)) and inside(file) and any(c in mode for c in "wax+"):
            _raise(errno.EACCES, os.fspath(file))
        return real_open(file, mode, *a, **k)

    def fake_os_open(p, flags, *a, **k):
        if inside(p) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            _raise(errno.EACCES, os.fspath(p))
        return real_os_open(p, flags, *a, **k)

    def fake_mkdir(p, *a, **k):
        if inside(p):
            _raise(errno.EACCES, os.fspath(p))
        return real_mkdir(p, *a, **k)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


def test_read_only_directory_new_store(tmp_path, monkeypatch):
    path = tmp_path / "ro" / "llc.jsonl"
    (tmp_path / "ro").mkdir()
    readonly(monkeypatch, tmp_path / "ro")
    with pytest.raises(StoreError) as e:
        TrajectoryStore(path, CONFIG).open()
    msg = one_line(e.value)
    assert str(path) in msg and "Permission denied" in msg
    monkeypatch.undo()
    assert os.listdir(tmp_path / "ro") == []


def test_read_only_existing_store(tmp_path, monkeypatch):
    path = tmp_path / "llc.jsonl"
    before = make_store(path)
    readonly(monkeypatch, tmp_path)
    with pytest.raises(StoreError) as e:
        TrajectoryStore(path, CONFIG, {"task": "t"}).open()
    assert str(path) in one_line(e.value) and "Permission denied" in str(e.value)
    with pytest.raises(StoreError) as e:  # restart cannot move it aside either
        TrajectoryStore(path, {**CONFIG, "nbeta": 3.0}, {"task": "t"}, restart=True).open()
    assert str(path) in one_line(e.value)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert read_store(path)[0]["config"] == CONFIG  # reading needs no write access


def test_unreadable_store_names_the_file(tmp_path, monkeypatch):
    import builtins

    path = tmp_path / "llc.jsonl"
    make_store(path)
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: _raise(errno.EACCES, os.fspath(f))
                        if os.fspath(f) == str(path) else real_open(f, *a, **k))
    for call in (lambda: read_store(path), lambda: TrajectoryStore(path, CONFIG, {"task": "t"}).open()):
        with pytest.raises(StoreError) as e:
            call()
        assert str(path) in one_line(e.value) and "Permission denied" in str(e.value)
