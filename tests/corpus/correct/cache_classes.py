"""Layers whose caches are small class instances (with __slots__) holding
what the backward pass needs; the arithmetic is loop-over-output-positions
numpy."""

import numpy as np


class AffineCache:
    __slots__ = ('x', 'w')

    def __init__(self, x, w):
        self.x = x
        self.w = w


class ReluCache:
    __slots__ = ('x',)

    def __init__(self, x):
        self.x = x


class ConvCache:
    __slots__ = ('x', 'w', 'stride', 'pad')

    def __init__(self, x, w, stride, pad):
        self.x, self.w, self.stride, self.pad = x, w, stride, pad

    def padded(self):
        p = self.pad
        return np.pad(self.x, ((0, 0), (0, 0), (p, p), (p, p)))


class PoolCache:
    __slots__ = ('x', 'height', 'width', 'stride')

    def __init__(self, x, pool_param):
        self.x = x
        self.height = pool_param['pool_height']
        self.width = pool_param['pool_width']
        self.stride = pool_param['stride']

    def window(self, i, j):
        r, c = i * self.stride, j * self.stride
        return slice(r, r + self.height), slice(c, c + self.width)


def affine_forward(x, w, b):
    return np.dot(x.reshape(x.shape[0], -1), w) + b, AffineCache(x, w)


def affine_backward(dout, cache):
    x, w = cache.x, cache.w
    dx = np.dot(dout, w.T).reshape(x.shape)
    dw = np.dot(x.reshape(x.shape[0], -1).T, dout)
    return dx, dw, np.sum(dout, axis=0)


def relu_forward(x):
    return np.maximum(x, 0), ReluCache(x)


def relu_backward(dout, cache):
    return np.where(cache.x > 0, dout, 0)


def conv_forward_naive(x, w, b, conv_param):
    cache = ConvCache(x, w, conv_param['stride'], conv_param['pad'])
    s = cache.stride
    xp = cache.padded()
    N = x.shape[0]
    F, _, HH, WW = w.shape
    Ho = (xp.shape[2] - HH) // s + 1
    Wo = (xp.shape[3] - WW) // s + 1
    out = np.empty((N, F, Ho, Wo), dtype=np.result_type(x, w, b))
    for i in range(Ho):
        for j in range(Wo):
            patch = xp[:, :, i * s:i * s + HH, j * s:j * s + WW]
            out[:, :, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3])) + b
    return out, cache


def conv_backward_naive(dout, cache):
    s, p, w = cache.stride, cache.pad, cache.w
    xp = cache.padded()
    F, C, HH, WW = w.shape
    H, W = cache.x.shape[2:]
    dxp = np.zeros(xp.shape, dtype=np.result_type(xp, dout))
    dw = np.zeros(w.shape, dtype=np.result_type(xp, dout))
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            rows, cols = slice(i * s, i * s + HH), slice(j * s, j * s + WW)
            g = dout[:, :, i, j]
            dw += np.tensordot(g, xp[:, :, rows, cols], axes=(0, 0))
            dxp[:, :, rows, cols] += np.tensordot(g, w, axes=(1, 0))
    return dxp[:, :, p:p + H, p:p + W], dw, dout.sum(axis=(0, 2, 3))


def max_pool_forward_naive(x, pool_param):
    cache = PoolCache(x, pool_param)
    N, C, H, W = x.shape
    Ho = (H - cache.height) // cache.stride + 1
    Wo = (W - cache.width) // cache.stride + 1
    out = np.empty((N, C, Ho, Wo), dtype=x.dtype)
    for i in range(Ho):
        for j in range(Wo):
            rows, cols = cache.window(i, j)
            out[:, :, i, j] = x[:, :, rows, cols].max(axis=(2, 3))
    return out, cache


def max_pool_backward_naive(dout, cache):
    x = cache.x
    N, C = x.shape[:2]
    dx = np.zeros(x.shape, dtype=np.result_type(x, dout))
    n, c = np.meshgrid(np.arange(N), np.arange(C), indexing='ij')
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            rows, cols = cache.window(i, j)
            k = x[:, :, rows, cols].reshape(N, C, -1).argmax(axis=2)
            r, t = np.divmod(k, cache.width)
            dx[n, c, rows.start + r, cols.start + t] += dout[:, :, i, j]
    return dx
