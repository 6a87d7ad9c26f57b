"""Machine facts, the thread limit, the environment of child processes and the cached GEMM peak."""

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
    from cnncheck import kernels
    from cnncheck.layers import fast

    assert machine.kernel_backend() == kernels.BACKEND == fast.BACKEND


def test_openmp_threads_are_the_kernels_limit_now(monkeypatch):
    from cnncheck import kernels

    monkeypatch.setattr(kernels, "idle_cpus", lambda: 1)  # a busy machine does not change the limit shown
    if kernels.BACKEND != "cython":
        assert machine.openmp_threads() is None
        return
    assert machine.openmp_threads() == kernels.thread_limit() == min(kernels.usable_cpus(), machine.openmp_threads())
    with machine.limit_threads(1):
        assert machine.openmp_threads() == 1
        assert machine.machine_facts()["openmp_threads"] == 1


@pytest.mark.parametrize(("jobs", "cores", "threads"), [(1, 2, "2"), (2, 2, "1"), (3, 2, "1"), (4, 16, "4"),
                                                        (3, 16, "5"), (1, 1, "1")])
def test_child_thread_env_shares_the_cores(jobs, cores, threads):
    env = machine.child_thread_env(jobs, cores=cores)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        assert env[name] == threads
    assert set(env) == set(machine.THREAD_VARIABLES) | set(machine.WAIT_POLICY)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
    assert env["OMP_WAIT_POLICY"] == machine.WAIT_POLICY["OMP_WAIT_POLICY"]


def test_child_thread_env_defaults_to_this_process_cores():
    cores = machine.core_count() or 1
    assert machine.child_thread_env(1)["OMP_NUM_THREADS"] == str(cores)
    assert machine.child_thread_env(cores + 1)["OPENBLAS_NUM_THREADS"] == "1"


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, None])
def test_child_thread_env_refuses_bad_counts(bad):
    with pytest.raises(ValueError, match="jobs must be an integer >= 1"):
        machine.child_thread_env(bad)
    with pytest.raises(ValueError, match="cores must be an integer >= 1"):
        machine.child_thread_env(1, cores=bad if bad is not None else 0)


def test_child_thread_env_takes_effect_in_a_child():
    import json
    import os
    import subprocess
    import sys

    code = ("import json, threadpoolctl; from cnncheck import kernels; "
            "print(json.dumps([kernels.max_threads(), "
            "[p['num_threads'] for p in threadpoolctl.threadpool_info() if p['user_api'] == 'blas']]))")
    env = {**os.environ, **machine.child_thread_env(2, cores=2)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    kernel_threads, blas_threads = json.loads(done.stdout)
    assert kernel_threads == 1
    assert all(t == 1 for t in blas_threads)
