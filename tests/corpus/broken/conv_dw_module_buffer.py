"""The convolution backward pass accumulates dw into a module-level array that is
allocated once (per weight shape) and never zeroed, returning a copy of it: the
first call is right, every later call with the same shapes adds the previous
calls' dw.
"""

import numpy as np


# reused between calls so we don't allocate a new dw array every time
_dw_acc = None


def affine_forward(x, w, b):
    """
    Forward pass of a fully-connected layer.

    x has shape (N, d_1, ..., d_k); every example is stretched into a row of
    length D = d_1 * ... * d_k before the product with w (D, M). b is (M,).

    Returns (out, cache) with out of shape (N, M) and cache = (x, w, b).
    """
    N = x.shape[0]
    x_rows = x.reshape(N, -1)
    out = x_rows.dot(w) + b
    cache = (x, w, b)
    return out, cache


def affine_backward(dout, cache):
    """
    Backward pass of a fully-connected layer.

    dout: upstream derivative, shape (N, M)
    cache: (x, w, b) saved by affine_forward

    Returns dx (shape of x), dw (D, M) and db (M,).
    """
    x, w, b = cache
    N = x.shape[0]
    x_rows = x.reshape(N, -1)

    dx = dout.dot(w.T).reshape(x.shape)
    dw = x_rows.T.dot(dout)
    db = np.sum(dout, axis=0)
    return dx, dw, db


def relu_forward(x):
    """
    ReLU forward: max(0, x) elementwise. Returns (out, cache) with cache = x.
    """
    out = np.maximum(0, x)
    cache = x
    return out, cache


def relu_backward(dout, cache):
    """
    ReLU backward: the upstream gradient only flows where the input was positive.
    """
    x = cache
    dx = np.where(x > 0, dout, 0.0)
    return dx


def conv_forward_naive(x, w, b, conv_param):
    """
    Naive forward pass of a convolutional layer.

    x: input data (N, C, H, W)
    w: filter weights (F, C, HH, WW)
    b: biases (F,)
    conv_param: dict with 'stride' and 'pad' (zero padding on all four sides)

    Returns (out, cache): out is (N, F, H', W') with
      H' = 1 + (H + 2 * pad - HH) // stride
      W' = 1 + (W + 2 * pad - WW) // stride
    and cache = (x, w, b, conv_param).
    """
    stride = conv_param['stride']
    pad = conv_param['pad']
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    H_out = 1 + (H + 2 * pad - HH) // stride
    W_out = 1 + (W + 2 * pad - WW) // stride

    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode='constant')
    out = np.zeros((N, F, H_out, W_out), dtype=x_pad.dtype)

    for n in range(N):
        for f in range(F):
            for i in range(H_out):
                for j in range(W_out):
                    h0 = i * stride
                    w0 = j * stride
                    window = x_pad[n, :, h0:h0 + HH, w0:w0 + WW]
                    out[n, f, i, j] = np.sum(window * w[f]) + b[f]

    cache = (x, w, b, conv_param)
    return out, cache


def conv_backward_naive(dout, cache):
    """
    Naive backward pass of a convolutional layer.
    """
    global _dw_acc
    x, w, b, conv_param = cache
    stride = conv_param['stride']
    pad = conv_param['pad']
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    _, _, H_out, W_out = dout.shape

    if _dw_acc is None or _dw_acc.shape != w.shape:
        _dw_acc = np.zeros(w.shape, dtype=w.dtype)

    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode='constant')
    dx_pad = np.zeros_like(x_pad)
    db = np.sum(dout, axis=(0, 2, 3))

    for n in range(N):
        for f in range(F):
            for i in range(H_out):
                for j in range(W_out):
                    h0 = i * stride
                    w0 = j * stride
                    _dw_acc[f] += dout[n, f, i, j] * x_pad[n, :, h0:h0 + HH, w0:w0 + WW]
                    dx_pad[n, :, h0:h0 + HH, w0:w0 + WW] += dout[n, f, i, j] * w[f]

    dx = dx_pad[:, :, pad:pad + H, pad:pad + W]
    dw = _dw_acc.copy()
    return dx, dw, db


def max_pool_forward_naive(x, pool_param):
    """
    Naive forward pass of a max-pooling layer.

    x: input data (N, C, H, W)
    pool_param: dict with 'pool_height', 'pool_width' and 'stride'

    Returns (out, cache) with out of shape (N, C, H', W'),
      H' = 1 + (H - pool_height) // stride, W' = 1 + (W - pool_width) // stride
    and cache = (x, pool_param).
    """
    N, C, H, W = x.shape
    ph = pool_param['pool_height']
    pw = pool_param['pool_width']
    stride = pool_param['stride']
    H_out = 1 + (H - ph) // stride
    W_out = 1 + (W - pw) // stride

    out = np.zeros((N, C, H_out, W_out), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(H_out):
                for j in range(W_out):
                    h0 = i * stride
                    w0 = j * stride
                    out[n, c, i, j] = np.max(x[n, c, h0:h0 + ph, w0:w0 + pw])

    cache = (x, pool_param)
    return out, cache


def max_pool_backward_naive(dout, cache):
    """
    Naive backward pass of a max-pooling layer: each window sends its upstream
    gradient to the position of its maximum.
    """
    x, pool_param = cache
    N, C, H, W = x.shape
    ph = pool_param['pool_height']
    pw = pool_param['pool_width']
    stride = pool_param['stride']
    _, _, H_out, W_out = dout.shape

    dx = np.zeros_like(x)
    for n in range(N):
        for c in range(C):
            for i in range(H_out):
                for j in range(W_out):
                    h0 = i * stride
                    w0 = j * stride
                    window = x[n, c, h0:h0 + ph, w0:w0 + pw]
                    r, s = np.unravel_index(np.argmax(window), window.shape)
                    dx[n, c, h0 + r, w0 + s] += dout[n, c, i, j]
    return dx
