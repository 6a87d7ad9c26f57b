"""Result objects: plain records of numbers and strings, no formatting.

Reporters (:mod:`cnncheck.report`) render these and never recompute a
number; ``to_dict`` gives the JSON-ready form described by the schemas in
``cnncheck/schemas``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from cnncheck.stats import Stats
from cnncheck.status import STATUSES, Status, severity

#: Kinds of check, in the order a report names them.
KINDS = ("integrity", "call", "forward", "reference", "gradient", "subgradient", "protocol")


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check of one implementation of one layer.

    Attributes
    ----------
    layer, impl : str
    kind : str
        One of :data:`KINDS`: ``integrity`` (what the code may not do: import
        the reference, read protected files, replace library functions,
        break the child protocol, not load), ``call`` (it raised or returned
        the wrong thing, or a warning about what it returned), ``forward``
        (the forward pass ignores an input, is not deterministic, or has
        only float32 precision), ``reference`` (output or gradient against
        the reference implementation), ``gradient`` (analytic against
        centred differences), ``subgradient`` (gradients at kinks: ties,
        zeros), ``protocol`` (how a network calls it: twice, with two
        caches, non-contiguous inputs; writes into its arguments).
    subject : str
        What the check is about: ``out`` (the forward pass, or the whole
        implementation) or a gradient (``dx``, ``dw``...).
    status : Status
    geometry : str
        Label of the battery's geometry (``notebook``, ``pad0``, ``custom``)
        or "" for a check of the whole implementation.
    where : str
        The geometry in words (``x (2, 4, 5, 7), w (3, 4, 3, 2), stride 1, pad 0``).
    message : str
        Why the status is what it is.
    finding : str
        A short name for protocol findings and warnings (``repeat-backward``, ``mutates-dout``).
    params : dict
        The layer parameters of the geometry.
    dtype, mode : str
        ``float64``/``float32``; ``full``/``sample``/``directional``/``auto`` for gradient checks.
    eps, threshold : float
        Step of the centred differences; the tolerance the error was held to.
    rel_error, abs_error : float or None
        For gradient checks, the course notebook's relative error (floor raised,
        see :mod:`cnncheck.numeric`) and the largest absolute error; for
        reference checks, the largest difference over the reference's largest
        magnitude, and the largest absolute difference.
    worst_index : tuple of int or None
        The element the message names.
    got, expected : float or None
        The implementation's value and the numerical (or reference) one there.
    compared : int
        Elements or directions compared.
    seconds : float
        Wall time of the implementation's whole battery.
    location : str
        ``file:line`` in user code the status points at.
    source : str
        ``builtin``, a module path, an entry point.
    traceback : str
        The traceback when the code under test raised.
    """

    layer: str
    impl: str
    kind: str
    subject: str
    status: Status
    geometry: str = ""
    where: str = ""
    message: str = ""
    finding: str = ""
    params: dict = field(default_factory=dict)
    dtype: str = "float64"
    mode: str = ""
    eps: float = 0.0
    threshold: float = 0.0
    rel_error: float | None = None
    abs_error: float | None = None
    worst_index: tuple | None = None
    got: float | None = None
    expected: float | None = None
    compared: int = 0
    seconds: float = 0.0
    location: str = ""
    source: str = ""
    traceback: str = ""

    def fails(self, *, strict: bool = False, allow_missing: bool = False) -> bool:
        """True when this result fails a run with these settings."""
        if self.status == Status.WARNING:
            return strict
        if self.status == Status.NOT_IMPLEMENTED and allow_missing:
            return False
        return Status(self.status).fails

    @property
    def passed(self) -> bool:
        return not self.fails()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists, the status its text)."""
        data = asdict(self)
        data["status"] = str(self.status)
        data["worst_index"] = None if self.worst_index is None else list(self.worst_index)
        data["params"] = _jsonable(self.params)
        return data


@dataclass(frozen=True)
class Row:
    """One line of a report's table: one subject of one implementation, over the whole battery.

    Attributes
    ----------
    layer, impl, subject : str
    status : Status
        The worst status among the row's results (warnings count only with ``--strict``).
    error : float or None
        The worst gradient error (``out``: the worst difference from the reference).
    failing : CheckResult or None
        The first result that fails the row, in battery order.
    results : tuple of CheckResult
    """

    layer: str
    impl: str
    subject: str
    status: Status
    error: float | None
    failing: CheckResult | None
    results: tuple

    @property
    def check(self) -> str:
        """The failing check in a few words (``gradient at pad0``), or how much passed."""
        if self.failing is not None:
            r = self.failing
            name = r.finding or r.kind
            return f"{name} at {r.geometry}" if r.geometry else name
        geometries = {r.geometry for r in self.results if r.geometry}
        return f"{len(geometries)} geometr{'y' if len(geometries) == 1 else 'ies'}" if geometries else ""


@dataclass(frozen=True)
class GradcheckReport:
    """Every result of one gradient-check run, with the settings it ran with.

    Iterating over a report yields its :class:`CheckResult` objects.

    Attributes
    ----------
    results : tuple of CheckResult
    config : dict
        The check settings (``GradcheckConfig.to_dict()``).
    allow_missing : bool
        ``not-implemented`` results do not fail the run.
    strict : bool
        Warnings fail the run.
    interrupted : bool
        The run was stopped (Ctrl-C) before every check finished.
    version : str
    absent : tuple of str
        Layers left out of ``all`` because the user's module defines none of their functions.
    """

    results: tuple
    config: dict = field(default_factory=dict)
    allow_missing: bool = False
    strict: bool = False
    interrupted: bool = False
    version: str = ""
    absent: tuple = ()

    def fails(self, result: CheckResult) -> bool:
        return result.fails(strict=self.strict, allow_missing=self.allow_missing)

    @property
    def passed(self) -> bool:
        """True when the run finished and no result fails it."""
        return not self.interrupted and not any(self.fails(r) for r in self.results)

    @property
    def failed_results(self) -> tuple:
        return tuple(r for r in self.results if self.fails(r))

    @property
    def warnings(self) -> tuple:
        return tuple(r for r in self.results if r.status == Status.WARNING)

    def implementations(self) -> list:
        """(layer, impl) pairs in the order they were checked."""
        return list(dict.fromkeys((r.layer, r.impl) for r in self.results))

    def rows(self) -> list:
        """The table: one :class:`Row` per layer, implementation and subject, in order."""
        grouped: dict = {}
        for r in self.results:
            grouped.setdefault((r.layer, r.impl, r.subject), []).append(r)
        subjects_of: dict = {}
        for layer, impl, subject in grouped:
            subjects_of.setdefault((layer, impl), []).append(subject)
        rows = []
        for layer, impl in self.implementations():
            subjects = sorted(subjects_of[(layer, impl)], key=lambda s: s != "out")
            for subject in subjects:
                results = grouped[(layer, impl, subject)]
                failing = [r for r in results if self.fails(r)]
                shown = failing or [r for r in results if r.status == Status.WARNING] or results
                status = max((Status(r.status) for r in shown), key=severity)
                kind = "reference" if subject == "out" else "gradient"
                errors = [r.rel_error for r in results if r.kind == kind and r.rel_error is not None]
                rows.append(Row(layer, impl, subject, status, max(errors) if errors else None,
                                failing[0] if failing else None, tuple(results)))
        return rows

    def verdicts(self) -> dict:
        """``{(layer, impl): Row}``: the first failing row of each implementation, else its first row."""
        verdicts: dict = {}
        for row in self.rows():
            key = (row.layer, row.impl)
            if key not in verdicts or (verdicts[key].failing is None and row.failing is not None):
                verdicts[key] = row
        return verdicts

    def counts(self) -> dict:
        """Number of results per status, every status present."""
        counts = {str(s): 0 for s in STATUSES}
        for result in self.results:
            counts[str(result.status)] += 1
        return counts

    def __iter__(self):
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index):
        return self.results[index]

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON document (``cnncheck/schemas/gradcheck.schema.json``)."""
        implementations = []
        for (layer, impl), row in self.verdicts().items():
            failing = row.failing
            implementations.append({
                "layer": layer, "impl": impl, "passed": failing is None,
                "status": str(failing.status if failing else row.status),
                "check": row.check if failing else "",
                "message": failing.message if failing else "",
            })
        return {
            "command": "gradcheck",
            "version": self.version,
            "schema_version": 2,
            "passed": self.passed,
            "dtype": self.config.get("dtype", "float64"),
            "config": _jsonable(dict(self.config)),
            "allow_missing": self.allow_missing,
            "strict": self.strict,
            "interrupted": self.interrupted,
            "absent": list(self.absent),
            "summary": self.counts(),
            "implementations": implementations,
            "rows": [{"layer": r.layer, "impl": r.impl, "subject": r.subject, "status": str(r.status),
                      "error": r.error, "check": r.check} for r in self.rows()],
            "results": [r.to_dict() for r in self.results],
        }


def _jsonable(value):
    """Tuples to lists, recursively, for JSON."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Status):
        return str(value)
    return value


# -- bench results ------------------------------------------------------------
# What ``cnncheck bench`` measured: one BenchResult per layer, direction and
# implementation (and sweep value), sweep fits, comparisons with a saved run,
# and the BenchReport that holds them with the machine facts and the options.

class BenchStatus:
    """The status strings a bench row can end with: ``ok``, ``slow``, or a :class:`Status` of the boundary."""

    OK = "ok"
    DIFFERS = Status.DIFFERS.value   # outputs or gradients differ from the baseline beyond --max-diff
    SLOW = "slow"                    # not --min-speedup times faster than the baseline
    ERROR = Status.ERROR.value       # raised, or returned the wrong kind or shape of thing

    ALL = (OK, SLOW, *(s.value for s in Status if s not in (Status.PASS, Status.FAIL, Status.WARNING)))


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
