"""Click options for running checks in child processes: --isolate, --timeout, --memory-limit, --show-output, --force.

``gradcheck`` adds them with :func:`isolation_options` and reads them back
with :func:`isolation_settings`; ``grade`` reuses :class:`MemorySize`.
"""

from __future__ import annotations

from dataclasses import dataclass

import click

from cnncheck import memory
from cnncheck.errors import CnnCheckError


class MemorySize(click.ParamType):
    """A size such as ``512M``, ``2G`` or ``1.5GiB`` (binary units) in bytes; ``none`` for no limit."""

    name = "SIZE"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, int):
            return value
        if str(value).strip().lower() in ("none", "off", "unlimited"):
            return None
        try:
            return memory.parse_size(value)
        except CnnCheckError as exc:
            self.fail(str(exc), param, ctx)


@dataclass(frozen=True)
class IsolationSettings:
    """What the isolation options asked for.

    Attributes
    ----------
    isolate : bool
        Run each check in a child process (``--isolate``, implied by
        ``--timeout`` and ``--memory-limit``).
    timeout : float or None
        Seconds the module import and each check may take.
    memory_limit : int or None
        Bytes of address space the checked code may add.
    show_output : bool
        Print what the checked code wrote (captured in the children).
    force : bool
        Skip the memory guard.
    """

    isolate: bool = False
    timeout: float | None = None
    memory_limit: int | None = None
    show_output: bool = False
    force: bool = False


def isolation_options(func):
    """Add --isolate, --timeout, --memory-limit, --show-output and --force to a command."""
    options = [
        click.option("--isolate", is_flag=True,
                     help="Run each (layer, implementation) check in a child process of its own, so code that "
                          "hangs, exits or crashes costs only its own check (status timeout or crashed). "
                          "User modules are then never imported into the main process."),
        click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
                     help="Kill a check (or a module import) that runs longer; implies --isolate."),
        click.option("--memory-limit", type=MemorySize(), default=None, metavar="SIZE",
                     help="Cap the memory the checked code may allocate, e.g. 512M or 2G (Linux; an overrun is "
                          "'crashed: out of memory'); implies --isolate."),
        click.option("--show-output", is_flag=True,
                     help="With isolation, print what the checked code wrote to stdout and stderr (captured, "
                          "cut to its first and last 32 KiB) to stderr after the report."),
        click.option("--force", is_flag=True,
                     help="Run even when the estimated memory need exceeds the memory available."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def isolation_settings(kwargs: dict) -> IsolationSettings:
    """Pop the isolation options out of a command's kwargs."""
    timeout = kwargs.pop("timeout", None)
    memory_limit = kwargs.pop("memory_limit", None)
    isolate = bool(kwargs.pop("isolate", False)) or timeout is not None or memory_limit is not None
    return IsolationSettings(isolate, timeout, memory_limit, bool(kwargs.pop("show_output", False)),
                             bool(kwargs.pop("force", False)))
