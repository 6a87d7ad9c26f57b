"""The layers cnncheck knows: one spec per layer, each in a module of this package.

Adding a layer means writing its functions and its spec, a module here with
a ``SPEC`` that names its functions, parameters, geometries and built-in
implementations, and listing the module in :data:`MODULES`.  Another package
can add layers the same way at run time with :func:`register` (or through
an entry point, see :mod:`cnncheck.loading`); nothing else in cnncheck
learns a layer's name.
"""

from __future__ import annotations

import importlib

#: The built-in layer modules, in the order of tables and of ``all``.
MODULES = ("affine", "relu", "conv", "pool", "batchnorm", "layernorm", "spatial_batchnorm", "spatial_groupnorm",
           "dropout", "softmax_loss", "svm_loss", "affine_relu", "conv_relu", "conv_relu_pool", "affine_bn_relu",
           "affine_ln_relu")

_EXTRA: list = []


def register(spec) -> None:
    """Add a layer spec to the catalogue (after the built-in ones); a name can be added once."""
    if any(s.name == spec.name for s in specs()):
        raise ValueError(f"a layer called {spec.name!r} is already in the catalogue")
    _EXTRA.append(spec)


def unregister(name: str) -> None:
    """Remove a layer added with :func:`register`."""
    _EXTRA[:] = [s for s in _EXTRA if s.name != name]


def specs() -> tuple:
    """Every layer spec: the built-in ones, then the registered ones."""
    built_in = tuple(importlib.import_module(f"cnncheck.catalog.{m}").SPEC for m in MODULES)
    return built_in + tuple(_EXTRA)


def spec(name: str):
    """The spec called ``name`` (KeyError when there is none)."""
    for candidate in specs():
        if candidate.name == name:
            return candidate
    raise KeyError(name)
