"""cnncheck: gradient checks and benchmarks for convolutional-network layers.

The public Python API, imported lazily so ``import cnncheck`` stays light::

    import cnncheck
    report = cnncheck.gradcheck("conv", module="cnn/layers.py", stride=2, pad=1)
    report.passed          # True when every gradient passed
    report                 # a table in a notebook

``cnncheck.gradcheck`` is the engine module :mod:`cnncheck.gradcheck`, and
calling it runs :func:`cnncheck.gradcheck.run_gradcheck`.
"""

__version__ = "0.1.0"

#: Public names and the modules that define them (loaded on first use).
_LAZY = {
    "run_gradcheck": "cnncheck.gradcheck",
    "check": "cnncheck.gradcheck",
    "GradcheckConfig": "cnncheck.gradcheck",
    "CheckJob": "cnncheck.gradcheck",
    "run_check_job": "cnncheck.gradcheck",
    "run_checks": "cnncheck.gradcheck",
    "GradcheckResult": "cnncheck.results",
    "GradcheckReport": "cnncheck.results",
    "Status": "cnncheck.results",
    "build_registry": "cnncheck.plugins",
    "builtin_registry": "cnncheck.catalog",
    "Registry": "cnncheck.registry",
    "LayerSpec": "cnncheck.specs",
    "Impl": "cnncheck.specs",
    "CnnCheckError": "cnncheck.errors",
}

__all__ = ["__version__", "gradcheck", *_LAZY]


def __getattr__(name):
    import importlib

    if name == "gradcheck":
        return importlib.import_module("cnncheck.gradcheck")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cnncheck' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
