"""Resolve the APP argument of ``unbroken serve`` / ``unbroken dev`` to an App object.

Accepted forms:

* a path to a Python file: ``examples/greeter.py`` (the current directory and the
  file's directory are put on ``sys.path`` first, so both package and sibling imports
  work; a file inside packages of the current directory, ``mypkg/app.py``, is imported
  as ``mypkg.app``, like ``python -m mypkg.app``);
* a module name: ``package.module``;
* either of the above followed by ``:attr`` (dotted attributes allowed):
  ``package.module:app``, ``examples/greeter.py:make.app``.

Without ``:attr``, the module attribute ``app`` is used if present, else the
first module-level object that is an unbroken ``App``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import zlib
from pathlib import Path
from types import ModuleType

__all__ = ["AppLoadError", "load_app"]


class AppLoadError(Exception):
    """The APP spec could not be resolved; ``str(err)`` is the reason."""


def _is_app(obj: object) -> bool:
    """Whether ``obj`` is an unbroken App.

    An instance of ``unbroken.sdk.app.App`` (imported lazily, when available), or
    anything shaped like one: a class named ``App`` with a ``services`` attribute.
    The structural check keeps the loader independent of the SDK module.
    """
    if type(obj).__name__ == "App" and hasattr(obj, "services"):
        return True
    if isinstance(obj, type):
        return False
    try:
        from unbroken.sdk.app import App
    except ImportError:
        return False
    return isinstance(obj, App)


def _looks_like_path(target: str) -> bool:
    return target.endswith(".py") or os.sep in target or (os.altsep is not None and os.altsep in target)


def _split_spec(spec: str) -> tuple[str, str | None]:
    """Split ``target[:attr]``, leaving Windows drive letters (``C:\\x.py``) alone."""
    head, sep, tail = spec.rpartition(":")
    if not sep:
        return spec, None
    # "C:\\dir\\app.py" or "C:/dir/app.py" -> no attr
    if len(head) == 1 and head.isalpha() and tail[:1] in ("\\", "/"):
        return spec, None
    if not head or not tail:
        raise AppLoadError("expected 'module:attr' with both parts non-empty")
    return head, tail


def _add_cwd_to_path() -> None:
    """Like ``python -m``, hypercorn and uvicorn: modules and packages of the current directory are
    importable (``unbroken serve mypkg/app.py`` where app.py does ``from mypkg import models``)."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def _package_module_name(path: Path) -> str | None:
    """``mypkg.app`` for ``<cwd>/mypkg/app.py`` when every directory up to the current one is a package
    (has ``__init__.py``): importing it under that name makes its relative imports work."""
    try:
        rel = path.relative_to(Path.cwd().resolve())
    except ValueError:
        return None
    parts = [*rel.parent.parts, path.stem]
    if len(parts) < 2 or not all(p.isidentifier() for p in parts):
        return None
    cwd = Path.cwd().resolve()
    for i in range(1, len(parts)):
        if not (cwd.joinpath(*parts[:i]) / "__init__.py").is_file():
            return None
    return ".".join(parts)


def _import_file(path_text: str) -> ModuleType:
    path = Path(path_text).expanduser()
    if not path.exists():
        raise AppLoadError(f"file not found: {path_text}")
    if not path.is_file():
        raise AppLoadError(f"not a file: {path_text}")
    path = path.resolve()
    _add_cwd_to_path()
    directory = str(path.parent)
    dotted = _package_module_name(path)
    if dotted is not None:
        if directory not in sys.path:
            sys.path.append(directory)  # sibling imports (``import helpers``) keep working, after the cwd
        return importlib.import_module(dotted)
    if directory not in sys.path:
        sys.path.insert(0, directory)

    module_name = path.stem
    existing = sys.modules.get(module_name)
    if existing is not None and getattr(existing, "__file__", None) is not None:
        try:
            if Path(existing.__file__ or "").resolve() == path:
                return existing
        except OSError:
            pass
    if existing is not None or not module_name.isidentifier():
        # Don't shadow an unrelated module of the same name (e.g. "app.py" vs a package "app").
        module_name = f"_unbroken_app_{zlib.crc32(str(path).encode()):08x}"

    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise AppLoadError(f"cannot import {path_text}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def _import_module(name: str) -> ModuleType:
    _add_cwd_to_path()
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        # Only a "not found" for the requested module (or a parent package) is
        # ours to report; a missing dependency inside the app should surface as is.
        if e.name is not None and (name == e.name or name.startswith(e.name + ".")):
            raise AppLoadError(f"module not found: {name}") from None
        raise


def _resolve_attr(module: ModuleType, dotted: str, target: str) -> object:
    obj: object = module
    for part in dotted.split("."):
        if not part:
            raise AppLoadError(f"invalid attribute path {dotted!r}")
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppLoadError(f"attribute {dotted!r} not found in {target}") from None
    return obj


def _find_app(module: ModuleType, target: str) -> object:
    named = getattr(module, "app", None)
    if named is not None and _is_app(named):
        return named
    for value in list(vars(module).values()):
        if _is_app(value):
            return value
    if named is not None:
        # An `app` attribute that doesn't look like an App (e.g. a factory result
        # of a subclass we can't recognise): the convention wins, serve() will judge.
        return named
    raise AppLoadError(f"no 'app' attribute and no unbroken App object found in {target}")


def load_app(spec: str) -> object:
    """Load the App designated by ``spec`` (file path, module, or ``target:attr``).

    Raises :class:`AppLoadError` when the file, module or attribute cannot be
    found or the module holds no app.  Exceptions raised by the app module's own
    code while importing propagate unchanged.
    """
    spec = spec.strip()
    if not spec:
        raise AppLoadError("empty app spec")
    target, attr = _split_spec(spec)
    if _looks_like_path(target):
        module = _import_file(target)
    else:
        module = _import_module(target)
    if attr is not None:
        return _resolve_attr(module, attr, target)
    return _find_app(module, target)
