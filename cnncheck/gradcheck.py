"""The gradient-check engine: analytic gradients against centred differences.

For one layer spec, one implementation and one set of parameters,
:func:`check` draws inputs and a random upstream gradient ``dout`` from a
seeded generator, runs the implementation's forward and backward passes, and
compares every gradient with the numerical derivative of the *same*
implementation's forward pass contracted with ``dout``::

    numeric[i] = sum((f(x + h e_i) - f(x - h e_i)) * dout) / (2 h)

Every probe is restored.  Differences of the outputs are taken elementwise in
float64 before they are contracted, and the step is the one that really
happened after rounding to the input's dtype, so a float32 check loses no
accuracy to the step.  Modes:

``full``
    every element of every gradient (2 forward calls per element);
``sample``
    ``samples`` random elements per gradient;
``directional``
    ``probes`` random directions ``d`` (entries +-1) per gradient: the
    directional derivative ``sum((f(x + h d) - f(x - h d)) * dout) / (2 h)``
    against ``<analytic, d>``; 2 forward calls per probe whatever the size;
``auto``
    ``full`` when the inputs with gradients hold at most
    :data:`AUTO_FULL_LIMIT` elements together, ``directional`` otherwise.

The error of a gradient is the course notebook's ``rel_error``, the largest
``|n - a| / max(floor, |n| + |a|)`` over the compared elements, with one
change: the course notebook's ``floor = 1e-8`` becomes at least
:data:`RELATIVE_FLOOR` (1e-2 in float64, 1e-1 in float32) times the largest
``|n|``.  Elements much smaller than the largest are then held to an
absolute error instead of a relative one, because their centred differences
are dominated by rounding: without it, a correct layer fails the course notebook's
metric in float64 once inputs have a few thousand elements.

Inputs keep a margin of ``10 * eps`` from nondifferentiable points (relu at
0, ties in a max-pool window).  When a check of a layer with such points
still fails, every failing element (up to :data:`KINK_CHECK_LIMIT`) is
tested: if its one-sided differences disagree and the analytic value lies
between them, the element sits on a kink, and a gradient whose failures all
sit on kinks gets status ``kink`` instead of ``fail``.

Whatever the implementation under test raises or returns becomes a result
(``error``, ``not-implemented``, ``mutates-input``); nothing else is caught.
A function with a true ``cnncheck_missing`` attribute (a message) stands for
one a user module does not define and is reported ``not-implemented``
without being called.
"""

from __future__ import annotations

import math
import sys
import time
import traceback
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from cnncheck.errors import CnnCheckError
from cnncheck.results import GradcheckReport, GradcheckResult, Status, _jsonable
from cnncheck.specs import Impl, LayerSpec, SampleInput

MODES = ("auto", "full", "sample", "directional")
DTYPES = ("float64", "float32")

#: Default (eps, max_error) per dtype.  float32: measured on the built-in
#: float32 layers over many seeds (see the README); a correct float32
#: implementation stays two orders of magnitude below the threshold.
DEFAULT_TOLERANCES = {"float64": (1e-5, 1e-7), "float32": (3e-2, 1e-2)}

#: The relative error's denominator is never below this fraction of the
#: largest numerical derivative compared (nor below the course notebook's 1e-8): a
#: derivative much smaller than that is below the rounding noise of a centred
#: difference (measured: about 1e-10 of the largest in float64, 1e-5 in
#: float32 at the default steps), so its own relative error means nothing.
RELATIVE_FLOOR = {"float64": 1e-2, "float32": 1e-1}

#: ``auto`` checks every element when the inputs with gradients hold at most
#: this many elements together, and switches to ``directional`` above.
AUTO_FULL_LIMIT = 4096

#: Default number of elements per gradient in ``sample`` mode.
DEFAULT_SAMPLES = 50

#: Default number of random directions per gradient in ``directional`` mode.
DEFAULT_PROBES = 10

#: Generated inputs stay this many steps away from kinks.
MARGIN_STEPS = 10.0

#: At most this many failing elements of a gradient are tested for kinks.
KINK_CHECK_LIMIT = 100


@dataclass(frozen=True)
class GradcheckConfig:
    """How to check: mode, step, threshold, dtype and seed.

    Attributes
    ----------
    mode : {"auto", "full", "sample", "directional"}
    samples : int
        Elements per gradient in ``sample`` mode.
    probes : int
        Random directions per gradient in ``directional`` mode.
    eps : float or None
        Finite-difference step; None for the dtype's default
        (:data:`DEFAULT_TOLERANCES`).
    max_error : float or None
        Largest relative error that passes; None for the dtype's default.
    dtype : {"float64", "float32"}
        dtype of the generated inputs and ``dout``.
    seed : int
        Seed of the generator that draws inputs, samples and directions.
    auto_limit : int
        Element count up to which ``auto`` means ``full``.

    Raises
    ------
    CnnCheckError
        A value out of range, or an unknown mode or dtype.
    """

    mode: str = "auto"
    samples: int = DEFAULT_SAMPLES
    probes: int = DEFAULT_PROBES
    eps: float | None = None
    max_error: float | None = None
    dtype: str = "float64"
    seed: int = 0
    auto_limit: int = AUTO_FULL_LIMIT

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise CnnCheckError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if str(self.dtype) not in DTYPES:
            raise CnnCheckError(f"dtype must be float64 or float32, got {self.dtype!r}")
        object.__setattr__(self, "dtype", str(self.dtype))
        for name in ("samples", "probes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise CnnCheckError(f"{name} must be a positive integer, got {value!r}")
        for name in ("eps", "max_error"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float, np.floating)) and
                                          math.isfinite(value) and value > 0):
                raise CnnCheckError(f"{name} must be a positive number, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise CnnCheckError(f"seed must be a non-negative integer, got {self.seed!r}")

    @property
    def step(self) -> float:
        """The finite-difference step used: ``eps`` or the dtype's default."""
        return float(self.eps) if self.eps is not None else DEFAULT_TOLERANCES[self.dtype][0]

    @property
    def threshold(self) -> float:
        """The relative-error threshold used: ``max_error`` or the dtype's default."""
        return float(self.max_error) if self.max_error is not None else DEFAULT_TOLERANCES[self.dtype][1]

    @property
    def margin(self) -> float:
        """Distance kept between generated inputs and kinks: ``10 * step``."""
        return MARGIN_STEPS * self.step

    def resolve_mode(self, n_elements: int) -> str:
        """The mode run for inputs of ``n_elements`` elements (``auto`` resolved)."""
        if self.mode != "auto":
            return self.mode
        return "full" if n_elements <= self.auto_limit else "directional"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with ``eps`` and ``max_error`` resolved."""
        return {"mode": self.mode, "samples": int(self.samples), "probes": int(self.probes),
                "eps": self.step, "max_error": self.threshold, "dtype": self.dtype,
                "seed": int(self.seed), "auto_limit": int(self.auto_limit)}


# -- the check -----------------------------------------------------------------
class _ImplFailure(Exception):
    """The implementation under test raised or returned something unusable."""

    def __init__(self, status: str, message: str, tb: str = "", location: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.tb = tb
        self.location = location


def check(spec: LayerSpec, impl: Impl, params: Mapping[str, Any],
          config: GradcheckConfig | None = None, *, sample: SampleInput | None = None) -> list[GradcheckResult]:
    """Check every gradient of one implementation of one layer.

    Parameters
    ----------
    spec : LayerSpec
    impl : Impl
        The (forward, backward) pair under test.
    params : mapping
        Resolved layer parameters (``spec.resolve(...)``).
    config : GradcheckConfig, optional
        Defaults to ``GradcheckConfig()`` (float64, auto mode, seed 0).
    sample : SampleInput, optional
        Inputs to check at instead of drawing them from ``params`` (no
        margin from kinks is then guaranteed; kinks are still recognised).

    Returns
    -------
    list of GradcheckResult
        One per gradient in ``spec.grads`` order.  When the implementation
        fails before gradients exist, every result carries that status.
    """
    config = GradcheckConfig() if config is None else config
    start = time.perf_counter()
    dtype = np.dtype(config.dtype)
    if sample is None:
        sample = spec.make_inputs(params, np.random.default_rng(config.seed), dtype, config.margin)
    checker = _Checker(spec, impl, sample, config)
    outcomes = checker.run()
    seconds = time.perf_counter() - start
    json_params = _jsonable(dict(params))
    results = []
    for grad in spec.grads:
        outcome = outcomes[grad]
        results.append(GradcheckResult(
            layer=spec.name, impl=impl.name, gradient="d" + grad, threshold=config.threshold,
            params=json_params, dtype=config.dtype, eps=config.step,
            seconds=seconds, source=impl.source, **{"mode": checker.mode, **outcome}))
    return results


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r})"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _function_location(fn) -> str:
    """``file:line`` where a user function is defined, or ""."""
    code = getattr(fn, "__code__", None)
    if code is None or getattr(fn, "cnncheck_missing", None):
        return ""
    return f"{code.co_filename}:{code.co_firstlineno}"


def _raise_location(exc: BaseException, fn) -> str:
    """``file:line`` of the innermost frame of ``exc`` in ``fn``'s file (else the innermost frame)."""
    frames = traceback.extract_tb(exc.__traceback__)[1:]   # drop the engine's own frame
    if not frames:
        return _function_location(fn)
    code = getattr(fn, "__code__", None)
    mine = [f for f in frames if code is not None and f.filename == code.co_filename]
    frame = (mine or frames)[-1]
    return f"{frame.filename}:{frame.lineno}"


def _arrays_in(obj, path: str = "cache", depth: int = 0) -> list[tuple[str, np.ndarray]]:
    """Every ndarray inside a cache (tuples, lists, dicts, nested), with a path naming it."""
    if isinstance(obj, np.ndarray):
        return [(path, obj)]
    if depth > 4:
        return []
    found = []
    if isinstance(obj, (tuple, list)):
        for i, item in enumerate(obj):
            found.extend(_arrays_in(item, f"{path}[{i}]", depth + 1))
    elif isinstance(obj, dict):
        for key, item in obj.items():
            found.extend(_arrays_in(item, f"{path}[{key!r}]", depth + 1))
    return found


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)


class _Checker:
    """One check of one implementation on one sample; ``run`` returns an outcome per gradient."""

    def __init__(self, spec: LayerSpec, impl: Impl, sample: SampleInput, config: GradcheckConfig) -> None:
        self.spec = spec
        self.impl = impl
        self.config = config
        self.dtype = np.dtype(config.dtype)
        self.h = config.step
        self.threshold = config.threshold
        self.floor_fraction = RELATIVE_FLOOR[config.dtype]
        # Working copies: probed in place; the sample itself stays pristine.
        self.arrays = {k: np.array(v, dtype=self.dtype, copy=True) for k, v in sample.arrays.items()}
        self.layer_param = sample.layer_param
        self.dout = np.array(sample.dout, dtype=self.dtype, copy=True)
        self.dout64 = self.dout.astype(np.float64).ravel()
        self.out_shape = self.dout.shape
        n_elements = sum(self.arrays[g].size for g in spec.grads)
        self.mode = config.resolve_mode(n_elements)
        self.rng = np.random.default_rng([int(config.seed), 1])
        self.location = "" if impl.source == "builtin" else _function_location(impl.backward)
        self._directions: dict = {}
        self._cache = None

    # -- guarded calls into the implementation ---------------------------------
    def _call(self, fn: Callable, args: tuple, what: str):
        missing = getattr(fn, "cnncheck_missing", None)
        if missing:   # a placeholder for a function a user module does not define
            raise _ImplFailure(Status.NOT_IMPLEMENTED, str(missing))
        try:
            with np.errstate(all="ignore"):
                return fn(*args)
        except (Exception, SystemExit) as exc:   # the code under test, and only it
            status = Status.NOT_IMPLEMENTED if isinstance(exc, NotImplementedError) else Status.ERROR
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__.tb_next))
            raise _ImplFailure(status, f"{what} raised {_describe(exc)}", tb,
                               _raise_location(exc, fn)) from None

    def _forward(self, while_: str = "") -> np.ndarray:
        """Call forward on the working arrays; return ``out`` after validating it."""
        args = SampleInput(self.arrays, self.layer_param, self.dout).args()
        what = "forward" + (f" (while {while_})" if while_ else "")
        result = self._call(self.impl.forward, args, what)
        location = _function_location(self.impl.forward)
        if result is None:
            raise _ImplFailure(Status.NOT_IMPLEMENTED, f"{what} returned None", location=location)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            got = type(result).__name__ + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else "")
            raise _ImplFailure(Status.ERROR, f"{what} returned {got}, expected a tuple (out, cache)",
                               location=location)
        out = result[0]
        if out is None:
            raise _ImplFailure(Status.NOT_IMPLEMENTED, f"{what} returned None as out", location=location)
        if not isinstance(out, np.ndarray):
            raise _ImplFailure(Status.ERROR, f"{what} returned out of type {type(out).__name__}, expected an ndarray",
                               location=location)
        if out.shape != self.out_shape:
            raise _ImplFailure(Status.ERROR, f"{what} returned out of shape {out.shape}, expected {self.out_shape}",
                               location=location)
        if out.dtype != self.dtype:
            raise _ImplFailure(Status.ERROR, f"{what} returned out of dtype {out.dtype} for {self.dtype} inputs",
                               location=location)
        if not np.all(np.isfinite(out)):
            raise _ImplFailure(Status.ERROR, f"{what} returned out containing NaN or inf", location=location)
        self._cache = result[1]
        return out

    def _backward(self, cache) -> dict:
        """Call backward; return {name: gradient array or an _ImplFailure for that gradient}."""
        result = self._call(self.impl.backward, (self.dout, cache), "backward")
        grads = self.spec.grads
        location = _function_location(self.impl.backward)
        if result is None:
            raise _ImplFailure(Status.NOT_IMPLEMENTED, "backward returned None (not implemented yet)",
                               location=location)
        expected = "d" + grads[0] if len(grads) == 1 else "a tuple (" + ", ".join("d" + g for g in grads) + ")"
        if len(grads) == 1 and not isinstance(result, tuple):
            result = (result,)
        if not isinstance(result, (tuple, list)) or len(result) != len(grads):
            got = type(result).__name__ + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else "")
            raise _ImplFailure(Status.ERROR, f"backward returned {got}, expected {expected}", location=location)
        out = {}
        for name, grad in zip(grads, result):
            x = self.arrays[name]
            label = "d" + name
            if grad is None:
                out[name] = _ImplFailure(Status.NOT_IMPLEMENTED, f"backward returned None for {label}",
                                         location=location)
            elif not isinstance(grad, np.ndarray):
                out[name] = _ImplFailure(Status.ERROR, f"{label} is a {type(grad).__name__}, expected an ndarray",
                                         location=location)
            elif grad.shape != x.shape:
                out[name] = _ImplFailure(Status.ERROR, f"{label} has shape {grad.shape}, expected {x.shape} "
                                                       f"(the shape of {name})", location=location)
            elif grad.dtype != x.dtype:
                out[name] = _ImplFailure(Status.ERROR, f"{label} has dtype {grad.dtype}, expected {x.dtype} "
                                                       f"(the dtype of {name})", location=location)
            elif not np.all(np.isfinite(grad)):
                kind = "NaN" if np.isnan(grad).any() else "inf"
                out[name] = _ImplFailure(Status.ERROR, f"{label} contains {kind}", location=location)
            else:
                out[name] = np.array(grad, dtype=np.float64, copy=True)
        return out

    # -- the run ----------------------------------------------------------------
    def run(self) -> dict:
        grads = self.spec.grads
        try:
            analytic = self._analytic()
        except _ImplFailure as failure:
            return {g: self._failure(failure) for g in grads}
        outcomes = {}
        for name in grads:
            value = analytic[name]
            if isinstance(value, _ImplFailure):
                outcomes[name] = self._failure(value)
                continue
            try:
                outcomes[name] = self._compare(name, value)
            except _ImplFailure as failure:
                outcomes[name] = self._failure(failure)
        return outcomes

    def _failure(self, failure: _ImplFailure) -> dict:
        location = "" if self.impl.source == "builtin" else (failure.location or self.location)
        return {"status": failure.status, "message": failure.message, "traceback": failure.tb,
                "location": location}

    def _analytic(self) -> dict:
        """Forward then backward once, with the in-place-change checks around them."""
        before = {k: v.copy() for k, v in self.arrays.items()}
        dout_before = self.dout.copy()
        self._forward()
        changed = [k for k in before if not _same(self.arrays[k], before[k])]
        if changed:
            raise _ImplFailure(Status.MUTATED, f"forward changed {', '.join(changed)} in place",
                               location=_function_location(self.impl.forward))
        cache = self._cache
        cached = [(path, arr, arr.copy()) for path, arr in _arrays_in(cache)]
        grads = self._backward(cache)
        changed = [k for k in before if not _same(self.arrays[k], before[k])]
        if not _same(self.dout, dout_before):
            changed.append("dout")
        changed += [path for path, arr, copy in cached
                    if not any(arr is a for a in self.arrays.values()) and not _same(arr, copy)]
        if changed:
            raise _ImplFailure(Status.MUTATED, f"backward changed {', '.join(changed)} in place",
                               location=_function_location(self.impl.backward))
        return grads

    # -- numerics -----------------------------------------------------------------
    def _contract(self, plus: np.ndarray, minus: np.ndarray) -> float:
        """``sum((plus - minus) * dout)`` for float64 copies of two outputs, differences taken elementwise."""
        return float((plus.ravel() - minus.ravel()) @ self.dout64)

    def _compare(self, name: str, analytic: np.ndarray) -> dict:
        x = self.arrays[name]
        if self.mode == "directional":
            return self._directional(name, x, analytic)
        return self._elements(name, analytic, self.mode)

    def _elements(self, name: str, analytic: np.ndarray, mode: str) -> dict:
        """Compare element by element: every one (``full``) or ``samples`` random ones (``sample``)."""
        x = self.arrays[name]
        flat = x.reshape(-1)
        assert np.shares_memory(flat, x)
        if mode == "sample" and self.config.samples < x.size:
            indices = np.sort(self.rng.choice(x.size, size=int(self.config.samples), replace=False))
        else:
            indices = np.arange(x.size)
        numeric = np.empty(len(indices))
        for k, i in enumerate(indices):
            numeric[k] = self._probe_element(name, flat, int(i))
        a = analytic.reshape(-1)[indices]
        return self._verdict(name, a, numeric, indices, x.shape, analytic)

    def _step_both_ways(self, name: str, flat: np.ndarray, i: int):
        """Forward outputs a step above and below element ``i``; the element is restored.

        Returns ``(minus_at, plus_at, minus, plus)``: the probed values as stored
        (after rounding to the array's dtype) and the outputs there, in float64.
        """
        old = flat[i]
        try:
            flat[i] = old + self.h
            plus_at = float(flat[i])
            plus = self._forward(f"probing d{name}").astype(np.float64)
            flat[i] = old - self.h
            minus_at = float(flat[i])
            minus = self._forward(f"probing d{name}").astype(np.float64)
        finally:
            flat[i] = old
        return minus_at, plus_at, minus, plus

    def _probe_element(self, name: str, flat: np.ndarray, i: int) -> float:
        """Centred difference along element ``i`` of ``name``; the element is restored."""
        minus_at, plus_at, minus, plus = self._step_both_ways(name, flat, i)
        return self._contract(plus, minus) / (plus_at - minus_at)

    def _one_sided_element(self, name: str, flat: np.ndarray, i: int, base: np.ndarray) -> tuple[float, float]:
        """(forward, backward) one-sided differences along element ``i``."""
        at = float(flat[i])
        minus_at, plus_at, minus, plus = self._step_both_ways(name, flat, i)
        return self._contract(plus, base) / (plus_at - at), self._contract(base, minus) / (at - minus_at)

    def _directional(self, name: str, x: np.ndarray, analytic: np.ndarray) -> dict:
        original = x.copy()
        numeric = np.empty(self.config.probes)
        projected = np.empty(self.config.probes)
        steps = []
        try:
            for k in range(self.config.probes):
                d = self.rng.choice(np.array([-1.0, 1.0]), size=x.shape)
                x[...] = original + self.h * d
                plus_at = x.astype(np.float64)
                plus = self._forward(f"probing d{name}").astype(np.float64)
                x[...] = original - self.h * d
                delta = plus_at - x.astype(np.float64)
                minus = self._forward(f"probing d{name}").astype(np.float64)
                x[...] = original
                span = 2.0 * self.h
                numeric[k] = self._contract(plus, minus) / span
                projected[k] = float(analytic.ravel() @ delta.ravel()) / span
                steps.append(d)
        finally:
            x[...] = original
        self._directions[name] = steps
        return self._verdict(name, projected, numeric, None, x.shape, analytic)

    def _one_sided_direction(self, name: str, k: int, base: np.ndarray, analytic: np.ndarray) -> tuple:
        """One-sided directional differences along probe ``k`` and the analytic value on each side.

        Returns
        -------
        (right, left, analytic_right, analytic_left) : tuple of float
        """
        x = self.arrays[name]
        original = x.copy()
        d = self._directions[name][k]
        try:
            x[...] = original + self.h * d
            up = x.astype(np.float64) - original.astype(np.float64)
            plus = self._forward(f"probing d{name}").astype(np.float64)
            x[...] = original - self.h * d
            down = original.astype(np.float64) - x.astype(np.float64)
            minus = self._forward(f"probing d{name}").astype(np.float64)
        finally:
            x[...] = original
        g = analytic.ravel()
        return (self._contract(plus, base) / self.h, self._contract(base, minus) / self.h,
                float(g @ up.ravel()) / self.h, float(g @ down.ravel()) / self.h)

    def _errors(self, a: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        abs_err = np.abs(n - a)
        floor = max(1e-8, self.floor_fraction * float(np.max(np.abs(n), initial=0.0)))
        rel = abs_err / np.maximum(floor, np.abs(a) + np.abs(n))
        return abs_err, rel

    def _verdict(self, name: str, a: np.ndarray, n: np.ndarray, indices, shape, analytic: np.ndarray) -> dict:
        """Status and figures from analytic ``a`` and numeric ``n`` (elements, or directions when
        ``indices`` is None)."""
        abs_err, rel = self._errors(a, n)
        label = "d" + name
        if rel.size == 0:
            return {"status": Status.PASS, "rel_error": 0.0, "abs_error": 0.0, "compared": 0,
                    "message": f"{name} has no elements", "location": self.location}
        worst = int(np.argmax(rel))
        outcome = {
            "rel_error": float(rel[worst]), "abs_error": float(np.max(abs_err)),
            "worst_index": None if indices is None else tuple(int(i) for i in np.unravel_index(indices[worst], shape)),
            "analytic": float(a[worst]), "numeric": float(n[worst]), "compared": int(rel.size),
            "location": self.location,
        }
        where = (f"at {label}{list(outcome['worst_index'])}" if indices is not None
                 else f"along random direction {worst + 1} of {rel.size}")
        if rel[worst] <= self.threshold:
            outcome["status"] = Status.PASS
            return outcome
        failing = np.flatnonzero(rel > self.threshold)
        failing = failing[np.argsort(-rel[failing])]
        if self.spec.has_kinks:
            tested = failing[:KINK_CHECK_LIMIT]
            kinks, crossed = self._kinks(name, tested, a, indices, analytic)
            if len(kinks) == len(failing):
                outcome["status"] = Status.KINK
                outcome["message"] = (f"{len(failing)} {'direction(s) cross' if indices is None else 'element(s) sit on'}"
                                      f" a nondifferentiable point (one-sided "
                                      f"differences disagree and the analytic value lies between them); worst "
                                      f"{where}: analytic {a[worst]:.6g}, numeric {n[worst]:.6g}")
                return outcome
            real = [int(j) for j in tested if int(j) not in kinks]
            if indices is None and all(j in crossed for j in real):
                # Each failing direction crossed kinks, whose effects add up along a
                # direction: only element-wise differences can tell them from a wrong gradient.
                mode = "full" if self.arrays[name].size <= self.config.auto_limit else "sample"
                outcome = self._elements(name, analytic, mode)
                outcome["mode"] = mode
                outcome["message"] = (f"random directions crossed nondifferentiable points, so the elements were "
                                      f"compared one by one ({mode}); " + outcome.get("message", "")).rstrip("; ")
                return outcome
            if not real:
                outcome["status"] = Status.FAIL
                outcome["message"] = (f"{len(failing)} of {rel.size} elements disagree; the {len(tested)} worst "
                                      f"sit on kinks, the other {len(failing) - len(tested)} were not tested")
                return outcome
            worst = real[0]
            where = (f"at {label}{[int(i) for i in np.unravel_index(indices[worst], shape)]}"
                     if indices is not None else f"along random direction {worst + 1} of {rel.size}")
        unit = "directions" if indices is None else "elements"
        outcome["status"] = Status.FAIL
        outcome["message"] = (f"{len(failing)} of {rel.size} {unit} disagree; worst {where}: "
                              f"analytic {a[worst]:.6g}, numeric {n[worst]:.6g} "
                              f"(rel error {rel[worst]:.3g} > {self.threshold:g})")
        return outcome

    def _kinks(self, name: str, candidates: np.ndarray, a: np.ndarray, indices,
               analytic: np.ndarray) -> tuple[set, set]:
        """Positions among ``candidates`` whose failure sits on a kink, and those whose step crossed one.

        A kink: the one-sided differences disagree beyond the threshold (the
        step crossed a kink) and the analytic value lies between them (it is a
        one-sided derivative there).
        """
        base = self._forward(f"probing d{name}").astype(np.float64)
        flat = self.arrays[name].reshape(-1)
        kinks, crossed = set(), set()
        for j in candidates:
            j = int(j)
            if indices is not None:
                right, left = self._one_sided_element(name, flat, int(indices[j]), base)
                low = high = float(a[j])
            else:
                right, left, a_right, a_left = self._one_sided_direction(name, j, base, analytic)
                low, high = min(a_right, a_left), max(a_right, a_left)
            tol = self.threshold * (abs(right) + abs(left)) + 1e-12
            if abs(right - left) > tol:
                crossed.add(j)
                if min(right, left) - tol <= low and high <= max(right, left) + tol:
                    kinks.add(j)
        return kinks, crossed


# -- running many checks ------------------------------------------------------
@dataclass(frozen=True)
class CheckJob:
    """One (layer, implementation) check described by names, picklable for a child process.

    Attributes
    ----------
    layer, impl : str
        Registry names.
    modules : tuple of str
        User modules to load (``--module``), in order.
    overrides : dict
        Layer parameters given on the command line (unresolved).
    config : GradcheckConfig
    entry_points : bool
        Also load the ``cnncheck.implementations`` entry points.
    """

    layer: str
    impl: str
    modules: tuple = ()
    overrides: dict = field(default_factory=dict)
    config: GradcheckConfig = field(default_factory=GradcheckConfig)
    entry_points: bool = True


def run_check_job(job: CheckJob) -> list[GradcheckResult]:
    """Build the registry a job names, resolve its layer and implementation, and check.

    Meant for a fresh process: loading the job's modules runs their code.
    """
    from cnncheck.plugins import build_registry

    registry = build_registry(tuple(job.modules), entry_points=job.entry_points)
    spec = registry.layer(job.layer)
    impl = registry.impl(job.layer, job.impl)
    params = spec.resolve(job.overrides)
    return check(spec, impl, params, job.config)


def run_checks(items: Iterable, config: GradcheckConfig | None = None, *,
               on_result: Callable[[GradcheckResult], None] | None = None) -> list[GradcheckResult]:
    """Run checks one after another and collect their results.

    Parameters
    ----------
    items : iterable
        Each a :class:`CheckJob` (run with :func:`run_check_job`, its own
        config) or a tuple ``(spec, impl, params)`` checked with ``config``.
    config : GradcheckConfig, optional
    on_result : callable(GradcheckResult), optional
        Called with each result once its whole (layer, implementation)
        check has finished, for progress and for keeping what finished when
        the run is interrupted (``KeyboardInterrupt`` propagates).

    Returns
    -------
    list of GradcheckResult
    """
    config = GradcheckConfig() if config is None else config
    results: list[GradcheckResult] = []
    for item in items:
        if isinstance(item, CheckJob):
            batch = run_check_job(item)
        else:
            spec, impl, params = item
            batch = check(spec, impl, params, config)
        results.extend(batch)
        if on_result is not None:
            for result in batch:
                on_result(result)
    return results


# -- the Python API ----------------------------------------------------------------
def _as_names(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    return [str(v) for v in value]


def run_gradcheck(layer="all", impl=None, *, module=None, mode: str = "auto", dtype: str = "float64",
                  seed: int = 0, eps: float | None = None, max_error: float | None = None,
                  samples: int = DEFAULT_SAMPLES, probes: int = DEFAULT_PROBES, allow_missing: bool = False,
                  entry_points: bool = True, **params) -> GradcheckReport:
    """Gradient-check layers from Python; what ``cnncheck gradcheck`` runs.

    Also callable as ``cnncheck.gradcheck(...)``.

    Parameters
    ----------
    layer : str or sequence of str
        ``"conv"``, ``["conv", "pool"]``, ``"conv,pool"`` or ``"all"``.
    impl : str or sequence of str, optional
        Implementation names; default: every implementation, or only the
        user module's when ``module`` is given.  ``"all"`` selects every one.
    module : str, path, module object, or a sequence of them, optional
        User layer modules (see :mod:`cnncheck.plugins`).
    mode, dtype, seed, eps, max_error, samples, probes
        As in :class:`GradcheckConfig`.
    allow_missing : bool
        ``not-implemented`` results do not fail the report.
    entry_points : bool
        Load the ``cnncheck.implementations`` entry points.
    **params
        Layer parameters: ``shape``, ``filters``, ``kernel``, ``stride``,
        ``pad``, ``pool_height``, ``pool_width``.

    Returns
    -------
    GradcheckReport
        Iterable over its :class:`GradcheckResult`; shows as a table in a
        notebook or when printed with Rich; ``report.passed`` says whether it passed.

    Raises
    ------
    CnnCheckError
        Unknown layer, implementation or parameter, bad values, a module that
        does not import.
    """
    from cnncheck import __version__
    from cnncheck.plugins import build_registry
    from cnncheck.specs import PARAMETERS

    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        raise CnnCheckError(f"unknown parameter {unknown[0]!r}; known: {', '.join(PARAMETERS)}")
    config = GradcheckConfig(mode=mode, samples=samples, probes=probes, eps=eps, max_error=max_error,
                             dtype=dtype, seed=seed)
    modules = [] if module is None else (list(module) if isinstance(module, (list, tuple)) else [module])
    registry = build_registry(modules, entry_points=entry_points)
    items = select_checks(registry, _as_names(layer) or ["all"], _as_names(impl), modules, params)
    results = run_checks(items, config)
    return GradcheckReport(results=tuple(results), config=config.to_dict(), allow_missing=allow_missing,
                           version=__version__)


def select_checks(registry, layers: list, impls: list, modules: list, overrides: Mapping) -> list[tuple]:
    """(spec, impl, params) triples for layer and implementation names, parameters resolved.

    With ``impls`` empty: the user modules' implementations when ``modules``
    is given, every implementation otherwise; ``"all"`` among ``impls``
    selects every implementation.

    Raises
    ------
    CnnCheckError
        Unknown names, a parameter no selected layer takes, invalid values.
    """
    from cnncheck.plugins import user_impls

    specs = registry.expand_layers(layers)
    given = {k: v for k, v in overrides.items() if v is not None}
    for key in given:
        if not any(key in spec.params for spec in specs):
            takers = [s.name for s in registry.layers() if key in s.params]
            raise CnnCheckError(f"--{key.replace('_', '-')} does not apply to {', '.join(s.name for s in specs)} "
                                f"(it applies to {', '.join(takers) or 'no layer'})")
    params = {spec.name: spec.resolve(given) for spec in specs}
    if impls and "all" not in impls:
        pairs = registry.select([s.name for s in specs], impls)
    elif modules and not impls:
        pairs = [(spec, impl) for spec in specs for impl in user_impls(registry, spec.name, modules)]
    else:
        pairs = [(spec, impl) for spec in specs for impl in registry.impls(spec.name)]
    return [(spec, impl, params[spec.name]) for spec, impl in pairs]


class _CallableModule(types.ModuleType):
    """Lets ``cnncheck.gradcheck(...)`` call :func:`run_gradcheck` although it is this module."""

    def __call__(self, *args, **kwargs) -> GradcheckReport:
        return run_gradcheck(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
