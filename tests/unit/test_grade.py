"""Batch grading: discovery, verdicts and outcomes, scores, the class summary, resuming, grading for real."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
from pathlib import Path

import pytest

from cnncheck import grade
from cnncheck.errors import CnnCheckError
from cnncheck.gradcheck import GradcheckConfig
from cnncheck.results import CheckResult
from cnncheck.session import CapturedOutput
from cnncheck.status import Status

CLASS = Path(__file__).resolve().parent.parent / "fixtures" / "grade" / "class"
SETTINGS = grade.GradeSettings(GradcheckConfig(seed=5), ("affine", "relu"), quick=True, timeout=10.0)

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="isolation needs a POSIX system")


def result(layer, status, subject="dx", message="", impl="alice", kind="gradient", geometry="notebook"):
    return CheckResult(layer, impl, kind, subject, Status(status), geometry=geometry, message=message)


def submission(name="alice", status="ok", message="", results=(), layers=None, **fields):
    if layers is None:
        layers = {layer: grade.layer_verdict([r for r in results if r.layer == layer]) for layer in ("affine", "relu")}
    impls = {"affine": name, "relu": name} if status == "ok" else {}
    sub = grade.SubmissionResult(name, f"/class/{name}.py", status, message, layers, {}, tuple(results),
                                 impls=impls, root=f"/class/{name}.py", **fields)
    return sub.scored(SETTINGS)


# -- discovery ---------------------------------------------------------------------------------
def test_discovery_rules(tmp_path):
    (tmp_path / "bob.py").write_text("")
    for ignored in ("__init__.py", "_helper.py", ".hidden.py", "notes.txt", "setup.py", "conftest.py"):
        (tmp_path / ignored).write_text("")
    (tmp_path / "carol" / "cnn").mkdir(parents=True)
    (tmp_path / "carol" / "cnn" / "layers.py").write_text("")           # the course's layout
    (tmp_path / "dave").mkdir()
    (tmp_path / "dave" / "solution.py").write_text("")                  # python, but no layers.py
    (tmp_path / "erin" / "a").mkdir(parents=True)
    (tmp_path / "erin" / "b").mkdir()
    (tmp_path / "erin" / "a" / "layers.py").write_text("")
    (tmp_path / "erin" / "b" / "layers.py").write_text("")
    (tmp_path / "empty").mkdir()                                          # no python at all: skipped
    found = {s.name: s for s in grade.discover_submissions(tmp_path)}
    assert sorted(found) == ["bob", "carol", "dave", "erin"]
    assert found["bob"] == grade.Submission("bob", str(tmp_path / "bob.py"), str(tmp_path / "bob.py"))
    assert found["carol"].path == str(tmp_path / "carol" / "cnn" / "layers.py")
    assert found["dave"].problem == "no layers.py in this folder"
    assert found["erin"].problem.startswith("several layers.py files")
    with pytest.raises(CnnCheckError, match="no submissions in"):
        grade.discover_submissions(tmp_path / "empty")
    with pytest.raises(CnnCheckError, match="is not a folder"):
        grade.discover_submissions(tmp_path / "bob.py")


def test_submission_at_a_file_or_a_folder(tmp_path):
    (tmp_path / "sub" / "cnn").mkdir(parents=True)
    (tmp_path / "sub" / "cnn" / "layers.py").write_text("")
    (tmp_path / "sub" / "notes.md").write_text("")
    at_folder = grade.submission_at(tmp_path / "sub")
    assert (at_folder.name, at_folder.path, at_folder.root) == (
        "sub", str(tmp_path / "sub" / "cnn" / "layers.py"), str(tmp_path / "sub"))
    assert grade.submission_at(tmp_path / "sub" / "cnn" / "layers.py").name == "layers"
    (tmp_path / "none").mkdir()
    assert grade.submission_at(tmp_path / "none").problem == "no Python file in this folder"
    with pytest.raises(CnnCheckError, match="neither a .py file nor a folder"):
        grade.submission_at(tmp_path / "sub" / "notes.md")


def test_fingerprint_follows_names_and_contents(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "layers.py").write_text("x = 1\n")
    sub = grade.submission_at(tmp_path / "a")
    first = grade.fingerprint(sub)
    (tmp_path / "a" / "__pycache__").mkdir()
    (tmp_path / "a" / "__pycache__" / "layers.cpython-311.pyc").write_bytes(b"\0")
    assert grade.fingerprint(sub) == first
    (tmp_path / "a" / "helper.py").write_text("")
    second = grade.fingerprint(sub)
    (tmp_path / "a" / "layers.py").write_text("x = 2\n")
    assert len({first, second, grade.fingerprint(sub)}) == 3


# -- verdicts, outcomes, scores --------------------------------------------------------------------
@pytest.mark.parametrize("statuses, verdict", [
    ([], "missing"), (["pass", "pass"], "passed"), (["pass", "warning"], "passed"), (["pass", "fail"], "failed"),
    (["differs"], "failed"), (["not-implemented"], "missing"), (["fail", "timeout"], "error"),
    (["crashed"], "error"), (["uses-reference", "error"], "failed"),
])
def test_layer_verdict(statuses, verdict):
    assert grade.layer_verdict([result("relu", s) for s in statuses]) == verdict


@pytest.mark.parametrize("status, statuses, outcome", [
    ("ok", ["pass"], "passed"), ("ok", ["fail"], "failed"), ("ok", ["pass", "timeout"], "timeout"),
    ("ok", ["crashed", "fail"], "crashed"), ("ok", ["internal-error"], "internal-error"),
    ("ok", ["tampering", "crashed"], "tampering"), ("error", [], "load-error"), ("timeout", [], "timeout"),
    ("crashed", [], "crashed"), ("uses-reference", [], "uses-reference"),
])
def test_outcome_of_a_submission(status, statuses, outcome):
    results = [result("relu", s) for s in statuses] + [result("affine", "pass")]
    assert submission(status=status, results=results if status == "ok" else ()).outcome == outcome


def test_scores_and_problem_lines():
    good = submission(results=[result("affine", "pass"), result("relu", "pass")])
    assert (good.points, good.max_points, good.passed) == (2, 2, True)
    bad = submission(results=[result("affine", "pass"), result("relu", "fail", message="dx disagrees")])
    assert (bad.points, bad.score["relu"].status) == (1, "fail")
    assert bad.problems() == ["relu: dx fail (gradient at notebook: dx disagrees)"]
    unloaded = submission(status="error", message="SyntaxError: invalid syntax",
                          layers={"affine": "error", "relu": "error"})
    assert unloaded.points == 0 and unloaded.problems() == ["load: error (SyntaxError: invalid syntax)"]
    assert submission(status="error", message="x" * 200, layers={}).problems(40)[0].endswith("...")


def test_a_submission_with_a_problem_is_not_run():
    sub = grade.Submission("erin", "", "/class/erin", "several layers.py files (a/layers.py, b/layers.py); keep one")
    graded = grade.grade_submission(sub, SETTINGS)
    assert graded.status == "error" and graded.outcome == "load-error" and graded.message.startswith("several")
    assert graded.layers == {"affine": "error", "relu": "error"} and graded.points == 0


def test_to_dict_and_back():
    bad = result("relu", "fail", message="dx disagrees")
    sub = submission(results=[result("affine", "pass"), bad], seconds=2.5, output=CapturedOutput("hi", "", 2, 0),
                     fingerprint="abc")
    data = json.loads(json.dumps(sub.to_dict(with_output=True)))
    assert data["outcome"] == "failed" and data["points"] == 1 and data["max_points"] == 2
    assert data["score"]["items"][1]["status"] == "fail" and data["impls"] == {"affine": "alice", "relu": "alice"}
    back = grade.SubmissionResult.from_dict(data, SETTINGS)
    assert back.results == sub.results and back.score == sub.score and back.output == sub.output
    assert (back.fingerprint, back.root, back.seconds) == ("abc", "/class/alice.py", 2.5)


# -- the class summary ---------------------------------------------------------------------------
def test_document_and_csv_summary():
    graded = [submission("alice", results=[result("affine", "pass"), result("relu", "pass")], seconds=1.25),
              submission("bob", status="timeout", message="timeout (still importing the module after 10 s)",
                         layers={"affine": "error", "relu": "error"}, seconds=10.5)]
    doc = grade.to_document(graded, directory="class", settings=SETTINGS, version="9.9", seconds=12.0)
    assert doc["schema_version"] == grade.SCHEMA_VERSION and doc["seed"] == 5 and doc["max_points"] == 2
    assert doc["key"] == SETTINGS.key("9.9") != SETTINGS.key("9.10")
    assert doc["summary"] == {"submissions": 2, "passed": 1, "outcomes": {"passed": 1, "timeout": 1},
                              "mean_points": 1.0}
    assert [i["name"] for i in doc["rubric"]["items"]] == ["affine", "relu"]
    rows = list(csv.DictReader(io.StringIO(grade.csv_text(graded, doc))))
    assert list(rows[0]) == ["submission", "path", "status", "points", "max_points", "affine", "relu",
                             "affine_status", "relu_status", "seconds", "message"]
    assert rows[0] == {"submission": "alice", "path": "/class/alice.py", "status": "passed", "points": "2",
                       "max_points": "2", "affine": "1", "relu": "1", "affine_status": "", "relu_status": "",
                       "seconds": "1.25", "message": ""}
    assert (rows[1]["status"], rows[1]["points"], rows[1]["seconds"]) == ("timeout", "0", "10.50")
    assert rows[1]["message"] == "timeout (still importing the module after 10 s)"


def test_results_file_follows_the_suffix(tmp_path):
    graded = [submission(results=[result("affine", "pass"), result("relu", "pass")])]
    doc = grade.to_document(graded, directory="class", settings=SETTINGS)
    assert grade.write_results_file(tmp_path / "g.CSV", graded, doc) == "csv"
    assert (tmp_path / "g.CSV").read_text().startswith("submission,path,status,points")
    assert grade.write_results_file(tmp_path / "g.json", graded, doc) == "json"
    assert json.loads((tmp_path / "g.json").read_text()) == doc


# -- resuming ------------------------------------------------------------------------------------
def test_resume_reads_the_document_and_the_checkpoint(tmp_path):
    for name in ("good.py", "wrong.py", "typo.py"):
        shutil.copy(CLASS / name, tmp_path / name)
    subs = grade.discover_submissions(tmp_path)
    good, typo, wrong = (grade.SubmissionResult(s.name, s.path, "ok", fingerprint=grade.fingerprint(s))
                         for s in subs)
    out = tmp_path / "grades.json"
    doc = grade.to_document([good.scored(SETTINGS)], directory=str(tmp_path), settings=SETTINGS, version="9.9",
                            interrupted=True)
    out.write_text(json.dumps(doc))
    checkpoint = grade.Checkpoint(grade.checkpoint_path(out), key=SETTINGS.key("9.9"), seed=5, version="9.9")
    checkpoint.add(typo.scored(SETTINGS))
    checkpoint.close(remove=False)
    with open(grade.checkpoint_path(out), "a") as handle:
        handle.write('{"name": "wrong", "trunc')             # a run killed while writing a line
    previous = grade.read_previous(out)
    assert previous.seed == 5 and len(previous.sources) == 2
    done = grade.resumable(previous, subs, SETTINGS, "9.9")
    assert sorted(done) == ["good", "typo"] and done["good"].score is not None
    assert grade.resumable(previous, subs, SETTINGS, "9.10") == {}
    other = grade.GradeSettings(GradcheckConfig(seed=6), SETTINGS.layers, quick=True, timeout=10.0)
    assert grade.resumable(previous, subs, other, "9.9") == {}
    (tmp_path / "good.py").write_text((tmp_path / "good.py").read_text() + "\n# changed\n")
    assert sorted(grade.resumable(previous, grade.discover_submissions(tmp_path), SETTINGS, "9.9")) == ["typo"]


def test_resume_refuses_a_file_that_is_not_a_grade_document(tmp_path):
    assert grade.read_previous(tmp_path / "absent.json") is None
    (tmp_path / "g.json").write_text('{"command": "gradcheck"}')
    with pytest.raises(CnnCheckError, match="not the JSON document of a cnncheck grade run"):
        grade.read_previous(tmp_path / "g.json")
    (tmp_path / "g.json").write_text("garbage")
    with pytest.raises(CnnCheckError, match="not a JSON document"):
        grade.read_previous(tmp_path / "g.json")


# -- grading for real -----------------------------------------------------------------------------
@posix_only
def test_grade_all_on_workers_keeps_the_order_and_scores():
    submissions = grade.discover_submissions(CLASS)
    seen = []
    graded = grade.grade_all(submissions, SETTINGS, jobs=2, on_graded=seen.append)
    assert [g.name for g in graded] == ["crash", "good", "typo", "wrong"]
    assert sorted(g.name for g in seen) == [g.name for g in graded]
    crash, good, typo, wrong = graded
    assert good.passed and good.outcome == "passed" and good.points == 2
    assert good.impls == {"affine": "good", "relu": "good"} and good.fingerprint
    assert crash.outcome == "crashed" and crash.layers == {"affine": "error", "relu": "passed"}
    assert crash.points == 1 and crash.score["affine"].status == "crashed"
    assert typo.outcome == "load-error" and typo.message.startswith("cannot import typo: SyntaxError")
    assert wrong.outcome == "failed" and wrong.score["relu"].points == 0 and wrong.score["affine"].points == 1
    assert all(r.location.startswith(str(CLASS)) for r in wrong.results if r.location)


def test_grade_all_refuses_zero_jobs():
    with pytest.raises(CnnCheckError, match="--jobs"):
        grade.grade_all([], SETTINGS, jobs=0)


def test_a_bug_in_cnncheck_on_one_submission_does_not_stop_the_class(tmp_path, monkeypatch):
    from cnncheck import grade as grading
    from cnncheck.gradcheck import GradcheckConfig

    for name in ("alice", "bob"):
        (tmp_path / f"{name}.py").write_text("import numpy as np\n\ndef relu_forward(x):\n    return np.maximum(x, 0), x\n"
                                             "\ndef relu_backward(dout, x):\n    return dout * (x > 0)\n")
    real = grading.run_checks

    def sometimes_broken(loaded, pairs, **kwargs):
        if any("alice" in impl.source for _, impl in pairs):
            raise RuntimeError("a bug")
        return real(loaded, pairs, **kwargs)

    monkeypatch.setattr(grading, "run_checks", sometimes_broken)
    settings = grading.GradeSettings(GradcheckConfig(), ("relu",), quick=True)
    alice, bob = grading.grade_all(grading.discover_submissions(tmp_path), settings)
    assert alice.status == "internal-error" and "RuntimeError: a bug" in alice.message
    assert bob.passed
