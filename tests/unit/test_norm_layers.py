"""cnncheck.layers.norm: torch oracle, centred differences, closed-form properties, state, dtypes, bad input."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cnncheck.errors import CnnCheckError  # noqa: E402
from cnncheck.gradient_check import eval_numerical_gradient_array, rel_error  # noqa: E402
from cnncheck.layers.norm import (  # noqa: E402
    batchnorm_backward,
    batchnorm_backward_alt,
    batchnorm_forward,
    layernorm_backward,
    layernorm_forward,
    spatial_batchnorm_backward,
    spatial_batchnorm_forward,
    spatial_groupnorm_backward,
    spatial_groupnorm_forward,
)

EPS = 1e-5
# float64 centred differences with h = 1e-5 carry an absolute error near 1e-10, so the
# elementwise relative error of the smallest gradients reaches ~1e-8 (measured: 1e-10 .. 6e-8).
GRAD_TOL = 1e-7
TORCH_TOL = {np.float64: {"rtol": 1e-10, "atol": 1e-12}, np.float32: {"rtol": 1e-4, "atol": 1e-5}}


@pytest.fixture
def torch_layers():
    pytest.importorskip("torch")
    from cnncheck.layers import torch_extra

    return torch_extra


def randn(rng, *shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


def running(rng, D, dtype=np.float64):
    """Running statistics as a trained layer might hold them."""
    return {"running_mean": randn(rng, D, dtype=dtype), "running_var": (rng.random(D) + 0.5).astype(dtype)}


def numeric_grads(forward, inputs, dout):
    """Centred differences of ``sum(forward(*inputs) * dout)`` for every input, on copies."""
    inputs = [np.array(a, dtype=np.float64) for a in inputs]
    grads = []
    for i, a in enumerate(inputs):
        def f(probe, i=i):
            args = list(inputs)
            args[i] = probe
            return forward(*args)
        grads.append(eval_numerical_gradient_array(f, a, dout))
    return grads


def assert_grads(forward, backward, inputs, rng, tol=GRAD_TOL):
    out, cache = forward(*inputs)
    dout = randn(rng, *out.shape)
    analytic = backward(dout, cache)
    numeric = numeric_grads(lambda *a: forward(*a)[0], inputs, dout)
    assert len(analytic) == len(numeric)
    for name, a, n in zip("x gamma beta".split(), analytic, numeric):
        assert a.shape == n.shape, name
        assert rel_error(a, n) < tol, (name, rel_error(a, n))


def assert_dx_close(a, b, cache_inv_std, dxhat):
    """Two ways of computing one dx: rtol 1e-9, and an absolute floor at the size of the terms that cancel.

    Every dx formula sums terms of size ``inv_std * |dxhat|`` that nearly cancel
    when the group is small, so its rounding error scales with them, not with dx.
    """
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12 * np.abs(cache_inv_std).max() * np.abs(dxhat).max())


def close(a, b, dtype=np.float64):
    assert a.shape == b.shape
    assert a.dtype == np.dtype(dtype)
    np.testing.assert_allclose(a, b, **TORCH_TOL[dtype])


# -- against torch ------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("mode", ["train", "test"])
def test_batchnorm_matches_torch(torch_layers, rng, mode, dtype):
    x = randn(rng, 6, 4, dtype=dtype) * 2 + 1
    gamma, beta = randn(rng, 4, dtype=dtype), randn(rng, 4, dtype=dtype)
    stats = running(rng, 4, dtype) if mode == "test" else {}
    p_np = {"mode": mode, "momentum": 0.8, **{k: v.copy() for k, v in stats.items()}}
    p_t = {"mode": mode, "momentum": 0.8, **{k: v.copy() for k, v in stats.items()}}
    out, cache = batchnorm_forward(x, gamma, beta, p_np)
    out_t, cache_t = torch_layers.batchnorm_forward(x, gamma, beta, p_t)
    close(out, out_t, dtype)
    for key in ("running_mean", "running_var"):
        close(p_np[key], p_t[key], dtype)
    dout = randn(rng, *out.shape, dtype=dtype)
    for backward in (batchnorm_backward, batchnorm_backward_alt):
        for got, want in zip(backward(dout, cache), torch_layers.batchnorm_backward(dout, cache_t)):
            close(got, want, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_layernorm_matches_torch(torch_layers, rng, dtype):
    x = randn(rng, 5, 7, dtype=dtype) * 3 - 1
    gamma, beta = randn(rng, 7, dtype=dtype), randn(rng, 7, dtype=dtype)
    out, cache = layernorm_forward(x, gamma, beta, {"eps": 1e-3})
    out_t, cache_t = torch_layers.layernorm_forward(x, gamma, beta, {"eps": 1e-3})
    close(out, out_t, dtype)
    dout = randn(rng, *out.shape, dtype=dtype)
    for got, want in zip(layernorm_backward(dout, cache), torch_layers.layernorm_backward(dout, cache_t)):
        close(got, want, dtype)


@pytest.mark.parametrize("mode", ["train", "test"])
def test_spatial_batchnorm_matches_torch(torch_layers, rng, mode):
    x = randn(rng, 3, 4, 5, 2) + 0.5
    gamma, beta = randn(rng, 4), randn(rng, 4)
    stats = running(rng, 4) if mode == "test" else {}
    p_np = {"mode": mode, **{k: v.copy() for k, v in stats.items()}}
    p_t = {"mode": mode, **{k: v.copy() for k, v in stats.items()}}
    out, cache = spatial_batchnorm_forward(x, gamma, beta, p_np)
    out_t, cache_t = torch_layers.spatial_batchnorm_forward(x, gamma, beta, p_t)
    close(out, out_t)
    for key in ("running_mean", "running_var"):
        close(p_np[key], p_t[key])
    dout = randn(rng, *out.shape)
    grads_t = torch_layers.spatial_batchnorm_backward(dout, cache_t)
    for got, want in zip(spatial_batchnorm_backward(dout, cache), grads_t):
        close(got, want)


@pytest.mark.parametrize("G", [1, 2, 3, 6])
def test_spatial_groupnorm_matches_torch(torch_layers, rng, G):
    x = randn(rng, 2, 6, 3, 4) * 2
    gamma, beta = randn(rng, 1, 6, 1, 1), randn(rng, 1, 6, 1, 1)
    out, cache = spatial_groupnorm_forward(x, gamma, beta, G, {})
    out_t, cache_t = torch_layers.spatial_groupnorm_forward(x, gamma, beta, G, {})
    close(out, out_t)
    dout = randn(rng, *out.shape)
    grads_t = torch_layers.spatial_groupnorm_backward(dout, cache_t)
    for got, want in zip(spatial_groupnorm_backward(dout, cache), grads_t):
        close(got, want)


def test_torch_backward_refuses_a_numpy_cache(torch_layers, rng):
    x = randn(rng, 4, 3)
    _, cache = batchnorm_forward(x, np.ones(3), np.zeros(3), {"mode": "train"})
    with pytest.raises(CnnCheckError, match="torch forward pass"):
        torch_layers.batchnorm_backward(x, cache)


# -- against centred differences --------------------------------------------------------
@pytest.mark.parametrize("mode", ["train", "test"])
@pytest.mark.parametrize("backward", [batchnorm_backward, batchnorm_backward_alt])
def test_batchnorm_gradients(rng, mode, backward):
    stats = running(rng, 5)

    def forward(x, gamma, beta):  # a fresh bn_param per call: every probe sees the same statistics
        return batchnorm_forward(x, gamma, beta, {"mode": mode, **{k: v.copy() for k, v in stats.items()}})

    assert_grads(forward, backward, [randn(rng, 6, 5) * 2 + 1, randn(rng, 5), randn(rng, 5)], rng)


def test_layernorm_gradients(rng):
    forward = lambda x, g, b: layernorm_forward(x, g, b, {})  # noqa: E731
    assert_grads(forward, layernorm_backward, [randn(rng, 4, 6) * 2, randn(rng, 6), randn(rng, 6)], rng)


@pytest.mark.parametrize("mode", ["train", "test"])
def test_spatial_batchnorm_gradients(rng, mode):
    stats = running(rng, 3)

    def forward(x, gamma, beta):
        return spatial_batchnorm_forward(x, gamma, beta, {"mode": mode, **{k: v.copy() for k, v in stats.items()}})

    assert_grads(forward, spatial_batchnorm_backward, [randn(rng, 2, 3, 4, 3), randn(rng, 3), randn(rng, 3)], rng)


@pytest.mark.parametrize("G", [1, 2, 4])
def test_spatial_groupnorm_gradients(rng, G):
    forward = lambda x, g, b: spatial_groupnorm_forward(x, g, b, G, {"eps": 1e-5})  # noqa: E731
    inputs = [randn(rng, 2, 4, 3, 3) * 2, randn(rng, 1, 4, 1, 1), randn(rng, 1, 4, 1, 1)]
    assert_grads(forward, spatial_groupnorm_backward, inputs, rng)


# -- closed-form properties --------------------------------------------------------------
shapes = st.tuples(st.integers(2, 9), st.integers(1, 6))
scales = st.floats(1.0, 1e3)
shifts = st.floats(-1e3, 1e3)
seeds = st.integers(0, 2 ** 32 - 1)


@settings(max_examples=25)
@given(shape=shapes, scale=scales, shift=shifts, seed=seeds)
def test_batchnorm_train_output_has_zero_mean_unit_variance(shape, scale, shift, seed):
    rng = np.random.default_rng(seed)
    x = randn(rng, *shape) * scale + shift
    D = shape[1]
    out, _ = batchnorm_forward(x, np.ones(D), np.zeros(D), {"mode": "train"})
    var = x.var(axis=0)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(out.var(axis=0), var / (var + EPS), rtol=1e-9)
    # unit variance up to eps: the columns' variance is at least ~1e-2 here
    keep = var > 1e-2
    np.testing.assert_allclose(out.var(axis=0)[keep], 1, rtol=1e-3)


@settings(max_examples=20)
@given(shape=shapes, seed=seeds)
def test_batchnorm_train_output_has_mean_beta_and_std_gamma(shape, seed):
    rng = np.random.default_rng(seed)
    x, gamma, beta = randn(rng, *shape) * 3, randn(rng, shape[1]), randn(rng, shape[1])
    out, _ = batchnorm_forward(x, gamma, beta, {"mode": "train", "eps": 1e-8})
    var = x.var(axis=0)
    np.testing.assert_allclose(out.mean(axis=0), beta, atol=1e-9)
    np.testing.assert_allclose(out.std(axis=0), np.abs(gamma) * np.sqrt(var / (var + 1e-8)), rtol=1e-9, atol=1e-12)


@settings(max_examples=20)
@given(shape=shapes, momentum=st.floats(0.0, 1.0), steps=st.integers(1, 4), seed=seeds)
def test_running_statistics_follow_the_momentum_rule_in_place(shape, momentum, steps, seed):
    rng = np.random.default_rng(seed)
    N, D = shape
    gamma, beta = randn(rng, D), randn(rng, D)
    bn_param = {"mode": "train", "momentum": momentum}
    expected_mean, expected_var = np.zeros(D), np.zeros(D)
    for step in range(steps):
        x = randn(rng, N, D) * 2 + 3
        batchnorm_forward(x, gamma, beta, bn_param)
        if step == 0:
            arrays = bn_param["running_mean"], bn_param["running_var"]
        expected_mean = momentum * expected_mean + (1 - momentum) * x.mean(axis=0)
        expected_var = momentum * expected_var + (1 - momentum) * x.var(axis=0)  # biased
        assert bn_param["running_mean"] is arrays[0] and bn_param["running_var"] is arrays[1]
    np.testing.assert_allclose(bn_param["running_mean"], expected_mean, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(bn_param["running_var"], expected_var, rtol=1e-12, atol=1e-14)


@settings(max_examples=20)
@given(shape=shapes, eps=st.floats(1e-8, 1.0), seed=seeds)
def test_batchnorm_test_mode_uses_the_running_statistics(shape, eps, seed):
    rng = np.random.default_rng(seed)
    N, D = shape
    x, gamma, beta = randn(rng, N, D), randn(rng, D), randn(rng, D)
    stats = running(rng, D)
    bn_param = {"mode": "test", "eps": eps, **{k: v.copy() for k, v in stats.items()}}
    out, _ = batchnorm_forward(x, gamma, beta, bn_param)
    expected = gamma * (x - stats["running_mean"]) / np.sqrt(stats["running_var"] + eps) + beta
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    for key in stats:  # test mode only reads them
        np.testing.assert_array_equal(bn_param[key], stats[key])
    # each sample on its own: the batch plays no part
    np.testing.assert_allclose(batchnorm_forward(x[:1], gamma, beta, bn_param)[0], out[:1], rtol=1e-14)


@settings(max_examples=25)
@given(shape=shapes, mode=st.sampled_from(["train", "test"]), scale=scales, seed=seeds)
def test_batchnorm_backward_alt_equals_backward(shape, mode, scale, seed):
    rng = np.random.default_rng(seed)
    N, D = shape
    x, gamma = randn(rng, N, D) * scale, randn(rng, D)
    out, cache = batchnorm_forward(x, gamma, randn(rng, D), {"mode": mode, **running(rng, D)})
    dout = randn(rng, N, D)
    (dx, dgamma, dbeta), (dx_alt, dgamma_alt, dbeta_alt) = (batchnorm_backward(dout, cache),
                                                            batchnorm_backward_alt(dout, cache))
    assert_dx_close(dx, dx_alt, cache[5], dout * gamma)
    np.testing.assert_array_equal(dgamma, dgamma_alt)
    np.testing.assert_array_equal(dbeta, dbeta_alt)


@settings(max_examples=20)
@given(shape=shapes, scale=scales, shift=shifts, seed=seeds)
def test_layernorm_rows_have_zero_mean_and_is_batchnorm_of_the_transpose(shape, scale, shift, seed):
    rng = np.random.default_rng(seed)
    N, D = shape[1] + 1, shape[0]  # at least 2 features per row
    x = randn(rng, N, D) * scale + shift
    out, cache = layernorm_forward(x, np.ones(D), np.zeros(D), {})
    var = x.var(axis=1)
    np.testing.assert_allclose(out.mean(axis=1), 0, atol=1e-9)
    np.testing.assert_allclose(out.var(axis=1), var / (var + EPS), rtol=1e-9)
    bn_out, bn_cache = batchnorm_forward(x.T, np.ones(N), np.zeros(N), {"mode": "train"})
    np.testing.assert_allclose(out, bn_out.T, rtol=1e-12, atol=1e-12)
    dout = randn(rng, N, D)
    dx_bn = batchnorm_backward(dout.T, bn_cache)[0]
    assert_dx_close(layernorm_backward(dout, cache)[0], dx_bn.T, cache[5], dout)


@settings(max_examples=15)
@given(N=st.integers(1, 3), C=st.integers(1, 4), H=st.integers(1, 3), W=st.integers(1, 3),
       mode=st.sampled_from(["train", "test"]), seed=seeds)
def test_spatial_batchnorm_is_batchnorm_over_pixels(N, C, H, W, mode, seed):
    rng = np.random.default_rng(seed)
    x, gamma, beta = randn(rng, N, C, H, W) * 2, randn(rng, C), randn(rng, C)
    stats = running(rng, C)
    p_spatial = {"mode": mode, **{k: v.copy() for k, v in stats.items()}}
    p_rows = {"mode": mode, **{k: v.copy() for k, v in stats.items()}}
    rows = x.transpose(0, 2, 3, 1).reshape(-1, C)
    out, cache = spatial_batchnorm_forward(x, gamma, beta, p_spatial)
    out_rows, cache_rows = batchnorm_forward(rows, gamma, beta, p_rows)
    np.testing.assert_array_equal(out, out_rows.reshape(N, H, W, C).transpose(0, 3, 1, 2))
    assert out.flags.c_contiguous
    for key in stats:
        np.testing.assert_array_equal(p_spatial[key], p_rows[key])
    dout = randn(rng, N, C, H, W)
    dx, dgamma, dbeta = spatial_batchnorm_backward(dout, cache)
    dx_rows, dgamma_rows, dbeta_rows = batchnorm_backward(dout.transpose(0, 2, 3, 1).reshape(-1, C), cache_rows)
    np.testing.assert_array_equal(dx, dx_rows.reshape(N, H, W, C).transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(dgamma, dgamma_rows)
    np.testing.assert_array_equal(dbeta, dbeta_rows)
    if mode == "train" and N * H * W > 1:
        np.testing.assert_allclose(((out - beta[:, None, None]) / gamma[:, None, None]).mean(axis=(0, 2, 3)), 0,
                                   atol=1e-8)


@settings(max_examples=15)
@given(N=st.integers(1, 3), groups=st.integers(1, 3), per_group=st.integers(1, 3), H=st.integers(1, 3),
       W=st.integers(1, 3), seed=seeds)
def test_spatial_groupnorm_groups_have_zero_mean(N, groups, per_group, H, W, seed):
    rng = np.random.default_rng(seed)
    C = groups * per_group
    x = randn(rng, N, C, H, W) * 5 + 2
    out, cache = spatial_groupnorm_forward(x, np.ones((1, C, 1, 1)), np.zeros((1, C, 1, 1)), groups, {})
    xg, og = x.reshape(N, groups, -1), out.reshape(N, groups, -1)
    var = xg.var(axis=2)
    np.testing.assert_allclose(og.mean(axis=2), 0, atol=1e-9)
    np.testing.assert_allclose(og.var(axis=2), var / (var + EPS), rtol=1e-9)
    # each group is layernorm of its values
    ln_out, ln_cache = layernorm_forward(xg.reshape(N * groups, -1), np.ones(xg.shape[2]), np.zeros(xg.shape[2]), {})
    np.testing.assert_allclose(out, ln_out.reshape(x.shape), rtol=1e-12, atol=1e-12)
    dout = randn(rng, *x.shape)
    dx = spatial_groupnorm_backward(dout, cache)[0]
    dx_ln = layernorm_backward(dout.reshape(N * groups, -1), ln_cache)[0].reshape(x.shape)
    assert_dx_close(dx, dx_ln, cache[6], dout)


def test_groupnorm_gamma_and_beta_act_per_channel(rng):
    x = randn(rng, 2, 4, 3, 3)
    gamma, beta = randn(rng, 1, 4, 1, 1), randn(rng, 1, 4, 1, 1)
    xhat, _ = spatial_groupnorm_forward(x, np.ones_like(gamma), np.zeros_like(beta), 2, {})
    out, cache = spatial_groupnorm_forward(x, gamma, beta, 2, {})
    np.testing.assert_allclose(out, gamma * xhat + beta, rtol=1e-14)
    dout = randn(rng, *x.shape)
    _, dgamma, dbeta = spatial_groupnorm_backward(dout, cache)
    assert dgamma.shape == dbeta.shape == (1, 4, 1, 1)
    np.testing.assert_allclose(dgamma, (dout * xhat).sum(axis=(0, 2, 3), keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(dbeta, dout.sum(axis=(0, 2, 3), keepdims=True), rtol=1e-12)


# -- bn_param state and defaults --------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_absent_running_statistics_start_at_zero_and_are_stored(rng, dtype):
    x = randn(rng, 4, 3, dtype=dtype)
    bn_param = {"mode": "test"}
    out, _ = batchnorm_forward(x, np.ones(3, dtype), np.zeros(3, dtype), bn_param)
    for key in ("running_mean", "running_var"):
        assert bn_param[key].shape == (3,) and bn_param[key].dtype == dtype
        assert not bn_param[key].any()
    np.testing.assert_allclose(out, x / np.sqrt(EPS), rtol=1e-5 if dtype == np.float32 else 1e-12)
    bn_param = {"mode": "train"}  # default momentum 0.9 from zeros
    batchnorm_forward(x, np.ones(3, dtype), np.zeros(3, dtype), bn_param)
    np.testing.assert_allclose(bn_param["running_mean"], 0.1 * x.mean(axis=0), rtol=1e-5)


def test_running_statistics_of_another_dtype_are_updated_in_their_dtype(rng):
    x = randn(rng, 5, 2)
    rm, rv = np.zeros(2, np.float32), np.ones(2, np.float32)
    batchnorm_forward(x, np.ones(2), np.zeros(2), {"mode": "train", "running_mean": rm, "running_var": rv})
    np.testing.assert_allclose(rm, 0.1 * x.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(rv, 0.9 + 0.1 * x.var(axis=0), rtol=1e-6)


def test_test_mode_cache_does_not_follow_later_updates(rng):
    x, gamma, beta = randn(rng, 4, 3), randn(rng, 3), randn(rng, 3)
    bn_param = {"mode": "test", **running(rng, 3)}
    _, cache = batchnorm_forward(x, gamma, beta, bn_param)
    dout = randn(rng, 4, 3)
    before = batchnorm_backward(dout, cache)
    batchnorm_forward(x * 5, gamma, beta, {**bn_param, "mode": "train"})  # updates the same arrays
    for a, b in zip(before, batchnorm_backward(dout, cache)):
        np.testing.assert_array_equal(a, b)


# -- immutability and dtypes ------------------------------------------------------------------------
def _frozen(*arrays):
    out = []
    for a in arrays:
        a = a.copy()
        a.flags.writeable = False
        out.append(a)
    return out


CASES = {
    "batchnorm": (lambda x, g, b: batchnorm_forward(x, g, b, {"mode": "train"}), batchnorm_backward, (5, 3), (3,)),
    "batchnorm_alt": (lambda x, g, b: batchnorm_forward(x, g, b, {"mode": "train"}), batchnorm_backward_alt,
                      (5, 3), (3,)),
    "layernorm": (lambda x, g, b: layernorm_forward(x, g, b, {}), layernorm_backward, (5, 3), (3,)),
    "spatial_batchnorm": (lambda x, g, b: spatial_batchnorm_forward(x, g, b, {"mode": "train"}),
                          spatial_batchnorm_backward, (2, 3, 2, 2), (3,)),
    "spatial_groupnorm": (lambda x, g, b: spatial_groupnorm_forward(x, g, b, 3, {}), spatial_groupnorm_backward,
                          (2, 3, 2, 2), (1, 3, 1, 1)),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_read_only_inputs_and_dtypes(rng, name, dtype):
    forward, backward, x_shape, p_shape = CASES[name]
    x, gamma, beta = _frozen(randn(rng, *x_shape, dtype=dtype), randn(rng, *p_shape, dtype=dtype),
                             randn(rng, *p_shape, dtype=dtype))
    copies = [a.copy() for a in (x, gamma, beta)]
    out, cache = forward(x, gamma, beta)
    assert out.dtype == dtype and out.shape == x_shape
    (dout,) = _frozen(randn(rng, *x_shape, dtype=dtype))
    grads = backward(dout, cache)
    assert [g.shape for g in grads] == [x_shape, p_shape, p_shape]
    assert all(g.dtype == dtype for g in grads)
    for a, c in zip((x, gamma, beta), copies):
        np.testing.assert_array_equal(a, c)


# -- bad input ----------------------------------------------------------------------------------
X, G3 = np.ones((4, 3)), np.ones(3)


@pytest.mark.parametrize("call,match", [
    (lambda: batchnorm_forward(X, G3, G3, {}), "'mode'"),
    (lambda: batchnorm_forward(X, G3, G3, {"mode": "eval"}), "'train' or 'test'"),
    (lambda: batchnorm_forward(X, G3, G3, None), "must be a dict"),
    (lambda: batchnorm_forward(X, G3, G3, {"mode": "train", "eps": 0}), "eps"),
    (lambda: batchnorm_forward(X, G3, G3, {"mode": "train", "momentum": 1.5}), "momentum"),
    (lambda: batchnorm_forward(X, np.ones(4), G3, {"mode": "train"}), r"gamma must have shape \(3,\)"),
    (lambda: batchnorm_forward(np.ones((2, 3, 4)), G3, G3, {"mode": "train"}), r"shape \(N, D\)"),
    (lambda: batchnorm_forward(X, G3, G3, {"mode": "train", "running_mean": np.zeros(4)}), "running_mean"),
    (lambda: batchnorm_forward(X, G3, G3, {"mode": "train", "running_mean": [0.0, 0.0, 0.0]}), "writeable"),
    (lambda: batchnorm_forward(X, G3, G3, {"mode": "test", "running_var": -G3}), "running_var"),
    (lambda: batchnorm_backward(X, (X,)), "cache"),
    (lambda: batchnorm_backward(np.ones((4, 2)), batchnorm_forward(X, G3, G3, {"mode": "train"})[1]), "dout"),
    (lambda: layernorm_forward(X, G3, G3, {"eps": -1}), "eps"),
    (lambda: layernorm_forward(X, G3, G3, None), "ln_param must be a dict"),
    (lambda: spatial_batchnorm_forward(X, G3, G3, {"mode": "train"}), r"\(N, C, H, W\)"),
    (lambda: spatial_groupnorm_forward(np.ones((1, 6, 2, 2)), np.ones((1, 6, 1, 1)), np.ones((1, 6, 1, 1)), 4, {}),
     "divide C = 6"),
    (lambda: spatial_groupnorm_forward(np.ones((1, 6, 2, 2)), np.ones(6), np.ones(6), 2, {}),
     r"\(1, 6, 1, 1\)"),
    (lambda: spatial_groupnorm_forward(np.ones((1, 6, 2, 2)), np.ones((1, 6, 1, 1)), np.ones((1, 6, 1, 1)), 2.0, {}),
     "G must be an integer"),
])
def test_bad_input_raises(call, match):
    with pytest.raises(CnnCheckError, match=match):
        call()


def test_refused_call_leaves_bn_param_unchanged():
    bn_param = {"mode": "train", "running_var": np.zeros(5)}
    with pytest.raises(CnnCheckError):
        batchnorm_forward(X, G3, G3, bn_param)
    assert set(bn_param) == {"mode", "running_var"}
