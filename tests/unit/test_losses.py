"""cnncheck.layers.losses: closed forms, invariances, centred differences, torch oracle, bad labels."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cnncheck.errors import CnnCheckError  # noqa: E402
from cnncheck.gradient_check import eval_numerical_gradient, rel_error  # noqa: E402
from cnncheck.layers.losses import softmax_loss, svm_loss  # noqa: E402

LOSSES = [softmax_loss, svm_loss]
sizes = st.tuples(st.integers(1, 8), st.integers(1, 8))
seeds = st.integers(0, 2 ** 32 - 1)


@pytest.fixture
def torch_layers():
    pytest.importorskip("torch")
    from cnncheck.layers import torch_extra

    return torch_extra


def scores_labels(rng, N, C, scale=1.0, dtype=np.float64):
    return (rng.standard_normal((N, C)) * scale).astype(dtype), rng.integers(0, C, N)


# -- softmax -----------------------------------------------------------------------------
@settings(max_examples=25)
@given(size=sizes, value=st.floats(-1e6, 1e6), seed=seeds)
def test_softmax_of_uniform_scores_is_log_c(size, value, seed):
    N, C = size
    y = np.random.default_rng(seed).integers(0, C, N)
    loss, dx = softmax_loss(np.full((N, C), value), y)
    assert loss == pytest.approx(np.log(C), abs=1e-12)
    expected = np.full((N, C), 1.0 / C)
    expected[np.arange(N), y] -= 1
    np.testing.assert_allclose(dx, expected / N, atol=1e-15)


@settings(max_examples=25)
@given(size=sizes, seed=seeds, shift=st.floats(-1e4, 1e4))
def test_softmax_is_invariant_to_row_shifts_and_its_gradient_rows_sum_to_zero(size, seed, shift):
    rng = np.random.default_rng(seed)
    x, y = scores_labels(rng, *size, scale=3.0)
    loss, dx = softmax_loss(x, y)
    shifts = shift * rng.random((size[0], 1))
    loss_s, dx_s = softmax_loss(x + shifts, y)
    assert loss_s == pytest.approx(loss, rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(dx_s, dx, atol=1e-9)
    np.testing.assert_allclose(dx.sum(axis=1), 0, atol=1e-15)
    assert loss >= 0
    # the loss is the mean negative log-probability of the labels
    p = np.exp(x - x.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(size[0]), y])), rel=1e-12)


def test_softmax_does_not_overflow_on_large_scores():
    x = np.array([[1000.0, 0.0, -1000.0], [5e307, 5e307, 0.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, dx = softmax_loss(x, np.array([0, 2]))
    assert np.isfinite(loss) and np.isfinite(dx).all()
    assert loss == pytest.approx((0 + (5e307 + np.log(2))) / 2)


def test_softmax_of_a_confident_correct_row_is_near_zero():
    loss, dx = softmax_loss(np.array([[50.0, 0.0, 0.0]]), np.array([0]))
    assert 0 <= loss < 1e-20
    np.testing.assert_allclose(dx, 0, atol=1e-20)


# -- svm ---------------------------------------------------------------------------------------
@settings(max_examples=25)
@given(size=sizes, margin=st.floats(1.0 + 1e-6, 1e6), seed=seeds)
def test_svm_of_a_large_correct_margin_is_zero(size, margin, seed):
    rng = np.random.default_rng(seed)
    x, y = scores_labels(rng, *size)
    x = np.clip(x, -1, 1)
    x[np.arange(size[0]), y] = x.max() + margin  # every other score is below it by more than 1
    loss, dx = svm_loss(x, y)
    assert loss == 0.0
    np.testing.assert_array_equal(dx, 0)


@settings(max_examples=25)
@given(size=sizes, value=st.floats(-1e6, 1e6), seed=seeds)
def test_svm_of_uniform_scores_is_c_minus_one(size, value, seed):
    N, C = size
    y = np.random.default_rng(seed).integers(0, C, N)
    loss, dx = svm_loss(np.full((N, C), value), y)
    assert loss == C - 1
    expected = np.full((N, C), 1.0 / N)
    expected[np.arange(N), y] = -(C - 1) / N
    np.testing.assert_allclose(dx, expected, rtol=1e-15)


@settings(max_examples=25)
@given(size=sizes, seed=seeds)
def test_svm_matches_its_definition(size, seed):
    rng = np.random.default_rng(seed)
    x, y = scores_labels(rng, *size, scale=2.0)
    N, C = size
    total = 0.0
    for i in range(N):  # the definition, one sample and one class at a time
        for j in range(C):
            if j != y[i]:
                total += max(0.0, x[i, j] - x[i, y[i]] + 1.0)
    loss, dx = svm_loss(x, y)
    assert loss == pytest.approx(total / N, rel=1e-12, abs=1e-15)
    np.testing.assert_allclose(dx.sum(axis=1), 0, atol=1e-15)


def test_svm_margin_exactly_zero_has_zero_gradient():
    x = np.array([[2.0, 1.0, 0.0]])  # class 1: 1 - 2 + 1 = 0, on the kink
    loss, dx = svm_loss(x, np.array([0]))
    assert loss == 0.0
    np.testing.assert_array_equal(dx, 0)


# -- gradients ---------------------------------------------------------------------------------
@pytest.mark.parametrize("loss_fn", LOSSES)
@pytest.mark.parametrize("N,C", [(1, 2), (5, 4), (8, 10)])
def test_gradient_matches_centred_differences(rng, loss_fn, N, C):
    x, y = scores_labels(rng, N, C)
    _, dx = loss_fn(x, y)
    numeric = eval_numerical_gradient(lambda a: loss_fn(a, y)[0], x.copy(), h=1e-5)
    # measured: 1e-13 .. 1e-8 (the svm is piecewise linear, and no margin lies within h of its kink
    # here; the smallest softmax probabilities carry the largest relative error)
    assert rel_error(dx, numeric) < 1e-7


# -- torch oracle --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", ["softmax_loss", "svm_loss"])
def test_matches_torch(torch_layers, rng, name, dtype):
    x, y = scores_labels(rng, 7, 5, scale=3.0, dtype=dtype)
    loss, dx = globals()[name](x, y)
    loss_t, dx_t = getattr(torch_layers, name)(x, y)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert loss == pytest.approx(loss_t, rel=tol)
    assert dx.dtype == dx_t.dtype == dtype
    np.testing.assert_allclose(dx, dx_t, rtol=tol, atol=tol * 1e-2)


# -- dtypes, immutability, bad input ------------------------------------------------------------------
@pytest.mark.parametrize("loss_fn", LOSSES)
def test_float32_kept_and_inputs_not_modified(rng, loss_fn):
    x, y = scores_labels(rng, 4, 3, dtype=np.float32)
    x.flags.writeable = False
    y.flags.writeable = False
    x_before, y_before = x.copy(), y.copy()
    loss, dx = loss_fn(x, y)
    assert isinstance(loss, float) and dx.dtype == np.float32
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(y, y_before)


@pytest.mark.parametrize("loss_fn", LOSSES)
@pytest.mark.parametrize("x,y,match", [
    (np.zeros((2, 3)), np.array([0, 3]), r"in \[0, 3\)"),
    (np.zeros((2, 3)), np.array([-1, 0]), r"in \[0, 3\)"),
    (np.zeros((2, 3)), np.array([0, 1, 2]), r"shape \(2,\)"),
    (np.zeros((2, 3)), np.array([0.0, 1.0]), "integer"),
    (np.zeros((2, 3)), np.array([True, False]), "integer"),
    (np.zeros(3), np.array([0]), r"\(N, C\)"),
])
def test_bad_input_raises(loss_fn, x, y, match):
    with pytest.raises(CnnCheckError, match=match):
        loss_fn(x, y)
