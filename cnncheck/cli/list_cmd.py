"""``cnncheck list``: the layers, their parameters, geometries and implementations."""

from __future__ import annotations

import sys

import click

from cnncheck import report as reporters
from cnncheck.cli.common import usage_errors

EPILOG = """\b
Examples:
  cnncheck list
  cnncheck list --module cnn/layers.py
  cnncheck list --format json
"""


@click.command("list", epilog=EPILOG)
@click.option("--module", "modules", multiple=True, metavar="PATH.py|MODULE",
              help="Also list the implementations a layers module defines; repeatable.")
@click.option("--no-entry-points", is_flag=True, help="Skip implementations that installed packages register.")
@click.option("--format", "fmt", type=click.Choice(reporters.FORMATS["list"]), default=None,
              help="Output format [default: rich on a terminal, plain when piped].")
def list_layers(modules, no_entry_points, fmt) -> None:
    """List the layers, their parameters with gradcheck and bench defaults, the geometries
    of the gradcheck battery, and the implementations.

    The backend column says what does the work: python loops (naive), numpy,
    cython or numpy for fast (the compiled kernels or their numpy fallback),
    torch, user (a --module) or missing (a function the module lacks).
    """
    from cnncheck import loading
    from cnncheck.layers import fast
    from cnncheck.report.listing import catalogue

    with usage_errors():
        loaded = loading.load(modules, entry_points=not no_entry_points)
        try:
            if loaded.failures:
                raise loading.CnnCheckError(loaded.failures[0].message)
            data = catalogue(loaded.registry, fast.BACKEND)
        finally:
            loaded.close()
    fmt = fmt or reporters.default_format("list", sys.stdout)
    if fmt == "rich":
        from rich.console import Console

        console = Console(file=sys.stdout)
        console.print(reporters.renderable("list", data, console.width))
    else:
        click.echo(reporters.render("list", fmt, data), nl=False)
