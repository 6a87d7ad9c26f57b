"""Hypothesis properties of the layers: fast == naive, adjoint im2col, shapes, gradients.

The fast convolution is drawn on each of its routes (the direct kernel and
unfolding plus products) by moving ``fast.DIRECT_MAX_WINDOW`` for the call.

Geometry is drawn output-first (H_out, stride, pad, kernel, then the number
of trailing rows no window reaches) and H is derived from it, so every drawn
case is valid.  Bounds: float64 ``rel_error < 1e-9``; float32
``max|fast - naive| <= 1e-5 * max(max|naive|, terms)``, with ``terms`` the
size of the products summed into a value (a value that cancels to near zero
carries their rounding, in whatever order they are summed); pooling exact,
relu bit for bit.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cnncheck import im2col  # noqa: E402
from cnncheck.gradient_check import eval_numerical_gradient_array, rel_error  # noqa: E402
from cnncheck.kernels import _conv_numpy, _pool_numpy  # noqa: E402
from cnncheck.layers import fast  # noqa: E402
from cnncheck.layers import (  # noqa: E402
    conv_backward_fast,
    conv_backward_naive,
    conv_forward_fast,
    conv_forward_naive,
    max_pool_backward_fast,
    max_pool_backward_naive,
    max_pool_forward_fast,
    max_pool_forward_naive,
    relu_backward,
    relu_backward_fast,
    relu_forward,
    relu_forward_fast,
)

pytestmark = pytest.mark.slow

try:
    from cnncheck.kernels import _conv_cy, _pool_cy
except ImportError:
    _conv_cy = _pool_cy = None


def _size(draw, n_out, kernel, stride, pad):
    """Input size giving n_out windows of ``kernel`` with ``stride`` and ``pad``, plus uncovered rows."""
    rest = draw(st.integers(0, stride - 1))  # trailing rows no window reaches
    size = (n_out - 1) * stride + kernel - 2 * pad + rest
    if size < 1:  # padding alone covers the windows: add whole strides of input
        size += stride * ((1 - size + stride - 1) // stride)
    return size


@st.composite
def conv_geometry(draw):
    stride = draw(st.integers(1, 3))
    pad = draw(st.integers(0, 2))
    HH = draw(st.integers(1, 4))
    WW = draw(st.integers(1, 4))
    H = _size(draw, draw(st.integers(1, 4)), HH, stride, pad)
    W = _size(draw, draw(st.integers(1, 4)), WW, stride, pad)
    N = draw(st.integers(1, 3))
    C = draw(st.integers(1, 3))
    F = draw(st.integers(1, 3))
    return (N, C, H, W), (F, C, HH, WW), stride, pad


@st.composite
def pool_geometry(draw):
    if draw(st.booleans()):  # windows that tile the input: the reshape path
        k = draw(st.integers(1, 3))
        ph = pw = stride = k
        H = k * draw(st.integers(1, 4))
        W = k * draw(st.integers(1, 4))
    else:
        stride = draw(st.integers(1, 3))
        ph = draw(st.integers(1, 4))
        pw = draw(st.integers(1, 4))
        H = _size(draw, draw(st.integers(1, 4)), ph, stride, 0)
        W = _size(draw, draw(st.integers(1, 4)), pw, stride, 0)
    N = draw(st.integers(1, 3))
    C = draw(st.integers(1, 3))
    return (N, C, H, W), (ph, pw, stride)


dtypes = st.sampled_from([np.float64, np.float32])
routes = st.sampled_from(["direct", "unfold"])


@contextlib.contextmanager
def conv_route(route):
    """Send every fast convolution inside the block through ``route``."""
    saved = fast.DIRECT_MAX_WINDOW
    fast.DIRECT_MAX_WINDOW = 10**9 if route == "direct" else 0
    try:
        yield
    finally:
        fast.DIRECT_MAX_WINDOW = saved
layouts = st.sampled_from(["C", "strided", "fortran"])


def _layout(a, layout):
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "strided":
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
        big[..., 1::2] = a
        return big[..., 1::2]
    return a


def assert_matches(fast_value, naive_value, terms=0.0):
    """float64: rel_error < 1e-9; float32: max|fast - naive| <= 1e-5 * max(max|naive|, terms).

    ``terms`` is the size of the products summed into each value: a value
    that cancels to near zero carries the rounding of its terms, whichever
    order sums them.
    """
    assert fast_value.dtype == naive_value.dtype
    assert fast_value.shape == naive_value.shape
    if naive_value.dtype == np.float64:
        assert rel_error(fast_value, naive_value) < 1e-9
    else:
        scale = max(float(np.max(np.abs(naive_value), initial=0.0)), terms, 1e-30)
        assert float(np.max(np.abs(fast_value.astype(np.float64) - naive_value), initial=0.0)) <= 1e-5 * scale


def conv_terms(x, w, b, dout) -> tuple:
    """Sizes of the terms summed into out, dx, dw and db of a convolution."""
    sx, sw, sb, sd = (float(np.max(np.abs(a), initial=0.0)) for a in (x, w, b, dout))
    return sx * sw + sb, sd * sw, sd * sx, sd


@settings(max_examples=80)
@given(geometry=conv_geometry(), dtype=dtypes, layout=layouts, route=routes, seed=st.integers(0, 2**32 - 1))
def test_conv_fast_equals_naive(geometry, dtype, layout, route, seed):
    with conv_route(route):
        _check_conv_fast_equals_naive(geometry, dtype, layout, seed)


def _check_conv_fast_equals_naive(geometry, dtype, layout, seed):
    x_shape, w_shape, stride, pad = geometry
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    conv_param = {"stride": stride, "pad": pad}
    out_n, cache_n = conv_forward_naive(x, w, b, conv_param)
    out_f, cache_f = conv_forward_fast(_layout(x, layout), _layout(w, layout), b, conv_param)
    H, W = x_shape[2:]
    HH, WW = w_shape[2:]
    assert out_f.shape == (x_shape[0], w_shape[0], 1 + (H + 2 * pad - HH) // stride, 1 + (W + 2 * pad - WW) // stride)
    dout = rng.standard_normal(out_n.shape).astype(dtype)
    terms = conv_terms(x, w, b, dout)
    assert_matches(out_f, out_n, terms[0])
    grads_f = conv_backward_fast(_layout(dout, layout), cache_f)
    for g_f, g_n, t in zip(grads_f, conv_backward_naive(dout, cache_n), terms[1:]):
        assert_matches(g_f, g_n, t)


@settings(max_examples=80)
@given(geometry=pool_geometry(), dtype=dtypes, layout=layouts, ties=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_pool_fast_equals_naive_exactly(geometry, dtype, layout, ties, seed):
    x_shape, (ph, pw, stride) = geometry
    rng = np.random.default_rng(seed)
    x = (rng.integers(0, 3, x_shape) if ties else rng.standard_normal(x_shape)).astype(dtype)
    param = {"pool_height": ph, "pool_width": pw, "stride": stride}
    out_n, cache_n = max_pool_forward_naive(x, param)
    out_f, cache_f = max_pool_forward_fast(_layout(x, layout), param)
    H, W = x_shape[2:]
    assert out_f.shape == x_shape[:2] + (1 + (H - ph) // stride, 1 + (W - pw) // stride)
    assert out_f.dtype == dtype
    np.testing.assert_array_equal(out_f, out_n)
    dout = rng.standard_normal(out_n.shape).astype(dtype)
    dx_f = max_pool_backward_fast(_layout(dout, layout), cache_f)
    assert dx_f.dtype == dtype
    np.testing.assert_array_equal(dx_f, max_pool_backward_naive(dout, cache_n))


backends = st.sampled_from(["numpy", "cython"] if _conv_cy is not None else ["numpy"])


@settings(max_examples=80)
@given(geometry=conv_geometry(), backend=backends, seed=st.integers(0, 2**32 - 1))
def test_im2col_col2im_adjoint(geometry, backend, seed):
    x_shape, (_, _, HH, WW), stride, pad = geometry
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    y = rng.standard_normal(im2col.cols_shape(x_shape, HH, WW, stride, pad))
    lhs = np.vdot(im2col.im2col(x, HH, WW, stride, pad, backend=backend), y)
    rhs = np.vdot(x, im2col.col2im(y, x_shape, HH, WW, stride, pad, backend=backend))
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, np.abs(x).sum() * np.abs(y).max())


@pytest.mark.skipif(_conv_cy is None, reason="compiled extension cnncheck.kernels._conv_cy not built")
@settings(max_examples=60)
@given(geometry=conv_geometry(), dtype=dtypes, seed=st.integers(0, 2**32 - 1))
def test_compiled_and_numpy_kernels_agree_exactly(geometry, dtype, seed):
    x_shape, (_, _, HH, WW), stride, pad = geometry
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    shape = im2col.cols_shape(x_shape, HH, WW, stride, pad)
    cols_c, cols_n = np.empty(shape, dtype), np.empty(shape, dtype)
    _conv_cy.im2col(x, cols_c, HH, WW, stride, pad)
    _conv_numpy.im2col(x, cols_n, HH, WW, stride, pad)
    np.testing.assert_array_equal(cols_c, cols_n)
    y = rng.standard_normal(shape).astype(dtype)
    dx_c, dx_n = np.empty(x_shape, dtype), np.empty(x_shape, dtype)
    _conv_cy.col2im(y, dx_c, HH, WW, stride, pad)
    _conv_numpy.col2im(y, dx_n, HH, WW, stride, pad)
    np.testing.assert_array_equal(dx_c, dx_n)


@settings(max_examples=25)
@given(geometry=conv_geometry(), route=routes, seed=st.integers(0, 2**32 - 1))
def test_fast_conv_gradients_match_numerical(geometry, route, seed):
    with conv_route(route):
        _check_fast_conv_gradients_match_numerical(geometry, seed)


def _check_fast_conv_gradients_match_numerical(geometry, seed):
    x_shape, w_shape, stride, pad = geometry
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0])
    conv_param = {"stride": stride, "pad": pad}
    out, cache = conv_forward_fast(x, w, b, conv_param)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = conv_backward_fast(dout, cache)
    for analytic, arr, f in (
        (dx, x, lambda v: conv_forward_fast(v, w, b, conv_param)[0]),
        (dw, w, lambda v: conv_forward_fast(x, v, b, conv_param)[0]),
        (db, b, lambda v: conv_forward_fast(x, w, v, conv_param)[0]),
    ):
        numeric = eval_numerical_gradient_array(f, arr, dout)
        # A linear map: centred differences are exact up to rounding, so an
        # absolute bound relative to the gradient's scale is tight.
        assert np.max(np.abs(numeric - analytic)) <= 1e-7 * max(1.0, np.max(np.abs(analytic)))


@settings(max_examples=25)
@given(geometry=pool_geometry(), seed=st.integers(0, 2**32 - 1))
def test_fast_pool_gradient_matches_numerical_without_ties(geometry, seed):
    x_shape, (ph, pw, stride) = geometry
    rng = np.random.default_rng(seed)
    # Distinct values at least 1 apart: a step of 1e-5 never changes a window's maximum.
    x = rng.permutation(int(np.prod(x_shape))).reshape(x_shape).astype(np.float64)
    param = {"pool_height": ph, "pool_width": pw, "stride": stride}
    out, cache = max_pool_forward_fast(x, param)
    dout = rng.standard_normal(out.shape)
    numeric = eval_numerical_gradient_array(lambda v: max_pool_forward_fast(v, param)[0], x, dout)
    assert rel_error(max_pool_backward_fast(dout, cache), numeric) < 1e-7


@pytest.mark.skipif(_pool_cy is None, reason="compiled extension cnncheck.kernels._pool_cy not built")
@settings(max_examples=60)
@given(geometry=pool_geometry(), dtype=dtypes, values=st.sampled_from(["normal", "ties", "nan"]),
       threads=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_compiled_and_numpy_pool_kernels_agree_exactly(geometry, dtype, values, threads, seed):
    x_shape, (ph, pw, stride) = geometry
    rng = np.random.default_rng(seed)
    x = (rng.integers(0, 3, x_shape) if values != "normal" else rng.standard_normal(x_shape)).astype(dtype)
    if values == "nan":
        x[rng.random(x_shape) < 0.2] = np.nan
        x[rng.random(x_shape) < 0.1] = np.inf
        x[rng.random(x_shape) < 0.1] = -np.inf
    H_out, W_out = 1 + (x_shape[2] - ph) // stride, 1 + (x_shape[3] - pw) // stride
    out_shape = x_shape[:2] + (H_out, W_out)
    results = []
    for kernel, nt in ((_pool_cy, threads), (_pool_numpy, 1)):
        out = np.empty(out_shape, dtype)
        argmax = np.empty(out_shape, np.uint8)
        kernel.max_pool_forward(x, out, argmax, ph, pw, stride, nt)
        dout = np.random.default_rng(seed).standard_normal(out_shape).astype(dtype)
        dx = np.full(x_shape, np.nan, dtype)
        kernel.max_pool_backward(dout, argmax, dx, ph, pw, stride, nt)
        results.append((out, argmax, dx))
    for got, want in zip(*results):
        np.testing.assert_array_equal(got, want)
    # and both follow the naive rule (first maximum, first NaN)
    out_n, _ = max_pool_forward_naive(x, {"pool_height": ph, "pool_width": pw, "stride": stride})
    np.testing.assert_array_equal(results[0][0], out_n)


_SPECIAL = [0.0, -0.0, np.inf, -np.inf, np.nan]


def _bits(a):
    a = np.ascontiguousarray(a)
    return a.view(np.uint64 if a.dtype == np.float64 else np.uint32)


@settings(max_examples=60)
@given(shape=st.lists(st.integers(0, 6), min_size=1, max_size=4), dtype=dtypes, layout=layouts,
       special=st.floats(0, 0.5), seed=st.integers(0, 2**32 - 1))
def test_relu_fast_equals_reference_bit_for_bit(shape, dtype, layout, special, seed):
    """Any shape, layout and dtype, with signed zeros, infinities and NaN sprinkled in x and dout."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    for a in (x, dout):
        where = rng.random(a.shape) < special
        a[where] = rng.choice(np.array(_SPECIAL, dtype=dtype), size=int(where.sum()))
    xl, dl = _layout(x, layout), _layout(dout, layout)
    x_before, dout_before = _bits(x).copy(), _bits(dout).copy()
    out, cache = relu_forward_fast(xl)
    out_n, _ = relu_forward(x)
    assert out.dtype == dtype and out.shape == x.shape
    np.testing.assert_array_equal(_bits(out), _bits(out_n))
    dx = relu_backward_fast(dl, cache)
    np.testing.assert_array_equal(_bits(dx), _bits(relu_backward(dout, x)))
    passes = x > 0
    assert (dx[~passes] == 0).all() and not np.signbit(dx[~passes]).any()
    np.testing.assert_array_equal(dx[passes], dout[passes])
    np.testing.assert_array_equal(_bits(xl), x_before)
    np.testing.assert_array_equal(_bits(dl), dout_before)
