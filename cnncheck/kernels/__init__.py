"""The loops under the fast layers: compiled kernels, their numpy fallbacks, and their threads.

One module per family of kernels, each a validating wrapper around a
compiled module and a numpy module with the same functions and arguments:

* :mod:`cnncheck.kernels.conv`: im2col and col2im, and the direct
  convolution for small channel counts (``extensions/_conv_cy.pyx``,
  ``_conv_numpy.py``);
* :mod:`cnncheck.kernels.pool`: one-pass max pooling (``extensions/_pool_cy.pyx``,
  ``_pool_numpy.py``);
* :mod:`cnncheck.kernels.relu`: one-pass relu (``extensions/_relu_cy.pyx``,
  ``_relu_numpy.py``).

The backend is chosen once, here, at import:

* ``CNNCHECK_PURE_PYTHON=1`` in the environment selects numpy;
* otherwise the compiled modules, and numpy with one ``RuntimeWarning`` when
  any of them cannot be imported (the extensions were not built).

:data:`BACKEND` says which one is active (``"cython"`` or ``"numpy"``).  On
CPUs with AVX2 and FMA the convolution kernels come from a second build of
the same source compiled for them (:data:`INSTRUCTIONS` says which).

Threads
-------
A compiled kernel takes its thread count when it is called, never at
import: :func:`max_threads` reads the OpenMP limit in force for the calling
thread, which ``OMP_NUM_THREADS`` sets at start-up and threadpoolctl's
``threadpool_limits`` (and with it ``cnncheck bench --threads``) changes
later, capped at the CPUs the process may use and, on a busy machine, at
the CPUs other processes have left idle lately (:func:`idle_cpus`).
:func:`threads_for` then gives a kernel fewer threads when its work is
small.  Every kernel here is short (milliseconds), and a short parallel
kernel is only as fast as its slowest thread: on a machine whose cores are
all busy, a thread the operating system does not schedule for a time slice
stalls the whole kernel, so there one thread is faster than two.  The
results do not depend on the thread count.
"""

from __future__ import annotations

import importlib
import os
import time
import warnings
from types import ModuleType

from cnncheck.errors import CnnCheckError

#: The families of kernels, each ``kernels/<name>.py`` over ``_<name>_cy`` or ``_<name>_numpy``.
NAMES = ("conv", "pool", "relu")
#: Backends that can be requested explicitly (for tests and benchmarks).
BACKENDS = ("cython", "numpy")


def _numpy_modules() -> dict[str, ModuleType]:
    return {name: importlib.import_module(f"cnncheck.kernels._{name}_numpy") for name in NAMES}


def _compiled_modules() -> dict[str, ModuleType]:
    """The compiled modules; ImportError when any of them is missing."""
    modules = {name: importlib.import_module(f"cnncheck.kernels._{name}_cy") for name in NAMES}
    if modules["conv"].cpu_has_avx2_fma():
        try:
            modules["conv"] = importlib.import_module("cnncheck.kernels._conv_avx2_cy")
        except ImportError:  # not built for this machine: the baseline build serves
            pass
    return modules


def _select_backend() -> tuple[dict[str, ModuleType], str]:
    if os.environ.get("CNNCHECK_PURE_PYTHON") == "1":
        return _numpy_modules(), "numpy"
    try:
        modules = _compiled_modules()
    except ImportError as exc:
        warnings.warn(
            f"cnncheck's compiled kernels are not available ({exc}); using the slower numpy fallback. "
            "Reinstall with a C compiler (pip install .) to build them.",
            RuntimeWarning,
            stacklevel=2,
        )
        return _numpy_modules(), "numpy"
    return modules, "cython"


_MODULES, BACKEND = _select_backend()
# The OpenMP runtime's limit, read through the compiled conv module (all three share the runtime).
_openmp_threads = _MODULES["conv"].openmp_threads if BACKEND == "cython" else None

#: Instructions the active convolution kernels were compiled for: ``"avx2"``,
#: ``"baseline"``, ``"scalar"``, or ``"numpy"`` for the fallback.
INSTRUCTIONS = getattr(_MODULES["conv"], "INSTRUCTIONS", "numpy")


def module(name: str, backend: str | None = None) -> ModuleType:
    """The loop module of family ``name``: the active one, or the one of ``backend``.

    Parameters
    ----------
    name : {"conv", "pool", "relu"}
    backend : {None, "cython", "numpy"}
        None gives the module of :data:`BACKEND`; a name forces that backend.

    Raises
    ------
    CnnCheckError
        An unknown backend, or ``"cython"`` when the extension is not built.
    """
    if backend is None:
        return _MODULES[name]
    if backend == "numpy":
        return importlib.import_module(f"cnncheck.kernels._{name}_numpy")
    if backend == "cython":
        if BACKEND == "cython":
            return _MODULES[name]
        try:
            return importlib.import_module(f"cnncheck.kernels._{name}_cy")
        except ImportError:
            raise CnnCheckError(
                f"backend 'cython' requested but the compiled extension cnncheck.kernels._{name}_cy is not "
                "built; reinstall with a C compiler or use backend 'numpy'"
            ) from None
    raise CnnCheckError(f"unknown kernel backend {backend!r}; known: {', '.join(BACKENDS)}")


def usable_cpus() -> int:
    """Logical CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # platforms without sched_getaffinity
        return max(1, os.cpu_count() or 1)


# The CPUs the process may use, read once, as the OpenMP runtime reads them for its own default.
_CPUS = usable_cpus()
# Seconds over which idle_cpus() measures what other processes use.
LOAD_WINDOW = 0.1
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# (time.monotonic(), busy CPU seconds of the machine, CPU seconds of this process, idle CPUs) at the last reading.
_last_load = None


def _machine_busy_seconds() -> float | None:
    """CPU seconds all processes have run since boot (Linux ``/proc/stat``), or None elsewhere."""
    try:
        with open("/proc/stat", "rb") as handle:
            fields = handle.readline().split()
    except OSError:
        return None
    if len(fields) < 8 or fields[0] != b"cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[1:8])
    return (user + nice + system + irq + softirq) / _TICKS


def idle_cpus() -> int:
    """CPUs that other processes have left idle over the last :data:`LOAD_WINDOW` seconds or so.

    The machine's busy time (``/proc/stat``) minus this process's own CPU
    time, read at most once per window; the CPUs this process may use when
    that cannot be read (not Linux).  At least 1.
    """
    global _last_load
    now = time.monotonic()
    last = _last_load
    if last is not None and now - last[0] < LOAD_WINDOW:
        return last[3]
    busy, own = _machine_busy_seconds(), time.process_time()
    if busy is None:
        idle = _CPUS
    elif last is None:
        idle = _CPUS  # nothing to compare with yet
    else:
        others = max(0.0, (busy - last[1]) - (own - last[2])) / (now - last[0])
        idle = max(1, min(_CPUS, _CPUS - int(others + 0.5)))
    if busy is not None:
        _last_load = (now, busy, own, idle)
    return idle


idle_cpus()  # the first reading: the next call, a window later, compares with it


def thread_limit() -> int:
    """The OpenMP limit in force for the calling thread, capped at the CPUs the process may use (1: numpy).

    :func:`max_threads` is this, capped further on a busy machine.
    """
    if _openmp_threads is None:
        return 1
    return max(1, min(_openmp_threads(), _CPUS))


def max_threads() -> int:
    """Threads a compiled kernel called now may use: the OpenMP limit in force, capped at the idle CPUs.

    The limit is read at every call, so ``threadpoolctl.threadpool_limits``
    (and ``cnncheck bench --threads``) take effect on the next kernel call.
    It is the calling thread's own limit, as OpenMP keeps it per thread; a
    limit set before the kernels were imported does not reach them (as
    threadpoolctl does not reach a library loaded after the limit).  The
    cap is the CPUs the process may use, less those other processes keep
    busy (:func:`idle_cpus`).  The numpy fallback runs on one thread.
    """
    if _openmp_threads is None:
        return 1
    return max(1, min(_openmp_threads(), _CPUS, idle_cpus()))


def threads_for(work: int, per_thread: int) -> int:
    """Threads for a kernel call with ``work`` units when each thread should get at least ``per_thread``.

    ``min(max_threads(), work // per_thread)``, and at least 1.
    """
    most = work // max(per_thread, 1)
    if most <= 1:
        return 1
    return min(max_threads(), most)
