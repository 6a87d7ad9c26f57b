"""Max-pooling kernels: each window's maximum and first argmax in one pass, and the scatter back.

This module validates its arguments and calls one of two kernel modules with
the same functions and argument order: the compiled ``_pool_cy`` (Cython) or
the numpy fallback :mod:`cnncheck.kernels._pool_numpy`, as
:mod:`cnncheck.kernels` chose.  Both give bit-identical results.  Bad
arguments raise :class:`cnncheck.errors.CnnCheckError` (a ``ValueError``)
here, before any loop runs; in particular every saved offset is checked to
lie inside its window, since the scatter trusts it.

Layout: ``x`` (N, C, H, W), ``out``, ``argmax`` and ``dout`` (N, C, H_out,
W_out) with ``H_out = 1 + (H - ph) // stride`` (likewise W_out; no padding,
trailing rows and columns no window covers are ignored).  ``argmax`` holds
the row-major offset ``kh*pw + kw`` of each window's *first* maximum (a
window holding NaN: its first NaN, like ``np.argmax``).
"""

from __future__ import annotations

import numpy as np

from cnncheck import geometry, kernels
from cnncheck.errors import CnnCheckError

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: Unsigned offset types the kernels take, narrowest first.
INDEX_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32))
# Least input elements per thread: below it, starting threads costs more than they save.
ELEMENTS_PER_THREAD = 1 << 16
# Least input elements shared among threads on a busy machine (below it, one thread).
# Measured with two busy-loop processes: the notebook's pooling forward and
# backward 1.1 to 1.4 ms on one thread, 1.2 to 1.3 ms shared in pieces.
SHARE_FROM = 1 << 22


def index_dtype(window: int) -> np.dtype:
    """The narrowest unsigned type the kernels take that holds offsets 0 .. window-1."""
    for dtype in INDEX_DTYPES:
        if window - 1 <= np.iinfo(dtype).max:
            return dtype
    raise CnnCheckError(f"pooling windows of {window} elements are too large (at most 2**32)")


def _check_float(a, name: str) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise CnnCheckError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype not in _FLOAT_DTYPES:
        raise CnnCheckError(f"{name} must be float32 or float64, got {a.dtype}; convert it with .astype(np.float64)")
    return a


def max_pool_forward(x, ph, pw, stride, backend=None) -> tuple[np.ndarray, np.ndarray]:
    """Each window's maximum and the offset of its first maximum.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64; any memory layout, never modified
    ph, pw : int, window height and width, >= 1 and no larger than the input
    stride : int, >= 1
    backend : {None, "cython", "numpy"}
        None uses :data:`cnncheck.kernels.BACKEND`; a name forces that kernel.

    Returns
    -------
    out : ndarray, shape (N, C, H_out, W_out), dtype of x
    argmax : ndarray, shape (N, C, H_out, W_out), :func:`index_dtype` of ``ph*pw``

    Raises
    ------
    CnnCheckError
        A ``ValueError`` for a wrong ndim or dtype, a window larger than the
        input, a window or stride below 1.
    """
    kernel = kernels.module("pool", backend)
    x = _check_float(x, "x")
    N, C, H_out, W_out = geometry.pool_output_shape(x.shape, ph, pw, stride)
    out = np.empty((N, C, H_out, W_out), dtype=x.dtype)
    argmax = np.empty(out.shape, dtype=index_dtype(ph * pw))
    x = np.ascontiguousarray(x)
    ph, pw, stride = int(ph), int(pw), int(stride)

    def call(lo, hi, threads):
        if hi - lo == N * C:
            kernel.max_pool_forward(x, out, argmax, ph, pw, stride, threads)
            return
        # plane by plane: (N*C, 1, ...) views, so that any range of planes is one call
        planes = (N * C, 1)
        kernel.max_pool_forward(x.reshape(planes + x.shape[2:])[lo:hi], out.reshape(planes + out.shape[2:])[lo:hi],
                                argmax.reshape(planes + out.shape[2:])[lo:hi], ph, pw, stride, threads)

    kernels.split(call, N * C, x.size, ELEMENTS_PER_THREAD, SHARE_FROM)
    return out, argmax


def max_pool_backward(dout, argmax, x_shape, ph, pw, stride, backend=None) -> np.ndarray:
    """Route each window's gradient to its saved first maximum.

    Each pixel of dx is 0 plus the gradients of the windows whose first
    maximum it is, added in row-major window order.

    Parameters
    ----------
    dout : ndarray, shape (N, C, H_out, W_out), float32 or float64; any layout, never modified
    argmax : ndarray, shape of dout, any integer type
        Offsets ``kh*pw + kw`` in ``[0, ph*pw)``, as :func:`max_pool_forward` returns them.
    x_shape : tuple of int, (N, C, H, W)
    ph, pw, stride : int
        As in the forward pass.
    backend : {None, "cython", "numpy"}
        As in :func:`max_pool_forward`.

    Returns
    -------
    dx : ndarray, shape x_shape, dtype of dout

    Raises
    ------
    CnnCheckError
        A ``ValueError`` for a bad geometry, dout or argmax of the wrong
        shape or type, or an offset outside the window.
    """
    kernel = kernels.module("pool", backend)
    dout = _check_float(dout, "dout")
    out_shape = geometry.pool_output_shape(tuple(x_shape), ph, pw, stride)
    if dout.shape != out_shape:
        raise CnnCheckError(f"dout must have shape {out_shape}, got {dout.shape}")
    if not isinstance(argmax, np.ndarray) or argmax.shape != out_shape or argmax.dtype.kind not in "ui":
        got = f"{argmax.shape} {argmax.dtype}" if isinstance(argmax, np.ndarray) else type(argmax).__name__
        raise CnnCheckError(f"argmax must be an integer array of shape {out_shape}, got {got}")
    window = ph * pw
    # The scatter trusts every offset: one outside the window would write out of bounds.
    # An unsigned type too narrow to hold ``window`` cannot hold such an offset.
    if argmax.size and ((argmax.dtype.kind == "i" and argmax.min() < 0)
                        or (np.iinfo(argmax.dtype).max >= window and argmax.max() >= window)):
        raise CnnCheckError(f"argmax holds offsets outside [0, {window})")
    if argmax.dtype not in INDEX_DTYPES:
        argmax = argmax.astype(index_dtype(window))
    argmax = np.ascontiguousarray(argmax)
    dout = np.ascontiguousarray(dout)
    dx = np.empty(tuple(x_shape), dtype=dout.dtype)
    planes = (out_shape[0] * out_shape[1], 1)
    ph, pw, stride = int(ph), int(pw), int(stride)

    def call(lo, hi, threads):
        if hi - lo == planes[0]:
            kernel.max_pool_backward(dout, argmax, dx, ph, pw, stride, threads)
            return
        kernel.max_pool_backward(dout.reshape(planes + out_shape[2:])[lo:hi], argmax.reshape(planes + out_shape[2:])[lo:hi],
                                 dx.reshape(planes + dx.shape[2:])[lo:hi], ph, pw, stride, threads)

    kernels.split(call, planes[0], dx.size, ELEMENTS_PER_THREAD, SHARE_FROM)
    return dx
