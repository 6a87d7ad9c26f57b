"""Vectorised layers from a module that calls np.seterr(all='raise') when it
is imported (a habit picked up to catch overflows while debugging). Nothing in
the layers produces a floating-point warning, so the results are unaffected."""

import numpy as np

np.seterr(all='raise')


def affine_forward(x, w, b):
    N = x.shape[0]
    return x.reshape(N, -1) @ w + b, (x, w, b)


def affine_backward(dout, cache):
    x, w, b = cache
    N = x.shape[0]
    return (dout @ w.T).reshape(x.shape), x.reshape(N, -1).T @ dout, dout.sum(axis=0)


def relu_forward(x):
    return np.maximum(x, 0), x


def relu_backward(dout, cache):
    return np.where(cache > 0, dout, 0)


def conv_forward_naive(x, w, b, conv_param):
    s, p = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho = (H + 2 * p - HH) // s + 1
    Wo = (W + 2 * p - WW) // s + 1
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    cols = np.stack([xp[:, :, kh:kh + s * Ho:s, kw:kw + s * Wo:s]
                     for kh in range(HH) for kw in range(WW)], axis=2)      # (N, C, HH*WW, Ho, Wo)
    out = np.tensordot(w.reshape(F, C, HH * WW), cols, axes=([1, 2], [1, 2]))  # (F, N, Ho, Wo)
    out = out.transpose(1, 0, 2, 3) + b[:, None, None]
    return out, (x, w, b, conv_param)


def conv_backward_naive(dout, cache):
    x, w, b, conv_param = cache
    s, p = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho, Wo = dout.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    dxp = np.zeros_like(xp, dtype=np.result_type(xp, dout))
    dw = np.empty(w.shape, dtype=np.result_type(xp, dout))
    for kh in range(HH):
        for kw in range(WW):
            rows, cols = slice(kh, kh + s * Ho, s), slice(kw, kw + s * Wo, s)
            dw[:, :, kh, kw] = np.tensordot(dout, xp[:, :, rows, cols], axes=([0, 2, 3], [0, 2, 3]))
            dxp[:, :, rows, cols] += np.tensordot(dout, w[:, :, kh, kw], axes=([1], [0])).transpose(0, 3, 1, 2)
    return dxp[:, :, p:p + H, p:p + W], dw, dout.sum(axis=(0, 2, 3))


def max_pool_forward_naive(x, pool_param):
    ph, pw, s = pool_param['pool_height'], pool_param['pool_width'], pool_param['stride']
    N, C, H, W = x.shape
    Ho, Wo = (H - ph) // s + 1, (W - pw) // s + 1
    out = x[:, :, 0:s * Ho:s, 0:s * Wo:s].copy()
    for a in range(ph):
        for c in range(pw):
            np.maximum(out, x[:, :, a:a + s * Ho:s, c:c + s * Wo:s], out=out)
    return out, (x, pool_param)


def max_pool_backward_naive(dout, cache):
    x, pool_param = cache
    ph, pw, s = pool_param['pool_height'], pool_param['pool_width'], pool_param['stride']
    Ho, Wo = dout.shape[2:]
    out, _ = max_pool_forward_naive(x, pool_param)
    dx = np.zeros(x.shape, dtype=np.result_type(x, dout))
    done = np.zeros(out.shape, dtype=bool)
    for a in range(ph):
        for c in range(pw):
            sl = (slice(None), slice(None), slice(a, a + s * Ho, s), slice(c, c + s * Wo, s))
            first = (x[sl] == out) & ~done
            dx[sl] += np.where(first, dout, 0)
            done |= first
    return dx
