"""Gradcheck reporters: every format renders the numbers it is given, and the JSON follows its schema."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cnncheck.report import gradcheck as report
from cnncheck.results import GradcheckReport, GradcheckResult, Status

SCHEMA = Path(__file__).resolve().parents[2] / "cnncheck" / "schemas" / "gradcheck.schema.json"
CONFIG = {"mode": "auto", "samples": 50, "probes": 10, "eps": 1e-5, "max_error": 1e-7, "dtype": "float64",
          "seed": 0, "auto_limit": 4096}


def result(gradient="dx", status=Status.PASS, **kwargs):
    base = dict(layer="conv", impl="layers", gradient=gradient, status=status, threshold=1e-7,
                params={"shape": (4, 3, 5, 5), "stride": 2}, eps=1e-5, mode="full", seconds=0.3, source="layers.py")
    if status in (Status.PASS, Status.FAIL, Status.KINK):
        base.update(rel_error=2.5e-9 if status == Status.PASS else 0.75, abs_error=1e-10, worst_index=(0, 1, 2, 2),
                    analytic=0.5, numeric=0.25 if status != Status.PASS else 0.5, compared=300)
    base.update(kwargs)
    return GradcheckResult(**base)


def make(*results, **kwargs):
    return GradcheckReport(results=tuple(results), config=dict(CONFIG), version="9.9", **kwargs)


MIXED = make(
    result("dx"),
    result("dw", Status.FAIL, message="36 of 54 elements disagree", location="/abs/cnn/layers.py:40"),
    result("db", Status.ERROR, message="backward raised IndexError: boom, 100% wrong",
           traceback="Traceback (most recent call last):\n  ...\nIndexError: boom\n", location="/abs/cnn/layers.py:41"),
    result("dx", Status.NOT_IMPLEMENTED, layer="relu", message="backward returned None (not implemented yet)"),
    result("dx", Status.KINK, layer="pool", message="1 element(s) sit on a nondifferentiable point"),
)


def test_report_verdicts_and_counts():
    assert not MIXED.passed
    assert MIXED.counts()["fail"] == 1 and MIXED.counts()["timeout"] == 0
    assert [r.status for r in MIXED.failed_results] == ["fail", "error", "not-implemented"]
    allowed = make(result(), result("dx", Status.NOT_IMPLEMENTED), result("dx", Status.KINK), allow_missing=True)
    assert allowed.passed
    assert not make(result(), interrupted=True).passed
    assert make().passed and len(make()) == 0


def test_plain_table_rows_notes_and_summary():
    text = report.render_text(MIXED, "plain")
    lines = text.splitlines()
    assert lines[0].split() == ["layer", "impl", "grad", "status", "rel", "error", "threshold", "abs", "error",
                                "worst", "index", "mode"]
    assert "conv     layers  dw      fail             7.50e-01     1e-07" in text
    assert "(0, 1, 2, 2)" in text
    assert "conv/layers dw: fail: 36 of 54 elements disagree [/abs/cnn/layers.py:40]" in text
    assert lines[-1] == ("FAILED: 5 gradients: 1 pass, 1 fail, 1 kink, 1 error, 1 not-implemented "
                         "[float64, max error 1e-07, eps 1e-05, mode auto, seed 0]")
    assert "\x1b[" not in text


def test_notes_group_gradients_that_share_a_problem():
    shared = make(*(result(g, Status.ERROR, message="forward raised ValueError: x") for g in ("dx", "dw", "db")))
    assert report.notes(shared) == ["conv/layers dx, dw, db: error: forward raised ValueError: x"]


def test_markdown_is_a_pipe_table_with_a_bold_summary():
    text = report.render_text(MIXED, "markdown")
    assert text.startswith("| layer   | impl   | grad   | status")
    assert "|---------|" in text
    assert "**FAILED: 5 gradients" in text
    assert "- conv/layers dw: fail" in text


def test_github_annotations(monkeypatch):
    monkeypatch.chdir("/")
    text = report.render_text(MIXED, "github")
    lines = text.splitlines()
    assert lines[0] == ("::error file=abs/cnn/layers.py,line=40,title=cnncheck gradcheck conv/layers dw%3A fail::"
                        "36 of 54 elements disagree")
    assert lines[1].endswith("::backward raised IndexError: boom, 100%25 wrong")
    assert lines[2].startswith("::error title=cnncheck gradcheck relu/layers dx%3A not-implemented::")
    assert lines[3].startswith("::notice title=cnncheck gradcheck pool/layers dx%3A kink::")
    assert "FAILED: 5 gradients" in text         # the plain table follows
    allowed = make(result("dx", Status.NOT_IMPLEMENTED, message="m"), allow_missing=True)
    assert report.render_text(allowed, "github").startswith("::warning ")


def test_json_document_follows_the_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    data = json.loads(report.render_text(MIXED, "json"))
    jsonschema.validate(data, schema)
    assert data["command"] == "gradcheck" and data["passed"] is False and data["threshold"] == 1e-7
    first = data["results"][0]
    assert first["params"] == {"shape": [4, 3, 5, 5], "stride": 2}
    assert first["worst_index"] == [0, 1, 2, 2] and first["passed"] is True
    assert data["summary"]["error"] == 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**data, "passed": "yes"}, schema)


def test_junit_xml_counts_and_cases():
    root = ET.fromstring(report.junit_xml(MIXED))
    suite = root.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == \
        ("5", "2", "1", "0")
    cases = suite.findall("testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        ("cnncheck.gradcheck.conv.layers", "dx"), ("cnncheck.gradcheck.conv.layers", "dw"),
        ("cnncheck.gradcheck.conv.layers", "db"), ("cnncheck.gradcheck.relu.layers", "dx"),
        ("cnncheck.gradcheck.pool.layers", "dx")]
    assert cases[0].find("failure") is None and cases[0].find("error") is None
    assert cases[1].find("failure").get("message") == "fail: 36 of 54 elements disagree"
    assert "rel error 7.500e-01" in cases[1].find("failure").text
    assert "IndexError: boom" in cases[2].find("error").text
    assert cases[3].find("failure").get("type") == "not-implemented"
    assert cases[4].find("system-out").text.startswith("kink:")
    allowed = ET.fromstring(report.junit_xml(make(result("dx", Status.NOT_IMPLEMENTED), allow_missing=True)))
    assert allowed.find("testsuite").get("skipped") == "1"


def test_html_escapes_and_colours():
    html = report.render_html(make(result("dx", Status.ERROR, message="<script>")))
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'style="color:#cf222e"' in html


def test_rich_renderable_shows_rows_notes_and_summary():
    from rich.console import Console

    console = Console(record=True, width=200, color_system=None)
    console.print(report.rich_renderable(MIXED))
    text = console.export_text()
    assert "cnncheck gradcheck" in text and "not-implemented" in text
    assert "conv/layers dw: fail" in text and "FAILED: 5 gradients" in text


def test_interrupted_summary():
    assert report.summary_line(make(result(), interrupted=True)).startswith("INTERRUPTED: 1 gradient: 1 pass")


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        report.render_text(MIXED, "xml")
