"""Errors that describe a bad request from the user.

Every class here is a ``ValueError``, so library callers can catch the
ordinary exception, and the CLI turns each into a usage error (exit 2).
cnncheck's own bugs are never wrapped in these.
"""

from __future__ import annotations


class CnnCheckError(ValueError):
    """A request cnncheck cannot carry out: bad shape, parameter or name."""


class UnknownNameError(CnnCheckError):
    """A layer or implementation name that is not registered.

    Parameters
    ----------
    kind : str
        What was looked up, for example ``"layer"`` or ``"implementation"``.
    name : str
        The name the user gave.
    known : sequence of str
        The names that would have worked; listed in the message.
    """

    def __init__(self, kind: str, name: str, known) -> None:
        self.kind = kind
        self.name = name
        self.known = tuple(known)
        choices = ", ".join(self.known) if self.known else "none"
        super().__init__(f"unknown {kind} {name!r}; known: {choices}")


class ModuleLoadError(CnnCheckError):
    """A user module given with ``--module`` that cannot be found or imported."""
