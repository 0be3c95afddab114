"""Every ```python block in docs/*.md and README.md runs, so the documentation cannot drift from the code.

Each file runs in a fresh Python process, as a reader would run it: ``slt.use_cpu_cores()`` at the top of a
page works there, and no page depends on what another one imported or configured. The blocks of one file run
in order in one namespace (like a notebook), in a temporary directory that is the working directory and is on
``sys.path``. A block whose first line is a file-name comment (``# mytasks.py``) is written to that file
instead (later blocks import it, the command lines in the text name it) and then imported once to check it.
```bash blocks are not run, except their ``slt ... --help`` lines (each must print its help and exit 0).

A block that cannot run here is listed in SKIP with its reason; a block that is broken now is listed in
KNOWN_BROKEN (the file's test is then an expected failure from that block on, and fails as soon as the block
runs, so that the entry is removed). Both lists stay short.

``python tests/test_docs.py docs/quickstart.md ...`` runs files the same way and prints each block's time.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FILES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")) + ["README.md"]

#: (file, python block number from 1): why it is not run here.
SKIP: dict[tuple[str, int], str] = {
    ("docs/performance.md", 3): "multi-host: jax.distributed.initialize needs a coordinator and several processes",
}

#: (file, python block number from 1): what fails now (its owner fixes the doc and removes the entry).
KNOWN_BROKEN: dict[tuple[str, int], str] = {}

#: seconds one file may take, its fresh process included, before it counts as failed
TIMEOUT = 600

FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                   re.MULTILINE | re.DOTALL)
FILE_BLOCK = re.compile(r"^#\s*(?P<name>[\w./-]+\.py)\s*$")
SHELL = ("bash", "sh", "shell", "console")


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
    code = 0
    with contextlib.redirect_stdout(buf):
        try:
            main(argv)
        except SystemExit as e:
            code = e.code
    if code != 0 or "usage: slt" not in buf.getvalue():
        raise AssertionError(f"slt {' '.join(argv)}: exit {code}, no usage printed")


def _failure(number, line, where, err) -> dict:
    return {"number": number, "line": line, "where": where, "message": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc()}


def run_blocks(path: str, workdir: Path) -> dict:
    """Run the blocks of ``path`` in this process, in ``workdir``, up to the first failure.

    Returns {"timings": [[python block number, seconds], ...], "error": None or {"number", "line", "where",
    "message", "traceback"}}. Meant for a fresh process: :func:`run_doc` starts one.
    """
    os.chdir(workdir)
    if str(workdir) not in sys.path:
        sys.path.insert(0, str(workdir))
    namespace: dict = {"__name__": "__docs__"}
    report: dict = {"timings": [], "error": None}
    for lang, number, line, code in blocks(path):
        if lang in SHELL:
            for argv in help_lines(code):
                try:
                    run_help(argv)
                except Exception as err:  # noqa: BLE001 (reported with the block's place)
                    report["error"] = _failure(0, line, f"{path} shell block (line {line})", err)
                    return report
            continue
        if lang != "python" or (path, number) in SKIP:
            continue
        where = f"{path} python block {number} (line {line})"
        first = code.lstrip().splitlines()[0] if code.strip() else ""
        file_block = FILE_BLOCK.match(first)
        t0 = time.perf_counter()
        try:
            if file_block:
                name = file_block["name"]
                (workdir / name).parent.mkdir(parents=True, exist_ok=True)
                (workdir / name).write_text(code)
                importlib.invalidate_caches()
                if "/" not in name:
                    importlib.import_module(name[:-3])
            else:
                exec(compile(code, where, "exec"), namespace)  # noqa: S102 (running the docs is the point)
        except Exception as err:  # noqa: BLE001 (reported with the block's place)
            report["error"] = _failure(number, line, where, err)
            return report
        report["timings"].append([number, round(time.perf_counter() - t0, 2)])
    return report


# The fresh process: loads this file by its path (the repository root is not put on sys.path, so a page cannot
# import the repository's top-level folders by accident) and writes its report where the test reads it.
CHILD = """
import importlib.util, json
from pathlib import Path
spec = importlib.util.spec_from_file_location("_docs_runner", {runner!r})
runner = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runner)
Path({report!r}).write_text(json.dumps(runner.run_blocks({path!r}, Path.cwd())))
"""


def run_doc(path: str, workdir: Path, timeout: float = TIMEOUT) -> dict:
    """Run the blocks of ``path`` in a fresh Python whose working directory is ``workdir``.

    Returns the report of :func:`run_blocks` with ``output`` (the process's stdout and stderr) and ``seconds``
    (its whole time, start-up included) added.
    """
    report_file = workdir.parent / f"{workdir.name}.report.json"
    report_file.unlink(missing_ok=True)
    script = CHILD.format(runner=str(Path(__file__).resolve()), path=path, report=str(report_file))
    # a reader's fresh Python, but headless, and with its caches in the sandbox instead of the home directory
    env = dict(os.environ, MPLBACKEND="Agg", XDG_CACHE_HOME=str(workdir / ".cache"), PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", script], check=False, cwd=workdir, env=env, capture_output=True,
                              text=True, timeout=timeout)
        output, returncode = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        parts = [p.decode(errors="replace") if isinstance(p, bytes) else p for p in (e.stdout, e.stderr) if p]
        output, returncode = "".join(parts), None
    seconds = time.perf_counter() - t0
    if report_file.exists():
        report = json.loads(report_file.read_text())
    else:  # the process died (timeout, crash) before it wrote a report
        why = f"timed out after {timeout:.0f} s" if returncode is None else f"exited with {returncode}"
        report = {"timings": [], "error": {"number": None, "line": None, "where": path,
                                           "message": f"the process running {path} {why}", "traceback": ""}}
    report.update(output=output, seconds=seconds)
    return report


def check_report(path: str, report: dict) -> None:
    """Fail, or xfail for a KNOWN_BROKEN block, as the report of ``path`` says."""
    err = report["error"]
    if err is not None:
        key = (path, err["number"])
        if key in KNOWN_BROKEN:
            pytest.xfail(f"{err['where']}: {KNOWN_BROKEN[key]} ({err['message']})")
        tail = "\n".join(report["output"].rstrip().splitlines()[-30:])
        raise AssertionError(f"{err['where']} fails: {err['message']}\n{err['traceback']}\n--- output ---\n{tail}")
    ran = {number for number, _ in report["timings"]}
    for file, number in KNOWN_BROKEN:
        if file == path and number in ran:
            pytest.fail(f"{path} python block {number} runs now: remove it from KNOWN_BROKEN in tests/test_docs.py")


@pytest.mark.slow
@pytest.mark.parametrize("path", FILES)
def test_doc_code_blocks_run(path, tmp_path, record_property):
    work = tmp_path / "work"
    work.mkdir()
    report = run_doc(path, work)
    record_property("block_seconds", report["timings"])
    print(f"{path}: {report['seconds']:.1f} s; (python block, s): {report['timings']}")
    check_report(path, report)


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


def test_runner_reports_the_failing_block(tmp_path):
    """A fresh process per file: the blocks share one namespace, and an error comes back with its block."""
    doc = tmp_path / "page.md"  # an absolute path: ROOT / doc is doc
    doc.write_text("```python\nimport jax\nx = jax.numpy.ones(2)\n```\n\n```python\nassert x.sum() == 3, 'sum'\n```\n")
    work = tmp_path / "work"
    work.mkdir()
    report = run_doc(str(doc), work, timeout=120)
    assert [n for n, _ in report["timings"]] == [1], report
    assert report["error"]["number"] == 2 and "AssertionError: sum" in report["error"]["message"], report


if __name__ == "__main__":  # python tests/test_docs.py [docs/a.md ...]: run files as the test does
    import tempfile

    failed = False
    for name in sys.argv[1:] or FILES:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "work").mkdir()
            rep = run_doc(Path(name).as_posix(), Path(tmp) / "work")
        status = "ok" if rep["error"] is None else f"FAILED {rep['error']['where']}: {rep['error']['message']}"
        failed |= rep["error"] is not None
        print(f"{name}: {rep['seconds']:.1f} s, {status}; (python block, s): {rep['timings']}", flush=True)
        if rep["error"] is not None:
            print(rep["error"]["traceback"][-3000:], flush=True)
    sys.exit(1 if failed else 0)
