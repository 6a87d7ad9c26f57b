"""Facts about the machine that decide benchmark figures, and its measured GEMM peak.

A time means little without the machine it was taken on: the CPU, how many
cores the process may use, which BLAS numpy calls and with how many threads,
and whether cnncheck's compiled kernels or their numpy fallback run.
:func:`machine_facts` collects these; :func:`gemm_peak_gflops` measures the
rate a large matrix product reaches, the ceiling convolution and affine
layers (which are matrix products underneath) are held to.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import math
import os
import platform
import time
from collections.abc import Callable, Iterator

import numpy as np
import threadpoolctl

#: Side of the square matrices :func:`gemm_peak_gflops` multiplies by default.
GEMM_SIZE = 1024
#: Least and most products timed by :func:`gemm_peak_gflops`.
GEMM_MIN_REPEAT = 3
GEMM_MAX_REPEAT = 10
#: Seconds of products :func:`gemm_peak_gflops` aims for after the first one.
GEMM_BUDGET = 0.25

_PEAK_CACHE: dict[tuple, float] = {}


def cpu_model() -> str:
    """The CPU's model name, or the architecture when the system does not say."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    name = platform.processor()
    return name or platform.machine() or "unknown"


def core_count() -> int | None:
    """Logical CPUs this process may run on (its affinity), else the system's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


def blas_info() -> dict | None:
    """numpy's BLAS as threadpoolctl sees it: ``name``, ``version``, ``threads``, ``architecture``.

    None when threadpoolctl finds no BLAS.
    """
    for pool in threadpoolctl.threadpool_info():
        if pool.get("user_api") == "blas":
            return {
                "name": pool.get("internal_api", "unknown"),
                "version": pool.get("version"),
                "threads": pool.get("num_threads"),
                "architecture": pool.get("architecture"),
            }
    return None


def openmp_threads() -> int | None:
    """Threads of the OpenMP runtime loaded in the process (compiled kernels), or None."""
    for pool in threadpoolctl.threadpool_info():
        if pool.get("user_api") == "openmp":
            return pool.get("num_threads")
    return None


def kernel_backend() -> str:
    """``"cython"`` or ``"numpy"``: which im2col kernels cnncheck's fast layers use."""
    if importlib.util.find_spec("cnncheck.im2col") is not None:
        module = importlib.import_module("cnncheck.im2col")
    else:
        module = importlib.import_module("cnncheck.layers.fast")
    return str(module.BACKEND)


def machine_facts(*, dtype: str | None = None, gemm_peak: float | None = None) -> dict:
    """The facts a bench report's header shows.

    Parameters
    ----------
    dtype : str, optional
        The dtype the GEMM peak was measured in.
    gemm_peak : float, optional
        Measured GEMM rate in GFLOP/s (see :func:`gemm_peak_gflops`).

    Returns
    -------
    dict
        ``cpu``, ``cores``, ``platform``, ``python``, ``numpy``, ``blas`` (dict
        or None), ``openmp_threads``, ``backend``, ``gemm_peak_gflops``,
        ``gemm_peak_dtype``.
    """
    return {
        "cpu": cpu_model(),
        "cores": core_count(),
        "platform": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas_info(),
        "openmp_threads": openmp_threads(),
        "backend": kernel_backend(),
        "gemm_peak_gflops": gemm_peak,
        "gemm_peak_dtype": dtype if gemm_peak is not None else None,
    }


@contextlib.contextmanager
def limit_threads(threads: int | None) -> Iterator[None]:
    """Limit BLAS and OpenMP threads to ``threads`` inside the block (no limit for None).

    Parameters
    ----------
    threads : int or None
        At least 1.
    """
    if threads is None:
        yield
        return
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    with threadpoolctl.threadpool_limits(limits=threads):
        yield


def gemm_peak_gflops(dtype="float64", *, size: int = GEMM_SIZE,
                     clock: Callable[[], float] = time.perf_counter) -> float:
    """The best rate numpy's matrix product reaches here, in GFLOP/s.

    Multiplies two random ``size x size`` matrices into a preallocated output:
    one product to warm up, then as many as fit in about :data:`GEMM_BUDGET`
    seconds (between :data:`GEMM_MIN_REPEAT` and :data:`GEMM_MAX_REPEAT`),
    and keeps the fastest, ``2 * size**3 / seconds / 1e9``.  The figure is
    cached per process for each dtype, size and BLAS thread count, so one run
    measures it once.

    Parameters
    ----------
    dtype : str or numpy dtype
        ``float64`` or ``float32``.
    size : int
        Matrix side.
    clock : callable() -> float
        Seconds; injectable for tests.

    Returns
    -------
    float
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"GEMM peak is measured for float32 or float64, got {dtype}")
    blas = blas_info()
    key = (dtype.name, size, blas["threads"] if blas else None)
    if key in _PEAK_CACHE:
        return _PEAK_CACHE[key]
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    out = np.empty((size, size), dtype=dtype)
    start = clock()
    np.matmul(a, b, out=out)
    first = max(clock() - start, 1e-9)
    repeat = min(GEMM_MAX_REPEAT, max(GEMM_MIN_REPEAT, math.ceil(GEMM_BUDGET / first)))
    best = first
    for _ in range(repeat):
        start = clock()
        np.matmul(a, b, out=out)
        best = min(best, max(clock() - start, 1e-9))
    peak = 2.0 * size ** 3 / best / 1e9
    _PEAK_CACHE[key] = peak
    return peak
