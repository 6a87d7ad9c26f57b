"""User modules and entry points: loading, naming, placeholders and the errors users see."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest

from cnncheck import plugins
from cnncheck.catalog import builtin_registry
from cnncheck.errors import CnnCheckError, ModuleLoadError
from cnncheck.plugins import MISSING_BACKEND, USER_BACKEND, build_registry, register_module, user_impls

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "layers"


def names(registry, layer):
    return [impl.name for impl in registry.impls(layer)]


def test_build_registry_without_modules_is_the_builtin_one():
    assert {l: names(build_registry(entry_points=False), l) for l in ("affine", "relu", "conv", "pool")} == \
        {l: names(builtin_registry(), l) for l in ("affine", "relu", "conv", "pool")}


def test_a_module_registers_its_seed_named_functions_under_its_stem():
    path = str(FIXTURES / "correct.py")
    registry = build_registry([path], entry_points=False)
    assert names(registry, "conv")[-2:] == ["correct", "correct-fast"]
    assert names(registry, "affine")[-1] == "correct"
    impl = registry.impl("conv", "correct-fast")
    assert impl.backend == USER_BACKEND and impl.source == path
    assert impl.forward.__name__ == "conv_forward_naive"       # the module's alias is registered as given
    assert [i.name for i in user_impls(registry, "conv", [path])] == ["correct", "correct-fast"]


def test_missing_functions_get_not_implemented_placeholders():
    path = str(FIXTURES / "partial.py")
    registry = build_registry([path], entry_points=False)
    relu = registry.impl("relu", "partial")
    assert relu.backend == USER_BACKEND
    assert relu.backward.cnncheck_missing == "partial.py does not define relu_backward"
    conv = registry.impl("conv", "partial")
    assert conv.backend == MISSING_BACKEND
    assert "conv_forward_naive and conv_backward_naive" in conv.forward.cnncheck_missing
    with pytest.raises(NotImplementedError):
        conv.forward()


def test_placeholders_are_dropped_when_another_module_defines_the_layer():
    partial, correct = str(FIXTURES / "partial.py"), str(FIXTURES / "correct.py")
    registry = build_registry([partial, correct], entry_points=False)
    assert [i.name for i in user_impls(registry, "conv", [partial, correct])] == ["correct", "correct-fast"]
    assert [i.name for i in user_impls(registry, "affine", [partial, correct])] == ["partial", "correct"]
    assert [i.name for i in user_impls(registry, "conv", [partial])] == ["partial"]


def test_the_same_stem_twice_gets_a_number(tmp_path):
    other = tmp_path / "correct.py"
    other.write_text((FIXTURES / "correct.py").read_text())
    registry = build_registry([str(FIXTURES / "correct.py"), str(other)], entry_points=False)
    assert names(registry, "conv")[-4:] == ["correct", "correct-fast", "correct2", "correct2-fast"]


def test_a_stem_that_shadows_a_builtin_name_gets_a_number(tmp_path):
    shadow = tmp_path / "naive.py"
    shadow.write_text("from cnncheck.layers import conv_forward_naive, conv_backward_naive\n")
    registry = build_registry([str(shadow)], entry_points=False)
    assert registry.impl("conv", "naive").source == "builtin"
    assert registry.impl("conv", "naive2").source == str(shadow)


def test_a_path_given_twice_is_loaded_once():
    path = str(FIXTURES / "correct.py")
    registry = build_registry([path, path], entry_points=False)
    assert names(registry, "relu").count("correct") == 1 and "correct2" not in names(registry, "relu")


def test_loading_runs_the_top_level_code(tmp_path, capsys):
    module = tmp_path / "announce.py"
    module.write_text("print('imported')\nfrom cnncheck.layers import relu_forward, relu_backward\n")
    build_registry([str(module)], entry_points=False)
    assert capsys.readouterr().out == "imported\n"


def test_a_package_module_loads_with_relative_imports():
    registry = build_registry([str(FIXTURES / "student_pkg" / "layers.py")], entry_points=False)
    impl = registry.impl("relu", "layers")
    assert impl.forward.__module__ == "student_pkg.layers"


def test_a_dotted_module_name_loads(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES))
    registry = build_registry(["student_pkg.layers"], entry_points=False)
    assert registry.impl("relu", "layers").source == "student_pkg.layers"


def test_a_module_object_registers():
    import cnncheck.layers.naive as naive_module

    registry = builtin_registry()
    impls = register_module(registry, naive_module, name="mine")
    assert {(i.layer, i.name) for i in impls if i.backend == USER_BACKEND} >= {("conv", "mine"), ("pool", "mine")}


@pytest.mark.parametrize("spec,fragment", [
    ("no/such/layers.py", "cannot import --module no/such/layers.py: no such file"),
    ("no_such_module_anywhere", "cannot import --module no_such_module_anywhere: no such file or module"),
    (str(FIXTURES / "syntax_error.py"), "SyntaxError: expected ':' (syntax_error.py, line 3)"),
    (str(FIXTURES / "import_error.py"), "NameError: name 'undefined_name' is not defined (import_error.py:5)"),
    (str(FIXTURES / "unrelated.py"), "defines none of the layer functions cnncheck checks"),
    (str(FIXTURES / "README.txt"), "no such file"),
    (str(FIXTURES), "a folder without __init__.py"),
])
def test_load_errors_are_one_line_module_load_errors(spec, fragment):
    with pytest.raises(ModuleLoadError) as info:
        build_registry([spec], entry_points=False)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    assert isinstance(info.value, CnnCheckError)


def test_a_module_that_exits_while_importing_is_a_load_error(tmp_path):
    module = tmp_path / "exits.py"
    module.write_text("import sys\nsys.exit(3)\n")
    with pytest.raises(ModuleLoadError, match=r"called sys.exit\(3\) while importing"):
        build_registry([str(module)], entry_points=False)


def test_a_failed_import_leaves_no_half_module_behind(tmp_path):
    before = set(sys.modules)
    with pytest.raises(ModuleLoadError):
        build_registry([str(FIXTURES / "import_error.py")], entry_points=False)
    assert not [m for m in set(sys.modules) - before if "import_error" in m]


# -- entry points -------------------------------------------------------------------------
def _fake_entry_points(monkeypatch, *points):
    def entry_points(group=None):
        assert group == plugins.ENTRY_POINT_GROUP
        return [importlib.metadata.EntryPoint(name, value, group) for name, value in points]

    monkeypatch.setattr(plugins.importlib.metadata, "entry_points", entry_points)


def test_entry_points_call_register(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES))
    _fake_entry_points(monkeypatch, ("demo", "student_pkg.layers:register"))
    registry = build_registry()
    assert registry.impl("relu", "student-plugin").source == "entry point demo"
    assert "student-plugin" not in names(build_registry(entry_points=False), "relu")


def test_a_broken_entry_point_is_a_load_error_that_says_how_to_skip_it(monkeypatch):
    _fake_entry_points(monkeypatch, ("broken", "no_such_plugin_module:register"))
    with pytest.raises(ModuleLoadError, match="cannot load entry point 'broken'.*--no-entry-points"):
        build_registry()


def test_an_entry_point_whose_register_raises_is_a_load_error(monkeypatch, tmp_path):
    (tmp_path / "bad_plugin.py").write_text("def register(registry):\n    raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _fake_entry_points(monkeypatch, ("bad", "bad_plugin:register"))
    with pytest.raises(ModuleLoadError, match="failed to register: RuntimeError: boom"):
        build_registry()
