"""``cnncheck grade``: a class graded with a rubric, the summary files, feedback files, and --resume."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cnncheck import grade as grading
from cnncheck.cli.main import main

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="isolation needs a POSIX system")

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "grade"
CLASS = FIXTURES / "class"
RUBRIC = FIXTURES / "rubric.toml"
FAST = ["--quick", "--timeout", "10", "--memory-limit", "512M"]


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The fixture class graded once with the rubric: (result, JSON document, CSV rows, feedback folder)."""
    out = tmp_path_factory.mktemp("grade")
    result = CliRunner().invoke(main, ["grade", str(CLASS), *FAST, "--rubric", str(RUBRIC), "--jobs", "2",
                                       "--output", str(out / "grades.json"), "--feedback", str(out / "feedback"),
                                       "--format", "csv", "--seed", "42"])
    rows = list(csv.DictReader(result.stdout.splitlines()))
    return result, json.loads((out / "grades.json").read_text()), rows, out / "feedback"


def test_the_class_is_scored_with_the_rubric(graded):
    result, doc, _, _ = graded
    assert result.exit_code == 1, result.output
    assert doc["layers"] == ["affine", "relu"] and doc["seed"] == 42 and doc["max_points"] == 5
    subs = {s["name"]: s for s in doc["submissions"]}
    assert {n: (s["outcome"], s["points"]) for n, s in subs.items()} == {
        "crash": ("crashed", 2), "good": ("passed", 5), "typo": ("load-error", 0), "wrong": ("failed", 3)}
    affine = subs["crash"]["score"]["items"][0]
    assert [(p["part"], p["points"], p["max_points"]) for p in affine["parts"]] == [
        ("gradient", 0, 2), ("reference", 0, 1)]
    assert doc["summary"]["outcomes"] == {"passed": 1, "failed": 1, "load-error": 1, "crashed": 1}
    assert all(s["seconds"] > 0 for s in subs.values() if s["name"] != "typo")


def test_the_csv_summary_has_a_column_per_layer(graded):
    _, doc, rows, _ = graded
    assert list(rows[0]) == ["submission", "path", "status", "points", "max_points", "affine", "relu",
                             "affine_status", "relu_status", "seconds", "message"]
    by_name = {row["submission"]: row for row in rows}
    assert {n: (r["status"], r["points"], r["affine"], r["relu"]) for n, r in by_name.items()} == {
        "crash": ("crashed", "2", "0", "2"), "good": ("passed", "5", "3", "2"), "typo": ("load-error", "0", "0", "0"),
        "wrong": ("failed", "3", "3", "0")}
    assert by_name["crash"]["affine_status"] == "crashed" and by_name["wrong"]["relu_status"] == "differs"
    assert by_name["typo"]["message"].startswith("cannot import typo: SyntaxError")
    assert float(by_name["good"]["seconds"]) > 0


def test_one_feedback_file_per_submission(graded):
    _, _, _, folder = graded
    assert sorted(p.name for p in folder.iterdir()) == ["crash.md", "good.md", "typo.md", "wrong.md"]
    good = (folder / "good.md").read_text()
    assert good.startswith("# Feedback: good\n\n**5 of 5 points** (passed)")
    assert "PASSED: 2 implementations checked against 1 geometry each" in good
    assert "cnncheck gradcheck affine relu --module good.py --seed 42 --quick" in good


def test_feedback_of_a_failing_submission_repeats_gradcheck(graded, monkeypatch):
    _, doc, _, folder = graded
    text = (folder / "wrong.md").read_text()
    assert "**3 of 5 points** (failed)" in text and "| relu | 0/2 | differs | reference at notebook |" in text
    section = text.split("## relu: 0 of 2 points\n", 1)[1].split("## What", 1)[0]
    assert "relu/wrong dx: differs: reference at notebook (the course notebook's geometry): dx differs from the " \
           "reference" in section
    assert "[wrong.py:" in section                      # the student's own file, not the class folder
    assert "- **Failing geometry:** `notebook`: x (" in section
    assert "- **Worst element:** `dx[" in section and "- **Try next:** your dx differs" in section
    # the very lines `cnncheck gradcheck` prints in the student's folder, with the command the file gives
    monkeypatch.chdir(CLASS)
    gradcheck = CliRunner().invoke(main, ["gradcheck", "affine", "relu", "--module", "wrong.py", "--quick", "--seed",
                                          "42", "--format", "plain"])
    note = next(line for line in gradcheck.stdout.splitlines() if line.startswith("relu/wrong dx:"))
    assert note in section
    assert gradcheck.stdout.splitlines()[-1] in text


def test_feedback_of_a_crashing_and_of_a_non_loading_submission(graded):
    _, _, _, folder = graded
    crash = (folder / "crash.md").read_text()
    assert "## affine: 0 of 3 points" in crash and "crashed: call at notebook" in crash
    assert "signal SIGSEGV" in crash and "- **Points:** gradient 0/2 (crashed at notebook); reference 0/1" in crash
    assert "do not call `sys.exit` or `os._exit`" in crash
    typo = (folder / "typo.md").read_text()
    assert "Your submission did not load" in typo and "SyntaxError: expected ':' (typo.py, line 3)" in typo
    assert "| affine | 0/3 | error | - |" in typo and "move it under" not in typo
    assert "run python on it" in typo


def test_plain_table(tmp_path):
    shutil.copy(CLASS / "good.py", tmp_path / "good.py")
    shutil.copy(CLASS / "wrong.py", tmp_path / "wrong.py")
    result = CliRunner().invoke(main, ["grade", str(tmp_path), *FAST, "--layers", "relu", "--seed", "3"])
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["submission", "status", "points", "seconds", "problems"]
    assert lines[2].split()[:3] == ["good", "passed", "1/1"] and lines[2].rstrip().endswith("-")
    assert lines[3].split()[:3] == ["wrong", "failed", "0/1"] and "relu: dx differs" in lines[3]
    assert lines[-1].startswith("GRADED 2 submissions in ")
    assert lines[-1].endswith("(seed 3), mean 0.5 of 1 point: 1 passed every layer; 1 did not: wrong")


def test_resume_after_an_interrupted_run(tmp_path, monkeypatch):
    for name in ("good.py", "wrong.py", "typo.py"):
        shutil.copy(CLASS / name, tmp_path / name)
    out = tmp_path / "out" / "grades.json"
    out.parent.mkdir()
    args = ["grade", str(tmp_path), *FAST, "--layers", "relu", "--output", str(out), "--format", "json"]
    real = grading.grade_submission
    graded = []

    def interrupted_after_one(submission, *a, **k):
        if graded:
            raise KeyboardInterrupt
        graded.append(submission.name)
        return real(submission, *a, **k)

    monkeypatch.setattr(grading, "grade_submission", interrupted_after_one)
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 130, first.output
    assert "1 of 3 submissions graded; --resume grades the rest" in first.stderr
    doc = json.loads(out.read_text())
    assert doc["interrupted"] and [s["name"] for s in doc["submissions"]] == ["good"]
    assert not Path(grading.checkpoint_path(out)).exists()

    calls = []
    monkeypatch.setattr(grading, "grade_submission", lambda s, *a, **k: calls.append(s.name) or real(s, *a, **k))
    second = CliRunner().invoke(main, args + ["--resume"])
    assert second.exit_code == 1, second.output
    assert calls == ["typo", "wrong"]                    # good was kept, with the first run's seed
    assert f"resuming from {out}: 1 of 3 submissions already graded" in second.stderr
    resumed = json.loads(second.stdout)
    assert resumed["seed"] == doc["seed"] and not resumed["interrupted"]
    assert [s["name"] for s in resumed["submissions"]] == ["good", "typo", "wrong"]
    assert resumed["submissions"][0] == doc["submissions"][0]

    calls.clear()
    third = CliRunner().invoke(main, args + ["--resume", "--seed", str(doc["seed"] + 1)])
    assert third.exit_code == 1 and calls == ["good", "typo", "wrong"]   # another seed: nothing to keep


def test_resume_from_the_checkpoint_of_a_killed_run(tmp_path, monkeypatch):
    shutil.copy(CLASS / "good.py", tmp_path / "good.py")
    shutil.copy(CLASS / "wrong.py", tmp_path / "wrong.py")
    out = tmp_path.parent / f"{tmp_path.name}-grades.json"
    args = ["grade", str(tmp_path), *FAST, "--layers", "relu", "--output", str(out), "--format", "json",
            "--seed", "9"]
    assert CliRunner().invoke(main, args).exit_code == 1
    # what a killed run leaves: no document, a checkpoint holding the header and one submission
    doc = json.loads(out.read_text())
    out.unlink()
    Path(grading.checkpoint_path(out)).write_text(
        json.dumps({"command": "grade", "checkpoint": True, "key": doc["key"], "seed": 9, "version": doc["version"]})
        + "\n" + json.dumps(doc["submissions"][1]) + "\n")
    calls = []
    real = grading.grade_submission
    monkeypatch.setattr(grading, "grade_submission", lambda s, *a, **k: calls.append(s.name) or real(s, *a, **k))
    result = CliRunner().invoke(main, args[:-2] + ["--resume"])
    assert result.exit_code == 1 and calls == ["good"]
    assert json.loads(out.read_text())["submissions"][1] == doc["submissions"][1]


@pytest.mark.parametrize("args, message", [
    (["--rubric", "{fixtures}/nope.toml"], "no such rubric file"),
    (["--rubric", "{tmp}/bad.toml"], "[layers.conw]: no layer 'conw' (did you mean 'conv'?)"),
    (["--rubric", "{fixtures}/rubric.toml", "--layers", "relu"], "affine is not among the layers checked (relu)"),
    (["--resume"], "--resume reads back the JSON document of --output"),
    (["--resume", "--output", "{tmp}/g.csv"], "--resume reads back the JSON document"),
    (["--feedback", "{fixtures}/rubric.toml"], "is a file"),
    (["--feedback", "{tmp}/missing/deeper"], "does not exist"),
    (["--memory-limit", "lots"], "memory size"),
    (["--layers", "conw"], "unknown layer 'conw'"),
    (["--jobs", "0"], "--jobs"),
    (["--layers", "relu", "--pad", "1"], "--pad does not apply to relu"),
])
def test_usage_errors_exit_2_with_one_line(tmp_path, args, message):
    (tmp_path / "bad.toml").write_text("[layers]\nconw = 1\n")
    args = [a.format(fixtures=FIXTURES, tmp=tmp_path) for a in args]
    result = CliRunner().invoke(main, ["grade", str(CLASS), *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert len([line for line in result.stderr.splitlines() if line.startswith("Error")]) == 1


def test_resume_refuses_another_kind_of_file(tmp_path):
    (tmp_path / "g.json").write_text('{"command": "gradcheck"}')
    result = CliRunner().invoke(main, ["grade", str(CLASS), "--output", str(tmp_path / "g.json"), "--resume"])
    assert result.exit_code == 2 and "not the JSON document of a cnncheck grade run" in result.stderr


def test_help_names_the_new_options():
    result = CliRunner().invoke(main, ["grade", "--help"])
    assert result.exit_code == 0
    for text in ("--rubric FILE", "--feedback DIR", "--resume", "--rubric rubric.toml --feedback feedback/"):
        assert text in result.stdout
