"""The built-in specs: the course notebook's defaults, validation, input generation and flop counts."""

from __future__ import annotations

import numpy as np
import pytest

from cnncheck.catalog import AFFINE, CONV, POOL, RELU, SPECS, builtin_registry
from cnncheck.errors import CnnCheckError


def test_gradcheck_defaults_reproduce_the_seed():
    assert AFFINE.resolve({}) == {"shape": (4, 32), "filters": 2}
    assert CONV.resolve({}) == {"shape": (4, 3, 5, 5), "filters": 2, "kernel": (3, 3), "stride": 2, "pad": 1}
    assert POOL.resolve({}) == {"shape": (3, 2, 8, 8), "pool_height": 2, "pool_width": 2, "stride": 2}
    assert np.prod(RELU.resolve({})["shape"]) >= 4
    assert CONV.output_shape(CONV.resolve({})) == (4, 2, 3, 3)
    assert POOL.output_shape(POOL.resolve({})) == (3, 2, 4, 4)


def test_bench_defaults_reproduce_the_seed_timing_cells():
    conv = CONV.resolve({}, purpose="bench")
    assert conv["shape"] == (100, 3, 31, 31) and conv["filters"] == 25
    assert CONV.output_shape(conv) == (100, 25, 16, 16)
    assert POOL.output_shape(POOL.resolve({}, purpose="bench")) == (100, 3, 16, 16)


def test_every_spec_names_its_gradients_and_seed_functions():
    assert [s.name for s in SPECS] == ["affine", "relu", "conv", "pool"]
    assert AFFINE.grads == CONV.grads == ("x", "w", "b")
    assert RELU.grads == POOL.grads == ("x",)
    assert CONV.seed_functions["fast"] == ("conv_forward_fast", "conv_backward_fast")
    assert POOL.seed_functions["naive"] == ("max_pool_forward_naive", "max_pool_backward_naive")
    assert RELU.has_kinks and POOL.has_kinks and not CONV.has_kinks


@pytest.mark.parametrize("spec,overrides,fragment", [
    (CONV, {"shape": (4, 3, 5)}, "conv --shape must be N,C,H,W, got 4,3,5"),
    (CONV, {"stride": 0}, "stride must be >= 1"),
    (CONV, {"pad": -1}, "pad must be >= 0"),
    (CONV, {"kernel": (7, 7), "pad": 0}, "kernel 7x7 is larger than the padded input 5x5"),
    (CONV, {"kernel": (1, 2, 3)}, "kernel must be K or HH,WW"),
    (POOL, {"pool_height": 9}, "pool window 9x2 is larger than the input 8x8"),
    (AFFINE, {"shape": (4,)}, "affine --shape must be N,D"),
    (AFFINE, {"filters": 0}, "filters must be >= 1"),
    (RELU, {"shape": (2, 0)}, "shape must have positive sizes"),
])
def test_invalid_parameters_raise(spec, overrides, fragment):
    with pytest.raises(CnnCheckError, match=fragment):
        spec.resolve(overrides)


def test_resolve_ignores_parameters_a_layer_does_not_take_and_square_kernels():
    assert RELU.resolve({"stride": 3, "shape": (2, 2)}) == {"shape": (2, 2)}
    assert CONV.resolve({"kernel": (2,)})["kernel"] == (2, 2)
    with pytest.raises(ValueError, match="purpose"):
        CONV.resolve({}, purpose="other")


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_inputs_have_the_right_shapes_and_dtype(spec, dtype):
    params = spec.resolve({})
    sample = spec.make_inputs(params, np.random.default_rng(0), dtype, 1e-4)
    assert list(sample.arrays) == list(spec.grads)
    assert all(a.dtype == dtype for a in sample.arrays.values())
    assert sample.dout.shape == spec.output_shape(params) and sample.dout.dtype == dtype
    again = spec.make_inputs(params, np.random.default_rng(0), dtype, 1e-4)
    assert all(np.array_equal(a, b) for a, b in zip(sample.arrays.values(), again.arrays.values()))


def test_pool_inputs_have_no_near_ties_in_any_window_and_stay_of_order_one():
    params = POOL.resolve({"shape": (2, 2, 9, 10), "pool_height": 2, "pool_width": 3, "stride": 1})
    x = POOL.make_inputs(params, np.random.default_rng(1), np.float64, 0.01).arrays["x"]
    for i in range(8):
        for j in range(8):
            window = np.sort(x[:, :, i:i + 2, j:j + 3].reshape(4, -1), axis=1)
            assert np.diff(window, axis=1).min() >= 0.02
    assert np.abs(x).max() < 5
    # The position of each window's maximum varies.
    argmax = {int(np.argmax(x[0, 0, i:i + 2, j:j + 3])) for i in range(0, 8, 2) for j in range(0, 8, 3)}
    assert len(argmax) > 1


def test_relu_inputs_keep_the_margin_and_margin_zero_is_plain_normal():
    params = RELU.resolve({"shape": (50, 50)})
    x = RELU.make_inputs(params, np.random.default_rng(0), np.float64, 0.05).arrays["x"]
    assert np.abs(x).min() >= 0.05
    plain = RELU.make_inputs(params, np.random.default_rng(0), np.float64, 0.0).arrays["x"]
    assert np.abs(plain).min() < 0.05


def test_flops_follow_the_formula():
    fwd, bwd = CONV.flops(CONV.resolve({}))
    assert fwd == 2 * 4 * 2 * 3 * 3 * 3 * 3 * 3 and bwd == 2 * fwd
    assert AFFINE.flops(AFFINE.resolve({}))[0] == 2 * 4 * 32 * 2
    assert RELU.flops(RELU.resolve({})) is None and RELU.bytes_moved(RELU.resolve({}), 8) is not None


def test_builtin_registry_has_naive_and_fast_for_conv_and_pool():
    registry = builtin_registry()
    assert {"naive", "fast"} <= {i.name for i in registry.impls("conv")}
    assert {"naive", "fast"} <= {i.name for i in registry.impls("pool")}
    assert registry.impl("affine", "numpy").backend == "numpy"
    assert registry.impl("conv", "fast").backend in ("cython", "numpy")
