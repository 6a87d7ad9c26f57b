"""Layers written with numpy.lib.stride_tricks.sliding_window_view and einsum.
The convolution contracts a (N, C, H_out, W_out, HH, WW) window view with the
filters in one einsum; dw is another einsum over the same view and dx is
scattered back one kernel offset at a time. Pooling takes the maximum over a
window view and routes gradients with np.add.at to the first maximum."""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _windows(a, kh, kw, stride):
    """View of shape (N, C, H_out, W_out, kh, kw) of the stride-spaced windows of a."""
    return sliding_window_view(a, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]


def affine_forward(x, w, b):
    x2 = x.reshape(len(x), -1)
    out = np.einsum('nd,dm->nm', x2, w) + b
    return out, (x, w, b)


def affine_backward(dout, cache):
    x, w, b = cache
    x2 = x.reshape(len(x), -1)
    dx = np.einsum('nm,dm->nd', dout, w).reshape(x.shape)
    dw = np.einsum('nd,nm->dm', x2, dout)
    db = np.einsum('nm->m', dout)
    return dx, dw, db


def relu_forward(x):
    return np.clip(x, 0, None), x


def relu_backward(dout, cache):
    return np.where(cache > 0, dout, np.zeros_like(dout))


def conv_forward_naive(x, w, b, conv_param):
    s, p = conv_param['stride'], conv_param['pad']
    HH, WW = w.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    win = _windows(xp, HH, WW, s)
    out = np.einsum('nchwij,fcij->nfhw', win, w) + b[None, :, None, None]
    return out, (x, w, b, conv_param)


def conv_backward_naive(dout, cache):
    x, w, b, conv_param = cache
    s, p = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    HH, WW = w.shape[2:]
    Ho, Wo = dout.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    win = _windows(xp, HH, WW, s)
    dw = np.einsum('nfhw,nchwij->fcij', dout, win)
    db = np.einsum('nfhw->f', dout)
    dwin = np.einsum('nfhw,fcij->nchwij', dout, w)
    dxp = np.zeros_like(xp)
    for i in range(HH):
        for j in range(WW):
            dxp[:, :, i:i + s * Ho:s, j:j + s * Wo:s] += dwin[..., i, j]
    return dxp[:, :, p:p + H, p:p + W], dw, db


def max_pool_forward_naive(x, pool_param):
    ph, pw, s = pool_param['pool_height'], pool_param['pool_width'], pool_param['stride']
    out = _windows(x, ph, pw, s).max(axis=(4, 5))
    return out, (x, pool_param)


def max_pool_backward_naive(dout, cache):
    x, pool_param = cache
    ph, pw, s = pool_param['pool_height'], pool_param['pool_width'], pool_param['stride']
    N, C, Ho, Wo = dout.shape
    flat = _windows(x, ph, pw, s).reshape(N, C, Ho, Wo, ph * pw)
    kh, kw = np.divmod(flat.argmax(axis=-1), pw)
    n, c, i, j = np.ogrid[:N, :C, :Ho, :Wo]
    dx = np.zeros_like(x)
    np.add.at(dx, (n, c, i * s + kh, j * s + kw), dout)
    return dx
