# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, language_level=3
"""Compiled loops of the fast layers, built as ``cnncheck._im2col_cy``.

Called only through :mod:`cnncheck.im2col` and :mod:`cnncheck.layers.fast`,
which validate shapes, dtypes, contiguity, geometry and index ranges before
calling in; the loops here trust their arguments and check nothing.
:mod:`cnncheck._im2col_numpy` has the same functions with the same
arguments, in numpy, and gives bit-identical results.

Column layouts (C-contiguous rows, one dtype, float32 or float64)::

    x     (N, C, H, W)
    cols  (C*HH*WW, N*H_out*W_out)      -- im2col / col2im
    cols3 (N, >= C*HH*WW, H_out*W_out)  -- im2col_images / col2im_images
    cols[(c*HH + kh)*WW + kw, (n*H_out + i)*W_out + j]
        = cols3[n, (c*HH + kh)*WW + kw, i*W_out + j]
        = x_pad[n, c, i*stride + kh, j*stride + kw]

where ``x_pad`` is ``x`` with ``pad`` zeros on every side and
``H_out = 1 + (H + 2*pad - HH) // stride`` (likewise W_out).  ``cols3`` is
the per-image layout the convolution uses: image n's block is a contiguous
matrix of its own (its rows may be followed by extra rows the caller owns).

Every kernel works plane by plane, one (image, channel) pair at a time, so
the input plane stays in cache and distinct planes never write to the same
memory: the planes are shared among ``num_threads`` OpenMP threads when the
module was built with OpenMP (serially otherwise).  Sums are formed in the
same order whatever the thread count.  The elementwise relu kernels work on
flat arrays in blocks of consecutive elements instead.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.stdlib cimport free, malloc

ctypedef fused index_t:
    uint8_t
    uint16_t
    uint32_t


cdef inline Py_ssize_t _first_valid(Py_ssize_t offset, Py_ssize_t stride, Py_ssize_t n_out) noexcept nogil:
    """Smallest j in [0, n_out] with j*stride + offset >= 0."""
    cdef Py_ssize_t j
    if offset >= 0:
        return 0
    j = (stride - 1 - offset) // stride
    return j if j < n_out else n_out


cdef inline Py_ssize_t _end_valid(Py_ssize_t offset, Py_ssize_t stride, Py_ssize_t size,
                                  Py_ssize_t n_out) noexcept nogil:
    """One past the largest j in [0, n_out) with j*stride + offset < size (0 if none)."""
    cdef Py_ssize_t j
    if offset >= size:
        return 0
    j = (size - 1 - offset) // stride + 1
    return j if j < n_out else n_out


cdef void _im2col_plane(const floating* src, floating* dst, Py_ssize_t row_stride,
                        Py_ssize_t H, Py_ssize_t W, Py_ssize_t HH, Py_ssize_t WW,
                        Py_ssize_t stride, Py_ssize_t pad,
                        Py_ssize_t H_out, Py_ssize_t W_out) noexcept nogil:
    """Write the HH*WW rows of one input plane ``src`` (H, W) starting at ``dst``.

    Row r = kh*WW + kw starts at ``dst + r*row_stride`` and holds the
    H_out*W_out window elements at offset (kh, kw), zeros in the padding.
    """
    cdef Py_ssize_t kh, kw, i, j, h, w0, j_lo, j_hi
    cdef floating* d
    cdef const floating* s
    for kh in range(HH):
        for kw in range(WW):
            w0 = kw - pad
            j_lo = _first_valid(w0, stride, W_out)
            j_hi = _end_valid(w0, stride, W, W_out)
            if j_hi < j_lo:
                j_hi = j_lo
            for i in range(H_out):
                d = dst + (kh * WW + kw) * row_stride + i * W_out
                h = i * stride + kh - pad
                if h < 0 or h >= H:
                    for j in range(W_out):
                        d[j] = 0
                    continue
                s = src + h * W
                for j in range(j_lo):
                    d[j] = 0
                if stride == 1:
                    for j in range(j_lo, j_hi):
                        d[j] = s[j + w0]
                else:
                    for j in range(j_lo, j_hi):
                        d[j] = s[j * stride + w0]
                for j in range(j_hi, W_out):
                    d[j] = 0


cdef void _col2im_plane(const floating* src, Py_ssize_t row_stride, floating* dst,
                        Py_ssize_t H, Py_ssize_t W, Py_ssize_t HH, Py_ssize_t WW,
                        Py_ssize_t stride, Py_ssize_t pad,
                        Py_ssize_t H_out, Py_ssize_t W_out) noexcept nogil:
    """Overwrite one plane ``dst`` (H, W) with the sum of its HH*WW column rows.

    The adjoint of :func:`_im2col_plane`: the plane is zeroed, then the rows
    are added in row-major (kh, kw) order; entries in the padding are dropped.
    """
    cdef Py_ssize_t kh, kw, i, j, h, w0, j_lo, j_hi
    cdef floating* d
    cdef const floating* s
    for j in range(H * W):
        dst[j] = 0
    for kh in range(HH):
        for kw in range(WW):
            w0 = kw - pad
            j_lo = _first_valid(w0, stride, W_out)
            j_hi = _end_valid(w0, stride, W, W_out)
            for i in range(H_out):
                h = i * stride + kh - pad
                if h < 0 or h >= H:
                    continue
                s = src + (kh * WW + kw) * row_stride + i * W_out
                d = dst + h * W
                if stride == 1:
                    for j in range(j_lo, j_hi):
                        d[j + w0] += s[j]
                else:
                    for j in range(j_lo, j_hi):
                        d[j * stride + w0] += s[j]


def im2col(const floating[:, :, :, ::1] x, floating[:, ::1] cols,
           Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t stride, Py_ssize_t pad, int num_threads=1):
    """Fill ``cols`` (C*HH*WW, N*H_out*W_out) with the windows of ``x`` (N, C, H, W).

    Every element of ``cols`` is written (zeros where a window reaches the
    padding), so ``cols`` may be uninitialised.  Called by
    :func:`cnncheck.im2col.im2col`.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t H_out = (H + 2 * pad - HH) // stride + 1
    cdef Py_ssize_t W_out = (W + 2 * pad - WW) // stride + 1
    cdef Py_ssize_t nc, n, c
    for nc in prange(N * C, nogil=True, num_threads=num_threads, schedule="static"):
        n = nc // C
        c = nc % C
        _im2col_plane(&x[n, c, 0, 0], &cols[c * HH * WW, n * H_out * W_out], cols.shape[1],
                      H, W, HH, WW, stride, pad, H_out, W_out)


def col2im(const floating[:, ::1] cols, floating[:, :, :, ::1] dx,
           Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t stride, Py_ssize_t pad, int num_threads=1):
    """Sum the columns ``cols`` (C*HH*WW, N*H_out*W_out) back into ``dx`` (N, C, H, W).

    ``dx`` is overwritten: each plane is zeroed, then every column entry that
    lies inside the unpadded image is added to its pixel, kernel offset by
    kernel offset in row-major order (entries in the padding are dropped;
    pixels no window reaches stay zero).  The adjoint of :func:`im2col`.
    Called by :func:`cnncheck.im2col.col2im`.
    """
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t H_out = (H + 2 * pad - HH) // stride + 1
    cdef Py_ssize_t W_out = (W + 2 * pad - WW) // stride + 1
    cdef Py_ssize_t nc, n, c
    for nc in prange(N * C, nogil=True, num_threads=num_threads, schedule="static"):
        n = nc // C
        c = nc % C
        _col2im_plane(&cols[c * HH * WW, n * H_out * W_out], cols.shape[1], &dx[n, c, 0, 0],
                      H, W, HH, WW, stride, pad, H_out, W_out)


def im2col_images(const floating[:, :, :, ::1] x, floating[:, :, ::1] cols3,
                  Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t stride, Py_ssize_t pad, int num_threads=1):
    """Fill rows ``0 .. C*HH*WW - 1`` of every block of ``cols3`` (N, rows, H_out*W_out).

    Per-image layout: ``cols3[n]`` is image n's column matrix.  Rows past
    C*HH*WW (the caller's, e.g. a row of ones) are left untouched.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t H_out = (H + 2 * pad - HH) // stride + 1
    cdef Py_ssize_t W_out = (W + 2 * pad - WW) // stride + 1
    cdef Py_ssize_t row_stride = cols3.strides[1] // sizeof(floating)
    cdef Py_ssize_t nc, n, c
    for nc in prange(N * C, nogil=True, num_threads=num_threads, schedule="static"):
        n = nc // C
        c = nc % C
        _im2col_plane(&x[n, c, 0, 0], &cols3[n, c * HH * WW, 0], row_stride,
                      H, W, HH, WW, stride, pad, H_out, W_out)


def col2im_images(const floating[:, :, ::1] cols3, floating[:, :, :, ::1] dx,
                  Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t stride, Py_ssize_t pad, int num_threads=1):
    """Overwrite ``dx`` (N, C, H, W) with the column sums of ``cols3`` (N, rows, H_out*W_out).

    The adjoint of :func:`im2col_images`; same summation order as :func:`col2im`.
    """
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t H_out = (H + 2 * pad - HH) // stride + 1
    cdef Py_ssize_t W_out = (W + 2 * pad - WW) // stride + 1
    cdef Py_ssize_t row_stride = cols3.strides[1] // sizeof(floating)
    cdef Py_ssize_t nc, n, c
    for nc in prange(N * C, nogil=True, num_threads=num_threads, schedule="static"):
        n = nc // C
        c = nc % C
        _col2im_plane(&cols3[n, c * HH * WW, 0], row_stride, &dx[n, c, 0, 0],
                      H, W, HH, WW, stride, pad, H_out, W_out)


cdef void _pool_window_nan(const floating* base, Py_ssize_t W, Py_ssize_t ph, Py_ssize_t pw,
                           floating* out, index_t* arg) noexcept nogil:
    """Max and first argmax of one window by the rule of ``np.argmax``, NaN included.

    A later element wins only when strictly greater, or when it is the first
    NaN (NaN compares false with everything, so nothing displaces it).
    """
    cdef Py_ssize_t kh, kw
    cdef floating best = base[0], v
    cdef index_t k = 0
    for kh in range(ph):
        for kw in range(pw):
            v = base[kh * W + kw]
            if (v > best) or (v != v and best == best):
                best = v
                k = <index_t>(kh * pw + kw)
    out[0] = best
    arg[0] = k


cdef void _pool_plane(const floating* src, floating* out, index_t* arg,
                      Py_ssize_t W, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t stride,
                      Py_ssize_t H_out, Py_ssize_t W_out) noexcept nogil:
    """Max and first argmax of every window of one plane, in one pass.

    Without NaN in a window (its sum is then a number) the maximum is a
    chain of ``v > m ? v : m`` (a max instruction, no branch) and the argmax
    the first element equal to it, picked by integer selects: random data
    costs no branch mispredictions.  A window whose sum is NaN (a NaN, or
    both infinities) takes the exact rule in :func:`_pool_window_nan`.
    """
    cdef Py_ssize_t i, j, kh, kw, o
    cdef const floating* r0
    cdef const floating* r1
    cdef const floating* base
    cdef floating a, b, c, d, m, total, v
    cdef Py_ssize_t k, found
    if ph == 2 and pw == 2 and stride == 2:  # the usual layer, unrolled
        for i in range(H_out):
            r0 = src + 2 * i * W
            r1 = r0 + W
            for j in range(W_out):
                o = i * W_out + j
                a = r0[2 * j]
                b = r0[2 * j + 1]
                c = r1[2 * j]
                d = r1[2 * j + 1]
                total = a + b + c + d
                if total != total:
                    _pool_window_nan(r0 + 2 * j, W, 2, 2, out + o, arg + o)
                    continue
                m = b if b > a else a
                m = c if c > m else m
                m = d if d > m else m
                k = 2 if c == m else 3
                k = 1 if b == m else k
                k = 0 if a == m else k
                out[o] = m
                arg[o] = <index_t>k
        return
    for i in range(H_out):
        for j in range(W_out):
            o = i * W_out + j
            base = src + i * stride * W + j * stride
            m = base[0]
            total = 0
            for kh in range(ph):
                for kw in range(pw):
                    v = base[kh * W + kw]
                    total = total + v
                    m = v if v > m else m
            if total != total:
                _pool_window_nan(base, W, ph, pw, out + o, arg + o)
                continue
            found = ph * pw
            for kh in range(ph - 1, -1, -1):
                for kw in range(pw - 1, -1, -1):
                    k = kh * pw + kw
                    found = k if base[kh * W + kw] == m else found
            out[o] = m
            arg[o] = <index_t>found


def max_pool_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out, index_t[:, :, :, ::1] argmax,
                     Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t stride, int num_threads=1):
    """Fill ``out`` and ``argmax`` (N, C, H_out, W_out) with each window's max and its offset.

    ``argmax`` holds the row-major offset ``kh*pw + kw`` of the first maximum.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t H_out = out.shape[2], W_out = out.shape[3]
    cdef Py_ssize_t nc, n, c
    for nc in prange(N * C, nogil=True, num_threads=num_threads, schedule="static"):
        n = nc // C
        c = nc % C
        _pool_plane(&x[n, c, 0, 0], &out[n, c, 0, 0], &argmax[n, c, 0, 0],
                    W, ph, pw, stride, H_out, W_out)


cdef void _unpool_plane(const floating* g, const index_t* arg, floating* dst, const Py_ssize_t* offset,
                        Py_ssize_t H, Py_ssize_t W, Py_ssize_t stride,
                        Py_ssize_t H_out, Py_ssize_t W_out) noexcept nogil:
    """Scatter one plane of dout through its argmax into ``dst`` (H, W), overwriting it.

    The plane is zeroed, then each window's gradient is added to its argmax
    pixel in row-major window order, so each pixel is 0 plus its windows'
    gradients in that order.  ``offset[k]`` is the distance in ``dst`` from
    a window's first pixel to its pixel k (a table: no division per window).
    """
    cdef Py_ssize_t i, j
    for i in range(H * W):
        dst[i] = 0
    for i in range(H_out):
        for j in range(W_out):
            dst[i * stride * W + j * stride + offset[arg[i * W_out + j]]] += g[i * W_out + j]


def max_pool_backward(const floating[:, :, :, ::1] dout, const index_t[:, :, :, ::1] argmax,
                      floating[:, :, :, ::1] dx, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t stride,
                      int num_threads=1):
    """Overwrite ``dx`` (N, C, H, W) with ``dout`` routed to each window's saved argmax.

    Every ``argmax`` entry must be below ph*pw.
    """
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t H_out = dout.shape[2], W_out = dout.shape[3]
    cdef Py_ssize_t nc, n, c, k
    cdef Py_ssize_t* offset = <Py_ssize_t*>malloc(ph * pw * sizeof(Py_ssize_t))
    if offset == NULL:
        raise MemoryError()
    for k in range(ph * pw):
        offset[k] = (k // pw) * W + k % pw
    try:
        for nc in prange(N * C, nogil=True, num_threads=num_threads, schedule="static"):
            n = nc // C
            c = nc % C
            _unpool_plane(&dout[n, c, 0, 0], &argmax[n, c, 0, 0], &dx[n, c, 0, 0], offset,
                          H, W, stride, H_out, W_out)
    finally:
        free(offset)


# Elements per block of the elementwise relu kernels: the blocks are shared
# among the threads, and each block's loop is simple enough to vectorise.
cdef enum:
    _RELU_BLOCK = 16384
    _RELU_CHUNK = 512  # elements per two-pass chunk of the backward kernel: three arrays in L1


cdef void _relu_forward_block(const floating* x, floating* out, Py_ssize_t n) noexcept nogil:
    """``out[i] = 0 if x[i] <= 0 else x[i]`` for i < n: a compare and a select, no branch.

    NaN is not <= 0, so it passes through unchanged, as in ``np.maximum(x, 0)``;
    ``-0.0`` gives ``+0.0``.
    """
    cdef Py_ssize_t i
    cdef floating v
    for i in range(n):
        v = x[i]
        out[i] = 0 if v <= 0 else v


cdef void _relu_backward_block(const floating* dout, const floating* x, floating* dx,
                               Py_ssize_t n) noexcept nogil:
    """``dx[i] = dout[i] + 0 if x[i] > 0 else 0`` for i < n, branch-free.

    Where x <= 0 (or x is NaN) the gradient is exactly +0.0 whatever dout
    holds there, inf and NaN included; ``+ 0`` turns a ``-0.0`` gradient into
    ``+0.0``, so every zero of dx is +0.0, as in the numpy reference.  The
    addition gets a pass of its own over each small chunk (in L1 cache):
    inside the select the compiler would move it into the taken branch, and
    a conditional floating-point operation stops the loop from vectorising.
    """
    cdef Py_ssize_t i, c, start, stop
    cdef floating g
    for c in range((n + _RELU_CHUNK - 1) // _RELU_CHUNK):
        start = c * _RELU_CHUNK
        stop = start + _RELU_CHUNK if start + _RELU_CHUNK < n else n
        for i in range(start, stop):
            dx[i] = dout[i] + 0
        for i in range(start, stop):
            g = dx[i]
            dx[i] = g if x[i] > 0 else 0


def relu_forward(const floating[::1] x, floating[::1] out, int num_threads=1):
    """Fill ``out`` with ``np.maximum(x, 0)``, bit for bit; both flat and of the same length."""
    cdef Py_ssize_t n = x.shape[0]
    cdef Py_ssize_t blocks = (n + _RELU_BLOCK - 1) // _RELU_BLOCK
    cdef Py_ssize_t k, start
    for k in prange(blocks, nogil=True, num_threads=num_threads, schedule="static"):
        start = k * _RELU_BLOCK
        _relu_forward_block(&x[start], &out[start], min(_RELU_BLOCK, n - start))


def relu_backward(const floating[::1] dout, const floating[::1] x, floating[::1] dx, int num_threads=1):
    """Overwrite ``dx`` with ``dout`` where ``x > 0`` and +0.0 elsewhere; all flat, one length.

    A ``-0.0`` in dout gives ``+0.0`` too: every zero of dx is +0.0.
    """
    cdef Py_ssize_t n = x.shape[0]
    cdef Py_ssize_t blocks = (n + _RELU_BLOCK - 1) // _RELU_BLOCK
    cdef Py_ssize_t k, start
    for k in prange(blocks, nogil=True, num_threads=num_threads, schedule="static"):
        start = k * _RELU_BLOCK
        _relu_backward_block(&dout[start], &x[start], &dx[start], min(_RELU_BLOCK, n - start))
