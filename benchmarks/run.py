"""Time cnncheck's fast layers against PyTorch and plain numpy, side by side, and write a markdown table.

Usage (from the repository root)::

    python benchmarks/run.py [--quick] [--rounds N] [--output FILE]

For every case the two contenders run in alternating rounds (fast, reference,
reference, fast, ...), so drifting clock speed or a busy neighbour hits both
alike.  Each round calls one side ``loops`` times, ``loops`` calibrated so a
round lasts at least ``--round-time`` seconds; a round gives seconds per call.
Tables show medians and interquartile ranges over the rounds.

conv and pool are compared with the ``torch`` implementation (PyTorch through
``torch.nn.functional`` and autograd, as many threads as numpy's BLAS);
affine and relu with a plain numpy expression of the same operation.  The
same run measures numpy's GEMM rate for each dtype (square products, median),
and conv rows show their GFLOP/s as a percentage of it.  The targets of the
performance work are checked at the end.

This is not part of the test suite: it asserts nothing and takes about a
minute (``--quick``: about 20 seconds).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import threadpoolctl

# Measure the package of this checkout, whether or not it is installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cnncheck
from cnncheck import machine
from cnncheck.catalog import builtin_registry
from cnncheck.stats import Stats

DTYPES = ("float64", "float32")
#: Seconds to wait before each case: OpenBLAS worker threads keep spinning for a
#: while after a matrix product, and on a machine with few cores they slow the
#: OpenMP kernel that runs next (by 2x and more for the first ~0.1 s).
SETTLE = 0.5
FORWARD, BACKWARD = "forward", "backward"


# -- the contenders ---------------------------------------------------------------
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
    "affine": (_numpy_affine_forward, _numpy_affine_backward,
               "x.reshape(N, -1) @ w + b; dout @ w.T, x2.T @ dout, dout.sum(0)"),
    "relu": (_numpy_relu_forward, _numpy_relu_backward, "np.maximum(x, 0); dout * (x > 0)"),
}


@dataclass(frozen=True)
class Side:
    """One contender: a course-style (forward, backward) pair and its name in the tables."""

    name: str
    forward: Callable
    backward: Callable


@dataclass(frozen=True)
class Case:
    """A layer at one size, timed in both dtypes and both directions."""

    label: str
    layer: str
    params: dict
    reference: str  # "torch" or "numpy"
    targets: tuple = ()


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


CASES = (
    Case("conv seed", "conv", {"shape": (100, 3, 31, 31), "filters": 25, "kernel": (3, 3), "stride": 2, "pad": 1},
         "torch", (Target("ratio", "float64", FORWARD, 0.7), Target("ratio", "float64", BACKWARD, 0.7))),
    Case("conv large", "conv", {"shape": (64, 64, 32, 32), "filters": 64, "kernel": (3, 3), "stride": 1, "pad": 1},
         "torch", (Target("peak", "float64", FORWARD, 70.0), Target("peak", "float64", BACKWARD, 60.0),
                   Target("ratio_sum", "float32", None, 1.3))),
    Case("pool seed", "pool", {"shape": (100, 3, 32, 32), "pool_height": 2, "pool_width": 2, "stride": 2},
         "torch", (Target("ratio", "float64", FORWARD, 1.0), Target("ratio", "float64", BACKWARD, 2.0))),
    Case("affine", "affine", {"shape": (100, 3072), "filters": 100}, "numpy",
         tuple(Target("ratio", d, s, 1.0) for d in DTYPES for s in (FORWARD, BACKWARD))),
    Case("relu", "relu", {"shape": (100, 25, 16, 16)}, "numpy",
         tuple(Target("ratio", d, s, 1.0) for d in DTYPES for s in (FORWARD, BACKWARD))),
)


def _sides(registry, case: Case, has_torch: bool) -> tuple[Side, Side | None, str]:
    """(fast side, reference side or None, reference description) for ``case``."""
    names = [impl.name for impl in registry.impls(case.layer)]
    fast = registry.impl(case.layer, "fast" if "fast" in names else "numpy")
    fast_side = Side("fast", fast.forward, fast.backward)
    if case.reference == "numpy":
        forward, backward, text = NUMPY_EXPRESSIONS[case.layer]
        return fast_side, Side("numpy", forward, backward), f"numpy: `{text}`"
    if not has_torch:
        return fast_side, None, "torch (not installed)"
    impl = registry.impl(case.layer, "torch")
    return fast_side, Side("torch", impl.forward, impl.backward), "torch"


# -- timing -----------------------------------------------------------------------
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
                fn, n = fns[name], loops[name]
                start = time.perf_counter()
                for _ in range(n):
                    fn()
                times[name].append((time.perf_counter() - start) / n)
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
    stats = Stats.from_times(times)
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
    peak_percent: float | None = None
    extra: dict = field(default_factory=dict)

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
        worst = max(worst, float(np.max(np.abs(x - y))) / scale if scale > 0 else float(np.max(np.abs(x - y), initial=0.0)))
    return worst


def run_case(registry, case: Case, dtype: str, rounds: int, round_time: float, peaks: dict,
             has_torch: bool) -> list[Row]:
    """Time ``case`` in ``dtype``: forward, then backward on one cache per side."""
    time.sleep(SETTLE)
    spec = registry.layer(case.layer)
    params = spec.resolve(case.params, purpose="bench")
    sample = spec.make_inputs(params, np.random.default_rng(0), dtype=dtype)
    fast, reference, ref_text = _sides(registry, case, has_torch)
    sides = [s for s in (fast, reference) if s is not None]
    args = sample.args()
    outs, caches = {}, {}
    for side in sides:
        outs[side.name], caches[side.name] = side.forward(*args)
    grads = {side.name: side.backward(sample.dout, caches[side.name]) for side in sides}
    flops = spec.flops(params)
    moved = spec.bytes_moved(params, np.dtype(dtype).itemsize)
    rows = []
    for i, direction in enumerate((FORWARD, BACKWARD)):
        if direction == FORWARD:
            fns = {s.name: (lambda s=s: s.forward(*args)) for s in sides}
            results = outs
        else:
            fns = {s.name: (lambda s=s: s.backward(sample.dout, caches[s.name])) for s in sides}
            results = grads
        times = _interleaved(fns, rounds, round_time)
        fast_stats = Stats.from_times(times[fast.name])
        row = Row(case, dtype, direction, fast_stats,
                  Stats.from_times(times[reference.name]) if reference else None, ref_text,
                  _difference(results[fast.name], results[reference.name]) if reference else None)
        if flops is not None:
            row.rate, row.rate_unit = flops[i] / fast_stats.median / 1e9, "GFLOP/s"
            row.peak_percent = 100.0 * row.rate / peaks[dtype]
        elif moved is not None:
            row.rate, row.rate_unit = moved[i] / fast_stats.median / 1e9, "GB/s"
        rows.append(row)
    gc.collect()
    return rows


# -- report -----------------------------------------------------------------------
def _ms(seconds: float) -> str:
    """Seconds as a short time: 3 significant digits in ms, or s from one second up."""
    if seconds >= 1:
        return f"{seconds:.3g} s"
    ms = seconds * 1e3
    return f"{ms:.3g} ms" if ms >= 1 else f"{ms:.3f} ms"


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
            verdict = "met" if miss <= 0 else ("missed (within spread)" if miss <= spread else "missed")
            lines.append([what, shown, goal, verdict])
    return lines


def _table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def _load() -> str:
    """The 1-minute load average, or "n/a" where the system does not report it."""
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "n/a"


def _facts(peaks: dict, peak_stats: dict, gemm_size: int, rounds: int, round_time: float,
           has_torch: bool, load: tuple[str, str]) -> list[list[str]]:
    blas = machine.blas_info()
    blas_text = "unknown"
    if blas:
        blas_text = f"{blas['name']} {blas['version']} ({blas['architecture']}), {blas['threads']} threads"
    if has_torch:
        import torch

        torch_text = f"{torch.__version__}, {torch.get_num_threads()} threads"
    else:
        torch_text = "not installed"
    env = ", ".join(f"{k}={os.environ[k]}" if k in os.environ else f"{k} unset"
                    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))
    pools = ", ".join(f"{p.get('prefix', '?')} {p.get('num_threads', '?')}" for p in threadpoolctl.threadpool_info())
    peak_text = "; ".join(f"{d} {peaks[d]:.1f} GFLOP/s (IQR {100 * peak_stats[d].iqr_ratio:.1f} %)"
                          for d in peaks)
    return [
        ["CPU", f"{machine.cpu_model()}, {machine.core_count()} logical CPUs"],
        ["system", f"{platform.system()} {platform.machine()}, Python {platform.python_version()}"],
        ["numpy", f"{np.__version__}, BLAS {blas_text}"],
        ["torch", torch_text],
        ["cnncheck", f"{cnncheck.__version__}, kernels {machine.kernel_backend()}"],
        ["thread pools (threadpoolctl)", pools],
        ["environment", env],
        [f"GEMM peak ({gemm_size}^3 matmul, median)", peak_text],
        ["timing", f"{rounds} interleaved rounds per figure, each >= {1e3 * round_time:g} ms"],
        ["load average (1 min) at start / end", f"{load[0]} / {load[1]}"],
    ]


def render(rows: list[Row], facts: list[list[str]], command: str) -> str:
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
            f"{r.peak_percent:.0f} %" if r.peak_percent is not None else "",
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
        "## Timings (medians; spread = IQR / median)",
        "",
        _table(["case", "dtype", "direction", "fast", "spread", "reference", "reference time", "spread",
                "fast / ref", "fast rate", "% of GEMM peak", "max diff"], timing),
        "",
        ("fast / ref below 1: cnncheck is faster. Spread above 20 %: noisy, rerun on a quieter machine. "
        "max diff: the largest |fast - reference| over the largest |reference| (the output for forward, "
        "each gradient for backward)."),
        "",
        ("numpy references: " + "; ".join(f"{label} {text}" for label, text in refs.items()) + ".")
        if refs else "",
        "",
        "## Targets",
        "",
        _table(["target", "measured", "goal", "result"], _target_rows(rows)),
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
    parser.add_argument("--output", type=Path, help="also write the markdown report to this file")
    args = parser.parse_args(argv)
    rounds = args.rounds or (5 if args.quick else 15)
    round_time = args.round_time or (0.005 if args.quick else 0.02)
    if rounds < 1 or round_time <= 0 or args.gemm_size < 1:
        parser.error("--rounds, --round-time and --gemm-size must be positive")
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
    registry = builtin_registry()
    has_torch = "torch" in registry.all_impl_names()
    peaks, peak_stats = {}, {}
    for dtype in DTYPES:
        peaks[dtype], peak_stats[dtype] = gemm_peak(dtype, args.gemm_size, max(3, rounds // 2))
    rows = []
    for case in cases:
        for dtype in DTYPES:
            print(f"timing {case.label} {dtype} ...", file=sys.stderr, flush=True)
            rows.extend(run_case(registry, case, dtype, rounds, round_time, peaks, has_torch))
    command = "python benchmarks/run.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    report = render(rows, _facts(peaks, peak_stats, args.gemm_size, rounds, round_time, has_torch,
                                     (load_start, _load())), command)
    print(report)
    if args.output:
        args.output.write_text(report + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
