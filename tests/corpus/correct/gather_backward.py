"""Layers whose backward passes gather instead of scatter: for every position
of the padded input, dx sums the contributions of exactly the output windows
that cover it (for the convolution), or of the windows whose first maximum it
is (for max pooling), computed from index arithmetic rather than by adding
each window's gradient into a zero array."""

import numpy as np


def _covering(pos, size, k, stride):
    """Output indices o with o * stride <= pos < o * stride + k, 0 <= o < size."""
    lo = max(0, -(-(pos - k + 1) // stride))   # ceil((pos - k + 1) / stride)
    hi = min(size - 1, pos // stride)
    return range(lo, hi + 1)


def affine_forward(x, w, b):
    flat = x.reshape(x.shape[0], -1)
    return flat.dot(w) + b, (x, w, b)


def affine_backward(dout, cache):
    x, w, b = cache
    flat = x.reshape(x.shape[0], -1)
    dx = np.empty(flat.shape, dtype=np.result_type(dout, w))
    for d in range(flat.shape[1]):             # one input feature at a time
        dx[:, d] = dout.dot(w[d])
    dw = np.empty(w.shape, dtype=np.result_type(dout, x))
    for m in range(w.shape[1]):                # one output unit at a time
        dw[:, m] = flat.T.dot(dout[:, m])
    return dx.reshape(x.shape), dw, dout.sum(axis=0)


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
    out = np.empty((N, F, Ho, Wo), dtype=np.result_type(x, w, b))
    for i in range(Ho):
        for j in range(Wo):
            out[:, :, i, j] = np.einsum('nchw,fchw->nf', xp[:, :, i * s:i * s + HH, j * s:j * s + WW], w) + b
    return out, (x, w, b, conv_param)


def conv_backward_naive(dout, cache):
    x, w, b, conv_param = cache
    s, p = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho, Wo = dout.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    dt = np.result_type(xp, dout, w)

    # dw[f, c, a, e] = sum over n, i, j of dout[n, f, i, j] * xp[n, c, i*s + a, j*s + e]
    dw = np.empty(w.shape, dtype=dt)
    for a in range(HH):
        for e in range(WW):
            dw[:, :, a, e] = np.einsum('nfij,ncij->fc', dout, xp[:, :, a:a + s * Ho:s, e:e + s * Wo:s])

    # dx: each input pixel of x gathers from the windows covering its padded position
    dx = np.zeros((N, C, H, W), dtype=dt)
    for r in range(H):
        for t in range(W):
            rp, tp = r + p, t + p
            acc = dx[:, :, r, t]
            for i in _covering(rp, Ho, HH, s):
                for j in _covering(tp, Wo, WW, s):
                    acc += dout[:, :, i, j].dot(w[:, :, rp - i * s, tp - j * s])
    return dx, dw, dout.sum(axis=(0, 2, 3))


def max_pool_forward_naive(x, pool_param):
    ph, pw, s = pool_param['pool_height'], pool_param['pool_width'], pool_param['stride']
    N, C, H, W = x.shape
    Ho, Wo = (H - ph) // s + 1, (W - pw) // s + 1
    out = np.empty((N, C, Ho, Wo), dtype=x.dtype)
    for i in range(Ho):
        for j in range(Wo):
            out[:, :, i, j] = x[:, :, i * s:i * s + ph, j * s:j * s + pw].max(axis=(2, 3))
    return out, (x, pool_param)


def max_pool_backward_naive(dout, cache):
    x, pool_param = cache
    ph, pw, s = pool_param['pool_height'], pool_param['pool_width'], pool_param['stride']
    N, C, H, W = x.shape
    Ho, Wo = dout.shape[2:]
    # absolute (row, col) of the first maximum of every window
    arg_r = np.empty((N, C, Ho, Wo), dtype=np.intp)
    arg_c = np.empty((N, C, Ho, Wo), dtype=np.intp)
    for i in range(Ho):
        for j in range(Wo):
            k = x[:, :, i * s:i * s + ph, j * s:j * s + pw].reshape(N, C, -1).argmax(axis=2)
            arg_r[:, :, i, j] = i * s + k // pw
            arg_c[:, :, i, j] = j * s + k % pw
    dx = np.zeros(x.shape, dtype=np.result_type(x, dout))
    for r in range(H):
        for t in range(W):
            for i in _covering(r, Ho, ph, s):
                for j in _covering(t, Wo, pw, s):
                    hit = (arg_r[:, :, i, j] == r) & (arg_c[:, :, i, j] == t)
                    dx[:, :, r, t] += np.where(hit, dout[:, :, i, j], 0)
    return dx
