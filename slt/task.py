"""Load a measurement task named on the command line as ``MODULE:FACTORY``.

``--task``: ``FACTORY()`` returns ``(loss_fn, params, data)``, or an object with
attributes ``loss_fn``, ``params`` and ``data`` (e.g. :class:`slt.models.train.Task`).
``--torch-model``: ``FACTORY()`` returns ``(module, loss, data)``, a
``torch.nn.Module``, a torch ``loss(module, batch) -> scalar`` and the data as
numpy or JAX arrays; the module goes through :func:`slt.from_torch`.

``MODULE`` is a dotted module name importable from the current directory
(``mypkg.tasks:make_task``) or a path to a Python file
(``experiments/task.py:make_task``), which may import the modules beside it
(its directory is on ``sys.path`` while it is imported and the factory runs).
Every mistake in the spec is a :class:`slt.cli.UserError`: one line, exit status 2.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from typing import Any, Callable

from slt.cli import UserError

EXAMPLE = "mypkg.tasks:make_task"


@contextlib.contextmanager
def _on_path(directory: str):
    """``directory`` first on ``sys.path`` for the duration (removed after unless it was there)."""
    added = directory not in sys.path
    if added:
        sys.path.insert(0, directory)
    try:
        yield
    finally:
        if added and directory in sys.path:
            sys.path.remove(directory)


def _is_file_spec(module_name: str) -> bool:
    return module_name.endswith(".py") or os.sep in module_name or "/" in module_name


def _import(module_name: str, spec: str, flag: str = "--task"):
    if _is_file_spec(module_name):
        path = os.path.abspath(module_name)
        if not os.path.isfile(path):
            raise UserError(f"{flag} {spec}: no such file {module_name!r}")
        name = "_slt_task_" + os.path.splitext(os.path.basename(path))[0]
        file_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(file_spec)
        sys.modules[name] = module
        try:
            file_spec.loader.exec_module(module)
        except ModuleNotFoundError as err:
            sys.modules.pop(name, None)
            raise UserError(
                f"{flag} {spec}: {module_name} imports {err.name!r}, which is neither installed nor a module "
                f"beside it in {os.path.dirname(path)}"
            ) from None
        return module
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise UserError(
                f"{flag} {spec}: cannot import module {module_name!r} (no module named {err.name!r}; "
                "run from the directory that contains it, or pass a path to a .py file)"
            ) from None
        raise  # the module exists but one of its own imports is missing: show where


def _factory_result(spec: str, flag: str):
    """``(FACTORY name, FACTORY())`` of ``MODULE:FACTORY``, run with the module's directory (or the cwd) on ``sys.path``."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(part.strip() for part in spec.split(":")):
        raise UserError(f"{flag} must be MODULE:FACTORY (e.g. {EXAMPLE}), got {spec!r}")
    module_name, factory_name = (part.strip() for part in spec.split(":"))
    directory = os.path.dirname(os.path.abspath(module_name)) if _is_file_spec(module_name) else os.getcwd()
    with _on_path(directory):
        module = _import(module_name, spec, flag)
        factory = getattr(module, factory_name, None)
        if factory is None:
            raise UserError(f"{flag} {spec}: module {module_name!r} has no attribute {factory_name!r}")
        if not callable(factory):
            raise UserError(f"{flag} {spec}: {factory_name!r} is a {type(factory).__name__}, not a function to call")
        return factory_name, factory()


def load_task(spec: str) -> tuple[Callable, Any, Any]:
    """``(loss_fn, params, data)`` from ``FACTORY()`` in ``MODULE`` for ``spec = "MODULE:FACTORY"``."""
    factory_name, task = _factory_result(spec, "--task")
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


def load_torch_model(spec: str) -> tuple[Callable, Any, Any]:
    """``(loss_fn, params, data)`` for ``spec = "MODULE:FACTORY"`` whose ``FACTORY()`` returns ``(module, loss, data)``.

    ``module`` is a ``torch.nn.Module``, ``loss(module, batch)`` torch code
    returning a scalar, ``data`` a pytree of numpy/JAX arrays (leading axis:
    examples). ``loss_fn`` and ``params`` come from :func:`slt.from_torch`, so a
    folder of the module's ``state_dict`` safetensors files loads with
    ``params`` as the template.
    """
    factory_name, made = _factory_result(spec, "--torch-model")
    if not (isinstance(made, (tuple, list)) and len(made) == 3):
        raise UserError(
            f"--torch-model {spec}: {factory_name}() must return (module, loss, data) with a torch.nn.Module, "
            f"a torch loss(module, batch) and the data as numpy arrays; got {type(made).__name__}"
            + (f" of length {len(made)}" if isinstance(made, (tuple, list)) else "")
        )
    module, loss, data = made
    import jax

    from slt.torch_bridge import from_torch

    data = jax.tree.map(lambda x: x.detach().cpu().numpy() if hasattr(x, "detach") else x, data)  # torch tensors too

    loss_fn, params = from_torch(module, loss)
    return loss_fn, params, data
