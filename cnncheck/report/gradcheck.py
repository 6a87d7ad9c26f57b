"""Render a :class:`~cnncheck.results.GradcheckReport`: Rich, plain, markdown, GitHub, JSON, JUnit, HTML.

Reporters only format: every number comes from the result objects.
"""

from __future__ import annotations

import html
import json
import os
import xml.etree.ElementTree as ET

from cnncheck.results import GradcheckReport, GradcheckResult, Status

#: Formats :func:`render_text` accepts (``rich`` goes through :func:`rich_renderable`).
TEXT_FORMATS = ("plain", "markdown", "github", "json")

#: Rich style of each status.
STATUS_STYLES = {
    Status.PASS: "bold green",
    Status.KINK: "bold yellow",
    Status.FAIL: "bold red",
    Status.ERROR: "bold red",
    Status.NOT_IMPLEMENTED: "bold magenta",
    Status.MUTATED: "bold red",
    Status.TIMEOUT: "bold red",
    Status.CRASHED: "bold red",
}

HEADERS = ("layer", "impl", "grad", "status", "rel error", "threshold", "abs error", "worst index", "mode")


def _num(value) -> str:
    return "-" if value is None else f"{value:.2e}"


def _index(result: GradcheckResult) -> str:
    if result.worst_index is None:
        return "-"
    return "(" + ", ".join(str(i) for i in result.worst_index) + ")"


def _row(result: GradcheckResult) -> list[str]:
    return [result.layer, result.impl, result.gradient, result.status, _num(result.rel_error),
            f"{result.threshold:.0e}", _num(result.abs_error), _index(result), result.mode]


def _where(location: str) -> tuple[str, int | None]:
    """(path relative to the working directory when inside it, line) of a ``file:line``."""
    path, _, line = location.rpartition(":")
    if not path or not line.isdigit():
        return location, None
    try:
        rel = os.path.relpath(path)
        if not rel.startswith(".."):
            path = rel
    except ValueError:   # another drive on Windows
        pass
    return path, int(line)


def _note(result: GradcheckResult, gradients: list[str] | None = None) -> str:
    grads = ", ".join(gradients) if gradients else result.gradient
    text = f"{result.layer}/{result.impl} {grads}: {result.status}: {result.message}"
    if result.location:
        path, line = _where(result.location)
        text += f" [{path}:{line}]" if line is not None else f" [{path}]"
    return text


def _grouped(report: GradcheckReport) -> list[tuple[GradcheckResult, list[str]]]:
    """Results that are not a pass, those of one implementation with one status and message together."""
    groups: dict = {}
    for r in report.results:
        if r.status == Status.PASS:
            continue
        key = (r.layer, r.impl, r.status, r.message, r.location)
        groups.setdefault(key, (r, []))[1].append(r.gradient)
    return list(groups.values())


def notes(report: GradcheckReport) -> list[str]:
    """One line per problem: what happened and where (gradients sharing it named together)."""
    return [_note(r, gradients) for r, gradients in _grouped(report)]


def summary_line(report: GradcheckReport) -> str:
    """``PASSED``/``FAILED``/``INTERRUPTED``, the count per status, and the settings."""
    counts = {status: n for status, n in report.counts().items() if n}
    parts = ", ".join(f"{n} {status}" for status, n in counts.items()) or "nothing checked"
    if report.interrupted:
        verdict = "INTERRUPTED"
    else:
        verdict = "PASSED" if report.passed else "FAILED"
    config = report.config
    settings = (f"{config.get('dtype', 'float64')}, max error {report.threshold:g}, eps {config.get('eps', 0):g}, "
                f"mode {config.get('mode', 'auto')}, seed {config.get('seed', 0)}")
    missing = " (missing implementations allowed)" if report.allow_missing and counts.get(Status.NOT_IMPLEMENTED) \
        else ""
    count = len(report.results)
    return f"{verdict}: {count} gradient{'' if count == 1 else 's'}: {parts}{missing} [{settings}]"


# -- text formats ------------------------------------------------------------------
def render_text(report: GradcheckReport, fmt: str = "plain") -> str:
    """The report as text in ``plain``, ``markdown``, ``github`` or ``json``; ends with a newline."""
    if fmt == "json":
        return render_json(report)
    if fmt == "github":
        return render_github(report)
    from tabulate import tabulate

    rows = [_row(r) for r in report.results]
    if fmt == "markdown":
        table = tabulate(rows, headers=HEADERS, tablefmt="github", disable_numparse=True)
        lines = [table, "", f"**{summary_line(report)}**"]
        extra = notes(report)
        if extra:
            lines += [""] + [f"- {line}" for line in extra]
        return "\n".join(lines) + "\n"
    if fmt != "plain":
        raise ValueError(f"unknown format {fmt!r}; known: rich, {', '.join(TEXT_FORMATS)}")
    table = tabulate(rows, headers=HEADERS, tablefmt="simple", disable_numparse=True) if rows else "(no checks)"
    lines = [table, ""] + notes(report) + [summary_line(report)]
    return "\n".join(lines) + "\n"


def render_json(report: GradcheckReport) -> str:
    """The JSON document of ``report.to_dict()``, strict JSON (no NaN), ending with a newline."""
    return json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render_github(report: GradcheckReport) -> str:
    """GitHub Actions workflow commands: one annotation per result that is not a pass, then the plain table.

    Failures and errors are ``::error``; a missing implementation allowed by
    ``--allow-missing`` is ``::warning``; a kink is ``::notice``.  Results
    from a user file point at the file and line.
    """
    lines = []
    for result, gradients in _grouped(report):
        if result.status == Status.KINK:
            level = "notice"
        elif report.counts_as_passed(result):
            level = "warning"
        else:
            level = "error"
        props = []
        if result.location:
            path, line = _where(result.location)
            props.append(f"file={_escape_property(path)}")
            if line is not None:
                props.append(f"line={line}")
        title = f"cnncheck gradcheck {result.layer}/{result.impl} {', '.join(gradients)}: {result.status}"
        props.append(f"title={_escape_property(title)}")
        lines.append(f"::{level} {','.join(props)}::{_escape_data(result.message or result.status)}")
    return "\n".join(lines + [render_text(report, "plain").rstrip("\n")]) + "\n"


# -- Rich and HTML -------------------------------------------------------------------
def rich_renderable(report: GradcheckReport):
    """A Rich renderable: the table, notes for anything but a pass, and the summary line."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title="cnncheck gradcheck", title_justify="left", header_style="bold")
    for header in HEADERS:
        numeric = header in ("rel error", "threshold", "abs error")
        table.add_column(header, justify="right" if numeric else "left", no_wrap=numeric)
    for result in report.results:
        cells = _row(result)
        cells[3] = Text(result.status, style=STATUS_STYLES.get(result.status, ""))
        table.add_row(*cells)
    parts = [table]
    for result, gradients in _grouped(report):
        parts.append(Text(_note(result, gradients), style=STATUS_STYLES.get(result.status, "")))
    verdict_style = "bold green" if report.passed else ("bold yellow" if report.interrupted else "bold red")
    parts.append(Text(summary_line(report), style=verdict_style))
    return Group(*parts)


_HTML_COLOURS = {Status.PASS: "#1a7f37", Status.KINK: "#9a6700", Status.NOT_IMPLEMENTED: "#8250df"}


def render_html(report: GradcheckReport) -> str:
    """An HTML table of the report, for notebooks (``_repr_html_``)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADERS)
    body = []
    for result in report.results:
        cells = [html.escape(c) for c in _row(result)]
        colour = _HTML_COLOURS.get(result.status, "#cf222e")
        cells[3] = f'<b style="color:{colour}">{cells[3]}</b>'
        title = f' title="{html.escape(result.message)}"' if result.message else ""
        body.append(f"<tr{title}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    note_html = "".join(f"<li>{html.escape(line)}</li>" for line in notes(report))
    return (f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            + (f"<ul>{note_html}</ul>" if note_html else "")
            + f"<p><b>{html.escape(summary_line(report))}</b></p>")


# -- JUnit XML ------------------------------------------------------------------------
def junit_xml(report: GradcheckReport) -> str:
    """JUnit XML: one ``testcase`` per layer, implementation and gradient.

    ``fail``, ``mutates-input`` and (without ``--allow-missing``)
    ``not-implemented`` are failures; ``error``, ``timeout`` and ``crashed``
    are errors; an allowed ``not-implemented`` is skipped; a kink passes with
    its note in ``system-out``.
    """
    results = report.results
    failures = errors = skipped = 0
    suite = ET.Element("testsuite", name="cnncheck.gradcheck")
    shares: dict = {}
    for result in results:
        shares[(result.layer, result.impl)] = shares.get((result.layer, result.impl), 0) + 1
    for result in results:
        # An implementation's time is shared by its gradients.
        seconds = result.seconds / shares[(result.layer, result.impl)]
        case = ET.SubElement(suite, "testcase", classname=f"cnncheck.gradcheck.{result.layer}.{result.impl}",
                             name=result.gradient, time=f"{seconds:.6f}")
        if result.location:
            path, line = _where(result.location)
            case.set("file", path)
            if line is not None:
                case.set("line", str(line))
        message = f"{result.status}: {result.message}" if result.message else result.status
        if result.status in (Status.ERROR, Status.TIMEOUT, Status.CRASHED):
            errors += 1
            node = ET.SubElement(case, "error", message=message, type=result.status)
            node.text = result.traceback or result.message
        elif result.status == Status.NOT_IMPLEMENTED and report.allow_missing:
            skipped += 1
            ET.SubElement(case, "skipped", message=message)
        elif not result.passed:
            failures += 1
            node = ET.SubElement(case, "failure", message=message, type=result.status)
            node.text = _detail(result)
        elif result.status == Status.KINK:
            ET.SubElement(case, "system-out").text = message
    suite.set("tests", str(len(results)))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    suite.set("time", f"{_total_seconds(results):.6f}")
    root = ET.Element("testsuites", name="cnncheck", tests=str(len(results)), failures=str(failures),
                      errors=str(errors), skipped=str(skipped))
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _detail(result: GradcheckResult) -> str:
    lines = [result.message]
    if result.rel_error is not None:
        lines.append(f"rel error {result.rel_error:.3e} (threshold {result.threshold:g}), "
                     f"abs error {result.abs_error:.3e}")
    if result.worst_index is not None:
        lines.append(f"worst index {list(result.worst_index)}: analytic {result.analytic!r}, "
                     f"numeric {result.numeric!r}")
    if result.traceback:
        lines.append(result.traceback)
    return "\n".join(lines)


def _total_seconds(results) -> float:
    """Wall time of the run: each implementation's seconds counted once."""
    seen = {}
    for result in results:
        seen[(result.layer, result.impl)] = result.seconds
    return sum(seen.values())
