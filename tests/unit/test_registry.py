"""Registry: adding layers and implementations, lookups with suggestions, selection."""

from __future__ import annotations

import pytest

from cnncheck.catalog import AFFINE, CONV, POOL, RELU
from cnncheck.errors import CnnCheckError, UnknownNameError
from cnncheck.registry import Registry
from cnncheck.specs import Impl


def _noop(*args):
    return None


@pytest.fixture
def registry():
    reg = Registry()
    for spec in (AFFINE, RELU, CONV, POOL):
        reg.add_layer(spec)
    for layer, name in [("affine", "numpy"), ("relu", "numpy"), ("conv", "naive"), ("conv", "fast"),
                        ("pool", "naive"), ("pool", "fast")]:
        reg.add_impl(Impl(layer, name, _noop, _noop, "test"))
    return reg


def test_order_is_registration_order(registry):
    assert registry.layer_names() == ["affine", "relu", "conv", "pool"]
    assert [i.name for i in registry.impls("conv")] == ["naive", "fast"]
    assert registry.all_impl_names() == ["numpy", "naive", "fast"]


def test_duplicates_are_refused_unless_replaced(registry):
    with pytest.raises(CnnCheckError, match="layer 'conv' is already registered"):
        registry.add_layer(CONV)
    with pytest.raises(CnnCheckError, match="implementation 'fast' of layer 'conv' is already registered"):
        registry.add_impl(Impl("conv", "fast", _noop, _noop))
    replacement = Impl("conv", "fast", _noop, _noop, "other")
    registry.add_impl(replacement, replace=True)
    assert registry.impl("conv", "fast") is replacement


def test_an_impl_for_an_unknown_layer_is_refused(registry):
    with pytest.raises(UnknownNameError, match="unknown layer 'lstm'"):
        registry.add_impl(Impl("lstm", "x", _noop, _noop))


def test_unknown_names_list_known_ones_and_suggest(registry):
    with pytest.raises(UnknownNameError) as info:
        registry.layer("pooll")
    assert str(info.value) == "unknown layer 'pooll'; known: affine, relu, conv, pool (did you mean 'pool'?)"
    with pytest.raises(UnknownNameError, match="unknown implementation of 'conv' 'fats'.*did you mean 'fast'"):
        registry.impl("conv", "fats")


def test_expand_layers(registry):
    assert [s.name for s in registry.expand_layers([])] == ["affine", "relu", "conv", "pool"]
    assert [s.name for s in registry.expand_layers(["pool", "conv", "pool"])] == ["pool", "conv"]
    assert [s.name for s in registry.expand_layers(["conv", "all"])] == ["conv", "affine", "relu", "pool"]


def test_select_pairs(registry):
    pairs = registry.select(["conv", "pool"], ["fast"])
    assert [(s.name, i.name) for s, i in pairs] == [("conv", "fast"), ("pool", "fast")]
    pairs = registry.select(["all"], ["numpy", "naive"])
    assert [(s.name, i.name) for s, i in pairs] == [("affine", "numpy"), ("relu", "numpy"), ("conv", "naive"),
                                                    ("pool", "naive")]
    assert len(registry.select(["conv"])) == 2


def test_select_refuses_a_name_no_selected_layer_has(registry):
    with pytest.raises(UnknownNameError, match="unknown implementation for conv 'numpy'; known: fast, naive"):
        registry.select(["conv"], ["numpy"])
