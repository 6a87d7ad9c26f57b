"""Batch grading: discovering submissions, verdicts per layer, writers, and grading several at once."""

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
from cnncheck.isolate import CapturedOutput
from cnncheck.results import GradcheckResult, Status

SUBMISSIONS = Path(__file__).resolve().parent.parent / "fixtures" / "submissions"
SMALL = {"shape": (2, 2, 4, 4)}
LAYERS = ("affine", "relu", "conv", "pool")

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="isolation needs a POSIX system")


def result(layer, status, gradient="dx", message="", impl="student"):
    return GradcheckResult(layer, impl, gradient, status, message=message)


# -- discovery ---------------------------------------------------------------------
def test_discovers_the_fixture_folder():
    found = grade.discover_submissions(SUBMISSIONS)
    names = [s.name for s in found]
    assert names == sorted(names) and len(names) == 20
    by_name = {s.name: s for s in found}
    assert by_name["good_loops"].path == str(SUBMISSIONS / "good_loops" / "layers.py")
    assert by_name["segfault"].path == str(SUBMISSIONS / "segfault.py")
    assert all(not s.problem for s in found)


def test_discovery_rules(tmp_path):
    (tmp_path / "bob.py").write_text("")
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "_helper.py").write_text("")
    (tmp_path / ".hidden.py").write_text("")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "carol" / "cnn").mkdir(parents=True)
    (tmp_path / "carol" / "cnn" / "layers.py").write_text("")           # the course's layout
    (tmp_path / "dave").mkdir()
    (tmp_path / "dave" / "solution.py").write_text("")                  # python, but no layers.py
    (tmp_path / "erin" / "a").mkdir(parents=True)
    (tmp_path / "erin" / "b").mkdir()
    (tmp_path / "erin" / "a" / "layers.py").write_text("")
    (tmp_path / "erin" / "b" / "layers.py").write_text("")
    (tmp_path / "empty").mkdir()                                          # no python at all: skipped
    (tmp_path / "__pycache__").mkdir()
    found = {s.name: s for s in grade.discover_submissions(tmp_path)}
    assert sorted(found) == ["bob", "carol", "dave", "erin"]
    assert found["bob"] == grade.Submission("bob", str(tmp_path / "bob.py"))
    assert found["carol"].path == str(tmp_path / "carol" / "cnn" / "layers.py")
    assert found["dave"].path == "" and found["dave"].problem == "no layers.py in this folder"
    assert found["erin"].problem.startswith("several layers.py files")


def test_name_clashes_fall_back_to_paths(tmp_path):
    (tmp_path / "alice.py").write_text("")
    (tmp_path / "alice").mkdir()
    (tmp_path / "alice" / "layers.py").write_text("")
    names = [s.name for s in grade.discover_submissions(tmp_path)]
    assert names == ["alice.py", str(Path("alice") / "layers.py")]


def test_discovery_refuses_an_empty_folder_and_a_file(tmp_path):
    with pytest.raises(CnnCheckError, match="no submissions in"):
        grade.discover_submissions(tmp_path)
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(CnnCheckError, match="is not a folder"):
        grade.discover_submissions(tmp_path / "x.txt")


# -- verdicts -------------------------------------------------------------------------
@pytest.mark.parametrize("statuses, verdict", [
    ([Status.PASS, Status.PASS], "passed"),
    ([Status.PASS, Status.KINK], "passed"),
    ([Status.PASS, Status.FAIL], "failed"),
    ([Status.MUTATED], "failed"),
    ([Status.FAIL, Status.ERROR], "error"),
    ([Status.PASS, Status.TIMEOUT], "error"),
    ([Status.CRASHED], "error"),
    ([Status.NOT_IMPLEMENTED, Status.NOT_IMPLEMENTED], "missing"),
    ([Status.PASS, Status.NOT_IMPLEMENTED], "missing"),
    ([Status.FAIL, Status.NOT_IMPLEMENTED], "failed"),
    ([], "missing"),
])
def test_layer_verdict(statuses, verdict):
    assert grade.layer_verdict([result("conv", s) for s in statuses]) == verdict


def test_submission_counts_problems_and_dict():
    results = (result("affine", Status.PASS), result("relu", Status.PASS),
               result("conv", Status.PASS, "dx"), result("conv", Status.CRASHED, "dw", "signal SIGSEGV"),
               result("pool", Status.NOT_IMPLEMENTED, message="backward returned None"))
    layers = {"affine": "passed", "relu": "passed", "conv": "error", "pool": "missing"}
    sub = grade.SubmissionResult("ann", "ann.py", "ok", "", layers, results,
                                 CapturedOutput("hi\n", "", 3, 0), 1.5)
    assert (sub.count("passed"), sub.count("failed"), sub.count("error"), sub.count("missing")) == (2, 0, 1, 1)
    assert not sub.passed
    assert sub.problems() == ["conv: dw crashed (signal SIGSEGV)", "pool: not implemented"]
    data = sub.to_dict()
    assert data["counts"] == {"passed": 2, "failed": 0, "errors": 1, "missing": 1}
    assert data["output"] == {"stdout_bytes": 3, "stderr_bytes": 0}
    assert len(data["results"]) == 5 and data["results"][3]["status"] == "crashed"
    assert sub.to_dict(with_output=True)["output"]["stdout"] == "hi\n"
    json.dumps(data)


def test_import_failure_problem_line():
    sub = grade.SubmissionResult("bo", "bo.py", Status.TIMEOUT, "still importing the module after 2 s",
                                 dict.fromkeys(LAYERS, "error"))
    assert sub.problems() == ["import: timeout (still importing the module after 2 s)"]
    assert sub.count("error") == 4 and not sub.passed


def test_problem_lines_are_clipped():
    sub = grade.SubmissionResult("x", "x.py", Status.ERROR, "y" * 500, {"conv": "error"})
    assert len(sub.problems(40)[0]) == 40 and sub.problems(40)[0].endswith("...")


def test_submission_with_a_problem_is_not_run():
    sub = grade.grade_submission(grade.Submission("dave", "", "no layers.py in this folder"), GradcheckConfig(),
                                 layers=LAYERS)
    assert sub.status == Status.ERROR and sub.message == "no layers.py in this folder"
    assert sub.layers == dict.fromkeys(LAYERS, "error") and sub.results == ()


# -- writers ---------------------------------------------------------------------------
def _graded():
    ok = grade.SubmissionResult("ann", "ann.py", "ok", "", {"relu": "passed"},
                                (GradcheckResult("relu", "ann", "dx", Status.PASS, rel_error=1e-10, abs_error=2e-11,
                                                 threshold=1e-7),), seconds=0.5)
    broken = grade.SubmissionResult("bo", "bo.py", Status.ERROR, "SyntaxError: invalid syntax", {"relu": "error"})
    return [ok, broken]


def test_csv_has_a_row_per_result_and_per_failed_import():
    text = grade.csv_text(_graded())
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == list(grade.CSV_COLUMNS)
    assert rows[0]["submission"] == "ann" and rows[0]["status"] == "pass"
    assert float(rows[0]["rel_error"]) == 1e-10 and float(rows[0]["threshold"]) == 1e-7
    assert rows[1] == {"submission": "bo", "path": "bo.py", "layer": "", "impl": "", "gradient": "",
                       "status": "error", "rel_error": "", "abs_error": "", "threshold": "",
                       "message": "SyntaxError: invalid syntax"}


def test_document_schema():
    doc = grade.to_document(_graded(), directory="subs", config={"dtype": "float64"}, version="1.0",
                            timeout=2.0, memory_limit=1024)
    assert set(doc) == {"command", "version", "directory", "passed", "interrupted", "config", "timeout",
                        "memory_limit", "summary", "submissions"}
    assert doc["command"] == "grade" and doc["passed"] is False
    assert doc["summary"] == {"submissions": 2, "passed": 1}
    assert [s["name"] for s in doc["submissions"]] == ["ann", "bo"]
    buffer = io.StringIO()
    grade.write_json(doc, buffer)
    assert json.loads(buffer.getvalue()) == doc


def test_document_of_an_interrupted_run_does_not_pass():
    ok = _graded()[:1]
    assert grade.to_document(ok, directory="d", config={})["passed"] is True
    assert grade.to_document(ok, directory="d", config={}, interrupted=True)["passed"] is False
    assert grade.to_document([], directory="d", config={})["passed"] is False


def test_results_file_format_follows_the_suffix(tmp_path):
    graded = _graded()
    doc = grade.to_document(graded, directory="d", config={})
    assert grade.write_results_file(tmp_path / "g.csv", graded, doc) == "csv"
    assert (tmp_path / "g.csv").read_text().startswith("submission,path,layer")
    assert grade.write_results_file(tmp_path / "g.json", graded, doc) == "json"
    assert json.loads((tmp_path / "g.json").read_text()) == doc


# -- grading for real ---------------------------------------------------------------------
@posix_only
def test_grade_all_on_workers_keeps_the_order(tmp_path):
    for name in ("good_vectorised.py", "segfault.py"):
        shutil.copy(SUBMISSIONS / name, tmp_path / name)
    (tmp_path / "typo.py").write_text("def relu_forward(x)\n    return x, x\n")
    submissions = grade.discover_submissions(tmp_path)
    seen = []
    graded = grade.grade_all(submissions, GradcheckConfig(), layers=("relu", "conv"), overrides=SMALL,
                             timeout=3.0, jobs=2, on_graded=seen.append)
    assert [g.name for g in graded] == ["good_vectorised", "segfault", "typo"]
    assert sorted(g.name for g in seen) == [g.name for g in graded]
    good, crashing, typo = graded
    assert good.passed and good.layers == {"relu": "passed", "conv": "passed"}
    assert typo.status == Status.ERROR and typo.message.startswith("SyntaxError: expected ':'")
    assert typo.layers == {"relu": "error", "conv": "error"} and typo.results == ()
    assert crashing.layers == {"relu": "passed", "conv": "error"}
    assert crashing.problems() == ["conv: dx crashed (signal SIGSEGV)"]


def test_grade_all_refuses_zero_jobs():
    with pytest.raises(CnnCheckError, match="--jobs"):
        grade.grade_all([], GradcheckConfig(), layers=LAYERS, jobs=0)
