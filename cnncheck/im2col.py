"""im2col and col2im: convolution windows as columns of a matrix, and back.

This module validates its arguments and calls one of two kernels with the
same functions and argument order: the compiled ``cnncheck._im2col_cy``
(Cython) or the numpy fallback :mod:`cnncheck._im2col_numpy`.  The backend is
chosen once, at import:

* ``CNNCHECK_PURE_PYTHON=1`` in the environment selects numpy;
* otherwise the compiled module, and numpy with one ``RuntimeWarning`` when
  it cannot be imported (the extension was not built).

:data:`BACKEND` says which one is active (``"cython"`` or ``"numpy"``).

Layout (C order)::

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
"""

from __future__ import annotations

import importlib
import os
import warnings

import numpy as np

from cnncheck import _im2col_numpy, geometry
from cnncheck.errors import CnnCheckError

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _select_backend():
    if os.environ.get("CNNCHECK_PURE_PYTHON") == "1":
        return _im2col_numpy, "numpy"
    try:
        _im2col_cy = importlib.import_module("cnncheck._im2col_cy")
    except ImportError as exc:
        warnings.warn(
            f"cnncheck's compiled im2col extension is not available ({exc}); using the slower numpy "
            "fallback. Reinstall with a C compiler (pip install .) to build it.",
            RuntimeWarning,
            stacklevel=2,
        )
        return _im2col_numpy, "numpy"
    return _im2col_cy, "cython"


_kernel, BACKEND = _select_backend()


def _default_threads() -> int:
    """Threads the compiled kernels may use: ``OMP_NUM_THREADS`` when set, else the usable CPUs."""
    try:
        requested = int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0])
    except ValueError:
        requested = 0
    if requested >= 1:
        return requested
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # platforms without sched_getaffinity
        return max(1, os.cpu_count() or 1)


#: Most threads a compiled kernel uses (it runs serially without OpenMP).
NUM_THREADS = _default_threads()
# Below this many elements written, starting threads costs more than it saves.
_PARALLEL_MIN_ELEMENTS = 1 << 16


def kernel_threads(elements: int) -> int:
    """Threads for a kernel call that writes ``elements`` values: 1 for small work."""
    return NUM_THREADS if elements >= _PARALLEL_MIN_ELEMENTS else 1
#: Backends that can be requested explicitly with the ``backend`` argument.
BACKENDS = ("cython", "numpy")


def _get_kernel(backend):
    if backend is None:
        return _kernel
    if backend == "numpy":
        return _im2col_numpy
    if backend == "cython":
        try:
            _im2col_cy = importlib.import_module("cnncheck._im2col_cy")
        except ImportError:
            raise CnnCheckError(
                "backend 'cython' requested but the compiled extension cnncheck._im2col_cy is not built; "
                "reinstall with a C compiler or use backend 'numpy'"
            ) from None
        return _im2col_cy
    raise CnnCheckError(f"unknown im2col backend {backend!r}; known: {', '.join(BACKENDS)}")


def _check_float(a, name: str) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise CnnCheckError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype not in _FLOAT_DTYPES:
        raise CnnCheckError(f"{name} must be float32 or float64, got {a.dtype}; convert it with .astype(np.float64)")
    return a


def _check_out(out, shape, dtype, name: str, source: np.ndarray) -> np.ndarray:
    if not isinstance(out, np.ndarray):
        raise CnnCheckError(f"{name} must be a numpy array, got {type(out).__name__}")
    if out.shape != tuple(shape) or out.dtype != dtype:
        raise CnnCheckError(f"{name} must have shape {tuple(shape)} and dtype {dtype}, got {out.shape} {out.dtype}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise CnnCheckError(f"{name} must be a writeable C-contiguous array")
    if np.may_share_memory(out, source):
        raise CnnCheckError(f"{name} must not share memory with the array it is computed from")
    return out


def _shape_tuple(shape, name: str) -> tuple:
    try:
        return tuple(geometry._as_int(d, name) for d in shape)
    except TypeError:
        raise CnnCheckError(f"{name} must be a sequence of integers, got {shape!r}") from None


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


def im2col(x, HH, WW, stride, pad, out=None, backend=None) -> np.ndarray:
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
    out : ndarray, shape (C*HH*WW, N*H_out*W_out), dtype of x, C-contiguous, optional
        Buffer to fill (every element is overwritten).
    backend : {None, "cython", "numpy"}
        None uses :data:`BACKEND`; a name forces that kernel (for tests and benchmarks).

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
    kernel = _get_kernel(backend)
    x = _check_float(x, "x")
    shape = cols_shape(x.shape, HH, WW, stride, pad)
    x = np.ascontiguousarray(x)
    if out is None:
        out = np.empty(shape, dtype=x.dtype)
    else:
        _check_out(out, shape, x.dtype, "out", x)
    kernel.im2col(x, out, int(HH), int(WW), int(stride), int(pad), kernel_threads(out.size))
    return out


def col2im(cols, x_shape, HH, WW, stride, pad, out=None, backend=None) -> np.ndarray:
    """Sum columns back into an image: the adjoint of :func:`im2col`.

    ``<im2col(x), y> == <x, col2im(y)>`` for all x and y; in a convolution's
    backward pass ``col2im(w2.T @ dout_cols)`` is ``dx``.

    Parameters
    ----------
    cols : ndarray, shape (C*HH*WW, N*H_out*W_out), float32 or float64
        Any memory layout; never modified.
    x_shape : tuple of int, (N, C, H, W)
        Shape of the image to rebuild.
    HH, WW, stride, pad : int
        As in :func:`im2col`.
    out : ndarray, shape x_shape, dtype of cols, C-contiguous, optional
        Buffer to fill (overwritten).
    backend : {None, "cython", "numpy"}
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
    kernel = _get_kernel(backend)
    cols = _check_float(cols, "cols")
    x_shape = _shape_tuple(x_shape, "x_shape")
    shape = cols_shape(x_shape, HH, WW, stride, pad)
    if cols.shape != shape:
        raise CnnCheckError(
            f"cols has shape {cols.shape} but an input {x_shape} with a {HH}x{WW} kernel, "
            f"stride {stride} and pad {pad} gives columns of shape {shape}"
        )
    cols = np.ascontiguousarray(cols)
    if out is None:
        out = np.empty(x_shape, dtype=cols.dtype)
    else:
        _check_out(out, x_shape, cols.dtype, "out", cols)
    kernel.col2im(cols, out, int(HH), int(WW), int(stride), int(pad), kernel_threads(cols.size))
    return out
