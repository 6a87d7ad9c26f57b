"""Rendering a gradcheck report: the screen table at any width, and the machine formats carrying every check."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from rich.console import Console

from cnncheck import api, catalog, gradcheck, loading
from cnncheck.layers import naive
from cnncheck.report import gradcheck as report
from cnncheck.session import LocalSession
from cnncheck.status import Status

SCHEMA = os.path.join(os.path.dirname(report.__file__), os.pardir, "schemas", "gradcheck.schema.json")


def _leaky(x):
    return np.where(x > 0, x, 0.01 * x), x


def _leaky_back(dout, x):
    return np.where(x > 0, dout, 0.01 * dout)


def _dout_writer(dout, x):
    dout[x <= 0] = 0
    return dout


@pytest.fixture(scope="module")
def mixed():
    """A report with a pass, a failure and a warning, with a long implementation name."""
    registry = loading.builtin_registry()
    functions = {k: v for layer in registry.layer_names() for i in registry.impls(layer) for k, v in i.functions.items()}
    references = gradcheck.References(registry, LocalSession(functions))
    results = []
    for name, forward, backward in (("student_submission_long", _leaky, _leaky_back),
                                    ("writes_dout", naive.relu_forward, _dout_writer),
                                    ("numpy", naive.relu_forward, naive.relu_backward)):
        impl = loading.function_impl("relu", name, forward, backward, "user", "layers.py")
        results += gradcheck.check(catalog.spec("relu"), impl, LocalSession(dict(impl.functions)),
                                   references=references)
    return api.Report(tuple(results), gradcheck.GradcheckConfig().to_dict(), version="test")


def test_rows_one_per_subject_with_the_failing_check(mixed):
    rows = {(r.impl, r.subject): r for r in mixed.rows()}
    assert rows[("student_submission_long", "out")].status == Status.DIFFERS
    assert rows[("student_submission_long", "out")].check == "reference at notebook"
    assert rows[("writes_dout", "out")].status == Status.WARNING and rows[("writes_dout", "out")].failing is None
    assert rows[("numpy", "dx")].check == "3 geometries"


def test_plain_text(mixed):
    text = report.render_text(mixed, "plain")
    assert "relu/student_submission_long out: differs: reference at notebook (the course notebook's geometry)" in text
    assert "relu/writes_dout out: warning: mutates-dout" in text
    assert text.rstrip().splitlines()[-1].startswith("FAILED: 1 of 3 implementations failed "
                                                     "(relu/student_submission_long); 1 warning")


@pytest.mark.parametrize("width", [80, 60])
def test_narrow_terminals_never_cut_layer_impl_or_status(mixed, width):
    console = Console(width=width, record=True, color_system=None)
    console.print(report.rich_renderable(mixed, width))
    text = console.export_text()
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines)
    table = [line for line in lines if line.startswith("relu")]
    assert any("student_submission_long" in line and "differs" in line for line in table)
    assert any("writes_dout" in line and "warning" in line for line in table)
    assert "…" not in "\n".join(table)


def test_json_document_matches_its_schema(mixed):
    jsonschema = pytest.importorskip("jsonschema")
    document = json.loads(report.render_json(mixed))
    jsonschema.validate(document, json.load(open(SCHEMA)))
    assert document["passed"] is False
    assert {r["kind"] for r in document["results"]} >= {"reference", "gradient", "protocol", "subgradient"}
    assert all(r["geometry"] or r["kind"] in ("integrity", "call") for r in document["results"])


def test_junit_has_a_testcase_per_check(mixed):
    root = ET.fromstring(report.junit_xml(mixed))
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == len(mixed.results)
    assert int(suite.get("failures")) == len(mixed.failed_results)
    assert any(case.get("name") == "out reference @notebook" and case.find("failure") is not None for case in cases)


def test_github_annotations_and_markdown(mixed):
    github = report.render_github(mixed)
    assert github.startswith("::error ") and "::warning " in github
    markdown = report.render_text(mixed, "markdown")
    assert "<summary>Every check</summary>" in markdown
    assert markdown.count("| relu ") >= len(mixed.results)


def test_html_for_notebooks(mixed):
    assert "<table>" in mixed._repr_html_() and "differs" in mixed._repr_html_()
