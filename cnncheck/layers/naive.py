"""Reference layers written with explicit loops: the oracle every other implementation is checked against.

All functions follow the course notebook's contract::

    out, cache = <layer>_forward(x, ..., params)
    grads = <layer>_backward(dout, cache)

They never modify their inputs or the arrays kept in the cache, and the output
keeps the input's floating dtype (float32 stays float32; other dtypes are
computed in float64).  Bad shapes or parameters raise ``ValueError`` naming
the problem.
"""

from __future__ import annotations

import numpy as np

from cnncheck import geometry
from cnncheck.errors import CnnCheckError


def as_float_array(a, name: str) -> np.ndarray:
    """``a`` as an ndarray of a floating dtype (float32 kept, anything else float64)."""
    arr = np.asarray(a)
    if arr.dtype == object:
        raise CnnCheckError(f"{name} must be a numeric array, got dtype object")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    return arr


def common_dtype(*arrays) -> np.dtype:
    """float32 when every array is float32, else float64."""
    return np.dtype(np.float32) if all(a.dtype == np.float32 for a in arrays) else np.dtype(np.float64)


def check_dout(dout, expected_shape, layer: str) -> np.ndarray:
    """Validate the upstream gradient's shape against the forward output's."""
    dout = as_float_array(dout, "dout")
    if dout.shape != tuple(expected_shape):
        raise CnnCheckError(
            f"{layer} backward: dout has shape {dout.shape} but the forward output had shape {tuple(expected_shape)}"
        )
    return dout


def conv_param_values(conv_param) -> tuple[int, int]:
    """(stride, pad) from a course-style ``conv_param`` dict, validated."""
    if not isinstance(conv_param, dict):
        raise CnnCheckError(f"conv_param must be a dict with 'stride' and 'pad', got {type(conv_param).__name__}")
    missing = [k for k in ("stride", "pad") if k not in conv_param]
    if missing:
        raise CnnCheckError(f"conv_param is missing {', '.join(repr(k) for k in missing)}")
    return geometry.check_stride_pad(conv_param["stride"], conv_param["pad"])


def pool_param_values(pool_param) -> tuple[int, int, int]:
    """(pool_height, pool_width, stride) from a course-style ``pool_param`` dict."""
    if not isinstance(pool_param, dict):
        raise CnnCheckError("pool_param must be a dict with 'pool_height', 'pool_width' and 'stride', "
                            f"got {type(pool_param).__name__}")
    keys = ("pool_height", "pool_width", "stride")
    missing = [k for k in keys if k not in pool_param]
    if missing:
        raise CnnCheckError(f"pool_param is missing {', '.join(repr(k) for k in missing)}")
    return tuple(geometry._as_int(pool_param[k], k) for k in keys)


# -- affine ---------------------------------------------------------------------
def affine_forward(x, w, b):
    """Fully connected layer: ``out = x.reshape(N, D) @ w + b``.

    Parameters
    ----------
    x : ndarray, shape (N, d_1, ..., d_k), float64 or float32; flattened to (N, D)
    w : ndarray, shape (D, M)
    b : ndarray, shape (M,)

    Returns
    -------
    out : ndarray, shape (N, M)
    cache : tuple (x, w, b), the inputs as given (not copied, never modified)
    """
    x_arr, w_arr, b_arr = (as_float_array(a, n) for a, n in ((x, "x"), (w, "w"), (b, "b")))
    geometry.affine_output_shape(x_arr.shape, w_arr.shape, b_arr.shape)
    dtype = common_dtype(x_arr, w_arr, b_arr)
    out = x_arr.reshape(x_arr.shape[0], -1).astype(dtype, copy=False) @ w_arr.astype(dtype, copy=False)
    out += b_arr.astype(dtype, copy=False)
    return out, (x, w, b)


def affine_backward(dout, cache):
    """Backward pass of :func:`affine_forward`.

    Parameters
    ----------
    dout : ndarray, shape (N, M)
    cache : tuple (x, w, b) from the forward pass

    Returns
    -------
    dx : ndarray, shape of x (N, d_1, ..., d_k)
    dw : ndarray, shape (D, M)
    db : ndarray, shape (M,)
    """
    x, w, b = (as_float_array(a, n) for a, n in zip(cache, ("x", "w", "b")))
    N, M = geometry.affine_output_shape(x.shape, w.shape, b.shape)
    dout = check_dout(dout, (N, M), "affine")
    dtype = common_dtype(x, w, b)
    dout = dout.astype(dtype, copy=False)
    x2 = x.reshape(N, -1).astype(dtype, copy=False)
    dx = (dout @ w.astype(dtype, copy=False).T).reshape(x.shape)
    dw = x2.T @ dout
    db = dout.sum(axis=0)
    return dx, dw, db


# -- relu -----------------------------------------------------------------------
def relu_forward(x):
    """Rectified linear unit, elementwise ``max(0, x)``.

    Parameters
    ----------
    x : ndarray, any shape, float64 or float32

    Returns
    -------
    out : ndarray, same shape and dtype as x
    cache : x, as given (never modified)
    """
    x_arr = as_float_array(x, "x")
    return np.maximum(x_arr, 0), x


def relu_backward(dout, cache):
    """Backward pass of :func:`relu_forward`: ``dx = dout * (x > 0)``.

    The gradient at exactly 0 is taken as 0, and it is exactly 0 wherever
    ``x <= 0`` even when dout holds inf or NaN there; every zero of dx is
    ``+0.0``.

    Parameters
    ----------
    dout : ndarray, shape of x
    cache : x from the forward pass

    Returns
    -------
    dx : ndarray, shape of x
    """
    x = as_float_array(cache, "x")
    dout = check_dout(dout, x.shape, "relu")
    dtype = common_dtype(x, dout)
    passes = x > 0
    # dout * mask then + 0.0 (turning the -0.0 of negative dout into +0.0) is
    # dout + 0.0 where x > 0 and +0.0 elsewhere, unless dout holds inf or NaN
    # where x <= 0: 0 * inf is NaN there, which the sum reveals, and those
    # places are then set to 0.
    with np.errstate(invalid="ignore"):  # inf * 0 here, inf + -inf in the sum: both only flag a NaN
        dx = np.multiply(dout, passes, dtype=dtype)
        np.add(dx, 0.0, out=dx)
        if np.isnan(np.add.reduce(dx, axis=None)):
            np.copyto(dx, 0, where=~passes)
    return dx


# -- convolution ----------------------------------------------------------------
def conv_forward_naive(x, w, b, conv_param):
    """Convolution (cross-correlation) with loops over every output element.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float64 or float32
    w : ndarray, shape (F, C, HH, WW)
    b : ndarray, shape (F,)
    conv_param : dict with 'stride' (>= 1) and 'pad' (>= 0, zero padding on every side)

    Returns
    -------
    out : ndarray, shape (N, F, H_out, W_out)
        ``H_out = 1 + (H + 2*pad - HH) // stride`` (floor, as PyTorch); rows and
        columns of x that no window reaches do not contribute.
    cache : tuple (x, w, b, conv_param), as given (never modified)
    """
    stride, pad = conv_param_values(conv_param)
    x_arr, w_arr, b_arr = (as_float_array(a, n) for a, n in ((x, "x"), (w, "w"), (b, "b")))
    N, F, H_out, W_out = geometry.conv_output_shape(x_arr.shape, w_arr.shape, stride, pad)
    if b_arr.shape != (F,):
        raise CnnCheckError(f"conv b must have shape ({F},) for {F} filters, got {b_arr.shape}")
    dtype = common_dtype(x_arr, w_arr, b_arr)
    HH, WW = w_arr.shape[2:]
    x_pad = np.pad(x_arr.astype(dtype, copy=False), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    w_arr = w_arr.astype(dtype, copy=False)
    out = np.empty((N, F, H_out, W_out), dtype=dtype)
    for n in range(N):
        for f in range(F):
            for i in range(H_out):
                for j in range(W_out):
                    window = x_pad[n, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
                    out[n, f, i, j] = np.sum(window * w_arr[f]) + b_arr[f]
    return out, (x, w, b, conv_param)


def conv_backward_naive(dout, cache):
    """Backward pass of :func:`conv_forward_naive`, with loops.

    Parameters
    ----------
    dout : ndarray, shape (N, F, H_out, W_out)
    cache : tuple (x, w, b, conv_param) from the forward pass

    Returns
    -------
    dx : ndarray, shape (N, C, H, W); zero where no window reached
    dw : ndarray, shape (F, C, HH, WW)
    db : ndarray, shape (F,)
    """
    x, w, b, conv_param = cache
    stride, pad = conv_param_values(conv_param)
    x, w, b = as_float_array(x, "x"), as_float_array(w, "w"), as_float_array(b, "b")
    N, F, H_out, W_out = geometry.conv_output_shape(x.shape, w.shape, stride, pad)
    dout = check_dout(dout, (N, F, H_out, W_out), "conv")
    dtype = common_dtype(x, w, b)
    dout = dout.astype(dtype, copy=False)
    w = w.astype(dtype, copy=False)
    _, _, H, W = x.shape
    HH, WW = w.shape[2:]
    x_pad = np.pad(x.astype(dtype, copy=False), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dx_pad = np.zeros_like(x_pad)
    dw = np.zeros(w.shape, dtype=dtype)
    db = dout.sum(axis=(0, 2, 3))
    for n in range(N):
        for f in range(F):
            for i in range(H_out):
                for j in range(W_out):
                    rows = slice(i * stride, i * stride + HH)
                    cols = slice(j * stride, j * stride + WW)
                    g = dout[n, f, i, j]
                    dw[f] += g * x_pad[n, :, rows, cols]
                    dx_pad[n, :, rows, cols] += g * w[f]
    dx = dx_pad[:, :, pad:pad + H, pad:pad + W].copy()
    return dx, dw, db.astype(dtype, copy=False)


# -- max pooling ----------------------------------------------------------------
def max_pool_forward_naive(x, pool_param):
    """Max pooling without padding, with loops over every output element.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float64 or float32
    pool_param : dict with 'pool_height', 'pool_width' and 'stride'

    Returns
    -------
    out : ndarray, shape (N, C, H_out, W_out)
        ``H_out = 1 + (H - pool_height) // stride``; trailing rows and columns
        no window covers are ignored.
    cache : tuple (x, pool_param), as given (never modified)

    Notes
    -----
    Ties: the gradient of a window goes wholly to its *first* maximum in
    row-major window order (as PyTorch does).
    """
    ph, pw, stride = pool_param_values(pool_param)
    x_arr = as_float_array(x, "x")
    N, C, H_out, W_out = geometry.pool_output_shape(x_arr.shape, ph, pw, stride)
    out = np.empty((N, C, H_out, W_out), dtype=x_arr.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(H_out):
                for j in range(W_out):
                    out[n, c, i, j] = x_arr[n, c, i * stride:i * stride + ph, j * stride:j * stride + pw].max()
    return out, (x, pool_param)


def max_pool_backward_naive(dout, cache):
    """Backward pass of :func:`max_pool_forward_naive`, with loops.

    Parameters
    ----------
    dout : ndarray, shape (N, C, H_out, W_out)
    cache : tuple (x, pool_param) from the forward pass

    Returns
    -------
    dx : ndarray, shape (N, C, H, W); each window's gradient lands on its first
        maximum in row-major order, accumulated where windows overlap.
    """
    x, pool_param = cache
    ph, pw, stride = pool_param_values(pool_param)
    x = as_float_array(x, "x")
    N, C, H_out, W_out = geometry.pool_output_shape(x.shape, ph, pw, stride)
    dout = check_dout(dout, (N, C, H_out, W_out), "pool")
    dx = np.zeros(x.shape, dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(H_out):
                for j in range(W_out):
                    window = x[n, c, i * stride:i * stride + ph, j * stride:j * stride + pw]
                    k = int(np.argmax(window))
                    dx[n, c, i * stride + k // pw, j * stride + k % pw] += dout[n, c, i, j]
    return dx
