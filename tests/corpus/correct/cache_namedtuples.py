"""Loop-style layers whose caches are collections.namedtuple instances."""

from collections import namedtuple

import numpy as np

AffineCache = namedtuple('AffineCache', 'x w b')
ReluCache = namedtuple('ReluCache', 'x')
ConvCache = namedtuple('ConvCache', 'x w b stride pad')
PoolCache = namedtuple('PoolCache', 'x pool_height pool_width stride')


def affine_forward(x, w, b):
    out = x.reshape(x.shape[0], -1).dot(w) + b
    return out, AffineCache(x, w, b)


def affine_backward(dout, cache):
    x2 = cache.x.reshape(cache.x.shape[0], -1)
    dx = dout.dot(cache.w.T).reshape(cache.x.shape)
    return dx, x2.T.dot(dout), dout.sum(axis=0)


def relu_forward(x):
    return np.maximum(x, 0.0), ReluCache(x)


def relu_backward(dout, cache):
    dx = np.zeros_like(dout)
    on = cache.x > 0
    dx[on] = dout[on]
    return dx


def conv_forward_naive(x, w, b, conv_param):
    c = ConvCache(x, w, b, conv_param['stride'], conv_param['pad'])
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho = 1 + (H + 2 * c.pad - HH) // c.stride
    Wo = 1 + (W + 2 * c.pad - WW) // c.stride
    xp = np.pad(x, ((0, 0), (0, 0), (c.pad, c.pad), (c.pad, c.pad)))
    out = np.zeros((N, F, Ho, Wo), dtype=np.result_type(x, w, b))
    for n in range(N):
        for i in range(Ho):
            for j in range(Wo):
                r, q = i * c.stride, j * c.stride
                patch = xp[n, :, r:r + HH, q:q + WW]
                for f in range(F):
                    out[n, f, i, j] = (patch * w[f]).sum() + b[f]
    return out, c


def conv_backward_naive(dout, cache):
    x, w, b, stride, pad = cache
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho, Wo = dout.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp = np.zeros(xp.shape, dtype=np.result_type(xp, dout))
    dw = np.zeros(w.shape, dtype=np.result_type(xp, dout))
    for n in range(N):
        for i in range(Ho):
            for j in range(Wo):
                r, q = i * stride, j * stride
                for f in range(F):
                    g = dout[n, f, i, j]
                    dw[f] += g * xp[n, :, r:r + HH, q:q + WW]
                    dxp[n, :, r:r + HH, q:q + WW] += g * w[f]
    return dxp[:, :, pad:pad + H, pad:pad + W], dw, dout.sum(axis=(0, 2, 3))


def max_pool_forward_naive(x, pool_param):
    c = PoolCache(x, pool_param['pool_height'], pool_param['pool_width'], pool_param['stride'])
    N, C, H, W = x.shape
    Ho = 1 + (H - c.pool_height) // c.stride
    Wo = 1 + (W - c.pool_width) // c.stride
    out = np.zeros((N, C, Ho, Wo), dtype=x.dtype)
    for n in range(N):
        for ch in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    r, q = i * c.stride, j * c.stride
                    out[n, ch, i, j] = x[n, ch, r:r + c.pool_height, q:q + c.pool_width].max()
    return out, c


def max_pool_backward_naive(dout, cache):
    x, ph, pw, stride = cache
    N, C, H, W = x.shape
    dx = np.zeros(x.shape, dtype=np.result_type(x, dout))
    for n in range(N):
        for ch in range(C):
            for i in range(dout.shape[2]):
                for j in range(dout.shape[3]):
                    r, q = i * stride, j * stride
                    a, t = divmod(int(np.argmax(x[n, ch, r:r + ph, q:q + pw])), pw)
                    dx[n, ch, r + a, q + t] += dout[n, ch, i, j]
    return dx
