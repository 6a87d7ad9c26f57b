"""Fully vectorised layers built on an im2col made with fancy indexing: one
gather turns every receptive field into a column, the convolution is then a
single matrix product, and the gradient is scattered back with np.add.at.
Max pooling reuses the same column builder with one channel per (image,
channel) pair; ties go to the first maximum of a window in row-major order."""

import numpy as np


def _field_indices(C, HH, WW, stride, H_out, W_out):
    """Index arrays (channel, row, col), each (C * HH * WW, H_out * W_out)."""
    k_row = np.tile(np.repeat(np.arange(HH), WW), C)          # kernel row of each column entry
    k_col = np.tile(np.arange(WW), HH * C)
    out_row = stride * np.repeat(np.arange(H_out), W_out)     # window origin of each output position
    out_col = stride * np.tile(np.arange(W_out), H_out)
    rows = k_row[:, None] + out_row[None, :]
    cols = k_col[:, None] + out_col[None, :]
    chans = np.repeat(np.arange(C), HH * WW)[:, None]
    return chans, rows, cols


def _im2col(xp, HH, WW, stride, H_out, W_out):
    C = xp.shape[1]
    chans, rows, cols = _field_indices(C, HH, WW, stride, H_out, W_out)
    return xp[:, chans, rows, cols]                            # (N, C*HH*WW, H_out*W_out)


def _col2im(dcols, shape, HH, WW, stride, H_out, W_out):
    C = shape[1]
    chans, rows, cols = _field_indices(C, HH, WW, stride, H_out, W_out)
    dxp = np.zeros(shape, dtype=dcols.dtype)
    np.add.at(dxp, (slice(None), chans, rows, cols), dcols)
    return dxp


def affine_forward(x, w, b):
    """out = x.reshape(N, D) @ w + b"""
    out = np.dot(x.reshape(x.shape[0], -1), w) + b
    return out, (x, w, b)


def affine_backward(dout, cache):
    """Returns dx (shape of x), dw, db."""
    x, w, b = cache
    x2 = x.reshape(x.shape[0], -1)
    return np.dot(dout, w.T).reshape(x.shape), np.dot(x2.T, dout), dout.sum(axis=0)


def relu_forward(x):
    """max(x, 0)"""
    return np.maximum(x, 0), x


def relu_backward(dout, cache):
    """dout where x > 0, else 0"""
    return np.where(cache > 0, dout, 0)


def conv_forward_naive(x, w, b, conv_param):
    """Convolution as one matrix product over im2col columns."""
    stride, pad = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    H_out = 1 + (H + 2 * pad - HH) // stride
    W_out = 1 + (W + 2 * pad - WW) // stride
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = _im2col(xp, HH, WW, stride, H_out, W_out)
    out = np.matmul(w.reshape(F, -1), cols) + b[:, None]       # (N, F, H_out*W_out)
    out = out.reshape(N, F, H_out, W_out)
    return out, (x, w, b, conv_param, cols)


def conv_backward_naive(dout, cache):
    """Gradients through the matrix product, then col2im for dx."""
    x, w, b, conv_param, cols = cache
    stride, pad = conv_param['stride'], conv_param['pad']
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    H_out, W_out = dout.shape[2:]
    d2 = dout.reshape(N, F, H_out * W_out)
    db = d2.sum(axis=(0, 2))
    dw = np.einsum('nfp,nkp->fk', d2, cols).reshape(w.shape)
    dcols = np.matmul(w.reshape(F, -1).T, d2)                  # (N, C*HH*WW, P)
    dxp = _col2im(dcols, (N, C, H + 2 * pad, W + 2 * pad), HH, WW, stride, H_out, W_out)
    dx = dxp[:, :, pad:pad + H, pad:pad + W]
    return dx, dw, db


def max_pool_forward_naive(x, pool_param):
    """Max over the columns of a one-channel im2col."""
    ph, pw, stride = pool_param['pool_height'], pool_param['pool_width'], pool_param['stride']
    N, C, H, W = x.shape
    H_out = 1 + (H - ph) // stride
    W_out = 1 + (W - pw) // stride
    cols = _im2col(x.reshape(N * C, 1, H, W), ph, pw, stride, H_out, W_out)   # (N*C, ph*pw, P)
    arg = np.argmax(cols, axis=1)                                             # first maximum
    out = np.take_along_axis(cols, arg[:, None, :], axis=1)[:, 0, :]
    return out.reshape(N, C, H_out, W_out), (x, pool_param, arg)


def max_pool_backward_naive(dout, cache):
    """Put each window's gradient on its argmax column entry, then col2im."""
    x, pool_param, arg = cache
    ph, pw, stride = pool_param['pool_height'], pool_param['pool_width'], pool_param['stride']
    N, C, H, W = x.shape
    H_out, W_out = dout.shape[2:]
    dcols = np.zeros((N * C, ph * pw, H_out * W_out), dtype=dout.dtype)
    np.put_along_axis(dcols, arg[:, None, :], dout.reshape(N * C, 1, H_out * W_out), axis=1)
    dx = _col2im(dcols, (N * C, 1, H, W), ph, pw, stride, H_out, W_out)
    return dx.reshape(N, C, H, W)
