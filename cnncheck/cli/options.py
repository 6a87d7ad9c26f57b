"""Click options the commands share, most of them generated from the layer specs.

Every parameter of every layer spec becomes an option (``--pool-height``)
unless a command already has an option of that name (batchnorm's ``mode``
and ``eps`` against gradcheck's ``--mode`` and ``--eps``); every parameter
can also be given as ``-p name=value``.  Values are parsed and checked by
the spec, so a message names the layer and the parameter.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import click

from cnncheck.errors import CnnCheckError

#: Metavars per parameter kind.
_METAVARS = {"shape": "N,C,H,W", "kernel": "HH,WW", "int": "INT", "float": "X", "choice": "NAME", "seed": "INT"}


class CommaList(click.ParamType):
    """Comma-separated names; repeated options accumulate."""

    name = "NAMES"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        return tuple(p.strip() for p in str(value).split(","))


#: What ``--memory-limit none`` gives, told apart from the option not being given (None).
NO_LIMIT = -1


def memory_bytes(value) -> int | None:
    """A ``--memory-limit`` value as bytes, or None for no limit (``none`` or not given)."""
    return None if value is None or value == NO_LIMIT else int(value)


class MemorySize(click.ParamType):
    """A size such as ``512M``, ``2G`` or ``1.5GiB`` (binary units) in bytes; ``none`` for no limit (:data:`NO_LIMIT`)."""

    name = "SIZE"

    def convert(self, value, param, ctx):
        from cnncheck import memory

        if value is None or isinstance(value, int):
            return value
        if str(value).strip().lower() in ("none", "off", "unlimited"):
            return NO_LIMIT
        try:
            return memory.parse_size(value)
        except CnnCheckError as exc:
            self.fail(str(exc), param, ctx)


def names(groups) -> list:
    """Names from a repeated CommaList option, flattened; an empty name is kept (and refused later)."""
    return [name for group in groups for name in group]


def layer_parameter_options(reserved=()):
    """A decorator adding one option per layer parameter (unless ``reserved``), and ``-p NAME=VALUE``."""
    from cnncheck import catalog

    def decorate(func):
        seen = {}
        for spec in catalog.specs():
            for param in spec.params:
                if param.option and param.name not in seen and param.flag not in reserved:
                    seen[param.name] = (param, spec)
        for name, (param, spec) in reversed(list(seen.items())):
            takers = [s.name for s in catalog.specs() if name in s.param_names]
            help_text = f"{param.help[0].upper()}{param.help[1:]} ({', '.join(takers)})."
            func = click.option(param.flag, name, default=None, metavar=_METAVARS.get(param.kind, "VALUE"),
                                help=help_text)(func)
        func = click.option("-p", "--param", "param_values", multiple=True, metavar="NAME=VALUE",
                            help="Set any layer parameter, e.g. -p momentum=0.5 (repeatable); "
                                 "`cnncheck list` shows them all.")(func)
        return func

    return decorate


def parameter_overrides(kwargs: dict) -> dict:
    """Pop the layer-parameter options (and ``-p`` pairs) out of a command's kwargs; keep those given."""
    from cnncheck import catalog

    overrides = {}
    for name in {p.name for spec in catalog.specs() for p in spec.params}:
        value = kwargs.pop(name, None)
        if value is not None:
            overrides[name] = value
    for pair in kwargs.pop("param_values", ()) or ():
        name, sep, value = pair.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {pair!r}", param_hint="'-p'")
        known = {p.name for spec in catalog.specs() for p in spec.params}
        if name not in known:
            import difflib

            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise click.BadParameter(f"no layer has a parameter {name!r}{hint}; known: {', '.join(sorted(known))}",
                                     param_hint="'-p'")
        overrides[name] = value.strip()
    return overrides


def defaults_help(specs, purpose: str) -> str:
    """One help line per layer with its default parameters for ``purpose``."""
    lines = []
    for spec in specs:
        parts = []
        for key, value in spec.defaults(purpose).items():
            if isinstance(value, tuple):
                value = ",".join(map(str, value))
            parts.append(f"{key.replace('_', '-')} {value}")
        lines.append(f"  {spec.name:<8} {', '.join(parts)}")
    return "\n".join(lines)


def check_output_path(path, option: str) -> None:
    """Refuse, before any work, an output file whose folder is missing or not writable."""
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.isdir(path):
        raise click.BadParameter(f"{path} is a folder; give a file name", param_hint=f"'{option}'")
    if not os.path.isdir(folder):
        raise click.BadParameter(f"the folder {folder} does not exist", param_hint=f"'{option}'")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise click.BadParameter(f"cannot write {path} (permission denied)", param_hint=f"'{option}'")


@dataclass(frozen=True)
class Isolation:
    """What the isolation options asked for (``isolate`` None: the command's default)."""

    isolate: bool | None = None
    timeout: float | None = None
    memory_limit: int | None = None
    show_output: bool = False
    forbid: tuple = ()


def isolation_options(func):
    """Add --isolate/--no-isolate, --timeout, --memory-limit, --show-output and --forbid-import."""
    options = [
        click.option("--isolate/--no-isolate", "isolate", default=None,
                     help="Run user modules in a child process of their own (the default), or in cnncheck's "
                          "own process (--no-isolate, for a debugger); cnncheck's own layers always run in its "
                          "process."),
        click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
                     help="Stop a module import, or the work on one implementation of one layer, that runs "
                          "longer (status timeout)."),
        click.option("--memory-limit", type=MemorySize(), default=None, metavar="SIZE",
                     help="Cap the memory the checked code may allocate, such as 512M or 2G (Linux; an overrun "
                          "is 'crashed: out of memory')."),
        click.option("--show-output", is_flag=True,
                     help="Print what the checked code wrote to stdout and stderr (its first and last 32 KiB) "
                          "to stderr after the report."),
        click.option("--forbid-import", "forbid", type=CommaList(), multiple=True, metavar="MODULES",
                     help="Modules the checked code may not import, such as torch,scipy (status "
                          "uses-reference); cnncheck itself is always forbidden."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def isolation_settings(kwargs: dict) -> Isolation:
    """Pop the isolation options out of a command's kwargs, refusing combinations that cannot apply."""
    isolate = kwargs.pop("isolate", None)
    settings = Isolation(isolate, kwargs.pop("timeout", None), kwargs.pop("memory_limit", None),
                         bool(kwargs.pop("show_output", False)),
                         tuple(n for n in names(kwargs.pop("forbid", ())) if n))
    if isolate is False:
        for flag, value in (("--timeout", settings.timeout), ("--memory-limit", settings.memory_limit),
                            ("--show-output", settings.show_output), ("--forbid-import", settings.forbid)):
            if value:
                raise click.UsageError(f"{flag} needs a child process; it does not apply with --no-isolate")
    return settings


def sandbox_for(settings: Isolation, *, jobs: int = 1, cwd: str | None = None, forbid_paths=()):
    """The :class:`~cnncheck.session.Sandbox` of these settings."""
    from cnncheck import machine
    from cnncheck.session import Sandbox

    env = machine.child_thread_env(jobs)
    return Sandbox(timeout=settings.timeout, memory_limit=memory_bytes(settings.memory_limit),
                   forbid_modules=settings.forbid,
                   forbid_paths=tuple(forbid_paths), cwd=cwd, env=env)
