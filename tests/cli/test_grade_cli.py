"""``cnncheck grade``: one command grades a folder of good and misbehaving submissions."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cnncheck.cli.main import main

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="isolation needs a POSIX system")

SUBMISSIONS = Path(__file__).resolve().parent.parent / "fixtures" / "submissions"
FAST = ["--timeout", "3", "--memory-limit", "256M", "--shape", "2,2,4,4"]

GOOD = ["good_chatty", "good_einsum", "good_loops", "good_main_guard", "good_reexport", "good_vectorised",
        "good_with_fast", "noisy_megabytes"]

#: Bad submissions: the layer verdicts that are not ``passed``, and what the import or a result must say.
BAD = {
    "alloc_unbounded": ({"relu": "error"}, ("crashed", "out of memory")),
    "hang_in_backward": ({"conv": "error"}, ("timeout", "no result after 3 s")),
    "os_exit": ({"pool": "error"}, ("crashed", "exit code 3")),
    "sys_exit": ({"affine": "error"}, ("crashed", "exit code 3")),
    "segfault": ({"conv": "error"}, ("crashed", "signal SIGSEGV")),
    "raises_in_backward": ({"pool": "error"}, ("error", "IndexError")),
    "wrong_gradient": ({"conv": "failed"}, ("fail", "disagree")),
    "mutates_input": ({"relu": "failed"}, ("mutates-input", "changed dout in place")),
    "skeleton": ({"affine": "missing", "relu": "missing", "conv": "missing", "pool": "missing"},
                 ("not-implemented", "returned None")),
}
BAD_IMPORTS = {
    "hang_at_import": ("timeout", "still importing the module after 3 s"),
    "exits_at_import": ("crashed", "exit code 3 while importing the module"),
    "raises_at_import": ("error", "RuntimeError: forgot to remove a debugging raise"),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The whole fixture folder, graded once: (result, parsed JSON, CSV rows)."""
    out = tmp_path_factory.mktemp("grade") / "grades.csv"
    result = CliRunner().invoke(main, ["grade", str(SUBMISSIONS), *FAST, "--jobs", "4", "--format", "json",
                                       "--output", str(out)])
    return result, json.loads(result.stdout), list(csv.DictReader(out.open(newline="")))


def test_every_good_submission_passes(graded):
    _, doc, _ = graded
    subs = {s["name"]: s for s in doc["submissions"]}
    assert len(subs) == 20
    for name in GOOD:
        assert subs[name]["passed"], (name, subs[name]["layers"])
        assert subs[name]["layers"] == {"affine": "passed", "relu": "passed", "conv": "passed", "pool": "passed"}
    assert doc["summary"] == {"submissions": 20, "passed": len(GOOD)}


@pytest.mark.parametrize("name", sorted(BAD))
def test_every_bad_submission_is_named_with_its_cause(graded, name):
    _, doc, _ = graded
    sub = next(s for s in doc["submissions"] if s["name"] == name)
    wrong, (status, text) = BAD[name]
    assert not sub["passed"] and sub["status"] == "ok"
    assert {layer: v for layer, v in sub["layers"].items() if v != "passed"} == wrong
    bad_results = [r for r in sub["results"] if r["layer"] in wrong and r["status"] != "pass"]
    assert any(r["status"] == status and text in r["message"] for r in bad_results), bad_results
    # every other layer of the same submission still has its results
    for layer in set(sub["layers"]) - set(wrong):
        assert [r["status"] for r in sub["results"] if r["layer"] == layer] and sub["layers"][layer] == "passed"


@pytest.mark.parametrize("name", sorted(BAD_IMPORTS))
def test_submissions_that_do_not_import_are_named(graded, name):
    _, doc, _ = graded
    sub = next(s for s in doc["submissions"] if s["name"] == name)
    status, text = BAD_IMPORTS[name]
    assert sub["status"] == status and text in sub["message"]
    assert set(sub["layers"].values()) == {"error"} and sub["results"] == []


def test_exit_status_stdout_and_captured_output(graded):
    result, doc, _ = graded
    assert result.exit_code == 1 and doc["passed"] is False
    assert doc["command"] == "grade" and doc["timeout"] == 3.0 and doc["memory_limit"] == 256 * 2**20
    noisy = next(s for s in doc["submissions"] if s["name"] == "noisy_megabytes")
    assert noisy["output"] == {"stdout_bytes": 40000 * 101, "stderr_bytes": 40000 * 101}
    assert "xxxx" not in result.stderr and "loading my layers" not in result.stderr


def test_csv_file_has_every_result(graded):
    _, doc, rows = graded
    expected = sum(max(1, len(s["results"])) for s in doc["submissions"])
    assert len(rows) == expected
    seg = [r for r in rows if r["submission"] == "segfault" and r["layer"] == "conv"]
    assert [(r["gradient"], r["status"], r["message"]) for r in seg] == [
        ("dx", "crashed", "signal SIGSEGV"), ("dw", "crashed", "signal SIGSEGV"), ("db", "crashed", "signal SIGSEGV")]
    raising = [r for r in rows if r["submission"] == "raises_at_import"]
    assert len(raising) == 1 and raising[0]["status"] == "error" and "RuntimeError" in raising[0]["message"]


@pytest.fixture
def small_class(tmp_path):
    for name in ("good_chatty.py", "segfault.py"):
        shutil.copy(SUBMISSIONS / name, tmp_path / name)
    return tmp_path


def test_plain_table_names_the_bad_submission(small_class):
    result = CliRunner().invoke(main, ["grade", str(small_class), *FAST, "--layers", "relu,conv"])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].split()[:6] == ["submission", "passed", "failed", "errors", "missing", "seconds"]
    good = next(line for line in lines if line.startswith("good_chatty"))
    bad = next(line for line in lines if line.startswith("segfault"))
    assert good.split()[1:5] == ["2", "0", "0", "0"] and good.rstrip().endswith("-")
    assert bad.split()[1:5] == ["1", "0", "1", "0"] and "conv: dx crashed (signal SIGSEGV)" in bad
    assert lines[-1].startswith("GRADED 2 submissions in ")
    assert lines[-1].endswith(": 1 passed every layer; 1 did not: segfault")
    assert "\x1b[" not in result.stdout


def test_markdown_and_show_output(small_class):
    result = CliRunner().invoke(main, ["grade", str(small_class), *FAST, "--layers", "relu", "--format", "markdown",
                                       "--show-output"])
    assert result.exit_code == 0
    assert result.stdout.startswith("| submission ")
    assert "**GRADED 2 submissions in " in result.stdout and "2 passed every layer**" in result.stdout
    assert "loading my layers" not in result.stdout
    assert "--- good_chatty: stdout (" in result.stderr and "loading my layers" in result.stderr
    assert "--- good_chatty: stderr (19 bytes) ---\ndebug: starting up" in result.stderr


def test_json_output_file(small_class, tmp_path):
    out = tmp_path / "grades.json"
    result = CliRunner().invoke(main, ["grade", str(small_class), *FAST, "--layers", "relu", "-o", str(out)])
    assert result.exit_code == 0
    doc = json.loads(out.read_text())
    assert [s["name"] for s in doc["submissions"]] == ["good_chatty", "segfault"]
    assert all(s["passed"] for s in doc["submissions"])


@pytest.mark.parametrize("args, message", [
    (["--memory-limit", "lots"], "memory size"),
    (["--layers", "conw"], "unknown layer 'conw'"),
    (["--jobs", "0"], "--jobs"),
    (["--timeout", "0"], "--timeout"),
    (["--layers", "relu", "--pad", "1"], "--pad does not apply to relu"),
    (["--shape", "2048,512,64,64"], "needs about"),
    (["--shape", "64,16,32,32", "--memory-limit", "1M"], "--memory-limit allows 1.0 MiB"),
])
def test_usage_errors_exit_2_with_one_line(small_class, args, message):
    result = CliRunner().invoke(main, ["grade", str(small_class), *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_folder_errors(tmp_path):
    result = CliRunner().invoke(main, ["grade", str(tmp_path)])
    assert result.exit_code == 2 and "no submissions in" in result.stderr
    result = CliRunner().invoke(main, ["grade", str(tmp_path / "absent")])
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_help_shows_examples_and_the_security_note():
    result = CliRunner().invoke(main, ["grade", "--help"])
    assert result.exit_code == 0
    assert "cnncheck grade submissions/ --timeout 10 --jobs 4 --output grades.csv" in result.stdout
    assert "malice" in result.stdout
    top = CliRunner().invoke(main, ["--help"])
    assert "cnncheck grade" in top.stdout


# -- gradcheck with isolation -------------------------------------------------------------
def test_gradcheck_isolated_reports_a_crash_and_every_other_result():
    result = CliRunner().invoke(main, ["gradcheck", "all", "--module", str(SUBMISSIONS / "segfault.py"),
                                       "--timeout", "3", "--shape", "2,2,4,4", "--format", "json"])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    rows = [(r["layer"], r["gradient"], r["status"], r["message"]) for r in doc["results"]]
    assert [row for row in rows if row[0] == "conv"] == [
        ("conv", "dx", "crashed", "signal SIGSEGV"), ("conv", "dw", "crashed", "signal SIGSEGV"),
        ("conv", "db", "crashed", "signal SIGSEGV")]
    assert {row[2] for row in rows if row[0] != "conv"} == {"pass"} and len(rows) == 8


def test_gradcheck_isolated_output_never_reaches_json_stdout():
    result = CliRunner().invoke(main, ["gradcheck", "relu", "--module", str(SUBMISSIONS / "noisy_megabytes.py"),
                                       "--isolate", "--shape", "2,2,4,4", "--format", "json", "--show-output"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["passed"] is True
    assert "--- relu/noisy_megabytes: stdout (4040000 bytes) ---\nxxxx" in result.stderr
    assert "bytes left out ...]" in result.stderr


def test_gradcheck_memory_limit_turns_a_runaway_allocation_into_a_crash():
    result = CliRunner().invoke(main, ["gradcheck", "relu", "--module", str(SUBMISSIONS / "alloc_unbounded.py"),
                                       "--memory-limit", "256M", "--shape", "2,2,4,4", "--format", "json"])
    assert result.exit_code == 1
    (row,) = json.loads(result.stdout)["results"]
    assert row["status"] == "crashed" and row["message"].startswith("out of memory")


def test_gradcheck_module_that_hangs_at_import_is_a_usage_error():
    result = CliRunner().invoke(main, ["gradcheck", "all", "--module", str(SUBMISSIONS / "hang_at_import.py"),
                                       "--timeout", "1"])
    assert result.exit_code == 2
    assert "timeout (still importing the module after 1 s)" in result.stderr and "Traceback" not in result.stderr


def test_gradcheck_memory_guard_refuses_a_run_that_cannot_fit():
    result = CliRunner().invoke(main, ["gradcheck", "conv", "--shape", "2048,512,64,64"])
    assert result.exit_code == 2
    assert "needs about" in result.stderr and "use a smaller --shape or --force" in result.stderr
