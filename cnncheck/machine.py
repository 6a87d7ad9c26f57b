"""Facts about the machine that decide benchmark figures, its measured GEMM peak, and thread pools.

A time means little without the machine it was taken on: the CPU, how many
cores the process may use, which BLAS numpy calls and with how many threads,
and whether cnncheck's compiled kernels or their numpy fallback run.
:func:`machine_facts` collects these; :func:`gemm_peak_gflops` measures the
rate a large matrix product reaches, the ceiling convolution and affine
layers (which are matrix products underneath) are held to.
:func:`limit_threads` limits BLAS and OpenMP threads inside a block, and
:func:`child_thread_env` gives the environment of child processes that share
the machine.
"""

from __future__ import annotations

import contextlib
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
    """Most threads cnncheck's compiled kernels may use now, or None for the numpy fallback.

    The OpenMP limit in force for the calling thread (``OMP_NUM_THREADS``,
    threadpoolctl, ``--threads``), capped at the usable CPUs: see
    :func:`cnncheck.kernels.thread_limit`.  Kernels with little work, and
    every kernel while other processes keep the CPUs busy, use fewer.
    """
    from cnncheck import kernels

    return kernels.thread_limit() if kernels.BACKEND == "cython" else None


def kernel_backend() -> str:
    """``"cython"`` or ``"numpy"``: which kernels cnncheck's fast layers use."""
    from cnncheck import kernels

    return str(kernels.BACKEND)


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


#: Variables that size the thread pools of the libraries a child process may load: OpenMP
#: (cnncheck's kernels, PyTorch), OpenBLAS, MKL, BLIS, Accelerate and numexpr.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
#: How idle threads wait in a child process: as soon as their work is done they sleep
#: instead of spinning for more, so they never take a core from another pool's threads
#: (OpenMP's beside OpenBLAS's, in one process), another child or another user.
#: ``OMP_WAIT_POLICY`` for GNU OpenMP (cnncheck's kernels, PyTorch), ``KMP_BLOCKTIME`` for
#: Intel's, ``OPENBLAS_THREAD_TIMEOUT`` (2**4 cycles, its least) for OpenBLAS's.  Measured on
#: the 2-core machine of the README (a grading-like sequence of the fast conv, relu and pool
#: layers and numpy's affine, median of 9; quiet / with two busy-loop processes): the
#: defaults 29 / 151 ms, OMP_WAIT_POLICY=PASSIVE 20 / 64 ms, with OPENBLAS_THREAD_TIMEOUT=4
#: as well 15 / 65 ms; GOMP_SPINCOUNT=10000 26 / 73 ms, OMP_WAIT_POLICY=ACTIVE 51 / 69 ms.
WAIT_POLICY = {
    "OMP_WAIT_POLICY": "PASSIVE",
    "KMP_BLOCKTIME": "0",
    "OPENBLAS_THREAD_TIMEOUT": "4",
}


def child_thread_env(jobs: int, *, cores: int | None = None) -> dict[str, str]:
    """Environment variables for a child process when ``jobs`` children share the machine.

    Each child's thread pools (BLAS, OpenMP, and with them cnncheck's kernels
    and PyTorch) get ``max(1, cores // jobs)`` threads, so the children
    together ask for no more threads than there are cores, and idle threads
    wait without spinning (:data:`WAIT_POLICY`).  Set the variables before
    the child starts: the libraries read them once, when they load.

    Parameters
    ----------
    jobs : int
        Children running at the same time, >= 1.
    cores : int, optional
        Cores they share; by default those this process may use (:func:`core_count`).

    Returns
    -------
    dict of str to str
        Every name in :data:`THREAD_VARIABLES` with the thread count, and
        :data:`WAIT_POLICY`.  The caller overlays it on the child's
        environment, e.g. ``env={**os.environ, **child_thread_env(jobs)}``.

    Raises
    ------
    ValueError
        ``jobs`` or ``cores`` below 1.

    Examples
    --------
    >>> child_thread_env(4, cores=2)["OMP_NUM_THREADS"]
    '1'
    >>> child_thread_env(1, cores=8)["OPENBLAS_NUM_THREADS"]
    '8'
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    if cores is None:
        cores = core_count() or 1
    if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
        raise ValueError(f"cores must be an integer >= 1, got {cores!r}")
    threads = str(max(1, cores // jobs))
    return {**{name: threads for name in THREAD_VARIABLES}, **WAIT_POLICY}


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
