"""--sweep parsing, applying a value to a layer, and the log-log fit."""

from __future__ import annotations

import math

import pytest

from cnncheck import catalog
from cnncheck.errors import CnnCheckError
from cnncheck.results import BenchResult
from cnncheck.stats import Stats
from cnncheck.sweep import Sweep, apply_value, fit_exponent, fit_sweep, parse_sweep, sweep_names

AFFINE, RELU, CONV, POOL = (catalog.spec(name) for name in ("affine", "relu", "conv", "pool"))


@pytest.mark.parametrize("text, expected", [
    ("N=1,2,4,8", Sweep("N", (1, 2, 4, 8))),
    ("H=8, 16 ,32", Sweep("H", (8, 16, 32))),
    ("stride=1,2", Sweep("stride", (1, 2))),
    ("pad=0,1,2", Sweep("pad", (0, 1, 2))),
    ("pool-height=2,3", Sweep("pool_height", (2, 3))),
    ("K=3", Sweep("K", (3,))),
])
def test_parse(text, expected):
    assert parse_sweep(text) == expected


@pytest.mark.parametrize("text, fragment", [
    ("N", "PARAM=V1,V2"),
    ("=1,2", "PARAM=V1,V2"),
    ("N.1=1,2", "unknown parameter 'N.1'"),
    ("N=", "comma-separated integers"),
    ("N=1,,2", "comma-separated integers"),
    ("N=1,two", "must be integers"),
    ("N=1.5", "must be integers"),
    ("N=2,2", "given twice"),
])
def test_parse_errors(text, fragment):
    with pytest.raises(CnnCheckError, match=fragment.replace("(", r"\(").replace(")", r"\)")) as info:
        parse_sweep(text)
    message = str(info.value)
    assert "\n" not in message and "--sweep" not in message   # the CLI names the option once


def test_sweep_names_come_from_each_spec():
    assert sweep_names(CONV) == ("N", "C", "H", "W", "F", "K", "filters", "kernel", "stride", "pad")
    assert sweep_names(POOL) == ("N", "C", "H", "W", "K", "pool_height", "pool_width", "stride")
    assert sweep_names(AFFINE) == ("N", "D", "F", "filters")
    assert sweep_names(RELU) == ("N",)


def conv_params(**changes):
    return CONV.resolve(changes, purpose="bench")


def test_apply_dimensions_to_conv():
    params = conv_params()
    assert apply_value(CONV, params, "N", 8)["shape"] == (8, 3, 31, 31)
    assert apply_value(CONV, params, "C", 5)["shape"] == (100, 5, 31, 31)
    assert apply_value(CONV, params, "H", 15)["shape"] == (100, 3, 15, 31)
    assert apply_value(CONV, params, "W", 9)["shape"] == (100, 3, 31, 9)
    assert apply_value(CONV, params, "F", 7)["filters"] == 7
    assert apply_value(CONV, params, "K", 5)["kernel"] == (5, 5)
    assert apply_value(CONV, params, "kernel", 1)["kernel"] == (1, 1)
    assert apply_value(CONV, params, "stride", 1)["stride"] == 1
    assert apply_value(CONV, params, "pad", 0)["pad"] == 0
    assert params["shape"] == (100, 3, 31, 31)  # not modified


def test_apply_k_to_pool_sets_the_window():
    params = POOL.resolve({}, purpose="bench")
    swept = apply_value(POOL, params, "K", 4)
    assert (swept["pool_height"], swept["pool_width"]) == (4, 4)
    assert apply_value(POOL, params, "pool_height", 3)["pool_height"] == 3


def test_apply_d_to_affine():
    params = AFFINE.resolve({}, purpose="bench")
    assert apply_value(AFFINE, params, "D", 512)["shape"] == (100, 512)
    assert apply_value(AFFINE, params, "N", 4)["shape"] == (4, 3072)


@pytest.mark.parametrize("spec, param, takes", [
    (AFFINE, "H", "N, D, F, filters"),
    (AFFINE, "K", "N, D, F, filters"),
    (RELU, "F", "N"),
    (CONV, "D", "N, C, H, W, F, K, filters, kernel, stride, pad"),
    (POOL, "pad", "N, C, H, W, K, pool_height, pool_width, stride"),
    (POOL, "kernel", "N, C, H, W, K, pool_height, pool_width, stride"),
])
def test_apply_refuses_what_a_layer_lacks(spec, param, takes):
    params = spec.resolve({}, purpose="bench")
    with pytest.raises(CnnCheckError) as info:
        apply_value(spec, params, param, 4)
    assert str(info.value) == f"--sweep {param} does not apply to {spec.name}; it takes {takes}"


@pytest.mark.parametrize("param, value, fragment", [
    ("H", 2, "--sweep H=2 for conv: conv kernel 3x3 is larger than the padded input"),
    ("N", 0, "--sweep N=0 for conv: conv shape must have positive sizes"),
    ("pad", -1, "--sweep pad=-1 for conv: conv pad must be >= 0"),
    ("stride", 0, "--sweep stride=0 for conv: conv stride must be >= 1"),
])
def test_apply_reports_invalid_values_with_the_spec_message(param, value, fragment):
    params = conv_params(pad=0)
    with pytest.raises(CnnCheckError) as info:
        apply_value(CONV, params, param, value)
    assert str(info.value).startswith(fragment)


def test_fit_exponent_recovers_a_power_law():
    work = [1e6, 2e6, 4e6, 8e6]
    assert fit_exponent(work, [3e-3 * (w / 1e6) ** 1.5 for w in work]) == pytest.approx(1.5)
    assert fit_exponent(work, [2.0 * w for w in work]) == pytest.approx(1.0)
    assert fit_exponent(work, [0.5] * 4) == pytest.approx(0.0)


def test_fit_exponent_least_squares_by_hand():
    # natural-log points (0, 0), (1, 1), (2, 3): mean (1, 4/3), sxx = 2, sxy = 4/3 + 5/3 = 3 -> 1.5
    e = math.e
    assert fit_exponent([1, e, e ** 2], [1, e, e ** 3]) == pytest.approx(1.5)


def test_fit_exponent_needs_two_distinct_points():
    assert fit_exponent([5.0], [1.0]) is None
    assert fit_exponent([5.0, 5.0], [1.0, 2.0]) is None
    assert fit_exponent([1.0, 2.0], [1.0, None]) is None
    assert fit_exponent([1.0, 2.0, 4.0], [1.0, 0.0, 4.0]) == pytest.approx(1.0)  # the zero is left out


def row(value, median, flops=None, impl="fast", direction="forward", nbytes=None):
    return BenchResult("conv", direction, impl, stats=Stats.from_times([median]), flops=flops, bytes=nbytes,
                       sweep_value=value)


def test_fit_sweep_groups_rows_and_uses_flops():
    rows = [row(v, 1e-3 * v ** 2, flops=1000 * v) for v in (1, 2, 4)]
    rows += [row(v, 1e-3 * v, flops=1000 * v, impl="naive") for v in (1, 2, 4)]
    fits = fit_sweep(rows, "N")
    assert [(f.impl, f.direction) for f in fits] == [("fast", "forward"), ("naive", "forward")]
    assert fits[0].exponent == pytest.approx(2.0)
    assert fits[1].exponent == pytest.approx(1.0)
    assert fits[0].work == (1000.0, 2000.0, 4000.0) and fits[0].work_unit == "flop"
    assert fits[0].values == (1, 2, 4) and fits[0].param == "N"


def test_fit_sweep_falls_back_to_bytes_then_values():
    by_bytes = fit_sweep([row(v, v * 1e-3, nbytes=8 * v) for v in (1, 3)], "N")
    assert by_bytes[0].work_unit == "byte" and by_bytes[0].exponent == pytest.approx(1.0)
    by_value = fit_sweep([row(v, v ** 3 * 1e-3) for v in (1, 3)], "N")
    assert by_value[0].work_unit == "value" and by_value[0].exponent == pytest.approx(3.0)


def test_fit_sweep_skips_untimed_rows():
    rows = [row(1, 1e-3, flops=10), BenchResult("conv", "forward", "fast", sweep_value=2, flops=20),
            row(4, 4e-3, flops=40)]
    (fit,) = fit_sweep(rows, "N")
    assert fit.medians == (1e-3, None, 4e-3)
    assert fit.exponent == pytest.approx(1.0)
