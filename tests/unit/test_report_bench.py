"""Formatting of bench reports: units, marks, failures, standard JSON."""

from __future__ import annotations

import json

import pytest

from cnncheck.report import bench as report
from cnncheck.results import BenchComparison, BenchConfig, BenchReport, BenchResult, BenchStatus
from cnncheck.stats import Stats


@pytest.mark.parametrize("seconds, text", [
    (1.5, "1.50 s"), (123.4, "123 s"), (0.0302, "30.2 ms"), (0.003021, "3.02 ms"), (5.12e-4, "512 µs"),
    (8.5e-7, "850 ns"), (None, "-"),
])
def test_format_seconds(seconds, text):
    assert report.format_seconds(seconds) == text


def row(**kwargs):
    base = {"layer": "conv", "direction": "forward", "impl": "fast", "params": {"shape": (2, 3, 8, 8), "stride": 2},
            "stats": Stats.from_times([1e-3, 1e-3, 1e-3])}
    base.update(kwargs)
    return BenchResult(**base)


def make(results, **kwargs):
    machine = {"cpu": "Test CPU", "cores": 2, "numpy": "2.0", "blas": {"name": "openblas", "version": "0.3",
               "threads": 2, "architecture": None}, "backend": "cython", "gemm_peak_gflops": 100.0,
               "gemm_peak_dtype": "float64"}
    return BenchReport(machine=machine, config=BenchConfig(**kwargs.pop("config", {})), results=tuple(results),
                       version="9.9", **kwargs)


def test_cells():
    r = row(speedup=312.4, gflops=53.21, peak_percent=48.66, difference=2.1e-16)
    assert report.format_speedup(r) == "312x"
    assert report.format_throughput(r) == "53.2 GFLOP/s"
    assert report.format_peak(r) == "48.7%"
    assert report.format_difference(r) == "2.1e-16"
    assert report.format_speedup(row(is_baseline=True)) == "baseline"
    assert report.format_speedup(row()) == ""
    assert report.format_throughput(row(gbps=12.06)) == "12.1 GB/s"
    assert report.format_params({"shape": (2, 3, 8, 8), "stride": 2}) == "shape 2x3x8x8, stride 2"


def test_limited_and_noisy_marks_with_their_notes():
    limited = row(limited=True, stats=Stats.from_times([1.0, 2.0, 3.0, 4.0]))
    text = report.render_text(make([limited], config={"max_seconds": 10.0}), "plain")
    assert "4*" in text and "1.50 s~" in text
    assert "* limited: stopped at --max-seconds 10" in text
    assert "~ noisy" in text


def test_header_names_the_machine_facts():
    text = report.render_text(make([row()]), "plain")
    line = next(line for line in text.splitlines() if line.startswith("Machine:"))
    for fact in ("CPU Test CPU", "2 cores", "numpy 2.0", "BLAS openblas 0.3 (2 threads)", "kernels cython",
                 "GEMM peak float64 100 GFLOP/s"):
        assert fact in line
    assert text.startswith("cnncheck bench 9.9")
    assert "conv: shape 2x3x8x8, stride 2" in text


def test_failures_are_named_and_counted_in_words():
    bad = row(status=BenchStatus.DIFFERS, message="differs from naive: difference 1e-06 in dx")
    regression = BenchComparison("conv", "forward", "fast", None, "median", 1e-3, 2e-3, 1.0, 0.2, True)
    rep = make([bad, row(impl="naive", is_baseline=True)], comparisons=(regression,),
               reference={"file": "b.json", "machine": {"cpu": "Other"}, "matched": 1, "unmatched": 0})
    assert not rep.passed
    lines = report.failure_lines(rep)
    assert lines[0] == "DIFFERS: conv forward fast: differs from naive: difference 1e-06 in dx"
    assert lines[1] == "REGRESSION: conv forward fast: median 2.00 ms vs saved 1.00 ms (+100.0%, allowed 20%)"
    text = report.render_text(rep, "markdown")
    assert "saved on another CPU (Other)" in text and "(1 row matched, 0 new)" in text
    assert "REGRESSED" in text
    assert text.rstrip().endswith("FAILED: 1 of 2 measurements failed (1 differs); 1 regression against the saved run")
    assert "problem(s)" not in text


@pytest.mark.parametrize("results, regressions, summary", [
    ([row()], 0, "PASSED: 1 measurement"),
    ([row(), row()], 0, "PASSED: 2 measurements"),
    ([row(status="error", message="x"), row(status="error", message="y"), row(status="timeout", message="z")], 0,
     "FAILED: 3 of 3 measurements failed (2 error, 1 timeout)"),
    ([row()], 2, "FAILED: 2 regressions against the saved run in 1 measurement"),
])
def test_summary_line(results, regressions, summary):
    comparison = BenchComparison("conv", "forward", "fast", None, "median", 1e-3, 2e-3, 1.0, 0.2, True)
    assert report.summary_line(make(results, comparisons=(comparison,) * regressions)) == summary


def test_interrupted_summary():
    from cnncheck.bench import BenchRun

    rep = BenchRun(machine={}, config=BenchConfig(), results=(row(),), interrupted=True)
    assert report.summary_line(rep) == "INTERRUPTED after 1 measurement"
    failing = BenchRun(machine={}, config=BenchConfig(), results=(row(status="error", message="x"), row()),
                       interrupted=True)
    assert report.summary_line(failing) == "INTERRUPTED after 2 measurements: 1 failed (1 error)"
    assert json.loads(report.render_text(rep, "json"))["interrupted"] is True


@pytest.mark.parametrize("results, text", [
    ([row(impl="naive", is_baseline=True), row(baseline="naive")], "baseline naive"),
    ([row(impl="naive", is_baseline=True), row(layer="relu", impl="numpy", is_baseline=True)],
     "baselines naive (conv), numpy (relu)"),
    ([row()], "no baseline"),
])
def test_the_header_names_the_baselines_that_ran(results, text):
    line = report.config_line(make(results, config={"baseline": None}))
    assert text in line
    assert ("--max-diff" in line) == (text != "no baseline")
    assert "baseline naive" not in report.config_line(make([row()], config={"baseline": "naive"}))


def test_warnings_of_passing_rows_are_listed_but_do_not_fail():
    warned = row(message="warning: out is a list, not an ndarray; cnncheck converted it")
    rep = make([warned])
    assert rep.passed
    assert report.warning_lines(rep) == [
        "WARNING: conv forward fast: out is a list, not an ndarray; cnncheck converted it"]
    assert "WARNING: conv forward fast" in report.render_text(rep, "plain")


def test_json_has_no_nan():
    bad = row(status=BenchStatus.DIFFERS, difference=float("nan"), differences={"out": float("nan")})
    data = json.loads(report.render_json(make([bad])))
    assert data["results"][0]["difference"] is None
    assert data["results"][0]["differences"] == {"out": None}
    assert data["passed"] is False


def test_the_report_registry_renders_bench():
    from cnncheck import report as reporters

    rep = make([row()])
    assert json.loads(reporters.render("bench", "json", rep))["command"] == "bench"
    assert reporters.render("bench", "plain", rep) == report.render_text(rep, "plain")


def _rich_text(rep, width):
    from rich.console import Console

    console = Console(record=True, width=width)
    console.print(report.rich_renderable(rep, width))
    return console.export_text()


def test_rich_prints_a_table_per_layer():
    text = _rich_text(make([row(gflops=1.0), row(layer="pool", gbps=2.0, params={"shape": (1, 1, 2, 2)})]), 160)
    assert "conv: shape 2x3x8x8, stride 2" in text and "pool: shape 1x1x2x2" in text
    assert "GFLOP/s" in text and "GB/s" in text and "% peak" not in text
    assert "PASSED" in text


@pytest.mark.parametrize("width", [60, 80])
def test_narrow_terminals_keep_direction_impl_and_status(width):
    rows = [row(impl="naive", is_baseline=True, gflops=0.00491, peak_percent=0.0, limited=True,
                stats=Stats.from_times([7.03])),
            row(impl="layers-fast", status="not-implemented", message="dx is None (not implemented yet?)",
                stats=None),
            row(impl="fast", speedup=1981.0, gflops=16.3, peak_percent=22.4, difference=2.5e-11, baseline="naive",
                stats=Stats.from_times([2.1e-3, 2.3e-3, 2.9e-3]))]
    text = _rich_text(make(rows), width)
    table = [line for line in text.splitlines() if line.startswith(("forward", " forward"))]
    assert len(table) == 3
    assert all(len(line) <= width for line in text.splitlines())
    for impl, status in (("naive", "ok"), ("layers-fast", "not-implemented"), ("fast", "ok")):
        assert any(impl in line and line.rstrip().endswith(status) for line in table), (impl, text)
    assert "…" not in "\n".join(table)
    wide = _rich_text(make(rows), 200)
    assert "% peak" in wide and "IQR" in wide
