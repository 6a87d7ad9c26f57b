"""Click options shared by ``gradcheck`` and ``bench``: layer parameters and selection."""

from __future__ import annotations


import click

from cnncheck.specs import PARAMETERS


class IntTuple(click.ParamType):
    """Comma-separated positive integers, e.g. ``4,3,5,5``; ``K`` alone gives ``(K,)``."""

    name = "INTS"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = [p.strip() for p in str(value).replace("x", ",").split(",")]
        try:
            numbers = tuple(int(p) for p in parts)
        except ValueError:
            self.fail(f"expected comma-separated integers such as 4,3,5,5, got {value!r}", param, ctx)
        if any(n < 1 for n in numbers):
            self.fail(f"sizes must be positive, got {value!r}", param, ctx)
        return numbers


class CommaList(click.ParamType):
    """Comma-separated names; repeated options accumulate."""

    name = "NAMES"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        return tuple(p.strip() for p in str(value).split(",") if p.strip())


def layer_parameter_options(func):
    """Add --shape, --filters, --kernel, --stride, --pad, --pool-height, --pool-width."""
    options = [
        click.option("--shape", type=IntTuple(), default=None, metavar="N,C,H,W", help=PARAMETERS["shape"] + "."),
        click.option("--filters", type=click.IntRange(min=1), default=None, metavar="F",
                     help=PARAMETERS["filters"] + "."),
        click.option("--kernel", type=IntTuple(), default=None, metavar="HH,WW", help=PARAMETERS["kernel"] + "."),
        click.option("--stride", type=click.IntRange(min=1), default=None, help=PARAMETERS["stride"] + "."),
        click.option("--pad", type=click.IntRange(min=0), default=None, help=PARAMETERS["pad"] + "."),
        click.option("--pool-height", type=click.IntRange(min=1), default=None, help=PARAMETERS["pool_height"] + "."),
        click.option("--pool-width", type=click.IntRange(min=1), default=None, help=PARAMETERS["pool_width"] + "."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def parameter_overrides(kwargs: dict) -> dict:
    """Pop the layer-parameter options out of a command's kwargs; keep those given."""
    overrides = {}
    for name in PARAMETERS:
        value = kwargs.pop(name, None)
        if value is not None:
            overrides[name] = value
    return overrides


def defaults_help(specs, purpose: str, separator: str = ",") -> str:
    """One help line per layer listing its default parameters for ``purpose``.

    Parameters
    ----------
    specs : iterable of LayerSpec
    purpose : {"gradcheck", "bench"}
    separator : str
        Joins the sizes of a tuple value, e.g. ``4,3,5,5`` or ``4x3x5x5``.
    """
    lines = []
    for spec in specs:
        defaults = spec.gradcheck_defaults if purpose == "gradcheck" else spec.bench_defaults
        parts = []
        for key, value in defaults.items():
            if isinstance(value, tuple):
                value = separator.join(map(str, value))
            parts.append(f"{key.replace('_', '-')} {value}")
        lines.append(f"  {spec.name:<7} {', '.join(parts)}")
    return "\n".join(lines)
