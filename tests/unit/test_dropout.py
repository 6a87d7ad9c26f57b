"""cnncheck.layers.dropout: keep ratio, expectation, seeds, test mode, gradients, torch oracle, bad input."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cnncheck.errors import CnnCheckError  # noqa: E402
from cnncheck.gradient_check import eval_numerical_gradient_array, rel_error  # noqa: E402
from cnncheck.layers.dropout import dropout_backward, dropout_forward  # noqa: E402

keep = st.floats(0.05, 1.0)
seeds = st.integers(0, 2 ** 32 - 1)


@pytest.fixture
def torch_layers():
    pytest.importorskip("torch")
    from cnncheck.layers import torch_extra

    return torch_extra


def train(p, seed=None):
    param = {"mode": "train", "p": p}
    if seed is not None:
        param["seed"] = seed
    return param


# -- closed-form properties ----------------------------------------------------------------
@settings(max_examples=20)
@given(p=keep, seed=seeds)
def test_keeps_about_p_of_the_units_and_preserves_the_expectation(p, seed):
    x = np.full((200, 100), 3.0)  # 20,000 units
    out, _ = dropout_forward(x, train(p, seed))
    kept = out != 0
    n = x.size
    # the kept count is Binomial(n, p): 6 standard deviations
    assert abs(kept.sum() - p * n) <= 6 * np.sqrt(n * p * (1 - p)) + 1
    np.testing.assert_allclose(out[kept], 3.0 / p, rtol=1e-15)
    # E[out] = x: the mean over units is within 6 standard errors of 3
    assert abs(out.mean() - 3.0) <= 6 * 3.0 * np.sqrt((1 - p) / (p * n)) + 1e-12


@settings(max_examples=20)
@given(p=keep, seed=seeds, shape=st.tuples(st.integers(1, 6), st.integers(1, 6)))
def test_same_seed_same_mask_and_backward_is_the_same_linear_map(p, seed, shape):
    rng = np.random.default_rng(seed)
    x, dout = rng.standard_normal(shape), rng.standard_normal(shape)
    out1, cache1 = dropout_forward(x, train(p, seed))
    np.random.rand(5)  # move the global generator on: the seed must reset it
    out2, cache2 = dropout_forward(x, train(p, seed))
    np.testing.assert_array_equal(out1, out2)
    np.testing.assert_array_equal(cache1[3], cache2[3])
    # dropout is linear and diagonal: the backward pass is the forward pass with the same mask
    np.testing.assert_array_equal(dropout_backward(dout, cache1), dropout_forward(dout, train(p, seed))[0])
    # every output is 0 or x / p
    np.testing.assert_array_equal(out1, np.where(cache1[3], x / p, 0.0))


def test_different_seeds_give_different_masks():
    x = np.ones((50, 50))
    a, _ = dropout_forward(x, train(0.5, 1))
    b, _ = dropout_forward(x, train(0.5, 2))
    assert (a != b).any()


def test_without_seed_masks_come_from_the_global_generator():
    x = np.ones((40, 40))
    np.random.seed(7)
    a, _ = dropout_forward(x, train(0.5))
    b, _ = dropout_forward(x, train(0.5))
    assert (a != b).any()
    np.random.seed(7)
    np.testing.assert_array_equal(dropout_forward(x, train(0.5))[0], a)
    # the course's rule: rand < p, drawn right after the seed
    np.random.seed(7)
    np.testing.assert_array_equal(a != 0, np.random.rand(40, 40) < 0.5)


def test_keep_ratio_one_keeps_everything():
    x = np.arange(12.0).reshape(3, 4)
    out, cache = dropout_forward(x, train(1.0, 0))
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(dropout_backward(np.ones_like(x), cache), np.ones_like(x))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_test_mode_is_the_identity(rng, dtype):
    x = rng.standard_normal((4, 5)).astype(dtype)
    out, cache = dropout_forward(x, {"mode": "test", "p": 0.3, "seed": 1})
    np.testing.assert_array_equal(out, x)
    assert out.dtype == dtype and not np.may_share_memory(out, x)
    dout = rng.standard_normal((4, 5)).astype(dtype)
    dx = dropout_backward(dout, cache)
    np.testing.assert_array_equal(dx, dout)
    assert dx.dtype == dtype and not np.may_share_memory(dx, dout)


# -- gradients ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["train", "test"])
def test_gradient_matches_centred_differences(rng, mode):
    x, dout = rng.standard_normal((6, 7)), rng.standard_normal((6, 7))
    param = {"mode": mode, "p": 0.4, "seed": 123}
    _, cache = dropout_forward(x, param)
    numeric = eval_numerical_gradient_array(lambda a: dropout_forward(a, param)[0], x.copy(), dout)
    assert rel_error(dropout_backward(dout, cache), numeric) < 1e-9


def test_backward_scales_by_one_over_p(rng):
    x, dout = rng.standard_normal((10, 10)), rng.standard_normal((10, 10))
    _, cache = dropout_forward(x, train(0.25, 3))
    mask = cache[3]
    np.testing.assert_allclose(dropout_backward(dout, cache), dout * mask * 4.0, rtol=1e-15)


# -- torch oracle -----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("mode", ["train", "test"])
def test_matches_torch(torch_layers, rng, mode, dtype):
    x = rng.standard_normal((5, 3, 4)).astype(dtype)
    param = {"mode": mode, "p": 0.7, "seed": 11}
    out, cache = dropout_forward(x, param)
    out_t, cache_t = torch_layers.dropout_forward(x, param)
    assert out_t.dtype == dtype
    np.testing.assert_allclose(out, out_t, rtol=1e-6 if dtype == np.float32 else 1e-15)
    for dout_dtype in (dtype, np.float64):
        dout = rng.standard_normal(x.shape).astype(dout_dtype)
        dx, dx_t = dropout_backward(dout, cache), torch_layers.dropout_backward(dout, cache_t)
        assert dx.dtype == dx_t.dtype
        np.testing.assert_allclose(dx, dx_t, rtol=1e-6 if dx.dtype == np.float32 else 1e-15)


# -- dtypes, immutability, bad input ------------------------------------------------------------------
def test_float32_stays_float32_and_inputs_are_not_modified(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    x.flags.writeable = False
    param = train(0.5, 0)
    before = dict(param)
    out, cache = dropout_forward(x, param)
    assert out.dtype == np.float32
    assert param == before
    dout = np.ones((3, 4), np.float32)
    dout.flags.writeable = False
    assert dropout_backward(dout, cache).dtype == np.float32


@pytest.mark.parametrize("param,match", [
    ({"mode": "train"}, "'p'"),
    ({"mode": "train", "p": 0.0}, r"\(0, 1\]"),
    ({"mode": "train", "p": 1.5}, r"\(0, 1\]"),
    ({"mode": "train", "p": True}, r"\(0, 1\]"),
    ({"p": 0.5}, "'mode'"),
    ({"mode": "eval", "p": 0.5}, "'train' or 'test'"),
    ({"mode": "train", "p": 0.5, "seed": 1.5}, "seed"),
    ({"mode": "train", "p": 0.5, "seed": -1}, "seed"),
    (None, "must be a dict"),
])
def test_bad_dropout_param_raises(param, match):
    with pytest.raises(CnnCheckError, match=match):
        dropout_forward(np.ones(3), param)


def test_bad_dout_or_cache_raises():
    _, cache = dropout_forward(np.ones((2, 3)), train(0.5, 0))
    with pytest.raises(CnnCheckError, match="dout"):
        dropout_backward(np.ones((3, 2)), cache)
    with pytest.raises(CnnCheckError, match="cache"):
        dropout_backward(np.ones((2, 3)), cache[:2])
