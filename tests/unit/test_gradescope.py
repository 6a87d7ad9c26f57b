"""The Gradescope ``results.json`` document: every required key, scores that add up, valid statuses."""

from __future__ import annotations

import json

import pytest

from cnncheck import catalog, grade, rubric
from cnncheck.gradcheck import GradcheckConfig
from cnncheck.report import gradescope, render
from cnncheck.results import CheckResult
from cnncheck.status import Status

SETTINGS = grade.GradeSettings(GradcheckConfig(seed=7), ("affine", "relu"), quick=True)
CONTEXT = {"seed": 7, "version": "9.9", "config": SETTINGS.config.to_dict(), "layers": ["affine", "relu"],
           "quick": True, "overrides": {}, "strict": False}

TOP_KEYS = {"score", "execution_time", "output", "tests"}
TEST_KEYS = {"name", "score", "max_score", "status", "output", "visibility"}


def results(layer, *, bad=None, impl="alice"):
    subjects = {"affine": ("out", "dx", "dw", "db"), "relu": ("out", "dx")}[layer]
    out = []
    for subject in subjects:
        kind = "reference" if subject == "out" else "gradient"
        status = Status.PASS
        fields = {}
        if bad == subject:
            status = Status.FAIL
            fields = dict(rel_error=0.5, threshold=1e-7, worst_index=(1, 2), got=0.25, expected=0.75)
        out.append(CheckResult(layer, impl, kind, subject, status, geometry="notebook", where="x (4, 5)",
                               message="" if status == Status.PASS else f"{subject} disagrees at {subject}[1, 2]",
                               location="/class/alice.py:12", **fields))
    return out


def submission(status="ok", message="", bad_relu=False, settings=SETTINGS):
    res = () if status != "ok" else tuple(results("affine") + results("relu", bad="dx" if bad_relu else None))
    layers = {"affine": "passed", "relu": "failed" if bad_relu else "passed"} if status == "ok" else \
        {"affine": "error", "relu": "error"}
    sub = grade.SubmissionResult("alice", "/class/alice.py", status, message, layers, {}, res, seconds=1.5,
                                 impls={"affine": "alice", "relu": "alice"} if status == "ok" else {},
                                 root="/class/alice.py")
    return sub.scored(settings)


def check_schema(doc: dict) -> None:
    assert TOP_KEYS <= set(doc)
    assert isinstance(doc["score"], float) and isinstance(doc["execution_time"], (int, float))
    assert isinstance(doc["output"], str) and doc["output"]
    assert doc["visibility"] in gradescope.VISIBILITIES and doc["stdout_visibility"] in gradescope.VISIBILITIES
    assert doc["output_format"] == "text"
    assert doc["tests"], "a document always lists the rubric's tests"
    for number, test in enumerate(doc["tests"], start=1):
        assert TEST_KEYS <= set(test)
        assert test["status"] in gradescope.TEST_STATUSES
        assert 0 <= test["score"] <= test["max_score"]
        assert (test["status"] == "passed") == (test["score"] == test["max_score"])
        assert test["number"] == str(number) and test["visibility"] in gradescope.VISIBILITIES
        assert isinstance(test["name"], str) and isinstance(test["output"], str) and test["output"]
    assert abs(sum(t["score"] for t in doc["tests"]) - doc["score"]) < 1e-9
    assert abs(sum(t["max_score"] for t in doc["tests"]) - doc["extra_data"]["max_score"]) < 1e-9
    json.loads(json.dumps(doc, allow_nan=False))


def document(sub, **kwargs):
    return gradescope.document(gradescope.Autograded(sub, CONTEXT, 3.25, **kwargs))


def test_a_passing_submission_gets_every_point():
    doc = document(submission())
    check_schema(doc)
    assert doc["score"] == 2.0 and doc["execution_time"] == 3.25
    assert [t["name"] for t in doc["tests"]] == ["affine (affine_forward, affine_backward)",
                                                  "relu (relu_forward, relu_backward)"]
    assert {t["status"] for t in doc["tests"]} == {"passed"}
    assert doc["output"].startswith("2 of 2 points (passed)\nPASSED: 2 implementations checked")
    assert "seed 7" in doc["output"] and "cnncheck gradcheck affine relu --module alice.py --seed 7 --quick" \
        in doc["output"]
    assert doc["extra_data"]["seed"] == 7 and doc["extra_data"]["outcome"] == "passed"


def test_a_failing_test_says_what_gradcheck_says_and_what_to_try():
    doc = document(submission(bad_relu=True))
    check_schema(doc)
    affine, relu = doc["tests"]
    assert affine["status"] == "passed" and relu["status"] == "failed" and doc["score"] == 1.0
    lines = relu["output"].splitlines()
    assert lines[0] == "relu: 0 of 1 point (fail, gradient at notebook)"
    assert lines[1] == ("relu/alice dx: fail: gradient at notebook (the course notebook's geometry): "
                        "dx disagrees at dx[1, 2] [alice.py:12]")
    assert "Failing geometry: notebook: x (4, 5)" in lines
    assert "Worst element: dx[1, 2]: got 0.25, expected 0.75 (error 5.0e-01, allowed 1e-07)" in lines
    assert lines[-1].startswith("Try next: your backward pass disagrees with centred differences")
    assert "FAILED: 1 of 2 implementations failed (relu/alice)" in doc["output"]


def test_a_submission_that_does_not_load_still_gets_a_valid_document():
    doc = document(submission("error", "cannot import alice: SyntaxError: expected ':' (alice.py, line 3)"))
    check_schema(doc)
    assert doc["score"] == 0.0 and {t["score"] for t in doc["tests"]} == {0.0}
    assert "Your submission did not load: cannot import alice: SyntaxError" in doc["output"]
    assert all("did not load: cannot import alice" in t["output"] for t in doc["tests"])
    assert doc["extra_data"]["outcome"] == "load-error"


def test_partial_credit_and_a_rubric_title():
    rub = rubric.parse_rubric({"layers": {"affine": 1, "relu": {"points": 3, "title": "ReLU",
                                                               "checks": {"gradient": 2, "reference": 1}}}}, "r.toml")
    settings = grade.GradeSettings(SETTINGS.config, SETTINGS.layers, quick=True, rubric=rub.resolve(
        {s.name: s for s in catalog.specs()}, battery=SETTINGS.battery()))
    doc = document(submission(bad_relu=True, settings=settings))
    check_schema(doc)
    relu = doc["tests"][1]
    assert relu["name"] == "ReLU" and relu["score"] == 1.0 and relu["max_score"] == 3.0
    assert "Points: gradient 0/2 (fail at notebook); reference 1/1" in relu["output"].splitlines()
    assert doc["score"] == 2.0 and doc["extra_data"]["rubric_file"] == "r.toml"


def test_visibility_and_the_registry():
    doc = document(submission(), visibility="after_published")
    assert doc["visibility"] == "after_published" and {t["visibility"] for t in doc["tests"]} == {"after_published"}
    run = gradescope.Autograded(submission(), CONTEXT, 1.0)
    text = render("gradcheck", "gradescope", run)
    assert text.endswith("}\n") and json.loads(text) == gradescope.document(run)
    with pytest.raises(ValueError):
        gradescope.render_text(run, "json")
