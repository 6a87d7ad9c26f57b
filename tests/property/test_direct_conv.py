"""Hypothesis properties of the direct convolution kernels against the naive layers.

Shapes reach past one register tile in every direction: up to 40 filters
(several filter blocks and a ragged last one), output rows of any width
(ragged last column tile), windows up to 3x4x4.  Bounds as in
tests/property/test_layer_properties.py: float64 ``rel_error < 1e-9``,
float32 ``max|direct - naive| <= 1e-5 * max(max|naive|, terms)`` with
``terms`` the size of the products summed into a value.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cnncheck.gradient_check import rel_error  # noqa: E402
from cnncheck.kernels import _conv_numpy  # noqa: E402
from cnncheck.kernels import conv as kconv  # noqa: E402
from cnncheck.layers import conv_backward_naive, conv_forward_naive  # noqa: E402

pytestmark = pytest.mark.slow


def _compiled(name):
    try:
        return importlib.import_module(f"cnncheck.kernels.{name}")
    except ImportError:
        return None


# Every build present here: the baseline one, and the AVX2 one where this CPU runs it.
COMPILED = [m for m in (_compiled("_conv_cy"), _compiled("_conv_avx2_cy")) if m is not None]
if len(COMPILED) == 2 and not COMPILED[0].cpu_has_avx2_fma():
    COMPILED = COMPILED[:1]
KERNELS = [_conv_numpy, *COMPILED]


@st.composite
def direct_geometry(draw):
    stride = draw(st.integers(1, 3))
    pad = draw(st.integers(0, 2))
    HH = draw(st.integers(1, 4))
    WW = draw(st.integers(1, 4))
    H_out = draw(st.integers(1, 6))
    W_out = draw(st.integers(1, 11))
    H = max(1, (H_out - 1) * stride + HH - 2 * pad + draw(st.integers(0, stride - 1)))
    W = max(1, (W_out - 1) * stride + WW - 2 * pad + draw(st.integers(0, stride - 1)))
    if H + 2 * pad < HH or W + 2 * pad < WW:  # padding alone covers the windows: grow the input
        H, W = max(H, HH), max(W, WW)
    return (draw(st.integers(1, 4)), draw(st.integers(1, 3)), H, W), (draw(st.integers(1, 40)), HH, WW), stride, pad


def assert_matches(got, want, terms=0.0):
    """float64: rel_error < 1e-9; float32: max|got - want| <= 1e-5 * max(max|want|, terms).

    ``terms`` is the size of the products summed into each value: a value
    that cancels to near zero carries the rounding of its terms, whichever
    order sums them.
    """
    assert got.dtype == want.dtype and got.shape == want.shape
    if want.dtype == np.float64:
        assert rel_error(got, want) < 1e-9
    else:
        scale = max(float(np.max(np.abs(want), initial=0.0)), terms, 1e-30)
        assert float(np.max(np.abs(got.astype(np.float64) - want), initial=0.0)) <= 1e-5 * scale


def conv_terms(x, w, b, dout) -> tuple:
    """Sizes of the terms summed into out, dx, dw and db of a convolution."""
    sx, sw, sb, sd = (float(np.max(np.abs(a), initial=0.0)) for a in (x, w, b, dout))
    return sx * sw + sb, sd * sw, sd * sx, sd


def _run(kernel, x, w, b, dout, stride, pad, threads, idle=None):
    """The kernel module's forward and backward through the validating wrapper, on ``threads`` threads.

    ``idle`` below ``threads`` makes the wrapper share one-thread pieces, as on a busy machine.
    """
    k = kconv.kernels
    saved = k.module, k.thread_limit, k.idle_cpus, kconv.DIRECT_MACS_PER_THREAD
    k.module = lambda name, backend=None: kernel
    k.thread_limit = lambda: threads
    k.idle_cpus = lambda: threads if idle is None else idle
    kconv.DIRECT_MACS_PER_THREAD = 1
    try:
        return (kconv.direct_forward(x, w, b, stride, pad), *kconv.direct_backward(x, w, dout, stride, pad))
    finally:
        k.module, k.thread_limit, k.idle_cpus, kconv.DIRECT_MACS_PER_THREAD = saved


@settings(max_examples=120)
@given(geometry=direct_geometry(), dtype=st.sampled_from([np.float64, np.float32]),
       kernel=st.sampled_from(KERNELS), threads=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_direct_kernel_equals_naive(geometry, dtype, kernel, threads, seed):
    (N, C, H, W), (F, HH, WW), stride, pad = geometry
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((F, C, HH, WW)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    conv_param = {"stride": stride, "pad": pad}
    out_n, cache_n = conv_forward_naive(x, w, b, conv_param)
    dout = rng.standard_normal(out_n.shape).astype(dtype)
    before = [a.copy() for a in (x, w, b, dout)]
    got = _run(kernel, x, w, b, dout, stride, pad, threads)
    for g, want, t in zip(got, (out_n, *conv_backward_naive(dout, cache_n)), conv_terms(x, w, b, dout)):
        assert_matches(g, want, t)
    for a, a0 in zip((x, w, b, dout), before):
        np.testing.assert_array_equal(a, a0)


@pytest.mark.skipif(not COMPILED, reason="compiled extension cnncheck.kernels._conv_cy not built")
@settings(max_examples=40)
@given(geometry=direct_geometry(), dtype=st.sampled_from([np.float64, np.float32]),
       threads=st.integers(2, 4), seed=st.integers(0, 2**32 - 1))
def test_direct_kernel_results_do_not_depend_on_threads(geometry, dtype, threads, seed):
    (N, C, H, W), (F, HH, WW), stride, pad = geometry
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N * 9, C, H, W)).astype(dtype)  # several parts of images
    w = rng.standard_normal((F, C, HH, WW)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    dout = rng.standard_normal(conv_forward_naive(x[:1], w, b, {"stride": stride, "pad": pad})[0].shape[1:])
    dout = np.broadcast_to(dout, (N * 9, *dout.shape)).astype(dtype) * rng.standard_normal((N * 9, 1, 1, 1))
    dout = dout.astype(dtype)
    for kernel in COMPILED:
        serial = _run(kernel, x, w, b, dout, stride, pad, 1)
        for idle in (None, 1):  # the kernel's OpenMP threads, or one-thread pieces shared among threads
            for got, want in zip(_run(kernel, x, w, b, dout, stride, pad, threads, idle), serial):
                np.testing.assert_array_equal(got, want)
