"""Render a :class:`~cnncheck.results.GradcheckReport`: Rich, plain, markdown, GitHub, JSON, JUnit, HTML.

The screen view is one line per layer, implementation and subject (the
forward output ``out`` and each gradient) with the worst error over the
battery and the first failing check, then one note per failure or
warning, then a summary line saying what a PASS covered.  JSON, JUnit,
GitHub and markdown carry every check with its kind, geometry and status.
Reporters only format: every number comes from the result objects.
"""

from __future__ import annotations

import html
import json
import os
import xml.etree.ElementTree as ET

from cnncheck.results import CheckResult, GradcheckReport, Row
from cnncheck.status import Status

#: Rich style of each status.
STATUS_STYLES = {
    Status.PASS: "bold green",
    Status.WARNING: "bold yellow",
    Status.NOT_IMPLEMENTED: "bold magenta",
}

HEADERS = ("layer", "impl", "grad", "status", "error", "check")


def _style(status) -> str:
    return STATUS_STYLES.get(Status(status), "bold red")


def _num(value) -> str:
    return "-" if value is None else f"{value:.1e}"


def row_cells(row: Row) -> list:
    """The table cells of one row."""
    return [row.layer, row.impl, row.subject, str(row.status), _num(row.error), row.check]


def where(location: str) -> tuple:
    """(path relative to the working directory when inside it, line or None) of a ``file:line``."""
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


def describe(result: CheckResult, subjects: str | None = None) -> str:
    """A result in one line: ``conv/layers dw: fail: gradient at pad0 (x ..., stride 1, pad 0): message [file:line]``."""
    name = result.finding or result.kind
    at = f" at {result.geometry}" if result.geometry else ""
    shape = f" ({result.where})" if result.where and result.geometry not in ("notebook",) else ""
    if result.geometry == "notebook":
        shape = " (the course notebook's geometry)"
    text = (f"{result.layer}/{result.impl} {subjects or result.subject}: {result.status}: {name}{at}{shape}: "
            f"{result.message}")
    if result.location:
        path, line = where(result.location)
        text += f" [{path}:{line}]" if line is not None else f" [{path}]"
    return text


def notes(report: GradcheckReport) -> list:
    """One line per failing row and per warning, in table order; rows failing alike share a line."""
    groups: dict = {}
    for result in [row.failing for row in report.rows() if row.failing is not None] + list(report.warnings):
        key = (result.layer, result.impl, result.status, result.finding, result.geometry, result.message)
        groups.setdefault(key, [result, []])[1].append(result.subject)
    return [describe(result, ", ".join(dict.fromkeys(subjects))) for result, subjects in groups.values()]


def coverage(report: GradcheckReport) -> str:
    """What the checks covered, in words: geometries, reference, protocol, ties."""
    per_impl: dict = {}
    for r in report.results:
        if r.geometry:
            per_impl.setdefault((r.layer, r.impl), set()).add(r.geometry)
    counts = sorted({len(g) for g in per_impl.values()})
    kinds = {r.kind for r in report.results}
    if not counts:
        parts = ["no geometry"]
    else:
        span = str(counts[0]) if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
        parts = [f"{span} geometr{'y' if counts == [1] else 'ies'} each"]
    for kind, words in (("reference", "the reference"), ("protocol", "the call protocol"),
                        ("subgradient", "the subgradient rules")):
        if kind in kinds:
            parts.append(words)
    return ", ".join(parts)


def summary_line(report: GradcheckReport) -> str:
    """``PASSED``/``FAILED``/``INTERRUPTED``, how many implementations passed, and the settings."""
    verdicts = report.verdicts()
    failed = [f"{layer}/{impl}" for (layer, impl), row in verdicts.items() if row.failing is not None]
    total = len(verdicts)
    verdict = "INTERRUPTED" if report.interrupted else ("PASSED" if report.passed else "FAILED")
    noun = "implementation" if total == 1 else "implementations"
    if failed:
        shown = ", ".join(failed[:4]) + (f" and {len(failed) - 4} more" if len(failed) > 4 else "")
        text = f"{verdict}: {len(failed)} of {total} {noun} failed ({shown})"
    else:
        text = f"{verdict}: {total} {noun} checked against {coverage(report)}" if total else f"{verdict}: nothing checked"
    warnings = len({(r.layer, r.impl, r.finding) for r in report.warnings})
    if warnings:
        text += f"; {warnings} warning{'' if warnings == 1 else 's'}" + (" (failing: --strict)" if report.strict else "")
    if report.absent:
        shown = ", ".join(report.absent[:6]) + (f" and {len(report.absent) - 6} more" if len(report.absent) > 6 else "")
        text += f"; not in the module (name a layer to check it): {shown}"
    config = report.config
    text += f" [{config.get('dtype', 'float64')}, seed {config.get('seed', 0)}]"
    return text


# -- text formats ---------------------------------------------------------------------------------
def render_text(report: GradcheckReport, fmt: str = "plain") -> str:
    """The report in ``plain``, ``markdown``, ``github`` or ``json``; ends with a newline."""
    if fmt == "json":
        return render_json(report)
    if fmt == "github":
        return render_github(report)
    if fmt == "junit":
        return junit_xml(report)
    from tabulate import tabulate

    rows = [row_cells(r) for r in report.rows()]
    if fmt == "markdown":
        lines = [tabulate(rows, headers=HEADERS, tablefmt="github", disable_numparse=True) if rows
                 else "(no checks)", "", f"**{summary_line(report)}**", ""]
        lines += [f"- {line}" for line in notes(report)]
        lines += ["", "<details><summary>Every check</summary>", "",
                  tabulate([_check_cells(r) for r in report.results], headers=CHECK_HEADERS, tablefmt="github",
                           disable_numparse=True), "", "</details>"]
        return "\n".join(lines) + "\n"
    if fmt != "plain":
        raise ValueError(f"unknown format {fmt!r}")
    table = tabulate(rows, headers=HEADERS, tablefmt="simple", disable_numparse=True) if rows else "(no checks)"
    extra = notes(report)
    lines = [table, ""] + (extra + [""] if extra else []) + [summary_line(report)]
    return "\n".join(lines) + "\n"


CHECK_HEADERS = ("layer", "impl", "subject", "kind", "geometry", "status", "error", "message")


def _check_cells(r: CheckResult) -> list:
    name = r.kind + (f" {r.finding}" if r.finding else "")
    return [r.layer, r.impl, r.subject, name, r.geometry or "-", str(r.status), _num(r.rel_error),
            r.message.replace("|", "\\|")]


def render_json(report: GradcheckReport) -> str:
    """``report.to_dict()`` as strict JSON (no NaN), ending with a newline."""
    return json.dumps(report.to_dict(), indent=2, allow_nan=False, default=_finite) + "\n"


def _finite(value):
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render_github(report: GradcheckReport) -> str:
    """GitHub Actions annotations (``::error`` for failures, ``::warning`` for warnings and allowed
    missing layers), one per failing row and warning, pointing at the user's file, then the plain report."""
    lines = []
    results = [row.failing for row in report.rows() if row.failing is not None]
    results += list({(r.layer, r.impl, r.finding): r for r in report.warnings}.values())
    for result in results:
        level = "error" if report.fails(result) else "warning"
        props = []
        if result.location:
            path, line = where(result.location)
            props.append(f"file={_escape_property(path)}")
            if line is not None:
                props.append(f"line={line}")
        name = result.finding or result.kind
        title = f"cnncheck {result.layer}/{result.impl} {result.subject}: {result.status} ({name})"
        props.append(f"title={_escape_property(title)}")
        geometry = f" at {result.geometry} ({result.where})" if result.geometry else ""
        lines.append(f"::{level} {','.join(props)}::{_escape_data(result.message + geometry)}")
    return "\n".join(lines + [render_text(report, "plain").rstrip("\n")]) + "\n"


# -- Rich and HTML ---------------------------------------------------------------------------------
def rich_renderable(report: GradcheckReport, width: int | None = None):
    """A Rich renderable: the table, a note per failure and warning, and the summary line.

    At narrow widths the ``check`` column, then the ``error`` column, are
    left out (the notes say the same); layer, implementation, subject and
    status are never cut.
    """
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    rows = report.rows()
    headers = list(HEADERS)
    cells = [row_cells(r) for r in rows]
    if width is not None:
        def needed(columns) -> int:
            return sum(max([len(h)] + [len(str(c[HEADERS.index(h)])) for c in cells]) + 2
                       for h in columns if h != "check") + (18 if "check" in columns else 0)
        essential = ["layer", "impl", "grad", "status"]
        for candidate in (list(HEADERS), essential + ["error"], essential):
            if needed(candidate) <= width:
                headers = candidate
                break
        else:
            headers = essential
    index = {h: i for i, h in enumerate(HEADERS)}
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, show_edge=False)
    for header in headers:
        essential_column = header in ("layer", "impl", "grad", "status", "error")
        table.add_column(header, justify="right" if header == "error" else "left", no_wrap=essential_column,
                         overflow="fold" if essential_column else "ellipsis",
                         min_width=max([len(header)] + [len(str(c[index[header]])) for c in cells])
                         if essential_column else None)
    for row, cell in zip(rows, cells):
        values = [cell[index[h]] for h in headers]
        values[headers.index("status")] = Text(str(row.status), style=_style(row.status))
        table.add_row(*values)
    parts = [table] if rows else [Text("(no checks)")]
    for line in notes(report):
        status = line.split(": ", 2)[1] if line.count(": ") >= 2 else "fail"
        parts.append(Text(line, style=_style(status) if status in {s.value for s in Status} else ""))
    verdict_style = "bold green" if report.passed else ("bold yellow" if report.interrupted else "bold red")
    parts.append(Text(summary_line(report), style=verdict_style))
    return Group(*parts)


def render_html(report: GradcheckReport) -> str:
    """An HTML table of the report, for notebooks."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADERS)
    body = []
    colours = {Status.PASS: "#1a7f37", Status.WARNING: "#9a6700", Status.NOT_IMPLEMENTED: "#8250df"}
    for row in report.rows():
        cells = [html.escape(str(c)) for c in row_cells(row)]
        colour = colours.get(Status(row.status), "#cf222e")
        cells[3] = f'<b style="color:{colour}">{cells[3]}</b>'
        title = f' title="{html.escape(row.failing.message)}"' if row.failing is not None else ""
        body.append(f"<tr{title}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    note_html = "".join(f"<li>{html.escape(line)}</li>" for line in notes(report))
    return (f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            + (f"<ul>{note_html}</ul>" if note_html else "")
            + f"<p><b>{html.escape(summary_line(report))}</b></p>")


# -- JUnit XML ---------------------------------------------------------------------------------------
def junit_xml(report: GradcheckReport) -> str:
    """JUnit XML: one ``testcase`` per check (layer and implementation as the class, subject, kind and
    geometry as the name).  Failing checks are failures; errors, timeouts, crashes and internal errors
    are errors; an allowed ``not-implemented`` is skipped; warnings pass with their message in
    ``system-out`` (failures with ``--strict``)."""
    results = report.results
    failures = errors = skipped = 0
    suite = ET.Element("testsuite", name="cnncheck.gradcheck")
    counts: dict = {}
    for result in results:
        counts[(result.layer, result.impl)] = counts.get((result.layer, result.impl), 0) + 1
    for result in results:
        seconds = result.seconds / counts[(result.layer, result.impl)]
        name = f"{result.subject} {result.kind}" + (f" {result.finding}" if result.finding else "") + \
            (f" @{result.geometry}" if result.geometry else "")
        case = ET.SubElement(suite, "testcase", classname=f"cnncheck.gradcheck.{result.layer}.{result.impl}",
                             name=name, time=f"{seconds:.6f}")
        if result.location:
            path, line = where(result.location)
            case.set("file", path)
            if line is not None:
                case.set("line", str(line))
        message = f"{result.status}: {result.message}" if result.message else str(result.status)
        if result.status in (Status.ERROR, Status.TIMEOUT, Status.CRASHED, Status.INTERNAL_ERROR):
            errors += 1
            node = ET.SubElement(case, "error", message=message, type=str(result.status))
            node.text = result.traceback or result.message
        elif result.status == Status.NOT_IMPLEMENTED and report.allow_missing:
            skipped += 1
            ET.SubElement(case, "skipped", message=message)
        elif report.fails(result):
            failures += 1
            node = ET.SubElement(case, "failure", message=message, type=str(result.status))
            node.text = _detail(result)
        elif result.status == Status.WARNING:
            ET.SubElement(case, "system-out").text = message
    suite.set("tests", str(len(results)))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    seconds = sum({(r.layer, r.impl): r.seconds for r in results}.values())
    suite.set("time", f"{seconds:.6f}")
    root = ET.Element("testsuites", name="cnncheck", tests=str(len(results)), failures=str(failures),
                      errors=str(errors), skipped=str(skipped))
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _detail(result: CheckResult) -> str:
    lines = [result.message]
    if result.geometry:
        lines.append(f"geometry {result.geometry}: {result.where}")
    if result.rel_error is not None:
        lines.append(f"error {result.rel_error:.3e} (threshold {result.threshold:g}), abs error {result.abs_error:.3e}")
    if result.worst_index is not None:
        lines.append(f"worst at {result.subject}{list(result.worst_index)}: got {result.got!r}, "
                     f"expected {result.expected!r}")
    if result.traceback:
        lines.append(result.traceback)
    return "\n".join(lines)
