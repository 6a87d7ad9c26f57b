"""The torch implementation agrees with the naive layers, keeps dtypes and never mutates inputs."""

import numpy as np
import pytest

pytest.importorskip("torch")

from cnncheck.loading import builtin_registry
from cnncheck.layers import naive
from cnncheck.layers import torch_impl as tl

DTYPES = [np.float64, np.float32]
TOL = {np.float64: {"rtol": 1e-10, "atol": 1e-12}, np.float32: {"rtol": 1e-4, "atol": 1e-4}}


def _rng(seed=0):
    return np.random.default_rng(seed)


def _randn(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def _close(actual, expected, dtype):
    assert actual.shape == expected.shape
    assert actual.dtype == np.dtype(dtype)
    np.testing.assert_allclose(actual, expected, **TOL[dtype])


CONV_CASES = [
    # x shape, w shape, stride, pad
    ((2, 3, 5, 5), (4, 3, 3, 3), 1, 1),
    ((3, 2, 7, 6), (2, 2, 3, 2), 2, 1),
    ((1, 1, 6, 6), (3, 1, 2, 2), 3, 0),  # last column/row reached by no window
    ((2, 4, 4, 4), (5, 4, 1, 1), 1, 0),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape,w_shape,stride,pad", CONV_CASES)
def test_conv_matches_naive(dtype, x_shape, w_shape, stride, pad):
    rng = _rng(1)
    x, w, b = _randn(rng, x_shape, dtype), _randn(rng, w_shape, dtype), _randn(rng, w_shape[:1], dtype)
    param = {"stride": stride, "pad": pad}
    expected, ncache = naive.conv_forward_naive(x, w, b, param)
    out, cache = tl.conv_forward(x, w, b, param)
    _close(out, expected, dtype)
    dout = _randn(rng, out.shape, dtype)
    for got, want in zip(tl.conv_backward(dout, cache), naive.conv_backward_naive(dout, ncache)):
        _close(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape,ph,pw,stride", [((2, 3, 8, 8), 2, 2, 2), ((1, 2, 7, 5), 3, 2, 1),
                                                   ((2, 1, 9, 9), 2, 3, 3)])
def test_pool_matches_naive(dtype, x_shape, ph, pw, stride):
    rng = _rng(2)
    x = _randn(rng, x_shape, dtype)
    param = {"pool_height": ph, "pool_width": pw, "stride": stride}
    expected, ncache = naive.max_pool_forward_naive(x, param)
    out, cache = tl.max_pool_forward(x, param)
    _close(out, expected, dtype)
    dout = _randn(rng, out.shape, dtype)
    _close(tl.max_pool_backward(dout, cache), naive.max_pool_backward_naive(dout, ncache), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride", [1, 2])
def test_pool_ties_go_to_first_maximum(dtype, stride):
    # Integer values in a tiny range: most windows hold several equal maxima.
    x = _rng(3).integers(0, 3, size=(2, 3, 6, 6)).astype(dtype)
    param = {"pool_height": 2, "pool_width": 2, "stride": stride}
    out, cache = tl.max_pool_forward(x, param)
    expected, ncache = naive.max_pool_forward_naive(x, param)
    np.testing.assert_array_equal(out, expected)
    dout = np.arange(1, out.size + 1, dtype=dtype).reshape(out.shape)
    np.testing.assert_array_equal(tl.max_pool_backward(dout, cache), naive.max_pool_backward_naive(dout, ncache))


def test_pool_all_equal_window_gives_its_first_element():
    x = np.zeros((1, 1, 2, 2))
    _out, cache = tl.max_pool_forward(x, {"pool_height": 2, "pool_width": 2, "stride": 2})
    dx = tl.max_pool_backward(np.ones((1, 1, 1, 1)), cache)
    np.testing.assert_array_equal(dx[0, 0], [[1.0, 0.0], [0.0, 0.0]])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape,M", [((4, 6), 3), ((3, 2, 4), 5)])
def test_affine_matches_naive(dtype, x_shape, M):
    rng = _rng(4)
    D = int(np.prod(x_shape[1:]))
    x, w, b = _randn(rng, x_shape, dtype), _randn(rng, (D, M), dtype), _randn(rng, (M,), dtype)
    expected, ncache = naive.affine_forward(x, w, b)
    out, cache = tl.affine_forward(x, w, b)
    _close(out, expected, dtype)
    dout = _randn(rng, out.shape, dtype)
    grads = tl.affine_backward(dout, cache)
    assert grads[0].shape == x_shape
    for got, want in zip(grads, naive.affine_backward(dout, ncache)):
        _close(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_matches_naive_with_zero_gradient_at_zero(dtype):
    rng = _rng(5)
    x = _randn(rng, (3, 4, 5), dtype)
    x[0, 0, :3] = 0.0
    out, cache = tl.relu_forward(x)
    _close(out, naive.relu_forward(x)[0], dtype)
    dout = _randn(rng, x.shape, dtype)
    dx = tl.relu_backward(dout, cache)
    _close(dx, naive.relu_backward(dout, x), dtype)
    assert np.all(dx[0, 0, :3] == 0)


def test_mixed_dtypes_follow_naive():
    rng = _rng(6)
    x = _randn(rng, (2, 3, 5, 5), np.float32)
    w, b = _randn(rng, (2, 3, 3, 3), np.float64), _randn(rng, (2,), np.float64)
    out, cache = tl.conv_forward(x, w, b, {"stride": 1, "pad": 1})
    assert out.dtype == np.float64
    assert all(g.dtype == np.float64 for g in tl.conv_backward(np.ones(out.shape, np.float32), cache))
    out, cache = tl.relu_forward(x)
    assert out.dtype == np.float32
    dout = _randn(rng, x.shape, np.float64)
    dx = tl.relu_backward(dout, cache)
    assert dx.dtype == np.float64
    np.testing.assert_array_equal(dx, naive.relu_backward(dout, x))
    out, cache = tl.max_pool_forward(np.arange(16).reshape(1, 1, 4, 4), {"pool_height": 2, "pool_width": 2,
                                                                         "stride": 2})
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out[0, 0], [[5, 7], [13, 15]])


def _conv_call():
    rng = _rng(7)
    x, w, b = _randn(rng, (2, 3, 6, 6), np.float64), _randn(rng, (4, 3, 3, 3), np.float64), _randn(rng, (4,), np.float64)
    return (x, w, b, {"stride": 2, "pad": 1}), tl.conv_forward, tl.conv_backward


def _pool_call():
    x = _rng(8).standard_normal((2, 2, 6, 6))
    return (x, {"pool_height": 2, "pool_width": 2, "stride": 2}), tl.max_pool_forward, tl.max_pool_backward


def _affine_call():
    rng = _rng(9)
    return (rng.standard_normal((3, 2, 5)), rng.standard_normal((10, 4)), rng.standard_normal(4)), \
        tl.affine_forward, tl.affine_backward


def _relu_call():
    return (_rng(10).standard_normal((4, 5)),), tl.relu_forward, tl.relu_backward


CALLS = [_conv_call, _pool_call, _affine_call, _relu_call]


NAIVE = {tl.conv_forward: (naive.conv_forward_naive, naive.conv_backward_naive),
         tl.max_pool_forward: (naive.max_pool_forward_naive, naive.max_pool_backward_naive),
         tl.affine_forward: (naive.affine_forward, naive.affine_backward),
         tl.relu_forward: (naive.relu_forward, naive.relu_backward)}


def _as_tuple(grads):
    return grads if isinstance(grads, tuple) else (grads,)


@pytest.mark.parametrize("make", CALLS, ids=["conv", "pool", "affine", "relu"])
def test_inputs_cache_and_dout_never_modified(make):
    args, forward, backward = make()
    arrays = [a for a in args if isinstance(a, np.ndarray)]
    before = [a.copy() for a in arrays]
    naive_forward, naive_backward = NAIVE[forward]
    out, cache = forward(*args)
    out += 100.0  # writing into the output must not change the backward pass
    dout = _rng(11).standard_normal(out.shape)
    dout_before = dout.copy()
    grads = _as_tuple(backward(dout, cache))
    expected = _as_tuple(naive_backward(dout, naive_forward(*args)[1]))
    for g, e in zip(grads, expected):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)
    for g in grads:
        assert not any(np.shares_memory(g, a) for a in (*arrays, dout))
        g += 1.0  # writing into results must not reach inputs or the cache
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(dout, dout_before)
    for g, e in zip(_as_tuple(backward(dout, cache)), expected):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("make", CALLS, ids=["conv", "pool", "affine", "relu"])
def test_backward_repeats_on_one_cache_and_accepts_naive_cache(make):
    args, forward, backward = make()
    out, cache = forward(*args)
    assert all(c is a for c, a in zip(cache[:-1], args))  # the inputs as given, then the graph
    naive_cache = args[0] if forward is tl.relu_forward else tuple(args)  # naive relu caches x alone
    rng = _rng(12)
    dout1, dout2 = rng.standard_normal(out.shape), rng.standard_normal(out.shape)
    first = _as_tuple(backward(dout1, cache))
    second = _as_tuple(backward(dout2, cache))
    again = _as_tuple(backward(dout1, cache))
    from_naive = _as_tuple(backward(dout1, naive_cache))
    for a, b, c in zip(first, again, from_naive):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert not all(np.array_equal(a, b) for a, b in zip(first, second))


def test_read_only_and_strided_inputs():
    rng = _rng(13)
    x = rng.standard_normal((2, 3, 8, 8))
    w, b = rng.standard_normal((2, 3, 3, 3)), rng.standard_normal(2)
    x_ro = x.copy()
    x_ro.flags.writeable = False
    x_flipped = x[:, :, ::-1, :]
    param = {"stride": 1, "pad": 1}
    for arr in (x_ro, x_flipped, np.asfortranarray(x)):
        expected = naive.conv_forward_naive(arr, w, b, param)[0]
        np.testing.assert_allclose(tl.conv_forward(arr, w, b, param)[0], expected, rtol=1e-10, atol=1e-12)


def test_forward_records_graph_under_no_grad():
    import torch

    x = _rng(14).standard_normal((2, 3))
    with torch.no_grad():
        out, cache = tl.relu_forward(x)
    np.testing.assert_array_equal(tl.relu_backward(np.ones_like(out), cache), (x > 0).astype(float))


@pytest.mark.parametrize("call,message", [
    (lambda: tl.conv_forward(np.zeros((1, 3, 4, 4)), np.zeros((2, 2, 3, 3)), np.zeros(2), {"stride": 1, "pad": 0}),
     "channel mismatch"),
    (lambda: tl.conv_forward(np.zeros((1, 3, 4, 4)), np.zeros((2, 3, 3, 3)), np.zeros(3), {"stride": 1, "pad": 0}),
     "b must have shape"),
    (lambda: tl.conv_forward(np.zeros((1, 3, 4, 4)), np.zeros((2, 3, 3, 3)), np.zeros(2), {"stride": 0, "pad": 0}),
     "stride must be >= 1"),
    (lambda: tl.conv_forward(np.zeros((1, 3, 2, 2)), np.zeros((2, 3, 5, 5)), np.zeros(2), {"stride": 1, "pad": 0}),
     "larger than the padded input"),
    (lambda: tl.conv_forward(np.zeros((1, 3, 4, 4)), np.zeros((2, 3, 3, 3)), np.zeros(2), {"stride": 1}),
     "missing 'pad'"),
    (lambda: tl.max_pool_forward(np.zeros((1, 1, 2, 2)), {"pool_height": 3, "pool_width": 2, "stride": 1}),
     "larger than the input"),
    (lambda: tl.max_pool_forward(np.zeros((2, 2)), {"pool_height": 1, "pool_width": 1, "stride": 1}),
     "pool x must have shape"),
    (lambda: tl.affine_forward(np.zeros((2, 5)), np.zeros((4, 3)), np.zeros(3)), "x flattens to D=5"),
    (lambda: tl.relu_forward(np.array([object()])), "numeric array"),
    (lambda: tl.relu_backward(np.zeros((2, 3)), tl.relu_forward(np.zeros((3, 2)))[1]), "dout has shape"),
    (lambda: tl.conv_backward(np.zeros((1, 1, 1, 1)), "not a cache"), "cache must be"),
])
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_registered_as_torch_for_every_layer():
    registry = builtin_registry()
    for layer in ("affine", "relu", "conv", "pool"):
        impl = registry.impl(layer, "torch")
        assert impl.backend == "torch"


def test_not_registered_without_torch(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # what find_spec sees when torch is not importable
    registry = builtin_registry()
    assert all("torch" not in {i.name for i in registry.impls(layer)} for layer in registry.layer_names())
    assert {i.name for i in registry.impls("conv")} >= {"naive", "fast"}
    assert "pip install 'cnncheck[torch]'" in registry.unavailable[("conv", "torch")]
