"""Convolution kernels: im2col and col2im, and a direct convolution for small channel counts.

This module validates its arguments and calls one of two kernel modules with
the same functions and argument order: the compiled ``_conv_cy`` (Cython;
on CPUs with AVX2 and FMA its build for them) or the numpy fallback
:mod:`cnncheck.kernels._conv_numpy`, as :mod:`cnncheck.kernels` chose.  Bad
arguments raise :class:`cnncheck.errors.CnnCheckError` (a ``ValueError``)
here, before any loop runs.

Unfolding layout (C order)::

    x    : (N, C, H, W)
    cols : (C*HH*WW, N*H_out*W_out)
    cols[(c*HH + kh)*WW + kw, (n*H_out + i)*W_out + j] = x_pad[n, c, i*stride + kh, j*stride + kw]

with ``x_pad`` the input with ``pad`` zeros on every side and
``H_out = 1 + (H + 2*pad - HH) // stride`` (floor, as PyTorch does; likewise
``W_out``).  Rows of ``cols`` line up with ``w.reshape(F, C*HH*WW)``, so the
whole convolution is one matrix product ``w2 @ cols`` of shape
(F, N*H_out*W_out); the columns of image n form the block
``cols[:, n*H_out*W_out:(n+1)*H_out*W_out]``.  Trailing rows and columns that
no window reaches never appear in ``cols`` and get zero in :func:`col2im`.

The direct convolution (:func:`direct_forward`, :func:`direct_backward`)
computes the same layer without unfolding, in register tiles; it wins over
unfolding plus a matrix product when ``C*HH*WW`` is small (see
:func:`cnncheck.layers.fast.conv_forward_fast`).
"""

from __future__ import annotations

import numpy as np

from cnncheck import geometry, kernels
from cnncheck.errors import CnnCheckError

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: Which kernels run: ``"cython"`` or ``"numpy"`` (:data:`cnncheck.kernels.BACKEND`).
BACKEND = kernels.BACKEND
#: Backends that can be requested explicitly with the ``backend`` argument.
BACKENDS = kernels.BACKENDS

# Least elements an unfolding kernel writes per thread: below it, starting
# threads costs more than they save.
UNFOLD_ELEMENTS_PER_THREAD = 1 << 16
# Least multiply-adds of a direct convolution per thread.
DIRECT_MACS_PER_THREAD = 1 << 20
# Least elements of an unfolding shared among threads on a busy machine (below it, one thread).
UNFOLD_SHARE_FROM = 1 << 22
# Images per partial sum of the direct kernel's dw: fixed by N alone, so the
# result does not depend on the thread count.
_DIRECT_PARTS = 32


def _check_float(a, name: str) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise CnnCheckError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype not in _FLOAT_DTYPES:
        raise CnnCheckError(f"{name} must be float32 or float64, got {a.dtype}; convert it with .astype(np.float64)")
    return a


def _rows_contiguous(a: np.ndarray) -> bool:
    """True for a C-contiguous array, or a matrix whose rows are contiguous and do not overlap."""
    if a.flags.c_contiguous:
        return True
    return (a.ndim == 2 and a.strides[1] == a.itemsize and a.strides[0] >= a.shape[1] * a.itemsize
            and a.strides[0] % a.itemsize == 0)


def _check_out(out, shape, dtype, name: str, source: np.ndarray, rows=False) -> np.ndarray:
    if not isinstance(out, np.ndarray):
        raise CnnCheckError(f"{name} must be a numpy array, got {type(out).__name__}")
    if out.shape != tuple(shape) or out.dtype != dtype:
        raise CnnCheckError(f"{name} must have shape {tuple(shape)} and dtype {dtype}, got {out.shape} {out.dtype}")
    contiguous = _rows_contiguous(out) if rows else out.flags.c_contiguous
    if not contiguous or not out.flags.writeable:
        what = "with C-contiguous rows (a C-contiguous array, or a slice of its columns)" if rows else "C-contiguous"
        raise CnnCheckError(f"{name} must be a writeable array {what}")
    if np.may_share_memory(out, source):
        raise CnnCheckError(f"{name} must not share memory with the array it is computed from")
    return out


def _shape_tuple(shape, name: str) -> tuple:
    try:
        return tuple(geometry._as_int(d, name) for d in shape)
    except TypeError:
        raise CnnCheckError(f"{name} must be a sequence of integers, got {shape!r}") from None


def _split(call, images: int, elements: int, most) -> None:
    """``call(lo, hi, threads)`` over the images, on at most ``most`` threads (None: as the work warrants)."""
    if most is not None:
        if isinstance(most, bool) or not isinstance(most, (int, np.integer)) or most < 1:
            raise CnnCheckError(f"threads must be a positive integer, got {most!r}")
        if most == 1:
            call(0, images, 1)
            return
    kernels.split(call, images, elements if most is None else min(elements, int(most) * UNFOLD_ELEMENTS_PER_THREAD),
                  UNFOLD_ELEMENTS_PER_THREAD, UNFOLD_SHARE_FROM)


def cols_shape(x_shape, HH, WW, stride, pad) -> tuple[int, int]:
    """Shape of the column array for input shape ``x_shape``, after validating the geometry.

    Parameters
    ----------
    x_shape : tuple of int, (N, C, H, W)
    HH, WW : int, kernel height and width, no larger than the padded input
    stride : int, >= 1
    pad : int, >= 0

    Returns
    -------
    (C*HH*WW, N*H_out*W_out) : tuple of int
    """
    x_shape = _shape_tuple(x_shape, "x_shape")
    if len(x_shape) != 4:
        raise CnnCheckError(f"im2col x must have shape (N, C, H, W), got {len(x_shape)} dimensions {x_shape}")
    HH = geometry._as_int(HH, "HH")
    WW = geometry._as_int(WW, "WW")
    N, C = x_shape[:2]
    _, _, H_out, W_out = geometry.conv_output_shape(x_shape, (1, C, HH, WW), stride, pad)
    return C * HH * WW, N * H_out * W_out


def im2col(x, HH, WW, stride, pad, out=None, backend=None, threads=None) -> np.ndarray:
    """Unfold the convolution windows of ``x`` into columns.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64
        Any memory layout (a C-contiguous copy is made when needed); never modified.
    HH, WW : int
        Kernel height and width.
    stride : int, >= 1
    pad : int, >= 0
        Zeros added on every side.
    out : ndarray, shape (C*HH*WW, N*H_out*W_out), dtype of x, optional
        Buffer to fill (every element is overwritten).  Its rows must be
        contiguous: a C-contiguous array, or a slice of the columns of one.
    backend : {None, "cython", "numpy"}
        None uses :data:`BACKEND`; a name forces that kernel (for tests and benchmarks).
    threads : int, optional
        At most this many threads; by default as many as
        :func:`cnncheck.kernels.split` gives the work.

    Returns
    -------
    cols : ndarray, shape (C*HH*WW, N*H_out*W_out), dtype of x
        ``cols[(c*HH + kh)*WW + kw, (n*H_out + i)*W_out + j] = x_pad[n, c, i*stride + kh, j*stride + kw]``.

    Raises
    ------
    CnnCheckError
        A ``ValueError``: wrong ndim or dtype, stride < 1, pad < 0, a kernel
        larger than the padded input, or an unusable ``out``.
    """
    kernel = kernels.module("conv", backend)
    x = _check_float(x, "x")
    shape = cols_shape(x.shape, HH, WW, stride, pad)
    x = np.ascontiguousarray(x)
    if out is None:
        out = np.empty(shape, dtype=x.dtype)
    else:
        _check_out(out, shape, x.dtype, "out", x, rows=True)
    P = shape[1] // max(x.shape[0], 1)

    def call(lo, hi, threads):
        kernel.im2col(x[lo:hi], out[:, lo * P:hi * P], int(HH), int(WW), int(stride), int(pad), threads)

    _split(call, x.shape[0], out.size, threads)
    return out


def col2im(cols, x_shape, HH, WW, stride, pad, out=None, backend=None, threads=None) -> np.ndarray:
    """Sum columns back into an image: the adjoint of :func:`im2col`.

    ``<im2col(x), y> == <x, col2im(y)>`` for all x and y; in a convolution's
    backward pass ``col2im(w2.T @ dout_cols)`` is ``dx``.

    Parameters
    ----------
    cols : ndarray, shape (C*HH*WW, N*H_out*W_out), float32 or float64
        Any memory layout (a copy is made unless its rows are contiguous); never modified.
    x_shape : tuple of int, (N, C, H, W)
        Shape of the image to rebuild.
    HH, WW, stride, pad : int
        As in :func:`im2col`.
    out : ndarray, shape x_shape, dtype of cols, C-contiguous, optional
        Buffer to fill (overwritten).
    backend : {None, "cython", "numpy"}
        As in :func:`im2col`.
    threads : int, optional
        As in :func:`im2col`.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W), dtype of cols
        Zero at pixels no window reaches; entries of ``cols`` that fall in the
        padding are dropped.

    Raises
    ------
    CnnCheckError
        A ``ValueError``: bad geometry, a ``cols`` whose shape does not match
        it, a wrong dtype, or an unusable ``out``.
    """
    kernel = kernels.module("conv", backend)
    cols = _check_float(cols, "cols")
    x_shape = _shape_tuple(x_shape, "x_shape")
    shape = cols_shape(x_shape, HH, WW, stride, pad)
    if cols.shape != shape:
        raise CnnCheckError(
            f"cols has shape {cols.shape} but an input {x_shape} with a {HH}x{WW} kernel, "
            f"stride {stride} and pad {pad} gives columns of shape {shape}"
        )
    if not _rows_contiguous(cols):
        cols = np.ascontiguousarray(cols)
    if out is None:
        out = np.empty(x_shape, dtype=cols.dtype)
    else:
        _check_out(out, x_shape, cols.dtype, "out", cols)
    P = shape[1] // max(x_shape[0], 1)

    def call(lo, hi, threads):
        kernel.col2im(cols[:, lo * P:hi * P], out[lo:hi], int(HH), int(WW), int(stride), int(pad), threads)

    _split(call, x_shape[0], cols.size, threads)
    return out


# -- direct convolution --------------------------------------------------------------
def _direct_arrays(x, w, stride, pad, others: dict) -> tuple:
    """Validated (x, w, others..., dtype, output shape) for the direct kernels; x and w made C-contiguous."""
    x = _check_float(x, "x")
    w = _check_float(w, "w")
    for name, a in others.items():
        _check_float(a, name)
    dtypes = {a.dtype for a in (x, w, *others.values())}
    if len(dtypes) != 1:
        names = ", ".join(("x", "w", *others))
        raise CnnCheckError(f"{names} must share one dtype, got {', '.join(str(d) for d in sorted(dtypes, key=str))}; "
                            "convert them with .astype")
    out_shape = geometry.conv_output_shape(x.shape, w.shape, stride, pad)
    return np.ascontiguousarray(x), np.ascontiguousarray(w), x.dtype, out_shape


def _padded_rows(a: np.ndarray, rows: int) -> np.ndarray:
    """``a`` (m, n) as a C-contiguous array with zero rows up to ``rows``."""
    out = np.zeros((rows, a.shape[1]), dtype=a.dtype)
    out[:a.shape[0]] = a
    return out


def _round_up(n: int, block: int) -> int:
    return -(-n // block) * block


def direct_forward(x, w, b, stride, pad, backend=None) -> np.ndarray:
    """Convolution plus bias in register tiles, without unfolding.

    ``out[n, f] = sum_k w[f].ravel()[k] * window_k(x_pad[n]) + b[f]``, the
    windows taken with ``stride`` over x padded with ``pad`` zeros.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64; any memory layout, never modified
    w : ndarray, shape (F, C, HH, WW), dtype of x
    b : ndarray, shape (F,), dtype of x
    stride : int, >= 1
    pad : int, >= 0
    backend : {None, "cython", "numpy"}
        As in :func:`im2col`.

    Returns
    -------
    out : ndarray, shape (N, F, H_out, W_out), dtype of x
        ``H_out = 1 + (H + 2*pad - HH) // stride`` (likewise W_out).

    Raises
    ------
    CnnCheckError
        A ``ValueError``: wrong ndim or dtype, mixed dtypes, a channel
        mismatch, b of the wrong shape, or a bad geometry.
    """
    kernel = kernels.module("conv", backend)
    x, w, dtype, (N, F, H_out, W_out) = _direct_arrays(x, w, stride, pad, {"b": b})
    if b.shape != (F,):
        raise CnnCheckError(f"b must have shape ({F},) for {F} filters, got {b.shape}")
    C, HH, WW = w.shape[1:]
    K = C * HH * WW
    Fp = _round_up(F, kernel.FILTER_BLOCK)
    w2p = _padded_rows(w.reshape(F, K), Fp)
    bias = _padded_rows(b.reshape(F, 1), Fp).reshape(Fp)
    out = np.empty((N, F, H_out, W_out), dtype=dtype)

    def call(lo, hi, threads):
        kernel.direct_forward(x[lo:hi], w2p, bias, out[lo:hi], HH, WW, int(stride), int(pad), threads)

    kernels.split(call, N, N * F * H_out * W_out * K, DIRECT_MACS_PER_THREAD)
    return out


def direct_backward(x, w, dout, stride, pad, backend=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`direct_forward` in register tiles, without unfolding.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32 or float64; any memory layout, never modified
    w : ndarray, shape (F, C, HH, WW), dtype of x
    dout : ndarray, shape (N, F, H_out, W_out), dtype of x
    stride, pad : int
        As in the forward pass.
    backend : {None, "cython", "numpy"}
        As in :func:`im2col`.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W); zero where no window reaches
    dw : ndarray, shape (F, C, HH, WW)
    db : ndarray, shape (F,)
        ``dw`` and ``db`` are summed over fixed blocks of images, then over
        the blocks in order: the same bits whatever the thread count.

    Raises
    ------
    CnnCheckError
        A ``ValueError``: wrong ndim or dtype, mixed dtypes, a channel
        mismatch, a bad geometry, or dout of the wrong shape.
    """
    kernel = kernels.module("conv", backend)
    x, w, dtype, out_shape = _direct_arrays(x, w, stride, pad, {"dout": dout})
    if dout.shape != out_shape:
        raise CnnCheckError(f"dout must have shape {out_shape}, got {dout.shape}")
    N, F, H_out, W_out = out_shape
    C, HH, WW = w.shape[1:]
    K = C * HH * WW
    wt = _padded_rows(w.reshape(F, K).T, _round_up(K, kernel.FILTER_BLOCK))
    Kq = _round_up(K, kernel.WINDOW_BLOCK)
    per_part = -(-N // _DIRECT_PARTS)
    parts = np.empty((-(-N // per_part), _round_up(F, kernel.FILTER_BLOCK), Kq + 1), dtype=dtype)
    dx = np.empty(x.shape, dtype=dtype)
    dout = np.ascontiguousarray(dout)

    def call(lo, hi, threads):  # parts lo .. hi-1: their images, whole
        n0, n1 = lo * per_part, min(N, hi * per_part)
        kernel.direct_backward(x[n0:n1], wt, dout[n0:n1], dx[n0:n1], parts[lo:hi], HH, WW, int(stride), int(pad),
                               per_part, threads)

    kernels.split(call, parts.shape[0], N * F * H_out * W_out * K, DIRECT_MACS_PER_THREAD)
    total = parts.sum(axis=0)
    return dx, np.ascontiguousarray(total[:F, :K]).reshape(w.shape), total[:F, Kq].copy()
