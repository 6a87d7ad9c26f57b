"""Time cnncheck's fast layers against PyTorch and plain numpy, side by side, quiet and under load.

Usage (from the repository root)::

    python benchmarks/run.py [--quick] [--rounds N] [--only CASES] [--under-load] [--output FILE]

For every case the two contenders run in alternating rounds (fast, reference,
reference, fast, ...), so drifting clock speed or a busy neighbour hits both
alike.  Each round calls one side ``loops`` times, ``loops`` calibrated so a
round lasts at least ``--round-time`` seconds; a round gives seconds per call.
Tables show medians and interquartile ranges over the rounds.

conv and pool are compared with the ``torch`` implementation (PyTorch through
``torch.nn.functional`` and autograd, as many threads as numpy's BLAS);
affine and relu with a plain numpy expression of the same operation.  The
cases with a flop count (conv, affine) also time a square matrix product in
the same interleaved rounds, and show their GFLOP/s as a percentage of its
median rate: the GEMM peak of the same minutes (the header also shows the
one measured at the start).

``--under-load`` adds a second part: one busy-loop process per usable CPU is
started and paused, and each case's forward plus backward pass is timed in
interleaved quiet rounds (busy loops paused) and loaded rounds (busy loops
running), for cnncheck and for PyTorch alike; the slowdown of each is its
loaded median over its quiet median.

The targets of the performance work are checked at the end.  This is not
part of the test suite: it asserts nothing and takes about three minutes
(``--quick``: under one; ``--under-load`` adds about two).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import math
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Measure the package of this checkout, whether or not it is installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cnncheck  # noqa: E402
from cnncheck import geometry, kernels, layers, machine  # noqa: E402

DTYPES = ("float64", "float32")
#: Seconds to wait before each case: BLAS worker threads keep spinning for a
#: while after a matrix product, and on a machine with few cores they slow
#: the kernel that runs next (by 2x and more for the first ~0.1 s).
SETTLE = 0.5
FORWARD, BACKWARD = "forward", "backward"


# -- statistics ---------------------------------------------------------------------
@dataclass(frozen=True)
class Stats:
    """Median and interquartile range of seconds per call over rounds."""

    median: float
    iqr: float
    rounds: int

    @classmethod
    def of(cls, times: list[float]) -> Stats:
        q1, median, q3 = np.percentile(times, [25, 50, 75])
        return cls(float(median), float(q3 - q1), len(times))

    @property
    def iqr_ratio(self) -> float:
        return self.iqr / self.median if self.median > 0 else 0.0


# -- the cases ------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """A goal on one measured figure.

    ``kind`` is ``ratio`` (fast median / reference median, at most ``goal``),
    ``ratio_sum`` (forward plus backward medians, fast over reference, at most
    ``goal``) or ``peak`` (percent of the GEMM peak, at least ``goal``).
    """

    kind: str
    dtype: str
    direction: str | None
    goal: float


@dataclass(frozen=True)
class Case:
    """A layer at one size, timed in both dtypes and both directions."""

    label: str
    layer: str
    params: dict
    reference: str  # "torch" or "numpy"
    targets: tuple = ()

    def arrays(self, dtype: str) -> tuple[tuple, np.ndarray]:
        """(forward arguments, dout), from a generator seeded with 0."""
        rng = np.random.default_rng(0)
        p = self.params

        def randn(*shape):
            return rng.standard_normal(shape).astype(dtype)

        if self.layer == "conv":
            N, C = p["shape"][:2]
            w_shape = (p["filters"], C, *p["kernel"])
            out = geometry.conv_output_shape(p["shape"], w_shape, p["stride"], p["pad"])
            args = (randn(*p["shape"]), randn(*w_shape), randn(p["filters"]), {"stride": p["stride"], "pad": p["pad"]})
        elif self.layer == "pool":
            out = geometry.pool_output_shape(p["shape"], p["pool_height"], p["pool_width"], p["stride"])
            x = rng.permutation(math.prod(p["shape"])).reshape(p["shape"]).astype(dtype)  # no ties
            args = (x, {"pool_height": p["pool_height"], "pool_width": p["pool_width"], "stride": p["stride"]})
        elif self.layer == "affine":
            out = (p["shape"][0], p["filters"])
            args = (randn(*p["shape"]), randn(math.prod(p["shape"][1:]), p["filters"]), randn(p["filters"]))
        else:
            out = p["shape"]
            args = (randn(*p["shape"]),)
        return args, randn(*out)

    def flops(self) -> tuple[int, int] | None:
        """Floating-point operations of (forward, backward), for conv and affine."""
        p = self.params
        if self.layer == "conv":
            C = p["shape"][1]
            w_shape = (p["filters"], C, *p["kernel"])
            N, F, H_out, W_out = geometry.conv_output_shape(p["shape"], w_shape, p["stride"], p["pad"])
            forward = 2 * N * F * H_out * W_out * C * p["kernel"][0] * p["kernel"][1]
        elif self.layer == "affine":
            forward = 2 * p["shape"][0] * math.prod(p["shape"][1:]) * p["filters"]
        else:
            return None
        return forward, 2 * forward

    def bytes_moved(self, itemsize: int) -> tuple[int, int] | None:
        """Least bytes read and written by (forward, backward), for pool and relu."""
        p = self.params
        n = math.prod(p["shape"]) * itemsize
        if self.layer == "relu":
            return 2 * n, 3 * n
        if self.layer == "pool":
            out = math.prod(geometry.pool_output_shape(p["shape"], p["pool_height"], p["pool_width"], p["stride"]))
            return n + out * itemsize, n + out * itemsize
        return None


CASES = (
    Case("conv seed", "conv", {"shape": (100, 3, 31, 31), "filters": 25, "kernel": (3, 3), "stride": 2, "pad": 1},
         "torch", (Target("ratio", "float64", FORWARD, 0.7), Target("ratio", "float64", BACKWARD, 0.7))),
    Case("conv large", "conv", {"shape": (64, 64, 32, 32), "filters": 64, "kernel": (3, 3), "stride": 1, "pad": 1},
         "torch", (Target("peak", "float64", FORWARD, 70.0), Target("peak", "float64", BACKWARD, 60.0),
                   Target("ratio_sum", "float32", None, 1.0))),
    Case("pool seed", "pool", {"shape": (100, 3, 32, 32), "pool_height": 2, "pool_width": 2, "stride": 2},
         "torch", (Target("ratio", "float64", FORWARD, 0.5), Target("ratio", "float64", BACKWARD, 1.0))),
    Case("affine", "affine", {"shape": (100, 3072), "filters": 100}, "numpy",
         tuple(Target("ratio", d, s, 1.0) for d in DTYPES for s in (FORWARD, BACKWARD))),
    Case("relu", "relu", {"shape": (100, 25, 16, 16)}, "numpy",
         tuple(Target("ratio", d, s, 1.0) for d in DTYPES for s in (FORWARD, BACKWARD))),
)
#: Most a fast layer's forward plus backward may slow down under load, and at most PyTorch's slowdown.
LOAD_GOAL = 3.0
#: Seconds between switching the busy loops on or off and timing: the scheduler spreads them over
#: the CPUs, and cnncheck's kernels notice the change in what other processes use
#: (:data:`cnncheck.kernels.LOAD_WINDOW`), as they would on a machine that stays busy or quiet.
LOAD_SETTLE = 0.25


# -- the contenders -------------------------------------------------------------------
@dataclass(frozen=True)
class Side:
    """One contender: a course-style (forward, backward) pair and its name in the tables."""

    name: str
    forward: Callable
    backward: Callable


def _numpy_affine_forward(x, w, b):
    return x.reshape(x.shape[0], -1) @ w + b, (x, w)


def _numpy_affine_backward(dout, cache):
    x, w = cache
    return (dout @ w.T).reshape(x.shape), x.reshape(x.shape[0], -1).T @ dout, dout.sum(axis=0)


def _numpy_relu_forward(x):
    return np.maximum(x, 0), x


def _numpy_relu_backward(dout, x):
    return dout * (x > 0)


NUMPY_EXPRESSIONS = {
    "affine": (Side("numpy", _numpy_affine_forward, _numpy_affine_backward),
               "x.reshape(N, -1) @ w + b; dout @ w.T, x2.T @ dout, dout.sum(0)"),
    "relu": (Side("numpy", _numpy_relu_forward, _numpy_relu_backward), "np.maximum(x, 0); dout * (x > 0)"),
}
FAST = {
    "conv": Side("fast", layers.conv_forward_fast, layers.conv_backward_fast),
    "pool": Side("fast", layers.max_pool_forward_fast, layers.max_pool_backward_fast),
    "relu": Side("fast", layers.relu_forward_fast, layers.relu_backward_fast),
    # affine has no separate fast layer: the reference layer is numpy's matrix products already
    "affine": Side("fast", layers.affine_forward, layers.affine_backward),
}
#: Layers with a fast implementation of their own (cnncheck.layers.fast).
FAST_LAYERS = ("conv", "pool", "relu")
TORCH_NAMES = {"conv": ("conv_forward", "conv_backward"), "pool": ("max_pool_forward", "max_pool_backward"),
               "relu": ("relu_forward", "relu_backward"), "affine": ("affine_forward", "affine_backward")}


def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def torch_side(layer: str) -> Side:
    from cnncheck.layers import torch_impl

    forward, backward = (getattr(torch_impl, name) for name in TORCH_NAMES[layer])
    return Side("torch", forward, backward)


def reference_side(case: Case, has_torch: bool) -> tuple[Side | None, str]:
    """(reference side or None, its description) for ``case``."""
    if case.reference == "numpy":
        side, text = NUMPY_EXPRESSIONS[case.layer]
        return side, f"numpy: `{text}`"
    if not has_torch:
        return None, "torch (not installed)"
    return torch_side(case.layer), "torch"


# -- timing ---------------------------------------------------------------------------
def _loops_for(fn: Callable[[], object], round_time: float) -> int:
    """Calls per round so that one round lasts at least ``round_time`` seconds."""
    loops = 1
    while True:
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= round_time or loops >= 1_000_000:
            return loops
        loops *= max(2, min(10, int(round_time / max(elapsed, 1e-9)) + 1))


def _round(fn: Callable[[], object], loops: int) -> float:
    start = time.perf_counter()
    for _ in range(loops):
        fn()
    return (time.perf_counter() - start) / loops


def _interleaved(fns: dict[str, Callable[[], object]], rounds: int, round_time: float) -> dict[str, list[float]]:
    """Seconds per call of each function, over ``rounds`` alternating rounds."""
    loops = {name: _loops_for(fn, round_time) for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for name in (order if r % 2 == 0 else order[::-1]):
                times[name].append(_round(fns[name], loops[name]))
    finally:
        if enabled:
            gc.enable()
    return times


def gemm_peak(dtype: str, size: int, rounds: int) -> tuple[float, Stats]:
    """Median GFLOP/s of ``size``-cubed matrix products in ``dtype`` (after one warm-up product)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    out = np.empty((size, size), dtype=dtype)
    np.matmul(a, b, out=out)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - start)
    stats = Stats.of(times)
    return 2.0 * size ** 3 / stats.median / 1e9, stats


@dataclass
class Row:
    """Timings of one case, dtype and direction."""

    case: Case
    dtype: str
    direction: str
    fast: Stats
    reference: Stats | None
    reference_text: str
    difference: float | None
    rate: float | None = None  # GFLOP/s or GB/s of the fast side
    rate_unit: str = ""
    peak: float | None = None  # GFLOP/s of the GEMM timed in the same rounds
    peak_percent: float | None = None

    @property
    def ratio(self) -> float | None:
        return None if self.reference is None else self.fast.median / self.reference.median


def _as_tuple(grads) -> tuple:
    return grads if isinstance(grads, tuple) else (grads,)


def _difference(a, b) -> float:
    """Largest elementwise difference of ``a`` from reference ``b``, relative to the largest ``|b|``.

    Normwise rather than elementwise, so that outputs that sum many terms to
    nearly zero do not report float32 rounding as a 100 % difference.
    """
    worst = 0.0
    for x, y in zip(_as_tuple(a), _as_tuple(b)):
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        scale = float(np.max(np.abs(y))) if y.size else 0.0
        gap = float(np.max(np.abs(x - y), initial=0.0))
        worst = max(worst, gap / scale if scale > 0 else gap)
    return worst


def _gemm(dtype: str, size: int) -> Callable[[], object]:
    """One ``size``-cubed matrix product in ``dtype``, as a contender in the rounds of a case."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    out = np.empty((size, size), dtype=dtype)
    return lambda: np.matmul(a, b, out=out)


def run_case(case: Case, dtype: str, rounds: int, round_time: float, peaks: dict, has_torch: bool,
             gemm_size: int) -> list[Row]:
    """Time ``case`` in ``dtype``: forward, then backward on one cache per side.

    Cases with a flop count also time a ``gemm_size``-cubed matrix product in
    the same interleaved rounds, and relate their rate to its median: the
    peak of the very same minutes, whatever the machine did before or after.
    """
    time.sleep(SETTLE)
    fast = FAST[case.layer]
    reference, ref_text = reference_side(case, has_torch)
    sides = [s for s in (fast, reference) if s is not None]
    args, dout = case.arrays(dtype)
    outs, caches = {}, {}
    for side in sides:
        outs[side.name], caches[side.name] = side.forward(*args)
    grads = {side.name: side.backward(dout, caches[side.name]) for side in sides}
    flops = case.flops()
    moved = case.bytes_moved(np.dtype(dtype).itemsize)
    rows = []
    for i, direction in enumerate((FORWARD, BACKWARD)):
        if direction == FORWARD:
            fns = {s.name: (lambda s=s: s.forward(*args)) for s in sides}
            results = outs
        else:
            fns = {s.name: (lambda s=s: s.backward(dout, caches[s.name])) for s in sides}
            results = grads
        if flops is not None:
            fns["gemm"] = _gemm(dtype, gemm_size)
        times = _interleaved(fns, rounds, round_time)
        fast_stats = Stats.of(times[fast.name])
        row = Row(case, dtype, direction, fast_stats,
                  Stats.of(times[reference.name]) if reference else None, ref_text,
                  _difference(results[fast.name], results[reference.name]) if reference else None)
        if flops is not None:
            row.rate, row.rate_unit = flops[i] / fast_stats.median / 1e9, "GFLOP/s"
            row.peak = 2.0 * gemm_size ** 3 / Stats.of(times["gemm"]).median / 1e9
            row.peak_percent = 100.0 * row.rate / row.peak
        elif moved is not None:
            row.rate, row.rate_unit = moved[i] / fast_stats.median / 1e9, "GB/s"
        rows.append(row)
    gc.collect()
    return rows


# -- under load -----------------------------------------------------------------------
class BusyLoops:
    """One busy-loop process per CPU, started paused; :meth:`run` and :meth:`pause` switch them."""

    def __init__(self, count: int):
        self.processes = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
        self.pause()

    def _signal(self, sig) -> None:
        for process in self.processes:
            process.send_signal(sig)

    def run(self) -> None:
        self._signal(signal.SIGCONT)
        time.sleep(LOAD_SETTLE)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)
        time.sleep(LOAD_SETTLE)

    def close(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait()

    def __enter__(self) -> BusyLoops:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class LoadRow:
    """Forward plus backward of one case, quiet and under load, for cnncheck and its reference."""

    case: Case
    dtype: str
    fast_quiet: Stats
    fast_loaded: Stats
    reference: str
    ref_quiet: Stats | None
    ref_loaded: Stats | None

    @property
    def fast_slowdown(self) -> float:
        return self.fast_loaded.median / self.fast_quiet.median

    @property
    def ref_slowdown(self) -> float | None:
        return None if self.ref_quiet is None else self.ref_loaded.median / self.ref_quiet.median


def run_under_load(case: Case, dtype: str, rounds: int, round_time: float, busy: BusyLoops,
                   has_torch: bool) -> LoadRow:
    """Forward plus backward of ``case``, in quiet and loaded rounds taking turns."""
    time.sleep(SETTLE)
    fast = FAST[case.layer]
    reference = torch_side(case.layer) if has_torch else None
    args, dout = case.arrays(dtype)

    def both(side: Side) -> Callable[[], object]:
        return lambda: side.backward(dout, side.forward(*args)[1])

    fns = {"fast": both(fast)}
    if reference is not None:
        fns["torch"] = both(reference)
    loops = {name: _loops_for(fn, round_time) for name, fn in fns.items()}
    times = {(name, state): [] for name in fns for state in ("quiet", "loaded")}
    order = list(fns)
    for r in range(rounds):
        for state in ("quiet", "loaded") if r % 2 == 0 else ("loaded", "quiet"):
            if state == "loaded":
                busy.run()
            try:
                for name in (order if r % 2 == 0 else order[::-1]):
                    times[name, state].append(_round(fns[name], loops[name]))
            finally:
                if state == "loaded":
                    busy.pause()
    gc.collect()
    ref = "torch" if reference is not None else "torch (not installed)"
    ref_quiet = Stats.of(times["torch", "quiet"]) if reference is not None else None
    ref_loaded = Stats.of(times["torch", "loaded"]) if reference is not None else None
    return LoadRow(case, dtype, Stats.of(times["fast", "quiet"]), Stats.of(times["fast", "loaded"]), ref,
                   ref_quiet, ref_loaded)


# -- report ---------------------------------------------------------------------------
def _ms(seconds: float) -> str:
    """Seconds as a short time: 3 significant digits in ms, or s from one second up."""
    if seconds >= 1:
        return f"{seconds:.3g} s"
    ms = seconds * 1e3
    return f"{ms:.3g} ms" if ms >= 1 else f"{ms:.3f} ms"


def _verdict(miss: float, spread: float) -> str:
    """``met``, or ``missed`` (``missed (within spread)`` when the miss is smaller than the spread)."""
    return "met" if miss <= 0 else ("missed (within spread)" if miss <= spread else "missed")


def _target_rows(rows: list[Row]) -> list[list[str]]:
    """One line per target: what was measured, the goal, and met / missed.

    A miss smaller than the measurements' own spread (half the sum of both
    sides' IQR / median) is marked ``missed (within spread)``.
    """
    index = {(r.case.label, r.dtype, r.direction): r for r in rows}
    lines = []
    for case in {r.case.label: r.case for r in rows}.values():
        for t in case.targets:
            directions = (FORWARD, BACKWARD) if t.kind == "ratio_sum" else (t.direction,)
            picked = [index.get((case.label, t.dtype, d)) for d in directions]
            if None in picked or (t.kind != "peak" and picked[0].reference is None):
                continue
            spread = max(r.fast.iqr_ratio + (r.reference.iqr_ratio if r.reference else 0.0) for r in picked) / 2
            ref_name = picked[0].reference_text.split(":")[0]
            if t.kind == "peak":
                value = picked[0].peak_percent
                what = f"{case.label} {t.dtype} {t.direction}: % of GEMM peak"
                shown, goal = f"{value:.0f} %", f">= {t.goal:g} %"
                miss = t.goal / value - 1.0
            else:
                value = sum(r.fast.median for r in picked) / sum(r.reference.median for r in picked)
                which = "forward + backward" if t.kind == "ratio_sum" else t.direction
                what = f"{case.label} {t.dtype} {which}: fast / {ref_name}"
                shown, goal = f"{value:.2f}x", f"<= {t.goal:g}x"
                miss = value / t.goal - 1.0
            lines.append([what, shown, goal, _verdict(miss, spread)])
    return lines


def _load_target_rows(rows: list[LoadRow]) -> list[list[str]]:
    """Per fast layer: its slowdown against :data:`LOAD_GOAL` and against the reference's slowdown.

    affine has no fast layer (its row times the reference layer, numpy's
    products) and has no target.
    """
    lines = []
    for r in rows:
        if r.case.layer not in FAST_LAYERS:
            continue
        spread = (r.fast_quiet.iqr_ratio + r.fast_loaded.iqr_ratio) / 2
        what = f"{r.case.label} {r.dtype} forward + backward under load: slowdown"
        lines.append([what, f"{r.fast_slowdown:.2f}x", f"<= {LOAD_GOAL:g}x",
                      _verdict(r.fast_slowdown / LOAD_GOAL - 1.0, spread)])
        if r.ref_slowdown is not None:
            spread += (r.ref_quiet.iqr_ratio + r.ref_loaded.iqr_ratio) / 2
            lines.append([f"{r.case.label} {r.dtype} under load: slowdown, fast / {r.reference}",
                          f"{r.fast_slowdown:.2f}x / {r.ref_slowdown:.2f}x", f"<= {r.reference}'s",
                          _verdict(r.fast_slowdown / r.ref_slowdown - 1.0, spread)])
    return lines


def _table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def _load() -> str:
    """The 1-minute load average, or "n/a" where the system does not report it."""
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "n/a"


def _threads(count) -> str:
    """``1 thread``, ``2 threads``, or ``? threads`` when unknown."""
    if count is None:
        return "? threads"
    return f"{count} thread" if count == 1 else f"{count} threads"


def _facts(peaks: dict, peak_stats: dict, gemm_size: int, rounds: int, round_time: float,
           has_torch: bool, load: tuple[str, str]) -> list[list[str]]:
    blas = machine.blas_info()
    blas_text = "unknown"
    if blas:
        blas_text = f"{blas['name']} {blas['version']} ({blas['architecture']}), {_threads(blas['threads'])}"
    if has_torch:
        import torch

        torch_text = f"{torch.__version__}, {_threads(torch.get_num_threads())}"
    else:
        torch_text = "not installed"
    names = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY",
             "GOMP_SPINCOUNT")
    env = ", ".join(f"{k}={os.environ[k]}" if k in os.environ else f"{k} unset" for k in names)
    peak_text = "; ".join(f"{d} {peaks[d]:.1f} GFLOP/s (IQR {100 * peak_stats[d].iqr_ratio:.1f} %)"
                          for d in peaks)
    kernel_text = f"{cnncheck.__version__}, kernels {kernels.BACKEND}"
    if kernels.BACKEND == "cython":
        kernel_text += f" ({kernels.INSTRUCTIONS} build), up to {_threads(kernels.thread_limit())}"
    return [
        ["CPU", f"{machine.cpu_model()}, {machine.core_count()} logical CPUs"],
        ["system", f"{platform.system()} {platform.machine()}, Python {platform.python_version()}"],
        ["numpy", f"{np.__version__}, BLAS {blas_text}"],
        ["torch", torch_text],
        ["cnncheck", kernel_text],
        ["environment", env],
        [f"GEMM peak ({gemm_size}^3 matmul, median, at the start)", peak_text],
        ["timing", f"{rounds} interleaved rounds per figure, each >= {1e3 * round_time:g} ms"],
        ["load average (1 min) at start / end", f"{load[0]} / {load[1]}"],
    ]


def render(rows: list[Row], load_rows: list[LoadRow], facts: list[list[str]], command: str,
           busy_count: int) -> str:
    """The whole markdown report."""
    timing = []
    for r in rows:
        timing.append([
            r.case.label, r.dtype, r.direction,
            _ms(r.fast.median), f"{100 * r.fast.iqr_ratio:.0f} %",
            r.reference_text.split(":")[0],
            _ms(r.reference.median) if r.reference else "n/a",
            f"{100 * r.reference.iqr_ratio:.0f} %" if r.reference else "n/a",
            f"{r.ratio:.2f}" if r.ratio is not None else "n/a",
            f"{r.rate:.1f} {r.rate_unit}" if r.rate is not None else "",
            f"{r.peak_percent:.0f} % of {r.peak:.1f}" if r.peak_percent is not None else "",
            f"{r.difference:.1e}" if r.difference is not None else "",
        ])
    refs = {r.case.label: r.reference_text.split(": ", 1)[1] for r in rows if ": " in r.reference_text}
    parts = [
        "# cnncheck fast layers against PyTorch and numpy",
        "",
        f"`{command}`, {datetime.date.today().isoformat()}",
        "",
        _table(["machine", ""], facts),
        "",
    ]
    if rows:
        parts += [
            "## Timings (medians; spread = IQR / median)",
            "",
            _table(["case", "dtype", "direction", "fast", "spread", "reference", "reference time", "spread",
                    "fast / ref", "fast rate", "% of GEMM peak (GFLOP/s)", "max diff"], timing),
            "",
            ("fast / ref below 1: cnncheck is faster. Spread above 20 %: noisy, rerun on a quieter machine. "
             "% of GEMM peak: the fast rate over the median rate of a square matrix product timed in the same "
             "interleaved rounds. max diff: the largest |fast - reference| over the largest |reference| (the "
             "output for forward, each gradient for backward)."),
            "",
            ("numpy references: " + "; ".join(f"{label} {text}" for label, text in refs.items()) + ".")
            if refs else "",
            "",
        ]
    if load_rows:
        body = [[r.case.label, r.dtype, _ms(r.fast_quiet.median), _ms(r.fast_loaded.median),
                 f"{r.fast_slowdown:.2f}x", r.reference,
                 _ms(r.ref_quiet.median) if r.ref_quiet else "n/a",
                 _ms(r.ref_loaded.median) if r.ref_loaded else "n/a",
                 f"{r.ref_slowdown:.2f}x" if r.ref_slowdown is not None else "n/a"] for r in load_rows]
        parts += [
            f"## Under load: forward + backward, quiet and with {busy_count} busy-loop processes (medians)",
            "",
            _table(["case", "dtype", "fast quiet", "fast loaded", "fast slowdown", "reference", "reference quiet",
                    "reference loaded", "reference slowdown"], body),
            "",
            ("Quiet and loaded rounds take turns (the busy loops are paused and resumed between them, "
             f"{LOAD_SETTLE:g} s before timing), and both sides run in every round. Slowdown: loaded median over "
             "quiet median. affine has no fast layer: its row times the reference layer (numpy's products)."),
            "",
        ]
    parts += [
        "## Targets",
        "",
        _table(["target", "measured", "goal", "result"], _target_rows(rows) + _load_target_rows(load_rows)),
        "",
    ]
    return "\n".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (a rough look in ~20 s)")
    parser.add_argument("--rounds", type=int, help="rounds per figure (default 15, --quick 5)")
    parser.add_argument("--round-time", type=float, help="least seconds per round (default 0.02, --quick 0.005)")
    parser.add_argument("--gemm-size", type=int, default=2048, help="side of the GEMM-peak matrices (default 2048)")
    parser.add_argument("--only", help="comma-separated case labels to run (e.g. 'conv seed,pool seed')")
    parser.add_argument("--under-load", action="store_true",
                        help="also time forward + backward with one busy-loop process per CPU, quiet and loaded "
                             "rounds taking turns, beside PyTorch")
    parser.add_argument("--only-under-load", action="store_true", help="skip the quiet tables (implies --under-load)")
    parser.add_argument("--load-dtypes", default="float64",
                        help="dtypes of the under-load part, comma-separated (default float64)")
    parser.add_argument("--load-rounds", type=int, help="quiet and loaded rounds each (default 9, --quick 3)")
    parser.add_argument("--output", type=Path, help="also write the markdown report to this file")
    args = parser.parse_args(argv)
    rounds = args.rounds or (5 if args.quick else 15)
    round_time = args.round_time or (0.005 if args.quick else 0.02)
    load_rounds = args.load_rounds or (3 if args.quick else 9)
    under_load = args.under_load or args.only_under_load
    if rounds < 1 or load_rounds < 1 or round_time <= 0 or args.gemm_size < 1:
        parser.error("--rounds, --load-rounds, --round-time and --gemm-size must be positive")
    load_dtypes = [d.strip() for d in args.load_dtypes.split(",")]
    if any(d not in DTYPES for d in load_dtypes):
        parser.error(f"--load-dtypes: known dtypes are {', '.join(DTYPES)}")
    if under_load and not hasattr(signal, "SIGSTOP"):
        parser.error("--under-load pauses its busy loops with SIGSTOP, which this system does not have")
    if args.output is not None and not args.output.resolve().parent.is_dir():
        parser.error(f"--output: folder {str(args.output.parent)!r} does not exist")
    cases = CASES
    if args.only:
        wanted = [w.strip() for w in args.only.split(",")]
        unknown = [w for w in wanted if w not in {c.label for c in CASES}]
        if unknown:
            parser.error(f"unknown case {unknown[0]!r}; known: {', '.join(c.label for c in CASES)}")
        cases = tuple(c for c in CASES if c.label in wanted)

    load_start = _load()
    has_torch = _has_torch()
    peaks, peak_stats = {}, {}
    for dtype in DTYPES:
        peaks[dtype], peak_stats[dtype] = gemm_peak(dtype, args.gemm_size, max(3, rounds // 2))
    rows, load_rows = [], []
    if not args.only_under_load:
        for case in cases:
            for dtype in DTYPES:
                print(f"timing {case.label} {dtype} ...", file=sys.stderr, flush=True)
                rows.extend(run_case(case, dtype, rounds, round_time, peaks, has_torch, args.gemm_size))
    busy_count = kernels.usable_cpus()
    if under_load:
        with BusyLoops(busy_count) as busy:
            for case in cases:
                for dtype in load_dtypes:
                    print(f"timing {case.label} {dtype} quiet and under load ...", file=sys.stderr, flush=True)
                    load_rows.append(run_under_load(case, dtype, load_rounds, round_time, busy, has_torch))
    command = "python benchmarks/run.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    report = render(rows, load_rows, _facts(peaks, peak_stats, args.gemm_size, rounds, round_time, has_torch,
                                            (load_start, _load())), command, busy_count)
    print(report)
    if args.output:
        args.output.write_text(report + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
