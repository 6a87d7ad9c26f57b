"""Loading implementations: built-ins, a user's modules (in a child or in this process), entry points."""

from __future__ import annotations

import importlib.metadata
import os
import textwrap

import pytest

from cnncheck import loading
from cnncheck.errors import ModuleLoadError
from cnncheck.status import Status

GOOD = """
import numpy as np
def relu_forward(x):
    return np.maximum(x, 0), x
def relu_backward(dout, x):
    return dout * (x > 0)
def conv_forward_fast(x, w, b, conv_param):
    raise NotImplementedError
"""


def _write(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


@pytest.mark.parametrize("isolate", [True, False])
def test_a_module_becomes_implementations_named_after_it(tmp_path, isolate):
    path = _write(tmp_path, "layers.py", GOOD)
    loaded = loading.load([path], isolate=isolate)
    try:
        registry = loaded.registry
        relu = registry.impl("relu", "layers")
        assert relu.backend == "user" and relu.source == path and not relu.missing
        assert relu.location.endswith("layers.py:3")
        fast = registry.impl("conv", "layers-fast")
        assert fast.missing == "layers.py does not define conv_backward_fast"
        pool = registry.impl("pool", "layers")
        assert pool.backend == "missing" and "does not define max_pool_forward_naive" in pool.missing
        assert loaded.session(relu) is loaded.sessions[path]
        assert loaded.session(registry.impl("relu", "numpy")) is loaded.local
    finally:
        loaded.close()


def test_two_modules_with_one_name_get_numbers(tmp_path):
    first = _write(tmp_path, "layers.py", GOOD)
    (tmp_path / "other").mkdir()
    second = _write(tmp_path / "other", "layers.py", GOOD)
    loaded = loading.load([first, second], isolate=False)
    try:
        assert {i.name for i in loaded.registry.impls("relu")} >= {"layers", "layers2"}
    finally:
        loaded.close()


def test_a_module_that_does_not_import_is_a_failure_not_an_exception(tmp_path):
    path = _write(tmp_path, "broken.py", "import numpy as np\nraise RuntimeError('at import')\n")
    loaded = loading.load([path])
    try:
        assert len(loaded.failures) == 1
        failure = loaded.failures[0]
        assert failure.status == Status.ERROR and "RuntimeError: at import (broken.py:2)" in failure.message
    finally:
        loaded.close()


def test_a_module_that_imports_cnncheck_uses_the_reference(tmp_path):
    path = _write(tmp_path, "cheat.py", "from cnncheck.layers.naive import relu_forward, relu_backward\n")
    child = loading.load([path])
    try:
        assert child.failures[0].status == Status.USES_REFERENCE
    finally:
        child.close()
    in_process = loading.load([path], isolate=False)
    try:
        assert [p.status for p in in_process.problems[path]][0] == Status.USES_REFERENCE
    finally:
        in_process.close()


def test_a_crash_while_importing_is_reported(tmp_path):
    path = _write(tmp_path, "crash.py", "import os\nos._exit(4)\n")
    loaded = loading.load([path])
    try:
        failure = loaded.failures[0]
        assert failure.status == Status.CRASHED and failure.message == "exit code 4 while importing the module"
    finally:
        loaded.close()


class _EntryPoint:
    def __init__(self, name, target):
        self.name, self.value, self._target = name, f"tests:{name}", target

    def load(self):
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


def test_entry_points_register_function_implementations(monkeypatch):
    from cnncheck.layers import naive

    def register(registry):
        registry.add_impl(loading.function_impl("relu", "plugin", naive.relu_forward, naive.relu_backward, "numpy"))

    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [_EntryPoint("mine", register)])
    loaded = loading.load([])
    try:
        impl = loaded.registry.impl("relu", "plugin")
        assert loaded.session(impl) is loaded.local and impl.source == "plugin plugin"
    finally:
        loaded.close()


def test_a_broken_entry_point_is_a_usage_error(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group: [_EntryPoint("bad", ImportError("no module named mylib"))])
    with pytest.raises(ModuleLoadError, match="cannot load entry point 'bad'.*--no-entry-points"):
        loading.load([])
    assert loading.load([], entry_points=False).registry


def test_the_course_layout_loads_through_a_child(tmp_path):
    fixtures = os.path.join(os.path.dirname(__file__), os.pardir, "fixtures", "layouts", "cs231n", "layers.py")
    loaded = loading.load([fixtures])
    try:
        assert not loaded.failures and not loaded.registry.impl("relu", "layers").missing
    finally:
        loaded.close()
