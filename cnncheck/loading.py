"""Loading what to check: the built-in layers, installed plugins, and a user's modules.

:func:`load` is the one place that loads code: engines are handed the
result (a registry of specs and implementations, and the session each
implementation runs in) and load nothing themselves.

A **user module** is a Python file (``--module cnn/layers.py``) or an
importable module (``--module mypkg.layers``) that defines layer functions
under the course's names (each spec's ``functions``).  It is loaded in a
session of its own: a child process by default (the file's code never runs
in cnncheck's process), or this process with ``isolate=False``.  Every
layer it defines becomes an implementation named after the module: the
module's stem (``layers``) for a spec's main names, the stem and a suffix
for the others (``layers-fast``); a name already taken gets a number
(``layers2``).  A layer whose forward exists without its backward, or that
the module does not define while it defines others, gets an implementation
that reports ``not-implemented``, so a half-finished file shows what is left.

**Entry points.** An installed package can add implementations (and
layers) through the entry-point group ``cnncheck.implementations``: each
entry point names a callable ``register(registry)`` that calls
``registry.add_impl(function_impl(...))`` (and ``registry.add_layer(spec)``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from cnncheck import catalog
from cnncheck.boundary import Problem, ProtocolViolation, refusals, replacements
from cnncheck.errors import CnnCheckError, ModuleLoadError
from cnncheck.registry import Registry
from cnncheck.specs import Impl
from cnncheck.status import Status

#: Entry-point group third-party packages register implementations under.
ENTRY_POINT_GROUP = "cnncheck.implementations"

#: ``Impl.backend`` of implementations loaded from a user module.
USER_BACKEND = "user"


def function_impl(layer: str, name: str, forward, backward=None, backend: str = "", source: str = "") -> Impl:
    """An implementation made of Python functions that run in cnncheck's process (built-ins, plugins)."""
    source = source or f"plugin {name}"
    key = f"{layer}/{name}"
    functions = {f"{key}:forward": forward}
    if backward is not None:
        functions[f"{key}:backward"] = backward
    return Impl(layer, name, f"{key}:forward", f"{key}:backward" if backward is not None else "", backend, source,
                functions)


def _resolve(path: str):
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def builtin_registry() -> Registry:
    """The catalogue's layers with cnncheck's own implementations (torch ones when PyTorch is installed)."""
    from cnncheck.layers import fast

    registry = Registry()
    for spec in catalog.specs():
        registry.add_layer(spec)
        for builtin in spec.impls:
            if builtin.requires and importlib.util.find_spec(builtin.requires) is None:
                registry.unavailable[(spec.name, builtin.name)] = (
                    f"{builtin.requires}, which is not installed: pip install 'cnncheck[{builtin.requires}]'")
                continue
            backend = fast.BACKEND if builtin.backend == "kernels" else builtin.backend
            backward = _resolve(builtin.backward) if builtin.backward else None
            registry.add_impl(function_impl(spec.name, builtin.name, _resolve(builtin.forward), backward,
                                            backend, "builtin"))
    return registry


@dataclass(frozen=True)
class LoadFailure:
    """A user module that could not be loaded: the status and message every layer of it gets."""

    source: str
    status: Status
    message: str


@dataclass
class Loaded:
    """What :func:`load` returns: the registry, and where each implementation runs.

    Attributes
    ----------
    registry : Registry
    sessions : dict of str to session
        The session of each user module, by ``Impl.source``.
    local : LocalSession
        Runs every implementation made of functions (built-ins, plugins).
    user_sources : list of str
        The user modules' sources, in the order given.
    problems : dict of str to list of Problem
        Findings about a whole user module (it imported cnncheck, replaced
        numpy functions...), by source; every implementation of it fails with them.
    failures : list of LoadFailure
        User modules that did not load.
    """

    registry: Registry
    sessions: dict = field(default_factory=dict)
    local: object = None
    user_sources: list = field(default_factory=list)
    problems: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)

    def session(self, impl: Impl):
        """The session ``impl`` runs in."""
        if impl.functions:
            return self.local
        return self.sessions[impl.source]

    def close(self) -> None:
        for session in self.sessions.values():
            session.close()
        if self.local is not None:
            self.local.close()


def load(modules: Sequence = (), *, entry_points: bool = True, isolate: bool = True, sandbox=None) -> Loaded:
    """Build the registry: built-in layers, then entry points, then user modules.

    Parameters
    ----------
    modules : sequence of str
        ``.py`` paths or dotted module names, loaded in order.
    entry_points : bool
        Also call every ``register(registry)`` of :data:`ENTRY_POINT_GROUP`.
    isolate : bool
        Load user modules in child processes (else in this process).
    sandbox : cnncheck.session.Sandbox, optional
        Limits of the child processes.

    Returns
    -------
    Loaded
        A module that does not load is listed in ``failures``, not raised.

    Raises
    ------
    ModuleLoadError
        An entry point that fails to load.
    """
    from cnncheck.session import ChildSession, LocalSession

    registry = builtin_registry()
    if entry_points:
        load_entry_points(registry)
    functions = {}
    for layer in registry.layer_names():
        for impl in registry.impls(layer):
            functions.update(impl.functions)
    loaded = Loaded(registry, local=LocalSession(functions))
    try:
        for module in dict.fromkeys(os.fspath(m) for m in modules):
            session = ChildSession(sandbox) if isolate else LocalSession()
            loaded.sessions[module] = session
            loaded.user_sources.append(module)
            _load_user_module(loaded, module, session)
    except BaseException:      # Ctrl-C while a module loads: no child is left behind
        loaded.close()
        raise
    return loaded


def load_entry_points(registry: Registry) -> list[str]:
    """Call ``register(registry)`` for every entry point of :data:`ENTRY_POINT_GROUP`; their names."""
    done = []
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            register = ep.load()
        except Exception as exc:  # a third-party package's import-time code
            raise ModuleLoadError(f"cannot load entry point {ep.name!r} ({ep.value}) of group {ENTRY_POINT_GROUP}: "
                                  f"{type(exc).__name__}: {exc}; uninstall it or run with --no-entry-points") from None
        if not callable(register):
            raise ModuleLoadError(f"entry point {ep.name!r} ({ep.value}) is not callable; "
                                  "it must name a function register(registry)")
        try:
            register(registry)
        except CnnCheckError:
            raise
        except Exception as exc:  # a third-party package's registration code
            raise ModuleLoadError(f"entry point {ep.name!r} ({ep.value}) failed to register: "
                                  f"{type(exc).__name__}: {exc}; uninstall it or run with --no-entry-points") from None
        done.append(ep.name)
    return done


def _load_user_module(loaded: Loaded, source: str, session) -> None:
    from cnncheck.session import InternalError, SessionFailure

    registry = loaded.registry
    names = sorted({n for spec in registry.layers() for pair in spec.functions.values() for n in pair if n})
    session.begin()
    try:
        response = session.request({"op": "load", "module": source, "names": names})
        problems = refusals(response.get("refused", [])) + replacements(response.get("replaced", []))
        if not response.get("loaded"):
            if problems:
                loaded.failures.append(LoadFailure(source, problems[0].status, problems[0].message))
            else:
                message = response.get("message")
                loaded.failures.append(LoadFailure(source, Status.ERROR, message if isinstance(message, str)
                                                   else f"cannot import --module {source}"))
            return
        found = response.get("functions")
        borrowed = response.get("borrowed", [])
        if not isinstance(found, dict) or not isinstance(borrowed, list):
            raise ProtocolViolation("the load answer is malformed")
    except SessionFailure as failure:
        what = "while importing the module"
        loaded.failures.append(LoadFailure(source, Status(failure.status), f"{failure.message} {what}"))
        return
    except ProtocolViolation as exc:
        loaded.failures.append(LoadFailure(source, Status.PROTOCOL_ERROR, f"answered out of protocol ({exc})"))
        return
    except InternalError as exc:
        loaded.failures.append(LoadFailure(source, Status.INTERNAL_ERROR, str(exc)))
        return
    if borrowed:
        problems.append(Problem(Status.USES_REFERENCE, f"uses cnncheck's own code ({', '.join(map(str, borrowed[:3]))})"
                                ", the reference solution; a submission must compute its own results",
                                "imports-cnncheck"))
    for name, facts in found.items():
        if isinstance(facts, dict) and facts.get("reference"):
            problems.append(Problem(Status.USES_REFERENCE, f"{name} is cnncheck's own function (the reference "
                                    "solution), imported rather than written", "imports-cnncheck"))
    if problems:
        loaded.problems[source] = problems
    _register_functions(registry, source, found)


def _register_functions(registry: Registry, source: str, found: dict) -> None:
    display = Path(source).name if source.endswith(".py") else source
    base = _free_name(registry, _stem(source), source)
    defined = []
    impls = []
    for spec in registry.layers():
        for suffix, (forward, backward) in spec.functions.items():
            has_forward, has_backward = forward in found, (not backward or backward in found)
            if forward not in found and (not backward or backward not in found):
                continue
            name = base if not suffix else f"{base}-{suffix}"
            missing = ""
            if not has_forward or not has_backward:
                lacking = " and ".join(n for n, ok in ((forward, has_forward), (backward, has_backward)) if not ok)
                missing = f"{display} does not define {lacking}"
            location = found.get(forward, {}).get("location", "") if has_forward else ""
            impls.append(Impl(spec.name, name, forward, backward if backward else "", USER_BACKEND, source,
                              location=location if isinstance(location, str) else "", missing=missing))
            defined.append(spec.name)
    for spec in registry.layers():
        if spec.name in defined:
            continue
        forward, backward = next(iter(spec.functions.values()))
        lacking = " and ".join(n for n in (forward, backward) if n)
        impls.append(Impl(spec.name, base, forward, backward, "missing", source,
                          missing=f"{display} does not define {lacking}"))
    for impl in impls:
        registry.add_impl(impl)


def _stem(source: str) -> str:
    if source.endswith(".py") or os.sep in source or "/" in source:
        path = Path(source)
        return path.parent.name if path.name == "__init__.py" else path.stem
    return source.rpartition(".")[2]


def _free_name(registry: Registry, stem: str, source: str) -> str:
    """``stem``, or ``stem2``, ``stem3``... when another source already uses the name."""
    taken = {impl.name.split("-")[0] for layer in registry.layer_names() for impl in registry.impls(layer)
             if impl.source != source}
    candidate, number = stem, 1
    while candidate in taken:
        number += 1
        candidate = f"{stem}{number}"
    return candidate
