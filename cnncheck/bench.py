"""The engine of ``cnncheck bench``: check, compare and time implementations, one row per direction.

For every implementation of a layer (the baseline first) and each
direction, forward then backward:

1. **check**: one call through :class:`cnncheck.calls.Caller`, so whatever
   the code under test does (raise, ``sys.exit``, return None, a list, a
   masked array, ints, NaN, the wrong shape) gets the status and the words
   ``gradcheck`` gives it (:mod:`cnncheck.boundary`).  The backward call
   uses the cache of this forward call;
2. **compare**: the output (forward) or the gradients (backward) against
   the baseline's, with :func:`difference` (the course notebook's
   ``rel_error``) held to ``max_diff``;
3. **time**: the session's ``time`` request runs
   :func:`cnncheck.runner.measure` next to the code under test (in the child
   process of a user module): a warm-up call, calls grouped so that one run
   lasts :data:`ROUND_TIME`, then runs until ``repeat`` runs and ``min_time``
   seconds, no new run once ``max_seconds`` of runs are spent (*limited*).
   When the checking call alone took :data:`REUSE_FRACTION` of
   ``max_seconds`` or more (the naive convolution at the notebook's sizes),
   a second call could not fit in the budget anyway: that call is the one
   timed run and the row is limited, so a slow implementation costs one
   call per direction rather than three.

A session that dies, hangs past its timeout or answers out of protocol
gives the row (and the implementation's remaining rows) ``crashed``,
``timeout`` or ``protocol-error``; the run goes on with the next
implementation.  Rows come out one by one (:func:`iter_bench`), so a
caller that is interrupted keeps those that finished.  Nothing here prints
or loads code: the caller hands over what :func:`cnncheck.loading.load`
returned and the (spec, implementation) pairs it selected.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnncheck import boundary
from cnncheck.boundary import Problem, ProtocolViolation, Refused
from cnncheck.calls import Caller
from cnncheck.errors import CnnCheckError
from cnncheck.gradient_check import rel_error
from cnncheck.results import BenchConfig, BenchReport, BenchResult, BenchStatus
from cnncheck.specs import Impl, LayerSpec
from cnncheck.stats import Stats
from cnncheck.status import Status, severity
from cnncheck.sweep import Sweep, apply_value, sweep_names

#: Seconds one timed run should last at least; fast calls are grouped to reach it.
ROUND_TIME = 1e-3

#: A checking call that took this fraction of ``max_seconds`` or more is the one timed run.
REUSE_FRACTION = 0.5

#: Default --max-diff per dtype: the largest :func:`difference` against the
#: baseline that still counts as agreement.
DEFAULT_MAX_DIFF = {"float64": 1e-9, "float32": 1e-2}

#: In float32 the denominator of :func:`difference` is at least this fraction
#: of the two arrays' scale (float64 uses the course notebook's 1e-8).
FLOAT32_FLOOR = 1e-3

FORWARD = "forward"
BACKWARD = "backward"
DIRECTIONS = (FORWARD, BACKWARD)

#: ``schema_version`` of the JSON document (``cnncheck/schemas/bench.schema.json``).
SCHEMA_VERSION = 2

#: Progress callback: ``progress(done, total, label)``, called before each row
#: (``done`` rows finished of ``total``) and once at the end with label "".
ProgressCallback = Callable[[int, int, str], None]


@dataclass(frozen=True)
class BenchRun(BenchReport):
    """A :class:`~cnncheck.results.BenchReport` that also says whether Ctrl-C cut the run short.

    Attributes
    ----------
    interrupted : bool
        The run stopped before every row was measured; ``results`` holds the
        rows that finished, and the run does not pass.
    """

    interrupted: bool = False

    @property
    def passed(self) -> bool:
        return super().passed and not self.interrupted

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON document, with ``interrupted``."""
        data = super().to_dict()
        data["schema_version"] = SCHEMA_VERSION
        data["interrupted"] = self.interrupted
        data["passed"] = self.passed
        return data


@dataclass(frozen=True)
class BenchCase:
    """One layer at one parameter set, with the implementations to time.

    Attributes
    ----------
    spec : LayerSpec
    impls : tuple of Impl
        The baseline (when it runs) first, then the others in the order selected.
    params : dict
        Resolved bench parameters.
    baseline : str or None
        Name of the implementation the others are compared with; None when
        it does not run for this layer.
    sweep_value : int or None
    """

    spec: LayerSpec
    impls: tuple
    params: dict
    baseline: str | None = None
    sweep_value: int | None = None


def directions(spec: LayerSpec) -> tuple:
    """The directions timed for ``spec``: forward and backward, or forward alone for a loss."""
    return (FORWARD,) if spec.protocol == "loss" else DIRECTIONS


# -- planning -------------------------------------------------------------------------------------
def baseline_for(spec: LayerSpec, baseline: str | None) -> str | None:
    """The baseline's name for ``spec``: ``baseline`` when given, else the spec's reference."""
    return baseline or spec.reference


def add_baselines(registry, pairs: Sequence[tuple], baseline: str | None = None) -> list[tuple]:
    """``pairs`` with each layer's baseline added where it is registered and not already selected.

    Parameters
    ----------
    registry : Registry
    pairs : sequence of (LayerSpec, Impl)
    baseline : str, optional
        ``--baseline``; None: each layer's reference.

    Returns
    -------
    list of (LayerSpec, Impl)
        The added baselines go first within their layer.  A layer whose
        selected implementations are all missing (a user module that does
        not define it) gets none: there is nothing to compare.
    """
    out: list = []
    specs = {spec.name: spec for spec, _ in pairs}
    for spec in specs.values():
        chosen = [impl for s, impl in pairs if s.name == spec.name]
        name = baseline_for(spec, baseline)
        runnable = any(not impl.missing for impl in chosen)
        if name and runnable and not any(impl.name == name for impl in chosen):
            extra = next((i for i in registry.impls(spec.name) if i.name == name), None)
            if extra is not None:
                chosen.insert(0, extra)
        out.extend((spec, impl) for impl in chosen)
    return out


def check_baseline(registry, specs: Iterable[LayerSpec], baseline: str) -> None:
    """Refuse a ``--baseline`` that none of ``specs`` has.

    Raises
    ------
    CnnCheckError
        Naming what the layers have, or the extra to install (``torch``).
    """
    specs = list(specs)
    known = sorted({impl.name for spec in specs for impl in registry.impls(spec.name)})
    if baseline in known:
        return
    for (layer, name), extra in registry.unavailable.items():
        if name == baseline and any(spec.name == layer for spec in specs):
            raise CnnCheckError(f"--baseline {baseline} needs {extra}")
    raise CnnCheckError(f"unknown --baseline {baseline!r}; the selected layers have: {', '.join(known)}")


def plan_cases(pairs: Iterable[tuple], *, overrides: Mapping[str, Any] | None = None,
               baseline: str | None = None, sweep: Sweep | None = None) -> list[BenchCase]:
    """Group (spec, impl) pairs by layer and resolve each layer's bench parameters.

    Parameters
    ----------
    pairs : iterable of (LayerSpec, Impl)
    overrides : mapping, optional
        Layer parameters given (each layer takes those it has).
    baseline : str, optional
        ``--baseline``; None: each layer's reference.
    sweep : Sweep, optional
        One case per layer and sweep value.

    Returns
    -------
    list of BenchCase

    Raises
    ------
    CnnCheckError
        Invalid parameters, or a sweep that does not apply to a layer.
    """
    layers: dict[str, tuple] = {}
    for spec, impl in pairs:
        layers.setdefault(spec.name, (spec, []))[1].append(impl)
    cases = []
    for spec, impls in layers.values():
        name = baseline_for(spec, baseline)
        runs = name if any(impl.name == name for impl in impls) else None
        ordered = tuple(sorted(impls, key=lambda impl: impl.name != runs))
        params = spec.resolve(overrides, purpose="bench")
        if sweep is None:
            cases.append(BenchCase(spec, ordered, params, runs))
            continue
        if sweep.param not in sweep_names(spec):
            raise CnnCheckError(f"--sweep {sweep.param} does not apply to {spec.name}; it takes "
                                f"{', '.join(sweep_names(spec))}")
        for value in sweep.values:
            cases.append(BenchCase(spec, ordered, apply_value(spec, params, sweep.param, value), runs, value))
    return cases


def compared(cases: Sequence[BenchCase]) -> bool:
    """True when some case times its baseline next to another implementation."""
    return any(case.baseline is not None and len(case.impls) > 1 for case in cases)


def check_plan(cases: Sequence[BenchCase], config: BenchConfig, *, max_diff_given: bool = False) -> None:
    """Refuse a plan that cannot do what the config asks.

    Raises
    ------
    CnnCheckError
        Nothing to run; ``min_speedup`` (or a ``max_diff`` given) without
        any layer timing its baseline next to another implementation.
    """
    if not cases or not any(case.impls for case in cases):
        raise CnnCheckError("nothing to benchmark: no implementation of the selected layers was chosen")
    if compared(cases):
        return
    what = config.baseline or "reference"
    for option, given in (("--min-speedup", config.min_speedup is not None), ("--max-diff", max_diff_given)):
        if given:
            raise CnnCheckError(f"{option} needs a baseline timed next to another implementation of the same "
                                f"layer, and no layer has its {what} in this run; add it to --impl")


def planned_keys(cases: Sequence[BenchCase], dtype: str) -> list[dict]:
    """What identifies each row the plan will produce, in the JSON form ``--compare`` matches on."""
    keys = []
    for case in cases:
        params = dict(case.params)
        for impl in case.impls:
            for direction in directions(case.spec):
                keys.append({"layer": case.spec.name, "direction": direction, "impl": impl.name,
                             "sweep_value": case.sweep_value, "params": params, "dtype": dtype})
    return keys


# -- agreement ---------------------------------------------------------------------------------------
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


# -- measuring one implementation ---------------------------------------------------------------------
@dataclass
class _Measured:
    """One direction of one implementation before it becomes a row."""

    direction: str
    status: str = BenchStatus.OK
    message: str = ""
    warnings: list = field(default_factory=list)
    outputs: dict | None = None     # "out" or "dx", "dw"...: float64 arrays for the agreement check
    times: tuple = ()
    loops: int = 1
    limited: bool = False

    @property
    def ok(self) -> bool:
        return self.status == BenchStatus.OK

    def fail(self, status, message: str) -> None:
        self.status, self.message = str(status), message


class _Bencher:
    """Checks and times one implementation of one case, direction by direction."""

    def __init__(self, loaded, case: BenchCase, impl: Impl, sample, config: BenchConfig) -> None:
        self.case = case
        self.impl = impl
        self.sample = sample
        self.config = config
        self.session = loaded.session(impl) if not impl.missing else None
        self.problems = list(loaded.problems.get(impl.source, ()))
        self.caller = Caller(self.session, case.spec, impl, config.dtype) if self.session is not None else None
        self.forward = None
        self.handles: list = []
        self.ended: _Measured | None = None     # what stopped the implementation: later rows inherit it

    def measure(self, direction: str) -> _Measured:
        from cnncheck.session import InternalError, SessionFailure

        m = _Measured(direction)
        if self.impl.missing:
            m.fail(Status.NOT_IMPLEMENTED, self.impl.missing)
            return m
        if self.problems:
            worst = max(self.problems, key=lambda p: severity(p.status))
            m.fail(worst.status, worst.message)
            return m
        if self.ended is not None:
            missing = self.ended.status == Status.NOT_IMPLEMENTED
            m.fail(self.ended.status, "not timed: the forward pass " + ("is not implemented" if missing else "failed"))
            return m
        self.session.begin()
        try:
            if direction == FORWARD:
                self._forward(m)
            else:
                self._backward(m)
        except SessionFailure as failure:
            m.fail(failure.status, failure.message)
            self.handles = []     # the child and what it held are gone
        except ProtocolViolation as exc:
            self.session.close()
            self.handles = []
            m.fail(Status.PROTOCOL_ERROR, f"the child answered out of protocol ({exc})")
        except InternalError as exc:
            self.session.close()
            self.handles = []
            m.fail(Status.INTERNAL_ERROR, f"internal error: {exc}")
        if m.ok and self.caller.flags:
            worst = max(self.caller.flags, key=lambda p: severity(p.status))
            m.fail(worst.status, worst.message)
        if not m.ok and self.ended is None:
            self.ended = m
        return m

    def close(self) -> None:
        """Let the session forget the calls kept for the backward pass."""
        from cnncheck.session import SessionFailure

        if self.handles and self.ended is None:
            try:
                self.caller.drop(*self.handles)
            except (SessionFailure, ProtocolViolation):
                pass   # the next implementation of this session finds out again
        self.handles = []

    # -- the two directions ---------------------------------------------------------------------
    def _forward(self, m: _Measured) -> None:
        start = time.perf_counter()
        try:
            forward = self.caller.forward(self.sample, self.case.params)
        except Refused as refused:
            m.fail(refused.problem.status, refused.problem.message)
            return
        first = time.perf_counter() - start
        self.forward = forward
        self.handles.append(forward.handle)
        m.warnings.extend(forward.warnings)
        m.outputs = {"out": forward.out.astype(np.float64)}
        self._time(m, self.impl.forward, self.caller.arguments(self.sample), first, "forward")

    def _backward(self, m: _Measured) -> None:
        dout = self.sample.dout
        start = time.perf_counter()
        try:
            backward = self.caller.backward(self.forward, dout, self.sample)
        except Refused as refused:
            m.fail(refused.problem.status, refused.problem.message)
            return
        first = time.perf_counter() - start
        self.handles.append(backward.handle)
        problems = [v for v in backward.grads.values() if isinstance(v, Problem)]
        if problems:
            worst = max(problems, key=lambda p: severity(p.status))
            m.fail(worst.status, worst.message)
            return
        m.outputs = {}
        for name in self.case.spec.grads:
            grad, warnings = backward.grads[name]
            m.warnings.extend(warnings)
            m.outputs["d" + name] = grad.astype(np.float64)
        args = [{"value": dout}, {"ref": [self.forward.handle, "result", 1]}]
        self._time(m, self.impl.backward, args, first, "backward")

    def _time(self, m: _Measured, fn: str, args: list, first: float, what: str) -> None:
        """Time ``fn`` on ``args`` with the session's ``time`` request, or reuse a slow checking call."""
        config = self.config
        if config.max_seconds is not None and first >= REUSE_FRACTION * config.max_seconds:
            m.times, m.loops = (first,), 1
            m.limited = config.repeat > 1 or first < config.min_time
            return
        response = self.session.request({"op": "time", "fn": fn, "args": args, "repeat": config.repeat,
                                         "min_time": config.min_time, "max_seconds": config.max_seconds,
                                         "round_time": ROUND_TIME})
        if not isinstance(response, dict):
            raise ProtocolViolation("the timing answer is not a dict")
        for problem in boundary.refusals(response.get("refused", [])) + \
                boundary.replacements(response.get("replaced", [])):
            if problem not in self.caller.flags:
                self.caller.flags.append(problem)
        if response.get("raised") is not None:
            problem = boundary.raised(f"{what} (while timing)", response["raised"])
            m.fail(problem.status, problem.message)
            return
        times = boundary.field(response, "times", list)
        loops = boundary.field(response, "loops", int)
        limited = boundary.field(response, "limited", bool)
        if not times or loops < 1 or not all(isinstance(t, float) and math.isfinite(t) and t >= 0 for t in times):
            raise ProtocolViolation("the timing answer is malformed")
        m.times, m.loops, m.limited = tuple(times), loops, limited


# -- rows ---------------------------------------------------------------------------------------------
def _warning_text(warnings: list) -> str:
    messages = list(dict.fromkeys(w.message for w in warnings))
    return "warning: " + "; ".join(messages) if messages else ""


def _row(case: BenchCase, impl: Impl, m: _Measured, base: _Measured | None, config: BenchConfig,
         peak_gflops: float | None) -> BenchResult:
    """One measurement as a result row, compared with the baseline's."""
    spec, params = case.spec, case.params
    index = DIRECTIONS.index(m.direction)
    flops = spec.flops(params)[index] if spec.flops is not None else None
    moved = spec.bytes(params, np.dtype(config.dtype).itemsize)[index] if spec.bytes is not None else None
    is_baseline = impl.name == case.baseline
    fields: dict[str, Any] = dict(
        layer=spec.name, direction=m.direction, impl=impl.name, backend=impl.backend, params=dict(params),
        dtype=config.dtype, status=str(m.status), message=m.message, max_diff=config.max_diff,
        sweep_value=case.sweep_value, is_baseline=is_baseline,
        flops=None if flops is None else int(flops), bytes=None if moved is None else int(moved))
    if not m.ok or not m.times:
        return BenchResult(**fields)
    stats = Stats.from_times(m.times)
    median = stats.median
    fields.update(stats=stats, loops=m.loops, limited=m.limited)
    if median > 0 and flops is not None:
        fields["gflops"] = flops / median / 1e9
        if peak_gflops:
            fields["peak_percent"] = 100.0 * fields["gflops"] / peak_gflops
    if median > 0 and moved is not None:
        fields["gbps"] = moved / median / 1e9
    problems = []
    status = BenchStatus.OK
    if base is not None and not is_baseline and base.ok and base.times:
        fields["baseline"] = case.baseline
        base_median = Stats.from_times(base.times).median
        if median > 0:
            fields["speedup"] = base_median / median
        diffs = {name: difference(m.outputs[name], base.outputs[name], config.dtype) for name in base.outputs}
        worst = max(diffs, key=lambda k: math.inf if math.isnan(diffs[k]) else diffs[k]) if diffs else None
        largest = diffs[worst] if diffs else 0.0
        fields["differences"] = diffs
        fields["difference"] = largest
        if not largest <= config.max_diff:  # NaN differs too
            problems.append(f"differs from {case.baseline}: difference {largest:.3g} in {worst} "
                            f"is above --max-diff {config.max_diff:g}")
            status = BenchStatus.DIFFERS
        speedup = fields.get("speedup")
        if config.min_speedup is not None and speedup is not None and speedup < config.min_speedup:
            problems.append(f"only {speedup:.3g}x faster than {case.baseline}, "
                            f"below --min-speedup {config.min_speedup:g}")
            if status == BenchStatus.OK:
                status = BenchStatus.SLOW
    warnings = _warning_text(m.warnings)
    fields["status"] = status
    fields["message"] = "; ".join(problems + ([warnings] if warnings else []))
    return BenchResult(**fields)


# -- running ------------------------------------------------------------------------------------------
def _label(case: BenchCase, impl: Impl, direction: str) -> str:
    suffix = "" if case.sweep_value is None else f" @{case.sweep_value}"
    return f"{case.spec.name} {impl.name} {direction}{suffix}"


def _import_requirements(cases: Sequence[BenchCase]) -> None:
    """Import the libraries built-in implementations need (PyTorch) now, so no checking call pays for it.

    A checking call slow enough is kept as the one timed run; the import of
    a large library inside the first call must not be what it times.
    """
    import importlib

    for case in cases:
        names = {impl.name for impl in case.impls if impl.builtin}
        for builtin in case.spec.impls:
            if builtin.name in names and builtin.requires:
                importlib.import_module(builtin.requires)


def iter_bench(loaded, cases: Sequence[BenchCase], config: BenchConfig, *, peak_gflops: float | None = None,
               progress: ProgressCallback | None = None) -> Iterator[BenchResult]:
    """Check, compare and time every case; yield each row as soon as it is measured.

    Parameters
    ----------
    loaded : cnncheck.loading.Loaded
        Where each implementation runs (``loaded.session(impl)``) and the
        findings about user modules (``loaded.problems``).
    cases : sequence of BenchCase
        From :func:`plan_cases`.
    config : BenchConfig
        ``repeat``, ``min_time``, ``max_seconds``, ``seed``, ``dtype``,
        ``max_diff`` and ``min_speedup`` are used.
    peak_gflops : float, optional
        Measured GEMM peak in the run's dtype, for ``peak_percent``.
    progress : callable(done, total, label), optional
        Told before each row and once at the end (label ``""``).

    Yields
    ------
    BenchResult
        Forward then backward for each implementation, in ``case.impls`` order.
    """
    _import_requirements(cases)
    total = sum(len(directions(case.spec)) * len(case.impls) for case in cases)
    done = 0
    for case in cases:
        sample = case.spec.make_sample(case.params, np.random.default_rng(config.seed), np.dtype(config.dtype))
        base: dict = {}
        for impl in case.impls:
            bencher = _Bencher(loaded, case, impl, sample, config)
            for direction in directions(case.spec):
                if progress is not None:
                    progress(done, total, _label(case, impl, direction))
                m = bencher.measure(direction)
                if impl.name == case.baseline:
                    base[direction] = m
                done += 1
                yield _row(case, impl, m, base.get(direction), config, peak_gflops)
            # Not in a ``finally``: after Ctrl-C a child may still be busy with the interrupted
            # request, and the caller closes the sessions anyway.
            bencher.close()
    if progress is not None:
        progress(total, total, "")


def run_bench(loaded, cases: Sequence[BenchCase], config: BenchConfig, **kwargs) -> tuple[BenchResult, ...]:
    """Every row of :func:`iter_bench` (same arguments), as a tuple, after :func:`check_plan`."""
    check_plan(cases, config)
    return tuple(iter_bench(loaded, cases, config, **kwargs))


def failed_module_rows(failed: Iterable, registry, config: BenchConfig) -> list[BenchResult]:
    """Rows for user modules that did not load in a way that is theirs to report (imported cnncheck...).

    ``failed`` holds records with ``layer``, ``impl``, ``status``, ``message``
    and ``source`` (:attr:`cnncheck.api.Plan.failed`); each gets a row per
    direction of its layer, at the layer's bench parameters.
    """
    rows = []
    for record in failed:
        spec = registry.layer(record.layer)
        params = spec.resolve(config.overrides, purpose="bench")
        for direction in directions(spec):
            rows.append(BenchResult(layer=record.layer, direction=direction, impl=record.impl, backend="user",
                                    params=dict(params), dtype=config.dtype, status=str(record.status),
                                    message=record.message, max_diff=config.max_diff))
    return rows
