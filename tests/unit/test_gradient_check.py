"""The course notebook's gradient-check primitives, and the course notebook's four gradient checks."""

from __future__ import annotations

import numpy as np
import pytest

from cnncheck.gradient_check import eval_numerical_gradient, eval_numerical_gradient_array, rel_error
from cnncheck.layers import (
    affine_backward,
    affine_forward,
    conv_backward_fast,
    conv_backward_naive,
    conv_forward_fast,
    conv_forward_naive,
    max_pool_backward_fast,
    max_pool_backward_naive,
    max_pool_forward_fast,
    max_pool_forward_naive,
    relu_backward,
    relu_forward,
)


# -- rel_error ----------------------------------------------------------------
def test_rel_error_hand_computed():
    # |1 - 1.1| / (1 + 1.1) = 0.1 / 2.1; the second pair is exact.
    assert rel_error(np.array([1.0, 2.0]), np.array([1.1, 2.0])) == pytest.approx(0.1 / 2.1)


def test_rel_error_floors_the_denominator_at_1e_8():
    assert rel_error(np.array([0.0]), np.array([1e-10])) == pytest.approx(1e-10 / 1e-8)
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0


def test_rel_error_takes_the_maximum_and_is_symmetric():
    x = np.array([1.0, -3.0, 0.5])
    y = np.array([1.0, -2.0, 0.25])
    expected = max(1.0 / 5.0, 0.25 / 0.75)
    assert rel_error(x, y) == pytest.approx(expected)
    assert rel_error(y, x) == pytest.approx(expected)


def test_rel_error_shape_mismatch_and_empty():
    with pytest.raises(ValueError, match="one shape"):
        rel_error(np.zeros(2), np.zeros(3))
    assert rel_error(np.zeros(0), np.zeros(0)) == 0.0


# -- numerical gradients --------------------------------------------------------
def test_eval_numerical_gradient_of_a_known_function(rng):
    x = rng.standard_normal((3, 4))
    grad = eval_numerical_gradient(lambda a: float(np.sum(a ** 3)), x)
    np.testing.assert_allclose(grad, 3 * x ** 2, rtol=1e-7, atol=1e-8)


def test_eval_numerical_gradient_restores_x_and_keeps_dtype(rng):
    x = rng.standard_normal(5)
    before = x.copy()
    grad = eval_numerical_gradient(lambda a: float(np.sum(a * a)), x)
    np.testing.assert_array_equal(x, before)
    assert grad.dtype == np.float64 and grad.shape == x.shape
    x32 = x.astype(np.float32)
    assert eval_numerical_gradient(lambda a: float(np.sum(a)), x32, h=1e-2).dtype == np.float32


def test_eval_numerical_gradient_verbose_prints_each_index(capsys):
    eval_numerical_gradient(lambda a: float(np.sum(a)), np.zeros(2), verbose=True)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("(0,)")


def test_eval_numerical_gradient_quiet_by_default(capsys):
    eval_numerical_gradient(lambda a: float(np.sum(a)), np.zeros(2))
    assert capsys.readouterr().out == ""


def test_eval_numerical_gradient_array_of_a_linear_map(rng):
    A = rng.standard_normal((4, 3))
    x = rng.standard_normal(3)
    df = rng.standard_normal(4)
    grad = eval_numerical_gradient_array(lambda v: A @ v, x, df)
    np.testing.assert_allclose(grad, A.T @ df, rtol=1e-8, atol=1e-10)


def test_eval_numerical_gradient_array_copies_each_probe():
    # f returns a view of x: without copying, the + and - probes would alias.
    x = np.array([1.0, 2.0])
    grad = eval_numerical_gradient_array(lambda v: v, x, np.ones(2))
    np.testing.assert_allclose(grad, [1.0, 1.0])


@pytest.mark.parametrize("which", ["scalar", "array"])
def test_x_restored_even_when_f_raises(which):
    x = np.array([1.0, 2.0, 3.0])
    calls = []

    def f(a):
        calls.append(a.copy())
        if len(calls) == 2:
            raise RuntimeError("boom")
        return a if which == "array" else float(a.sum())

    with pytest.raises(RuntimeError, match="boom"):
        if which == "scalar":
            eval_numerical_gradient(f, x)
        else:
            eval_numerical_gradient_array(f, x, np.ones(3))
    np.testing.assert_array_equal(x, [1.0, 2.0, 3.0])
    assert calls[0][0] != 1.0  # the first call did see a probed value


@pytest.mark.parametrize(
    ("x", "message"),
    [
        ([1.0, 2.0], "numpy array"),
        (np.arange(3), "floating dtype"),
    ],
)
def test_unprobeable_x_is_refused(x, message):
    with pytest.raises(ValueError, match=message):
        eval_numerical_gradient(lambda a: 0.0, x)


def test_read_only_x_is_refused():
    x = np.zeros(3)
    x.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        eval_numerical_gradient_array(lambda a: a, x, np.ones(3))


# -- the course notebook's four checks, with its shapes --------------------------------------
TOL = 1e-7


def test_seed_task0_affine_backward(rng):
    x = rng.standard_normal((4, 32))
    w = rng.standard_normal((32, 2))
    b = rng.standard_normal(2)
    dout = rng.standard_normal((4, 2))
    dx_num = eval_numerical_gradient_array(lambda x: affine_forward(x, w, b)[0], x, dout)
    dw_num = eval_numerical_gradient_array(lambda w: affine_forward(x, w, b)[0], w, dout)
    db_num = eval_numerical_gradient_array(lambda b: affine_forward(x, w, b)[0], b, dout)
    out, cache = affine_forward(x, w, b)
    assert out.shape == (4, 2)
    dx, dw, db = affine_backward(dout, cache)
    assert rel_error(dx, dx_num) < TOL
    assert rel_error(dw, dw_num) < TOL
    assert rel_error(db, db_num) < TOL


@pytest.mark.parametrize(
    ("forward", "backward"),
    [(conv_forward_naive, conv_backward_naive), (conv_forward_fast, conv_backward_fast)],
    ids=["naive", "fast"],
)
def test_seed_task1_conv_backward(rng, forward, backward):
    x = rng.standard_normal((4, 3, 5, 5))
    w = rng.standard_normal((2, 3, 3, 3))
    b = rng.standard_normal(2)
    conv_param = {"stride": 2, "pad": 1}
    dout = rng.standard_normal((4, 2, 3, 3))
    dx_num = eval_numerical_gradient_array(lambda x: forward(x, w, b, conv_param)[0], x, dout)
    dw_num = eval_numerical_gradient_array(lambda w: forward(x, w, b, conv_param)[0], w, dout)
    db_num = eval_numerical_gradient_array(lambda b: forward(x, w, b, conv_param)[0], b, dout)
    out, cache = forward(x, w, b, conv_param)
    assert out.shape == (4, 2, 3, 3)
    dx, dw, db = backward(dout, cache)
    assert rel_error(dx, dx_num) < TOL
    assert rel_error(dw, dw_num) < TOL
    assert rel_error(db, db_num) < TOL


@pytest.mark.parametrize(
    ("forward", "backward"),
    [(max_pool_forward_naive, max_pool_backward_naive), (max_pool_forward_fast, max_pool_backward_fast)],
    ids=["naive", "fast"],
)
def test_seed_task2_max_pool_backward(rng, forward, backward):
    x = rng.standard_normal((3, 2, 8, 8))
    dout = rng.standard_normal((3, 2, 4, 4))
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    dx_num = eval_numerical_gradient_array(lambda x: forward(x, pool_param)[0], x, dout)
    out, cache = forward(x, pool_param)
    dx = backward(dout, cache)
    assert rel_error(dx, dx_num) < TOL


def test_seed_task3_relu_backward(rng):
    x = rng.standard_normal((1, 1, 2, 2))
    dout = rng.standard_normal((1, 1, 2, 2))
    dx_num = eval_numerical_gradient_array(lambda x: relu_forward(x)[0], x, dout)
    _, cache = relu_forward(x)
    dx = relu_backward(dout, cache)
    assert rel_error(dx, dx_num) < TOL
