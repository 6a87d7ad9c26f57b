"""What code under test did, in words: facts from a session become problems with a status.

:class:`cnncheck.runner.Server` describes every call without judging it;
this module is the one place that judges, so ``gradcheck``, ``bench`` and
``grade`` describe the same misbehaviour with the same status and the same
sentence.  Facts from a child process are untrusted: anything that is not
shaped as the runner shapes it raises :class:`ProtocolViolation`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnncheck.specs import shape_text
from cnncheck.status import Status


@dataclass(frozen=True)
class Problem:
    """Something wrong with what code under test did.

    Attributes
    ----------
    status : Status
    message : str
        One sentence: what happened, what was expected.
    finding : str
        A short name for warnings and protocol findings (``mutates-dout``).
    location : str
        ``file:line`` in the code under test, or "".
    traceback : str
        The traceback when it raised.
    """

    status: Status
    message: str
    finding: str = ""
    location: str = ""
    traceback: str = ""


class Refused(Exception):
    """A call whose result cannot be used: carries the :class:`Problem`."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


class ProtocolViolation(Exception):
    """Facts that do not have the shape the runner gives them: the child did not speak the protocol."""


# -- reading untrusted facts -------------------------------------------------------------------
def field(facts, key: str, kinds, optional: bool = False):
    """``facts[key]`` when it is one of ``kinds`` (None allowed when ``optional``)."""
    if not isinstance(facts, dict):
        raise ProtocolViolation(f"expected a dict of facts, got {type(facts).__name__}")
    value = facts.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, kinds) or isinstance(value, bool) and bool not in _tuple(kinds):
        raise ProtocolViolation(f"fact {key!r} has the wrong type ({type(value).__name__})")
    return value


def _tuple(kinds) -> tuple:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def _text(value) -> str:
    return value if isinstance(value, str) else ""


# -- exceptions ---------------------------------------------------------------------------------
def raised(what: str, facts) -> Problem:
    """The problem of a call that raised: ``what`` names the call (``forward``, ``backward``)."""
    exception = field(facts, "exception", str)
    message = _text(facts.get("message"))
    location = _text(facts.get("location"))
    tb = _text(facts.get("traceback"))
    if facts.get("not_implemented"):
        text = f"{what} raised NotImplementedError" + (f": {message}" if message else "")
        return Problem(Status.NOT_IMPLEMENTED, text, "not-implemented", location=location, traceback=tb)
    if exception == "SystemExit":
        code = facts.get("exit_code")
        return Problem(Status.ERROR, f"{what} called sys.exit({code!r})", "exits", location=location, traceback=tb)
    if facts.get("memory"):
        return Problem(Status.ERROR, f"{what} ran out of memory (MemoryError)", "memory", location=location,
                       traceback=tb)
    if facts.get("blocked"):
        return Problem(Status.FORBIDDEN_ACCESS, f"{what} raised {exception}: {message}", "blocked",
                       location=location, traceback=tb)
    text = f"{what} raised {exception}" + (f": {message}" if message else "")
    return Problem(Status.ERROR, text, "asserts" if exception == "AssertionError" else "raises", location=location,
                   traceback=tb)


def refusals(entries) -> list:
    """Problems for what the child's guard refused (an import of cnncheck, a protected file...)."""
    if not isinstance(entries, list):
        raise ProtocolViolation("the guard's refusals are not a list")
    problems = []
    for entry in entries:
        kind = field(entry, "kind", str)
        what = field(entry, "what", str)
        if kind == "import" and what == "cnncheck":
            problems.append(Problem(Status.USES_REFERENCE, "imports cnncheck, whose layers are the reference "
                                    "solution; a submission must compute its own results", "imports-cnncheck"))
        elif kind == "import":
            problems.append(Problem(Status.USES_REFERENCE, f"imports {what}, which this grading forbids "
                                    f"(--forbid-import)", "forbidden-import"))
        elif kind == "reference":
            problems.append(Problem(Status.USES_REFERENCE, f"reads cnncheck's own files ({what}), the reference "
                                    "solution; a submission must compute its own results", "imports-cnncheck"))
        elif kind == "open":
            problems.append(Problem(Status.FORBIDDEN_ACCESS, f"tried to read {what}, which a submission may not "
                                    "touch (cnncheck's own files, other submissions, the grades)", "reads-protected"))
        else:
            problems.append(Problem(Status.FORBIDDEN_ACCESS, f"tried to start a process ({what})", "starts-process"))
    return problems


def replacements(names) -> list:
    """Problems for watched functions the code replaced (``numpy.allclose``...)."""
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ProtocolViolation("the replaced functions are not a list of names")
    if not names:
        return []
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return [Problem(Status.TAMPERING, f"replaced {shown}: a submission may not change the libraries the checks "
                    "use", "replaces-functions")]


# -- returned values ------------------------------------------------------------------------------
def returned_kind(what: str, returned, expected: str) -> list:
    """The items of a returned value, or :class:`Refused` when its overall shape is wrong.

    ``expected`` is the phrase for the right shape (``a tuple (out, cache)``).
    """
    kind = field(returned, "kind", str)
    if kind == "none":
        raise Refused(Problem(Status.NOT_IMPLEMENTED, f"{what} returned None", "not-implemented"))
    if kind == "shape":
        got = field(returned, "got", dict)
        name = field(got, "type", str)
        length = got.get("length")
        text = name + (f" of length {length}" if isinstance(length, int) and not isinstance(length, bool) else "")
        raise Refused(Problem(Status.ERROR, f"{what} returned {text}, expected {expected}", "returns"))
    items = field(returned, "items", list)
    return items


def array(label: str, facts, *, shape, dtype) -> tuple:
    """Judge one returned array: ``(data, warnings)`` or :class:`Refused`.

    Parameters
    ----------
    label : str
        How the value is named in messages (``out``, ``dw``).
    facts : dict
        :func:`cnncheck.runner.array_facts` of it.
    shape : tuple
        The shape it must have.
    dtype : dtype
        The dtype of the inputs; another float dtype is a warning.

    Returns
    -------
    (ndarray, list of Problem)
        The data (its own dtype) and the warnings.
    """
    dtype = np.dtype(dtype)
    problem = facts.get("problem") if isinstance(facts, dict) else None
    if problem == "None":
        raise Refused(Problem(Status.NOT_IMPLEMENTED, f"{label} is None (not implemented yet?)", "not-implemented"))
    if problem is not None:
        raise Refused(Problem(Status.ERROR, f"{label} is {_text(problem) or 'unreadable'}, expected an ndarray",
                              "returns"))
    got_dtype = field(facts, "dtype", str)
    data = field(facts, "array", np.ndarray, optional=True)
    got_shape = field(facts, "shape", list)
    if data is None or data.dtype.kind not in "f" or data.dtype.itemsize < 4:
        raise Refused(Problem(Status.ERROR, f"{label} has dtype {got_dtype}, expected {dtype}", "dtype"))
    if list(data.shape) != list(got_shape):
        raise ProtocolViolation("an array's shape disagrees with its facts")
    if tuple(data.shape) != tuple(shape):
        hint = ""
        if 0 in data.shape:
            hint = " (it is empty: a slice such as [pad:-pad] is empty when pad is 0)"
        raise Refused(Problem(Status.ERROR, f"{label} has shape {shape_text(data.shape)}, expected "
                                            f"{shape_text(shape)}{hint}", "shape"))
    finite = np.isfinite(data)
    if not finite.all():
        index = tuple(int(i) for i in np.argwhere(~finite)[0])
        kind = "NaN" if np.isnan(data[index]) else "inf"
        raise Refused(Problem(Status.ERROR, f"{label} contains {kind} (first at {label}{list(index)})", "nan"))
    warnings = []
    if data.dtype != dtype:
        finding = "upcasts" if data.dtype.itemsize > dtype.itemsize else "downcasts"
        warnings.append(Problem(Status.WARNING, f"{label} is {data.dtype} for {dtype} inputs", finding))
    subclass = facts.get("subclass")
    if isinstance(subclass, str):
        masked = facts.get("masked")
        note = (f" with {masked} masked entries" if isinstance(masked, int) and masked else "")
        warnings.append(Problem(Status.WARNING, f"{label} is a {subclass}{note}, not a plain ndarray; cnncheck "
                                                "reads its data" + (", masked entries included" if note else ""),
                                "returns-subclass"))
    converted = facts.get("converted")
    if isinstance(converted, str):
        name = _text(facts.get("type"))
        warnings.append(Problem(Status.WARNING, f"{label} is a {name}, not an ndarray; cnncheck converted it",
                                "not-ndarray"))
    return data, warnings
