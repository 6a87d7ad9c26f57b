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
        The seed's ``rel_error``: max over compared elements of
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


def _jsonable(value):
    """Tuples to lists, recursively, for JSON."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
