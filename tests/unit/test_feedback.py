"""Feedback files: gradcheck's own words, the failing geometry, the worst element, what to try next."""

from __future__ import annotations

from cnncheck import grade
from cnncheck.gradcheck import GradcheckConfig
from cnncheck.report import feedback
from cnncheck.report.gradcheck import notes
from cnncheck.results import CheckResult, GradcheckReport
from cnncheck.status import Status

SETTINGS = grade.GradeSettings(GradcheckConfig(seed=11), ("relu",), quick=True)
CONTEXT = {"seed": 11, "version": "9.9", "config": SETTINGS.config.to_dict(), "layers": ["relu"], "quick": True,
           "overrides": {}}


def relu(status=Status.PASS, **fields):
    return CheckResult("relu", "layers", "gradient", "dx", status, geometry="notebook", where="x (2, 3)",
                       **fields)


def folder_submission(*results, status="ok", message=""):
    sub = grade.SubmissionResult("bob", "/class/bob/cnn/layers.py", status, message, {"relu": "passed"}, {},
                                 tuple(results), impls={"relu": "layers"} if status == "ok" else {},
                                 root="/class/bob")
    return sub.scored(SETTINGS)


def test_locations_and_the_command_are_the_students_own():
    sub = folder_submission(relu(location="/class/bob/cnn/layers.py:40"))
    (result,) = feedback.student_results(sub)
    assert result.location == "cnn/layers.py:40"
    assert feedback.command(sub, CONTEXT) == "cnncheck gradcheck relu --module cnn/layers.py --seed 11 --quick"
    context = dict(CONTEXT, quick=False, overrides={"shape": "2,3,4,4"}, config={"dtype": "float32"})
    assert feedback.command(sub, context).endswith("--seed 11 --dtype float32 --shape 2,3,4,4")
    assert feedback.file_name(grade.SubmissionResult("a/b", "", "ok")) == "a__b.md"


def test_the_item_text_is_gradchecks_note_word_for_word():
    bad = relu(Status.FAIL, message="dx disagrees", location="/class/bob/cnn/layers.py:40", rel_error=0.5,
               threshold=1e-7, worst_index=(0, 1), got=1.0, expected=2.0)
    sub = folder_submission(bad)
    (item,) = feedback.items(sub, CONTEXT)
    report = GradcheckReport((feedback.student_results(sub)[0],))
    assert item.notes == tuple(notes(report))
    assert item.notes[0].endswith("dx disagrees [cnn/layers.py:40]")
    assert item.geometry == "notebook: x (2, 3)"
    assert item.worst == "dx[0, 1]: got 1, expected 2 (error 5.0e-01, allowed 1e-07)"
    assert item.step == feedback.KIND_HINTS["gradient"]
    text = item.markdown()
    assert text.startswith("## relu: 0 of 1 point\n")
    assert "- **Failing geometry:** `notebook`: x (2, 3)" in text
    assert "- **Worst element:** `dx[0, 1]`: got 1, expected 2" in text


def test_next_step_by_finding_then_status_then_kind():
    def step(**fields):
        base = dict(layer="conv", impl="x", kind="gradient", subject="dx", status=Status.FAIL)
        base.update(fields)
        return feedback.next_step(CheckResult(**base))

    assert step(kind="protocol", finding="mutates-input") == feedback.FINDING_HINTS["mutates-input"]
    assert step(status=Status.TIMEOUT, kind="call") == feedback.STATUS_HINTS[Status.TIMEOUT]
    assert step(kind="subgradient", finding="ties") == feedback.FINDING_HINTS["ties"]
    assert step(kind="reference", subject="out", status=Status.DIFFERS) == feedback.KIND_HINTS["reference"]
    assert step(kind="reference", subject="dw", status=Status.DIFFERS).startswith("your dw differs")
    assert feedback.load_step("timeout") == feedback.LOAD_HINTS[Status.TIMEOUT]
    assert feedback.load_step("uses-reference") == feedback.STATUS_HINTS[Status.USES_REFERENCE]


def test_markdown_of_a_passing_and_of_a_non_loading_submission():
    good = feedback.markdown(folder_submission(relu()), CONTEXT)
    assert good.startswith("# Feedback: bob\n\n**1 of 1 point** (passed), checked in 0.0 s.\n")
    assert "| relu | 1/1 | pass | 1 geometry |" in good and "## relu" not in good
    assert "## What `cnncheck gradcheck` says" in good and "PASSED: 1 implementation checked" in good
    assert "cnncheck gradcheck relu --module cnn/layers.py --seed 11 --quick" in good
    broken = folder_submission(status="timeout", message="timeout (still importing the module after 30 s)")
    text = feedback.markdown(broken, CONTEXT)
    assert "Your submission did not load" in text and "still importing the module after 30 s" in text
    assert f"**Try next:** {feedback.LOAD_HINTS[Status.TIMEOUT]}" in text
    assert "| relu | 0/1 | timeout | - |" in text and "What `cnncheck gradcheck` says" not in text
