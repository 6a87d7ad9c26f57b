"""Vectorised layers whose caches are dictionaries with named entries
instead of tuples (the backward passes read cache['x'], cache['w'], ...)."""

import numpy as np


def affine_forward(x, w, b):
    flat = x.reshape(x.shape[0], -1)
    cache = {'x_shape': x.shape, 'x_flat': flat, 'w': w}
    return flat @ w + b, cache


def affine_backward(dout, cache):
    dx = (dout @ cache['w'].T).reshape(cache['x_shape'])
    dw = cache['x_flat'].T @ dout
    db = dout.sum(axis=0)
    return dx, dw, db


def relu_forward(x):
    positive = x > 0
    return np.where(positive, x, 0), {'mask': positive}


def relu_backward(dout, cache):
    return np.where(cache['mask'], dout, 0)


def conv_forward_naive(x, w, b, conv_param):
    s, p = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho = (H + 2 * p - HH) // s + 1
    Wo = (W + 2 * p - WW) // s + 1
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    out = np.zeros((N, F, Ho, Wo), dtype=np.result_type(x, w, b))
    for kh in range(HH):
        for kw in range(WW):
            sl = xp[:, :, kh:kh + s * Ho:s, kw:kw + s * Wo:s]
            out += np.einsum('nchw,fc->nfhw', sl, w[:, :, kh, kw])
    out += b[None, :, None, None]
    cache = {'x_pad': xp, 'w': w, 'stride': s, 'pad': p, 'in_hw': (H, W)}
    return out, cache


def conv_backward_naive(dout, cache):
    xp, w = cache['x_pad'], cache['w']
    s, p = cache['stride'], cache['pad']
    H, W = cache['in_hw']
    F, C, HH, WW = w.shape
    Ho, Wo = dout.shape[2:]
    dxp = np.zeros(xp.shape, dtype=np.result_type(xp, dout))
    dw = np.zeros(w.shape, dtype=np.result_type(xp, dout))
    for kh in range(HH):
        for kw in range(WW):
            sl = (slice(None), slice(None), slice(kh, kh + s * Ho, s), slice(kw, kw + s * Wo, s))
            dw[:, :, kh, kw] = np.einsum('nfhw,nchw->fc', dout, xp[sl])
            dxp[sl] += np.einsum('nfhw,fc->nchw', dout, w[:, :, kh, kw])
    return dxp[:, :, p:p + H, p:p + W], dw, dout.sum(axis=(0, 2, 3))


def max_pool_forward_naive(x, pool_param):
    ph, pw, s = pool_param['pool_height'], pool_param['pool_width'], pool_param['stride']
    N, C, H, W = x.shape
    Ho, Wo = (H - ph) // s + 1, (W - pw) // s + 1
    best = np.full((N, C, Ho, Wo), -np.inf, dtype=x.dtype)
    where = np.zeros((N, C, Ho, Wo), dtype=np.intp)
    for a in range(ph):
        for c in range(pw):
            cand = x[:, :, a:a + s * Ho:s, c:c + s * Wo:s]
            better = cand > best           # strict: the first maximum is kept
            best = np.where(better, cand, best)
            where = np.where(better, a * pw + c, where)
    cache = {'x_shape': x.shape, 'argmax': where, 'params': (ph, pw, s)}
    return best, cache


def max_pool_backward_naive(dout, cache):
    ph, pw, s = cache['params']
    where = cache['argmax']
    Ho, Wo = dout.shape[2:]
    dx = np.zeros(cache['x_shape'], dtype=dout.dtype)
    for a in range(ph):
        for c in range(pw):
            dx[:, :, a:a + s * Ho:s, c:c + s * Wo:s] += np.where(where == a * pw + c, dout, 0)
    return dx
