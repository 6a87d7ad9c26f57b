"""Machine facts, the thread limit and the cached GEMM peak."""

from __future__ import annotations

import numpy as np
import pytest
import threadpoolctl

from cnncheck import machine


def test_facts_have_every_documented_key():
    facts = machine.machine_facts(dtype="float64", gemm_peak=12.5)
    assert set(facts) == {"cpu", "cores", "platform", "python", "numpy", "blas", "openmp_threads", "backend",
                          "gemm_peak_gflops", "gemm_peak_dtype"}
    assert facts["numpy"] == np.__version__
    assert facts["backend"] in ("cython", "numpy")
    assert facts["gemm_peak_gflops"] == 12.5 and facts["gemm_peak_dtype"] == "float64"
    assert isinstance(facts["cpu"], str) and facts["cpu"]
    assert facts["cores"] is None or facts["cores"] >= 1


def test_no_peak_no_dtype():
    facts = machine.machine_facts()
    assert facts["gemm_peak_gflops"] is None and facts["gemm_peak_dtype"] is None


def test_blas_info_matches_threadpoolctl():
    info = machine.blas_info()
    pools = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
    if not pools:
        assert info is None
    else:
        assert info["name"] == pools[0]["internal_api"]
        assert info["threads"] == pools[0]["num_threads"]


def test_limit_threads_sets_and_restores_blas_threads():
    if machine.blas_info() is None:
        pytest.skip("no BLAS visible to threadpoolctl")
    before = machine.blas_info()["threads"]
    with machine.limit_threads(1):
        assert machine.blas_info()["threads"] == 1
    assert machine.blas_info()["threads"] == before
    with machine.limit_threads(None):
        assert machine.blas_info()["threads"] == before


def test_limit_threads_refuses_zero():
    with pytest.raises(ValueError), machine.limit_threads(0):
        pass


class StepClock:
    """Each reading is half a second after the previous one."""

    def __init__(self):
        self.now, self.reads = 0.0, 0

    def __call__(self):
        self.reads += 1
        self.now += 0.5
        return self.now


def test_gemm_peak_from_a_known_clock_and_cached():
    clock = StepClock()
    # two readings per product half a second apart: 0.5 s per product of 2 * 8**3 flops
    peak = machine.gemm_peak_gflops("float64", size=8, clock=clock)
    assert peak == pytest.approx(2 * 8 ** 3 / 0.5 / 1e9)
    # warm-up product plus GEMM_MIN_REPEAT timed ones (0.5 s each is over the budget)
    assert clock.reads == 2 * (1 + machine.GEMM_MIN_REPEAT)
    reads = clock.reads
    assert machine.gemm_peak_gflops("float64", size=8, clock=clock) == peak
    assert clock.reads == reads  # cached: no new measurement


def test_gemm_peak_is_per_dtype():
    clock = StepClock()
    machine.gemm_peak_gflops("float32", size=9, clock=clock)
    reads = clock.reads
    machine.gemm_peak_gflops("float64", size=9, clock=clock)
    assert clock.reads > reads


def test_gemm_peak_real_measurement_is_positive():
    assert machine.gemm_peak_gflops("float32", size=32) > 0


def test_gemm_peak_refuses_other_dtypes():
    with pytest.raises(ValueError):
        machine.gemm_peak_gflops("int32", size=8)


def test_backend_agrees_with_the_kernels():
    import importlib.util

    if importlib.util.find_spec("cnncheck.im2col") is not None:
        from cnncheck import im2col
        assert machine.kernel_backend() == im2col.BACKEND
    else:
        from cnncheck.layers import fast
        assert machine.kernel_backend() == fast.BACKEND
