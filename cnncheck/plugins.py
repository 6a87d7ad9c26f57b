"""Implementations from outside cnncheck: a user's layers module and installed plugins.

A **user module** is a Python file (``--module cnn/layers.py``) or an
importable module (``--module mypkg.layers``) that defines layer functions
under the course notebook's names::

    affine_forward / affine_backward
    relu_forward / relu_backward
    conv_forward_naive / conv_backward_naive
    conv_forward_fast / conv_backward_fast
    max_pool_forward_naive / max_pool_backward_naive
    max_pool_forward_fast / max_pool_backward_fast

Loading a module runs its top-level code, as ``import`` does.  Every pair it
defines is registered as an extra implementation, named after the module so
tables tell it apart from cnncheck's own: the module's stem (``layers`` for
``cnn/layers.py`` or ``mypkg.layers``) for the course notebook's naive names and for
affine and relu, the stem plus ``-fast`` for the ``*_fast`` names
(``layers-fast``).  A name already taken gets a number (``layers2``).  A
module that defines a forward function but not its backward, or none of a
layer's functions while defining other layers, gets an implementation that
reports ``not-implemented``, so a half-finished file shows what is missing.

**Entry points.** An installed package can add implementations through the
entry-point group ``cnncheck.implementations``.  Each entry point names a
callable ``register(registry)`` that receives the
:class:`~cnncheck.registry.Registry` and calls ``registry.add_impl(Impl(...))``
(and ``registry.add_layer(LayerSpec(...))`` for a new layer)::

    [project.entry-points."cnncheck.implementations"]
    mylib = "mylib.cnncheck_plugin:register"
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
import traceback
import types
import zlib
from pathlib import Path
from typing import Sequence

from cnncheck.errors import CnnCheckError, ModuleLoadError
from cnncheck.registry import Registry
from cnncheck.specs import Impl

#: Entry-point group third-party packages register implementations under.
ENTRY_POINT_GROUP = "cnncheck.implementations"

#: ``Impl.backend`` of implementations loaded from a user module.
USER_BACKEND = "user"

#: ``Impl.backend`` of the placeholders that stand for functions a user module lacks.
MISSING_BACKEND = "missing"


def build_registry(modules: Sequence = (), *, entry_points: bool = True) -> Registry:
    """The built-in registry plus user modules and entry-point implementations.

    Parameters
    ----------
    modules : sequence of str, path or module
        User modules, each a ``.py`` path, a dotted module name, or an
        already imported module object; loaded in order.
    entry_points : bool
        Also call every ``register(registry)`` of the entry-point group
        ``cnncheck.implementations``.

    Returns
    -------
    Registry
        Built-in layers and implementations first, then entry points, then
        user modules.

    Raises
    ------
    ModuleLoadError
        A module that does not exist, does not import, or defines none of
        the course notebook's functions; an entry point that fails to load.
    """
    from cnncheck.catalog import builtin_registry

    registry = builtin_registry()
    if entry_points:
        load_entry_points(registry)
    for module in _unique(modules):
        register_module(registry, module)
    return registry


def _unique(modules: Sequence) -> list:
    """``modules`` without repeats (a path given twice is loaded once)."""
    seen, unique = set(), []
    for module in modules:
        key = id(module) if isinstance(module, types.ModuleType) else os.fspath(module)
        if key not in seen:
            seen.add(key)
            unique.append(module)
    return unique


def load_entry_points(registry: Registry) -> list[str]:
    """Call ``register(registry)`` for every entry point of :data:`ENTRY_POINT_GROUP`.

    Returns
    -------
    list of str
        The names of the entry points loaded, in order.
    """
    loaded = []
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            register = ep.load()
        except Exception as exc:  # a third-party package's import-time code
            raise ModuleLoadError(
                f"cannot load entry point {ep.name!r} ({ep.value}) of group {ENTRY_POINT_GROUP}: "
                f"{_describe(exc)}; uninstall it or run with --no-entry-points"
            ) from None
        if not callable(register):
            raise ModuleLoadError(f"entry point {ep.name!r} ({ep.value}) is not callable; "
                                  "it must name a function register(registry)")
        try:
            register(registry)
        except CnnCheckError:
            raise
        except Exception as exc:  # a third-party package's registration code
            raise ModuleLoadError(
                f"entry point {ep.name!r} ({ep.value}) failed to register: {_describe(exc)}; "
                "uninstall it or run with --no-entry-points"
            ) from None
        loaded.append(ep.name)
    return loaded


def register_module(registry: Registry, module, *, name: str | None = None) -> list[Impl]:
    """Load a user module and register the course-named layer functions it defines.

    Parameters
    ----------
    registry : Registry
        Receives the implementations.
    module : str, path or module
        A ``.py`` path, a dotted module name, or a module object.
    name : str, optional
        Implementation name to use instead of the module's stem.

    Returns
    -------
    list of Impl
        What was registered, placeholders for missing functions included.
    """
    if isinstance(module, types.ModuleType):
        mod = module
        source = getattr(module, "__file__", None) or module.__name__
    else:
        source = os.fspath(module)
        mod = load_module(source)
    stem = name or _stem(mod, source)
    base = _free_name(registry, stem, source)
    found: list[tuple] = []      # (spec, impl_name, forward, backward, seed names)
    defined_layers = set()
    for spec in registry.layers():
        for key, names in spec.seed_functions.items():
            fwd_name, bwd_name = names
            forward = getattr(mod, fwd_name, None)
            backward = getattr(mod, bwd_name, None)
            forward = forward if callable(forward) else None
            backward = backward if callable(backward) else None
            if forward is None and backward is None:
                continue
            impl_name = base if key == "naive" else f"{base}-{key}"
            found.append((spec, impl_name, forward, backward, names))
            defined_layers.add(spec.name)
    if not found:
        wanted = ", ".join(n for spec in registry.layers() for pair in spec.seed_functions.values() for n in pair)
        raise ModuleLoadError(f"module {source} defines none of the layer functions cnncheck checks ({wanted})")
    impls = []
    for spec, impl_name, forward, backward, (fwd_name, bwd_name) in found:
        if _already_registered(registry, spec.name, forward, backward):
            continue
        if forward is None:
            forward = missing_function(source, fwd_name)
        if backward is None:
            backward = missing_function(source, bwd_name)
        impls.append(Impl(spec.name, impl_name, forward, backward, USER_BACKEND, source))
    for spec in registry.layers():
        if spec.name not in defined_layers and spec.seed_functions:
            fwd_name, bwd_name = next(iter(spec.seed_functions.values()))
            placeholder = missing_function(source, fwd_name, bwd_name)
            impls.append(Impl(spec.name, base, placeholder, placeholder, MISSING_BACKEND, source))
    for impl in impls:
        registry.add_impl(impl)
    return impls


def user_impls(registry: Registry, layer: str, sources: Sequence) -> list[Impl]:
    """The implementations of ``layer`` that came from the given user modules.

    Placeholders of a module are dropped when another of ``sources`` defines
    the layer, so ``--module layers.py --module fast_layers.py`` reports only
    what neither file has.
    """
    wanted = {os.fspath(s) if not isinstance(s, types.ModuleType) else (getattr(s, "__file__", None) or s.__name__)
              for s in sources}
    impls = [impl for impl in registry.impls(layer) if impl.source in wanted]
    real = [impl for impl in impls if impl.backend != MISSING_BACKEND]
    return real if real else impls[:1]


def missing_function(source: str, *names: str):
    """A function that raises ``NotImplementedError`` saying ``source`` lacks ``names``.

    The engine reports it as ``not-implemented``.
    """
    what = " and ".join(names)
    message = f"{Path(source).name if source.endswith('.py') else source} does not define {what}"

    def missing(*args, **kwargs):
        raise NotImplementedError(message)

    missing.__name__ = names[0]
    missing.__qualname__ = names[0]
    missing.cnncheck_missing = message
    return missing


def load_module(spec: str) -> types.ModuleType:
    """Import a user module from a ``.py`` path or a dotted name, running its top-level code.

    A dotted name (``package.module``) is found on ``sys.path`` or in the
    current directory.

    A file is imported under its dotted name when it sits in a package (a
    folder with ``__init__.py``), so relative imports work, and otherwise as a
    standalone module; its folder (or its package's parent folder) is put at
    the front of ``sys.path`` so it can import its neighbours, as pytest does.

    Raises
    ------
    ModuleLoadError
        One line naming the module and, when the import failed, the
        exception type and message (a ``SyntaxError`` gives file and line).
    """
    if _looks_like_path(spec):
        return _load_file(spec)
    # A dotted name is looked up from the current directory too, as ``python -m`` does.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name and (spec == exc.name or spec.startswith(exc.name + ".")):
            raise ModuleLoadError(f"cannot import --module {spec}: no such file or module") from None
        raise ModuleLoadError(f"cannot import --module {spec}: {_describe(exc)}") from None
    except (Exception, SystemExit) as exc:  # the user's import-time code
        raise ModuleLoadError(f"cannot import --module {spec}: {_describe(exc)}") from None


def _looks_like_path(spec: str) -> bool:
    return spec.endswith(".py") or os.sep in spec or "/" in spec or os.path.exists(spec)


def _load_file(spec: str) -> types.ModuleType:
    path = Path(spec)
    if not path.exists():
        raise ModuleLoadError(f"cannot import --module {spec}: no such file")
    if path.is_dir():
        init = path / "__init__.py"
        if not init.exists():
            raise ModuleLoadError(f"cannot import --module {spec}: a folder without __init__.py; "
                                  "give the .py file")
        path = init
    elif path.suffix != ".py":
        raise ModuleLoadError(f"cannot import --module {spec}: expected a .py file")
    path = path.resolve()
    root, dotted = _package_root(path)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        if dotted is not None:
            module = _load_in_package(path, dotted)
            if module is not None:
                return module
        return _exec_file(path, _standalone_name(path))
    except ModuleLoadError:
        raise
    except (Exception, SystemExit) as exc:  # the user's import-time code
        raise ModuleLoadError(f"cannot import --module {spec}: {_describe(exc, path)}") from None


def _package_root(path: Path) -> tuple[Path, str | None]:
    """The folder to put on sys.path and the file's dotted name (None outside a package)."""
    parts = [] if path.name == "__init__.py" else [path.stem]
    folder = path.parent
    while (folder / "__init__.py").exists() and folder.parent != folder:
        parts.insert(0, folder.name)
        folder = folder.parent
    if (path.parent / "__init__.py").exists() and all(p.isidentifier() for p in parts):
        return folder, ".".join(parts)
    return path.parent, None


def _load_in_package(path: Path, dotted: str) -> types.ModuleType | None:
    """Import ``path`` as ``dotted`` inside its package; None when another package has that name."""
    package = dotted.rpartition(".")[0] if path.name != "__init__.py" else dotted
    if package:
        parent = importlib.import_module(package)
        locations = [os.path.realpath(p) for p in getattr(parent, "__path__", [])]
        if os.path.realpath(path.parent) not in locations:
            return None
    if path.name == "__init__.py":
        return sys.modules[dotted]
    return _exec_file(path, dotted)


def _exec_file(path: Path, module_name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(module_name)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        if previous is None:
            sys.modules.pop(module_name, None)
        else:
            sys.modules[module_name] = previous
        raise
    return module


def _standalone_name(path: Path) -> str:
    """A module name for a file outside any package, unique per file."""
    stem = "".join(c if c.isalnum() or c == "_" else "_" for c in path.stem)
    return f"cnncheck_user_{stem}_{zlib.crc32(str(path).encode()):08x}"


def _stem(module: types.ModuleType, source: str) -> str:
    if source.endswith(".py") or os.sep in source or "/" in source:
        path = Path(source)
        return path.parent.name if path.name == "__init__.py" else path.stem
    return module.__name__.rpartition(".")[2]


def _free_name(registry: Registry, stem: str, source: str) -> str:
    """``stem``, or ``stem2``, ``stem3``... when another source already uses the name."""
    def taken(name: str) -> bool:
        for layer in registry.layer_names():
            for impl in registry.impls(layer):
                if impl.name.split("-")[0] == name and impl.source != source:
                    return True
        return False

    candidate, number = stem, 1
    while taken(candidate):
        number += 1
        candidate = f"{stem}{number}"
    return candidate


def _already_registered(registry: Registry, layer: str, forward, backward) -> bool:
    """True when another user module already registered these very functions for ``layer``."""
    return any(impl.forward is forward and impl.backward is backward and impl.backend == USER_BACKEND
               for impl in registry.impls(layer))


def _describe(exc: BaseException, path: Path | None = None) -> str:
    """``Type: message``, with the file and line in the user's file where that helps."""
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r}) while importing"
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, SyntaxError):
        return text
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if path is not None and os.path.realpath(f.filename) == str(path)]
    frame = mine[-1] if mine else (frames[-1] if frames else None)
    if frame is not None and path is not None:
        text += f" ({Path(frame.filename).name}:{frame.lineno})"
    return text
