"""Pure-numpy im2col / col2im: the fallback for the compiled ``cnncheck._im2col_cy``.

Same functions, same argument order and the same memory layout as the
compiled kernel (see :mod:`cnncheck.im2col`); used when the extension is not
built or when ``CNNCHECK_PURE_PYTHON=1``.  Like the kernel, these functions
trust their arguments: :mod:`cnncheck.im2col` validates them first.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided


def _out_size(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


def im2col(x, cols, HH, WW, stride, pad):
    """Fill ``cols`` (C*HH*WW, N*H_out*W_out) with the windows of ``x`` (N, C, H, W).

    A strided view of the zero-padded input with shape
    (N, C, HH, WW, H_out, W_out) is copied into ``cols`` in one assignment.
    """
    N, C, H, W = x.shape
    H_out = _out_size(H, HH, stride, pad)
    W_out = _out_size(W, WW, stride, pad)
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
    sN, sC, sH, sW = x_pad.strides
    windows = as_strided(
        x_pad,
        shape=(N, C, HH, WW, H_out, W_out),
        strides=(sN, sC, sH, sW, sH * stride, sW * stride),
        writeable=False,
    )
    cols.reshape(C, HH, WW, N, H_out, W_out)[...] = windows.transpose(1, 2, 3, 0, 4, 5)


def col2im(cols, dx, HH, WW, stride, pad):
    """Sum the columns ``cols`` (C*HH*WW, N*H_out*W_out) back into ``dx`` (N, C, H, W).

    ``dx`` is overwritten.  One vectorised addition per kernel offset
    (kh, kw), in row-major order as the compiled kernel adds them: for a fixed
    offset the windows land on distinct pixels, so slice addition is exact.
    """
    N, C, H, W = dx.shape
    H_out = _out_size(H, HH, stride, pad)
    W_out = _out_size(W, WW, stride, pad)
    Hp, Wp = H + 2 * pad, W + 2 * pad
    grid = cols.reshape(C, HH, WW, N, H_out, W_out).transpose(3, 0, 1, 2, 4, 5)
    dx_pad = np.zeros((N, C, Hp, Wp), dtype=dx.dtype) if pad else dx
    if not pad:
        dx[...] = 0
    for kh in range(HH):
        rows = slice(kh, kh + stride * (H_out - 1) + 1, stride)
        for kw in range(WW):
            columns = slice(kw, kw + stride * (W_out - 1) + 1, stride)
            dx_pad[:, :, rows, columns] += grid[:, :, kh, kw]
    if pad:
        dx[...] = dx_pad[:, :, pad:pad + H, pad:pad + W]
