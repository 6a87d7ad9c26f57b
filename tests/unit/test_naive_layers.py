"""cnncheck.layers.naive: hand-computed values, ties, dtypes, immutability and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from cnncheck.errors import CnnCheckError
from cnncheck.layers import naive
from cnncheck.layers.naive import (
    affine_backward,
    affine_forward,
    conv_backward_naive,
    conv_forward_naive,
    max_pool_backward_naive,
    max_pool_forward_naive,
    relu_backward,
    relu_forward,
)

POOL_2X2 = {"pool_height": 2, "pool_width": 2, "stride": 2}


def read_only(*arrays):
    for a in arrays:
        a.flags.writeable = False
    return arrays


# -- values -------------------------------------------------------------------
def test_affine_hand_computed():
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    w = np.array([[1.0, 0.0, -1.0], [2.0, 1.0, 0.5]])
    b = np.array([0.5, -1.0, 0.0])
    out, cache = affine_forward(x, w, b)
    np.testing.assert_allclose(out, [[5.5, 1.0, 0.0], [11.5, 3.0, -1.0]])
    dout = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    dx, dw, db = affine_backward(dout, cache)
    np.testing.assert_allclose(dx, [[1.0, 2.0], [-1.0, 1.5]])
    np.testing.assert_allclose(dw, [[1.0, 3.0, 3.0], [2.0, 4.0, 4.0]])
    np.testing.assert_allclose(db, [1.0, 1.0, 1.0])


def test_affine_flattens_and_restores_x_shape(rng):
    x = rng.standard_normal((2, 3, 4))
    w = rng.standard_normal((12, 5))
    out, cache = affine_forward(x, w, np.zeros(5))
    np.testing.assert_allclose(out, x.reshape(2, 12) @ w)
    dx, dw, db = affine_backward(np.ones((2, 5)), cache)
    assert dx.shape == (2, 3, 4) and dw.shape == (12, 5) and db.shape == (5,)


def test_relu_seed_example_and_kink():
    x = np.linspace(-0.3, 0.3, num=4).reshape(1, 1, 2, 2)
    out, cache = relu_forward(x)
    np.testing.assert_allclose(out, [[[[0.0, 0.0], [0.1, 0.3]]]])
    dx = relu_backward(np.full(x.shape, 2.0), cache)
    np.testing.assert_array_equal(dx, [[[[0.0, 0.0], [2.0, 2.0]]]])
    # gradient at exactly 0 is 0
    assert relu_backward(np.ones(1), relu_forward(np.zeros(1))[1])[0] == 0.0


def test_conv_hand_computed_sums_of_windows():
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    w = np.ones((1, 1, 2, 2))
    out, cache = conv_forward_naive(x, w, np.array([1.0]), {"stride": 1, "pad": 0})
    np.testing.assert_array_equal(out, [[[[0 + 1 + 3 + 4 + 1, 1 + 2 + 4 + 5 + 1], [3 + 4 + 6 + 7 + 1, 4 + 5 + 7 + 8 + 1]]]])
    dx, dw, db = conv_backward_naive(np.ones((1, 1, 2, 2)), cache)
    np.testing.assert_array_equal(dx[0, 0], [[1, 2, 1], [2, 4, 2], [1, 2, 1]])
    np.testing.assert_array_equal(dw[0, 0], [[8, 12], [20, 24]])
    np.testing.assert_array_equal(db, [4.0])


def test_conv_padding_and_stride_hand_computed():
    # 2x2 input, pad 1, 3x3 kernel of ones, stride 2: one output per padded 3x3 window.
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    out, _ = conv_forward_naive(x, np.ones((1, 1, 3, 3)), np.zeros(1), {"stride": 2, "pad": 1})
    # H_out = 1 + (2 + 2 - 3) // 2 = 1
    np.testing.assert_array_equal(out, [[[[10.0]]]])


def test_conv_seed_forward_shape():
    x_shape, w_shape = (2, 3, 4, 4), (3, 3, 4, 4)
    x = np.linspace(-0.1, 0.5, num=np.prod(x_shape)).reshape(x_shape)
    w = np.linspace(-0.2, 0.3, num=np.prod(w_shape)).reshape(w_shape)
    b = np.linspace(-0.1, 0.2, num=3)
    out, _ = conv_forward_naive(x, w, b, {"stride": 2, "pad": 1})
    assert out.shape == (2, 3, 2, 2)
    x_pad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    assert out[1, 2, 1, 0] == pytest.approx(np.sum(x_pad[1, :, 2:6, 0:4] * w[2]) + b[2])


def test_conv_uncovered_rows_get_zero_gradient(rng):
    # 6x6 input, 3x3 kernel, stride 2, no pad: the last row and column are never read.
    x = rng.standard_normal((1, 2, 6, 6))
    out, cache = conv_forward_naive(x, rng.standard_normal((2, 2, 3, 3)), np.zeros(2), {"stride": 2, "pad": 0})
    assert out.shape == (1, 2, 2, 2)
    dx, _, _ = conv_backward_naive(np.ones(out.shape), cache)
    assert np.all(dx[:, :, 5, :] == 0) and np.all(dx[:, :, :, 5] == 0)
    assert np.all(dx[:, :, :5, :5] != 0)


def test_max_pool_seed_forward_example():
    x = np.linspace(-0.3, 0.4, num=16).reshape(2, 2, 2, 2)
    out, _ = max_pool_forward_naive(x, {"pool_width": 2, "pool_height": 2, "stride": 2})
    np.testing.assert_allclose(out.ravel(), [-0.16, 0.02666667, 0.21333333, 0.4], atol=1e-8)


def test_max_pool_ties_go_to_the_first_maximum():
    x = np.array([[[[1.0, 3.0, 3.0, 0.0], [3.0, 3.0, 0.0, 0.0], [2.0, 2.0, 5.0, 5.0], [2.0, 2.0, 5.0, 5.0]]]])
    out, cache = max_pool_forward_naive(x, POOL_2X2)
    np.testing.assert_array_equal(out, [[[[3.0, 3.0], [2.0, 5.0]]]])
    dx = max_pool_backward_naive(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), cache)
    expected = np.zeros((4, 4))
    expected[0, 1] = 1.0  # first 3 in row-major order of window (0, 0)
    expected[0, 2] = 2.0
    expected[2, 0] = 3.0
    expected[2, 2] = 4.0
    np.testing.assert_array_equal(dx[0, 0], expected)


def test_max_pool_overlapping_windows_accumulate():
    x = np.array([[[[0.0, 9.0, 0.0], [0.0, 0.0, 0.0]]]])
    out, cache = max_pool_forward_naive(x, {"pool_height": 2, "pool_width": 2, "stride": 1})
    np.testing.assert_array_equal(out, [[[[9.0, 9.0]]]])
    dx = max_pool_backward_naive(np.array([[[[1.0, 2.0]]]]), cache)
    np.testing.assert_array_equal(dx, [[[[0.0, 3.0, 0.0], [0.0, 0.0, 0.0]]]])


# -- dtypes and immutability ------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_outputs_keep_the_input_dtype(rng, dtype):
    x = rng.standard_normal((2, 2, 5, 5)).astype(dtype)
    w = rng.standard_normal((3, 2, 3, 3)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    out, cache = conv_forward_naive(x, w, b, {"stride": 1, "pad": 1})
    assert out.dtype == dtype
    assert all(g.dtype == dtype for g in conv_backward_naive(np.ones(out.shape, dtype), cache))
    out, cache = max_pool_forward_naive(x, POOL_2X2)
    assert out.dtype == dtype and max_pool_backward_naive(np.ones(out.shape, dtype), cache).dtype == dtype
    out, cache = relu_forward(x)
    assert out.dtype == dtype and relu_backward(np.ones(x.shape, dtype), cache).dtype == dtype
    out, cache = affine_forward(x, rng.standard_normal((50, 2)).astype(dtype), b[:2])
    assert out.dtype == dtype
    assert all(g.dtype == dtype for g in affine_backward(np.ones(out.shape, dtype), cache))


def test_integer_and_mixed_inputs_compute_in_float64(rng):
    x = rng.integers(-3, 3, (1, 2, 4, 4))
    w = rng.standard_normal((1, 2, 2, 2)).astype(np.float32)
    out, _ = conv_forward_naive(x, w, np.zeros(1, np.float32), {"stride": 1, "pad": 0})
    assert out.dtype == np.float64
    assert max_pool_forward_naive(x, POOL_2X2)[0].dtype == np.float64


def test_layers_accept_read_only_inputs_and_do_not_mutate(rng):
    x = rng.standard_normal((2, 2, 5, 5))
    w = rng.standard_normal((3, 2, 3, 3))
    b = rng.standard_normal(3)
    dout = rng.standard_normal((2, 3, 3, 3))
    read_only(x, w, b, dout)
    out, cache = conv_forward_naive(x, w, b, {"stride": 2, "pad": 1})
    conv_backward_naive(dout, cache)
    dpool = rng.standard_normal((2, 2, 2, 2))
    read_only(dpool)
    out, cache = max_pool_forward_naive(x, POOL_2X2)
    max_pool_backward_naive(dpool, cache)
    out, cache = relu_forward(x)
    relu_backward(x, cache)
    x2 = x.reshape(2, 50)
    out, cache = affine_forward(x2, w.reshape(54)[:50].reshape(50, 1), b[:1])
    affine_backward(np.ones((2, 1)), cache)


# -- bad input --------------------------------------------------------------------
def _conv(x=(2, 3, 5, 5), w=(4, 3, 3, 3), b=(4,), stride=1, pad=1):
    return np.zeros(x), np.zeros(w), np.zeros(b), {"stride": stride, "pad": pad}


CONV_BAD = [
    (_conv(x=(3, 5, 5)), "conv x must have shape \\(N, C, H, W\\)"),
    (_conv(w=(4, 3, 3)), "conv w must have shape \\(F, C, HH, WW\\)"),
    (_conv(w=(4, 2, 3, 3)), "channel mismatch"),
    (_conv(b=(3,)), "conv b must have shape \\(4,\\)"),
    (_conv(b=(4, 1)), "conv b must have shape \\(4,\\)"),
    (_conv(w=(4, 3, 8, 3)), "larger than the padded input"),
    (_conv(stride=0), "stride must be >= 1"),
    (_conv(pad=-1), "pad must be >= 0"),
    (_conv(stride=1.5), "stride must be an integer"),
    ((np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 2, 2)), np.zeros(1), {"stride": 1}), "missing 'pad'"),
    ((np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 2, 2)), np.zeros(1), (1, 0)), "conv_param must be a dict"),
    ((np.array([[[["a"]]]], dtype=object), np.zeros((1, 1, 1, 1)), np.zeros(1), {"stride": 1, "pad": 0}),
     "numeric array"),
]

POOL_BAD = [
    ((np.zeros((3, 4, 4)), POOL_2X2), "pool x must have shape \\(N, C, H, W\\)"),
    ((np.zeros((1, 1, 4, 4)), {"pool_height": 5, "pool_width": 2, "stride": 1}), "larger than the input"),
    ((np.zeros((1, 1, 4, 4)), {"pool_height": 2, "pool_width": 5, "stride": 1}), "larger than the input"),
    ((np.zeros((1, 1, 4, 4)), {"pool_height": 2, "pool_width": 2, "stride": 0}), "stride must be >= 1"),
    ((np.zeros((1, 1, 4, 4)), {"pool_height": 0, "pool_width": 2, "stride": 1}), "at least 1x1"),
    ((np.zeros((1, 1, 4, 4)), {"pool_height": 2, "stride": 1}), "missing 'pool_width'"),
    ((np.zeros((1, 1, 4, 4)), None), "pool_param must be a dict"),
]


@pytest.mark.parametrize(("args", "message"), CONV_BAD)
def test_conv_bad_input(args, message):
    with pytest.raises(CnnCheckError, match=message):
        conv_forward_naive(*args)


@pytest.mark.parametrize(("args", "message"), POOL_BAD)
def test_pool_bad_input(args, message):
    with pytest.raises(CnnCheckError, match=message):
        max_pool_forward_naive(*args)


@pytest.mark.parametrize("dout_shape", [(2, 4, 5, 4), (2, 4, 5), (4, 5, 5, 2)])
def test_backward_refuses_dout_of_the_wrong_shape(dout_shape):
    _, cache = conv_forward_naive(*_conv())
    with pytest.raises(CnnCheckError, match=r"conv backward: dout has shape .* forward output had shape \(2, 4, 5, 5\)"):
        conv_backward_naive(np.zeros(dout_shape), cache)
    _, cache = max_pool_forward_naive(np.zeros((2, 3, 4, 4)), POOL_2X2)
    with pytest.raises(CnnCheckError, match="pool backward: dout has shape"):
        max_pool_backward_naive(np.zeros(dout_shape), cache)
    _, cache = relu_forward(np.zeros((2, 4, 5, 5)))
    with pytest.raises(CnnCheckError, match="relu backward: dout has shape"):
        relu_backward(np.zeros(dout_shape), cache)


def test_affine_bad_input():
    with pytest.raises(CnnCheckError, match="D=32"):
        affine_forward(np.zeros((4, 32)), np.zeros((31, 2)), np.zeros(2))
    with pytest.raises(CnnCheckError, match=r"affine b must have shape \(2,\)"):
        affine_forward(np.zeros((4, 32)), np.zeros((32, 2)), np.zeros(3))
    _, cache = affine_forward(np.zeros((4, 32)), np.zeros((32, 2)), np.zeros(2))
    with pytest.raises(CnnCheckError, match="affine backward: dout has shape"):
        affine_backward(np.zeros((4, 3)), cache)


def test_helpers():
    assert naive.as_float_array([1, 2], "x").dtype == np.float64
    f32 = np.zeros(2, np.float32)
    assert naive.as_float_array(f32, "x") is f32
    assert naive.common_dtype(f32, f32) == np.float32
    assert naive.common_dtype(f32, np.zeros(2)) == np.float64
    assert naive.conv_param_values({"stride": 2, "pad": 0}) == (2, 0)
    assert naive.pool_param_values({"pool_height": 3, "pool_width": 2, "stride": 1}) == (3, 2, 1)
