"""The convolution forward pass never adds the bias, and the backward pass,
consistently, returns db = 0. The gradients match this forward (the output does
not depend on b), but the forward is wrong whenever b != 0 and db is wrong.
"""

import numpy as np


def affine_forward(x, w, b):
    """Fully connected layer. x (N, ...) is flattened to (N, D); w is (D, M)."""
    out = x.reshape(x.shape[0], -1) @ w + b
    cache = (x, w, b)
    return out, cache


def affine_backward(dout, cache):
    """Gradients of the fully connected layer: returns dx, dw, db."""
    x, w, b = cache
    x2d = x.reshape(x.shape[0], -1)
    dx = (dout @ w.T).reshape(x.shape)
    dw = x2d.T @ dout
    db = dout.sum(axis=0)
    return dx, dw, db


def relu_forward(x):
    """Elementwise rectifier."""
    out = np.where(x > 0, x, 0)
    return out, x


def relu_backward(dout, cache):
    """Gradient of the rectifier: zero wherever the input was not positive."""
    x = cache
    dx = dout.copy()
    dx[x <= 0] = 0
    return dx


def conv_forward_naive(x, w, b, conv_param):
    """
    Convolution layer, vectorised over the batch and the output positions.
    """
    s, p = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho = (H + 2 * p - HH) // s + 1
    Wo = (W + 2 * p - WW) // s + 1

    xp = np.pad(x, [(0, 0), (0, 0), (p, p), (p, p)])
    cols = np.empty((N, C, HH, WW, Ho, Wo), dtype=xp.dtype)
    for kh in range(HH):
        for kw in range(WW):
            cols[:, :, kh, kw] = xp[:, :, kh:kh + s * Ho:s, kw:kw + s * Wo:s]

    out = np.tensordot(cols, w, axes=([1, 2, 3], [1, 2, 3])).transpose(0, 3, 1, 2)
    cache = (x, w, b, conv_param)
    return out, cache


def conv_backward_naive(dout, cache):
    """Backward pass of the convolution, looping over kernel offsets only."""
    x, w, b, conv_param = cache
    s, p = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho, Wo = dout.shape[2], dout.shape[3]

    xp = np.pad(x, [(0, 0), (0, 0), (p, p), (p, p)])
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for kh in range(HH):
        for kw in range(WW):
            patch = xp[:, :, kh:kh + s * Ho:s, kw:kw + s * Wo:s]
            dw[:, :, kh, kw] = np.einsum('nfij,ncij->fc', dout, patch)
            dxp[:, :, kh:kh + s * Ho:s, kw:kw + s * Wo:s] += np.einsum('nfij,fc->ncij', dout, w[:, :, kh, kw])
    db = np.zeros_like(b)
    dx = dxp[:, :, p:p + H, p:p + W]
    return dx, dw, db


def max_pool_forward_naive(x, pool_param):
    """Max pooling: running maximum over the window offsets, vectorised otherwise."""
    ph, pw = pool_param['pool_height'], pool_param['pool_width']
    s = pool_param['stride']
    N, C, H, W = x.shape
    Ho = (H - ph) // s + 1
    Wo = (W - pw) // s + 1

    out = np.full((N, C, Ho, Wo), -np.inf, dtype=x.dtype)
    for a in range(ph):
        for c in range(pw):
            out = np.maximum(out, x[:, :, a:a + s * Ho:s, c:c + s * Wo:s])
    cache = (x, pool_param)
    return out, cache


def max_pool_backward_naive(dout, cache):
    """Route each window's gradient to its first maximum (row-major order)."""
    x, pool_param = cache
    ph, pw = pool_param['pool_height'], pool_param['pool_width']
    s = pool_param['stride']
    Ho, Wo = dout.shape[2], dout.shape[3]

    out = np.full(dout.shape, -np.inf, dtype=x.dtype)
    for a in range(ph):
        for c in range(pw):
            out = np.maximum(out, x[:, :, a:a + s * Ho:s, c:c + s * Wo:s])

    dx = np.zeros_like(x)
    taken = np.zeros(dout.shape, dtype=bool)
    for a in range(ph):
        for c in range(pw):
            hit = (x[:, :, a:a + s * Ho:s, c:c + s * Wo:s] == out) & ~taken
            dx[:, :, a:a + s * Ho:s, c:c + s * Wo:s] += np.where(hit, dout, 0)
            taken |= hit
    return dx
