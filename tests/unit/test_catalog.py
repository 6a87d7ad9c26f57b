"""The specs: parameters, geometries and inputs, checked as properties."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnncheck import catalog
from cnncheck.errors import CnnCheckError

SPECS = catalog.specs()


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_every_geometry_resolves_and_builds_inputs_of_the_declared_shapes(spec):
    for geometry, params in spec.battery():
        sample = spec.make_sample(params, np.random.default_rng(0), np.float64, 1e-4)
        shapes = spec.shapes(params)
        for name in spec.grads:
            assert sample.values[name].shape == tuple(shapes[name]), (geometry.label, name)
            assert sample.values[name].dtype == np.float64
        if sample.dout is not None:
            assert sample.dout.shape == tuple(spec.output_shape(params))
        assert spec.describe(params)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_the_first_geometry_is_the_defaults(spec):
    first, params = spec.battery()[0]
    assert params == spec.resolve({})
    if spec.name in ("affine", "relu", "conv", "pool"):
        assert first.label == "notebook"


def test_conv_and_pool_geometries_divide_evenly_unless_marked():
    for name in ("conv", "pool"):
        spec = catalog.spec(name)
        for geometry, p in spec.battery():
            N, C, H, W = p["shape"]
            if name == "conv":
                HH, WW, pad = *p["kernel"], p["pad"]
            else:
                HH, WW, pad = p["pool_height"], p["pool_width"], 0
            even = (H + 2 * pad - HH) % p["stride"] == 0 and (W + 2 * pad - WW) % p["stride"] == 0
            assert even != geometry.uneven, (name, geometry.label)


def test_the_battery_covers_what_loops_confuse():
    conv = [p for _, p in catalog.spec("conv").battery()]
    assert any(p["shape"][2] != p["shape"][3] for p in conv)
    assert any(p["kernel"][0] != p["kernel"][1] for p in conv)
    assert {p["pad"] for p in conv} >= {0, 1, 2} and {p["stride"] for p in conv} >= {1, 2, 3}
    assert {p["shape"][0] for p in conv} >= {1, 2} and {p["shape"][1] for p in conv} >= {1, 3}
    pool = [p for _, p in catalog.spec("pool").battery()]
    assert any(p["stride"] < p["pool_height"] for p in pool)             # overlapping windows
    assert any(p["pool_height"] != p["pool_width"] for p in pool)
    assert any(p["stride"] > p["pool_height"] for p in pool)
    affine = [p for _, p in catalog.spec("affine").battery()]
    assert {len(p["shape"]) for p in affine} >= {2, 4, 5} and any(p["filters"] == 1 for p in affine)


def test_pool_inputs_keep_a_margin_between_window_values():
    spec = catalog.spec("pool")
    for _, params in spec.battery():
        x = spec.make_sample(params, np.random.default_rng(1), np.float64, 1e-4).values["x"]
        ph, pw, s = params["pool_height"], params["pool_width"], params["stride"]
        for i in range(0, x.shape[2] - ph + 1):
            for j in range(0, x.shape[3] - pw + 1):
                window = np.sort(x[:, :, i:i + ph, j:j + pw].reshape(*x.shape[:2], -1), axis=-1)
                assert np.min(np.diff(window, axis=-1)) >= 2e-4


def test_kink_inputs_hold_exact_ties_and_zeros():
    relu = catalog.spec("relu")
    x = relu.make_sample(relu.resolve({"shape": (4, 50)}), np.random.default_rng(0), kinks=True).values["x"]
    assert (x == 0).sum() > 20
    pool = catalog.spec("pool")
    x = pool.make_sample(pool.resolve({}), np.random.default_rng(0), kinks=True).values["x"]
    windows = x.reshape(3, 2, 4, 2, 4, 2).transpose(0, 1, 2, 4, 3, 5).reshape(-1, 4)
    assert (np.sum(windows == windows.max(axis=1, keepdims=True), axis=1) > 1).sum() > 10


@pytest.mark.parametrize("layer, overrides, message", [
    ("conv", {"shape": (4, 3, 5)}, "conv shape must have 4 sizes"),
    ("conv", {"stride": 0}, "conv stride must be >= 1, got 0"),
    ("conv", {"pad": -1}, "conv pad must be >= 0, got -1"),
    ("conv", {"kernel": "9"}, "conv kernel 9x9 is larger than the padded input 7x7"),
    ("conv", {"shape": "4,3,a,5"}, "conv shape must be an integer"),
    ("pool", {"pool_height": 9}, "pool window 9x2 is larger than the input 8x8"),
    ("affine", {"shape": (5,)}, "affine shape must be N,D"),
    ("relu", {"shape": (2, 0)}, "relu shape must have positive sizes"),
])
def test_invalid_parameters_name_the_layer_and_the_value(layer, overrides, message):
    with pytest.raises(CnnCheckError, match=message):
        catalog.spec(layer).resolve(overrides)


def test_parameters_from_the_command_line_are_strings():
    params = catalog.spec("conv").resolve({"shape": "2,3,6,6", "kernel": "3", "stride": "1", "pad": "0"})
    assert params == {"shape": (2, 3, 6, 6), "filters": 2, "kernel": (3, 3), "stride": 1, "pad": 0}


def test_flop_and_byte_counts():
    conv = catalog.spec("conv")
    forward, backward = conv.flops(conv.resolve({}))
    assert forward == 2 * 4 * 2 * 3 * 3 * 3 * 3 * 3 and backward == 2 * forward
    relu = catalog.spec("relu")
    assert relu.bytes(relu.resolve({"shape": (10, 10)}), 8) == (1600, 2400)
    assert math.prod(catalog.spec("affine").shapes(catalog.spec("affine").resolve({}))["w"]) == 64


def test_register_adds_a_layer_once():
    spec = catalog.spec("relu")
    from dataclasses import replace

    extra = replace(spec, name="relu_copy")
    catalog.register(extra)
    try:
        assert catalog.spec("relu_copy") is extra
        with pytest.raises(ValueError, match="already in the catalogue"):
            catalog.register(extra)
    finally:
        catalog.unregister("relu_copy")
    with pytest.raises(KeyError):
        catalog.spec("relu_copy")
