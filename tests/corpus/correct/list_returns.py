"""Layers that return lists instead of tuples: every forward pass returns
[out, cache] with a list cache, and the affine and convolution backward passes
return [dx, dw, db]."""

import numpy as np


def affine_forward(x, w, b):
    out = np.matmul(x.reshape(x.shape[0], -1), w) + b
    return [out, [x, w, b]]


def affine_backward(dout, cache):
    x, w, b = cache
    dx = np.matmul(dout, w.T).reshape(x.shape)
    dw = np.matmul(x.reshape(x.shape[0], -1).T, dout)
    db = np.sum(dout, axis=0)
    return [dx, dw, db]


def relu_forward(x):
    return [np.maximum(x, 0), [x]]


def relu_backward(dout, cache):
    [x] = cache
    return np.where(x > 0, dout, 0)


def conv_forward_naive(x, w, b, conv_param):
    stride, pad = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho = 1 + (H + 2 * pad - HH) // stride
    Wo = 1 + (W + 2 * pad - WW) // stride
    xp = np.pad(x, [[0, 0], [0, 0], [pad, pad], [pad, pad]])
    out = np.zeros([N, F, Ho, Wo], dtype=np.result_type(x, w, b))
    for i in range(Ho):
        for j in range(Wo):
            win = xp[:, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
            out[:, :, i, j] = np.einsum('nchw,fchw->nf', win, w) + b
    return [out, [x, w, b, conv_param]]


def conv_backward_naive(dout, cache):
    x, w, b, conv_param = cache
    stride, pad = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    xp = np.pad(x, [[0, 0], [0, 0], [pad, pad], [pad, pad]])
    dxp = np.zeros(xp.shape, dtype=np.result_type(xp, dout))
    dw = np.zeros(w.shape, dtype=np.result_type(xp, dout))
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            sl = [slice(None), slice(None), slice(i * stride, i * stride + HH), slice(j * stride, j * stride + WW)]
            dw += np.einsum('nf,nchw->fchw', dout[:, :, i, j], xp[tuple(sl)])
            dxp[tuple(sl)] += np.einsum('nf,fchw->nchw', dout[:, :, i, j], w)
    return [dxp[:, :, pad:pad + H, pad:pad + W], dw, dout.sum(axis=(0, 2, 3))]


def max_pool_forward_naive(x, pool_param):
    ph, pw, s = pool_param['pool_height'], pool_param['pool_width'], pool_param['stride']
    N, C, H, W = x.shape
    Ho, Wo = 1 + (H - ph) // s, 1 + (W - pw) // s
    out = np.empty([N, C, Ho, Wo], dtype=x.dtype)
    for i in range(Ho):
        for j in range(Wo):
            out[:, :, i, j] = np.amax(x[:, :, i * s:i * s + ph, j * s:j * s + pw], axis=(2, 3))
    return [out, [x, pool_param]]


def max_pool_backward_naive(dout, cache):
    x, pool_param = cache
    ph, pw, s = pool_param['pool_height'], pool_param['pool_width'], pool_param['stride']
    N, C, H, W = x.shape
    dx = np.zeros(x.shape, dtype=np.result_type(x, dout))
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            win = x[:, :, i * s:i * s + ph, j * s:j * s + pw].reshape(N, C, ph * pw)
            onehot = np.arange(ph * pw) == win.argmax(axis=2)[:, :, None]
            dx[:, :, i * s:i * s + ph, j * s:j * s + pw] += (onehot * dout[:, :, i, j, None]).reshape(N, C, ph, pw)
    return dx
