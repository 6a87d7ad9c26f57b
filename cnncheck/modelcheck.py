"""Checking a whole model: ``model.loss(X, y)`` against centred differences, as the course notebooks do.

A model is a class whose instances hold their learnable arrays in
``model.params`` (name to ndarray) and whose ``loss(X, y)`` returns
``(loss, grads)`` with one gradient per entry of ``params``.  The model is
built small, in float64, in the session of its module (a child process for
a user's file); the check then

* compares every gradient with centred differences of the loss (every
  element of small parameters, sampled elements and random directions of
  large ones), once without regularisation and once with;
* reports the initial loss against ``log(num_classes)`` (the notebook's
  sanity check: with small weights the scores are near zero) and how much
  ``reg`` adds to the loss, against ``0.5 * reg * sum(W**2)`` over the
  parameters whose names start with ``W``;
* for a class of the course's (``ThreeLayerConvNet``, ``FullyConnectedNet``),
  compares the loss and every gradient with cnncheck's own model given the
  same parameters.

Every verdict is made here, from the arrays the session returns.
"""

from __future__ import annotations

import math
import time

import numpy as np

from cnncheck import boundary, numeric
from cnncheck.boundary import ProtocolViolation, Refused
from cnncheck.errors import CnnCheckError
from cnncheck.results import CheckResult, _jsonable
from cnncheck.status import Status

#: Small constructor arguments of the course's models (the notebooks' gradient-check cells).
SMALL = {
    "ThreeLayerConvNet": {"input_dim": (3, 16, 16), "num_filters": 3, "filter_size": 3, "hidden_dim": 7, "weight_scale": 5e-2,
                          "num_classes": 10, "dtype": "float64"},
    "FullyConnectedNet": {"hidden_dims": [20, 30], "input_dim": 15, "num_classes": 10, "weight_scale": 5e-2,
                          "dtype": "float64", "seed": 123},
}

#: The regularisation strength of the second check (the notebook's).
DEFAULT_REG = 3.14

#: Parameters up to this many elements are compared element by element.
FULL_LIMIT = 256

#: Batch size of the check.
BATCH = 2

#: Initial losses within this fraction of log(num_classes) pass the sanity check.
SANITY = 0.1


def parse_model(text: str) -> tuple:
    """``path/to/cnn.py:ThreeLayerConvNet`` (or ``package.module:Class``) as (module, class name)."""
    module, sep, name = str(text).rpartition(":")
    if not sep or not module or not name.isidentifier():
        raise CnnCheckError(f"--model must be MODULE:CLASS, such as cnn/classifiers/cnn.py:ThreeLayerConvNet; "
                            f"got {text!r}")
    return module, name


def model_kwargs(name: str, given: dict) -> dict:
    """The constructor arguments: the small ones for a course class, then ``given``."""
    kwargs = dict(SMALL.get(name, {}))
    kwargs.update(given)
    for key in ("input_dim", "num_classes"):
        if key not in kwargs:
            raise CnnCheckError(f"{name} needs --model-arg {key}=... (the input size and the number of classes "
                                "tell cnncheck what data to feed it)")
    return kwargs


def _sizes(kwargs: dict) -> tuple:
    dim = kwargs["input_dim"]
    shape = tuple(dim) if isinstance(dim, (tuple, list)) else (int(dim),)
    return shape, int(kwargs["num_classes"])


class _Model:
    """One model instance in a session."""

    def __init__(self, session, name: str, kwargs: dict, seed: int) -> None:
        self.session = session
        self.name = name
        request = {"op": "call", "fn": name, "kwargs": {k: {"value": _wire(v)} for k, v in kwargs.items()},
                   "expect": "object", "seed": seed}
        response = session.request(request)
        self.handle = boundary.field(response, "handle", int)
        if response.get("raised") is not None:
            raise Refused(boundary.raised(f"{name}(...)", response["raised"]))

    def params(self) -> dict:
        response = self.session.request({"op": "fetch", "ref": [self.handle, "result", ".params"], "as": "dict"})
        if response.get("missing"):
            raise Refused(boundary.Problem(Status.ERROR, f"{self.name} has no dict params", "returns"))
        params = boundary.field(response, "dict", dict)
        found = {}
        for key, value in params.items():
            if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
                raise Refused(boundary.Problem(Status.ERROR, f"params[{key!r}] is not a float array", "returns"))
            found[key] = value
        return found

    def loss(self, X, y) -> tuple:
        response = self.session.request({"op": "call", "fn": {"ref": [self.handle, "result", ".loss"]},
                                         "args": [{"value": X}, {"value": y}], "expect": "loss"})
        if response.get("raised") is not None:
            raise Refused(boundary.raised("loss", response["raised"]))
        returned = response.get("returned")
        items = boundary.returned_kind("loss", returned, "a tuple (loss, grads)")
        value, _ = boundary.array("loss", items[0], shape=(), dtype=np.float64)
        grads = returned.get("grads")
        if not isinstance(grads, dict):
            raise Refused(boundary.Problem(Status.ERROR, "loss returned gradients that are not a dict", "returns"))
        return float(value), grads

    def probe(self, X, y, name: str, *, index=None, directions=None, h: float) -> tuple:
        request = {"op": "probe", "fn": {"ref": [self.handle, "result", ".loss"]},
                   "args": [{"value": X}, {"value": y}], "target": {"ref": [self.handle, "result", ".params", name]},
                   "h": float(h), "size": 1, "item": 0, "expect": "loss"}
        if index is not None:
            request["index"] = np.asarray(index, dtype=np.int64)
        else:
            request["directions"] = np.asarray(directions, dtype=np.int8)
        response = self.session.request(request)
        failed = response.get("failed")
        if failed is not None:
            if isinstance(failed, dict) and failed.get("raised") is not None:
                raise Refused(boundary.raised(f"loss (while probing {name})", failed["raised"]))
            raise Refused(boundary.Problem(Status.ERROR, f"loss (while probing {name}) returned something else",
                                           "returns"))
        return (boundary.field(response, "plus", np.ndarray), boundary.field(response, "minus", np.ndarray))


def _wire(value):
    if isinstance(value, tuple):
        return list(value)
    return value


def check_model(session, name: str, given: dict | None = None, *, config, source: str = "builtin",
                reference=None, label: str | None = None) -> list:
    """Check model class ``name`` (callable in ``session``); see the module docstring.

    Parameters
    ----------
    session : LocalSession or ChildSession
    name : str
        The class, as the session knows it.
    given : dict
        Constructor arguments (on top of the small ones of a course class).
    config : GradcheckConfig
        ``seed``, ``eps``/``max_error`` and ``samples``/``probes`` are used (float64).
    reference : type, optional
        cnncheck's own model class to compare with.
    label : str, optional
        The implementation's name in reports (default: the class name).
    """
    from cnncheck.session import InternalError, SessionFailure

    impl = label or name
    kwargs = model_kwargs(name, dict(given or {}))
    shape, classes = _sizes(kwargs)
    results: list = []
    start = time.perf_counter()
    rng = np.random.default_rng([int(config.seed), 7])
    X = rng.standard_normal((BATCH, *shape))
    y = rng.integers(0, classes, size=BATCH)
    reg_value = float(kwargs.get("reg", 0.0)) or DEFAULT_REG
    threshold = 1e-6 if config.max_error is None else config.threshold
    h = config.step

    def add(subject, status, message="", geometry="", **fields):
        results.append(CheckResult("model", impl, fields.pop("kind", "gradient"), subject, Status(status),
                                   geometry=geometry, where=_describe(kwargs), message=message,
                                   params=_jsonable(kwargs), dtype="float64", eps=h, threshold=threshold,
                                   source=source, **fields))

    session.begin()
    losses = {}
    try:
        for reg in (0.0, reg_value):
            geometry = f"reg={reg:g}"
            try:
                model = _Model(session, name, {**kwargs, "reg": reg}, seed=int(config.seed))
                params = model.params()
                loss, grads = model.loss(X, y)
            except Refused as refused:
                add("loss", refused.problem.status, refused.problem.message, geometry, kind="call",
                    finding=refused.problem.finding, location=refused.problem.location,
                    traceback=refused.problem.traceback)
                continue
            losses[reg] = (loss, params)
            if reg == 0.0:
                expected = math.log(classes)
                close = abs(loss - expected) <= SANITY * expected
                add("loss", Status.PASS if close else Status.WARNING,
                    f"initial loss {loss:.4g}, log({classes}) = {expected:.4g}" +
                    ("" if close else ": with small weights the scores should be near 0 and the loss near "
                     "log(num_classes)"), geometry, kind="forward", finding="initial-loss", got=loss, expected=expected)
            _compare_params(model, X, y, params, grads, loss, config, h, threshold, geometry, add)
            if reference is not None:
                _compare_reference(reference, kwargs, reg, params, X, y, loss, grads, geometry, add)
        if 0.0 in losses and reg_value in losses:
            (plain, params), (regularised, _) = losses[0.0], losses[reg_value]
            penalty = 0.5 * reg_value * sum(float(np.sum(v.astype(np.float64) ** 2))
                                            for k, v in params.items() if k.startswith("W"))
            added = regularised - plain
            close = abs(added - penalty) <= 1e-6 * max(1.0, abs(penalty))
            add("loss", Status.PASS if close else Status.WARNING,
                f"reg={reg_value:g} adds {added:.6g} to the loss; 0.5 * reg * sum(W**2) over the weights is "
                f"{penalty:.6g}" + ("" if close else ": the course's models add exactly that"),
                f"reg={reg_value:g}", kind="forward", finding="regularisation", got=added, expected=penalty)
    except SessionFailure as failure:
        add("loss", failure.status, failure.message, kind="call")
    except ProtocolViolation as exc:
        session.close()
        add("loss", Status.PROTOCOL_ERROR, f"the child answered out of protocol ({exc})", kind="integrity")
    except InternalError as exc:
        session.close()
        add("loss", Status.INTERNAL_ERROR, f"internal error: {exc}", kind="call")
    seconds = time.perf_counter() - start
    from dataclasses import replace

    return [replace(r, seconds=seconds) for r in results]


def _describe(kwargs: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in kwargs.items() if k != "dtype")


def _compare_params(model, X, y, params, grads, loss, config, h, threshold, geometry, add) -> None:
    rng = np.random.default_rng([int(config.seed), 11])
    for name, value in params.items():
        facts = grads.get(name)
        if facts is None:
            add(name, Status.ERROR, f"grads has no entry {name!r} (params has one)", geometry, kind="call",
                finding="returns")
            continue
        try:
            grad, _ = boundary.array(f"grads[{name!r}]", facts, shape=value.shape, dtype=np.float64)
        except Refused as refused:
            add(name, refused.problem.status, refused.problem.message, geometry, kind="call",
                finding=refused.problem.finding)
            continue
        common = dict(h=h, threshold=threshold, floor_fraction=numeric.RELATIVE_FLOOR["float64"], kinks=True,
                      label=name)
        comparisons = []
        try:
            if value.size <= FULL_LIMIT:
                index = np.arange(value.size)
            else:
                index = numeric.sample_indices(value.shape, config.samples, rng)
            plus, minus = model.probe(X, y, name, index=index, h=h)
            comparisons.append(numeric.compare_elements(value, grad, index, plus, minus, np.array([loss]),
                                                        np.ones(1), **common))
            if value.size > FULL_LIMIT:
                directions = rng.choice(np.array([-1, 1], dtype=np.int8), size=(config.probes, *value.shape))
                plus, minus = model.probe(X, y, name, directions=directions, h=h)
                comparisons.append(numeric.compare_directions(value, grad, directions, plus, minus,
                                                              np.array([loss]), np.ones(1), **common))
        except Refused as refused:
            add(name, refused.problem.status, refused.problem.message, geometry, kind="call",
                finding=refused.problem.finding)
            continue
        worst = max(comparisons, key=lambda c: (c.status == Status.FAIL, c.rel_error))
        add(name, worst.status, worst.message, geometry, rel_error=worst.rel_error, abs_error=worst.abs_error,
            worst_index=worst.worst_index, got=worst.got, expected=worst.expected,
            compared=sum(c.compared for c in comparisons),
            mode="full" if value.size <= FULL_LIMIT else "sample+directional")
    for name in grads:
        if name not in params:
            add(name, Status.ERROR, f"grads has an entry {name!r} that params lacks", geometry, kind="call",
                finding="returns")


def _compare_reference(reference, kwargs, reg, params, X, y, loss, grads, geometry, add) -> None:
    ours = reference(**{**kwargs, "reg": reg, "dtype": np.float64})
    if set(ours.params) != set(params):
        add("loss", Status.DIFFERS, f"params holds {sorted(params)}, the course's model {sorted(ours.params)}",
            geometry, kind="reference")
        return
    for key, value in params.items():
        if ours.params[key].shape != value.shape:
            add(key, Status.DIFFERS, f"params[{key!r}] has shape {value.shape}, the course's model "
                f"{ours.params[key].shape}", geometry, kind="reference")
            return
        ours.params[key] = value.astype(np.float64)
    want_loss, want_grads = ours.loss(X.copy(), y.copy())
    scale = max(abs(want_loss), 1e-300)
    if abs(loss - want_loss) > 1e-9 * scale:
        add("loss", Status.DIFFERS, f"the loss differs from the reference model's with the same parameters: "
            f"got {loss:.10g}, expected {want_loss:.10g}", geometry, kind="reference", got=loss, expected=want_loss)
    else:
        add("loss", Status.PASS, "", geometry, kind="reference", got=loss, expected=want_loss)
    for key, facts in grads.items():
        if key not in want_grads or not isinstance(facts, dict) or not isinstance(facts.get("array"), np.ndarray):
            continue
        got = facts["array"].astype(np.float64)
        want = want_grads[key]
        if got.shape != want.shape:
            continue
        diff = np.abs(got - want)
        relative = float(diff.max()) / max(float(np.abs(want).max()), 1e-300) if diff.size else 0.0
        status = Status.PASS if relative <= 1e-9 else Status.DIFFERS
        index = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape)) if diff.size else None
        message = "" if status == Status.PASS else (
            f"grads[{key!r}] differs from the reference model's: max |diff| {float(diff.max()):.3g} at "
            f"{key}{list(index)}")
        add(key, status, message, geometry, kind="reference", rel_error=relative, worst_index=index)
