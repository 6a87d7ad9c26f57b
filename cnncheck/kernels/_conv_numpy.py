"""Pure-numpy convolution kernels: the fallback for the compiled ``cnncheck.kernels._conv_cy``.

Same functions, same argument order and the same memory layouts as the
compiled kernels (see :mod:`cnncheck.kernels.conv`); used when the extension
is not built or when ``CNNCHECK_PURE_PYTHON=1``.  im2col and col2im give
bit-identical results to the compiled ones; the direct convolution agrees
with them to rounding (it sums in another order).  Like the compiled
kernels, these functions trust their arguments: their callers validate them
first.  ``num_threads`` is accepted for the common signature and ignored.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

#: Rows per tile of the compiled direct kernels: 1 here, so ``w2p`` and ``wt`` need no padding.
FILTER_BLOCK = 1
#: Window elements per ``dw`` tile: 1, so ``parts`` needs no padding either.
WINDOW_BLOCK = 1
#: No compiled instructions here.
INSTRUCTIONS = "numpy"


def _out_size(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


def _windows(x, HH, WW, stride, pad):
    """Read-only strided view (N, C, HH, WW, H_out, W_out) of the zero-padded ``x``."""
    N, C, H, W = x.shape
    H_out = _out_size(H, HH, stride, pad)
    W_out = _out_size(W, WW, stride, pad)
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
    sN, sC, sH, sW = x_pad.strides
    return as_strided(
        x_pad,
        shape=(N, C, HH, WW, H_out, W_out),
        strides=(sN, sC, sH, sW, sH * stride, sW * stride),
        writeable=False,
    )


def _add_windows(grid, dx, HH, WW, stride, pad):
    """Overwrite ``dx`` (N, C, H, W) with the sums of ``grid`` (N, C, HH, WW, H_out, W_out).

    One vectorised addition per kernel offset (kh, kw), in row-major order as
    the compiled kernel adds them: for a fixed offset the windows land on
    distinct pixels, so slice addition is exact.
    """
    N, C, H, W = dx.shape
    H_out, W_out = grid.shape[4:]
    dx_pad = np.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=dx.dtype) if pad else dx
    if not pad:
        dx[...] = 0
    for kh in range(HH):
        rows = slice(kh, kh + stride * (H_out - 1) + 1, stride)
        for kw in range(WW):
            columns = slice(kw, kw + stride * (W_out - 1) + 1, stride)
            dx_pad[:, :, rows, columns] += grid[:, :, kh, kw]
    if pad:
        dx[...] = dx_pad[:, :, pad:pad + H, pad:pad + W]


def im2col(x, cols, HH, WW, stride, pad, num_threads=1):
    """Fill ``cols`` (C*HH*WW, N*H_out*W_out) with the windows of ``x`` (N, C, H, W)."""
    windows = _windows(x, HH, WW, stride, pad)
    N, C, _, _, H_out, W_out = windows.shape
    cols.reshape(C, HH, WW, N, H_out, W_out)[...] = windows.transpose(1, 2, 3, 0, 4, 5)


def col2im(cols, dx, HH, WW, stride, pad, num_threads=1):
    """Overwrite ``dx`` (N, C, H, W) with the column sums of ``cols`` (C*HH*WW, N*H_out*W_out)."""
    N, C, H, W = dx.shape
    H_out = _out_size(H, HH, stride, pad)
    W_out = _out_size(W, WW, stride, pad)
    grid = cols.reshape(C, HH, WW, N, H_out, W_out).transpose(3, 0, 1, 2, 4, 5)
    _add_windows(grid, dx, HH, WW, stride, pad)


def direct_forward(x, w2p, bias, out, HH, WW, stride, pad, num_threads=1):
    """Fill ``out`` (N, F, H_out, W_out) with the convolution of ``x`` plus the bias; ``w2p`` is (Fp, C*HH*WW)."""
    N, F = out.shape[:2]
    C = x.shape[1]
    windows = _windows(x, HH, WW, stride, pad)
    w = w2p[:F].reshape(F, C, HH, WW)
    out[...] = np.tensordot(windows, w, axes=([1, 2, 3], [1, 2, 3])).transpose(0, 3, 1, 2)
    out += bias[:F].reshape(1, F, 1, 1)


def direct_backward(x, wt, dout, dx, parts, HH, WW, stride, pad, images_per_part, num_threads=1):
    """Overwrite ``dx`` and ``parts`` (ceil(N / images_per_part), Fp, Kq + 1): ``dw`` rows, then ``db``.

    ``parts[p, f, k]`` sums ``dw[f].ravel()[k]`` (k < K) and ``parts[p, f, Kq]``
    sums ``db[f]`` over the images of part p; other entries are zero.
    ``wt`` is (Kp, F), ``w.reshape(F, K).T`` with zero rows up to Kp.
    """
    N, C = x.shape[:2]
    F, H_out, W_out = dout.shape[1:]
    K = C * HH * WW
    Kq = parts.shape[2] - 1
    windows = _windows(x, HH, WW, stride, pad)
    parts[...] = 0
    for p in range(parts.shape[0]):
        images = slice(p * images_per_part, min(N, (p + 1) * images_per_part))
        cols = windows[images].transpose(1, 2, 3, 0, 4, 5).reshape(K, -1)
        d = dout[images].transpose(1, 0, 2, 3).reshape(F, -1)
        parts[p, :F, :K] = d @ cols.T
        parts[p, :F, Kq] = d.sum(axis=1)
    w = wt[:K].T.reshape(F, C, HH, WW)
    grid = np.tensordot(dout, w, axes=([1], [0]))  # (N, H_out, W_out, C, HH, WW)
    _add_windows(np.ascontiguousarray(grid.transpose(0, 3, 4, 5, 1, 2)), dx, HH, WW, stride, pad)
