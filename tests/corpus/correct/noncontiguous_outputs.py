"""Layers whose returned arrays are deliberately not C-contiguous: outputs and
gradients are computed in buffers with another axis order and returned as
transposed views (Fortran-ordered or with permuted strides), and db is a
strided column of a larger array. The values are exact."""

import numpy as np


def _f_empty(shape, dtype):
    """An uninitialised array of the given shape whose memory is in reverse axis order."""
    return np.empty(tuple(shape)[::-1], dtype=dtype).T


def affine_forward(x, w, b):
    x2 = x.reshape(x.shape[0], -1)
    out = (w.T @ x2.T + b[:, None]).T          # (N, M), Fortran-ordered view
    return out, (x, w, b)


def affine_backward(dout, cache):
    x, w, b = cache
    x2 = x.reshape(x.shape[0], -1)
    dx = _f_empty(x.shape, np.result_type(dout, w))
    dx[...] = (dout @ w.T).reshape(x.shape)
    dw = (dout.T @ x2).T                       # (D, M) view of an (M, D) product
    acc = np.zeros((w.shape[1], 2), dtype=np.result_type(dout))
    acc[:, 0] = dout.sum(axis=0)
    db = acc[:, 0]                             # stride of two elements
    return dx, dw, db


def relu_forward(x):
    out = _f_empty(x.shape, x.dtype)
    np.maximum(x, 0, out=out)
    return out, x


def relu_backward(dout, cache):
    dx = _f_empty(dout.shape, np.result_type(dout, cache))
    dx[...] = np.where(cache > 0, dout, 0)
    return dx


def conv_forward_naive(x, w, b, conv_param):
    s, p = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho = 1 + (H + 2 * p - HH) // s
    Wo = 1 + (W + 2 * p - WW) // s
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    buf = np.zeros((Ho, Wo, F, N), dtype=np.result_type(x, w, b))
    for kh in range(HH):
        for kw in range(WW):
            sl = xp[:, :, kh:kh + s * Ho:s, kw:kw + s * Wo:s]                 # (N, C, Ho, Wo)
            buf += np.einsum('nchw,fc->hwfn', sl, w[:, :, kh, kw])
    buf += b[None, None, :, None]
    return buf.transpose(3, 2, 0, 1), (x, w, b, conv_param)              # (N, F, Ho, Wo) view


def conv_backward_naive(dout, cache):
    x, w, b, conv_param = cache
    s, p = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho, Wo = dout.shape[2:]
    dt = np.result_type(x, w, dout)
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    dxp = np.zeros((xp.shape[3], xp.shape[2], C, N), dtype=dt).transpose(3, 2, 1, 0)
    dw_buf = np.zeros((WW, HH, C, F), dtype=dt)
    for kh in range(HH):
        for kw in range(WW):
            rows, cols = slice(kh, kh + s * Ho, s), slice(kw, kw + s * Wo, s)
            dw_buf[kw, kh] = np.einsum('nfhw,nchw->cf', dout, xp[:, :, rows, cols])
            dxp[:, :, rows, cols] += np.einsum('nfhw,fc->nchw', dout, w[:, :, kh, kw])
    dw = dw_buf.transpose(3, 2, 1, 0)
    db = np.sum(dout, axis=(0, 2, 3))[::-1].copy()[::-1]               # reversed-stride view
    return dxp[:, :, p:p + H, p:p + W], dw, db


def max_pool_forward_naive(x, pool_param):
    ph, pw, s = pool_param['pool_height'], pool_param['pool_width'], pool_param['stride']
    N, C, H, W = x.shape
    Ho, Wo = 1 + (H - ph) // s, 1 + (W - pw) // s
    buf = np.empty((Ho, Wo, N, C), dtype=x.dtype)
    for i in range(Ho):
        for j in range(Wo):
            buf[i, j] = x[:, :, i * s:i * s + ph, j * s:j * s + pw].max(axis=(2, 3))
    return buf.transpose(2, 3, 0, 1), (x, pool_param)


def max_pool_backward_naive(dout, cache):
    x, pool_param = cache
    ph, pw, s = pool_param['pool_height'], pool_param['pool_width'], pool_param['stride']
    N, C, H, W = x.shape
    dx = np.zeros((W, H, C, N), dtype=np.result_type(x, dout)).T       # (N, C, H, W), Fortran order
    nn, cc = np.ix_(np.arange(N), np.arange(C))
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            k = x[:, :, i * s:i * s + ph, j * s:j * s + pw].reshape(N, C, -1).argmax(axis=-1)
            dx[nn, cc, i * s + k // pw, j * s + k % pw] += dout[:, :, i, j]
    return dx
