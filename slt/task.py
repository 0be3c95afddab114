"""Load a measurement task named on the command line as ``MODULE:FACTORY``.

``FACTORY()`` returns ``(loss_fn, params, data)``, or an object with
attributes ``loss_fn``, ``params`` and ``data`` (e.g. :class:`slt.models.train.Task`).
``MODULE`` is a dotted module name importable from the current directory
(``mypkg.tasks:make_task``) or a path to a Python file
(``experiments/task.py:make_task``). Every mistake in the spec is a
:class:`slt.cli.UserError`: one line, exit status 2.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any, Callable

from slt.cli import UserError

EXAMPLE = "mypkg.tasks:make_task"


def _import(module_name: str, spec: str):
    if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
        path = os.path.abspath(module_name)
        if not os.path.isfile(path):
            raise UserError(f"--task {spec}: no such file {module_name!r}")
        name = "_slt_task_" + os.path.splitext(os.path.basename(path))[0]
        file_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(file_spec)
        sys.modules[name] = module
        file_spec.loader.exec_module(module)
        return module
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise UserError(
                f"--task {spec}: cannot import module {module_name!r} (no module named {err.name!r}; "
                "run from the directory that contains it, or pass a path to a .py file)"
            ) from None
        raise  # the module exists but one of its own imports is missing: show where
    finally:
        if added:
            sys.path.remove(cwd)


def load_task(spec: str) -> tuple[Callable, Any, Any]:
    """``(loss_fn, params, data)`` from ``FACTORY()`` in ``MODULE`` for ``spec = "MODULE:FACTORY"``."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(part.strip() for part in spec.split(":")):
        raise UserError(f"--task must be MODULE:FACTORY (e.g. {EXAMPLE}), got {spec!r}")
    module_name, factory_name = (part.strip() for part in spec.split(":"))
    module = _import(module_name, spec)
    factory = getattr(module, factory_name, None)
    if factory is None:
        raise UserError(f"--task {spec}: module {module_name!r} has no attribute {factory_name!r}")
    if not callable(factory):
        raise UserError(f"--task {spec}: {factory_name!r} is a {type(factory).__name__}, not a function to call")
    task = factory()
    if all(hasattr(task, name) for name in ("loss_fn", "params", "data")):
        loss_fn, params, data = task.loss_fn, task.params, task.data
    elif isinstance(task, (tuple, list)) and len(task) == 3:
        loss_fn, params, data = task
    else:
        raise UserError(
            f"--task {spec}: {factory_name}() must return (loss_fn, params, data) or an object with attributes "
            f"loss_fn, params, data; got {type(task).__name__}"
            + (f" of length {len(task)}" if isinstance(task, (tuple, list)) else "")
        )
    if not callable(loss_fn):
        raise UserError(f"--task {spec}: loss_fn returned by {factory_name}() is not callable ({type(loss_fn).__name__})")
    return loss_fn, params, data
