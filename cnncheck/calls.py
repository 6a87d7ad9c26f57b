"""Calling one implementation of one layer through its session, the way a network calls it.

A :class:`Caller` turns a spec's :class:`~cnncheck.specs.Sample` into
requests (``out, cache = forward(...)``, ``grads = backward(dout, cache)``,
perturbed forwards for centred differences, timed calls), and every answer
into arrays or :class:`~cnncheck.boundary.Problem` records through
:mod:`cnncheck.boundary`.  ``gradcheck``, ``bench`` and ``grade`` all call
code under test through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cnncheck import boundary
from cnncheck.boundary import Problem, ProtocolViolation, Refused
from cnncheck.specs import Impl, LayerSpec, Sample
from cnncheck.status import Status

#: Output values sent back per probe request, at most (bounds one answer's size).
PROBE_BATCH_VALUES = 1 << 21


@dataclass
class Forward:
    """A forward call: its handle in the session, the output, and warnings about what it returned."""

    handle: int
    out: np.ndarray
    warnings: list
    grads: dict = field(default_factory=dict)   # a loss returns its gradient with the loss


@dataclass
class Backward:
    """A backward call: its handle, each gradient (an array or a Problem), and warnings."""

    handle: int
    grads: dict
    warnings: list


class Caller:
    """Calls ``impl`` of ``spec`` in ``session`` on arrays of ``dtype``.

    Every answer is also searched for what a child's guard refused and for
    replaced library functions; those problems collect in ``flags``.
    """

    def __init__(self, session, spec: LayerSpec, impl: Impl, dtype) -> None:
        self.session = session
        self.spec = spec
        self.impl = impl
        self.dtype = np.dtype(dtype)
        self.flags: list = []

    # -- requests ---------------------------------------------------------------------------
    def _request(self, request: dict) -> dict:
        response = self.session.request(request)
        if not isinstance(response, dict):
            raise ProtocolViolation("the answer is not a dict")
        for problem in boundary.refusals(response.get("refused", [])) + \
                boundary.replacements(response.get("replaced", [])):
            if problem not in self.flags:
                self.flags.append(problem)
        return response

    def arguments(self, sample: Sample, layout="C") -> list:
        """Request arguments for forward: parameter dicts, numbers, and arrays in ``layout`` (one layout for
        every input with a gradient, or ``{name: layout}`` for some of them; the others C-contiguous)."""
        args = []
        for spec_input in self.spec.inputs:
            value = sample.values[spec_input.name]
            if isinstance(value, np.ndarray):
                chosen = layout.get(spec_input.name, "C") if isinstance(layout, dict) else layout
                args.append({"value": value, "layout": chosen if spec_input.role == "grad" else "C"})
            else:
                args.append({"value": value})
        return args

    def forward(self, sample: Sample, params, *, layout="C", what: str = "forward") -> Forward:
        """``forward(*args)``: the output (and a loss's gradients) or :class:`Refused`."""
        loss = self.spec.protocol == "loss"
        response = self._request({"op": "call", "fn": self.impl.forward, "args": self.arguments(sample, layout),
                                  "expect": "loss" if loss else "pair"})
        handle = boundary.field(response, "handle", int)
        if response.get("raised") is not None:
            raise Refused(boundary.raised(what, response["raised"]))
        expected = "a tuple (loss, dx)" if loss else "a tuple (out, cache)"
        items = boundary.returned_kind(what, response.get("returned"), expected)
        if not items:
            raise ProtocolViolation("a returned value without items")
        out_shape = tuple(self.spec.output_shape(params))
        label = "loss" if loss else "out"
        out, warnings = boundary.array(label, items[0], shape=out_shape, dtype=self.dtype)
        if loss:   # a loss is a number: a Python float (float64) is what the course returns
            warnings = [w for w in warnings if w.finding not in ("not-ndarray", "upcasts")]
        result = Forward(handle, out, warnings)
        if loss:
            result.grads = self._grads(items[1:], sample, what)
        return result

    def backward(self, forward: Forward, dout: np.ndarray, sample: Sample, *, layout: str = "C") -> Backward:
        """``backward(dout, cache)`` on the cache of ``forward``; per-gradient problems are kept, not raised."""
        if self.spec.protocol == "loss":
            return Backward(forward.handle, forward.grads, [])
        grads = self.spec.grads
        response = self._request({"op": "call", "fn": self.impl.backward,
                                  "args": [{"value": dout, "layout": layout}, {"ref": [forward.handle, "result", 1]}],
                                  "expect": f"grads:{len(grads)}"})
        handle = boundary.field(response, "handle", int)
        if response.get("raised") is not None:
            raise Refused(boundary.raised("backward", response["raised"]))
        if len(grads) == 1:
            expected = f"d{grads[0]}"
        else:
            expected = "a tuple (" + ", ".join("d" + g for g in grads) + ")"
        items = boundary.returned_kind("backward", response.get("returned"), expected)
        if len(items) != len(grads):
            raise ProtocolViolation("the number of gradients disagrees with the request")
        return Backward(handle, self._grads(items, sample, "backward"), [])

    def _grads(self, items: list, sample: Sample, what: str) -> dict:
        grads = {}
        for name, facts in zip(self.spec.grads, items):
            x = sample.values[name]
            try:
                grads[name] = boundary.array("d" + name, facts, shape=x.shape, dtype=self.dtype)
            except Refused as refused:
                grads[name] = refused.problem
        return grads

    def fetch(self, ref: list, as_: str = "array"):
        """The current state of a stored object: facts of an array, ``[path, array]`` pairs, or a dict."""
        response = self._request({"op": "fetch", "ref": ref, "as": as_})
        if response.get("missing"):
            return None
        if as_ == "arrays":
            pairs = boundary.field(response, "arrays", list)
            out = []
            for pair in pairs:
                if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)
                        and isinstance(pair[1], np.ndarray)):
                    raise ProtocolViolation("a fetched array is malformed")
                out.append((pair[0], pair[1]))
            return out
        if as_ == "dict":
            return boundary.field(response, "dict", dict)
        return boundary.field(response, "item", dict)

    def drop(self, *handles) -> None:
        self._request({"op": "drop", "handles": [h for h in handles if h is not None]})

    def probe(self, sample: Sample, target: str, *, index=None, directions=None, h: float, size: int) -> tuple:
        """Outputs at ``x + h e`` and ``x - h e`` for each point; ``(plus, minus)`` float64 of shape (points, size).

        Raises :class:`Refused` when a perturbed call raises or returns
        something unusable (the problem says it happened while probing).
        """
        position = [i.name for i in self.spec.inputs].index(target)
        count = len(index) if index is not None else len(directions)
        per = max(1, PROBE_BATCH_VALUES // max(1, 2 * size))
        pluses, minuses = [], []
        for start in range(0, count, per):
            request = {"op": "probe", "fn": self.impl.forward, "args": self.arguments(sample), "target": position,
                       "h": float(h), "size": int(size), "item": 0,
                       "expect": "loss" if self.spec.protocol == "loss" else "pair"}
            if index is not None:
                request["index"] = np.asarray(index[start:start + per], dtype=np.int64)
            else:
                request["directions"] = np.asarray(directions[start:start + per], dtype=np.int8)
            response = self._request(request)
            failed = response.get("failed")
            what = f"forward (while probing d{target})"
            if failed is not None:
                if not isinstance(failed, dict):
                    raise ProtocolViolation("a probe failure is malformed")
                if failed.get("raised") is not None:
                    raise Refused(boundary.raised(what, failed["raised"]))
                if failed.get("returned") is not None:
                    raise Refused(Problem(Status.ERROR, f"{what} returned an output of another shape or kind "
                                                        "than for the unperturbed input"))
                raise Refused(Problem(Status.ERROR, f"{what}: {failed.get('problem', 'failed')}"))
            plus = boundary.field(response, "plus", np.ndarray)
            minus = boundary.field(response, "minus", np.ndarray)
            want = (min(per, count - start), size)
            if plus.shape != want or minus.shape != want or plus.dtype != np.float64 or minus.dtype != np.float64:
                raise ProtocolViolation("probe outputs have the wrong shape")
            pluses.append(plus)
            minuses.append(minus)
        return np.concatenate(pluses), np.concatenate(minuses)
