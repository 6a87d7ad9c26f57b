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
import.  :func:`thread_limit` reads the OpenMP limit in force for the
calling thread, which ``OMP_NUM_THREADS`` sets at start-up and threadpoolctl's
``threadpool_limits`` (and with it ``cnncheck bench --threads``) changes
later, capped at the CPUs the process may use; a kernel with little work
takes fewer (one below a per-kernel amount of work per thread).  How the
threads are used depends on the machine as it is (:func:`split`): while
other processes leave enough CPUs idle (:func:`idle_cpus`), one call runs
the kernel's own OpenMP threads; on a busy machine a parallel kernel would
be only as fast as its slowest thread, and a thread the scheduler leaves
out for a time slice would stall it, so the work is cut into pieces that
the caller and helper threads take one at a time (:func:`share`).  The
results do not depend on the thread count or on the way the work was shared.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
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
    """Threads an OpenMP kernel called now would run: :func:`thread_limit`, capped at :func:`idle_cpus`."""
    return max(1, min(thread_limit(), idle_cpus()))


# -- sharing work among threads without waiting for the ones not scheduled --------------
_helpers = None  # threads that share the caller's tasks, started on first use
_helpers_lock = threading.Lock()


def _helper_pool() -> ThreadPoolExecutor:
    global _helpers
    with _helpers_lock:
        if _helpers is None:
            _helpers = ThreadPoolExecutor(max(1, _CPUS - 1), thread_name_prefix="cnncheck-kernels")
    return _helpers


def _forget_helpers() -> None:
    """In a forked child: the parent's helper threads do not exist here, so start new ones when needed."""
    global _helpers, _helpers_lock
    _helpers, _helpers_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helpers)


class _Tasks:
    """A list of tasks that the caller and helper threads take one at a time, each task once.

    The caller waits only for tasks a helper has taken and not finished: a
    helper the operating system has not scheduled yet takes nothing, and
    when it runs later it finds the list empty.  So on a busy machine the
    caller does the work alone instead of waiting for a time slice, and on
    a quiet one the work is shared.  The helpers wait for work on a queue,
    without spinning.
    """

    def __init__(self, tasks: list):
        self.tasks = tasks
        self.next = 0
        self.running = 0
        self.error: BaseException | None = None
        self.cond = threading.Condition()

    def run(self) -> None:
        cond = self.cond
        while True:
            with cond:
                if self.next >= len(self.tasks) or self.error is not None:
                    return
                task = self.tasks[self.next]
                self.next += 1
                self.running += 1
            try:
                task()
            except BaseException as exc:  # handed to the caller, which raises it
                with cond:
                    if self.error is None:
                        self.error = exc
            finally:
                with cond:
                    self.running -= 1
                    if self.running == 0:
                        cond.notify_all()

    def join(self) -> None:
        with self.cond:
            while self.running:
                self.cond.wait()
        if self.error is not None:
            raise self.error


def share(tasks: list, team: int) -> None:
    """Run ``tasks`` on the caller and up to ``team - 1`` helper threads; raise what a task raised."""
    if team <= 1 or len(tasks) <= 1:
        for task in tasks:
            task()
        return
    shared = _Tasks(tasks)
    pool = _helper_pool()
    for _ in range(min(team, len(tasks)) - 1):
        pool.submit(shared.run)
    shared.run()
    shared.join()


def split(call, count: int, work: int, per_thread: int, share_from: int = 0, pieces_per_thread: int = 4) -> None:
    """Run ``call(lo, hi, threads)`` over ``[0, count)``, with threads that fit the machine as it is now.

    At most :func:`thread_limit` threads, and one per ``per_thread`` units of
    ``work``.  On a quiet machine (:func:`idle_cpus` at least that many) one
    call covers everything with the kernel's own OpenMP threads.  On a busy
    one the range is cut into pieces that the caller and helper threads take
    one at a time (:func:`share`), each on one thread: no thread waits for
    another the scheduler has left out, and the work still gets every
    thread's share of the machine; below ``share_from`` units of work,
    though, a busy machine gets one thread (helpers woken for pieces of a
    fraction of a millisecond arrive too late to take any, and cost more
    than they bring).  ``call`` must give the same results whatever the split.
    """
    most = min(work // max(per_thread, 1), count)
    if most <= 1:  # the common case for small work: no thread limit to read
        call(0, count, 1)
        return
    threads = min(thread_limit(), most)
    if threads == 1:
        call(0, count, 1)
        return
    if idle_cpus() >= threads:
        call(0, count, threads)
        return
    if work < share_from:
        call(0, count, 1)
        return
    pieces = min(count, threads * pieces_per_thread)
    bounds = [count * i // pieces for i in range(pieces + 1)]
    share([lambda lo=lo, hi=hi: call(lo, hi, 1) for lo, hi in zip(bounds, bounds[1:])], threads)
