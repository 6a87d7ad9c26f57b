# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, language_level=3
"""Compiled convolution loops, built as ``cnncheck.kernels._conv_cy``.

Called only through :mod:`cnncheck.kernels.conv`, which validates shapes,
dtypes, contiguity and geometry before calling in; the loops here trust
their arguments and check nothing.  :mod:`cnncheck.kernels._conv_numpy` has
the same functions with the same arguments, in numpy.

The same source is compiled a second time with AVX2 and FMA enabled, as
``cnncheck.kernels._conv_avx2_cy`` (``extensions/_conv_avx2_cy.pyx``
includes this file); :mod:`cnncheck.kernels` loads that one on CPUs that
have both (:func:`cpu_has_avx2_fma`).

Two families of kernels live here.

**Unfolding** (im2col and its adjoint col2im), for the convolutions that
become one matrix product per chunk of images.  Layouts (C-contiguous, one
dtype, float32 or float64)::

    x     (N, C, H, W)
    cols  (C*HH*WW, N*H_out*W_out)
    cols[(c*HH + kh)*WW + kw, (n*H_out + i)*W_out + j] = x_pad[n, c, i*stride + kh, j*stride + kw]

where ``x_pad`` is ``x`` with ``pad`` zeros on every side and
``H_out = 1 + (H + 2*pad - HH) // stride`` (likewise W_out).  These kernels
work plane by plane, one (image, channel) pair at a time, and distinct
planes never write to the same memory; sums are formed in the same order
whatever the thread count.

**Direct convolution**, for small ``C*HH*WW`` (the course notebook's 3x3x3),
without unfolding.  Each image is copied into a zero-bordered buffer of the
calling thread, split by column phase (for stride s, phase r holds the
padded columns r, r + s, r + 2s, ...), so that every window element of a
run of output columns is a run of consecutive buffer elements, whatever the
stride.  The output is then computed in register tiles of FB filters times
two SIMD vectors of output columns, summed over the K = C*HH*WW window
elements with each weight broadcast; the tiles store whole vectors of
output columns, with the bias already in.  The backward pass uses tiles of
the same shape: ``dx`` sums, per window element, the upstream gradient of
every filter into a phase-split buffer (added as vectors, then unsplit),
and ``dw`` sums the products of upstream gradient and input over the pixels
of an image, vector by vector.  Each image is handled whole by one thread,
and ``dw`` and ``db`` are summed per fixed block of images, so the results
do not depend on the thread count.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset

include "_threads.pxi"

cdef extern from *:
    """
    #include <string.h>
    /* Register tiles of the direct convolution: CNN_FB rows (filters, or
       window elements for dx) times two SIMD vectors of consecutive output
       columns.  With GCC or Clang the vectors are CNN_VBYTES bytes (32 where
       AVX is enabled, 16 otherwise); other compilers get single elements. */
    #define CNN_FB 4          /* rows per tile */
    #define CNN_KB 2          /* window elements per dw tile */
    #if defined(__GNUC__) || defined(__clang__)
    #  if defined(__AVX__)
    #    define CNN_VBYTES 32
    #  else
    #    define CNN_VBYTES 16
    #  endif
    typedef double cnn_vd __attribute__((vector_size(CNN_VBYTES)));
    typedef float cnn_vf __attribute__((vector_size(CNN_VBYTES)));
    #  define CNN_LANES_D (CNN_VBYTES / 8)
    #  define CNN_LANES_F (CNN_VBYTES / 4)
    #  define CNN_SPLAT(V, x) ((x) - (V){0})
    #else
    typedef double cnn_vd;
    typedef float cnn_vf;
    #  define CNN_LANES_D 1
    #  define CNN_LANES_F 1
    #  define CNN_SPLAT(V, x) ((V)(x))
    #endif

    #define CNN_KERNELS(S, T, V, L)                                                          \\
    static inline V cnn_ld_##S(const T* p) { V v; memcpy(&v, p, sizeof v); return v; }      \\
    static inline void cnn_st_##S(T* p, V v) { memcpy(p, &v, sizeof v); }                   \\
    static inline T cnn_hsum_##S(V v) {                                                     \\
        T lanes[L]; T total = 0; int i;                                                     \\
        memcpy(lanes, &v, sizeof lanes);                                                    \\
        for (i = 0; i < L; i++) total += lanes[i];                                          \\
        return total;                                                                       \\
    }                                                                                       \\
    /* For every output row i < h and column j < w of nf <= CNN_FB filters:                \\
       out[f*ldo + i*w + j] = bias[f] + sum_k wf[f*K + k] * x[off[k] + i*step + j],         \\
       in tiles of CNN_FB filters x 2L columns. */                                           \\
    static void cnn_fwd_##S(const T* x, const Py_ssize_t* off, Py_ssize_t K, Py_ssize_t step, \\
                            const T* wf, const T* bias, T* out, Py_ssize_t ldo,             \\
                            Py_ssize_t nf, Py_ssize_t h, Py_ssize_t w) {                    \\
        V b0 = CNN_SPLAT(V, bias[0]), b1 = CNN_SPLAT(V, bias[1]);                           \\
        V b2 = CNN_SPLAT(V, bias[2]), b3 = CNN_SPLAT(V, bias[3]);                           \\
        const T* w0 = wf;                                                                   \\
        const T* w1 = wf + K;                                                               \\
        const T* w2 = wf + 2 * K;                                                           \\
        const T* w3 = wf + 3 * K;                                                           \\
        T tmp[CNN_FB][2 * L];                                                               \\
        Py_ssize_t i, j0, k, f, j, nj;                                                      \\
        for (i = 0; i < h; i++) {                                                           \\
            for (j0 = 0; j0 < w; j0 += 2 * L) {                                             \\
                const T* xi = x + i * step + j0;                                            \\
                T* o = out + i * w + j0;                                                    \\
                V a00 = b0, a01 = b0, a10 = b1, a11 = b1;                                   \\
                V a20 = b2, a21 = b2, a30 = b3, a31 = b3;                                   \\
                for (k = 0; k < K; k++) {                                                   \\
                    const T* xk = xi + off[k];                                              \\
                    V x0 = cnn_ld_##S(xk), x1 = cnn_ld_##S(xk + L), c;                      \\
                    c = CNN_SPLAT(V, w0[k]); a00 += c * x0; a01 += c * x1;                  \\
                    c = CNN_SPLAT(V, w1[k]); a10 += c * x0; a11 += c * x1;                  \\
                    c = CNN_SPLAT(V, w2[k]); a20 += c * x0; a21 += c * x1;                  \\
                    c = CNN_SPLAT(V, w3[k]); a30 += c * x0; a31 += c * x1;                  \\
                }                                                                           \\
                nj = w - j0 < 2 * L ? w - j0 : 2 * L;                                       \\
                if (nf == CNN_FB && nj == 2 * L) {                                          \\
                    cnn_st_##S(o, a00); cnn_st_##S(o + L, a01);                             \\
                    cnn_st_##S(o + ldo, a10); cnn_st_##S(o + ldo + L, a11);                 \\
                    cnn_st_##S(o + 2 * ldo, a20); cnn_st_##S(o + 2 * ldo + L, a21);         \\
                    cnn_st_##S(o + 3 * ldo, a30); cnn_st_##S(o + 3 * ldo + L, a31);         \\
                } else {                                                                    \\
                    cnn_st_##S(tmp[0], a00); cnn_st_##S(tmp[0] + L, a01);                   \\
                    cnn_st_##S(tmp[1], a10); cnn_st_##S(tmp[1] + L, a11);                   \\
                    cnn_st_##S(tmp[2], a20); cnn_st_##S(tmp[2] + L, a21);                   \\
                    cnn_st_##S(tmp[3], a30); cnn_st_##S(tmp[3] + L, a31);                   \\
                    for (f = 0; f < nf; f++)                                                \\
                        for (j = 0; j < nj; j++) o[f * ldo + j] = tmp[f][j];                \\
                }                                                                           \\
            }                                                                               \\
        }                                                                                   \\
    }                                                                                       \\
    /* For every row i < h and column j < w and window element k < nk <= CNN_FB:            \\
       dst[off[k] + i*step + j] += sum_f wt[k*F + f] * d[f*ldd + i*ldr + j],                 \\
       in tiles of CNN_FB window elements x 2L columns (d holds whole tiles: zeros past w). */ \\
    static void cnn_dx_##S(const T* d, Py_ssize_t ldd, Py_ssize_t ldr, Py_ssize_t F,        \\
                           const T* wt, T* dst, const Py_ssize_t* off, Py_ssize_t step,     \\
                           Py_ssize_t nk, Py_ssize_t h, Py_ssize_t w) {                     \\
        const T* w0 = wt;                                                                   \\
        const T* w1 = wt + F;                                                               \\
        const T* w2 = wt + 2 * F;                                                           \\
        const T* w3 = wt + 3 * F;                                                           \\
        T tmp[CNN_FB][2 * L];                                                               \\
        Py_ssize_t i, j0, k, f, j, nj;                                                      \\
        for (i = 0; i < h; i++) {                                                           \\
            for (j0 = 0; j0 < w; j0 += 2 * L) {                                             \\
                const T* di = d + i * ldr + j0;                                             \\
                V zero = CNN_SPLAT(V, (T)0);                                                \\
                V a00 = zero, a01 = zero, a10 = zero, a11 = zero;                           \\
                V a20 = zero, a21 = zero, a30 = zero, a31 = zero;                           \\
                for (f = 0; f < F; f++) {                                                   \\
                    V d0 = cnn_ld_##S(di + f * ldd), d1 = cnn_ld_##S(di + f * ldd + L), c;  \\
                    c = CNN_SPLAT(V, w0[f]); a00 += c * d0; a01 += c * d1;                  \\
                    c = CNN_SPLAT(V, w1[f]); a10 += c * d0; a11 += c * d1;                  \\
                    c = CNN_SPLAT(V, w2[f]); a20 += c * d0; a21 += c * d1;                  \\
                    c = CNN_SPLAT(V, w3[f]); a30 += c * d0; a31 += c * d1;                  \\
                }                                                                           \\
                nj = w - j0 < 2 * L ? w - j0 : 2 * L;                                       \\
                if (nk == CNN_FB && nj == 2 * L) {                                          \\
                    T* p0 = dst + off[0] + i * step + j0;                                   \\
                    T* p1 = dst + off[1] + i * step + j0;                                   \\
                    T* p2 = dst + off[2] + i * step + j0;                                   \\
                    T* p3 = dst + off[3] + i * step + j0;                                   \\
                    cnn_st_##S(p0, cnn_ld_##S(p0) + a00);                                   \\
                    cnn_st_##S(p0 + L, cnn_ld_##S(p0 + L) + a01);                           \\
                    cnn_st_##S(p1, cnn_ld_##S(p1) + a10);                                   \\
                    cnn_st_##S(p1 + L, cnn_ld_##S(p1 + L) + a11);                           \\
                    cnn_st_##S(p2, cnn_ld_##S(p2) + a20);                                   \\
                    cnn_st_##S(p2 + L, cnn_ld_##S(p2 + L) + a21);                           \\
                    cnn_st_##S(p3, cnn_ld_##S(p3) + a30);                                   \\
                    cnn_st_##S(p3 + L, cnn_ld_##S(p3 + L) + a31);                           \\
                } else {                                                                    \\
                    cnn_st_##S(tmp[0], a00); cnn_st_##S(tmp[0] + L, a01);                   \\
                    cnn_st_##S(tmp[1], a10); cnn_st_##S(tmp[1] + L, a11);                   \\
                    cnn_st_##S(tmp[2], a20); cnn_st_##S(tmp[2] + L, a21);                   \\
                    cnn_st_##S(tmp[3], a30); cnn_st_##S(tmp[3] + L, a31);                   \\
                    for (k = 0; k < nk; k++) {                                              \\
                        T* p = dst + off[k] + i * step + j0;                                \\
                        for (j = 0; j < nj; j++) p[j] += tmp[k][j];                         \\
                    }                                                                       \\
                }                                                                           \\
            }                                                                               \\
        }                                                                                   \\
    }                                                                                       \\
    /* sums[f*lds + k] += sum over i < h, j < w of d[f*ldd + i*ldr + j] * x[off[k] + i*step + j] */ \\
    static void cnn_tile_dw_##S(const T* x, const Py_ssize_t* off, Py_ssize_t step,         \\
                                const T* d, Py_ssize_t ldd, Py_ssize_t ldr,                 \\
                                Py_ssize_t h, Py_ssize_t w, T* sums, Py_ssize_t lds) {      \\
        V acc[CNN_FB][CNN_KB];                                                              \\
        T tail[CNN_FB][CNN_KB];                                                             \\
        Py_ssize_t i, j, f, k, wv = w - w % L;                                              \\
        for (f = 0; f < CNN_FB; f++)                                                        \\
            for (k = 0; k < CNN_KB; k++) { acc[f][k] = CNN_SPLAT(V, (T)0); tail[f][k] = 0; } \\
        for (i = 0; i < h; i++) {                                                           \\
            const T* x0 = x + off[0] + i * step;                                            \\
            const T* x1 = x + off[1] + i * step;                                            \\
            const T* di = d + i * ldr;                                                      \\
            for (j = 0; j < wv; j += L) {                                                   \\
                V a0 = cnn_ld_##S(x0 + j), a1 = cnn_ld_##S(x1 + j);                         \\
                for (f = 0; f < CNN_FB; f++) {                                              \\
                    V dv = cnn_ld_##S(di + f * ldd + j);                                    \\
                    acc[f][0] += dv * a0;                                                   \\
                    acc[f][1] += dv * a1;                                                   \\
                }                                                                           \\
            }                                                                               \\
            for (j = wv; j < w; j++)                                                        \\
                for (f = 0; f < CNN_FB; f++) {                                              \\
                    tail[f][0] += di[f * ldd + j] * x0[j];                                  \\
                    tail[f][1] += di[f * ldd + j] * x1[j];                                  \\
                }                                                                           \\
        }                                                                                   \\
        for (f = 0; f < CNN_FB; f++)                                                        \\
            for (k = 0; k < CNN_KB; k++)                                                    \\
                sums[f * lds + k] += cnn_hsum_##S(acc[f][k]) + tail[f][k];                  \\
    }
    CNN_KERNELS(d, double, cnn_vd, CNN_LANES_D)
    CNN_KERNELS(f, float, cnn_vf, CNN_LANES_F)

    static int cnn_cpu_has_avx2_fma(void) {
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    #else
        return 0;
    #endif
    }
    #if defined(__AVX2__) && defined(__FMA__)
    #define CNN_INSTRUCTIONS "avx2"
    #elif defined(__GNUC__) || defined(__clang__)
    #define CNN_INSTRUCTIONS "baseline"
    #else
    #define CNN_INSTRUCTIONS "scalar"
    #endif
    """
    const Py_ssize_t CNN_FB
    const Py_ssize_t CNN_KB
    const Py_ssize_t CNN_LANES_D
    const Py_ssize_t CNN_LANES_F
    const char* CNN_INSTRUCTIONS
    void cnn_fwd_d(const double* x, const Py_ssize_t* off, Py_ssize_t K, Py_ssize_t step, const double* wf,
                   const double* bias, double* out, Py_ssize_t ldo, Py_ssize_t nf, Py_ssize_t h,
                   Py_ssize_t w) noexcept nogil
    void cnn_fwd_f(const float* x, const Py_ssize_t* off, Py_ssize_t K, Py_ssize_t step, const float* wf,
                   const float* bias, float* out, Py_ssize_t ldo, Py_ssize_t nf, Py_ssize_t h,
                   Py_ssize_t w) noexcept nogil
    void cnn_dx_d(const double* d, Py_ssize_t ldd, Py_ssize_t ldr, Py_ssize_t F, const double* wt, double* dst,
                  const Py_ssize_t* off, Py_ssize_t step, Py_ssize_t nk, Py_ssize_t h, Py_ssize_t w) noexcept nogil
    void cnn_dx_f(const float* d, Py_ssize_t ldd, Py_ssize_t ldr, Py_ssize_t F, const float* wt, float* dst,
                  const Py_ssize_t* off, Py_ssize_t step, Py_ssize_t nk, Py_ssize_t h, Py_ssize_t w) noexcept nogil
    void cnn_tile_dw_d(const double* x, const Py_ssize_t* off, Py_ssize_t step, const double* d, Py_ssize_t ldd,
                       Py_ssize_t ldr, Py_ssize_t h, Py_ssize_t w, double* sums, Py_ssize_t lds) noexcept nogil
    void cnn_tile_dw_f(const float* x, const Py_ssize_t* off, Py_ssize_t step, const float* d, Py_ssize_t ldd,
                       Py_ssize_t ldr, Py_ssize_t h, Py_ssize_t w, float* sums, Py_ssize_t lds) noexcept nogil
    int cnn_cpu_has_avx2_fma() noexcept nogil

#: Rows per register tile of the direct kernels: filters (forward, dw) or window elements (dx).
#: ``w2p`` and ``wt`` of the direct kernels are zero-padded to a multiple of it.
FILTER_BLOCK = CNN_FB
#: Window elements per ``dw`` tile; the window axis of ``parts`` is padded to a multiple of it.
WINDOW_BLOCK = CNN_KB
#: Instructions this build was compiled for: ``"avx2"`` (AVX2 and FMA), ``"baseline"`` or ``"scalar"``.
INSTRUCTIONS = CNN_INSTRUCTIONS.decode("ascii")


def cpu_has_avx2_fma():
    """True when this CPU (and its operating system) can run the AVX2 and FMA build."""
    return bool(cnn_cpu_has_avx2_fma())


# -- unfolding ----------------------------------------------------------------------
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


def im2col(const floating[:, :, :, ::1] x, floating[:, :] cols,
           Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t stride, Py_ssize_t pad, int num_threads=1):
    """Fill ``cols`` (C*HH*WW, N*H_out*W_out) with the windows of ``x`` (N, C, H, W).

    Every element of ``cols`` is written (zeros where a window reaches the
    padding), so ``cols`` may be uninitialised.  Its rows must be
    contiguous, but not the whole matrix: a slice of the columns of a larger
    one works (the wrapper checks the element stride).  Called by
    :func:`cnncheck.kernels.conv.im2col`.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t H_out = (H + 2 * pad - HH) // stride + 1
    cdef Py_ssize_t W_out = (W + 2 * pad - WW) // stride + 1
    cdef Py_ssize_t row_stride = cols.strides[0] // sizeof(floating)
    cdef Py_ssize_t nc, n, c
    for nc in prange(N * C, nogil=True, num_threads=num_threads, schedule="static"):
        n = nc // C
        c = nc % C
        _im2col_plane(&x[n, c, 0, 0], &cols[c * HH * WW, n * H_out * W_out], row_stride,
                      H, W, HH, WW, stride, pad, H_out, W_out)


def col2im(const floating[:, :] cols, floating[:, :, :, ::1] dx,
           Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t stride, Py_ssize_t pad, int num_threads=1):
    """Sum the columns ``cols`` (C*HH*WW, N*H_out*W_out) back into ``dx`` (N, C, H, W).

    ``dx`` is overwritten: each plane is zeroed, then every column entry that
    lies inside the unpadded image is added to its pixel, kernel offset by
    kernel offset in row-major order (entries in the padding are dropped;
    pixels no window reaches stay zero).  The adjoint of :func:`im2col`.
    The rows of ``cols`` need only be contiguous, as in :func:`im2col`.
    Called by :func:`cnncheck.kernels.conv.col2im`.
    """
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t H_out = (H + 2 * pad - HH) // stride + 1
    cdef Py_ssize_t W_out = (W + 2 * pad - WW) // stride + 1
    cdef Py_ssize_t row_stride = cols.strides[0] // sizeof(floating)
    cdef Py_ssize_t nc, n, c
    for nc in prange(N * C, nogil=True, num_threads=num_threads, schedule="static"):
        n = nc // C
        c = nc % C
        _col2im_plane(&cols[c * HH * WW, n * H_out * W_out], row_stride, &dx[n, c, 0, 0],
                      H, W, HH, WW, stride, pad, H_out, W_out)


# -- direct convolution ------------------------------------------------------------
cdef struct Layout:
    # the phase-split, zero-bordered image buffer of the direct kernels
    Py_ssize_t C, H, W, pad, stride
    Py_ssize_t Hb     # rows: H + 2*pad
    Py_ssize_t Wm     # elements per phase row, enough for whole tiles of output columns
    Py_ssize_t size   # elements of the buffer: C * stride * Hb * Wm


cdef Layout _layout(Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t WW, Py_ssize_t stride, Py_ssize_t pad,
                    Py_ssize_t W_run) noexcept nogil:
    """The buffer layout for runs of ``W_run`` output columns (a whole number of tiles)."""
    cdef Layout b
    cdef Py_ssize_t phase_width = (W + 2 * pad + stride - 1) // stride
    cdef Py_ssize_t need = (WW - 1) // stride + W_run
    b.C, b.H, b.W, b.pad, b.stride = C, H, W, pad, stride
    b.Hb = H + 2 * pad
    b.Wm = need if need > phase_width else phase_width
    b.size = C * stride * b.Hb * b.Wm
    return b


cdef inline Py_ssize_t _at(const Layout* b, Py_ssize_t c, Py_ssize_t row, Py_ssize_t col) noexcept nogil:
    """Buffer index of padded row ``row`` and padded column ``col`` of channel c."""
    return ((c * b.stride + col % b.stride) * b.Hb + row) * b.Wm + col // b.stride


cdef void _split(const floating* src, const Layout* b, floating* dst) noexcept nogil:
    """Copy the planes ``src`` (C, H, W) into the interior of the phase-split buffer ``dst``.

    The border and the columns past the image are left as they are: zero,
    since the buffers are allocated zeroed and only interiors are written.
    """
    cdef Py_ssize_t c, h, r, w0, m0
    cdef const floating* row
    cdef floating* out
    for c in range(b.C):
        for h in range(b.H):
            row = src + (c * b.H + h) * b.W
            for r in range(b.stride):
                w0 = (r - b.pad % b.stride + b.stride) % b.stride  # first column of phase r
                if w0 >= b.W:
                    continue
                out = dst + _at(b, c, h + b.pad, w0 + b.pad)
                for m0 in range((b.W - w0 + b.stride - 1) // b.stride):
                    out[m0] = row[w0 + m0 * b.stride]


cdef void _unsplit(const floating* src, const Layout* b, floating* dst) noexcept nogil:
    """The interior of the phase-split buffer ``src`` as planes ``dst`` (C, H, W): the inverse of :func:`_split`."""
    cdef Py_ssize_t c, h, r, w0, m0
    cdef floating* row
    cdef const floating* inp
    for c in range(b.C):
        for h in range(b.H):
            row = dst + (c * b.H + h) * b.W
            for r in range(b.stride):
                w0 = (r - b.pad % b.stride + b.stride) % b.stride
                if w0 >= b.W:
                    continue
                inp = src + _at(b, c, h + b.pad, w0 + b.pad)
                for m0 in range((b.W - w0 + b.stride - 1) // b.stride):
                    row[w0 + m0 * b.stride] = inp[m0]


cdef Py_ssize_t* _window_offsets(const Layout* b, Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t count) noexcept nogil:
    """``off[(c*HH + kh)*WW + kw]``: where window element (c, kh, kw) of output (0, 0) is in the buffer.

    Output (i, j) finds it ``i*stride*Wm + j`` further on.  Entries from K
    up to ``count`` repeat the last one (padding of the tiles).  NULL: no memory.
    """
    cdef Py_ssize_t K = b.C * HH * WW
    cdef Py_ssize_t* off = <Py_ssize_t*>malloc((count if count > K else K) * sizeof(Py_ssize_t))
    cdef Py_ssize_t c, kh, kw, k
    if off == NULL:
        return NULL
    for c in range(b.C):
        for kh in range(HH):
            for kw in range(WW):
                off[(c * HH + kh) * WW + kw] = _at(b, c, kh, kw)
    for k in range(K, count):
        off[k] = off[K - 1]
    return off


cdef void _forward_image(const floating* xb, const Layout* b, const Py_ssize_t* off, Py_ssize_t K,
                         const floating* w2p, const floating* bias, Py_ssize_t F,
                         floating* out, Py_ssize_t H_out, Py_ssize_t W_out) noexcept nogil:
    """One image's output (F, H_out, W_out) from its buffer ``xb``, FB filters at a time."""
    cdef Py_ssize_t P = H_out * W_out
    cdef Py_ssize_t step = b.stride * b.Wm
    cdef Py_ssize_t f0 = 0, nf
    while f0 < F:
        nf = F - f0 if F - f0 < CNN_FB else CNN_FB
        if floating is double:
            cnn_fwd_d(xb, off, K, step, w2p + f0 * K, bias + f0, out + f0 * P, P, nf, H_out, W_out)
        else:
            cnn_fwd_f(xb, off, K, step, w2p + f0 * K, bias + f0, out + f0 * P, P, nf, H_out, W_out)
        f0 = f0 + CNN_FB


def tile_columns(Py_ssize_t itemsize):
    """Output columns per register tile for elements of ``itemsize`` bytes (8: float64, 4: float32)."""
    return 2 * (CNN_LANES_D if itemsize == 8 else CNN_LANES_F)


def direct_forward(const floating[:, :, :, ::1] x, const floating[:, ::1] w2p, const floating[::1] bias,
                   floating[:, :, :, ::1] out, Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t stride,
                   Py_ssize_t pad, int num_threads=1):
    """Fill ``out`` (N, F, H_out, W_out) with the convolution of ``x`` (N, C, H, W) plus the bias.

    ``w2p`` (Fp, C*HH*WW) is ``w.reshape(F, -1)`` and ``bias`` (Fp,) is b,
    both with zeros up to Fp, a multiple of :data:`FILTER_BLOCK`.  Every
    element of ``out`` is written.  Called by
    :func:`cnncheck.kernels.conv.direct_forward`.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = out.shape[1], H_out = out.shape[2], W_out = out.shape[3]
    cdef Py_ssize_t K = C * HH * WW
    cdef Py_ssize_t run = tile_columns(sizeof(floating))
    cdef Layout b = _layout(C, H, W, WW, stride, pad, (W_out + run - 1) // run * run)
    cdef Py_ssize_t n
    cdef Py_ssize_t* off = _window_offsets(&b, HH, WW, K)
    cdef floating* buffers = <floating*>calloc(num_threads * b.size, sizeof(floating))
    cdef floating* xb = NULL
    if off == NULL or buffers == NULL:
        free(off)
        free(buffers)
        raise MemoryError()
    with nogil, parallel(num_threads=num_threads):
        xb = buffers + threadid() * b.size
        for n in prange(N, schedule="dynamic"):
            _split(&x[n, 0, 0, 0], &b, xb)
            _forward_image(xb, &b, off, K, &w2p[0, 0], &bias[0], F, &out[n, 0, 0, 0], H_out, W_out)
    free(off)
    free(buffers)


cdef void _backward_image(const floating* xb, floating* dxb, floating* db_rows, const floating* dout,
                          const floating* wt, floating* sums, const Layout* b, const Py_ssize_t* off,
                          Py_ssize_t K, Py_ssize_t Kq, Py_ssize_t F, Py_ssize_t Fp,
                          Py_ssize_t H_out, Py_ssize_t W_out, Py_ssize_t Wd) noexcept nogil:
    """One image's gradients: ``dxb`` (its phase-split buffer) overwritten, ``sums`` (Fp, Kq + 1) incremented.

    ``xb`` holds the image (phase-split), ``dout`` its upstream gradient
    (F, H_out, W_out).  ``sums[f, k]`` gains the image's part of
    ``dw[f].ravel()[k]`` and ``sums[f, Kq]`` its part of ``db[f]``.
    """
    cdef Py_ssize_t plane = H_out * Wd
    cdef Py_ssize_t step = b.stride * b.Wm
    cdef Py_ssize_t i, j, k0, f, f0, nk
    cdef floating p0, p1, p2, p3
    cdef const floating* row
    # the upstream gradient in rows padded with zeros to whole tiles (Wd is a multiple of 4)
    for f in range(F):
        for i in range(H_out):
            memcpy(db_rows + f * plane + i * Wd, dout + (f * H_out + i) * W_out, W_out * sizeof(floating))
    # db: each filter's rows summed in four interleaved partial sums (one chain of additions
    # would wait on each one; the padding adds zeros)
    for f in range(F):
        p0 = p1 = p2 = p3 = 0
        row = db_rows + f * plane
        for j in range(0, plane, 4):
            p0 = p0 + row[j]
            p1 = p1 + row[j + 1]
            p2 = p2 + row[j + 2]
            p3 = p3 + row[j + 3]
        sums[f * (Kq + 1) + Kq] += (p0 + p1) + (p2 + p3)
    # dx: per window element, the filters' gradients summed into the buffer as vectors
    memset(dxb, 0, b.size * sizeof(floating))
    k0 = 0
    while k0 < K:
        nk = K - k0 if K - k0 < CNN_FB else CNN_FB
        if floating is double:
            cnn_dx_d(db_rows, plane, Wd, F, wt + k0 * F, dxb, off + k0, step, nk, H_out, W_out)
        else:
            cnn_dx_f(db_rows, plane, Wd, F, wt + k0 * F, dxb, off + k0, step, nk, H_out, W_out)
        k0 = k0 + CNN_FB
    # dw: tiles of FB filters x KB window elements, summed over the image's pixels
    f0 = 0
    while f0 < Fp:
        k0 = 0
        while k0 < Kq:
            if floating is double:
                cnn_tile_dw_d(xb, off + k0, step, db_rows + f0 * plane, plane, Wd, H_out, W_out,
                              sums + f0 * (Kq + 1) + k0, Kq + 1)
            else:
                cnn_tile_dw_f(xb, off + k0, step, db_rows + f0 * plane, plane, Wd, H_out, W_out,
                              sums + f0 * (Kq + 1) + k0, Kq + 1)
            k0 = k0 + CNN_KB
        f0 = f0 + CNN_FB


def direct_backward(const floating[:, :, :, ::1] x, const floating[:, ::1] wt,
                    const floating[:, :, :, ::1] dout, floating[:, :, :, ::1] dx,
                    floating[:, :, ::1] parts, Py_ssize_t HH, Py_ssize_t WW, Py_ssize_t stride,
                    Py_ssize_t pad, Py_ssize_t images_per_part, int num_threads=1):
    """Gradients of :func:`direct_forward`: ``dx`` overwritten, ``dw`` and ``db`` summed per part.

    ``wt`` (Kp, F) is ``w.reshape(F, K).T`` with zero rows up to Kp, a
    multiple of :data:`FILTER_BLOCK`.  ``parts`` (ceil(N / images_per_part),
    Fp, Kq + 1) is overwritten: ``parts[p, f, k]`` is the sum over the images
    ``p*images_per_part ...`` of ``dw[f].ravel()[k]`` for k < K, and
    ``parts[p, f, Kq]`` that of ``db[f]`` (Fp >= F is a multiple of
    :data:`FILTER_BLOCK`, Kq >= K one of :data:`WINDOW_BLOCK`; the other
    entries are scratch).  The caller sums the parts in order.  Called by
    :func:`cnncheck.kernels.conv.direct_backward`.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = dout.shape[1], H_out = dout.shape[2], W_out = dout.shape[3]
    cdef Py_ssize_t K = C * HH * WW, Fp = parts.shape[1], Kq = parts.shape[2] - 1
    cdef Py_ssize_t run = tile_columns(sizeof(floating))
    cdef Py_ssize_t Wd = (W_out + run - 1) // run * run
    cdef Layout b = _layout(C, H, W, WW, stride, pad, Wd)
    cdef Py_ssize_t n_parts = parts.shape[0]
    # per thread: the image, its dx, and the upstream gradient in padded rows (Fp of them, zeros past F)
    cdef Py_ssize_t rows_size = Fp * H_out * Wd
    cdef Py_ssize_t per_thread = 2 * b.size + rows_size
    cdef Py_ssize_t p, n
    cdef Py_ssize_t* off = _window_offsets(&b, HH, WW, Kq if Kq > K + CNN_FB else K + CNN_FB)
    cdef floating* buffers = <floating*>calloc(num_threads * per_thread, sizeof(floating))
    cdef floating* xb = NULL
    cdef floating* dxb = NULL
    cdef floating* rows = NULL
    if off == NULL or buffers == NULL:
        free(off)
        free(buffers)
        raise MemoryError()
    parts[:, :, :] = 0
    with nogil, parallel(num_threads=num_threads):
        xb = buffers + threadid() * per_thread
        dxb = xb + b.size
        rows = dxb + b.size
        for p in prange(n_parts, schedule="dynamic"):
            for n in range(p * images_per_part, min(N, (p + 1) * images_per_part)):
                _split(&x[n, 0, 0, 0], &b, xb)
                _backward_image(xb, dxb, rows, &dout[n, 0, 0, 0], &wt[0, 0], &parts[p, 0, 0], &b, off,
                                K, Kq, F, Fp, H_out, W_out, Wd)
                _unsplit(dxb, &b, &dx[n, 0, 0, 0])
    free(off)
    free(buffers)
