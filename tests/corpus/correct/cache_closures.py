"""Layers whose cache is a closure: each forward pass returns a function that,
given dout, computes the gradients from the variables it captured, and each
backward pass just calls it."""

import numpy as np


def affine_forward(x, w, b):
    shape = x.shape
    rows = x.reshape(shape[0], -1)

    def grads(dout):
        return (dout @ w.T).reshape(shape), rows.T @ dout, dout.sum(axis=0)

    return rows @ w + b, grads


def affine_backward(dout, cache):
    return cache(dout)


def relu_forward(x):
    keep = x > 0

    def grads(dout):
        return np.where(keep, dout, 0)

    return np.where(keep, x, 0), grads


def relu_backward(dout, cache):
    return cache(dout)


def conv_forward_naive(x, w, b, conv_param):
    s, p = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    Ho = (H + 2 * p - HH) // s + 1
    Wo = (W + 2 * p - WW) // s + 1

    def offsets():
        for kh in range(HH):
            for kw in range(WW):
                yield kh, kw, (slice(None), slice(None), slice(kh, kh + s * Ho, s), slice(kw, kw + s * Wo, s))

    out = np.zeros((N, Ho, Wo, F), dtype=np.result_type(x, w, b))
    for kh, kw, sl in offsets():
        out += np.tensordot(xp[sl], w[:, :, kh, kw], axes=([1], [1]))   # (N, Ho, Wo, F)
    out = out.transpose(0, 3, 1, 2) + b[:, None, None]

    def grads(dout):
        dxp = np.zeros(xp.shape, dtype=np.result_type(xp, dout))
        dw = np.zeros(w.shape, dtype=np.result_type(xp, dout))
        for kh, kw, sl in offsets():
            dw[:, :, kh, kw] = np.tensordot(dout, xp[sl], axes=([0, 2, 3], [0, 2, 3]))
            dxp[sl] += np.tensordot(w[:, :, kh, kw], dout, axes=([0], [1])).transpose(1, 0, 2, 3)
        return dxp[:, :, p:p + H, p:p + W], dw, dout.sum(axis=(0, 2, 3))

    return out, grads


def conv_backward_naive(dout, cache):
    return cache(dout)


def max_pool_forward_naive(x, pool_param):
    ph, pw, s = pool_param['pool_height'], pool_param['pool_width'], pool_param['stride']
    N, C, H, W = x.shape
    Ho, Wo = (H - ph) // s + 1, (W - pw) // s + 1
    stack = np.stack([x[:, :, a:a + s * Ho:s, c:c + s * Wo:s] for a in range(ph) for c in range(pw)])
    first = stack.argmax(axis=0)                        # first maximum in row-major window order
    out = np.take_along_axis(stack, first[None], axis=0)[0]

    def grads(dout):
        dx = np.zeros(x.shape, dtype=np.result_type(x, dout))
        for k in range(ph * pw):
            a, c = divmod(k, pw)
            dx[:, :, a:a + s * Ho:s, c:c + s * Wo:s] += np.where(first == k, dout, 0)
        return dx

    return out, grads


def max_pool_backward_naive(dout, cache):
    return cache(dout)
