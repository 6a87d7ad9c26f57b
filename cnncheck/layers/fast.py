"""Fast convolution, max pooling and relu: im2col into a reused workspace plus matrix products, one-pass kernels.

Same contract, results and error messages as :mod:`cnncheck.layers.naive`
(the reference they are tested against): ``out, cache = forward(...)`` and
``grads = backward(dout, cache)``; inputs and cached arrays are never
modified; float32 stays float32 (any other dtype is computed in float64);
inputs of any memory layout are accepted.  Bad shapes or parameters raise
:class:`cnncheck.errors.CnnCheckError`, a ``ValueError``.

Design
------
Convolution works on chunks of images.  For each chunk, the windows are
unfolded image by image (layout ``cols3`` of :mod:`cnncheck._im2col_cy`)
into a workspace followed by a row of ones, and one matrix product per
image, ``[w2 | b] @ [cols; 1]``, writes that image's output straight into
NCHW order with the bias already added: no transpose pass, no bias pass.
The backward pass unfolds the chunk again into the same workspace (the
cache holds no column matrix, so a forward pass allocates nothing but its
output), takes ``dw`` and ``db`` together from ``d @ [cols; 1].T`` and
overwrites the workspace with ``w2.T @ d``, which col2im folds into ``dx``.
A 1x1 kernel with stride 1 and no padding skips the unfolding.

The workspace belongs to the calling thread (:class:`threading.local`), so
the layers can be called from several threads at once; a chunk is sized to
stay in cache, and a workspace larger than 64 MiB is not kept between calls.

Pooling computes each window's maximum and the offset of its first maximum
in one pass, and the backward pass scatters ``dout`` through those offsets.

Relu reads its input once and writes its output once in both passes: a
compare and a select per element, with no mask array in between.

The loops run in the compiled extension when it is built; :data:`BACKEND`
(``"cython"`` or ``"numpy"``) says which kernel :mod:`cnncheck.im2col`
picked.  Both kernels give bit-identical results.
"""

from __future__ import annotations

import threading

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

#: Which kernel the fast layers use: ``"cython"`` or ``"numpy"``.
BACKEND = im2col.BACKEND

# Bytes of column workspace per chunk of images: within the last-level cache
# between the unfolding and the products, yet few chunks (each chunk hands
# the cores from the unfolding to BLAS's threads and back; measured: 2 MiB
# chunks cost the large convolution a fifth of its speed).
_CHUNK_BYTES = 16 << 20
# Threads of the convolution's unfolding kernels.  One: the products that
# follow run on BLAS's threads, and OpenMP threads still spinning after a
# parallel kernel take cores from them (measured: twice slower on 2 cores).
_CONV_KERNEL_THREADS = 1
# Threads of the relu kernels.  One: a pass over memory gains little from a
# second core, and OpenMP threads that wake for a fraction of a millisecond
# and then spin cost more than they save when the cores are busy (measured:
# median ten times slower with two threads on 2 busy cores).
_RELU_KERNEL_THREADS = 1
# Largest workspace kept for the next call of the same thread.
_MAX_KEPT_BYTES = 64 << 20
_local = threading.local()


def _workspace(shape: tuple, dtype: np.dtype) -> np.ndarray:
    """An uninitialised C-contiguous array of ``shape`` owned by the calling thread.

    The buffer is reused by the thread's next call, so the result must not
    outlive the layer call that asked for it (it never goes into a cache or
    an output).
    """
    nbytes = int(np.prod(shape)) * dtype.itemsize
    buffer = getattr(_local, "buffer", None)
    if buffer is None or buffer.nbytes < nbytes:
        buffer = np.empty(max(nbytes, 1), dtype=np.uint8)
        if nbytes <= _MAX_KEPT_BYTES:
            _local.buffer = buffer
    return buffer[:nbytes].view(dtype).reshape(shape)


def _images_per_chunk(N: int, bytes_per_image: int) -> int:
    return max(1, min(N, _CHUNK_BYTES // max(bytes_per_image, 1)))


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


def _is_pointwise(HH: int, WW: int, stride: int, pad: int) -> bool:
    """True for a 1x1 kernel with stride 1 and no padding: the columns are x itself."""
    return HH == WW == 1 and stride == 1 and pad == 0


# -- convolution ----------------------------------------------------------------
def conv_forward_fast(x, w, b, conv_param):
    """Convolution (cross-correlation) as im2col plus one matrix product per image, bias fused.

    ``out[n] = [w2 | b] @ [cols_n; 1]`` with ``w2 = w.reshape(F, -1)`` and
    ``cols_n`` image n's im2col matrix, computed chunk by chunk in a
    per-thread workspace and written straight into NCHW order.

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
    cache : tuple (x, w, b, conv_param, xc)
        x, w, b and conv_param as given (never modified), and ``xc``, a
        read-only C-contiguous view of x in the common dtype (x's own memory
        when x already is one; a copy otherwise), which the backward pass
        unfolds again.

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
    C, HH, WW = w_arr.shape[1:]
    K, P = C * HH * WW, H_out * W_out
    xc = _readonly(np.ascontiguousarray(x_arr, dtype=dtype).view())
    out = np.empty((N, F, P), dtype=dtype)
    if _is_pointwise(HH, WW, stride, pad):
        np.matmul(w_arr.reshape(F, K).astype(dtype, copy=False), xc.reshape(N, C, P), out=out)
        out += b_arr.astype(dtype, copy=False).reshape(1, F, 1)
        return out.reshape(N, F, H_out, W_out), (x, w, b, conv_param, xc)
    wb = np.empty((F, K + 1), dtype=dtype)  # [w2 | b]
    wb[:, :K] = w_arr.reshape(F, K)
    wb[:, K] = b_arr
    per_chunk = _images_per_chunk(N, (K + 1) * P * dtype.itemsize)
    cols = _workspace((per_chunk, K + 1, P), dtype)
    cols[:, K, :] = 1  # the kernel writes rows 0 .. K-1 only
    kernel = im2col._kernel
    for n0 in range(0, N, per_chunk):
        n1 = min(N, n0 + per_chunk)
        block = cols[:n1 - n0]
        kernel.im2col_images(xc[n0:n1], block, HH, WW, stride, pad, _CONV_KERNEL_THREADS)
        np.matmul(wb, block, out=out[n0:n1])
    return out.reshape(N, F, H_out, W_out), (x, w, b, conv_param, xc)


def conv_backward_fast(dout, cache):
    """Backward pass of :func:`conv_forward_fast`: products per image and col2im.

    With ``d_n`` image n's upstream gradient as (F, H_out*W_out):
    ``[dw | db] = sum_n d_n @ [cols_n; 1].T`` and
    ``dx_n = col2im(w2.T @ d_n)``.

    Parameters
    ----------
    dout : ndarray, shape (N, F, H_out, W_out); any memory layout, never modified
    cache : tuple (x, w, b, conv_param, xc) from :func:`conv_forward_fast`

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
    x, w, b, conv_param, xc = _unpack(cache, ("x", "w", "b", "conv_param", "xc"), "conv")
    stride, pad = conv_param_values(conv_param)
    x, w, b = as_float_array(x, "x"), as_float_array(w, "w"), as_float_array(b, "b")
    N, F, H_out, W_out = geometry.conv_output_shape(x.shape, w.shape, stride, pad)
    if b.shape != (F,):
        raise CnnCheckError(f"conv b must have shape ({F},) for {F} filters, got {b.shape}")
    dout = check_dout(dout, (N, F, H_out, W_out), "conv")
    dtype = common_dtype(x, w, b)
    if (not isinstance(xc, np.ndarray) or xc.shape != x.shape or xc.dtype != dtype
            or not xc.flags.c_contiguous):
        got = f"{xc.shape} {xc.dtype}" if isinstance(xc, np.ndarray) else type(xc).__name__
        raise CnnCheckError(
            f"conv backward: the cache's xc must be a C-contiguous array of shape {x.shape} and dtype {dtype}, "
            f"got {got}; pass the cache returned by conv_forward_fast"
        )
    C, HH, WW = w.shape[1:]
    K, P = C * HH * WW, H_out * W_out
    d = np.ascontiguousarray(dout, dtype=dtype).reshape(N, F, P)
    w2 = w.astype(dtype, copy=False).reshape(F, K)
    dx = np.empty((N, C, x.shape[2], x.shape[3]), dtype=dtype)
    if _is_pointwise(HH, WW, stride, pad):
        np.matmul(w2.T, d, out=dx.reshape(N, C, P))
        dw = np.matmul(d, xc.reshape(N, C, P).transpose(0, 2, 1)).sum(axis=0)
        return dx, dw.reshape(w.shape), d.sum(axis=(0, 2))
    per_chunk = _images_per_chunk(N, (K + 1) * P * dtype.itemsize)
    cols = _workspace((per_chunk, K + 1, P), dtype)
    cols[:, K, :] = 1
    dwb = np.zeros((F, K + 1), dtype=dtype)  # [dw2 | db]
    w2t = w2.T
    kernel = im2col._kernel
    for n0 in range(0, N, per_chunk):
        n1 = min(N, n0 + per_chunk)
        block = cols[:n1 - n0]
        threads = _CONV_KERNEL_THREADS
        kernel.im2col_images(xc[n0:n1], block, HH, WW, stride, pad, threads)
        dwb += np.matmul(d[n0:n1], block.transpose(0, 2, 1)).sum(axis=0)
        np.matmul(w2t, d[n0:n1], out=block[:, :K])  # dcols, over the columns just used
        kernel.col2im_images(block, dx[n0:n1], HH, WW, stride, pad, threads)
    return dx, np.ascontiguousarray(dwb[:, :K]).reshape(w.shape), dwb[:, K].copy()


# -- max pooling ----------------------------------------------------------------
_INDEX_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32))


def _index_dtype(window: int) -> np.dtype:
    """The narrowest unsigned type the kernels take that holds offsets 0 .. window-1."""
    for dtype in _INDEX_DTYPES:
        if window - 1 <= np.iinfo(dtype).max:
            return dtype
    raise CnnCheckError(f"pooling windows of {window} elements are too large (at most 2**32)")


def max_pool_forward_fast(x, pool_param):
    """Max pooling without padding in one pass; records each window's argmax.

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
    out = np.empty((N, C, H_out, W_out), dtype=x_arr.dtype)
    argmax = np.empty(out.shape, dtype=_index_dtype(ph * pw))
    xc = np.ascontiguousarray(x_arr)
    im2col._kernel.max_pool_forward(xc, out, argmax, ph, pw, stride, im2col.kernel_threads(xc.size))
    return out, (x, pool_param, _readonly(argmax))


def max_pool_backward_fast(dout, cache):
    """Backward pass of :func:`max_pool_forward_fast`: scatter dout through the saved argmax.

    Each pixel of dx is 0 plus the gradients of the windows whose first
    maximum it is, added in row-major window order (as the naive loops do).

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
        the cache is not one :func:`max_pool_forward_fast` returned (including
        an argmax holding offsets outside the window).
    """
    x, pool_param, argmax = _unpack(cache, ("x", "pool_param", "argmax"), "pool")
    ph, pw, stride = pool_param_values(pool_param)
    x = as_float_array(x, "x")
    N, C, H_out, W_out = geometry.pool_output_shape(x.shape, ph, pw, stride)
    dout = check_dout(dout, (N, C, H_out, W_out), "pool")
    if (not isinstance(argmax, np.ndarray) or argmax.shape != dout.shape
            or argmax.dtype.kind not in "ui"):
        got = f"{argmax.shape} {argmax.dtype}" if isinstance(argmax, np.ndarray) else type(argmax).__name__
        raise CnnCheckError(
            f"pool backward: the cache's argmax must be an integer array of shape {dout.shape}, got {got}; "
            "pass the cache returned by max_pool_forward_fast"
        )
    window = ph * pw
    index_dtype = _index_dtype(window)
    # The kernel trusts every offset: one outside the window would write out of bounds.
    info = np.iinfo(argmax.dtype)
    if (info.max >= window and argmax.max() >= window) or (info.min < 0 and argmax.min() < 0):
        raise CnnCheckError(
            f"pool backward: the cache's argmax holds offsets outside [0, {window}); "
            "pass the cache returned by max_pool_forward_fast"
        )
    if argmax.dtype not in _INDEX_DTYPES:
        argmax = argmax.astype(index_dtype)
    argmax = np.ascontiguousarray(argmax)
    d = np.ascontiguousarray(dout, dtype=x.dtype)
    dx = np.empty(x.shape, dtype=x.dtype)
    im2col._kernel.max_pool_backward(d, argmax, dx, ph, pw, stride, im2col.kernel_threads(dx.size))
    return dx


# -- relu -----------------------------------------------------------------------
def relu_forward_fast(x):
    """Rectified linear unit, elementwise ``max(0, x)``, in one pass.

    Parameters
    ----------
    x : ndarray, any shape, float64 or float32; any memory layout, never modified

    Returns
    -------
    out : ndarray, same shape and dtype as x (other dtypes give float64)
        ``np.maximum(x, 0)`` bit for bit: NaN passes through, ``-0.0`` and
        every negative give ``+0.0``.
    cache : x, as given
    """
    x_arr = as_float_array(x, "x")
    xc = np.ascontiguousarray(x_arr)
    out = np.empty(x_arr.shape, dtype=x_arr.dtype)
    im2col._kernel.relu_forward(xc.reshape(-1), out.reshape(-1), _RELU_KERNEL_THREADS)
    return out, x


def relu_backward_fast(dout, cache):
    """Backward pass of :func:`relu_forward_fast`: ``dout`` where ``x > 0``, else 0, in one pass.

    The gradient is exactly 0 where ``x <= 0`` (the kink included) or x is
    NaN, even where dout holds inf or NaN; every zero of dx is ``+0.0``.

    Parameters
    ----------
    dout : ndarray, shape of x; any memory layout, never modified
    cache : x from the forward pass

    Returns
    -------
    dx : ndarray, shape of x
        float32 when x and dout are both float32, else float64.

    Raises
    ------
    CnnCheckError
        A ``ValueError`` when dout's shape differs from x's.
    """
    x = as_float_array(cache, "x")
    dout = check_dout(dout, x.shape, "relu")
    dtype = common_dtype(x, dout)
    xc = np.ascontiguousarray(x, dtype=dtype)
    d = np.ascontiguousarray(dout, dtype=dtype)
    dx = np.empty(x.shape, dtype=dtype)
    im2col._kernel.relu_backward(d.reshape(-1), xc.reshape(-1), dx.reshape(-1), _RELU_KERNEL_THREADS)
    return dx
