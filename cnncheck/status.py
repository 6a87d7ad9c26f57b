"""Statuses and exit codes: the one definition every command and reporter uses."""

from __future__ import annotations

import enum


class _Text(str, enum.Enum):
    """A string enum whose members print and serialise as their value."""

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__format__(str(self), spec)


class Status(_Text):
    """How one check of one implementation ended.

    Statuses that are the implementation's fault fail a run; ``warning`` fails
    it only with ``--strict``.
    """

    PASS = "pass"                        # the check found nothing wrong
    WARNING = "warning"                  # a finding that is not a wrong number (writes into dout, ...)
    FAIL = "fail"                        # a wrong gradient, or a call-protocol or subgradient finding
    DIFFERS = "differs"                  # forward output or a gradient differs from the reference
    ERROR = "error"                      # raised, returned the wrong kind/shape/dtype of thing, NaN
    NOT_IMPLEMENTED = "not-implemented"  # returned None, raised NotImplementedError, or is missing
    TIMEOUT = "timeout"                  # an isolated check ran past --timeout
    CRASHED = "crashed"                  # an isolated child died (signal, exit code, out of memory)
    PROTOCOL_ERROR = "protocol-error"    # an isolated child answered out of protocol (forged, garbled)
    USES_REFERENCE = "uses-reference"    # imported cnncheck (the reference) or a forbidden module
    FORBIDDEN_ACCESS = "forbidden-access"  # read protected files or started a process
    TAMPERING = "tampering"              # replaced functions of numpy, json, pickle, ...
    INTERNAL_ERROR = "internal-error"    # cnncheck itself failed on this implementation

    @property
    def fails(self) -> bool:
        """True when this status fails a run (``warning`` aside, which depends on ``--strict``)."""
        return self not in (Status.PASS, Status.WARNING)


#: Statuses in the order a report counts them.
STATUSES = tuple(Status)

#: Statuses that say the implementation tried to cheat.
CHEATING = (Status.USES_REFERENCE, Status.FORBIDDEN_ACCESS, Status.TAMPERING, Status.PROTOCOL_ERROR)

#: Statuses that say the code under test could not be run to the end.
RUN_FAILURES = (Status.ERROR, Status.TIMEOUT, Status.CRASHED, Status.INTERNAL_ERROR)


def severity(status: Status) -> int:
    """Rank of a status, larger is worse: pass < warning < fail/differs < not-implemented < errors < cheating."""
    order = {Status.PASS: 0, Status.WARNING: 1, Status.FAIL: 3, Status.DIFFERS: 3, Status.NOT_IMPLEMENTED: 4,
             Status.ERROR: 5, Status.TIMEOUT: 5, Status.CRASHED: 5, Status.INTERNAL_ERROR: 5,
             Status.PROTOCOL_ERROR: 6, Status.TAMPERING: 6, Status.FORBIDDEN_ACCESS: 6,
             Status.USES_REFERENCE: 6}
    return order[Status(status)]


class ExitCode(enum.IntEnum):
    """Exit statuses of every command."""

    OK = 0            # everything passed (bench: every row measured and agreeing)
    FAILED = 1        # a check failed, or a bench row differs, errs or regressed
    USAGE = 2         # invalid request: one line on stderr, nothing run
    INTERRUPTED = 130  # Ctrl-C: the report of what finished was printed
