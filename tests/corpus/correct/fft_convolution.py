"""Convolution computed with FFTs (numpy.fft.rfft2 / irfft2) in both passes:
the forward pass is a valid cross-correlation subsampled by the stride, dw is
the correlation of the padded input with the stride-dilated upstream gradient,
and dx_pad is the full convolution of that gradient with the filters. The
transforms run in np.longdouble (extended precision where the platform has
it), so the float64 results carry no visible FFT round-off, and the padded
input is cropped to the rows and columns some window reaches, so inputs that
no window touches have no influence at all (and an exact zero gradient). The
other layers are plain numpy."""

import numpy as np

_rfft2 = np.fft.rfft2
_irfft2 = np.fft.irfft2


_EXT = np.longdouble


def _ext(a):
    return np.asarray(a, dtype=_EXT)


def affine_forward(x, w, b):
    out = x.reshape(x.shape[0], -1) @ w + b
    return out, (x, w, b)


def affine_backward(dout, cache):
    x, w, b = cache
    dx = (dout @ w.T).reshape(x.shape)
    dw = x.reshape(x.shape[0], -1).T @ dout
    db = dout.sum(axis=0)
    return dx, dw, db


def relu_forward(x):
    return np.maximum(x, 0), x


def relu_backward(dout, cache):
    return np.where(cache > 0, dout, 0)


def conv_forward_naive(x, w, b, conv_param):
    s, p = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho = 1 + (H + 2 * p - HH) // s
    Wo = 1 + (W + 2 * p - WW) // s
    xp = np.pad(_ext(x), ((0, 0), (0, 0), (p, p), (p, p)))
    xp = xp[:, :, :s * (Ho - 1) + HH, :s * (Wo - 1) + WW]   # only what some window reaches
    Hp, Wp = xp.shape[2:]
    size = (Hp + HH - 1, Wp + WW - 1)               # full linear size: no wrap-around
    X = _rfft2(xp, s=size)                          # (N, C, ...)
    K = _rfft2(_ext(w)[:, :, ::-1, ::-1], s=size)   # flipped kernel: correlation as convolution
    full = _irfft2(np.einsum('nchw,fchw->nfhw', X, K), s=size)
    valid = full[:, :, HH - 1:Hp, WW - 1:Wp]        # every stride-1 window position
    out = valid[:, :, ::s, ::s] + _ext(b)[None, :, None, None]
    out = out.astype(np.result_type(x, w, b))
    return out, (x, w, b, conv_param)


def conv_backward_naive(dout, cache):
    x, w, b, conv_param = cache
    s, p = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho, Wo = dout.shape[2:]
    dtype = np.result_type(x, w, b)
    xp = np.pad(_ext(x), ((0, 0), (0, 0), (p, p), (p, p)))
    xp = xp[:, :, :s * (Ho - 1) + HH, :s * (Wo - 1) + WW]   # the part some window reaches
    Hp, Wp = xp.shape[2:]
    Hv, Wv = Hp - HH + 1, Wp - WW + 1               # stride-1 output size

    g = np.zeros((N, F, Hv, Wv), dtype=_EXT)
    g[:, :, ::s, ::s] = dout                        # upstream gradient on the stride-1 grid

    # dw[f, c, a, b] = sum_n sum_ij g[n, f, i, j] * xp[n, c, i + a, j + b]
    size = (Hp + Hv - 1, Wp + Wv - 1)
    G = _rfft2(g[:, :, ::-1, ::-1], s=size)
    X = _rfft2(xp, s=size)
    full = _irfft2(np.einsum('nfhw,nchw->fchw', G, X), s=size)
    dw = full[:, :, Hv - 1:Hv - 1 + HH, Wv - 1:Wv - 1 + WW]

    # dxp[n, c, r, t] = sum_f sum_ij g[n, f, i, j] * w[f, c, r - i, t - j]  (full convolution)
    size = (Hp, Wp)                                 # Hv + HH - 1 == Hp
    Gd = _rfft2(g, s=size)
    Wf = _rfft2(_ext(w), s=size)
    reached = _irfft2(np.einsum('nfhw,fchw->nchw', Gd, Wf), s=size)
    # positions no window reaches (cropped above) have an exact zero gradient
    dxp = np.zeros((N, C, H + 2 * p, W + 2 * p), dtype=_EXT)
    dxp[:, :, :Hp, :Wp] = reached
    dx = dxp[:, :, p:p + H, p:p + W]

    db = np.asarray(dout, dtype=np.float64).sum(axis=(0, 2, 3))
    return dx.astype(dtype), dw.astype(dtype), db.astype(dtype)


def max_pool_forward_naive(x, pool_param):
    ph, pw, s = pool_param['pool_height'], pool_param['pool_width'], pool_param['stride']
    N, C, H, W = x.shape
    Ho, Wo = 1 + (H - ph) // s, 1 + (W - pw) // s
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
    dx = np.zeros(x.shape, dtype=np.result_type(x, dout))
    n, c = np.ogrid[:N, :C]
    for i in range(Ho):
        for j in range(Wo):
            k = x[:, :, i * s:i * s + ph, j * s:j * s + pw].reshape(N, C, ph * pw).argmax(axis=2)
            dx[n, c, i * s + k // pw, j * s + k % pw] += dout[:, :, i, j]
    return dx
