"""Layers that avoid explicit flattening: the affine layer contracts the
unflattened x (N, d_1, ..., d_k) with w reshaped to (d_1, ..., d_k, M) using
np.tensordot over k axes; the convolution handles one output row at a time
with an einsum over column windows; max pooling takes np.maximum.reduce over
the stack of shifted slices."""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def affine_forward(x, w, b):
    k = x.ndim - 1
    w_nd = w.reshape(x.shape[1:] + (w.shape[1],))
    out = np.tensordot(x, w_nd, axes=k) + b
    return out, (x, w, b)


def affine_backward(dout, cache):
    x, w, b = cache
    k = x.ndim - 1
    w_nd = w.reshape(x.shape[1:] + (w.shape[1],))
    dx = np.tensordot(dout, w_nd, axes=([1], [k]))                 # (N, d_1, ..., d_k)
    dw = np.tensordot(x, dout, axes=([0], [0])).reshape(w.shape)   # (d_1, ..., d_k, M) -> (D, M)
    db = dout.sum(axis=0)
    return dx, dw, db


def relu_forward(x):
    return np.maximum(x, 0), x


def relu_backward(dout, cache):
    return np.where(np.greater(cache, 0), dout, 0)


def _row_windows(xp_rows, WW, s, Wo):
    """(N, C, HH, Wo, WW) column windows of a block of padded rows."""
    return sliding_window_view(xp_rows, WW, axis=3)[:, :, :, ::s][:, :, :, :Wo]


def conv_forward_naive(x, w, b, conv_param):
    s, p = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho = 1 + (H + 2 * p - HH) // s
    Wo = 1 + (W + 2 * p - WW) // s
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    out = np.empty((N, F, Ho, Wo), dtype=np.result_type(x, w, b))
    for i in range(Ho):
        win = _row_windows(xp[:, :, i * s:i * s + HH], WW, s, Wo)
        out[:, :, i, :] = np.einsum('nckjl,fckl->nfj', win, w) + b[:, None]
    return out, (x, w, b, conv_param)


def conv_backward_naive(dout, cache):
    x, w, b, conv_param = cache
    s, p = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho, Wo = dout.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    dt = np.result_type(xp, dout, w)
    dxp = np.zeros(xp.shape, dtype=dt)
    dw = np.zeros(w.shape, dtype=dt)
    for i in range(Ho):
        g = dout[:, :, i, :]                                          # (N, F, Wo)
        win = _row_windows(xp[:, :, i * s:i * s + HH], WW, s, Wo)     # (N, C, HH, Wo, WW)
        dw += np.einsum('nfj,nckjl->fckl', g, win)
        contrib = np.einsum('nfj,fckl->nckjl', g, w)                   # (N, C, HH, Wo, WW)
        for l in range(WW):
            dxp[:, :, i * s:i * s + HH, l:l + s * Wo:s] += contrib[..., l]
    return dxp[:, :, p:p + H, p:p + W], dw, dout.sum(axis=(0, 2, 3))


def _shifted(x, ph, pw, s, Ho, Wo):
    return [x[:, :, a:a + s * Ho:s, c:c + s * Wo:s] for a in range(ph) for c in range(pw)]


def max_pool_forward_naive(x, pool_param):
    ph, pw, s = pool_param['pool_height'], pool_param['pool_width'], pool_param['stride']
    Ho = (x.shape[2] - ph) // s + 1
    Wo = (x.shape[3] - pw) // s + 1
    out = np.maximum.reduce(_shifted(x, ph, pw, s, Ho, Wo))
    return out, (x, pool_param)


def max_pool_backward_naive(dout, cache):
    x, pool_param = cache
    ph, pw, s = pool_param['pool_height'], pool_param['pool_width'], pool_param['stride']
    Ho, Wo = dout.shape[2:]
    stack = np.stack(_shifted(x, ph, pw, s, Ho, Wo))
    first = np.argmax(stack, axis=0)
    dx = np.zeros(x.shape, dtype=np.result_type(x, dout))
    for k in range(ph * pw):
        a, c = divmod(k, pw)
        dx[:, :, a:a + s * Ho:s, c:c + s * Wo:s] += np.where(first == k, dout, 0)
    return dx
