"""cnncheck.layers.fast against the naive oracle: values, ties, dtypes, layouts, caches, errors.

Agreement bounds: float64 ``rel_error(fast, naive) < 1e-9``; float32
``max|fast - naive| <= 1e-5 * max|naive|`` (both sides round in float32, in a
different order, so elementwise relative error is meaningless near zero).
Pooling agrees exactly in both dtypes: same maxima, same argmax, same sums.
"""

from __future__ import annotations

import numpy as np
import pytest

from cnncheck import kernels
from cnncheck.errors import CnnCheckError
from cnncheck.kernels import _conv_numpy, _pool_numpy, _relu_numpy
from cnncheck.kernels import conv as kconv
from cnncheck.kernels import pool as kpool
from cnncheck.kernels import relu as krelu
from cnncheck.gradient_check import rel_error
from cnncheck.layers import fast, naive
from cnncheck.layers.fast import (
    conv_backward_fast,
    conv_forward_fast,
    max_pool_backward_fast,
    max_pool_forward_fast,
)
from cnncheck.layers.naive import (
    conv_backward_naive,
    conv_forward_naive,
    max_pool_backward_naive,
    max_pool_forward_naive,
)

try:
    from cnncheck.kernels import _relu_cy
except ImportError:
    _relu_cy = None

needs_cython = pytest.mark.skipif(_relu_cy is None, reason="compiled extensions cnncheck.kernels._*_cy not built")


def assert_matches(fast_value, naive_value):
    assert fast_value.dtype == naive_value.dtype
    assert fast_value.shape == naive_value.shape
    if naive_value.dtype == np.float64:
        assert rel_error(fast_value, naive_value) < 1e-9
    else:
        scale = max(float(np.max(np.abs(naive_value), initial=0.0)), 1e-30)
        assert float(np.max(np.abs(fast_value.astype(np.float64) - naive_value), initial=0.0)) <= 1e-5 * scale


CONV_CASES = [
    # (N, C, H, W), (F, HH, WW), stride, pad
    ((4, 3, 5, 5), (2, 3, 3), 2, 1),  # the course notebook's gradient-check case
    ((2, 3, 7, 6), (4, 3, 2), 2, 1),  # non-square kernel, odd sizes
    ((1, 1, 5, 5), (1, 1, 1), 1, 0),  # N = C = F = 1, 1x1 kernel
    ((3, 2, 9, 8), (3, 4, 3), 3, 2),  # stride 3, trailing rows no window reaches
    ((2, 2, 7, 7), (2, 2, 2), 3, 0),  # stride larger than the kernel
    ((2, 3, 4, 4), (3, 4, 4), 2, 1),  # the course notebook's forward example geometry
    ((1, 2, 2, 3), (2, 4, 5), 1, 2),  # kernel larger than the unpadded input
]


def conv_inputs(rng, case, dtype=np.float64):
    x_shape, (F, HH, WW), stride, pad = case
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((F, x_shape[1], HH, WW)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    return x, w, b, {"stride": stride, "pad": pad}


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_conv_fast_matches_naive(rng, case, dtype):
    x, w, b, conv_param = conv_inputs(rng, case, dtype)
    out_n, cache_n = conv_forward_naive(x, w, b, conv_param)
    out_f, cache_f = conv_forward_fast(x, w, b, conv_param)
    assert_matches(out_f, out_n)
    dout = rng.standard_normal(out_n.shape).astype(dtype)
    for g_f, g_n in zip(conv_backward_fast(dout, cache_f), conv_backward_naive(dout, cache_n)):
        assert_matches(g_f, g_n)


def test_conv_output_size_formula(rng):
    x, w, b, conv_param = conv_inputs(rng, ((1, 1, 10, 7), (1, 3, 2), 3, 1))
    out, _ = conv_forward_fast(x, w, b, conv_param)
    assert out.shape == (1, 1, 1 + (10 + 2 - 3) // 3, 1 + (7 + 2 - 2) // 3)


def test_conv_mixed_and_integer_dtypes(rng):
    x, w, b, conv_param = conv_inputs(rng, CONV_CASES[0], np.float32)
    out, cache = conv_forward_fast(x, w.astype(np.float64), b, conv_param)
    assert out.dtype == np.float64
    assert all(g.dtype == np.float64 for g in conv_backward_fast(np.ones(out.shape, np.float32), cache))
    xi = rng.integers(-2, 3, x.shape)
    out_n, _ = conv_forward_naive(xi, w, b, conv_param)
    out_f, _ = conv_forward_fast(xi, w, b, conv_param)
    assert_matches(out_f, out_n)


def _non_contiguous(a):
    """The same values in a strided view (every other element of a larger array)."""
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    big[..., ::2] = a
    view = big[..., ::2]
    assert not view.flags.c_contiguous
    return view


@pytest.mark.parametrize("layout", ["strided", "fortran"])
def test_conv_non_contiguous_inputs(rng, layout):
    x, w, b, conv_param = conv_inputs(rng, CONV_CASES[1])
    convert = _non_contiguous if layout == "strided" else np.asfortranarray
    out_n, cache_n = conv_forward_naive(x, w, b, conv_param)
    dout = rng.standard_normal(out_n.shape)
    out_f, cache_f = conv_forward_fast(convert(x), convert(w), convert(b), conv_param)
    assert_matches(out_f, out_n)
    for g_f, g_n in zip(conv_backward_fast(convert(dout), cache_f), conv_backward_naive(dout, cache_n)):
        assert_matches(g_f, g_n)


def test_conv_does_not_modify_inputs_or_cache(rng):
    x, w, b, conv_param = conv_inputs(rng, CONV_CASES[0])
    copies = [a.copy() for a in (x, w, b)]
    for a in (x, w, b):
        a.flags.writeable = False
    param_copy = dict(conv_param)
    out, cache = conv_forward_fast(x, w, b, conv_param)
    xc = cache[4]
    assert not xc.flags.writeable
    xc_copy = xc.copy()
    dout = rng.standard_normal(out.shape)
    dout.flags.writeable = False
    dout_copy = dout.copy()
    first = conv_backward_fast(dout, cache)
    second = conv_backward_fast(dout, cache)
    for got, want in zip((x, w, b, dout, xc), (*copies, dout_copy, xc_copy)):
        np.testing.assert_array_equal(got, want)
    assert conv_param == param_copy
    assert all(c is o for c, o in zip(cache[:4], (x, w, b, conv_param)))
    for g1, g2 in zip(first, second):
        np.testing.assert_array_equal(g1, g2)


def test_conv_cache_contents(rng):
    x, w, b, conv_param = conv_inputs(rng, CONV_CASES[1])
    _, cache = conv_forward_fast(x, w, b, conv_param)
    cx, cw, cb, cparam, xc = cache
    assert cx is x and cw is w and cb is b and cparam is conv_param
    # A C-contiguous float64 x is kept as a read-only view of its own memory, not copied.
    assert np.shares_memory(xc, x) and not xc.flags.writeable and x.flags.writeable
    # Other layouts and dtypes are converted once, in the forward pass.
    _, cache = conv_forward_fast(np.asfortranarray(x).astype(np.float32), w, b, conv_param)
    xc = cache[4]
    assert xc.dtype == np.float64 and xc.flags.c_contiguous and not xc.flags.writeable
    np.testing.assert_array_equal(xc, x.astype(np.float32))


@needs_cython
@pytest.mark.parametrize("route", ["direct", "unfold"])
def test_conv_numpy_fallback_gives_the_same_results(rng, monkeypatch, route):
    x, w, b, conv_param = conv_inputs(rng, CONV_CASES[3])
    if route == "unfold":
        monkeypatch.setattr(fast, "DIRECT_MAX_WINDOW", 0)
    out_c, cache_c = conv_forward_fast(x, w, b, conv_param)
    dout = rng.standard_normal(out_c.shape)
    grads_c = conv_backward_fast(dout, cache_c)
    monkeypatch.setitem(kernels._MODULES, "conv", _conv_numpy)
    out_n, cache_n = conv_forward_fast(x, w, b, conv_param)
    grads_n = conv_backward_fast(dout, cache_n)
    # Unfolding is exact in both; the direct kernels sum in another order than numpy's products.
    check = np.testing.assert_array_equal if route == "unfold" else assert_matches
    check(out_c, out_n)
    for g_c, g_n in zip(grads_c, grads_n):
        check(g_c, g_n)


def test_conv_routes_follow_the_window_size():
    assert fast._route(25, 3, 3, 3, 2, 1) == "direct"  # the course notebook's 3x3x3 window, 25 filters
    assert fast._route(64, 64, 3, 3, 1, 1) == "unfold"  # the large benchmark case
    assert fast._route(25, 16, 3, 3, 1, 1) == "direct"  # K = 144 with few filters
    assert fast._route(64, 16, 3, 3, 1, 1) == "unfold"  # ... but not with many
    assert fast._route(64, 4, 3, 3, 1, 1) == "direct"
    assert fast._route(8, 17, 3, 3, 1, 1) == "unfold"  # K = 153
    assert fast._route(64, 64, 1, 1, 1, 0) == "pointwise"
    assert fast._route(1, 1, 1, 1, 2, 0) == "direct"  # 1x1 with stride: not pointwise


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("limit", [0, 10**6])
def test_conv_both_routes_match_naive(rng, monkeypatch, dtype, limit):
    monkeypatch.setattr(fast, "DIRECT_MAX_WINDOW", limit)  # 0: everything unfolds; 10**6: everything direct
    for case in CONV_CASES:
        x, w, b, conv_param = conv_inputs(rng, case, dtype)
        out_n, cache_n = conv_forward_naive(x, w, b, conv_param)
        out_f, cache_f = conv_forward_fast(x, w, b, conv_param)
        assert_matches(out_f, out_n)
        dout = rng.standard_normal(out_n.shape).astype(dtype)
        for g_f, g_n in zip(conv_backward_fast(dout, cache_f), conv_backward_naive(dout, cache_n)):
            assert_matches(g_f, g_n)


def test_backend_constant():
    assert fast.BACKEND == kernels.BACKEND
    assert fast.BACKEND in ("cython", "numpy")


# -- pooling -------------------------------------------------------------------
POOL_CASES = [
    # (N, C, H, W), (pool_height, pool_width, stride)
    ((3, 2, 8, 8), (2, 2, 2)),  # tiling: the reshape path
    ((2, 3, 9, 6), (3, 3, 3)),  # tiling with 3x3 windows
    ((2, 2, 9, 9), (2, 2, 2)),  # 2x2 stride 2 that does not tile: general path, last row unused
    ((2, 2, 7, 8), (3, 2, 1)),  # overlapping, non-square
    ((1, 1, 5, 7), (2, 3, 3)),  # stride larger than the window height
    ((1, 1, 4, 4), (4, 4, 1)),  # one window over everything
    ((2, 1, 6, 5), (1, 1, 2)),  # 1x1 windows
]


def pool_param(ph, pw, stride):
    return {"pool_height": ph, "pool_width": pw, "stride": stride}


@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("values", ["normal", "ties"])
def test_pool_fast_matches_naive_exactly(rng, case, dtype, values):
    shape, (ph, pw, stride) = case
    if values == "ties":
        x = rng.integers(0, 3, shape).astype(dtype)  # many equal maxima per window
    else:
        x = rng.standard_normal(shape).astype(dtype)
    param = pool_param(ph, pw, stride)
    out_n, cache_n = max_pool_forward_naive(x, param)
    out_f, cache_f = max_pool_forward_fast(x, param)
    assert out_f.dtype == dtype
    np.testing.assert_array_equal(out_f, out_n)
    dout = rng.standard_normal(out_n.shape).astype(dtype)
    dx_f = max_pool_backward_fast(dout, cache_f)
    assert dx_f.dtype == dtype
    np.testing.assert_array_equal(dx_f, max_pool_backward_naive(dout, cache_n))


def test_pool_numpy_fallback_gives_the_same_results(rng, monkeypatch):
    shape, (ph, pw, stride) = POOL_CASES[3]
    x = rng.integers(0, 3, shape).astype(np.float64)  # ties
    param = pool_param(ph, pw, stride)
    out, cache = max_pool_forward_fast(x, param)
    dout = rng.standard_normal(out.shape)
    dx = max_pool_backward_fast(dout, cache)
    monkeypatch.setitem(kernels._MODULES, "pool", _pool_numpy)
    out_n, cache_n = max_pool_forward_fast(x, param)
    np.testing.assert_array_equal(out_n, out)
    np.testing.assert_array_equal(cache_n[2], cache[2])
    np.testing.assert_array_equal(max_pool_backward_fast(dout, cache_n), dx)


def test_pool_all_equal_window_sends_everything_to_the_first_element():
    x = np.ones((1, 1, 4, 4))
    out, cache = max_pool_forward_fast(x, pool_param(2, 2, 2))
    dx = max_pool_backward_fast(np.full((1, 1, 2, 2), 5.0), cache)
    expected = np.zeros((4, 4))
    expected[::2, ::2] = 5.0
    np.testing.assert_array_equal(dx[0, 0], expected)
    # overlapping windows on a constant input: each window picks its top-left pixel
    out, cache = max_pool_forward_fast(np.ones((1, 1, 3, 3)), pool_param(2, 2, 1))
    dx = max_pool_backward_fast(np.ones((1, 1, 2, 2)), cache)
    np.testing.assert_array_equal(dx[0, 0], [[1, 1, 0], [1, 1, 0], [0, 0, 0]])


def test_pool_cache_holds_the_argmax(rng):
    x = np.array([[[[1.0, 5.0, 2.0, 2.0], [0.0, 5.0, 2.0, 2.0]]]])
    _, cache = max_pool_forward_fast(x, pool_param(2, 2, 2))
    cx, cparam, argmax = cache
    assert cx is x and cparam == pool_param(2, 2, 2)
    np.testing.assert_array_equal(argmax, [[[[1, 0]]]])
    assert argmax.dtype.kind == "u" and not argmax.flags.writeable


@pytest.mark.parametrize("case", [POOL_CASES[0], POOL_CASES[3]])
def test_pool_nan_follows_naive(case):
    shape, (ph, pw, stride) = case
    x = np.arange(np.prod(shape), dtype=np.float64).reshape(shape) % 5
    x[0, 0, 1, 1] = np.nan
    x[0, 0, 0, 1] = np.nan
    param = pool_param(ph, pw, stride)
    out_n, cache_n = max_pool_forward_naive(x, param)
    out_f, cache_f = max_pool_forward_fast(x, param)
    np.testing.assert_array_equal(out_f, out_n)  # NaN in the same places
    dout = np.ones(out_n.shape)
    np.testing.assert_array_equal(max_pool_backward_fast(dout, cache_f), max_pool_backward_naive(dout, cache_n))


@pytest.mark.parametrize("case", [POOL_CASES[0], POOL_CASES[3]])
def test_pool_non_finite_dout_is_routed_not_spread(rng, case):
    shape, (ph, pw, stride) = case
    x = rng.standard_normal(shape)
    param = pool_param(ph, pw, stride)
    _, cache_n = max_pool_forward_naive(x, param)
    _, cache_f = max_pool_forward_fast(x, param)
    dout = rng.standard_normal(cache_f[2].shape)
    dout[0, 0, 0, 0] = np.inf
    np.testing.assert_array_equal(max_pool_backward_fast(dout, cache_f), max_pool_backward_naive(dout, cache_n))


@pytest.mark.parametrize("layout", ["strided", "fortran"])
def test_pool_non_contiguous_inputs(rng, layout):
    convert = _non_contiguous if layout == "strided" else np.asfortranarray
    for shape, (ph, pw, stride) in POOL_CASES[:4]:
        x = rng.standard_normal(shape)
        param = pool_param(ph, pw, stride)
        out_n, cache_n = max_pool_forward_naive(x, param)
        out_f, cache_f = max_pool_forward_fast(convert(x), param)
        np.testing.assert_array_equal(out_f, out_n)
        dout = rng.standard_normal(out_n.shape)
        np.testing.assert_array_equal(max_pool_backward_fast(convert(dout), cache_f),
                                      max_pool_backward_naive(dout, cache_n))


def test_pool_does_not_modify_inputs_or_cache(rng):
    for shape, (ph, pw, stride) in POOL_CASES[:4]:
        x = rng.standard_normal(shape)
        x_copy = x.copy()
        x.flags.writeable = False
        out, cache = max_pool_forward_fast(x, pool_param(ph, pw, stride))
        argmax_copy = cache[2].copy()
        dout = rng.standard_normal(out.shape)
        dout_copy = dout.copy()
        dout.flags.writeable = False
        max_pool_backward_fast(dout, cache)
        np.testing.assert_array_equal(x, x_copy)
        np.testing.assert_array_equal(dout, dout_copy)
        np.testing.assert_array_equal(cache[2], argmax_copy)


def test_large_windows_use_a_wider_argmax_type(rng):
    x = rng.standard_normal((1, 1, 17, 17))
    out, cache = max_pool_forward_fast(x, pool_param(17, 17, 1))
    assert cache[2].dtype.itemsize >= 2
    assert out[0, 0, 0, 0] == x.max()
    dx = max_pool_backward_fast(np.ones((1, 1, 1, 1)), cache)
    assert dx.ravel()[np.argmax(x)] == 1.0 and dx.sum() == 1.0


# -- bad input: same errors as the naive layers ---------------------------------
def _raised(call, *args):
    with pytest.raises(ValueError) as info:
        call(*args)
    assert isinstance(info.value, CnnCheckError)
    assert str(info.value)
    return str(info.value)


def _conv(x=(2, 3, 5, 5), w=(4, 3, 3, 3), b=(4,), stride=1, pad=1):
    return np.zeros(x), np.zeros(w), np.zeros(b), {"stride": stride, "pad": pad}


@pytest.mark.parametrize(
    "args",
    [
        _conv(x=(3, 5, 5)),
        _conv(w=(4, 3, 3)),
        _conv(w=(4, 2, 3, 3)),
        _conv(b=(3,)),
        _conv(w=(4, 3, 8, 8)),
        _conv(stride=0),
        _conv(pad=-2),
        (np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 2, 2)), np.zeros(1), {"pad": 0}),
    ],
    ids=["x-ndim", "w-ndim", "channels", "b-length", "kernel-too-large", "stride", "pad", "missing-key"],
)
def test_conv_bad_input_same_message_as_naive(args):
    assert _raised(conv_forward_fast, *args) == _raised(conv_forward_naive, *args)


@pytest.mark.parametrize(
    "args",
    [
        (np.zeros((3, 4, 4)), pool_param(2, 2, 2)),
        (np.zeros((1, 1, 4, 4)), pool_param(5, 2, 1)),
        (np.zeros((1, 1, 4, 4)), pool_param(2, 2, 0)),
        (np.zeros((1, 1, 4, 4)), pool_param(0, 2, 1)),
        (np.zeros((1, 1, 4, 4)), {"pool_height": 2}),
    ],
    ids=["x-ndim", "window-too-large", "stride", "window-zero", "missing-key"],
)
def test_pool_bad_input_same_message_as_naive(args):
    assert _raised(max_pool_forward_fast, *args) == _raised(max_pool_forward_naive, *args)


@pytest.mark.parametrize("dout_shape", [(2, 4, 5, 4), (2, 4, 5), (2, 4, 5, 5, 1)])
def test_backward_refuses_dout_of_the_wrong_shape(dout_shape):
    _, cache = conv_forward_fast(*_conv())
    message = _raised(conv_backward_fast, np.zeros(dout_shape), cache)
    assert "conv backward: dout has shape" in message
    _, cache = max_pool_forward_fast(np.zeros((2, 4, 10, 10)), pool_param(2, 2, 2))
    message = _raised(max_pool_backward_fast, np.zeros(dout_shape), cache)
    assert "pool backward: dout has shape" in message


def test_backward_refuses_a_foreign_cache(rng):
    x, w, b, conv_param = conv_inputs(rng, CONV_CASES[0])
    out, naive_cache = conv_forward_naive(x, w, b, conv_param)
    dout = np.zeros(out.shape)
    assert "cache must be the tuple (x, w, b, conv_param, xc)" in _raised(conv_backward_fast, dout, naive_cache)
    _, cache = conv_forward_fast(x, w, b, conv_param)
    bad = cache[:4] + (cache[4][:, :, :-1],)
    assert "xc must be a C-contiguous array of shape" in _raised(conv_backward_fast, dout, bad)
    bad = cache[:4] + (cache[4].astype(np.float32),)
    assert "dtype float64" in _raised(conv_backward_fast, dout, bad)
    bad = cache[:4] + (np.asfortranarray(cache[4]),)
    assert "C-contiguous" in _raised(conv_backward_fast, dout, bad)
    bad = cache[:3] + ({"stride": 1, "pad": 1}, cache[4])
    assert "dout has shape" in _raised(conv_backward_fast, dout, bad)
    x = rng.standard_normal((1, 1, 4, 4))
    out, cache = max_pool_forward_fast(x, pool_param(2, 2, 2))
    dout = np.zeros(out.shape)
    assert "cache must be the tuple (x, pool_param, argmax)" in _raised(max_pool_backward_fast, dout, cache[:2])
    bad = cache[:2] + (cache[2].astype(np.float64),)
    assert "argmax must be an integer array" in _raised(max_pool_backward_fast, dout, bad)
    bad = cache[:2] + (cache[2][..., :1],)
    assert "argmax must be an integer array" in _raised(max_pool_backward_fast, dout, bad)
    # Offsets outside the 2x2 window would make the scatter write out of bounds.
    for offsets in (np.full((1, 1, 2, 2), 4, dtype=np.uint8), np.full((1, 1, 2, 2), -1, dtype=np.int64)):
        bad = cache[:2] + (offsets,)
        assert "offsets outside [0, 4)" in _raised(max_pool_backward_fast, dout, bad)
    # Any integer type holding valid offsets is accepted.
    good = cache[:2] + (cache[2].astype(np.int64),)
    np.testing.assert_array_equal(max_pool_backward_fast(dout + 1, good), max_pool_backward_fast(dout + 1, cache))


def test_naive_helpers_are_shared():
    assert fast.as_float_array is naive.as_float_array
    assert fast.conv_param_values is naive.conv_param_values


# -- workspace, chunking, threads -------------------------------------------------
def _conv_run(x, w, b, conv_param, dout):
    out, cache = conv_forward_fast(x, w, b, conv_param)
    return (out, *conv_backward_fast(dout, cache))


def _pool_run(x, param, dout):
    out, cache = max_pool_forward_fast(x, param)
    return out, max_pool_backward_fast(dout, cache)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("route_limit", [0, 10**6])
def test_conv_chunks_and_threads_do_not_change_results(rng, monkeypatch, dtype, route_limit):
    monkeypatch.setattr(fast, "DIRECT_MAX_WINDOW", route_limit)  # 0: unfolding, 10**6: direct
    x, w, b, conv_param = conv_inputs(rng, ((5, 3, 9, 8), (4, 3, 3), 2, 1), dtype)
    dout = rng.standard_normal((5, 4, 5, 4)).astype(dtype)
    monkeypatch.setattr(fast, "_team", lambda limit: 1)
    whole = _conv_run(x, w, b, conv_param, dout)
    monkeypatch.setattr(fast, "_CHUNK_BYTES", 1)  # one image per chunk
    monkeypatch.setattr(fast, "_BLOCK_COLUMNS", 7)  # three blocks of columns per image
    # Chunks and blocks change how the products group the columns; dw and db sum block by block.
    alone = _conv_run(x, w, b, conv_param, dout)
    for got, want in zip(alone, whole):
        assert_matches(got, want)
    for team in (2, 3):  # the same blocks shared among threads: the same bits
        monkeypatch.setattr(fast, "_team", lambda limit, team=team: team)
        for got, want in zip(_conv_run(x, w, b, conv_param, dout), alone):
            np.testing.assert_array_equal(got, want)


def test_pointwise_products_shared_among_threads_give_the_same_bits(rng, monkeypatch):
    x, w, b, conv_param = conv_inputs(rng, ((6, 4, 5, 6), (5, 1, 1), 1, 0))
    dout = rng.standard_normal((6, 5, 5, 6))
    monkeypatch.setattr(fast, "_team", lambda limit: 1)
    alone = _conv_run(x, w, b, conv_param, dout)
    monkeypatch.setattr(fast, "_team", lambda limit: 2)
    for got, want in zip(_conv_run(x, w, b, conv_param, dout), alone):
        np.testing.assert_array_equal(got, want)


def test_blas_runs_on_one_thread_inside_the_layer_and_gets_its_limit_back(rng, monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not fast._blas_libraries():
        pytest.skip("no BLAS visible to threadpoolctl")
    seen = []
    real = kernels.share
    monkeypatch.setattr(kernels, "share", lambda tasks, team: (seen.append([lib.num_threads for lib in
                                                                            fast._blas_libraries()]),
                                                                real(tasks, team)))
    monkeypatch.setattr(fast, "DIRECT_MAX_WINDOW", 0)
    x, w, b, conv_param = conv_inputs(rng, CONV_CASES[0])
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = [lib.num_threads for lib in fast._blas_libraries()]
        out, cache = conv_forward_fast(x, w, b, conv_param)
        conv_backward_fast(np.ones(out.shape), cache)
        assert [lib.num_threads for lib in fast._blas_libraries()] == before
    assert seen and all(counts == [1] * len(counts) for counts in seen)


@pytest.mark.skipif(kernels.BACKEND != "cython", reason="the numpy fallback runs on one thread")
@pytest.mark.parametrize("direct_limit", [0, 10**6])
@pytest.mark.parametrize("idle", [3, 1])  # 3: one call on OpenMP threads, 1: pieces shared among threads
def test_parallel_kernels_give_the_serial_results(rng, monkeypatch, direct_limit, idle):
    monkeypatch.setattr(fast, "DIRECT_MAX_WINDOW", direct_limit)
    x, w, b, conv_param = conv_inputs(rng, ((9, 4, 11, 10), (5, 3, 2), 1, 1))
    dout = rng.standard_normal((9, 5, 11, 11))
    px = rng.integers(0, 3, (3, 4, 10, 9)).astype(np.float64)  # ties
    param = pool_param(3, 2, 2)
    pdout = rng.standard_normal((3, 4, 4, 4))
    rx = rng.standard_normal((3, 4, 10, 9))
    runs = []
    for limit in (1, 3):
        monkeypatch.setattr(kernels, "thread_limit", lambda limit=limit: limit)
        monkeypatch.setattr(kernels, "idle_cpus", lambda: idle)
        monkeypatch.setattr(kconv, "UNFOLD_ELEMENTS_PER_THREAD", 1)
        monkeypatch.setattr(kconv, "DIRECT_MACS_PER_THREAD", 1)
        monkeypatch.setattr(kpool, "ELEMENTS_PER_THREAD", 1)
        monkeypatch.setattr(krelu, "BYTES_PER_THREAD", 1)
        for module, name in ((kpool, "SHARE_FROM"), (krelu, "SHARE_FROM"), (kconv, "UNFOLD_SHARE_FROM")):
            monkeypatch.setattr(module, name, 0)
        out, cache = fast.relu_forward_fast(rx)
        runs.append(_conv_run(x, w, b, conv_param, dout) + _pool_run(px, param, pdout)
                    + (out, fast.relu_backward_fast(rx, cache)))
    for got, want in zip(runs[1], runs[0]):
        np.testing.assert_array_equal(got, want)


def test_layers_are_safe_to_call_from_two_threads(rng, monkeypatch):
    import threading

    # Small chunks: each call goes through its thread's workspace many times.
    monkeypatch.setattr(fast, "_CHUNK_BYTES", 1)
    jobs = []
    for k, case in enumerate([((6, 3, 9, 9), (4, 3, 3), 1, 1), ((5, 2, 12, 7), (3, 2, 4), 2, 2)]):
        dtype = (np.float64, np.float32)[k]
        x, w, b, conv_param = conv_inputs(rng, case, dtype)
        dout = rng.standard_normal(conv_forward_fast(x, w, b, conv_param)[0].shape).astype(dtype)
        px = rng.standard_normal((4, 3, 8 + 2 * k, 8)).astype(dtype)
        param = pool_param(2, 2, 2) if k == 0 else pool_param(3, 2, 1)
        pdout = rng.standard_normal(max_pool_forward_fast(px, param)[0].shape).astype(dtype)
        jobs.append(((x, w, b, conv_param, dout), (px, param, pdout)))
    serial = [_conv_run(*c) + _pool_run(*p) for c, p in jobs]
    results = [[] for _ in jobs]
    start = threading.Barrier(len(jobs))

    def work(i):
        start.wait()
        conv_args, pool_args = jobs[i]
        for _ in range(30):
            results[i].append(_conv_run(*conv_args) + _pool_run(*pool_args))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, runs in enumerate(results):
        assert len(runs) == 30
        for run in runs:
            for got, want in zip(run, serial[i]):
                np.testing.assert_array_equal(got, want)


def test_pointwise_kernel_path(rng):
    # A 1x1 kernel with stride 1 and no padding skips the unfolding.
    for dtype in (np.float64, np.float32):
        x, w, b, conv_param = conv_inputs(rng, ((3, 4, 5, 6), (5, 1, 1), 1, 0), dtype)
        out_n, cache_n = conv_forward_naive(x, w, b, conv_param)
        out_f, cache_f = conv_forward_fast(np.asfortranarray(x), w, b, conv_param)
        assert_matches(out_f, out_n)
        dout = rng.standard_normal(out_n.shape).astype(dtype)
        for g_f, g_n in zip(conv_backward_fast(dout, cache_f), conv_backward_naive(dout, cache_n)):
            assert_matches(g_f, g_n)


# -- relu ----------------------------------------------------------------------
def _bits(a):
    """The bit patterns of a float array: equality here is identity, signed zeros and NaN payloads included."""
    return a.view(np.uint64 if a.dtype == np.float64 else np.uint32)


def assert_identical(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(_bits(np.ascontiguousarray(a)), _bits(np.ascontiguousarray(b)))


def _relu_special_values(rng, shape, dtype):
    """x and dout with zeros of both signs, infinities and NaN, where x <= 0 and where x > 0."""
    x = rng.standard_normal(shape).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    flat_x, flat_d = x.reshape(-1), dout.reshape(-1)
    flat_x[:10] = [0.0, -0.0, -1.0, -np.inf, np.nan, 0.0, -2.0, 2.0, np.inf, 3.0]
    flat_d[:10] = [np.inf, np.nan, -np.inf, np.nan, np.inf, -0.0, 0.0, -0.0, np.nan, -np.inf]
    return x, dout


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (7,), (2, 3), (1, 1, 1, 1), (0, 3)])
def test_relu_fast_equals_numpy_reference_bit_for_bit(rng, dtype, shape):
    x = rng.standard_normal(shape).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    out_f, cache_f = fast.relu_forward_fast(x)
    out_n, cache_n = naive.relu_forward(x)
    assert out_f.dtype == dtype and cache_f is x
    assert_identical(out_f, out_n)
    assert_identical(fast.relu_backward_fast(dout, cache_f), naive.relu_backward(dout, cache_n))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_relu_fast_special_values(rng, dtype):
    x, dout = _relu_special_values(rng, (3, 40), dtype)
    out, cache = fast.relu_forward_fast(x)
    # Forward: NaN passes through, every x <= 0 (both zeros included) gives +0.0.
    assert np.isnan(out[0, 4])
    assert_identical(out[0, :4], np.zeros(4, dtype=dtype))
    assert out[0, 8] == np.inf
    dx = fast.relu_backward_fast(dout, cache)
    # Backward: exactly +0.0 wherever x <= 0 or x is NaN, whatever dout holds there (inf, NaN).
    assert_identical(dx[0, :7], np.zeros(7, dtype=dtype))
    assert_identical(dx[0, 7], np.zeros((), dtype=dtype))  # x > 0, dout -0.0: the +0.0 zero rule
    assert np.isnan(dx[0, 8]) and dx[0, 9] == -np.inf  # x > 0: dout passes, inf and NaN included
    passes = x > 0
    np.testing.assert_array_equal(dx[passes], dout[passes])
    assert not np.signbit(dx[~passes]).any() and (dx[~passes] == 0).all()
    assert_identical(dx, naive.relu_backward(dout, x))
    assert_identical(out, naive.relu_forward(x)[0])


@needs_cython
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_relu_compiled_and_numpy_kernels_agree_exactly(rng, dtype):
    # Long enough for several blocks and chunks of the compiled kernels, with a ragged end.
    x, dout = _relu_special_values(rng, (3, 20000 + 17), dtype)
    x, dout = x.reshape(-1), dout.reshape(-1)

    def run(kernel, threads):
        out, dx = np.empty_like(x), np.empty_like(x)
        kernel.relu_forward(x, out, threads)
        kernel.relu_backward(dout, x, dx, threads)
        return out, dx

    expected = run(_relu_numpy, 1)
    for threads in (1, 2):
        for got, want in zip(run(_relu_cy, threads), expected):
            assert_identical(got, want)


def test_relu_numpy_fallback_gives_the_same_results(rng, monkeypatch):
    x, dout = _relu_special_values(rng, (2, 3, 4, 5), np.float64)
    out = fast.relu_forward_fast(x)[0]
    dx = fast.relu_backward_fast(dout, x)
    monkeypatch.setitem(kernels._MODULES, "relu", _relu_numpy)
    assert_identical(fast.relu_forward_fast(x)[0], out)
    assert_identical(fast.relu_backward_fast(dout, x), dx)


@pytest.mark.parametrize("layout", ["strided", "fortran"])
def test_relu_non_contiguous_inputs(rng, layout):
    x, dout = _relu_special_values(rng, (2, 3, 4, 5), np.float64)
    make = _non_contiguous if layout == "strided" else np.asfortranarray
    xv, dv = make(x), make(dout)
    if layout == "fortran":
        assert not xv.flags.c_contiguous
    out, cache = fast.relu_forward_fast(xv)
    assert_identical(out, naive.relu_forward(x)[0])
    assert_identical(fast.relu_backward_fast(dv, cache), naive.relu_backward(dout, x))


def test_relu_mixed_and_integer_dtypes(rng):
    x32 = rng.standard_normal((3, 4)).astype(np.float32)
    d64 = rng.standard_normal((3, 4))
    for x, dout in ((x32, d64), (x32.astype(np.float64), d64.astype(np.float32)),
                    (np.arange(-6, 6).reshape(3, 4), d64), (x32, np.arange(12).reshape(3, 4))):
        out_f, cache = fast.relu_forward_fast(x)
        assert_identical(out_f, naive.relu_forward(x)[0])
        dx = fast.relu_backward_fast(dout, cache)
        assert dx.dtype == np.float64
        assert_identical(dx, naive.relu_backward(dout, x))
    dx = fast.relu_backward_fast(x32 + 1, x32)
    assert dx.dtype == np.float32
    out, _ = fast.relu_forward_fast([[-1, 2], [3, -4]])
    assert out.dtype == np.float64 and out.tolist() == [[0, 2], [3, 0]]


def test_relu_does_not_modify_inputs(rng):
    for dtype in (np.float64, np.float32):
        x, dout = _relu_special_values(rng, (2, 3, 4, 5), dtype)
        x_before, dout_before = x.copy(), dout.copy()
        out, cache = fast.relu_forward_fast(x)
        dx = fast.relu_backward_fast(dout, cache)
        assert_identical(x, x_before)
        assert_identical(dout, dout_before)
        assert not np.shares_memory(out, x) and not np.shares_memory(dx, dout) and not np.shares_memory(dx, x)
    x.flags.writeable = False  # read-only inputs work too
    dout.flags.writeable = False
    assert_identical(fast.relu_backward_fast(dout, fast.relu_forward_fast(x)[1]), naive.relu_backward(dout, x))


@pytest.mark.parametrize("dout_shape", [(2, 4, 5, 4), (2, 4, 5), (2, 4, 5, 5, 1), (4, 2, 5, 5)])
def test_relu_backward_refuses_dout_of_the_wrong_shape(dout_shape):
    x = np.ones((2, 4, 5, 5))
    _, cache = fast.relu_forward_fast(x)
    message = _raised(fast.relu_backward_fast, np.zeros(dout_shape), cache)
    assert "relu backward: dout has shape" in message
    assert message == _raised(naive.relu_backward, np.zeros(dout_shape), x)
    with pytest.raises(ValueError):
        fast.relu_backward_fast(np.zeros(dout_shape), cache)


def test_relu_refuses_object_arrays_like_the_reference():
    bad = np.array([1, "a"], dtype=object)
    assert _raised(fast.relu_forward_fast, bad) == _raised(naive.relu_forward, bad)
