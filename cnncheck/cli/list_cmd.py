"""``cnncheck list``: the layers, their parameters and defaults, and the implementations available."""

from __future__ import annotations

import json
import sys

import click

from cnncheck import __version__
from cnncheck.cli.common import usage_errors
from cnncheck.plugins import build_registry
from cnncheck.registry import Registry
from cnncheck.specs import PARAMETERS

FORMATS = ("rich", "plain", "json")

EPILOG = """\b
Examples:
  cnncheck list
  cnncheck list --module cnn/layers.py
  cnncheck list --format json
"""


def _value(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value)


def catalog(registry: Registry) -> dict:
    """What ``cnncheck list`` shows, as a JSON-ready dict."""
    from cnncheck.layers import fast

    layers = []
    for spec in registry.layers():
        parameters = [{
            "name": name,
            "option": "--" + name.replace("_", "-"),
            "help": PARAMETERS.get(name, ""),
            "gradcheck_default": _jsonable(spec.gradcheck_defaults.get(name)),
            "bench_default": _jsonable(spec.bench_defaults.get(name)),
        } for name in spec.params]
        implementations = [{"name": impl.name, "backend": impl.backend, "source": impl.source}
                           for impl in registry.impls(spec.name)]
        layers.append({"name": spec.name, "title": spec.title, "gradients": ["d" + g for g in spec.grads],
                       "has_kinks": spec.has_kinks, "parameters": parameters,
                       "implementations": implementations})
    return {"command": "list", "version": __version__, "fast_backend": fast.BACKEND, "layers": layers}


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def _tables(data: dict) -> tuple[list, list]:
    params = [[layer["name"], p["option"], _value(p["gradcheck_default"]), _value(p["bench_default"]), p["help"]]
              for layer in data["layers"] for p in layer["parameters"]]
    impls = [[layer["name"], ", ".join(layer["gradients"]), impl["name"], impl["backend"], impl["source"]]
             for layer in data["layers"] for impl in layer["implementations"]]
    return params, impls


PARAM_HEADERS = ("layer", "option", "gradcheck default", "bench default", "meaning")
IMPL_HEADERS = ("layer", "gradients", "impl", "backend", "source")


def render_plain(data: dict) -> str:
    """Both tables through tabulate, and the fast backend."""
    from tabulate import tabulate

    params, impls = _tables(data)
    return "\n".join([
        "Layers and parameters",
        tabulate(params, headers=PARAM_HEADERS, tablefmt="simple", disable_numparse=True),
        "",
        "Implementations",
        tabulate(impls, headers=IMPL_HEADERS, tablefmt="simple", disable_numparse=True),
        "",
        f"fast layers run on: {data['fast_backend']}",
    ]) + "\n"


def render_rich(data: dict):
    """Both tables as a Rich renderable."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    params, impls = _tables(data)
    first = Table(title="Layers and parameters", title_justify="left", header_style="bold")
    for header in PARAM_HEADERS:
        first.add_column(header)
    for row in params:
        first.add_row(*row)
    second = Table(title="Implementations", title_justify="left", header_style="bold")
    for header in IMPL_HEADERS:
        second.add_column(header)
    for row in impls:
        second.add_row(*row)
    return Group(first, second, Text(f"fast layers run on: {data['fast_backend']}"))


@click.command("list", epilog=EPILOG)
@click.option("--module", "modules", multiple=True, metavar="PATH.py|MODULE",
              help="Also list the implementations a user layers module defines; repeatable.")
@click.option("--no-entry-points", is_flag=True,
              help="Do not load implementations registered by installed packages.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Output format (default: rich on a terminal, plain when piped).")
def list_layers(modules, no_entry_points, fmt) -> None:
    """List the layers, their parameters with gradcheck and bench defaults, and their implementations.

    The backend column says what does the work: python loops (naive), numpy,
    cython or numpy for fast (the compiled im2col kernel or its numpy
    fallback), torch, user (a --module) or missing (a function the module
    lacks).
    """
    with usage_errors():
        registry = build_registry(modules, entry_points=not no_entry_points)
    data = catalog(registry)
    if fmt is None:
        fmt = "rich" if sys.stdout.isatty() else "plain"
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
    elif fmt == "plain":
        click.echo(render_plain(data), nl=False)
    else:
        from rich.console import Console

        Console(file=sys.stdout).print(render_rich(data))
