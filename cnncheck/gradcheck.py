"""The gradient-check engine: a battery of checks per layer and implementation.

For one spec and one implementation (and the session it runs in), and for
each geometry of the spec's battery (the course notebook's first), the
engine draws inputs and an upstream gradient ``dout`` from a seeded
generator, calls forward and backward through a
:class:`~cnncheck.calls.Caller`, and records a
:class:`~cnncheck.results.CheckResult` for each check:

``call``
    what forward and backward raised or returned, judged by
    :mod:`cnncheck.boundary` (wrong shape, dtype, NaN, None...; warnings for
    float64 output from float32 input, ndarray subclasses, conversions);
``reference``
    forward output and every gradient against the spec's reference
    implementation on the same inputs (not for the reference itself);
``gradient``
    every gradient against centred differences of the same implementation's
    forward pass (:mod:`cnncheck.numeric`): every element when the inputs
    with gradients hold at most ``auto_limit`` elements, else random
    directions plus sampled elements;
``forward``
    an output that does not change when an input is perturbed (the forward
    pass ignores it) or that has only float32 precision in a float64 check;
``subgradient``
    gradients at kinks (exact ties in max-pool windows, relu at 0);
``protocol``
    on the first geometry, how a network calls layers: forward twice gives
    the same output; backward twice on one cache gives the same gradients
    and leaves the first result alone; two forwards then the first cache's
    backward gives the first call's gradients; the caller's parameter dict
    is left alone; Fortran-ordered, transposed and strided inputs give the
    same results; and warnings for writes into the inputs, ``dout`` or the
    cache;
``integrity``
    what a child's guard saw (imports of cnncheck or of forbidden modules,
    reads of protected files, replaced library functions) and answers out
    of protocol.

Every verdict is made here, in cnncheck's process, from arrays the session
returned: the code under test only ever computes forward and backward
passes at inputs chosen here.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
import types
import zlib
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from cnncheck import numeric
from cnncheck.boundary import Problem, ProtocolViolation, Refused
from cnncheck.calls import Caller
from cnncheck.errors import CnnCheckError
from cnncheck.results import CheckResult, _jsonable
from cnncheck.specs import Geometry, Impl, LayerSpec, Sample
from cnncheck.status import Status

MODES = ("auto", "full", "sample", "directional")
DTYPES = ("float64", "float32")
DEFAULT_TOLERANCES = numeric.DEFAULT_TOLERANCES

#: ``auto`` compares every element when the inputs with gradients hold at most this many.
AUTO_FULL_LIMIT = 4096
DEFAULT_SAMPLES = 50
DEFAULT_PROBES = 10

#: Generated inputs stay this many steps away from kinks.
MARGIN_STEPS = 10.0

#: Largest difference from the reference, as a fraction of the reference's largest magnitude, per dtype.
#: Measured between correct implementations that sum in different orders (loops, im2col, FFT, torch):
#: below 1e-14 in float64 and 2e-6 in float32 at the battery's geometries.
REFERENCE_TOLERANCE = {"float64": 1e-9, "float32": 1e-4}

#: Two calls that must agree (same input twice, another memory layout) may differ by this fraction.
REPEAT_TOLERANCE = {"float64": 1e-12, "float32": 1e-5}

#: Memory layouts the protocol check hands inputs in.
LAYOUTS = {"F": "Fortran-ordered", "T": "transposed-storage", "S": "strided (every other element)"}


@dataclass(frozen=True)
class GradcheckConfig:
    """How to check.

    Attributes
    ----------
    mode : {"auto", "full", "sample", "directional"}
        ``auto``: every element at the battery's first geometry (up to
        ``auto_limit`` elements), random directions and sampled elements
        (the array's corners among them) at the others.
    samples, probes : int
        Elements per gradient in ``sample`` mode (and ``auto`` above the
        limit); random directions per gradient in ``directional`` mode.
    eps, max_error : float or None
        Step and threshold; None for the dtype's defaults.
    dtype : {"float64", "float32"}
    seed : int
        Seed of everything drawn (inputs, dout, samples, directions).
    auto_limit : int
    reference : bool
        Compare with the layer's reference implementation.
    protocol : bool
        Run the call-protocol checks and the subgradient checks.
    """

    mode: str = "auto"
    samples: int = DEFAULT_SAMPLES
    probes: int = DEFAULT_PROBES
    eps: float | None = None
    max_error: float | None = None
    dtype: str = "float64"
    seed: int = 0
    auto_limit: int = AUTO_FULL_LIMIT
    reference: bool = True
    protocol: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise CnnCheckError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if str(self.dtype) not in DTYPES:
            raise CnnCheckError(f"dtype must be float64 or float32, got {self.dtype!r}")
        object.__setattr__(self, "dtype", str(self.dtype))
        for name in ("samples", "probes", "auto_limit"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise CnnCheckError(f"{name} must be a positive integer, got {value!r}")
        for name in ("eps", "max_error"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
                                          and math.isfinite(value) and value > 0):
                raise CnnCheckError(f"{name} must be a positive number, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise CnnCheckError(f"seed must be a non-negative integer, got {self.seed!r}")

    @property
    def step(self) -> float:
        return float(self.eps) if self.eps is not None else DEFAULT_TOLERANCES[self.dtype][0]

    @property
    def threshold(self) -> float:
        return float(self.max_error) if self.max_error is not None else DEFAULT_TOLERANCES[self.dtype][1]

    @property
    def margin(self) -> float:
        return MARGIN_STEPS * self.step

    def resolve_mode(self, n_elements: int, first: bool = True) -> str:
        """The mode run at a geometry: ``auto`` is ``full`` at the first geometry of the battery when the
        inputs with gradients hold at most ``auto_limit`` elements, else ``auto`` (random directions and
        sampled elements; the reference comparison checks every element at the other geometries)."""
        if self.mode != "auto":
            return self.mode
        return "full" if first and n_elements <= self.auto_limit else "auto"

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "samples": int(self.samples), "probes": int(self.probes), "eps": self.step,
                "max_error": self.threshold, "dtype": self.dtype, "seed": int(self.seed),
                "auto_limit": int(self.auto_limit), "reference": self.reference, "protocol": self.protocol,
                "reference_tolerance": REFERENCE_TOLERANCE[self.dtype]}


# -- the reference -----------------------------------------------------------------------------------
class References:
    """The reference implementation's outputs and gradients, computed once per layer, geometry and inputs.

    Parameters
    ----------
    registry : Registry
    session : LocalSession
        Runs the built-in reference implementations.
    """

    def __init__(self, registry, session) -> None:
        import threading

        self.registry = registry
        self.session = session
        self.cache: dict = {}
        self.lock = threading.Lock()

    def get(self, spec: LayerSpec, key: tuple, sample: Sample, params, dtype) -> dict | None:
        """``{"out": array, "dx": array, ...}`` of the reference on ``sample``; None when there is none."""
        impl = self.registry.reference(spec)
        if impl is None:
            return None
        with self.lock:
            if key not in self.cache:
                caller = Caller(self.session, spec, impl, dtype)
                try:
                    forward = caller.forward(sample, params)
                    found = {"out": forward.out.astype(np.float64)}
                    state = _state_after(caller, spec, forward)
                    if state:
                        found["state"] = state
                    if spec.grads:
                        backward = caller.backward(forward, _dout(spec, sample, dtype), sample)
                        for name, value in backward.grads.items():
                            if isinstance(value, Problem):
                                raise RuntimeError(f"the reference {spec.name}/{impl.name} failed: {value.message}")
                            found["d" + name] = value[0].astype(np.float64)
                        caller.drop(backward.handle)
                    caller.drop(forward.handle)
                except Refused as refused:
                    raise RuntimeError(f"the reference {spec.name}/{impl.name} failed: {refused.problem.message}") \
                        from None
                self.cache[key] = found
            return self.cache[key]


def _state_after(caller: Caller, spec: LayerSpec, forward) -> dict:
    """``{"bn_param['running_mean']": array}``: the state a forward call left in its parameter dicts."""
    state = {}
    if not spec.state:
        return state
    for i, spec_input in enumerate(spec.inputs):
        if spec_input.role != "config":
            continue
        after = caller.fetch([forward.handle, "args", i], "dict") or {}
        for key in spec.state:
            value = after.get(key) if isinstance(after, dict) else None
            state[f"{spec_input.name}[{key!r}]"] = value
    return state


def _dout(spec: LayerSpec, sample: Sample, dtype) -> np.ndarray:
    return sample.dout if sample.dout is not None else np.ones((), dtype=dtype)


#: The scale a difference is measured against is at least this fraction of the largest value the
#: reference computed for the same call (a gradient that is zero in theory holds only rounding noise).
REFERENCE_FLOOR = 1e-2


def _difference(got: np.ndarray, want: np.ndarray, floor: float = 0.0) -> tuple:
    """(largest |got - want| over max(largest |want|, floor), largest |got - want|, its index)."""
    diff = np.abs(got.astype(np.float64) - want)
    if diff.size == 0:
        return 0.0, 0.0, ()
    index = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
    scale = max(float(np.max(np.abs(want))), floor)
    return (float(diff[index]) / scale if scale > 0 else float(diff[index])), float(diff[index]), index


def _reference_floor(reference: dict) -> float:
    return REFERENCE_FLOOR * max((float(np.max(np.abs(v), initial=0.0)) for v in reference.values()
                                  if isinstance(v, np.ndarray)), default=0.0)


# -- one implementation ------------------------------------------------------------------------------
class _Recorder:
    """Builds the CheckResult records of one implementation with the fields they share."""

    def __init__(self, spec: LayerSpec, impl: Impl, config: GradcheckConfig) -> None:
        self.spec = spec
        self.impl = impl
        self.config = config
        self.results: list = []
        self.seen: set = set()
        self.geometry: Geometry | None = None
        self.params: dict = {}

    @property
    def subjects(self) -> list:
        return ["out", *("d" + g for g in self.spec.grads)]

    def add(self, kind: str, subject: str, status, message: str = "", *, whole: bool = False, **fields) -> None:
        geometry = None if whole else self.geometry
        if whole and fields.get("finding"):
            key = (kind, subject, fields["finding"], str(status))
            if key in self.seen:
                return
            self.seen.add(key)
        location = fields.pop("location", "") or ("" if self.impl.builtin else self.impl.location)
        self.results.append(CheckResult(
            layer=self.spec.name, impl=self.impl.name, kind=kind, subject=subject, status=Status(status),
            geometry=geometry.label if geometry else "",
            where=self.spec.describe(self.params) if geometry else "",
            message=message, params=_jsonable(self.params) if geometry else {}, dtype=self.config.dtype,
            eps=self.config.step, location=location if not self.impl.builtin else "", source=self.impl.source,
            **fields))

    def problem(self, kind: str, subject: str, problem: Problem, *, whole: bool = False) -> None:
        self.add(kind, subject, problem.status, problem.message, whole=whole, finding=problem.finding,
                 location=problem.location, traceback=problem.traceback)

    def everywhere(self, kind: str, status, message: str, **fields) -> None:
        for subject in self.subjects:
            self.add(kind, subject, status, message, **fields)


def check(spec: LayerSpec, impl: Impl, session, *, battery: Sequence | None = None,
          config: GradcheckConfig | None = None, references: References | None = None,
          problems: Sequence[Problem] = (), sample: Sample | None = None) -> list:
    """Run the battery on one implementation of one layer.

    Parameters
    ----------
    spec : LayerSpec
    impl : Impl
    session : LocalSession or ChildSession
        Where ``impl`` runs.
    battery : sequence of (Geometry, params), optional
        Default: ``spec.battery()``.
    config : GradcheckConfig, optional
    references : References, optional
        Reference results (None: no reference comparison).
    problems : sequence of Problem
        Findings about the implementation's module as a whole (from loading).
    sample : Sample, optional
        Check at these inputs instead of drawing them (one geometry, given
        as ``battery``; no protocol checks).

    Returns
    -------
    list of CheckResult
    """
    from cnncheck.session import InternalError, SessionFailure

    config = config or GradcheckConfig()
    battery = list(battery if battery is not None else spec.battery())
    record = _Recorder(spec, impl, config)
    start = time.perf_counter()
    for problem in problems:
        record.problem("integrity", "out", problem, whole=True)
    if impl.missing:
        for subject in record.subjects:
            record.add("call", subject, Status.NOT_IMPLEMENTED, impl.missing, whole=True)
        return _timed(record.results, start)
    caller = Caller(session, spec, impl, config.dtype)
    session.begin()
    try:
        for index, (geometry, params) in enumerate(battery):
            record.geometry, record.params = geometry, params
            _check_geometry(caller, record, geometry, params, config, references,
                            first=index == 0, sample=sample)
    except SessionFailure as failure:
        record.everywhere("call", failure.status, failure.message)
    except ProtocolViolation as exc:
        session.close()
        record.everywhere("integrity", Status.PROTOCOL_ERROR, f"the child answered out of protocol ({exc})")
    except InternalError as exc:
        session.close()
        record.everywhere("call", Status.INTERNAL_ERROR, f"internal error: {exc}")
    record.geometry = None
    for flag in caller.flags:
        record.problem("integrity", "out", flag, whole=True)
    return _timed(record.results, start)


def _timed(results: list, start: float) -> list:
    seconds = time.perf_counter() - start
    return [replace(r, seconds=seconds) for r in results]


def _rng(config: GradcheckConfig, spec: LayerSpec, label: str, *extra: str) -> np.random.Generator:
    """A generator for one geometry, the same for every implementation of the layer."""
    words = [zlib.crc32(w.encode()) for w in (spec.name, label, *extra)]
    return np.random.default_rng([int(config.seed), *words])


def _check_geometry(caller: Caller, record: _Recorder, geometry: Geometry, params, config: GradcheckConfig,
                    references: References | None, *, first: bool, sample: Sample | None) -> None:
    spec, impl = caller.spec, caller.impl
    dtype = np.dtype(config.dtype)
    if sample is None:
        sample = spec.make_sample(params, _rng(config, spec, geometry.label), dtype, config.margin)
    reference = None
    if references is not None and config.reference and impl.name != spec.reference:
        key = (spec.name, geometry.label, repr(sorted(params.items())), config.seed, config.dtype, "plain")
        reference = references.get(spec, key, sample, params, dtype)
    try:
        forward = caller.forward(sample, params)
    except Refused as refused:
        problem = refused.problem
        if geometry.uneven and problem.finding == "asserts":
            record.add("call", "out", Status.PASS, f"refused sizes that do not divide evenly ({problem.message}); "
                       "allowed", finding="uneven")
        elif geometry.uneven and problem.status == Status.ERROR:
            record.add("call", "out", problem.status, f"{problem.message} (at sizes that do not divide evenly, where "
                       "the output size is floored, as PyTorch does; a layer that refuses them on purpose should "
                       "assert so)", finding=problem.finding, location=problem.location, traceback=problem.traceback)
        else:
            record.problem("call", "out", problem)
        return
    for warning in forward.warnings:
        record.problem("call", "out", warning, whole=True)
    out = forward.out.astype(np.float64)
    precise32 = dtype == np.float64 and numeric.float32_only(out)
    if precise32:
        record.add("forward", "out", Status.FAIL,
                   "the forward output has only float32 precision (every value is exactly a float32 number): the "
                   "layer computes in float32, so a float64 check cannot judge it; compute in the input's dtype, "
                   "or check it with --dtype float32", finding="float32-precision", whole=True)
    if reference is not None:
        _compare_reference(record, "out", out, reference["out"], config, _reference_floor(reference))
        if "state" in reference:
            _compare_state(record, _state_after(caller, spec, forward), reference["state"], config)
    else:
        record.add("call", "out", Status.PASS, "forward returned an output of the right shape and dtype")
    protocol = first and config.protocol
    written_by_forward = _changed_args(caller, forward.handle, sample) if protocol else []
    dout = _dout(spec, sample, dtype)
    try:
        backward = caller.backward(forward, dout, sample)
    except Refused as refused:
        for name in spec.grads:
            record.problem("call", "d" + name, refused.problem)
        return
    written_by_backward = _changed_args(caller, forward.handle, sample) if protocol else []
    analytic = {}
    for name in spec.grads:
        value = backward.grads[name]
        if isinstance(value, Problem):
            record.problem("call", "d" + name, value)
            continue
        grad, warnings = value
        for warning in warnings:
            record.problem("call", "d" + name, warning, whole=True)
        analytic[name] = grad
        if reference is not None:
            _compare_reference(record, "d" + name, grad.astype(np.float64), reference["d" + name], config,
                               _reference_floor(reference))
        _gradient(caller, record, sample, params, name, grad, out, dout, config, geometry, precise32, first)
    if protocol and analytic:
        _protocol(caller, record, sample, params, forward, backward, analytic, config,
                  (written_by_forward, written_by_backward), references)
    caller.drop(forward.handle, backward.handle if backward.handle != forward.handle else None)
    if config.protocol and spec.subgradient is not None and analytic:
        _subgradient(caller, record, geometry, params, config, references)


def _compare_reference(record: _Recorder, subject: str, got: np.ndarray, want: np.ndarray,
                       config: GradcheckConfig, floor: float = 0.0) -> None:
    tolerance = REFERENCE_TOLERANCE[config.dtype]
    relative, absolute, index = _difference(got, want, floor)
    fields = dict(rel_error=relative, abs_error=absolute, worst_index=index or None, threshold=tolerance,
                  got=float(got[index]) if got.size else None, expected=float(want[index]) if want.size else None,
                  compared=int(want.size))
    if relative <= tolerance:
        record.add("reference", subject, Status.PASS, **fields)
        return
    what = "forward output" if subject == "out" else subject
    record.add("reference", subject, Status.DIFFERS,
               f"{what} differs from the reference: max |diff| {absolute:.3g} at {subject}{list(index)} "
               f"(got {got[index]:.6g}, expected {want[index]:.6g})", **fields)


def _compare_state(record: _Recorder, got: dict, want: dict, config: GradcheckConfig) -> None:
    """The state a forward left in its parameter dict (running means) against the reference's."""
    tolerance = REFERENCE_TOLERANCE[config.dtype]
    for name, expected in want.items():
        value = got.get(name)
        if not isinstance(expected, np.ndarray):
            continue
        if not isinstance(value, np.ndarray) or value.shape != expected.shape:
            record.add("reference", "out", Status.DIFFERS, f"after forward, {name} is "
                       f"{'missing' if value is None else 'not an array of the right shape'}; the reference leaves "
                       f"an array of shape {tuple(expected.shape)}", finding="state")
            continue
        relative, absolute, index = _difference(value.astype(np.float64), expected.astype(np.float64))
        if relative > tolerance:
            record.add("reference", "out", Status.DIFFERS, f"after forward, {name} differs from the reference's: "
                       f"max |diff| {absolute:.3g} at {list(index)} (got {value[index]:.6g}, expected "
                       f"{expected[index]:.6g})", finding="state", rel_error=relative, abs_error=absolute)
        else:
            record.add("reference", "out", Status.PASS, f"{name} after forward matches the reference's",
                       finding="state", rel_error=relative)


def _gradient(caller: Caller, record: _Recorder, sample: Sample, params, name: str, grad: np.ndarray,
              out: np.ndarray, dout: np.ndarray, config: GradcheckConfig, geometry: Geometry,
              precise32: bool, first: bool) -> None:
    spec = caller.spec
    x = sample.values[name]
    mode = config.resolve_mode(spec.n_grad_elements(params), first=first)
    rng = _rng(config, spec, geometry.label, name)
    common = dict(h=config.step, threshold=config.threshold, floor_fraction=numeric.RELATIVE_FLOOR[config.dtype],
                  kinks=spec.has_kinks, label="d" + name)
    comparisons = []
    try:
        if mode in ("full", "sample", "auto"):
            count = x.size if mode == "full" else (config.samples if first or config.mode != "auto"
                                                   else max(1, config.samples // 5))
            index = np.arange(x.size) if mode == "full" else numeric.sample_indices(x.shape, count, rng)
            plus, minus = caller.probe(sample, name, index=index, h=config.step, size=out.size)
            comparisons.append(numeric.compare_elements(x, grad, index, plus, minus, out, dout, **common))
        if mode in ("directional", "auto"):
            directions = rng.choice(np.array([-1, 1], dtype=np.int8), size=(config.probes, *x.shape))
            plus, minus = caller.probe(sample, name, directions=directions, h=config.step, size=out.size)
            comparisons.append(numeric.compare_directions(x, grad, directions, plus, minus, out, dout, **common))
    except Refused as refused:
        record.problem("call", "d" + name, refused.problem)
        return
    worst = max(comparisons, key=lambda c: (c.status == Status.FAIL, c.rel_error))
    fields = dict(mode=mode if mode != "auto" else "directional+sample", rel_error=worst.rel_error,
                  abs_error=worst.abs_error, worst_index=worst.worst_index, got=worst.got, expected=worst.expected,
                  compared=sum(c.compared for c in comparisons), threshold=config.threshold)
    if all(c.unchanged for c in comparisons) and np.any(grad != 0):
        record.add("forward", "d" + name, Status.FAIL,
                   f"forward output did not change when {name} was perturbed by ±{config.step:g} "
                   f"({fields['compared']} probes): the forward pass ignores {name}, or returns a result stored "
                   "from an earlier call", finding="ignores-input", **fields)
        return
    message = worst.message
    if worst.status == Status.FAIL and precise32:
        message += "; the forward output has only float32 precision: check with --dtype float32"
    record.add("gradient", "d" + name, worst.status, message, **fields)


# -- the call protocol ---------------------------------------------------------------------------------
def _first_difference(a: np.ndarray, b: np.ndarray, tolerance: float):
    """None when ``a`` and ``b`` agree within ``tolerance`` of their scale, else (max |diff|, index)."""
    if a.shape != b.shape:
        return float("inf"), ()
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    diff = np.abs(a64 - b64)
    scale = max(float(np.max(np.abs(b64), initial=0.0)), 1.0)
    if diff.size == 0 or float(diff.max()) <= tolerance * scale:
        return None
    index = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
    return float(diff[index]), index


def _grads_differ(grads: dict, analytic: dict, tolerance: float):
    """The first gradient of ``grads`` that differs from ``analytic``: (name, diff, index) or None."""
    for name, value in grads.items():
        if name not in analytic:
            continue
        if isinstance(value, Problem):
            return name, value.message, ()
        found = _first_difference(value[0], analytic[name], tolerance)
        if found is not None:
            return name, found[0], found[1]
    return None


def _describe_diff(name: str, diff, index) -> str:
    if isinstance(diff, str):
        return f"d{name}: {diff}"
    return f"d{name} differs by {diff:.3g} at d{name}{list(index)}"


def _protocol(caller: Caller, record: _Recorder, sample: Sample, params, forward, backward, analytic: dict,
              config: GradcheckConfig, written: tuple, references: References | None) -> None:
    spec = caller.spec
    tolerance = REPEAT_TOLERANCE[config.dtype]
    dout = _dout(spec, sample, config.dtype)
    layer = spec.protocol == "layer"

    def finding(subject, finding_name, message, status=Status.FAIL):
        record.add("protocol", subject, status, message, finding=finding_name)

    def ok(subject, finding_name, message):
        record.add("protocol", subject, Status.PASS, message, finding=finding_name)

    def attempt(what, call):
        try:
            return call()
        except Refused as refused:
            p = refused.problem
            record.add("protocol", "out", p.status, f"{p.message} ({what})", finding=what.split()[0],
                       location=p.location, traceback=p.traceback)
            return None

    # Writes into the arguments: inputs by forward, dout and cached inputs by backward.
    positions = _array_positions(spec, sample)
    if layer:
        dout_now = caller.fetch([backward.handle, "args", 0])
        changed_dout = dout_now is not None and not _same_array(dout_now.get("array"), dout)
        if changed_dout:
            finding("out", "mutates-dout", "backward writes into dout: in a network with two branches the other "
                    "branch receives the changed dout (the gradients returned are still checked)", Status.WARNING)
    first_written = _written_names(spec, positions, written[0])
    if first_written:
        finding("out", "mutates-input", f"forward writes into its input {', '.join(first_written)}: the caller's "
                "array (often the previous layer's cached output) changes", Status.WARNING)
    later = [n for n in _written_names(spec, positions, written[1]) if n not in first_written]
    if later:
        finding("out", "mutates-cache", f"backward writes into the cached input {', '.join(later)}: a second "
                "backward on the same cache, or the layer before it, sees changed values", Status.WARNING)
    config_index = [i for i, inp in enumerate(spec.inputs) if inp.role == "config"]
    for i in config_index:
        name = spec.inputs[i].name
        after = caller.fetch([forward.handle, "args", i], "dict")
        change = _dict_change(sample.values[name], after, spec.state)
        if change:
            finding("out", "modifies-param", f"forward changed the caller's {name} ({change}): every layer of a "
                    "network may share that dict")
        else:
            ok("out", "modifies-param", f"forward leaves {name} alone")

    # Forward twice on the same input.
    second = attempt("repeat-forward", lambda: caller.forward(sample, params, what="forward (called again)"))
    if second is not None:
        found = _first_difference(second.out, forward.out, tolerance)
        if found is not None:
            finding("out", "nondeterministic-forward",
                    f"forward twice on the same input gives different outputs (max |diff| {found[0]:.3g} at "
                    f"out{list(found[1])}): forward keeps state between calls, or its output depends on random numbers")
        else:
            ok("out", "nondeterministic-forward", "forward twice on one input gives the same output")
        caller.drop(second.handle)
    if not layer:
        return
    # Backward twice on the same cache.
    again = attempt("repeat-backward", lambda: caller.backward(forward, dout, sample))
    if again is not None:
        differ = _grads_differ(again.grads, analytic, tolerance)
        if differ:
            finding(f"d{differ[0]}", "repeat-backward",
                    "a second backward on the same cache gives other gradients (" + _describe_diff(*differ) +
                    "): backward keeps state between calls, such as an accumulator that is never reset")
        else:
            ok("out", "repeat-backward", "backward twice on one cache gives the same gradients")
        caller.drop(again.handle)
    # Two forwards on different inputs, then the first one's backward, then the second one's.
    other = spec.make_sample(record.params, _rng(config, spec, record.geometry.label, "second"), config.dtype,
                             config.margin)
    first = attempt("shared-cache", lambda: caller.forward(sample, params))
    later_call = attempt("shared-cache", lambda: caller.forward(other, params)) if first is not None else None
    if first is not None and later_call is not None:
        back = attempt("shared-cache", lambda: caller.backward(first, dout, sample))
        if back is not None:
            differ = _grads_differ(back.grads, analytic, tolerance)
            if differ:
                finding(f"d{differ[0]}", "shared-cache",
                        "after a second forward on other inputs, the first call's backward gives other gradients ("
                        + _describe_diff(*differ) + "): the cache is shared between calls (a module-level buffer "
                        "or a global instead of the cache)")
            else:
                ok("out", "shared-cache", "the caches of two forward calls are independent")
        reference = None
        if references is not None and config.reference and caller.impl.name != spec.reference:
            key = (spec.name, record.geometry.label, repr(sorted(params.items())), config.seed, config.dtype, "second")
            reference = references.get(spec, key, other, params, config.dtype)
        back_other = attempt("stale-state", lambda: caller.backward(later_call, _dout(spec, other, config.dtype),
                                                                       other))
        if reference is not None and back_other is not None:
            want = {name[1:]: value for name, value in reference.items() if name.startswith("d")}
            differ = _grads_differ(back_other.grads, want, REFERENCE_TOLERANCE[config.dtype])
            found = _first_difference(later_call.out, reference["out"], REFERENCE_TOLERANCE[config.dtype])
            if found is not None:
                finding("out", "stale-state", f"on a second input, forward's output differs from the reference "
                        f"(max |diff| {found[0]:.3g} at out{list(found[1])}) although the first input's matched: "
                        "forward keeps something from an earlier call")
            elif differ:
                finding(f"d{differ[0]}", "stale-state",
                        "on a second input, backward's gradients differ from the reference (" + _describe_diff(*differ)
                        + ") although the first input's matched: backward keeps something from an earlier call "
                        "(a value computed once and kept in a global)")
            else:
                ok("out", "stale-state", "a second input gives the reference's results too")
        # The gradients returned earlier must not have changed meanwhile.
        reused = []
        for handle in (backward.handle, back.handle if back is not None else None):
            if handle is None:
                continue
            for position, name in enumerate(spec.grads):
                if name not in analytic or name in reused:
                    continue
                facts = caller.fetch([handle, "result"] + ([position] if len(spec.grads) > 1 else []))
                data = facts.get("array") if isinstance(facts, dict) else None
                if isinstance(data, np.ndarray) and _first_difference(data, analytic[name], tolerance) is not None:
                    reused.append(name)
        if reused:
            finding(f"d{reused[0]}", "reused-output",
                    f"the d{reused[0]} an earlier backward returned changed when backward was called again: backward "
                    "returns the same buffer every call, so a network's earlier gradients are overwritten")
        else:
            ok("out", "reused-output", "earlier gradients stay as they were returned")
        caller.drop(first.handle, later_call.handle, back.handle if back is not None else None,
                    back_other.handle if back_other is not None else None)
    # Other memory layouts, one array at a time (a layer may mishandle one input's strides only).
    failed = False
    for layout, words in LAYOUTS.items():
        for target in [*spec.grads, "dout"]:
            on_input = target != "dout"
            laid = attempt("layout", lambda: caller.forward(sample, params, layout={target: layout} if on_input
                                                              else "C", what=f"forward ({words} {target})"))
            if laid is None:
                failed = True
                break
            found = _first_difference(laid.out, forward.out, tolerance) if on_input else None
            if found is not None:
                finding("out", "layout", f"with a {words} {target} forward gives another output (max |diff| "
                        f"{found[0]:.3g} at out{list(found[1])}): the code assumes C-contiguous arrays (strides "
                        "computed from the shape, or a reshape of a view)")
                caller.drop(laid.handle)
                failed = True
                break
            back = attempt("layout", lambda: caller.backward(laid, dout, sample, layout="C" if on_input else layout))
            caller.drop(laid.handle)
            if back is None:
                failed = True
                break
            differ = _grads_differ(back.grads, analytic, tolerance)
            caller.drop(back.handle)
            if differ:
                finding(f"d{differ[0]}", "layout", f"with a {words} {target}, backward gives other gradients ("
                        + _describe_diff(*differ) + "): the code assumes C-contiguous arrays")
                failed = True
                break
        if failed:
            break
    if not failed:
        ok("out", "layout", "Fortran-ordered, transposed and strided inputs and dout give the same results")


def _array_positions(spec: LayerSpec, sample: Sample) -> list:
    return [i for i, inp in enumerate(spec.inputs) if isinstance(sample.values[inp.name], np.ndarray)]


def _changed_args(caller: Caller, handle: int, sample: Sample) -> list:
    """Positions of a forward call's array arguments whose values are no longer the sample's."""
    changed = []
    for i in _array_positions(caller.spec, sample):
        facts = caller.fetch([handle, "args", i])
        data = facts.get("array") if isinstance(facts, dict) else None
        if not _same_array(data, sample.values[caller.spec.inputs[i].name]):
            changed.append(i)
    return changed


def _written_names(spec: LayerSpec, positions: list, changed: list) -> list:
    return [spec.inputs[i].name for i in positions if i in changed]


def _same_array(data, want: np.ndarray) -> bool:
    return isinstance(data, np.ndarray) and data.shape == want.shape and np.array_equal(data, want, equal_nan=True)


def _dict_change(before: Mapping, after, state: Sequence[str]) -> str:
    """How a parameter dict changed, in words ("" when it did not); keys in ``state`` may change."""
    if after is None:
        return "it is no longer a dict"
    added = [k for k in after if k not in before and k not in state]
    removed = [k for k in before if k not in after]
    changed = []
    for key, value in before.items():
        if key in after and key not in state:
            new = after[key]
            if isinstance(value, np.ndarray) or isinstance(new, np.ndarray):
                if not (isinstance(value, np.ndarray) and isinstance(new, np.ndarray) and _same_array(new, value)):
                    changed.append(key)
            elif new != value:
                changed.append(f"{key} from {value!r} to {new!r}")
    parts = []
    if added:
        parts.append("added " + ", ".join(repr(k) for k in added))
    if removed:
        parts.append("removed " + ", ".join(repr(k) for k in removed))
    if changed:
        parts.append("changed " + ", ".join(changed))
    return "; ".join(parts)


# -- kinks -------------------------------------------------------------------------------------------
def _subgradient(caller: Caller, record: _Recorder, geometry: Geometry, params, config: GradcheckConfig,
                 references: References | None) -> None:
    spec, impl = caller.spec, caller.impl
    dtype = np.dtype(config.dtype)
    sample = spec.make_sample(params, _rng(config, spec, geometry.label, "kinks"), dtype, 0.0, kinks=True)
    try:
        forward = caller.forward(sample, params, what="forward (inputs on kinks)")
    except Refused as refused:
        record.problem("subgradient", "out", refused.problem)
        return
    if references is not None and config.reference and impl.name != spec.reference:
        key = (spec.name, geometry.label, repr(sorted(params.items())), config.seed, config.dtype, "kinks")
        reference = references.get(spec, key, sample, params, dtype)
        if reference is not None:
            relative, absolute, index = _difference(forward.out, reference["out"])
            if relative > REFERENCE_TOLERANCE[config.dtype]:
                record.add("subgradient", "out", Status.DIFFERS,
                           f"with tied inputs the forward output differs from the reference: max |diff| "
                           f"{absolute:.3g} at out{list(index)}", rel_error=relative, abs_error=absolute)
    try:
        backward = caller.backward(forward, _dout(spec, sample, dtype), sample)
    except Refused as refused:
        record.problem("subgradient", "d" + spec.grads[0], refused.problem)
        return
    grads = [backward.grads[g] for g in spec.grads]
    if any(isinstance(g, Problem) for g in grads):
        problem = next(g for g in grads if isinstance(g, Problem))
        record.problem("subgradient", "d" + spec.grads[0], problem)
        return
    verdict = spec.subgradient(sample, params, [g[0] for g in grads])
    caller.drop(forward.handle, backward.handle)
    subject = "d" + spec.grads[0]
    if verdict is None:
        record.add("subgradient", subject, Status.PASS, spec.rule_note, finding=spec.rule)
    else:
        record.add("subgradient", subject, Status.FAIL, verdict, finding=spec.rule)


# -- running many checks ---------------------------------------------------------------------------------
def run_checks(loaded, pairs: Sequence, *, overrides: Mapping | None = None, config: GradcheckConfig | None = None,
               on_result: Callable | None = None, quick: bool = False,
               references: References | None = None, limit_threads: bool = True) -> list:
    """Check (spec, impl) pairs one after another, each in its session.

    ``overrides`` (layer parameters given) make the battery that one
    geometry; ``quick`` keeps only the first geometry.  ``on_result`` is
    called with each implementation's results once they are complete (for
    progress, and so an interrupted run keeps them).  ``references`` may be
    shared between runs on the same inputs (a class of submissions).  The
    run holds this process's thread pools at one thread unless
    ``limit_threads`` is False (a caller that already does, from several threads).
    """
    config = config or GradcheckConfig()
    references = references or References(loaded.registry, loaded.local)
    results: list = []
    if any(impl.builtin and impl.backend == "torch" for _, impl in pairs):
        import torch  # noqa: F401  (imported now so that its thread pool is limited too)
    with single_threaded() if limit_threads else contextlib.nullcontext():
        for spec, impl in pairs:
            battery = spec.battery(overrides)[:1] if quick else spec.battery(overrides)
            batch = check(spec, impl, loaded.session(impl), battery=battery, config=config, references=references,
                          problems=loaded.problems.get(impl.source, ()))
            results.extend(batch)
            if on_result is not None:
                on_result(batch)
    return results


@contextlib.contextmanager
def single_threaded():
    """BLAS, OpenMP and PyTorch on one thread in this process inside the block.

    The battery's arrays are tiny: threads only add their start-up and, on
    a busy machine, their waiting (PyTorch's pool made a 4 x 32 affine call
    200 times slower under load).  Child sessions get one-thread pools
    through their environment.
    """
    from cnncheck.machine import limit_threads

    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(1)
    try:
        with limit_threads(1):
            yield
    finally:
        if torch is not None:
            torch.set_num_threads(before)


class _CallableModule(types.ModuleType):
    """Lets ``cnncheck.gradcheck(...)`` run :func:`cnncheck.api.gradcheck` although it is this module."""

    def __call__(self, *args, **kwargs):
        from cnncheck.api import gradcheck

        return gradcheck(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
