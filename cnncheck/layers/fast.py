"""Fast convolution, max pooling and relu on the compiled kernels of :mod:`cnncheck.kernels`.

Same contract, results and error messages as :mod:`cnncheck.layers.naive`
(the reference they are tested against): ``out, cache = forward(...)`` and
``grads = backward(dout, cache)``; inputs and cached arrays are never
modified; float32 stays float32 (any other dtype is computed in float64);
inputs of any memory layout are accepted.  Bad shapes or parameters raise
:class:`cnncheck.errors.CnnCheckError`, a ``ValueError``.

Design
------
Convolution takes one of three routes, by the size of a window
``K = C*HH*WW``:

* **direct** (``K <= DIRECT_MAX_WINDOW``, and ``K <= DIRECT_MAX_WIDE_WINDOW``
  with more than ``DIRECT_MAX_FILTERS`` filters; the course notebook's
  3x3x3 with 25 filters): a register-tiled kernel computes the layer without unfolding
  (:func:`cnncheck.kernels.conv.direct_forward`), in both passes; matrix
  products this thin run far below the BLAS peak, and unfolding costs as
  much as they do.
* **unfold and multiply** (larger windows): chunk by chunk, the windows of a
  chunk of images are unfolded into a workspace followed by a row of ones,
  and one matrix product per chunk, ``[w2 | b] @ [cols; 1]``, gives the
  chunk's output with the bias already added; the backward pass unfolds
  the chunk again (the cache holds no column matrix, so a forward pass
  allocates nothing but its output), takes ``dw`` and ``db`` together from
  one product ``d @ [cols; 1].T`` and overwrites the workspace with
  ``w2.T @ d``, which col2im folds into ``dx``.  Where the machine has
  cores that BLAS does not use, the next chunk is unfolded on one of them
  while this chunk's product runs.
* **pointwise** (a 1x1 kernel with stride 1 and no padding): x is its own
  column matrix, nothing is unfolded.

The workspace belongs to the calling thread (:class:`threading.local`), so
the layers can be called from several threads at once; a chunk is sized to
stay in cache, and a workspace larger than 64 MiB is not kept between calls.

Pooling computes each window's maximum and the offset of its first maximum
in one pass, and the backward pass scatters ``dout`` through those offsets.

Relu reads its input once and writes its output once in both passes: a
compare and a select per element, with no mask array in between.

The loops run in the compiled extensions when they are built; :data:`BACKEND`
(``"cython"`` or ``"numpy"``) says which kernels :mod:`cnncheck.kernels`
picked, and every kernel takes its thread count at call time.
"""

from __future__ import annotations

import contextlib
import functools
import threading

import numpy as np

from cnncheck import geometry, kernels
from cnncheck.errors import CnnCheckError
from cnncheck.kernels import conv as kconv
from cnncheck.kernels import pool as kpool
from cnncheck.kernels import relu as krelu
from cnncheck.layers.naive import (
    as_float_array,
    check_dout,
    common_dtype,
    conv_param_values,
    pool_param_values,
)

#: Which kernels the fast layers use: ``"cython"`` or ``"numpy"``.
BACKEND = kernels.BACKEND

#: Largest window ``C*HH*WW`` computed by the direct kernel; larger ones are
#: unfolded and multiplied.  Measured here (32 and 100 images, 3x3 kernels,
#: stride 1 and 2, 8 to 64 filters): the direct kernel takes 0.2 to 0.8 of
#: the time of unfolding plus products up to a 16x3x3 window with up to 25
#: filters, and up to 4x3x3 with 64 filters, where more filters make the
#: products efficient enough to pay for the unfolding.
DIRECT_MAX_WINDOW = 144
#: Most filters for which any window up to DIRECT_MAX_WINDOW goes direct.
DIRECT_MAX_FILTERS = 32
#: Largest window that goes direct with more filters than that.
DIRECT_MAX_WIDE_WINDOW = 36
# Bytes of column workspace per chunk of images: the columns should still be
# in cache when the products read them.  Measured on the large benchmark
# convolution (64x3x3 windows over 32x32 images, 4.5 MiB of columns per
# image), forward and backward: 3 images per chunk (16 MiB) with products in
# blocks of 512 columns 136 and 291 ms, 1 image (8 MiB) 165 and 279 ms, 1 image
# in blocks of 256 columns 178 and 293 ms; 5 images (24 MiB) no better.
_CHUNK_BYTES = 16 << 20
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
def _route(F: int, C: int, HH: int, WW: int, stride: int, pad: int) -> str:
    """``"pointwise"``, ``"direct"`` or ``"unfold"``: how a convolution of this geometry is computed."""
    if _is_pointwise(HH, WW, stride, pad):
        return "pointwise"
    K = C * HH * WW
    if K <= DIRECT_MAX_WINDOW and (F <= DIRECT_MAX_FILTERS or K <= DIRECT_MAX_WIDE_WINDOW):
        return "direct"
    return "unfold"


# -- threads of the unfolding route ----------------------------------------------------
_blas_libraries_found = None
_blas_lock = threading.Lock()
_blas_users = 0  # layer calls inside _blas_one_thread, in any thread
_blas_saved: list = []


def _blas_libraries() -> list:
    """threadpoolctl's controllers of the BLAS libraries loaded in the process (found once)."""
    global _blas_libraries_found
    if _blas_libraries_found is None:
        import threadpoolctl

        _blas_libraries_found = threadpoolctl.ThreadpoolController().select(user_api="blas").lib_controllers
    return _blas_libraries_found


@contextlib.contextmanager
def _blas_one_thread():
    """BLAS on one thread inside the block; yields the thread limit in force before (None: no BLAS seen).

    The unfolding route shares its products among its own threads
    (:func:`cnncheck.kernels.share`) instead: a product split among BLAS's threads waits
    for the slowest, and on a busy machine a thread the scheduler leaves out
    for a time slice makes it many times slower than one thread (measured
    here: 16 ms instead of 3 ms, and 0.8 s instead of 3 ms, for the notebook
    convolution's products; 3 to 9 s instead of 2 s for the large
    convolution's forward and backward pass, with the two cores busy).  BLAS's
    threads also keep spinning after a product, beside the unfolding that
    follows.  The limit is restored when the last layer call inside leaves.
    """
    global _blas_users, _blas_saved
    libraries = _blas_libraries()
    with _blas_lock:
        if _blas_users == 0:
            _blas_saved = [lib.num_threads for lib in libraries]
        _blas_users += 1
        saved = list(_blas_saved)
        for lib in libraries:
            if lib.num_threads != 1:
                lib.set_num_threads(1)
    try:
        yield max(saved) if saved else None
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                for lib, limit in zip(libraries, _blas_saved):
                    if lib.num_threads != limit:
                        lib.set_num_threads(limit)


def _team(blas_limit: int | None) -> int:
    """Threads for the unfolding route: the thread limits in force (BLAS's and OpenMP's), at most the CPUs."""
    team = kernels.thread_limit() if kernels.BACKEND == "cython" else kernels.usable_cpus()
    return max(1, min(team, blas_limit or 1))


# Columns of an image's product per task: a fixed split, so the sums of dw
# and db do not depend on the number of threads (measured: see _CHUNK_BYTES).
_BLOCK_COLUMNS = 512


def _blocks(P: int) -> list[tuple[int, int]]:
    return [(c0, min(P, c0 + _BLOCK_COLUMNS)) for c0 in range(0, P, _BLOCK_COLUMNS)]


class _Plan:
    """The chunks of a convolution's images and the workspace slots their columns take turns in."""

    def __init__(self, xc, K, P, HH, WW, stride, pad, dtype, slots: int):
        N = xc.shape[0]
        per_chunk = _images_per_chunk(N, (K + 1) * P * dtype.itemsize)
        self.bounds = [(n0, min(N, n0 + per_chunk)) for n0 in range(0, N, per_chunk)]
        self.space = _workspace((min(slots, len(self.bounds)), (K + 1) * per_chunk * P), dtype)
        self.xc, self.K, self.P, self.geometry = xc, K, P, (HH, WW, stride, pad)

    def cols(self, c: int) -> np.ndarray:
        """``[cols; 1]`` (K + 1, images*P) of chunk c, in its slot."""
        n0, n1 = self.bounds[c]
        columns = (n1 - n0) * self.P
        return self.space[c % len(self.space), :(self.K + 1) * columns].reshape(self.K + 1, columns)

    def unfold(self, c: int) -> None:
        """Fill ``[cols; 1]`` of chunk c with its windows and a row of ones (on one thread: see _blas_one_thread)."""
        n0, n1 = self.bounds[c]
        cols = self.cols(c)
        kconv.im2col(self.xc[n0:n1], *self.geometry, out=cols[:self.K], threads=1)
        cols[self.K] = 1


def conv_forward_fast(x, w, b, conv_param):
    """Convolution (cross-correlation): a direct kernel for small windows, else unfolding plus products.

    Small windows (``C*HH*WW <= DIRECT_MAX_WINDOW``) go through the
    register-tiled direct kernel.  Otherwise ``out = [w2 | b] @ [cols; 1]``
    chunk by chunk, with ``w2 = w.reshape(F, -1)`` and ``cols`` a chunk's
    im2col matrix in a per-thread workspace.

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
        reads again.

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
    cache = (x, w, b, conv_param, xc)
    w_d = w_arr.astype(dtype, copy=False)
    b_d = b_arr.astype(dtype, copy=False)
    route = _route(F, C, HH, WW, stride, pad)
    if route == "direct":
        return kconv.direct_forward(xc, w_d, b_d, stride, pad), cache
    out = np.empty((N, F, P), dtype=dtype)
    w2 = w_d.reshape(F, K)
    with _blas_one_thread() as blas_limit:
        team = _team(blas_limit)
        if route == "pointwise":
            def image(n):
                np.matmul(w2, xc[n].reshape(C, P), out=out[n])
                out[n] += b_d.reshape(F, 1)

            kernels.share([functools.partial(image, n) for n in range(N)], team)
            return out.reshape(N, F, H_out, W_out), cache
        wb = np.empty((F, K + 1), dtype=dtype)  # [w2 | b]
        wb[:, :K] = w2
        wb[:, K] = b_d
        plan = _Plan(xc, K, P, HH, WW, stride, pad, dtype, slots=2)

        def product(c, n, c0, c1):
            i = n - plan.bounds[c][0]
            np.matmul(wb, plan.cols(c)[:, i * P + c0:i * P + c1], out=out[n, :, c0:c1])

        plan.unfold(0)
        for c, (n0, n1) in enumerate(plan.bounds):
            # the next chunk's unfolding first, then this chunk's product in column blocks
            tasks = [functools.partial(plan.unfold, c + 1)] if c + 1 < len(plan.bounds) else []
            tasks += [functools.partial(product, c, n, c0, c1) for n in range(n0, n1) for c0, c1 in _blocks(P)]
            kernels.share(tasks, team)
    return out.reshape(N, F, H_out, W_out), cache


def conv_backward_fast(dout, cache):
    """Backward pass of :func:`conv_forward_fast`, on the same route as the forward pass.

    Unfolding route, with ``d`` a chunk's upstream gradient as
    (F, images*H_out*W_out): ``[dw | db] += d @ [cols; 1].T`` and
    ``dx = col2im(w2.T @ d)``.

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
    d = np.ascontiguousarray(dout, dtype=dtype)
    w_d = w.astype(dtype, copy=False)
    route = _route(F, C, HH, WW, stride, pad)
    if route == "direct":
        return kconv.direct_backward(xc, w_d, d, stride, pad)
    d = d.reshape(N, F, P)
    w2 = w_d.reshape(F, K)
    dx = np.empty((N, C, x.shape[2], x.shape[3]), dtype=dtype)
    with _blas_one_thread() as blas_limit:
        team = _team(blas_limit)
        if route == "pointwise":
            parts = [None] * N

            def image(n):
                np.matmul(w2.T, d[n], out=dx[n].reshape(C, P))
                parts[n] = d[n] @ xc[n].reshape(C, P).T

            kernels.share([functools.partial(image, n) for n in range(N)], team)
            return dx, np.sum(parts, axis=0).reshape(w.shape), d.sum(axis=(0, 2))
        plan = _Plan(xc, K, P, HH, WW, stride, pad, dtype, slots=3)
        blocks = _blocks(P)
        dwb = np.zeros((F, K + 1), dtype=dtype)  # [dw2 | db]
        H, W = x.shape[2:]

        def gradients(c, n, b, c0, c1, parts):
            # this block's share of [dw2 | db], then its columns overwritten with dcols
            i = n - plan.bounds[c][0]
            cols = plan.cols(c)[:, i * P + c0:i * P + c1]
            parts[(n - plan.bounds[c][0]) * len(blocks) + b] = d[n][:, c0:c1] @ cols.T
            np.matmul(w2.T, d[n][:, c0:c1], out=cols[:K])

        def fold(c):
            n0, n1 = plan.bounds[c]
            kconv.col2im(plan.cols(c)[:K], (n1 - n0, C, H, W), HH, WW, stride, pad, out=dx[n0:n1], threads=1)

        plan.unfold(0)
        for c, (n0, n1) in enumerate(plan.bounds):
            # the last chunk folded back and the next one unfolded while this one's products run
            tasks = [functools.partial(fold, c - 1)] if c > 0 else []
            tasks += [functools.partial(plan.unfold, c + 1)] if c + 1 < len(plan.bounds) else []
            parts = [None] * ((n1 - n0) * len(blocks))
            tasks += [functools.partial(gradients, c, n, b, c0, c1, parts)
                      for n in range(n0, n1) for b, (c0, c1) in enumerate(blocks)]
            kernels.share(tasks, team)
            for part in parts:  # in a fixed order: the same sums whatever the threads
                dwb += part
        fold(len(plan.bounds) - 1)
    return dx, np.ascontiguousarray(dwb[:, :K]).reshape(w.shape), dwb[:, K].copy()


# -- max pooling ----------------------------------------------------------------
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
    out, argmax = kpool.max_pool_forward(x_arr, ph, pw, stride)
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
    try:
        return kpool.max_pool_backward(np.ascontiguousarray(dout, dtype=x.dtype), argmax, x.shape, ph, pw, stride)
    except CnnCheckError as exc:  # the kernel checks the saved offsets: name the cache they came from
        raise CnnCheckError(f"pool backward: the cache's {exc}; pass the cache returned by max_pool_forward_fast") \
            from None


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
    return krelu.relu_forward(as_float_array(x, "x")), x


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
    return krelu.relu_backward(np.asarray(dout, dtype=dtype), np.asarray(x, dtype=dtype))
