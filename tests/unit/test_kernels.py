"""cnncheck.kernels: backend choice, thread counts taken at call time, the pool/relu/direct wrappers' validation."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import threadpoolctl

from cnncheck import kernels, machine
from cnncheck.errors import CnnCheckError
from cnncheck.kernels import conv, pool, relu
from cnncheck.layers import fast

compiled = kernels.BACKEND == "cython"
needs_compiled = pytest.mark.skipif(not compiled, reason="the numpy fallback runs on one thread")


class Spy:
    """Stands for a kernel module and records the thread count of every kernel call."""

    def __init__(self, module):
        self.module = module
        self.threads = []

    def __getattr__(self, name):
        attr = getattr(self.module, name)
        if not callable(attr) or name in ("openmp_threads", "cpu_has_avx2_fma", "tile_columns"):
            return attr

        def call(*args):
            self.threads.append(args[-1])
            return attr(*args)

        return call


@pytest.fixture(autouse=True)
def quiet_machine(monkeypatch):
    """Other processes' load does not cap the threads in these tests (idle_cpus has tests of its own)."""
    monkeypatch.setattr(kernels, "idle_cpus", lambda: kernels.usable_cpus())


@pytest.fixture
def spies(monkeypatch):
    """Every kernel module replaced by a spy; thresholds lowered so the work asks for every thread."""
    found = {}
    for name in kernels.NAMES:
        found[name] = Spy(kernels.module(name))
        monkeypatch.setitem(kernels._MODULES, name, found[name])
    monkeypatch.setattr(conv, "UNFOLD_ELEMENTS_PER_THREAD", 1)
    monkeypatch.setattr(conv, "DIRECT_MACS_PER_THREAD", 1)
    monkeypatch.setattr(pool, "ELEMENTS_PER_THREAD", 1)
    monkeypatch.setattr(relu, "BYTES_PER_THREAD", 1)
    return found


def _every_kernel(rng):
    """Call every kernel once: direct and unfolded conv (both passes), pool, relu."""
    x = rng.standard_normal((4, 3, 8, 8))
    out = conv.direct_forward(x, rng.standard_normal((5, 3, 3, 3)), np.zeros(5), 1, 1)
    conv.direct_backward(x, rng.standard_normal((5, 3, 3, 3)), out, 1, 1)
    conv.col2im(conv.im2col(x, 3, 3, 1, 1), x.shape, 3, 3, 1, 1)
    out, argmax = pool.max_pool_forward(x, 2, 2, 2)
    pool.max_pool_backward(out, argmax, x.shape, 2, 2, 2)
    relu.relu_backward(x, relu.relu_forward(x))


def test_thread_limit_follows_threadpoolctl_at_call_time():
    before = kernels.thread_limit()
    assert 1 <= before <= kernels.usable_cpus()
    with threadpoolctl.threadpool_limits(limits=1):
        assert kernels.thread_limit() == kernels.max_threads() == 1
    assert kernels.thread_limit() == before
    if not compiled:
        assert before == 1


@needs_compiled
def test_every_kernel_takes_the_limit_in_force_when_called(rng, spies):
    if kernels.usable_cpus() < 2:
        pytest.skip("one CPU: every limit is 1")
    with machine.limit_threads(2):  # what `cnncheck bench --threads 2` does
        _every_kernel(rng)
    assert all(t == 2 for spy in spies.values() for t in spy.threads)
    for spy in spies.values():
        spy.threads.clear()
    with machine.limit_threads(1):
        _every_kernel(rng)
    assert all(t == 1 for spy in spies.values() for t in spy.threads)
    assert all(spy.threads for spy in spies.values())


@needs_compiled
def test_the_fast_layers_take_the_limit_at_call_time(rng, spies):
    x = rng.standard_normal((4, 3, 8, 8))
    with threadpoolctl.threadpool_limits(limits=1):
        out, cache = fast.max_pool_forward_fast(x, {"pool_height": 2, "pool_width": 2, "stride": 2})
        fast.max_pool_backward_fast(out, cache)
        out, cache = fast.conv_forward_fast(x, rng.standard_normal((2, 3, 3, 3)), np.zeros(2), {"stride": 1, "pad": 1})
        fast.conv_backward_fast(out, cache)
        fast.relu_backward_fast(x, fast.relu_forward_fast(x)[1])
    assert spies["pool"].threads == [1, 1] and spies["relu"].threads == [1, 1]
    assert spies["conv"].threads == [1, 1]


class FakeClock:
    """Stands for the ``time`` module inside cnncheck.kernels: a monotonic clock and this process's CPU time."""

    def __init__(self):
        self.now, self.cpu = 100.0, 5.0

    def monotonic(self):
        return self.now

    def process_time(self):
        return self.cpu


@pytest.fixture
def machine_load(monkeypatch):
    """A fake clock and a fake /proc/stat: returns ``step(seconds, machine_busy, own_busy)``."""
    monkeypatch.undo()  # the real idle_cpus
    clock, busy = FakeClock(), [1000.0]
    monkeypatch.setattr(kernels, "time", clock)
    monkeypatch.setattr(kernels, "_machine_busy_seconds", lambda: busy[0])
    monkeypatch.setattr(kernels, "_last_load", None)
    monkeypatch.setattr(kernels, "_CPUS", 4)

    def step(seconds, machine_busy, own_busy):
        clock.now += seconds
        busy[0] += machine_busy * seconds
        clock.cpu += own_busy * seconds
        return kernels.idle_cpus()

    return step


def test_idle_cpus_leaves_out_what_other_processes_use(machine_load):
    assert machine_load(0, 0, 0) == 4  # first reading: nothing to compare with
    assert machine_load(0.2, 1.0, 1.0) == 4  # only this process was busy (one core)
    assert machine_load(0.2, 3.0, 1.0) == 2  # others kept two cores busy
    assert machine_load(0.2, 4.0, 0.0) == 1  # every core taken: at least one thread
    assert machine_load(0.01, 0.0, 0.0) == 1  # within the window: the last answer, no new reading
    assert machine_load(0.2, 1.4, 1.0) == 4  # others' 0.4 of a core rounds to none


def test_idle_cpus_without_proc_stat(machine_load, monkeypatch):
    monkeypatch.setattr(kernels, "_machine_busy_seconds", lambda: None)
    assert machine_load(0.2, 4.0, 0.0) == 4


def _split_calls(monkeypatch, limit, idle, count, work, per_thread, share_from=0):
    monkeypatch.setattr(kernels, "thread_limit", lambda: limit)
    monkeypatch.setattr(kernels, "idle_cpus", lambda: idle)
    calls = []
    kernels.split(lambda lo, hi, threads: calls.append((lo, hi, threads)), count, work, per_thread, share_from)
    return calls


def test_split_on_a_quiet_machine_is_one_call_with_openmp_threads(monkeypatch):
    assert _split_calls(monkeypatch, 8, 8, 100, 10**9, 1) == [(0, 100, 8)]
    assert _split_calls(monkeypatch, 8, 8, 100, 250, 100) == [(0, 100, 2)]  # little work: fewer threads
    assert _split_calls(monkeypatch, 8, 8, 100, 10, 100) == [(0, 100, 1)]
    assert _split_calls(monkeypatch, 8, 8, 3, 10**9, 1) == [(0, 3, 3)]  # no more threads than pieces
    assert _split_calls(monkeypatch, 1, 8, 100, 10**9, 1) == [(0, 100, 1)]  # --threads 1


def test_split_on_a_busy_machine_shares_one_thread_pieces(monkeypatch):
    calls = _split_calls(monkeypatch, 2, 1, 100, 10**9, 1)
    assert len(calls) == 8 and all(threads == 1 for _, _, threads in calls)
    assert sorted((lo, hi) for lo, hi, _ in calls) == [(100 * i // 8, 100 * (i + 1) // 8) for i in range(8)]
    calls = _split_calls(monkeypatch, 4, 2, 5, 10**9, 1)  # fewer pieces than four per thread
    assert sorted((lo, hi) for lo, hi, _ in calls) == [(i, i + 1) for i in range(5)]
    # too little work to share on a busy machine: one thread
    assert _split_calls(monkeypatch, 2, 1, 100, 10**6, 1, share_from=10**7) == [(0, 100, 1)]


def test_backend_modules():
    for name in kernels.NAMES:
        assert kernels.module(name, "numpy").__name__ == f"cnncheck.kernels._{name}_numpy"
    with pytest.raises(CnnCheckError, match="unknown kernel backend 'fortran'; known: cython, numpy"):
        kernels.module("conv", "fortran")
    if compiled:
        assert kernels.module("pool").__name__ == "cnncheck.kernels._pool_cy"
        assert kernels.INSTRUCTIONS in ("avx2", "baseline", "scalar")


def test_the_avx2_build_is_used_only_where_it_runs():
    try:
        base = importlib.import_module("cnncheck.kernels._conv_cy")
    except ImportError:
        pytest.skip("compiled extension not built")
    if kernels.BACKEND != "cython":
        return
    chosen = kernels.module("conv").__name__
    if chosen.endswith("_avx2_cy"):
        assert base.cpu_has_avx2_fma()
        assert kernels.INSTRUCTIONS == "avx2"
    else:
        assert chosen == "cnncheck.kernels._conv_cy"


class _NeverRuns:
    """A helper pool whose threads never get a time slice."""

    def __init__(self):
        self.submitted = 0

    def submit(self, fn, *args):
        self.submitted += 1


def test_shared_tasks_do_not_wait_for_a_helper_that_never_runs(monkeypatch):
    pool = _NeverRuns()
    monkeypatch.setattr(kernels, "_helper_pool", lambda: pool)
    done = []
    kernels.share([lambda i=i: done.append(i) for i in range(5)], team=2)
    assert done == [0, 1, 2, 3, 4] and pool.submitted == 1


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork here")
def test_a_forked_child_starts_helpers_of_its_own():
    import os

    kernels.share([lambda: None] * 4, team=2)  # the parent's helper threads exist
    pid = os.fork()
    if pid == 0:  # the child: shared tasks run, on helpers of its own
        done = []
        kernels.share([lambda i=i: done.append(i) for i in range(8)], team=2)
        os._exit(0 if sorted(done) == list(range(8)) and kernels._helpers is not None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_shared_tasks_run_once_each_and_raise_what_a_task_raised():
    done = []
    kernels.share([lambda i=i: done.append(i) for i in range(40)], team=3)
    assert sorted(done) == list(range(40))

    def boom():
        raise ZeroDivisionError("in a task")

    with pytest.raises(ZeroDivisionError, match="in a task"):
        kernels.share([lambda: None, boom, lambda: None], team=2)


# -- validation in the wrappers: the loops never see a bad argument -----------------------
@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: pool.max_pool_forward(np.zeros((2, 2, 4)), 2, 2, 2), "N, C, H, W"),
        (lambda: pool.max_pool_forward(np.zeros((1, 1, 4, 4), dtype=np.int32), 2, 2, 2), "float32 or float64"),
        (lambda: pool.max_pool_forward(np.zeros((1, 1, 4, 4)), 5, 2, 2), "larger than"),
        (lambda: pool.max_pool_backward(np.zeros((1, 1, 2, 2)), np.full((1, 1, 2, 2), 4, np.uint8), (1, 1, 4, 4),
                                        2, 2, 2), r"offsets outside \[0, 4\)"),
        (lambda: pool.max_pool_backward(np.zeros((1, 1, 2, 2)), np.full((1, 1, 2, 2), -1), (1, 1, 4, 4), 2, 2, 2),
         r"offsets outside \[0, 4\)"),
        (lambda: pool.max_pool_backward(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 2)), (1, 1, 4, 4), 2, 2, 2),
         "argmax must be an integer array"),
        (lambda: pool.max_pool_backward(np.zeros((1, 1, 3, 2)), np.zeros((1, 1, 3, 2), np.uint8), (1, 1, 4, 4),
                                        2, 2, 2), "dout must have shape"),
        (lambda: relu.relu_forward([1.0, -1.0]), "float32 or float64 array"),
        (lambda: relu.relu_backward(np.zeros(3), np.zeros(4)), "shape of dout"),
        (lambda: relu.relu_backward(np.zeros(3), np.zeros(3, np.float32)), "dtype float64"),
        (lambda: conv.direct_forward(np.zeros((1, 2, 5, 5)), np.zeros((3, 1, 3, 3)), np.zeros(3), 1, 1),
         "channels"),
        (lambda: conv.direct_forward(np.zeros((1, 1, 5, 5)), np.zeros((3, 1, 3, 3)), np.zeros(2), 1, 1),
         r"b must have shape \(3,\)"),
        (lambda: conv.direct_forward(np.zeros((1, 1, 5, 5)), np.zeros((3, 1, 3, 3), np.float32), np.zeros(3), 1, 1),
         "share one dtype"),
        (lambda: conv.direct_forward(np.zeros((1, 1, 2, 2)), np.zeros((3, 1, 5, 5)), np.zeros(3), 1, 1),
         "larger than the padded input"),
        (lambda: conv.direct_forward(np.zeros((1, 1, 5, 5)), np.zeros((3, 1, 3, 3)), np.zeros(3), 0, 1),
         "stride must be >= 1"),
        (lambda: conv.direct_backward(np.zeros((1, 1, 5, 5)), np.zeros((3, 1, 3, 3)), np.zeros((1, 3, 4, 5)), 1, 1),
         "dout must have shape"),
    ],
)
def test_wrappers_refuse_bad_arguments_with_a_value_error(call, message):
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert isinstance(info.value, CnnCheckError)
