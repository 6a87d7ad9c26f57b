"""Layers whose forward passes draw from numpy's global random generator in
ways that cannot change the result: filters are visited in a random order,
the pooling window offsets are scanned in a random order, a dropout-style mask
with keep probability 1 is applied after the affine product, and the ReLU adds
a noise term scaled by zero. The global random state advances on every call."""

import numpy as np


def affine_forward(x, w, b):
    out = x.reshape(x.shape[0], -1).dot(w) + b
    keep = np.random.rand(*out.shape) < 1.0      # dropout with p_keep = 1: keeps everything
    out = np.where(keep, out, 0)
    return out, (x, w, b)


def affine_backward(dout, cache):
    x, w, b = cache
    dx = dout.dot(w.T).reshape(x.shape)
    dw = x.reshape(x.shape[0], -1).T.dot(dout)
    db = dout.sum(axis=0)
    return dx, dw, db


def relu_forward(x):
    noise_std = 0.0
    jitter = noise_std * np.random.randn(*np.shape(x))
    out = np.maximum(x + jitter, 0)
    return out, x


def relu_backward(dout, cache):
    return np.where(cache > 0, dout, 0)


def conv_forward_naive(x, w, b, conv_param):
    stride, pad = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    H_out = 1 + (H + 2 * pad - HH) // stride
    W_out = 1 + (W + 2 * pad - WW) // stride
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((N, F, H_out, W_out), dtype=np.result_type(x, w, b))
    for f in np.random.permutation(F):
        for i in range(H_out):
            for j in range(W_out):
                patch = xp[:, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
                out[:, f, i, j] = np.sum(patch * w[f], axis=(1, 2, 3)) + b[f]
    return out, (x, w, b, conv_param)


def conv_backward_naive(dout, cache):
    x, w, b, conv_param = cache
    stride, pad = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    _, _, H_out, W_out = dout.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp = np.zeros(xp.shape, dtype=np.result_type(xp, dout))
    dw = np.zeros(w.shape, dtype=np.result_type(xp, dout))
    for f in range(F):
        for i in range(H_out):
            for j in range(W_out):
                rows = slice(i * stride, i * stride + HH)
                cols = slice(j * stride, j * stride + WW)
                g = dout[:, f, i, j]
                dw[f] += np.tensordot(g, xp[:, :, rows, cols], axes=(0, 0))
                dxp[:, :, rows, cols] += g[:, None, None, None] * w[f]
    return dxp[:, :, pad:pad + H, pad:pad + W], dw, dout.sum(axis=(0, 2, 3))


def max_pool_forward_naive(x, pool_param):
    ph, pw, s = pool_param['pool_height'], pool_param['pool_width'], pool_param['stride']
    N, C, H, W = x.shape
    Ho, Wo = (H - ph) // s + 1, (W - pw) // s + 1
    out = np.full((N, C, Ho, Wo), -np.inf, dtype=x.dtype)
    for k in np.random.permutation(ph * pw):            # the max does not depend on the order
        a, c = divmod(int(k), pw)
        out = np.maximum(out, x[:, :, a:a + s * Ho:s, c:c + s * Wo:s])
    return out, (x, pool_param)


def max_pool_backward_naive(dout, cache):
    x, pool_param = cache
    ph, pw, s = pool_param['pool_height'], pool_param['pool_width'], pool_param['stride']
    N, C, H, W = x.shape
    dx = np.zeros(x.shape, dtype=np.result_type(x, dout))
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            win = x[:, :, i * s:i * s + ph, j * s:j * s + pw].reshape(N, C, ph * pw)
            k = np.argmax(win, axis=2)
            for n in range(N):
                for c in range(C):
                    dx[n, c, i * s + k[n, c] // pw, j * s + k[n, c] % pw] += dout[n, c, i, j]
    return dx
