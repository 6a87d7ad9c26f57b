"""cnncheck: check, time and grade the layers of a convolutional network.

The public Python API, imported lazily so ``import cnncheck`` stays light::

    import cnncheck
    report = cnncheck.gradcheck("conv", module="cnn/layers.py")
    report.passed          # True when every check passed
    report                 # a table in a notebook

``cnncheck.gradcheck`` is the engine module :mod:`cnncheck.gradcheck`, and
calling it runs :func:`cnncheck.api.gradcheck`.

How the package is laid out, in the order data flows::

    cli/        the commands: parse, wire, exit (no numerics)
    api.py      load, select, check: what the commands and Python users call
    loading.py  built-in layers, plugins and user modules -> registry + sessions
    catalog/    one spec per layer (specs.py: what a spec holds)
    registry.py layer and implementation names -> (spec, impl) pairs
    session.py  where code under test runs: this process or a sandboxed child
    runner.py   the boundary itself, also the child's program (no cnncheck imports)
    calls.py    forward/backward calls through a session, judged by boundary.py
    gradcheck.py, numeric.py, modelcheck.py, bench.py, grade.py   the engines
    results.py  plain result records; status.py the statuses and exit codes
    report/     one renderer registry for every command and format
    layers/     the layers themselves; kernels/ their compiled-or-numpy kernels
"""

__version__ = "0.1.0"

#: Public names and the modules that define them (loaded on first use).
_LAZY = {
    "Report": "cnncheck.api",
    "check_models": "cnncheck.api",
    "GradcheckConfig": "cnncheck.gradcheck",
    "CheckResult": "cnncheck.results",
    "GradcheckReport": "cnncheck.results",
    "Status": "cnncheck.status",
    "ExitCode": "cnncheck.status",
    "load": "cnncheck.loading",
    "builtin_registry": "cnncheck.loading",
    "function_impl": "cnncheck.loading",
    "Registry": "cnncheck.registry",
    "LayerSpec": "cnncheck.specs",
    "Param": "cnncheck.specs",
    "Input": "cnncheck.specs",
    "Geometry": "cnncheck.specs",
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
