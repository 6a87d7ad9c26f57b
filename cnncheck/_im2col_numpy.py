"""Pure-numpy kernels: the fallback for the compiled ``cnncheck._im2col_cy``.

Same functions, same argument order, the same memory layouts and
bit-identical results as the compiled kernels (see :mod:`cnncheck.im2col`
and :mod:`cnncheck.layers.fast`); used when the extension is not built or
when ``CNNCHECK_PURE_PYTHON=1``.  Like the compiled kernels, these functions
trust their arguments: their callers validate them first.  ``num_threads``
is accepted for the common signature and ignored.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided


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


def im2col_images(x, cols3, HH, WW, stride, pad, num_threads=1):
    """Fill rows ``0 .. C*HH*WW - 1`` of every block of ``cols3`` (N, rows, H_out*W_out)."""
    windows = _windows(x, HH, WW, stride, pad)
    N, C, _, _, H_out, W_out = windows.shape
    cols3[:, :C * HH * WW].reshape(N, C, HH, WW, H_out, W_out)[...] = windows


def col2im_images(cols3, dx, HH, WW, stride, pad, num_threads=1):
    """Overwrite ``dx`` (N, C, H, W) with the column sums of ``cols3`` (N, rows, H_out*W_out)."""
    N, C, H, W = dx.shape
    H_out = _out_size(H, HH, stride, pad)
    W_out = _out_size(W, WW, stride, pad)
    grid = cols3[:, :C * HH * WW].reshape(N, C, HH, WW, H_out, W_out)
    _add_windows(grid, dx, HH, WW, stride, pad)


def _pool_views(a, ph, pw, stride, H_out, W_out):
    """Yield ``(k, view)`` for each window offset k = kh*pw + kw in row-major order.

    ``view[n, c, i, j] == a[n, c, i*stride + kh, j*stride + kw]``; for a fixed
    k the views of distinct windows never overlap.
    """
    for kh in range(ph):
        rows = slice(kh, kh + stride * (H_out - 1) + 1, stride)
        for kw in range(pw):
            yield kh * pw + kw, a[:, :, rows, slice(kw, kw + stride * (W_out - 1) + 1, stride)]


def max_pool_forward(x, out, argmax, ph, pw, stride, num_threads=1):
    """Fill ``out`` and ``argmax`` (N, C, H_out, W_out) with each window's max and first-max offset.

    One pass per window offset keeps the running maximum and the offset
    where it was first reached: a later element wins only when strictly
    greater, or when it is the first NaN (the rule of ``np.argmax``).
    """
    H_out, W_out = out.shape[2:]
    views = _pool_views(x, ph, pw, stride, H_out, W_out)
    _, first = next(views)
    out[...] = first
    argmax[...] = 0
    step = np.empty_like(argmax)
    mask = np.empty(out.shape, dtype=bool)
    # NaN compares false with everything; only when x holds one (its sum is
    # then NaN) do the comparisons need the slower NaN-aware rule.
    with np.errstate(invalid="ignore"):  # inf + -inf is NaN too: then the NaN-aware rule, still exact
        nan_aware = bool(np.isnan(np.sum(x)))
    for k, v in views:
        np.greater(v, out, out=mask)
        if nan_aware:
            mask |= np.isnan(v) & ~np.isnan(out)
        np.copyto(out, v, where=mask)
        # argmax = where(mask, k, argmax) in unsigned arithmetic, which wraps
        # exactly: argmax + mask * (k - argmax).
        np.subtract(k, argmax, out=step)
        np.multiply(step, mask, out=step)
        argmax += step


def max_pool_backward(dout, argmax, dx, ph, pw, stride, num_threads=1):
    """Overwrite ``dx`` (N, C, H, W) with ``dout`` routed to each window's saved argmax.

    Each pixel gets 0 plus its windows' gradients in row-major window order,
    as the compiled kernel adds them.
    """
    H_out, W_out = dout.shape[2:]
    mask = np.empty(dout.shape, dtype=bool)
    dx[...] = 0
    # Offsets in reverse order add each pixel's contributions window by window
    # in row-major window order; for a fixed offset the windows never overlap.
    for k, dst in reversed(list(_pool_views(dx, ph, pw, stride, H_out, W_out))):
        np.equal(argmax, k, out=mask)
        np.add(dst, dout, out=dst, where=mask)


def relu_forward(x, out, num_threads=1):
    """Fill ``out`` with ``np.maximum(x, 0)``; both flat and of the same length.

    NaN passes through; ``-0.0`` and every negative give ``+0.0``.
    """
    np.maximum(x, 0, out=out)


def relu_backward(dout, x, dx, num_threads=1):
    """Overwrite ``dx`` with ``dout`` where ``x > 0`` and +0.0 elsewhere; all flat, one length.

    ``dout * (x > 0) + 0.0`` is that, bit for bit (``+ 0.0`` turns the
    ``-0.0`` of a negative or zero gradient into ``+0.0``), unless dout holds
    inf or NaN where x <= 0: ``0 * inf`` is NaN there, which the sum reveals,
    and those places are then set to 0.
    """
    passes = x > 0
    with np.errstate(invalid="ignore"):  # inf * 0 here, inf + -inf in the sum: both only flag a NaN
        np.multiply(dout, passes, out=dx)
        np.add(dx, 0.0, out=dx)
        if np.isnan(np.add.reduce(dx)):
            np.copyto(dx, 0, where=~passes)
