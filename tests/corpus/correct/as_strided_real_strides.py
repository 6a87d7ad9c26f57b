"""Layers that build their window views with np.lib.stride_tricks.as_strided
from the array's own strides (so transposed, sliced or Fortran-ordered inputs
work), contract them with tensordot, and scatter gradients back with one
strided slice per kernel or window offset."""

import numpy as np
from numpy.lib.stride_tricks import as_strided


def window_view(a, kh, kw, stride):
    """Read-only (N, C, H_out, W_out, kh, kw) view of a's windows, using a.strides."""
    N, C, H, W = a.shape
    Ho = 1 + (H - kh) // stride
    Wo = 1 + (W - kw) // stride
    sn, sc, sh, sw = a.strides
    return as_strided(a, shape=(N, C, Ho, Wo, kh, kw),
                      strides=(sn, sc, sh * stride, sw * stride, sh, sw), writeable=False)


def affine_forward(x, w, b):
    out = x.reshape(x.shape[0], -1).dot(w)
    out += b
    return out, (x, w, b)


def affine_backward(dout, cache):
    x, w, b = cache
    dx = dout.dot(w.T).reshape(x.shape)
    dw = x.reshape(x.shape[0], -1).T.dot(dout)
    db = dout.sum(0)
    return dx, dw, db


def relu_forward(x):
    out = np.maximum(x, 0)
    return out, x


def relu_backward(dout, cache):
    dx = np.zeros(dout.shape, dtype=np.result_type(dout, cache))
    pos = cache > 0
    dx[pos] = dout[pos]
    return dx


def conv_forward_naive(x, w, b, conv_param):
    s, p = conv_param['stride'], conv_param['pad']
    HH, WW = w.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    win = window_view(xp, HH, WW, s)
    out = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3]))   # (N, Ho, Wo, F)
    out = np.moveaxis(out, 3, 1) + b.reshape(1, -1, 1, 1)
    return out, (x, w, b, conv_param)


def conv_backward_naive(dout, cache):
    x, w, b, conv_param = cache
    s, p = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    HH, WW = w.shape[2:]
    Ho, Wo = dout.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    win = window_view(xp, HH, WW, s)
    dw = np.tensordot(dout, win, axes=([0, 2, 3], [0, 2, 3]))  # (F, C, HH, WW)
    db = dout.sum(axis=(0, 2, 3))
    dxp = np.zeros(xp.shape, dtype=np.result_type(dout, w))
    for i in range(HH):
        for j in range(WW):
            g = np.tensordot(dout, w[:, :, i, j], axes=([1], [0]))   # (N, Ho, Wo, C)
            dxp[:, :, i:i + s * Ho:s, j:j + s * Wo:s] += np.moveaxis(g, 3, 1)
    dx = dxp[:, :, p:p + H, p:p + W]
    return dx, dw, db


def max_pool_forward_naive(x, pool_param):
    ph, pw, s = pool_param['pool_height'], pool_param['pool_width'], pool_param['stride']
    out = window_view(x, ph, pw, s).max(axis=(4, 5))
    return out, (x, pool_param)


def max_pool_backward_naive(dout, cache):
    x, pool_param = cache
    ph, pw, s = pool_param['pool_height'], pool_param['pool_width'], pool_param['stride']
    N, C, Ho, Wo = dout.shape
    win = window_view(x, ph, pw, s)
    first = win.reshape(N, C, Ho, Wo, ph * pw).argmax(axis=4)   # reshape copies the view
    dx = np.zeros(x.shape, dtype=np.result_type(x, dout))
    for a in range(ph):
        for c in range(pw):
            hit = first == a * pw + c
            dx[:, :, a:a + s * Ho:s, c:c + s * Wo:s] += np.where(hit, dout, 0)
    return dx
