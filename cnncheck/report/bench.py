"""Render a :class:`~cnncheck.results.BenchReport`: Rich table, plain text, Markdown or JSON.

Every format shows the same things: a header of machine facts (CPU, cores,
numpy, BLAS and its threads, kernel backend, measured GEMM peak), the options
that decide the figures and the baselines that ran, one row per layer,
direction and implementation (median, IQR, runs, speedup, throughput,
percent of peak, difference, status), sweep fits and comparisons when there
are any, what failed and what only warrants a warning.  Numbers are
formatted here and never recomputed.  :func:`render_text` and
:func:`rich_renderable` are what :mod:`cnncheck.report` calls.
"""

from __future__ import annotations

import json
import math
from typing import Any

from cnncheck.results import BenchReport, BenchResult, BenchStatus
from cnncheck.status import Status

FORMATS = ("rich", "plain", "markdown", "json")

LIMITED_MARK = "*"
NOISY_MARK = "~"


# -- formatting of single values ------------------------------------------------
def format_seconds(seconds: float | None) -> str:
    """Seconds with a unit that keeps three significant digits: ``3.02 ms``, ``512 µs``."""
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{_three(seconds / scale)} {unit}"
    return f"{_three(seconds / 1e-9)} ns"


def _three(value: float) -> str:
    """Three significant digits without an exponent for the usual range."""
    if value < 1:
        return f"{value:.3g}" if value >= 1e-4 or value == 0 else f"{value:.1e}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_speedup(result: BenchResult) -> str:
    """``312x``, ``2.41x``, ``baseline`` or empty when there is nothing to compare with."""
    if result.is_baseline:
        return "baseline"
    if result.speedup is None:
        return ""
    return f"{_three(result.speedup)}x"


def format_throughput(result: BenchResult) -> str:
    """``53.2 GFLOP/s`` or ``12.1 GB/s``, whichever the layer counts."""
    if result.gflops is not None:
        return f"{_three(result.gflops)} GFLOP/s"
    if result.gbps is not None:
        return f"{_three(result.gbps)} GB/s"
    return ""


def format_peak(result: BenchResult) -> str:
    """Percent of the GEMM peak, e.g. ``48.7%``."""
    return "" if result.peak_percent is None else f"{result.peak_percent:.1f}%"


def format_difference(result: BenchResult) -> str:
    """The largest rel_error against the baseline, e.g. ``2.1e-16``."""
    if result.difference is None:
        return ""
    return f"{result.difference:.1e}"


def format_runs(result: BenchResult) -> str:
    """Number of runs, marked when ``--max-seconds`` cut it short."""
    if result.stats is None:
        return "-"
    return f"{result.stats.rounds}{LIMITED_MARK if result.limited else ''}"


def format_iqr(result: BenchResult) -> str:
    """IQR in time units, marked when the measurement is noisy; ``-`` for a single run."""
    if result.stats is None or result.stats.rounds < 2:
        return "-"
    return f"{format_seconds(result.stats.iqr)}{NOISY_MARK if result.stats.noisy else ''}"


def format_params(params: dict) -> str:
    """``shape 100x3x31x31, filters 25, kernel 3x3, stride 2, pad 1``."""
    parts = []
    for key, value in params.items():
        if isinstance(value, (tuple, list)):
            value = "x".join(str(v) for v in value)
        parts.append(f"{key} {value}")
    return ", ".join(parts)


def format_threads(count: int) -> str:
    """``1 thread``, ``4 threads``."""
    return f"{count} thread" if count == 1 else f"{count} threads"


def format_change(change: float) -> str:
    """A relative change as a signed percentage, worse positive: ``+23.1%``."""
    return f"{100 * change:+.1f}%"


# -- pieces shared by every text format ------------------------------------------
def machine_line(machine: dict) -> str:
    """The machine facts in one line."""
    parts = [f"CPU {machine.get('cpu', 'unknown')}"]
    if machine.get("cores"):
        parts.append(f"{machine['cores']} cores")
    if machine.get("platform"):
        parts.append(str(machine["platform"]))
    if machine.get("python"):
        parts.append(f"Python {machine['python']}")
    if machine.get("numpy"):
        parts.append(f"numpy {machine['numpy']}")
    blas = machine.get("blas")
    if blas:
        extra = [format_threads(blas["threads"])] if blas.get("threads") is not None else []
        if blas.get("architecture"):
            extra.append(str(blas["architecture"]))
        parts.append(f"BLAS {blas.get('name')} {blas.get('version') or ''}".rstrip()
                     + (f" ({', '.join(extra)})" if extra else ""))
    else:
        parts.append("BLAS unknown")
    if machine.get("backend"):
        kernels = f"kernels {machine['backend']}"
        if machine.get("openmp_threads") is not None:
            kernels += f" (up to {format_threads(machine['openmp_threads'])})"
        parts.append(kernels)
    if machine.get("gemm_peak_gflops") is not None:
        parts.append(f"GEMM peak {machine.get('gemm_peak_dtype') or ''} "
                     f"{_three(machine['gemm_peak_gflops'])} GFLOP/s".replace("  ", " "))
    return " · ".join(parts)


def baselines(report: BenchReport) -> dict:
    """The baseline that ran for each layer, ``{layer: impl}``, from the rows."""
    found: dict = {}
    for r in report.results:
        if r.is_baseline:
            found.setdefault(r.layer, r.impl)
    return found


def baseline_text(report: BenchReport) -> str:
    """``baseline naive``, ``baselines naive (conv, pool), numpy (affine, relu)`` or ``no baseline``."""
    found = baselines(report)
    if not found:
        return "no baseline"
    by_impl: dict = {}
    for layer, impl in found.items():
        by_impl.setdefault(impl, []).append(layer)
    if len(by_impl) == 1:
        return f"baseline {next(iter(by_impl))}"
    return "baselines " + ", ".join(f"{impl} ({', '.join(layers)})" for impl, layers in by_impl.items())


def config_line(report: BenchReport) -> str:
    """The options that decide the figures, in one line."""
    c = report.config
    runs = "run" if c.repeat == 1 else "runs"
    parts = [c.dtype, f"seed {c.seed}", f">= {c.repeat} {runs} and >= {c.min_time:g} s per measurement"]
    if c.max_seconds is not None:
        parts.append(f"at most {c.max_seconds:g} s of runs per measurement")
    parts.append(baseline_text(report))
    if baselines(report):
        parts.append(f"--max-diff {c.max_diff:g}")
    if c.threads is not None:
        parts.append(f"--threads {c.threads}")
    if c.min_speedup is not None:
        parts.append(f"--min-speedup {c.min_speedup:g}")
    if c.sweep_param:
        parts.append(f"--sweep {c.sweep_param}={','.join(map(str, c.sweep_values))}")
    return " · ".join(parts)


def params_lines(report: BenchReport) -> list[str]:
    """One line per layer with the parameters timed (at the first value of a sweep)."""
    first: dict[str, str] = {}
    for r in report.results:
        if r.params:
            first.setdefault(r.layer, format_params(r.params))
    sweep = report.config.sweep_param
    suffix = f" ({sweep} swept from the first value)" if sweep else ""
    return [f"{layer}: {params}{suffix}" for layer, params in first.items()]


def result_headers(report: BenchReport) -> list[str]:
    """Column names of the results table."""
    headers = ["Layer", "Pass", "Impl"]
    if report.config.sweep_param:
        headers.append(report.config.sweep_param)
    headers += ["Median", "IQR", "Runs", "Speedup", "Throughput", "% peak", "Difference", "Status"]
    return headers


def result_row(report: BenchReport, r: BenchResult) -> list[str]:
    """One results-table row of formatted cells."""
    row = [r.layer, r.direction, r.impl]
    if report.config.sweep_param:
        row.append("" if r.sweep_value is None else str(r.sweep_value))
    row += [format_seconds(r.median), format_iqr(r), format_runs(r), format_speedup(r),
            format_throughput(r), format_peak(r), format_difference(r), str(r.status)]
    return row


def fit_headers(report: BenchReport) -> list[str]:
    """Column names of the sweep-fit table."""
    return ["Layer", "Pass", "Impl", "Work", "Exponent", f"Medians over {report.config.sweep_param}"]


def fit_rows(report: BenchReport) -> list[list[str]]:
    """Sweep fits: time grows as work**exponent."""
    rows = []
    for f in report.fits:
        exponent = "-" if f.exponent is None else f"{f.exponent:.2f}"
        medians = ", ".join(f"{v}: {format_seconds(m)}" for v, m in zip(f.values, f.medians))
        rows.append([f.layer, f.direction, f.impl, f.work_unit, exponent, medians])
    return rows


COMPARE_HEADERS = ["Layer", "Pass", "Impl", "Figure", "Saved", "Now", "Change", "Verdict"]


def compare_rows(report: BenchReport) -> list[list[str]]:
    """One row per comparison with the saved run."""
    rows = []
    for c in report.comparisons:
        fmt = format_seconds if c.metric == "median" else (lambda v: f"{_three(v)}x")
        impl = c.impl if c.sweep_value is None else f"{c.impl} @{c.sweep_value}"
        verdict = "REGRESSED" if c.regressed else "ok"
        rows.append([c.layer, c.direction, impl, c.metric, fmt(c.reference), fmt(c.current),
                     format_change(c.change), verdict])
    return rows


def reference_line(report: BenchReport) -> str:
    """Which saved run this one was compared with."""
    ref = report.reference or {}
    machine = ref.get("machine") or {}
    matched, unmatched = ref.get("matched", 0), ref.get("unmatched", 0)
    line = (f"compared with {ref.get('file') or 'a saved run'} ({_count(matched, 'row')} matched, "
            f"{unmatched} new), allowed regression {100 * (report.config.max_regression or 0):g}%")
    if machine and machine.get("cpu") != report.machine.get("cpu"):
        line += f"; saved on another CPU ({machine.get('cpu')}): compare speedups rather than times"
    return line


def notes(report: BenchReport) -> list[str]:
    """Footnotes for the marks that appear in the table."""
    lines = []
    if any(r.limited for r in report.results):
        c = report.config
        runs = "run" if c.repeat == 1 else "runs"
        lines.append(f"{LIMITED_MARK} limited: stopped at --max-seconds {c.max_seconds:g} before {c.repeat} "
                     f"{runs} and {c.min_time:g} s of runs (a single run is the call that checked the output)")
    if any(r.stats is not None and r.stats.noisy for r in report.results):
        lines.append(f"{NOISY_MARK} noisy: the IQR is more than a fifth of the median")
    return lines


def _where(layer: str, direction: str, impl: str, sweep_value) -> str:
    return f"{layer} {direction} {impl}" + ("" if sweep_value is None else f" @{sweep_value}")


def warning_lines(report: BenchReport) -> list[str]:
    """One line per passing row that carries a warning (a list or a masked array returned, float64 for float32)."""
    return [f"WARNING: {_where(r.layer, r.direction, r.impl, r.sweep_value)}: {r.message.removeprefix('warning: ')}"
            for r in report.results if r.passed and r.message]


def failure_lines(report: BenchReport) -> list[str]:
    """One line per failing row and per regression, naming it."""
    lines = []
    for r in report.failed_results:
        lines.append(f"{str(r.status).upper()}: {_where(r.layer, r.direction, r.impl, r.sweep_value)}: {r.message}")
    for c in report.regressions:
        if c.metric == "median":
            what = f"median {format_seconds(c.current)} vs saved {format_seconds(c.reference)}"
        else:
            what = f"speedup {_three(c.current)}x vs saved {_three(c.reference)}x"
        lines.append(f"REGRESSION: {_where(c.layer, c.direction, c.impl, c.sweep_value)}: {what} "
                     f"({format_change(c.change)}, allowed {100 * c.max_regression:g}%)")
    return lines


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _interrupted(report: BenchReport) -> bool:
    return bool(getattr(report, "interrupted", False))


def summary_line(report: BenchReport) -> str:
    """``PASSED: 6 measurements``, ``FAILED: 2 of 6 measurements failed (1 error, 1 differs)``..."""
    n = len(report.results)
    measured = _count(n, "measurement")
    failing = report.failed_results
    by_status: dict = {}
    for r in failing:
        by_status[str(r.status)] = by_status.get(str(r.status), 0) + 1
    breakdown = ", ".join(f"{count} {status}" for status, count in by_status.items())
    if _interrupted(report):
        return f"INTERRUPTED after {measured}" + (f": {len(failing)} failed ({breakdown})" if failing else "")
    parts = []
    if failing:
        parts.append(f"{len(failing)} of {measured} failed ({breakdown})")
    if report.regressions:
        parts.append(f"{_count(len(report.regressions), 'regression')} against the saved run"
                     + ("" if failing else f" in {measured}"))
    return "FAILED: " + "; ".join(parts) if parts else f"PASSED: {measured}"


# -- renderers ------------------------------------------------------------------
def render_text(report: BenchReport, fmt: str = "plain") -> str:
    """The report as ``plain`` text (tabulate ``simple``), ``markdown`` (``github`` tables) or ``json``."""
    if fmt == "json":
        return render_json(report)
    from tabulate import tabulate

    if fmt not in ("plain", "markdown"):
        raise ValueError(f"bench text formats are plain, markdown and json, got {fmt!r}")
    markdown = fmt == "markdown"
    style = "github" if markdown else "simple"
    out: list[str] = []

    def para(lines: list[str]) -> None:
        if not lines:
            return
        if markdown:
            # a note that starts with a mark would read as a nested list: show marks as code
            out.extend(f"- `{line[0]}`{line[1:]}" if line[:1] in (LIMITED_MARK, NOISY_MARK) else f"- {line}"
                       for line in lines)
        else:
            out.extend(lines)
        out.append("")

    title = f"cnncheck bench {report.version}".rstrip()
    out.append(f"**{title}**" if markdown else title)
    out.append("")
    para([f"Machine: {machine_line(report.machine)}", f"Run: {config_line(report)}"] + params_lines(report))
    rows = [result_row(report, r) for r in report.results]
    out.append(tabulate(rows, headers=result_headers(report), tablefmt=style, disable_numparse=True)
               if rows else "(nothing measured)")
    out.append("")
    para(notes(report))
    if report.fits:
        out.append(tabulate(fit_rows(report), headers=fit_headers(report), tablefmt=style, disable_numparse=True))
        out.append("")
    if report.reference is not None:
        para([reference_line(report)])
        if report.comparisons:
            out.append(tabulate(compare_rows(report), headers=COMPARE_HEADERS, tablefmt=style,
                                disable_numparse=True))
            out.append("")
    para(failure_lines(report) + warning_lines(report))
    out.append(summary_line(report))
    return "\n".join(out) + "\n"


def _finite(value: Any) -> Any:
    """NaN and infinities to None, recursively, so the JSON is standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def render_json(report: BenchReport) -> str:
    """The report as one JSON document (schema: ``cnncheck/schemas/bench.schema.json``).

    Non-finite numbers (a NaN difference) become ``null``; the row's status
    and message still say what happened.
    """
    return json.dumps(_finite(report.to_dict()), indent=2, allow_nan=False) + "\n"


def _style(status: str) -> str:
    if status == BenchStatus.OK:
        return "green"
    if status == Status.NOT_IMPLEMENTED:
        return "bold magenta"
    return "bold red"


#: Columns a narrow terminal loses first, in order; Pass, Impl and Status always show.
_DROP_ORDER = ("% peak", "IQR", "GFLOP/s", "GB/s", "Runs", "Speedup", "Diff")


def rich_renderable(report: BenchReport, width: int | None = None):
    """A Rich renderable: the header, one table per layer, notes, failures, warnings and the summary.

    At narrow widths the least needed columns are left out (percent of
    peak first, then the IQR, the rate, runs, speedup, difference); the
    direction, implementation and status are never cut.
    """
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list = [Text(f"cnncheck bench {report.version}".rstrip(), style="bold"),
                   Text(f"Machine: {machine_line(report.machine)}", style="dim"),
                   Text(f"Run: {config_line(report)}", style="dim")]
    for layer, rows in _by_layer(report).items():
        parts.append(_rich_layer_table(report, layer, rows, width))
    if not report.results:
        parts.append(Text("(nothing measured)"))
    parts.extend(Text(line, style="dim") for line in notes(report))
    if report.fits:
        fits = Table(title="How time grows across the sweep (time ~ work^exponent)", title_justify="left",
                     title_style="bold", box=box.SIMPLE_HEAD, pad_edge=False, header_style="bold")
        for header in fit_headers(report):
            fits.add_column(header)
        for row in fit_rows(report):
            fits.add_row(*row)
        parts.append(fits)
    if report.reference is not None:
        parts.append(Text(reference_line(report), style="dim"))
        if report.comparisons:
            comp = Table(box=box.SIMPLE_HEAD, pad_edge=False, header_style="bold")
            for header in COMPARE_HEADERS:
                comp.add_column(header)
            for c, row in zip(report.comparisons, compare_rows(report)):
                row[-1] = Text(row[-1], style="bold red" if c.regressed else "green")
                comp.add_row(*row)
            parts.append(comp)
    parts.extend(Text(line, style="bold red") for line in failure_lines(report))
    parts.extend(Text(line, style="yellow") for line in warning_lines(report))
    style = "bold green" if report.passed else ("bold yellow" if _interrupted(report) else "bold red")
    parts.append(Text(summary_line(report), style=style))
    return Group(*parts)


def _by_layer(report: BenchReport) -> dict:
    groups: dict[str, list[BenchResult]] = {}
    for r in report.results:
        groups.setdefault(r.layer, []).append(r)
    return groups


def _rich_layer_table(report: BenchReport, layer: str, rows: list, width: int | None):
    """One compact Rich table per layer: the unit of the rate moves into its header."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    sweep = report.config.sweep_param
    params = next((r.params for r in rows if r.params), {})
    title = f"{layer}: {format_params(params)}" + (f" ({sweep} swept)" if sweep else "")
    rate = "GFLOP/s" if any(r.gflops is not None for r in rows) else (
        "GB/s" if any(r.gbps is not None for r in rows) else None)
    columns = ["Pass", "Impl"] + ([sweep] if sweep else []) + ["Median", "IQR", "Runs", "Speedup"]
    columns += [rate] if rate else []
    columns += ["% peak"] if any(r.peak_percent is not None for r in rows) else []
    columns += ["Diff"] if any(r.difference is not None for r in rows) else []
    columns += ["Status"]
    cells = [{
        "Pass": r.direction, "Impl": r.impl, sweep: "" if r.sweep_value is None else str(r.sweep_value),
        "Median": format_seconds(r.median), "IQR": format_iqr(r), "Runs": format_runs(r),
        "Speedup": format_speedup(r), "GFLOP/s": "" if r.gflops is None else _three(r.gflops),
        "GB/s": "" if r.gbps is None else _three(r.gbps), "% peak": format_peak(r), "Diff": format_difference(r),
        "Status": str(r.status),
    } for r in rows]
    if width is not None:
        def needed(names) -> int:
            return sum(max([len(n)] + [len(c[n]) for c in cells]) + 2 for n in names)
        for name in _DROP_ORDER:
            if needed(columns) <= width:
                break
            if name in columns:
                columns.remove(name)
    table = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
                  collapse_padding=True, pad_edge=False, header_style="bold")
    for name in columns:
        table.add_column(name, justify="left" if name in ("Pass", "Impl", "Status") else "right", no_wrap=True)
    for r, cell in zip(rows, cells):
        values = [cell[name] for name in columns]
        values[-1] = Text(values[-1], style=_style(r.status))
        table.add_row(*values)
    return table
