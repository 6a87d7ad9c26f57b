"""cnncheck.layers.sandwich: each chain equals its parts, matches torch and centred differences."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cnncheck.errors import CnnCheckError  # noqa: E402
from cnncheck.gradient_check import eval_numerical_gradient_array, rel_error  # noqa: E402
from cnncheck.layers import fast, naive, norm, sandwich  # noqa: E402

CONV = {"stride": 1, "pad": 1}
POOL = {"pool_height": 2, "pool_width": 2, "stride": 2}


@pytest.fixture
def torch_layers():
    pytest.importorskip("torch")
    from cnncheck.layers import torch_extra

    return torch_extra


def randn(rng, *shape):
    return rng.standard_normal(shape)


def make_case(name, rng, mode="train"):
    """(forward, backward, inputs, extra) for one sandwich, with small float64 inputs."""
    if name == "affine_relu":
        return sandwich.affine_relu_forward, sandwich.affine_relu_backward, \
            [randn(rng, 4, 2, 3), randn(rng, 6, 5), randn(rng, 5)], ()
    if name == "conv_relu":
        return sandwich.conv_relu_forward, sandwich.conv_relu_backward, \
            [randn(rng, 2, 3, 5, 5), randn(rng, 4, 3, 3, 3), randn(rng, 4)], (CONV,)
    if name == "conv_relu_pool":
        return sandwich.conv_relu_pool_forward, sandwich.conv_relu_pool_backward, \
            [randn(rng, 2, 3, 6, 6), randn(rng, 3, 3, 3, 3), randn(rng, 3)], (CONV, POOL)
    inputs = [randn(rng, 5, 2, 2), randn(rng, 4, 6), randn(rng, 6), randn(rng, 6), randn(rng, 6)]
    if name == "affine_bn_relu":
        stats = {"running_mean": randn(rng, 6), "running_var": rng.random(6) + 0.5}
        return sandwich.affine_bn_relu_forward, sandwich.affine_bn_relu_backward, inputs, \
            ({"mode": mode, **stats},)
    return sandwich.affine_ln_relu_forward, sandwich.affine_ln_relu_backward, inputs, ({"eps": 1e-5},)


NAMES = ["affine_relu", "conv_relu", "conv_relu_pool", "affine_bn_relu", "affine_ln_relu"]
CASES = [(name, "train") for name in NAMES] + [("affine_bn_relu", "test")]


def fresh(extra):
    """A deep enough copy of the parameter dicts: every call sees the same running statistics."""
    return tuple({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in d.items()} for d in extra)


# -- the chain equals its parts -----------------------------------------------------------------
def _by_parts(name, inputs, extra, dout):
    """The forward output and gradients computed one part at a time."""
    if name == "affine_relu":
        a, c1 = naive.affine_forward(*inputs)
        out, c2 = naive.relu_forward(a)
        return out, naive.affine_backward(naive.relu_backward(dout, c2), c1)
    if name == "conv_relu":
        a, c1 = fast.conv_forward_fast(*inputs, *extra)
        out, c2 = naive.relu_forward(a)
        return out, fast.conv_backward_fast(naive.relu_backward(dout, c2), c1)
    if name == "conv_relu_pool":
        a, c1 = fast.conv_forward_fast(*inputs, extra[0])
        s, c2 = naive.relu_forward(a)
        out, c3 = fast.max_pool_forward_fast(s, extra[1])
        return out, fast.conv_backward_fast(naive.relu_backward(fast.max_pool_backward_fast(dout, c3), c2), c1)
    x, w, b, gamma, beta = inputs
    nf, nb = ((norm.batchnorm_forward, norm.batchnorm_backward) if name == "affine_bn_relu"
              else (norm.layernorm_forward, norm.layernorm_backward))
    a, c1 = naive.affine_forward(x, w, b)
    an, c2 = nf(a, gamma, beta, extra[0])
    out, c3 = naive.relu_forward(an)
    da, dgamma, dbeta = nb(naive.relu_backward(dout, c3), c2)
    return out, (*naive.affine_backward(da, c1), dgamma, dbeta)


@pytest.mark.parametrize("name,mode", CASES)
def test_chain_equals_its_parts(rng, name, mode):
    forward, backward, inputs, extra = make_case(name, rng, mode)
    out, cache = forward(*inputs, *fresh(extra))
    dout = randn(rng, *out.shape)
    out_parts, grads_parts = _by_parts(name, inputs, fresh(extra), dout)
    np.testing.assert_array_equal(out, out_parts)
    grads = backward(dout, cache)
    assert len(grads) == len(inputs)
    for g, gp, a in zip(grads, grads_parts, inputs):
        assert g.shape == a.shape
        np.testing.assert_array_equal(g, gp)


# -- against centred differences -----------------------------------------------------------------
@pytest.mark.parametrize("name,mode", CASES)
def test_gradients_match_centred_differences(rng, name, mode):
    forward, backward, inputs, extra = make_case(name, rng, mode)
    out, cache = forward(*inputs, *fresh(extra))
    dout = randn(rng, *out.shape)
    grads = backward(dout, cache)
    for i, analytic in enumerate(grads):
        def f(probe, i=i):
            args = list(inputs)
            args[i] = probe
            return forward(*args, *fresh(extra))[0]
        numeric = eval_numerical_gradient_array(f, inputs[i].copy(), dout)
        if name == "affine_bn_relu" and mode == "train" and i == 2:
            # batchnorm removes any per-feature shift, so db is 0: both sides are rounding noise
            assert np.abs(analytic).max() < 1e-14 and np.abs(numeric).max() < 1e-9
            continue
        # measured: 1e-11 .. 1e-8; a relu or pool kink within h of an input would show here
        assert rel_error(analytic, numeric) < 1e-7, (i, rel_error(analytic, numeric))


# -- against torch ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name,mode", CASES)
def test_matches_torch(torch_layers, rng, name, mode, dtype):
    forward, backward, inputs, extra = make_case(name, rng, mode)
    inputs = [a.astype(dtype) for a in inputs]
    params_np, params_t = fresh(extra), fresh(extra)
    out, cache = forward(*inputs, *params_np)
    out_t, cache_t = getattr(torch_layers, f"{name}_forward")(*inputs, *params_t)
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-12}
    assert out.dtype == out_t.dtype == dtype
    np.testing.assert_allclose(out, out_t, **tol)
    for p_np, p_t in zip(params_np, params_t):  # running statistics updated alike
        for key in ("running_mean", "running_var"):
            if key in p_np:
                np.testing.assert_allclose(p_np[key], p_t[key], **tol)
    dout = rng.standard_normal(out.shape).astype(dtype)
    for g, g_t in zip(backward(dout, cache), getattr(torch_layers, f"{name}_backward")(dout, cache_t)):
        assert g.dtype == g_t.dtype == dtype
        np.testing.assert_allclose(g, g_t, **tol)


# -- properties, immutability, bad input -----------------------------------------------------------------
@settings(max_examples=15)
@given(N=st.integers(1, 3), C=st.integers(1, 3), F=st.integers(1, 3), HP=st.integers(1, 3), K=st.sampled_from([1, 3]),
       extra_row=st.booleans(), seed=st.integers(0, 2 ** 32 - 1))
def test_conv_relu_pool_shape_and_sign(N, C, F, HP, K, extra_row, seed):
    rng = np.random.default_rng(seed)
    H = 2 * HP + extra_row  # an odd row no pooling window covers
    x, w, b = randn(rng, N, C, H, H), randn(rng, F, C, K, K), randn(rng, F)
    conv = {"stride": 1, "pad": (K - 1) // 2}
    out, cache = sandwich.conv_relu_pool_forward(x, w, b, conv, POOL)
    assert out.shape == (N, F, HP, HP)
    assert (out >= 0).all()
    dx, dw, db = sandwich.conv_relu_pool_backward(np.ones_like(out), cache)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == b.shape


@pytest.mark.parametrize("name,mode", CASES)
def test_inputs_are_not_modified(rng, name, mode):
    forward, backward, inputs, extra = make_case(name, rng, mode)
    for a in inputs:
        a.flags.writeable = False
    before = [a.copy() for a in inputs]
    out, cache = forward(*inputs, *extra)
    dout = randn(rng, *out.shape)
    dout.flags.writeable = False
    backward(dout, cache)
    for a, b in zip(inputs, before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_bad_cache_raises(name):
    backward = getattr(sandwich, f"{name}_backward")
    with pytest.raises(CnnCheckError, match="cache"):
        backward(np.ones((2, 2)), (None,))


def test_bad_input_raises_the_parts_error(rng):
    with pytest.raises(CnnCheckError, match="'mode'"):
        sandwich.affine_bn_relu_forward(randn(rng, 2, 3), randn(rng, 3, 4), randn(rng, 4), np.ones(4), np.zeros(4), {})
    with pytest.raises(CnnCheckError):
        sandwich.conv_relu_forward(randn(rng, 1, 2, 4, 4), randn(rng, 3, 3, 3, 3), randn(rng, 3), CONV)
