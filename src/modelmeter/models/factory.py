"""``path/to/file.py:factory``: import a Python file and call a function that builds the model.

The factory may return a ``torch.nn.Module`` (inputs then come from the shape string) or a pair
``(module, inputs)`` with inputs a tensor, a tuple of positional arguments or a dict of keyword
arguments. A factory that declares parameters named ``batch``, ``seq``, ``device`` or ``dtype`` gets
them passed (``seq`` only when given); others are called with no arguments. With ``device="meta"``
it runs inside ``torch.device("meta")`` so that modules it creates hold no memory; a factory that
reads tensor values while it builds (and so fails there) is run once more with parameters and buffers
moved to meta as they are registered (see ``_build.empty_weights``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ..errors import ModelmeterError, SpecError
from ._build import build_on, to_meta


@dataclass(frozen=True)
class FactoryBuild:
    model: nn.Module
    inputs: Any  # None when the factory returned only a module


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def import_file(path: Path) -> ModuleType:
    """Import ``path`` as a fresh module; its folder is on ``sys.path`` while it runs (sibling imports)."""
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    mod_name = f"_modelmeter_factory_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise SpecError(f"cannot import {str(path)!r}: not a Python source file; give a .py file")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except ModelmeterError:
        raise
    except BaseException as exc:  # noqa: BLE001 - SyntaxError, ImportError, SystemExit from user code
        sys.modules.pop(mod_name, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise SpecError(f"importing {str(path)!r} failed: {type(exc).__name__}: {_one_line(exc)}; fix the file") from exc
    finally:
        if added:
            try:
                sys.path.remove(folder)
            except ValueError:
                pass
    return module


def build_factory(
    path_text: str, func_name: str, *, batch: int, seq: int | None, device: str, dtype: torch.dtype | None,
) -> FactoryBuild:
    path = Path(path_text).expanduser()
    label = f"{path_text}:{func_name}"
    if not path.is_file():
        raise SpecError(f"factory file {path_text!r} not found: give an existing .py file, as path/to/file.py:function")
    if not func_name.isidentifier():
        raise SpecError(f"{func_name!r} in {label!r} is not a Python function name: write path/to/file.py:function")
    module = import_file(path.resolve())
    func = getattr(module, func_name, None)
    if func is None:
        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        hint = f"; functions there: {', '.join(names)}" if names else ""
        raise SpecError(f"{path_text!r} has no function {func_name!r}{hint}")
    if not callable(func):
        raise SpecError(f"{func_name!r} in {path_text!r} is a {type(func).__name__}, not a function that builds a model")
    offered: dict[str, Any] = {"batch": batch, "device": device, "dtype": dtype}
    if seq is not None:
        offered["seq"] = seq
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        params = {}
    kwargs = {k: v for k, v in offered.items() if k in params}
    build_device = "meta" if device == "meta" else "cpu"
    try:
        result, fell_back = build_on(build_device, lambda: func(**kwargs))
    except ModelmeterError:
        raise
    except Exception as exc:  # noqa: BLE001
        hint = " (it ran on the meta device: try --device cpu)" if build_device == "meta" else ""
        raise SpecError(f"factory {label} raised {type(exc).__name__}: {_one_line(exc)}{hint}") from exc
    inputs = None
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], nn.Module):
        result, inputs = result
        if fell_back:
            inputs = to_meta(inputs)
    if not isinstance(result, nn.Module):
        raise SpecError(
            f"factory {label} returned {type(result).__name__}: return a torch.nn.Module or a pair (module, inputs)"
        )
    if dtype is not None:
        result = result.to(dtype)
    return FactoryBuild(result, inputs)


__all__ = ["FactoryBuild", "build_factory", "import_file"]
