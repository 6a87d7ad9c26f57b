"""Fast convolution and max pooling: im2col plus one matrix product, and vectorised pooling.

Same contract, results and error messages as :mod:`cnncheck.layers.naive`
(the reference they are tested against): ``out, cache = forward(...)`` and
``grads = backward(dout, cache)``; inputs and cached arrays are never
modified; float32 stays float32 (any other dtype is computed in float64);
inputs of any memory layout are accepted.  Bad shapes or parameters raise
:class:`cnncheck.errors.CnnCheckError`, a ``ValueError``.

The convolution's im2col / col2im run in the compiled extension when it is
built; :data:`BACKEND` (``"cython"`` or ``"numpy"``) says which kernel
:mod:`cnncheck.im2col` picked.
"""

from __future__ import annotations

import numpy as np

from cnncheck import geometry, im2col
from cnncheck.errors import CnnCheckError
from cnncheck.layers.naive import (
    as_float_array,
    check_dout,
    common_dtype,
    conv_param_values,
    pool_param_values,
)

#: Which im2col kernel the fast convolution uses: ``"cython"`` or ``"numpy"``.
BACKEND = im2col.BACKEND


def _unpack(cache, names: tuple, layer: str) -> tuple:
    """The cache tuple of a fast forward pass, checked for its length."""
    if not isinstance(cache, tuple) or len(cache) != len(names):
        raise CnnCheckError(
            f"{layer} backward: cache must be the tuple ({', '.join(names)}) returned by the fast forward "
            f"pass, got {type(cache).__name__}" + (f" of length {len(cache)}" if isinstance(cache, tuple) else "")
        )
    return cache


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


# -- convolution ----------------------------------------------------------------
def conv_forward_fast(x, w, b, conv_param):
    """Convolution (cross-correlation) as im2col plus one matrix product.

    ``out = w.reshape(F, -1) @ im2col(x)``, computed block by block (one block
    of columns per image) so that the product lands in NCHW order; the bias
    is then added in place.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float64 or float32; any memory layout
    w : ndarray, shape (F, C, HH, WW)
    b : ndarray, shape (F,)
    conv_param : dict with 'stride' (>= 1) and 'pad' (>= 0, zero padding on every side)

    Returns
    -------
    out : ndarray, shape (N, F, H_out, W_out)
        ``H_out = 1 + (H + 2*pad - HH) // stride`` and
        ``W_out = 1 + (W + 2*pad - WW) // stride`` (floor, as PyTorch does);
        trailing rows and columns of x that no window reaches do not
        contribute.  float32 when x, w and b are all float32, else float64.
    cache : tuple (x, w, b, conv_param, cols)
        x, w, b and conv_param as given (never modified), and ``cols``, the
        read-only im2col matrix of x in the common dtype, shape
        (C*HH*WW, N*H_out*W_out) (layout in :mod:`cnncheck.im2col`), reused
        by the backward pass.

    Raises
    ------
    CnnCheckError
        A ``ValueError`` for a wrong ndim, a channel mismatch, b of the wrong
        length, a kernel larger than the padded input, stride < 1 or pad < 0.
    """
    stride, pad = conv_param_values(conv_param)
    x_arr, w_arr, b_arr = (as_float_array(a, n) for a, n in ((x, "x"), (w, "w"), (b, "b")))
    N, F, H_out, W_out = geometry.conv_output_shape(x_arr.shape, w_arr.shape, stride, pad)
    if b_arr.shape != (F,):
        raise CnnCheckError(f"conv b must have shape ({F},) for {F} filters, got {b_arr.shape}")
    dtype = common_dtype(x_arr, w_arr, b_arr)
    HH, WW = w_arr.shape[2:]
    cols = im2col.im2col(x_arr.astype(dtype, copy=False), HH, WW, stride, pad)
    w2 = w_arr.astype(dtype, copy=False).reshape(F, -1)
    # One product per image, w2 @ cols[:, block n], written straight into NCHW
    # order: no (F, N*H_out*W_out) temporary and no transpose pass.
    per_image = cols.reshape(-1, N, H_out * W_out).transpose(1, 0, 2)
    out = np.matmul(w2, per_image)
    out += b_arr.astype(dtype, copy=False).reshape(1, F, 1)
    return out.reshape(N, F, H_out, W_out), (x, w, b, conv_param, _readonly(cols))


def conv_backward_fast(dout, cache):
    """Backward pass of :func:`conv_forward_fast`: two matrix products and col2im.

    With ``d2`` the upstream gradient as (F, N*H_out*W_out):
    ``dw = d2 @ cols.T``, ``dx = col2im(w2.T @ d2)`` and ``db = d2.sum(1)``.

    Parameters
    ----------
    dout : ndarray, shape (N, F, H_out, W_out); any memory layout, never modified
    cache : tuple (x, w, b, conv_param, cols) from :func:`conv_forward_fast`

    Returns
    -------
    dx : ndarray, shape (N, C, H, W); zero where no window reached
    dw : ndarray, shape (F, C, HH, WW)
    db : ndarray, shape (F,)
        All in the forward output's dtype.

    Raises
    ------
    CnnCheckError
        A ``ValueError`` when dout's shape differs from the forward output's or
        the cache is not one :func:`conv_forward_fast` returned.
    """
    x, w, b, conv_param, cols = _unpack(cache, ("x", "w", "b", "conv_param", "cols"), "conv")
    stride, pad = conv_param_values(conv_param)
    x, w, b = as_float_array(x, "x"), as_float_array(w, "w"), as_float_array(b, "b")
    N, F, H_out, W_out = geometry.conv_output_shape(x.shape, w.shape, stride, pad)
    if b.shape != (F,):
        raise CnnCheckError(f"conv b must have shape ({F},) for {F} filters, got {b.shape}")
    dout = check_dout(dout, (N, F, H_out, W_out), "conv")
    dtype = common_dtype(x, w, b)
    C, HH, WW = w.shape[1:]
    expected = (C * HH * WW, N * H_out * W_out)
    if not isinstance(cols, np.ndarray) or cols.shape != expected or cols.dtype != dtype:
        got = f"{cols.shape} {cols.dtype}" if isinstance(cols, np.ndarray) else type(cols).__name__
        raise CnnCheckError(
            f"conv backward: the cache's cols must have shape {expected} and dtype {dtype}, got {got}; "
            "pass the cache returned by conv_forward_fast"
        )
    d2 = np.empty((F, N, H_out * W_out), dtype=dtype)
    np.copyto(d2, dout.reshape(N, F, H_out * W_out).transpose(1, 0, 2))
    d2 = d2.reshape(F, N * H_out * W_out)
    w2 = w.astype(dtype, copy=False).reshape(F, -1)
    db = d2.sum(axis=1)
    dw = np.matmul(d2, cols.T).reshape(w.shape)
    dcols = np.matmul(w2.T, d2)  # (C*HH*WW, N*H_out*W_out), C-contiguous
    dx = im2col.col2im(dcols, x.shape, HH, WW, stride, pad)
    return dx, dw, db


# -- max pooling ----------------------------------------------------------------
def _tiles(shape, ph: int, pw: int, stride: int) -> bool:
    """True when the pooling windows tile the input exactly (the reshape path)."""
    _, _, H, W = shape
    return ph == pw == stride and H % ph == 0 and W % pw == 0


def _window_views(a: np.ndarray, ph: int, pw: int, stride: int, H_out: int, W_out: int):
    """Yield ``(k, view)`` for each window offset k = kh*pw + kw in row-major order.

    ``view`` has shape (N, C, H_out, W_out) and holds element (kh, kw) of every
    window: ``view[n, c, i, j] == a[n, c, i*stride + kh, j*stride + kw]``.
    For a fixed k the views of distinct windows never overlap.
    """
    for kh in range(ph):
        rows = slice(kh, kh + stride * (H_out - 1) + 1, stride)
        for kw in range(pw):
            yield kh * pw + kw, a[:, :, rows, slice(kw, kw + stride * (W_out - 1) + 1, stride)]


def max_pool_forward_fast(x, pool_param):
    """Max pooling without padding, vectorised over windows; records each window's argmax.

    One pass per window offset (ph*pw passes over output-sized arrays) keeps
    the running maximum and the offset where it was first reached.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float64 or float32; any memory layout
    pool_param : dict with 'pool_height', 'pool_width' and 'stride' (all >= 1)

    Returns
    -------
    out : ndarray, shape (N, C, H_out, W_out), dtype of x
        ``H_out = 1 + (H - pool_height) // stride`` and
        ``W_out = 1 + (W - pool_width) // stride``; trailing rows and columns
        no window covers are ignored (and get zero gradient).
    cache : tuple (x, pool_param, argmax)
        x and pool_param as given (never modified), and ``argmax``, a read-only
        unsigned integer array of shape (N, C, H_out, W_out): for each window
        the row-major offset ``kh*pool_width + kw`` of its maximum.

    Notes
    -----
    Ties: the gradient of a window goes wholly to its *first* maximum in
    row-major window order (as PyTorch does, and as the naive layer does).  A
    window holding NaN takes its first NaN as maximum, like ``np.argmax``.

    Raises
    ------
    CnnCheckError
        A ``ValueError`` for a wrong ndim, a window larger than the input,
        a window or stride below 1.
    """
    ph, pw, stride = pool_param_values(pool_param)
    x_arr = as_float_array(x, "x")
    N, C, H_out, W_out = geometry.pool_output_shape(x_arr.shape, ph, pw, stride)
    views = _window_views(x_arr, ph, pw, stride, H_out, W_out)
    _, first = next(views)
    best = np.array(first, order="C")  # running maximum, becomes out
    argmax = np.zeros(best.shape, dtype=np.min_scalar_type(ph * pw - 1))
    step = np.empty_like(argmax)
    mask = np.empty(best.shape, dtype=bool)
    # NaN compares false with everything; only when x holds one (its sum is
    # then NaN) do the comparisons need the slower NaN-aware rule.
    nan_aware = bool(np.isnan(np.sum(x_arr)))
    for k, v in views:
        np.greater(v, best, out=mask)  # strict: an equal value later in the window never wins
        if nan_aware:
            mask |= np.isnan(v) & ~np.isnan(best)
        np.maximum(best, v, out=best)
        # argmax = where(mask, k, argmax) in unsigned arithmetic, which wraps
        # exactly: argmax + mask * (k - argmax).
        np.subtract(k, argmax, out=step)
        np.multiply(step, mask, out=step)
        argmax += step
    return best, (x, pool_param, _readonly(argmax))


def max_pool_backward_fast(dout, cache):
    """Backward pass of :func:`max_pool_forward_fast`: scatter dout through the saved argmax.

    When the windows tile the input (pool_height == pool_width == stride,
    dividing H and W) every pixel belongs to exactly one window and dx is
    written through a reshaped view without zeroing or accumulating; otherwise
    dx starts at zero and overlapping windows accumulate.

    Parameters
    ----------
    dout : ndarray, shape (N, C, H_out, W_out); any memory layout, never modified
    cache : tuple (x, pool_param, argmax) from :func:`max_pool_forward_fast`

    Returns
    -------
    dx : ndarray, shape (N, C, H, W), dtype of x
        Each window's gradient lands on its first maximum in row-major order.

    Raises
    ------
    CnnCheckError
        A ``ValueError`` when dout's shape differs from the forward output's or
        the cache is not one :func:`max_pool_forward_fast` returned.
    """
    x, pool_param, argmax = _unpack(cache, ("x", "pool_param", "argmax"), "pool")
    ph, pw, stride = pool_param_values(pool_param)
    x = as_float_array(x, "x")
    N, C, H_out, W_out = geometry.pool_output_shape(x.shape, ph, pw, stride)
    dout = check_dout(dout, (N, C, H_out, W_out), "pool").astype(x.dtype, copy=False)
    if (not isinstance(argmax, np.ndarray) or argmax.shape != dout.shape
            or argmax.dtype.kind not in "ui"):
        got = f"{argmax.shape} {argmax.dtype}" if isinstance(argmax, np.ndarray) else type(argmax).__name__
        raise CnnCheckError(
            f"pool backward: the cache's argmax must be an integer array of shape {dout.shape}, got {got}; "
            "pass the cache returned by max_pool_forward_fast"
        )
    mask = np.empty(dout.shape, dtype=bool)
    # dout * mask is exact for finite dout (0 * finite is a zero, and adding a
    # zero changes nothing); inf or NaN in dout takes masked copies instead.
    finite = bool(np.isfinite(np.sum(dout)))
    if _tiles(x.shape, ph, pw, stride):
        # Every pixel is in exactly one window: write each offset's pixels once.
        dx = np.empty(x.shape, dtype=x.dtype)
        tiles = dx.reshape(N, C, H_out, ph, W_out, pw)
        for kh in range(ph):
            for kw in range(pw):
                dst = tiles[:, :, :, kh, :, kw]
                np.equal(argmax, kh * pw + kw, out=mask)
                if finite:
                    np.multiply(dout, mask, out=dst)
                else:
                    dst[...] = 0
                    np.copyto(dst, dout, where=mask)
        return dx
    # Offsets in reverse order add each pixel's contributions window by window
    # in row-major window order, the order of the naive loops: same sums, bit for bit.
    dx = np.zeros(x.shape, dtype=x.dtype)
    for k, dst in reversed(list(_window_views(dx, ph, pw, stride, H_out, W_out))):
        np.equal(argmax, k, out=mask)
        if finite:
            dst += dout * mask
        else:
            np.add(dst, dout, out=dst, where=mask)
    return dx
