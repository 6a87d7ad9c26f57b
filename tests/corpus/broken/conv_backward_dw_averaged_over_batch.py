"""The convolution backward pass divides dw by the batch size N, as if the layer
averaged over the batch (that averaging belongs in the loss, not in the layer).
Correct only for N == 1.
"""

import numpy as np


def affine_forward(x, w, b):
    """
    Affine layer forward.
    x: (N, d1, ..., dk), w: (D, M), b: (M,). Returns out (N, M) and the cache.
    """
    num_inputs = x.shape[0]
    input_dim = int(np.prod(x.shape[1:]))
    out = np.dot(x.reshape(num_inputs, input_dim), w) + b
    cache = (x, w, b)
    return out, cache


def affine_backward(dout, cache):
    """
    Affine layer backward. Returns (dx, dw, db).
    """
    x, w, b = cache
    num_inputs = x.shape[0]
    input_dim = int(np.prod(x.shape[1:]))
    x_flat = x.reshape(num_inputs, input_dim)

    dx = np.dot(dout, w.T)          # (N, D)
    dx = np.reshape(dx, x.shape)    # back to the input's shape
    dw = np.dot(x_flat.T, dout)     # (D, M)
    db = np.sum(dout, axis=0)       # (M,)
    return dx, dw, db


def relu_forward(x):
    """ReLU forward."""
    out = x.copy()
    out[out < 0] = 0
    cache = x
    return out, cache


def relu_backward(dout, cache):
    """ReLU backward."""
    x = cache
    mask = (x > 0)
    dx = np.zeros_like(dout)
    dx[mask] = dout[mask]
    return dx


def conv_forward_naive(x, w, b, conv_param):
    """
    Convolution forward: loop over output positions, and for each one do all
    images and all filters at once with tensordot.
    """
    stride, pad = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    F, C, HH, WW = w.shape
    H_out = 1 + (H + 2 * pad - HH) // stride
    W_out = 1 + (W + 2 * pad - WW) // stride

    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), 'constant', constant_values=0)
    out = np.zeros((N, F, H_out, W_out), dtype=x_pad.dtype)
    for i in range(H_out):
        for j in range(W_out):
            patch = x_pad[:, :, i * stride:i * stride + HH, j * stride:j * stride + WW]  # N, C, HH, WW
            out[:, :, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3])) + b
    cache = (x, w, b, conv_param)
    return out, cache


def conv_backward_naive(dout, cache):
    """
    Convolution backward, same loop structure as the forward pass.
    """
    x, w, b, conv_param = cache
    stride, pad = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    F, C, HH, WW = w.shape
    N, F, H_out, W_out = dout.shape

    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), 'constant', constant_values=0)
    dx_pad = np.zeros(x_pad.shape, dtype=x_pad.dtype)
    dw = np.zeros(w.shape, dtype=w.dtype)
    db = dout.sum(axis=(0, 2, 3))

    for i in range(H_out):
        for j in range(W_out):
            rows = slice(i * stride, i * stride + HH)
            cols = slice(j * stride, j * stride + WW)
            g = dout[:, :, i, j]                                            # N, F
            dw += np.tensordot(g, x_pad[:, :, rows, cols], axes=([0], [0]))   # F, C, HH, WW
            dx_pad[:, :, rows, cols] += np.tensordot(g, w, axes=([1], [0]))   # N, C, HH, WW

    dw /= N   # average over the minibatch
    dx = dx_pad[:, :, pad:pad + H, pad:pad + W]
    return dx, dw, db


def max_pool_forward_naive(x, pool_param):
    """
    Max pooling forward, looping over output positions only.
    """
    N, C, H, W = x.shape
    pool_height = pool_param['pool_height']
    pool_width = pool_param['pool_width']
    stride = pool_param['stride']
    H_out = (H - pool_height) // stride + 1
    W_out = (W - pool_width) // stride + 1

    out = np.zeros((N, C, H_out, W_out), dtype=x.dtype)
    for i in range(H_out):
        for j in range(W_out):
            window = x[:, :, i * stride:i * stride + pool_height, j * stride:j * stride + pool_width]
            out[:, :, i, j] = np.max(window, axis=(2, 3))
    cache = (x, pool_param)
    return out, cache


def max_pool_backward_naive(dout, cache):
    """
    Max pooling backward: one-hot mask of the argmax of every window.
    """
    x, pool_param = cache
    N, C, H, W = x.shape
    pool_height = pool_param['pool_height']
    pool_width = pool_param['pool_width']
    stride = pool_param['stride']
    _, _, H_out, W_out = dout.shape

    dx = np.zeros_like(x)
    for i in range(H_out):
        for j in range(W_out):
            rows = slice(i * stride, i * stride + pool_height)
            cols = slice(j * stride, j * stride + pool_width)
            window = x[:, :, rows, cols].reshape(N, C, pool_height * pool_width)
            idx = np.argmax(window, axis=2)
            mask = np.zeros_like(window)
            np.put_along_axis(mask, idx[:, :, None], 1, axis=2)
            dx[:, :, rows, cols] += (mask * dout[:, :, i, j][:, :, None]).reshape(N, C, pool_height, pool_width)
    return dx
