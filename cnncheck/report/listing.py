"""Render what ``cnncheck list`` shows: layers, parameters, geometries and implementations.

:func:`catalogue` turns a registry into a JSON-ready dict; the renderers
format that dict.
"""

from __future__ import annotations

import json

PARAM_HEADERS = ("layer", "option", "gradcheck default", "bench default", "meaning")
IMPL_HEADERS = ("layer", "gradients", "impl", "backend", "source")
GEOMETRY_HEADERS = ("layer", "geometry", "checks")


def _value(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value)


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def catalogue(registry, backend: str = "") -> dict:
    """What ``cnncheck list`` shows, as a JSON-ready dict."""
    layers = []
    for spec in registry.layers():
        parameters = [{"name": p.name, "option": p.flag if p.option else f"-p {p.name}=...", "help": p.help,
                       "gradcheck_default": _jsonable(p.default), "bench_default": _jsonable(p.bench_default())}
                      for p in spec.params]
        geometries = [{"label": g.label, "params": {k: _jsonable(v) for k, v in g.params.items()},
                       "where": spec.describe(spec.resolve(g.params)), "note": g.note} for g in spec.geometries]
        implementations = [{"name": impl.name, "backend": impl.backend, "source": impl.source,
                            "reference": impl.name == spec.reference} for impl in registry.impls(spec.name)]
        layers.append({"name": spec.name, "title": spec.title, "gradients": ["d" + g for g in spec.grads],
                       "functions": {k or "": list(v) for k, v in spec.functions.items()},
                       "reference": spec.reference, "has_kinks": spec.has_kinks, "parameters": parameters,
                       "geometries": geometries, "implementations": implementations})
    return {"command": "list", "layers": layers, "fast_backend": backend}


def _tables(data: dict) -> tuple:
    params = [[layer["name"], p["option"], _value(p["gradcheck_default"]), _value(p["bench_default"]), p["help"]]
              for layer in data["layers"] for p in layer["parameters"]]
    impls = [[layer["name"], ", ".join(layer["gradients"]), impl["name"] + (" (reference)" if impl["reference"] else ""),
              impl["backend"], impl["source"]] for layer in data["layers"] for impl in layer["implementations"]]
    geometries = [[layer["name"], g["label"], g["where"]] for layer in data["layers"] for g in layer["geometries"]]
    return params, impls, geometries


def render_text(data: dict, fmt: str = "plain") -> str:
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    from tabulate import tabulate

    style = "github" if fmt == "markdown" else "simple"
    params, impls, geometries = _tables(data)
    heading = (lambda text: f"## {text}") if fmt == "markdown" else (lambda text: text)
    return "\n".join([
        heading("Layers and parameters"),
        tabulate(params, headers=PARAM_HEADERS, tablefmt=style, disable_numparse=True), "",
        heading("Geometries of the gradcheck battery"),
        tabulate(geometries, headers=GEOMETRY_HEADERS, tablefmt=style, disable_numparse=True), "",
        heading("Implementations"),
        tabulate(impls, headers=IMPL_HEADERS, tablefmt=style, disable_numparse=True), "",
        f"fast layers run on: {data['fast_backend']}",
    ]) + "\n"


def rich_renderable(data: dict, width: int | None = None):
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    params, impls, geometries = _tables(data)
    parts = []
    for title, headers, rows in (("Layers and parameters", PARAM_HEADERS, params),
                                 ("Geometries of the gradcheck battery", GEOMETRY_HEADERS, geometries),
                                 ("Implementations", IMPL_HEADERS, impls)):
        table = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD)
        for header in headers:
            table.add_column(header, no_wrap=header in ("layer", "impl", "option"))
        for row in rows:
            table.add_row(*row)
        parts.append(table)
    parts.append(Text(f"fast layers run on: {data['fast_backend']}"))
    return Group(*parts)
