"""im2col and col2im (cnncheck.kernels.conv, also cnncheck.im2col): layout, adjointness, both kernels,
validation, backend choice."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from cnncheck import im2col, kernels
from cnncheck.errors import CnnCheckError
from cnncheck.kernels import _conv_numpy, conv

try:
    from cnncheck.kernels import _conv_cy
except ImportError:
    _conv_cy = None

needs_cython = pytest.mark.skipif(_conv_cy is None, reason="compiled extension cnncheck.kernels._conv_cy not built")
BACKENDS = ["numpy", pytest.param("cython", marks=needs_cython)]
GEOMETRIES = [
    # (N, C, H, W, HH, WW, stride, pad)
    (2, 3, 5, 5, 3, 3, 1, 1),
    (2, 3, 7, 6, 3, 2, 2, 1),  # non-square kernel, odd sizes
    (1, 1, 4, 4, 1, 1, 1, 0),  # 1x1 kernel
    (3, 2, 9, 8, 4, 3, 3, 2),  # stride 3 with uncovered trailing rows
    (1, 2, 5, 7, 2, 2, 3, 0),  # stride larger than the kernel
    (2, 1, 3, 3, 5, 5, 1, 1),  # kernel larger than the input, not the padded input
    (1, 1, 1, 1, 1, 1, 1, 2),  # padding wider than the kernel
]


def reference_cols(x, HH, WW, stride, pad):
    """cols built element by element from the documented formula."""
    N, C, H, W = x.shape
    H_out = 1 + (H + 2 * pad - HH) // stride
    W_out = 1 + (W + 2 * pad - WW) // stride
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.empty((C * HH * WW, N * H_out * W_out), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for kh in range(HH):
                for kw in range(WW):
                    for i in range(H_out):
                        for j in range(W_out):
                            value = x_pad[n, c, i * stride + kh, j * stride + kw]
                            cols[(c * HH + kh) * WW + kw, (n * H_out + i) * W_out + j] = value
    return cols


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_im2col_matches_documented_layout(rng, backend, geometry, dtype):
    N, C, H, W, HH, WW, stride, pad = geometry
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    cols = im2col.im2col(x, HH, WW, stride, pad, backend=backend)
    assert cols.dtype == dtype
    np.testing.assert_array_equal(cols, reference_cols(x, HH, WW, stride, pad))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_col2im_is_adjoint_of_im2col(rng, backend, geometry):
    N, C, H, W, HH, WW, stride, pad = geometry
    x = rng.standard_normal((N, C, H, W))
    y = rng.standard_normal(im2col.cols_shape(x.shape, HH, WW, stride, pad))
    lhs = np.vdot(im2col.im2col(x, HH, WW, stride, pad, backend=backend), y)
    rhs = np.vdot(x, im2col.col2im(y, x.shape, HH, WW, stride, pad, backend=backend))
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_col2im_zero_where_no_window_reaches(backend):
    # H=W=5, 2x2 kernel, stride 2, no pad: row 4 and column 4 are never covered.
    x_shape = (1, 1, 5, 5)
    cols = np.ones(im2col.cols_shape(x_shape, 2, 2, 2, 0))
    dx = im2col.col2im(cols, x_shape, 2, 2, 2, 0, backend=backend)
    expected = np.ones((5, 5))
    expected[4, :] = 0
    expected[:, 4] = 0
    np.testing.assert_array_equal(dx[0, 0], expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_col2im_counts_overlapping_windows(backend):
    # 3x3 kernel, stride 1, pad 1 on a 3x3 image: each pixel is covered once per
    # kernel position that lands on it.
    x_shape = (1, 1, 3, 3)
    cols = np.ones(im2col.cols_shape(x_shape, 3, 3, 1, 1))
    dx = im2col.col2im(cols, x_shape, 3, 3, 1, 1, backend=backend)
    np.testing.assert_array_equal(dx[0, 0], [[4, 6, 4], [6, 9, 6], [4, 6, 4]])


@needs_cython
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cython_and_numpy_kernels_agree_exactly(rng, geometry, dtype):
    N, C, H, W, HH, WW, stride, pad = geometry
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    y = rng.standard_normal(im2col.cols_shape(x.shape, HH, WW, stride, pad)).astype(dtype)
    np.testing.assert_array_equal(
        im2col.im2col(x, HH, WW, stride, pad, backend="cython"),
        im2col.im2col(x, HH, WW, stride, pad, backend="numpy"),
    )
    np.testing.assert_array_equal(
        im2col.col2im(y, x.shape, HH, WW, stride, pad, backend="cython"),
        im2col.col2im(y, x.shape, HH, WW, stride, pad, backend="numpy"),
    )


def test_kernels_have_the_same_signature():
    for name in ("im2col", "col2im", "direct_forward", "direct_backward"):
        assert callable(getattr(_conv_numpy, name))
        if _conv_cy is not None:
            assert callable(getattr(_conv_cy, name))
    for name in ("FILTER_BLOCK", "WINDOW_BLOCK", "INSTRUCTIONS"):
        assert hasattr(_conv_numpy, name) and (_conv_cy is None or hasattr(_conv_cy, name))


def test_the_short_module_name_is_the_kernels_module():
    assert im2col.im2col is conv.im2col and im2col.col2im is conv.col2im and im2col.cols_shape is conv.cols_shape
    assert im2col.BACKEND == kernels.BACKEND == conv.BACKEND


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_input_and_untouched_arguments(rng, backend):
    base = rng.standard_normal((2, 3, 10, 12))
    x = base[:, :, ::2, 1::2]  # strided view
    assert not x.flags.c_contiguous
    before = base.copy()
    cols = im2col.im2col(x, 3, 2, 1, 1, backend=backend)
    np.testing.assert_array_equal(cols, reference_cols(np.ascontiguousarray(x), 3, 2, 1, 1))
    np.testing.assert_array_equal(base, before)
    y = np.asfortranarray(rng.standard_normal(cols.shape))
    y_before = y.copy()
    dx = im2col.col2im(y, x.shape, 3, 2, 1, 1, backend=backend)
    np.testing.assert_array_equal(y, y_before)
    np.testing.assert_array_equal(dx, im2col.col2im(y_before.copy(order="C"), x.shape, 3, 2, 1, 1,
                                                    backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_buffers_are_filled_completely(rng, backend):
    x = rng.standard_normal((2, 2, 5, 5))
    shape = im2col.cols_shape(x.shape, 3, 3, 2, 1)
    out = np.full(shape, np.nan)
    result = im2col.im2col(x, 3, 3, 2, 1, out=out, backend=backend)
    assert result is out
    np.testing.assert_array_equal(out, reference_cols(x, 3, 3, 2, 1))
    dx_out = np.full(x.shape, np.nan)
    dx = im2col.col2im(out, x.shape, 3, 3, 2, 1, out=dx_out, backend=backend)
    assert dx is dx_out
    np.testing.assert_array_equal(dx, im2col.col2im(out, x.shape, 3, 3, 2, 1, backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_may_be_a_slice_of_the_columns_of_a_larger_matrix(rng, backend):
    x = rng.standard_normal((4, 2, 6, 5))
    cols = reference_cols(x, 3, 2, 1, 1)
    half = cols.shape[1] // 2
    big = np.full((cols.shape[0], cols.shape[1] + 7), np.nan)
    assert im2col.im2col(x[:2], 3, 2, 1, 1, out=big[:, :half], backend=backend).base is not None
    im2col.im2col(x[2:], 3, 2, 1, 1, out=big[:, half:2 * half], backend=backend)
    np.testing.assert_array_equal(big[:, :2 * half], cols)
    assert np.isnan(big[:, 2 * half:]).all()
    np.testing.assert_array_equal(im2col.col2im(big[:, half:2 * half], (2, 2, 6, 5), 3, 2, 1, 1, backend=backend),
                                  im2col.col2im(np.ascontiguousarray(cols[:, half:]), (2, 2, 6, 5), 3, 2, 1, 1,
                                                backend=backend))


def _overlapping_col2im(x_shape):
    buffer = np.zeros(27 * 50 + 100)
    cols = buffer[:27 * 50].reshape(27, 50)
    out = buffer[27 * 50 - 50:].reshape(x_shape)  # overlaps the last row of cols
    return im2col.col2im(cols, x_shape, 3, 3, 1, 1, out=out)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x: im2col.im2col(x[0], 3, 3, 1, 1), "N, C, H, W"),
        (lambda x: im2col.im2col(x.astype(np.int64), 3, 3, 1, 1), "float32 or float64"),
        (lambda x: im2col.im2col(x.tolist(), 3, 3, 1, 1), "numpy array"),
        (lambda x: im2col.im2col(x, 3, 3, 0, 1), "stride must be >= 1"),
        (lambda x: im2col.im2col(x, 3, 3, 1, -1), "pad must be >= 0"),
        (lambda x: im2col.im2col(x, 8, 3, 1, 1), "larger than the padded input"),
        (lambda x: im2col.im2col(x, 0, 3, 1, 1), "empty dimension"),
        (lambda x: im2col.im2col(x, 2.5, 3, 1, 1), "HH must be an integer"),
        (lambda x: im2col.im2col(x, 3, 3, 1, 1, out=np.empty((3, 3))), "out must have shape"),
        (lambda x: im2col.im2col(x, 3, 3, 1, 1, out=np.empty((27, 50), dtype=np.float32)), "dtype float64"),
        (lambda x: im2col.im2col(x, 3, 3, 1, 1, out=np.empty((50, 27)).T), "C-contiguous rows"),
        (lambda x: im2col.im2col(x, 3, 3, 1, 1, out=np.empty((27, 100))[:, ::2]), "C-contiguous rows"),
        (lambda x: im2col.im2col(x, 3, 3, 1, 1, backend="fortran"), "unknown kernel backend"),
        (lambda x: _overlapping_col2im(x.shape), "must not share memory"),
        (lambda x: im2col.col2im(np.ones((27, 49)), x.shape, 3, 3, 1, 1), "cols has shape"),
        (lambda x: im2col.col2im(np.ones((27, 50)), (2, 3, 5), 3, 3, 1, 1), "N, C, H, W"),
        (lambda x: im2col.col2im(np.ones((27, 50)), 5, 3, 3, 1, 1), "sequence of integers"),
        (lambda x: im2col.col2im(np.ones((27, 50), dtype=np.float16), x.shape, 3, 3, 1, 1), "float32 or float64"),
        (lambda x: im2col.im2col(x, 3, 3, 1, 1, threads=0), "threads must be a positive integer"),
        (lambda x: im2col.col2im(np.ones((27, 50)), x.shape, 3, 3, 1, 1, threads=1.5), "positive integer"),
    ],
)
def test_bad_arguments_raise_value_error(call, message):
    x = np.zeros((2, 3, 5, 5))
    with pytest.raises(ValueError, match=message) as info:
        call(x)
    assert isinstance(info.value, CnnCheckError)


def test_backend_constant_reflects_the_kernel():
    assert im2col.BACKEND in ("cython", "numpy")
    if os.environ.get("CNNCHECK_PURE_PYTHON") == "1" or _conv_cy is None:
        assert im2col.BACKEND == "numpy"
        assert kernels.module("conv") is _conv_numpy
    else:
        assert im2col.BACKEND == "cython"
        assert kernels.module("conv").__name__.startswith("cnncheck.kernels._conv_")
        assert kernels.module("conv").__name__.endswith("_cy")


def _backend_in_subprocess(env_update, block_extension=False):
    code = "import warnings; warnings.simplefilter('always')\n"
    if block_extension:
        # Make the compiled module unimportable, as on a machine without a compiler.
        code += "import sys; sys.modules['cnncheck.kernels._pool_cy'] = None\n"
    code += "import cnncheck.im2col as m, cnncheck.layers.fast as f; print(m.BACKEND, f.BACKEND)\n"
    env = dict(os.environ)
    env.pop("CNNCHECK_PURE_PYTHON", None)
    env.update(env_update)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return done.stdout.split(), done.stderr


def test_env_variable_forces_numpy_without_warning():
    backends, stderr = _backend_in_subprocess({"CNNCHECK_PURE_PYTHON": "1"})
    assert backends == ["numpy", "numpy"]
    assert "RuntimeWarning" not in stderr


def test_missing_extension_falls_back_with_one_warning():
    backends, stderr = _backend_in_subprocess({}, block_extension=True)
    assert backends == ["numpy", "numpy"]
    assert stderr.count("RuntimeWarning") == 1
    assert "numpy fallback" in stderr


@needs_cython
def test_extension_is_used_by_default():
    backends, stderr = _backend_in_subprocess({})
    assert backends == ["cython", "cython"]
    assert "RuntimeWarning" not in stderr


def test_forcing_cython_without_extension_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(kernels, "BACKEND", "numpy")
    monkeypatch.setitem(sys.modules, "cnncheck.kernels._conv_cy", None)
    with pytest.raises(CnnCheckError, match="not built"):
        im2col.im2col(np.zeros((1, 1, 3, 3)), 2, 2, 1, 0, backend="cython")
