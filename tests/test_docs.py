"""Every ```python block in docs/*.md and README.md runs, so the documentation cannot drift from the code.

The blocks of one file run in order in one namespace (like a notebook), in a temporary directory that is also
on ``sys.path``. A block whose first line is a file-name comment (``# mytasks.py``) is written to that file
instead (later blocks import it, the command lines in the text name it) and then imported once to check it.
```bash blocks are not run, except their ``slt ... --help`` lines (each must print its help and exit 0).

A block that cannot run here is listed in SKIP with its reason; a block that is broken now is listed in
KNOWN_BROKEN (the file's test is then an expected failure from that block on, and fails as soon as the block
runs, so that the entry is removed). Both lists stay short.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import shlex
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FILES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")) + ["README.md"]

#: (file, python block number from 1): why it is not run here.
SKIP: dict[tuple[str, int], str] = {}

#: (file, python block number from 1): what fails now (its owner fixes the doc and removes the entry).
KNOWN_BROKEN: dict[tuple[str, int], str] = {}

FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
FILE_BLOCK = re.compile(r"^#\s*(?P<name>[\w./-]+\.py)\s*$")


def blocks(path: str) -> list[tuple[str, int, int, str]]:
    """(language, python block number (0 for others), line number, code) of every fenced block, in order."""
    text = (ROOT / path).read_text()
    out, n = [], 0
    for m in FENCE.finditer(text):
        lang = m["lang"].lower()
        body = "\n".join(line[len(m["indent"]):] for line in m["body"].splitlines())
        if lang == "python":
            n += 1
        out.append((lang, n if lang == "python" else 0, text.count("\n", 0, m.start()) + 1, body))
    return out


def help_lines(code: str) -> list[list[str]]:
    """``slt ... --help`` command lines of a shell block (comments and continuations handled)."""
    joined = code.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("slt ") and "--help" in shlex.split(line):
            out.append(shlex.split(line)[1:])
    return out


def run_help(argv: list[str]) -> None:
    from slt.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0 and "usage: slt" in buf.getvalue(), f"slt {' '.join(argv)}: exit {e.value.code}"


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A temporary working directory on sys.path; the modules imported from it are forgotten afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        mod = sys.modules.get(name)
        if getattr(mod, "__file__", None) and str(tmp_path) in str(mod.__file__):
            del sys.modules[name]
    import matplotlib.pyplot as plt

    plt.close("all")


def run_doc(path: str, sandbox: Path) -> list[tuple[int, float]]:
    """Run every block of ``path``; returns (python block number, seconds) of each block run."""
    namespace: dict = {"__name__": "__docs__"}
    timings = []
    for lang, number, line, code in blocks(path):
        if lang in ("bash", "sh", "shell", "console"):
            for argv in help_lines(code):
                run_help(argv)
            continue
        if lang != "python":
            continue
        key = (path, number)
        if key in SKIP:
            continue
        where = f"{path} python block {number} (line {line})"
        first = code.lstrip().splitlines()[0] if code.strip() else ""
        file_block = FILE_BLOCK.match(first)
        t0 = time.perf_counter()
        try:
            if file_block:
                name = file_block["name"]
                (sandbox / name).parent.mkdir(parents=True, exist_ok=True)
                (sandbox / name).write_text(code)
                importlib.invalidate_caches()
                if "/" not in name:
                    importlib.import_module(name[:-3])
            else:
                exec(compile(code, where, "exec"), namespace)
        except BaseException as err:  # noqa: BLE001 (reported with the block's place)
            if isinstance(err, KeyboardInterrupt):
                raise
            if key in KNOWN_BROKEN:
                pytest.xfail(f"{where}: {KNOWN_BROKEN[key]} ({type(err).__name__}: {err})")
            raise AssertionError(f"{where} fails: {type(err).__name__}: {err}") from err
        if key in KNOWN_BROKEN:
            pytest.fail(f"{where} runs now: remove it from KNOWN_BROKEN in tests/test_docs.py")
        timings.append((number, time.perf_counter() - t0))
    return timings


@pytest.mark.slow
@pytest.mark.parametrize("path", FILES)
def test_doc_code_blocks_run(path, sandbox):
    run_doc(path, sandbox)


def test_lists_name_real_blocks():
    """SKIP and KNOWN_BROKEN name python blocks that exist, each with a reason."""
    for table in (SKIP, KNOWN_BROKEN):
        for (path, number), reason in table.items():
            assert path in FILES and reason.strip(), (path, number)
            count = sum(1 for lang, *_ in blocks(path) if lang == "python")
            assert 1 <= number <= count, (path, number, count)


def test_runner_finds_blocks_and_help_lines():
    text = blocks("docs/quickstart.md")
    assert [lang for lang, *_ in text].count("python") >= 3
    assert help_lines("slt llc --help   # options\nslt demo grokking --out x\n") == [["llc", "--help"]]
    assert FILE_BLOCK.match("# mytasks.py")["name"] == "mytasks.py" and not FILE_BLOCK.match("# a comment")
