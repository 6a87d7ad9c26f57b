"""Timing harness of ``cnncheck bench``: warm up, calibrate, repeat, compare with a baseline.

One *measurement* times one direction of one implementation:

1. a warm-up call, whose result is kept (the forward output and cache, or
   the gradients) for the agreement check and the backward pass;
2. calibration: fast calls are grouped ``loops`` at a time so one run lasts
   at least :data:`ROUND_TIME` seconds, well above the clock's resolution;
3. timed runs with the clock (``time.perf_counter`` unless one is
   injected) until at least ``repeat`` runs *and* ``min_time`` seconds of
   runs are done.  Each run gives seconds per call (run time / loops).

``max_seconds`` bounds the timed part of one measurement (calibration and
runs; the warm-up is not counted, so a first call that imports a library
does not cut the runs short): there is always one timed run, and before each
further run that would end past the budget the measurement stops, with fewer
runs, and is marked ``limited``.  The backward pass is timed on its own,
every call reusing the cache of one forward call.

:func:`run_bench` measures every implementation of every case, the baseline
first, and turns the figures into :class:`~cnncheck.results.BenchResult`
rows: speedups and :func:`difference` (the course notebook's ``rel_error``) against
the baseline, GFLOP/s and percent of the GEMM peak where the spec counts
flops, GB/s where it counts bytes.  Whatever an implementation raises or
returns is captured here and becomes an ``error`` row; it never ends the
run.  Nothing here prints: progress goes to an optional callback.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnncheck.errors import CnnCheckError
from cnncheck.gradient_check import rel_error
from cnncheck.results import BenchConfig, BenchResult, BenchStatus
from cnncheck.specs import Impl, LayerSpec
from cnncheck.stats import Stats
from cnncheck.sweep import Sweep, apply_value

#: Seconds one timed run should last at least; fast calls are looped to reach it.
ROUND_TIME = 1e-3
#: Most calls grouped into one run.
MAX_LOOPS = 100_000
#: Most calibration rounds before the loop count is accepted.
MAX_CALIBRATION_ROUNDS = 5

#: Default --max-diff per dtype: the largest :func:`difference` against the
#: baseline that still counts as agreement.
DEFAULT_MAX_DIFF = {"float64": 1e-9, "float32": 1e-2}

#: In float32 the denominator of :func:`difference` is at least this fraction
#: of the two arrays' scale (float64 uses the course notebook's 1e-8).
FLOAT32_FLOOR = 1e-3

FORWARD = "forward"
BACKWARD = "backward"
DIRECTIONS = (FORWARD, BACKWARD)

#: Progress callback: ``progress(done, total, label)``, called before each
#: measurement (``done`` measurements finished of ``total``) and once at the end.
ProgressCallback = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Measurement:
    """The timed runs of one callable.

    Attributes
    ----------
    times : tuple of float
        Seconds per call, one per run.
    loops : int
        Calls per run.
    limited : bool
        Stopped by ``max_seconds`` before ``repeat`` runs and ``min_time``.
    warmup : float
        Seconds of the warm-up call.
    elapsed : float
        Seconds of the whole measurement, warm-up and calibration included.
    value : object
        What the warm-up call returned.
    """

    times: tuple
    loops: int
    limited: bool
    warmup: float
    elapsed: float
    value: Any = None

    @property
    def stats(self) -> Stats:
        """:class:`Stats` of :attr:`times`."""
        return Stats.from_times(self.times)


def measure(fn: Callable[[], Any], *, repeat: int = 5, min_time: float = 0.5,
            max_seconds: float | None = None, clock: Callable[[], float] = time.perf_counter,
            round_time: float = ROUND_TIME) -> Measurement:
    """Warm up, calibrate and time ``fn()``.

    Parameters
    ----------
    fn : callable() -> object
        Called with no arguments; exceptions propagate.
    repeat : int
        Least number of timed runs, >= 1.
    min_time : float
        Least total seconds of timed runs, >= 0.
    max_seconds : float or None
        Budget for calibration and timed runs, warm-up excluded (see the
        module docstring); None for none.
    clock : callable() -> float
        Seconds, monotonic.
    round_time : float
        Seconds one run should last at least.

    Returns
    -------
    Measurement
    """
    if repeat < 1:
        raise CnnCheckError(f"repeat must be >= 1, got {repeat}")
    if min_time < 0:
        raise CnnCheckError(f"min_time must be >= 0, got {min_time}")
    if max_seconds is not None and max_seconds <= 0:
        raise CnnCheckError(f"max_seconds must be > 0, got {max_seconds}")

    start = clock()
    value = fn()
    warmup = clock() - start
    budget_start = clock()

    loops, per_call = 1, warmup
    for _ in range(MAX_CALIBRATION_ROUNDS):
        if per_call * loops >= round_time or loops >= MAX_LOOPS:
            break
        loops = min(MAX_LOOPS, max(2 * loops, math.ceil(round_time / max(per_call, 1e-9))))
        t0 = clock()
        for _ in range(loops):
            fn()
        per_call = (clock() - t0) / loops

    times: list[float] = []
    timed = 0.0
    limited = False
    while len(times) < repeat or timed < min_time:
        if max_seconds is not None and times:
            expected = timed / len(times)
            if clock() - budget_start + expected > max_seconds:
                limited = True
                break
        t0 = clock()
        for _ in range(loops):
            fn()
        run = clock() - t0
        times.append(run / loops)
        timed += run
        if timed <= 0 and len(times) >= repeat:
            break  # a clock that does not advance: more runs would change nothing
    return Measurement(tuple(times), loops, limited, warmup, clock() - start, value)


@dataclass(frozen=True)
class BenchCase:
    """One layer at one parameter set, with the implementations to time.

    Attributes
    ----------
    spec : LayerSpec
    impls : tuple of Impl
        The baseline (when present) first, then the others in the order asked.
    params : dict
        Resolved parameters.
    sweep_value : int or None
    """

    spec: LayerSpec
    impls: tuple
    params: dict
    sweep_value: int | None = None


def select_pairs(registry, layers: Sequence[str], impls: Sequence[str] = (), modules: Sequence = (), *,
                 baseline: str = "naive", check_baseline: bool = False) -> list[tuple[LayerSpec, Impl]]:
    """The (spec, impl) pairs a bench run times.

    Parameters
    ----------
    registry : Registry
    layers : sequence of str
        Layer names; empty or ``"all"`` means every layer.
    impls : sequence of str
        Implementation names.  Empty: every implementation, or with
        ``modules`` the user modules' implementations plus the baseline;
        ``"all"`` among them: every implementation.
    modules : sequence
        The user modules loaded into ``registry``.
    baseline : str
    check_baseline : bool
        Refuse a ``baseline`` that no selected layer has (for a baseline the
        user named).

    Raises
    ------
    CnnCheckError
        Unknown layer, implementation or baseline.
    """
    from cnncheck.plugins import user_impls

    layers = list(layers) or ["all"]
    specs = registry.expand_layers(layers)
    if check_baseline:
        known = sorted({impl.name for spec in specs for impl in registry.impls(spec.name)})
        if baseline not in known:
            raise CnnCheckError(f"unknown --baseline {baseline!r}; the selected layers have: {', '.join(known)}")
    if impls and "all" not in impls:
        return registry.select([s.name for s in specs], impls)
    if modules and not impls:
        pairs = []
        for spec in specs:
            chosen = [i for i in registry.impls(spec.name) if i.name == baseline]
            chosen += [i for i in user_impls(registry, spec.name, modules) if i.name != baseline]
            pairs.extend((spec, impl) for impl in chosen)
        return pairs
    return [(spec, impl) for spec in specs for impl in registry.impls(spec.name)]


def plan_cases(pairs: Iterable[tuple[LayerSpec, Impl]], *, overrides: Mapping[str, Any] | None = None,
               baseline: str = "naive", sweep: Sweep | None = None) -> list[BenchCase]:
    """Group (spec, impl) pairs by layer and resolve each layer's bench parameters.

    Parameters
    ----------
    pairs : iterable of (LayerSpec, Impl)
        As :meth:`Registry.select` returns them.
    overrides : mapping, optional
        Layer parameters from the command line (merged into each spec's
        ``bench_defaults``).
    baseline : str
        Implementation name to put first in each case.
    sweep : Sweep, optional
        One case per layer and sweep value.

    Returns
    -------
    list of BenchCase

    Raises
    ------
    CnnCheckError
        Invalid parameters, a parameter no selected layer takes, or a sweep
        that does not apply to a layer.
    """
    layers: dict[str, tuple[LayerSpec, list[Impl]]] = {}
    for spec, impl in pairs:
        layers.setdefault(spec.name, (spec, []))[1].append(impl)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    for key in given:
        if layers and not any(key in spec.params for spec, _ in layers.values()):
            raise CnnCheckError(f"--{key.replace('_', '-')} does not apply to "
                                f"{', '.join(layers)}")
    cases = []
    for spec, impls in layers.values():
        ordered = tuple(sorted(impls, key=lambda i: i.name != baseline))
        params = spec.resolve(overrides, purpose="bench")
        if sweep is None:
            cases.append(BenchCase(spec, ordered, params))
        else:
            for value in sweep.values:
                cases.append(BenchCase(spec, ordered, apply_value(spec, params, sweep.param, value), value))
    return cases


def check_plan(cases: Sequence[BenchCase], config: BenchConfig) -> None:
    """Refuse a plan that cannot do what the config asks.

    Raises
    ------
    CnnCheckError
        Nothing to run, or ``min_speedup`` without any case holding the
        baseline next to another implementation.
    """
    if not cases or not any(case.impls for case in cases):
        raise CnnCheckError("nothing to benchmark: no implementation of the selected layers was chosen")
    if config.min_speedup is not None:
        comparable = [c for c in cases if len(c.impls) > 1 and c.impls[0].name == config.baseline]
        if not comparable:
            raise CnnCheckError(
                f"--min-speedup needs the baseline {config.baseline!r} and another implementation of the "
                f"same layer; add {config.baseline} to --impl or choose --baseline"
            )


def planned_keys(cases: Sequence[BenchCase], dtype: str) -> list[dict]:
    """What identifies each row the plan will produce, in the JSON form ``--compare`` matches on.

    Returns
    -------
    list of dict
        ``layer``, ``direction``, ``impl``, ``sweep_value``, ``params``, ``dtype``.
    """
    keys = []
    for case in cases:
        params = dict(case.params)
        for impl in case.impls:
            for direction in DIRECTIONS:
                keys.append({"layer": case.spec.name, "direction": direction, "impl": impl.name,
                             "sweep_value": case.sweep_value, "params": params, "dtype": dtype})
    return keys


class _ImplFailed(Exception):
    """What the implementation under test raised, wrapped so only its errors are captured."""

    def __init__(self, where: str, exc: BaseException) -> None:
        super().__init__(f"{where} raised {type(exc).__name__}: {exc}")
        self.status = BenchStatus.NOT_IMPLEMENTED if isinstance(exc, NotImplementedError) else BenchStatus.ERROR


def _guarded(fn: Callable[[], Any], where: str) -> Callable[[], Any]:
    def call():
        try:
            return fn()
        except Exception as exc:  # the code under test: becomes an error row, never a crash
            raise _ImplFailed(where, exc) from exc
    return call


@dataclass
class _Timed:
    """One measurement's outcome before the baseline comparison."""

    direction: str
    status: str = BenchStatus.OK
    message: str = ""
    measurement: Measurement | None = None
    outputs: dict | None = None   # name -> ndarray, for the agreement check


def _check_forward(value, expected_shape) -> tuple[str, Any, Any]:
    """(problem, out, cache) from what a forward call returned."""
    if not isinstance(value, tuple) or len(value) != 2:
        return f"forward returned {type(value).__name__}, expected a tuple (out, cache)", None, None
    out, cache = value
    out = np.asarray(out)
    if out.shape != tuple(expected_shape):
        return f"forward output has shape {out.shape}, expected {tuple(expected_shape)}", None, None
    return "", out, cache


def _check_backward(value, spec: LayerSpec, arrays: Mapping[str, np.ndarray]) -> tuple[str, str, dict | None]:
    """(status, problem, gradients by name) from what a backward call returned."""
    if value is None:
        return BenchStatus.NOT_IMPLEMENTED, "backward returned None", None
    grads = value if isinstance(value, (tuple, list)) else (value,)
    if len(grads) != len(spec.grads):
        expected = ", ".join("d" + g for g in spec.grads)
        problem = f"backward returned {len(grads)} gradient(s), expected {len(spec.grads)} ({expected})"
        return BenchStatus.ERROR, problem, None
    named = {}
    for name, grad in zip(spec.grads, grads):
        if grad is None:
            return BenchStatus.NOT_IMPLEMENTED, f"backward returned None for d{name}", None
        grad = np.asarray(grad)
        if grad.shape != arrays[name].shape:
            return BenchStatus.ERROR, f"d{name} has shape {grad.shape}, expected {arrays[name].shape}", None
        named["d" + name] = grad
    return BenchStatus.OK, "", named


def _time_impl(case: BenchCase, impl: Impl, sample, config: BenchConfig, clock,
               tick: Callable[[str], None]) -> tuple[_Timed, _Timed]:
    """Measure forward, then backward from the warm-up forward's cache."""
    spec = case.spec
    args = sample.args()
    timing = {"repeat": config.repeat, "min_time": config.min_time, "max_seconds": config.max_seconds,
              "clock": clock}

    tick(FORWARD)
    forward = _Timed(FORWARD)
    backward = _Timed(BACKWARD)
    try:
        forward.measurement = measure(_guarded(lambda: impl.forward(*args), "forward"), **timing)
    except _ImplFailed as exc:
        forward.status, forward.message = exc.status, str(exc)
    if forward.status == BenchStatus.OK:
        problem, out, cache = _check_forward(forward.measurement.value, spec.output_shape(case.params))
        forward.measurement = dataclasses.replace(forward.measurement, value=None)
        if problem:
            forward.status, forward.message = BenchStatus.ERROR, problem
        else:
            forward.outputs = {"out": out}

    tick(BACKWARD)
    if forward.status != BenchStatus.OK:
        backward.status = forward.status
        backward.message = "not timed: the forward pass " + (
            "is not implemented" if forward.status == BenchStatus.NOT_IMPLEMENTED else "failed")
        return forward, backward
    dout = sample.dout
    try:
        backward.measurement = measure(_guarded(lambda: impl.backward(dout, cache), "backward"), **timing)
    except _ImplFailed as exc:
        backward.status, backward.message = exc.status, str(exc)
        return forward, backward
    status, problem, grads = _check_backward(backward.measurement.value, spec, sample.arrays)
    backward.measurement = dataclasses.replace(backward.measurement, value=None)
    backward.status, backward.message, backward.outputs = status, problem, grads
    return forward, backward


def difference(a, b, dtype="float64") -> float:
    """How far two outputs of one layer are apart: the course notebook's ``rel_error``, made sound for float32.

    float64: ``rel_error(a, b) = max(|a - b| / max(1e-8, |a| + |b|))``.

    float32: the same with the floor raised to ``FLOAT32_FLOOR * (max|a| + max|b|)``.
    Two float32 computations that sum many terms in different orders
    differ by about 1e-7 of the terms' size, so an element that sums to
    nearly zero has an elementwise relative error anywhere up to 1 however
    correct both sides are; measured against the arrays' scale, correct
    float32 layers stay below 1e-3 at the bench sizes while a wrong element
    shows at 1e-1 or more.

    Parameters
    ----------
    a, b : ndarray, same shape
    dtype : str
        The dtype of the run.

    Returns
    -------
    float
        NaN when either side holds NaN.
    """
    if np.dtype(dtype) != np.float32:
        return rel_error(a, b)
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.size == 0:
        return 0.0
    floor = max(1e-8, FLOAT32_FLOOR * (float(np.abs(x).max()) + float(np.abs(y).max())))
    if math.isnan(floor):
        return math.nan
    return float(np.max(np.abs(x - y) / np.maximum(floor, np.abs(x) + np.abs(y))))


def _differences(outputs: dict, reference: dict, dtype: str) -> dict:
    return {name: difference(outputs[name], reference[name], dtype) for name in reference}


def _row(case: BenchCase, impl: Impl, timed: _Timed, base: _Timed | None, baseline_name: str,
         config: BenchConfig, peak_gflops: float | None) -> BenchResult:
    """Turn one measurement into a result row, compared with the baseline's."""
    spec, params = case.spec, case.params
    index = DIRECTIONS.index(timed.direction)
    itemsize = np.dtype(config.dtype).itemsize
    flops = spec.flops(params)
    moved = spec.bytes_moved(params, itemsize)
    flops = None if flops is None else int(flops[index])
    moved = None if moved is None else int(moved[index])
    row = BenchResult(
        layer=spec.name, direction=timed.direction, impl=impl.name, backend=impl.backend,
        params=dict(params), dtype=config.dtype, status=timed.status, message=timed.message,
        flops=flops, bytes=moved, max_diff=config.max_diff, sweep_value=case.sweep_value,
        is_baseline=impl.name == baseline_name,
    )
    m = timed.measurement
    if m is None or not m.times:
        return row
    stats = m.stats
    changes: dict[str, Any] = {"stats": stats, "loops": m.loops, "limited": m.limited}
    median = stats.median
    if median > 0:
        if flops is not None:
            changes["gflops"] = flops / median / 1e9
            if peak_gflops:
                changes["peak_percent"] = 100.0 * changes["gflops"] / peak_gflops
        if moved is not None:
            changes["gbps"] = moved / median / 1e9
    comparable = (base is not None and not row.is_baseline and base.status == BenchStatus.OK
                  and base.measurement is not None)
    if comparable:
        changes["baseline"] = baseline_name
        base_median = base.measurement.stats.median
        if median > 0:
            changes["speedup"] = base_median / median
    problems = []
    status = row.status
    if comparable and timed.status == BenchStatus.OK:
        diffs = _differences(timed.outputs, base.outputs, config.dtype)
        worst = max(diffs, key=lambda k: math.inf if math.isnan(diffs[k]) else diffs[k]) if diffs else None
        largest = diffs[worst] if diffs else 0.0
        changes["differences"] = diffs
        changes["difference"] = largest
        if not largest <= config.max_diff:  # NaN differs too
            problems.append(f"differs from {baseline_name}: difference {largest:.3g} in {worst} "
                            f"is above --max-diff {config.max_diff:g}")
            status = BenchStatus.DIFFERS
        speedup = changes.get("speedup")
        if config.min_speedup is not None and speedup is not None and speedup < config.min_speedup:
            problems.append(f"only {speedup:.3g}x faster than {baseline_name}, "
                            f"below --min-speedup {config.min_speedup:g}")
            if status == BenchStatus.OK:
                status = BenchStatus.SLOW
    if problems:
        changes["status"] = status
        changes["message"] = "; ".join(problems)
    return dataclasses.replace(row, **changes)


def bench_case(case: BenchCase, config: BenchConfig, *, peak_gflops: float | None = None,
               clock: Callable[[], float] = time.perf_counter,
               tick: Callable[[str], None] | None = None) -> list[BenchResult]:
    """Time every implementation of one case and compare each with the baseline.

    Parameters
    ----------
    case : BenchCase
    config : BenchConfig
        ``repeat``, ``min_time``, ``max_seconds``, ``seed``, ``dtype``,
        ``baseline``, ``max_diff`` and ``min_speedup`` are used.
    peak_gflops : float, optional
        GEMM peak for ``peak_percent``.
    clock : callable() -> float
    tick : callable(label), optional
        Called before each measurement with ``"layer impl direction"``.

    Returns
    -------
    list of BenchResult
        Forward then backward for each implementation, in ``case.impls`` order.
    """
    sample = case.spec.make_inputs(case.params, np.random.default_rng(config.seed), np.dtype(config.dtype))
    timed: dict[str, tuple[_Timed, _Timed]] = {}
    for impl in case.impls:
        prefix = f"{case.spec.name} {impl.name}"
        if case.sweep_value is not None:
            prefix += f" @{case.sweep_value}"
        timed[impl.name] = _time_impl(case, impl, sample, config, clock,
                                      (lambda d, p=prefix: tick(f"{p} {d}")) if tick else (lambda d: None))
    base = timed.get(config.baseline)
    rows = []
    for impl in case.impls:
        for i, one in enumerate(timed[impl.name]):
            rows.append(_row(case, impl, one, base[i] if base else None, config.baseline, config, peak_gflops))
    return rows


def run_bench(cases: Sequence[BenchCase], config: BenchConfig, *, peak_gflops: float | None = None,
              clock: Callable[[], float] = time.perf_counter,
              progress: ProgressCallback | None = None) -> tuple[BenchResult, ...]:
    """Time every case.

    Parameters
    ----------
    cases : sequence of BenchCase
        From :func:`plan_cases`.
    config : BenchConfig
    peak_gflops : float, optional
        Measured GEMM peak in the run's dtype (see :func:`cnncheck.machine.gemm_peak_gflops`).
    clock : callable() -> float
        Seconds; ``time.perf_counter`` unless a test injects one.
    progress : callable(done, total, label), optional
        Told before each measurement and once at the end (label ``""``).

    Returns
    -------
    tuple of BenchResult
    """
    check_plan(cases, config)
    total = sum(2 * len(case.impls) for case in cases)
    done = 0

    def tick(label: str) -> None:
        nonlocal done
        if progress is not None:
            progress(done, total, label)
        done += 1

    results: list[BenchResult] = []
    for case in cases:
        results.extend(bench_case(case, config, peak_gflops=peak_gflops, clock=clock, tick=tick))
    if progress is not None:
        progress(total, total, "")
    return tuple(results)
