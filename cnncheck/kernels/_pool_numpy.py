"""Pure-numpy max-pooling kernels: the fallback for the compiled ``cnncheck.kernels._pool_cy``.

Same functions, same argument order, the same memory layouts and
bit-identical results as the compiled kernels (see
:mod:`cnncheck.kernels.pool`); used when the extension is not built or when
``CNNCHECK_PURE_PYTHON=1``.  Like the compiled kernels, these functions
trust their arguments: their callers validate them first.  ``num_threads``
is accepted for the common signature and ignored.
"""

from __future__ import annotations

import numpy as np


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
