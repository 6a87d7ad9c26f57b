"""Result objects of a gradient check: plain numbers and strings, no formatting.

Reporters render these; they never recompute a number.  ``to_dict`` gives
the JSON-ready form documented in the README.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


class Status:
    """The status strings a gradient check can end with."""

    PASS = "pass"
    FAIL = "fail"                    # analytic and numeric gradients disagree
    KINK = "kink"                    # disagreement sits on a nondifferentiable point
    ERROR = "error"                  # raised, wrong shape/dtype, NaN/inf
    NOT_IMPLEMENTED = "not-implemented"  # backward returned None
    MUTATED = "mutates-input"        # changed x, w, b, dout or its cache in place
    TIMEOUT = "timeout"              # isolated check ran past --timeout
    CRASHED = "crashed"              # isolated child died

    ALL = (PASS, FAIL, KINK, ERROR, NOT_IMPLEMENTED, MUTATED, TIMEOUT, CRASHED)
    #: Statuses that do not make a run fail.  A kink is a property of the
    #: input, not a wrong gradient, so it does not fail the run.
    OK = (PASS, KINK)


@dataclass(frozen=True)
class GradcheckResult:
    """The outcome for one gradient of one implementation of one layer.

    Attributes
    ----------
    layer, impl, gradient : str
        e.g. ``"conv"``, ``"fast"``, ``"dw"``.
    status : str
        One of :class:`Status`.
    rel_error : float or None
        The course notebook's ``rel_error``: max over compared elements of
        ``|n - a| / max(1e-8, |n| + |a|)``.  None when nothing was compared.
    abs_error : float or None
        Max over compared elements of ``|n - a|``.
    threshold : float
        The ``--max-error`` the relative error was held to.
    worst_index : tuple of int or None
        Index of the element with the largest relative error.
    analytic, numeric : float or None
        The two gradients at ``worst_index``.
    message : str
        Why the status is what it is, for anything but ``pass``.
    params : dict
        The layer parameters checked (shape, stride, ...), JSON-ready.
    dtype, mode : str
        ``float64``/``float32``; ``full``/``sample``/``directional``.
    eps : float
        Finite-difference step.
    compared : int
        How many elements (or directions) were compared.
    seconds : float
        Wall time of this implementation's check, shared by its gradients.
    traceback : str
        The full traceback when the implementation raised, else "".
    source : str
        Where the implementation came from: ``builtin``, a module path, an entry point.
    location : str
        ``file:line`` in a user implementation that the status points at
        (where it raised, or where its backward is defined); "" for built-ins.
    """

    layer: str
    impl: str
    gradient: str
    status: str
    rel_error: float | None = None
    abs_error: float | None = None
    threshold: float = 0.0
    worst_index: tuple | None = None
    analytic: float | None = None
    numeric: float | None = None
    message: str = ""
    params: dict = field(default_factory=dict)
    dtype: str = "float64"
    mode: str = "full"
    eps: float = 0.0
    compared: int = 0
    seconds: float = 0.0
    traceback: str = ""
    source: str = ""
    location: str = ""

    @property
    def passed(self) -> bool:
        """True when this status does not fail a run."""
        return self.status in Status.OK

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        data = asdict(self)
        data["worst_index"] = None if self.worst_index is None else list(self.worst_index)
        data["params"] = _jsonable(self.params)
        data["passed"] = self.passed
        return data


@dataclass(frozen=True)
class GradcheckReport:
    """Every result of one gradient-check run, with the settings it ran with.

    Iterating over a report yields its :class:`GradcheckResult` objects.  In a
    notebook, or printed with Rich, it shows as the same table the CLI prints.

    Attributes
    ----------
    results : tuple of GradcheckResult
    config : dict
        The check settings (``GradcheckConfig.to_dict()``): mode, samples,
        probes, eps, max_error, dtype, seed, auto_limit.
    allow_missing : bool
        ``not-implemented`` results do not fail the run.
    interrupted : bool
        The run was stopped (Ctrl-C) before every check finished.
    version : str
        cnncheck's version.
    """

    results: tuple
    config: dict = field(default_factory=dict)
    allow_missing: bool = False
    interrupted: bool = False
    version: str = ""

    @property
    def threshold(self) -> float:
        """The ``--max-error`` the run was held to."""
        return float(self.config.get("max_error", 0.0))

    def counts_as_passed(self, result: GradcheckResult) -> bool:
        """True when ``result`` does not fail this run (``--allow-missing`` considered)."""
        return result.passed or (self.allow_missing and result.status == Status.NOT_IMPLEMENTED)

    @property
    def passed(self) -> bool:
        """True when the run finished and no result fails it."""
        return not self.interrupted and all(self.counts_as_passed(r) for r in self.results)

    @property
    def failed_results(self) -> tuple:
        """The results that fail the run."""
        return tuple(r for r in self.results if not self.counts_as_passed(r))

    def counts(self) -> dict[str, int]:
        """Number of results per status, every status of :class:`Status` present."""
        counts = dict.fromkeys(Status.ALL, 0)
        for result in self.results:
            counts[result.status] = counts.get(result.status, 0) + 1
        return counts

    def __iter__(self):
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index):
        return self.results[index]

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON document (``cnncheck/schemas/gradcheck.schema.json``)."""
        return {
            "command": "gradcheck",
            "version": self.version,
            "schema_version": 1,
            "passed": self.passed,
            "threshold": self.threshold,
            "dtype": self.config.get("dtype", "float64"),
            "config": _jsonable(dict(self.config)),
            "allow_missing": self.allow_missing,
            "interrupted": self.interrupted,
            "summary": self.counts(),
            "results": [r.to_dict() for r in self.results],
        }

    def __str__(self) -> str:
        from cnncheck.report.gradcheck import render_text

        return render_text(self, "plain")

    def __repr__(self) -> str:
        from cnncheck.report.gradcheck import summary_line

        return f"<GradcheckReport {summary_line(self)}>"

    def __rich__(self):
        from cnncheck.report.gradcheck import rich_renderable

        return rich_renderable(self)

    def _repr_html_(self) -> str:
        from cnncheck.report.gradcheck import render_html

        return render_html(self)


def _jsonable(value):
    """Tuples to lists, recursively, for JSON."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# -- bench results ------------------------------------------------------------
# What ``cnncheck bench`` measured: one BenchResult per layer, direction and
# implementation (and sweep value), sweep fits, comparisons with a saved run,
# and the BenchReport that holds them with the machine facts and the options.

from cnncheck.stats import Stats  # noqa: E402  (bench section appended to this module)


class BenchStatus:
    """The status strings a bench row can end with."""

    OK = "ok"
    DIFFERS = "differs"              # outputs or gradients differ from the baseline beyond --max-diff
    SLOW = "slow"                    # not --min-speedup times faster than the baseline
    ERROR = "error"                  # raised, or returned the wrong kind or shape of thing
    NOT_IMPLEMENTED = "not-implemented"  # backward returned None

    ALL = (OK, DIFFERS, SLOW, ERROR, NOT_IMPLEMENTED)


@dataclass(frozen=True)
class BenchConfig:
    """The options a bench run was made with, as the JSON ``config`` records them.

    Attributes
    ----------
    layers : tuple of str
        Layer names as given (``("all",)`` for every layer).
    impls : tuple of str
        Implementations asked for with ``--impl``; empty means all.
    baseline : str
        Implementation speedups and differences are measured against.
    dtype : str
        ``float64`` or ``float32``.
    repeat : int
        Least number of timed runs per measurement.
    min_time : float
        Least total seconds of timed runs per measurement.
    max_seconds : float or None
        Budget in seconds for the timed runs of one measurement (warm-up
        excluded); slower measurements stop early and are marked ``limited``.
    seed : int
        Seed of the generator that draws the inputs.
    threads : int or None
        BLAS/OpenMP thread limit, None for the library default.
    max_diff : float
        Largest difference from the baseline that still agrees.
    min_speedup : float or None
        Least speedup over the baseline every other implementation must reach.
    max_regression : float or None
        Largest slowdown against ``compare`` allowed, as a fraction (0.2 is 20 %).
    compare : str or None
        The saved result compared against.
    sweep_param : str or None
        The parameter of ``--sweep``; ``sweep_values`` its values.
    overrides : dict
        Layer parameters given on the command line.
    modules : tuple of str
        User modules loaded with ``--module``.
    """

    layers: tuple = ("all",)
    impls: tuple = ()
    baseline: str = "naive"
    dtype: str = "float64"
    repeat: int = 5
    min_time: float = 0.5
    max_seconds: float | None = 5.0
    seed: int = 0
    threads: int | None = None
    max_diff: float = 1e-9
    min_speedup: float | None = None
    max_regression: float | None = None
    compare: str | None = None
    sweep_param: str | None = None
    sweep_values: tuple = ()
    overrides: dict = field(default_factory=dict)
    modules: tuple = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return _jsonable(asdict(self))


@dataclass(frozen=True)
class BenchResult:
    """Timing of one direction of one implementation of one layer.

    Attributes
    ----------
    layer, direction, impl : str
        e.g. ``"conv"``, ``"backward"``, ``"fast"``.
    backend : str
        What does the work (``"cython"``, ``"python loops"``, ...).
    params : dict
        The resolved layer parameters timed.
    dtype : str
    status : str
        One of :class:`BenchStatus`.
    message : str
        Why the status is what it is, for anything but ``ok``.
    stats : Stats or None
        Seconds per call over the timed runs; None when nothing was timed.
    loops : int
        Calls per timed run (fast calls are grouped so a run is well above
        the timer's resolution).
    limited : bool
        The measurement stopped at ``--max-seconds`` before ``--repeat``
        runs and ``--min-time`` were reached.
    baseline : str or None
        The implementation compared against; None when the layer has no
        baseline in this run, or for the baseline itself.
    is_baseline : bool
    speedup : float or None
        Baseline median / this median.
    flops, bytes : int or None
        Floating-point operations and bytes moved by one call (from the spec).
    gflops, peak_percent, gbps : float or None
        ``flops / median / 1e9``; that as a percentage of the measured GEMM
        peak; ``bytes / median / 1e9``.
    difference : float or None
        Largest difference over this direction's outputs against the
        baseline's: the course notebook's ``rel_error`` in float64 (see
        :func:`cnncheck.bench.difference` for float32).
    differences : dict of str to float
        The difference per output (``out``, or ``dx``, ``dw``, ``db``).
    max_diff : float
        The tolerance the difference was held to.
    sweep_value : int or None
        The value of the swept parameter, when the run is a sweep.
    """

    layer: str
    direction: str
    impl: str
    backend: str = ""
    params: dict = field(default_factory=dict)
    dtype: str = "float64"
    status: str = BenchStatus.OK
    message: str = ""
    stats: Stats | None = None
    loops: int = 1
    limited: bool = False
    baseline: str | None = None
    is_baseline: bool = False
    speedup: float | None = None
    flops: int | None = None
    bytes: int | None = None
    gflops: float | None = None
    peak_percent: float | None = None
    gbps: float | None = None
    difference: float | None = None
    differences: dict = field(default_factory=dict)
    max_diff: float = 0.0
    sweep_value: int | None = None

    @property
    def median(self) -> float | None:
        """Median seconds per call, or None when nothing was timed."""
        return None if self.stats is None else self.stats.median

    @property
    def passed(self) -> bool:
        """True when this row does not fail a run."""
        return self.status == BenchStatus.OK

    def key(self) -> tuple:
        """What identifies this row across runs: layer, direction, impl, sweep value."""
        return (self.layer, self.direction, self.impl, self.sweep_value)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: the fields with ``stats`` flattened into the row."""
        stats = self.stats.to_dict() if self.stats is not None else dict.fromkeys(
            ("rounds", "min", "max", "median", "mean", "q1", "q3", "iqr", "stddev", "noisy"))
        return {
            "layer": self.layer,
            "direction": self.direction,
            "impl": self.impl,
            "backend": self.backend,
            "params": _jsonable(self.params),
            "dtype": self.dtype,
            "sweep_value": self.sweep_value,
            "status": self.status,
            "passed": self.passed,
            "message": self.message,
            "median": stats["median"],
            "iqr": stats["iqr"],
            "q1": stats["q1"],
            "q3": stats["q3"],
            "min": stats["min"],
            "max": stats["max"],
            "mean": stats["mean"],
            "stddev": stats["stddev"],
            "runs": stats["rounds"],
            "loops": self.loops,
            "noisy": stats["noisy"],
            "limited": self.limited,
            "baseline": self.baseline,
            "is_baseline": self.is_baseline,
            "speedup": self.speedup,
            "flops": self.flops,
            "gflops": self.gflops,
            "peak_percent": self.peak_percent,
            "bytes": self.bytes,
            "gbps": self.gbps,
            "difference": self.difference,
            "differences": dict(self.differences),
            "max_diff": self.max_diff,
        }


@dataclass(frozen=True)
class SweepFit:
    """How the time of one implementation grows across a ``--sweep``.

    Attributes
    ----------
    layer, direction, impl : str
    param : str
        The swept parameter (``N``, ``H``, ``stride``, ...).
    values : tuple of int
        Its values, in the order run.
    work : tuple of float
        Work per call at each value: flops, bytes, or the value itself (see ``work_unit``).
    work_unit : str
        ``"flop"``, ``"byte"`` or ``"value"`` (when the layer counts neither).
    medians : tuple of float or None
        Median seconds at each value; None where the row did not time.
    exponent : float or None
        Least-squares slope of log(median) against log(work): time grows as
        work**exponent.  None with fewer than two distinct timed points.
    """

    layer: str
    direction: str
    impl: str
    param: str
    values: tuple
    work: tuple
    work_unit: str
    medians: tuple
    exponent: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return _jsonable(asdict(self))


@dataclass(frozen=True)
class BenchComparison:
    """One figure of this run held against the same figure of a saved run.

    Attributes
    ----------
    layer, direction, impl : str
    sweep_value : int or None
    metric : str
        ``"median"`` (seconds per call) or ``"speedup"`` (over the baseline).
    reference, current : float
        The saved figure and this run's.
    change : float
        How much worse this run is, as a fraction: ``current / reference - 1``
        for a median, ``reference / current - 1`` for a speedup.  Negative
        means better.
    max_regression : float
        The bound on ``change``.
    regressed : bool
        ``change > max_regression``.
    """

    layer: str
    direction: str
    impl: str
    sweep_value: int | None
    metric: str
    reference: float
    current: float
    change: float
    max_regression: float
    regressed: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class BenchReport:
    """Everything one ``cnncheck bench`` run produced.

    Attributes
    ----------
    machine : dict
        Machine facts (see :func:`cnncheck.machine.machine_facts`).
    config : BenchConfig
    results : tuple of BenchResult
    fits : tuple of SweepFit
        Empty unless the run was a sweep.
    comparisons : tuple of BenchComparison
        Empty unless the run was compared with a saved one.
    reference : dict or None
        About the saved run compared against: ``file``, ``machine`` (its
        machine facts), ``matched`` and ``unmatched`` row counts.
    version : str
        cnncheck's version.
    """

    machine: dict
    config: BenchConfig
    results: tuple
    fits: tuple = ()
    comparisons: tuple = ()
    reference: dict | None = None
    version: str = ""

    @property
    def passed(self) -> bool:
        """True when every row is ``ok`` and nothing regressed."""
        return all(r.passed for r in self.results) and not any(c.regressed for c in self.comparisons)

    @property
    def failed_results(self) -> tuple:
        """The rows that fail the run."""
        return tuple(r for r in self.results if not r.passed)

    @property
    def regressions(self) -> tuple:
        """The comparisons beyond ``max_regression``."""
        return tuple(c for c in self.comparisons if c.regressed)

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON document (``cnncheck/schemas/bench.schema.json``)."""
        return {
            "command": "bench",
            "version": self.version,
            "schema_version": 1,
            "machine": _jsonable(dict(self.machine)),
            "config": self.config.to_dict(),
            "results": [r.to_dict() for r in self.results],
            "fits": [f.to_dict() for f in self.fits],
            "comparisons": [c.to_dict() for c in self.comparisons],
            "reference": _jsonable(self.reference),
            "passed": self.passed,
        }
