"""Selection: the one place names typed by a user become (layer, implementation) pairs."""

from __future__ import annotations

import pytest

from cnncheck import loading
from cnncheck.errors import CnnCheckError, UnknownNameError
from cnncheck.specs import Impl


@pytest.fixture
def registry():
    registry = loading.builtin_registry()
    for layer in ("conv", "relu"):
        registry.add_impl(Impl(layer, "layers", "f", "g", "user", "layers.py"))
    registry.add_impl(Impl("pool", "layers", "f", "g", "missing", "layers.py", missing="layers.py does not define"))
    return registry


def names(pairs):
    return [(spec.name, impl.name) for spec, impl in pairs]


def test_all_selects_every_implementation_in_order(registry):
    pairs = names(registry.select(["all"]))
    assert pairs[0][0] == "affine" and ("conv", "naive") in pairs and ("conv", "layers") in pairs


def test_a_module_selects_only_its_implementations(registry):
    assert names(registry.select(["conv", "pool"], sources=["layers.py"])) == [("conv", "layers"), ("pool", "layers")]


def test_named_implementations_across_layers(registry):
    assert names(registry.select(["conv", "relu"], ["fast"])) == [("conv", "fast"), ("relu", "fast")]


def test_an_unknown_name_lists_the_known_ones_and_suggests(registry):
    with pytest.raises(UnknownNameError, match=r"unknown implementation for conv 'fats'; known: .*fast.*did you mean 'fast'"):
        registry.select(["conv"], ["fats"])
    with pytest.raises(UnknownNameError, match="did you mean 'conv'"):
        registry.select(["cnov"])


def test_an_empty_implementation_name_is_refused(registry):
    with pytest.raises(CnnCheckError, match="--impl needs a name"):
        registry.select(["conv"], [""])


def test_an_implementation_that_needs_an_extra_names_it(registry):
    registry._impls["conv"].pop("torch", None)
    registry.unavailable[("conv", "torch")] = "torch, which is not installed: pip install 'cnncheck[torch]'"
    with pytest.raises(CnnCheckError, match=r"pip install 'cnncheck\[torch\]'"):
        registry.select(["conv"], ["torch"])


def test_duplicates_are_refused(registry):
    with pytest.raises(CnnCheckError, match="already registered"):
        registry.add_impl(Impl("conv", "naive", "f", "g"))
    registry.add_impl(Impl("conv", "naive", "f", "g"), replace=True)
    with pytest.raises(UnknownNameError):
        registry.add_impl(Impl("nolayer", "x", "f", "g"))


def test_reference_of_each_layer(registry):
    for spec in registry.layers():
        if spec.reference is None:            # a random layer (dropout): judged by its own rule instead
            assert spec.subgradient is not None, spec.name
        else:
            assert registry.reference(spec) is not None, spec.name
