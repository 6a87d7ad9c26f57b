"""``cnncheck gradcheck --format gradescope``: one command writes an autograder's results.json."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cnncheck.cli.main import main

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="isolation needs a POSIX system")

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "grade"
CLASS = FIXTURES / "class"
FAST = ["--quick", "--timeout", "10"]


def autograde(module, *args):
    result = CliRunner().invoke(main, ["gradcheck", "affine", "relu", "--module", str(module), *FAST,
                                       "--format", "gradescope", *args])
    return result, json.loads(result.stdout) if result.stdout else None


def check_schema(doc: dict) -> None:
    """What Gradescope requires of results.json, and that the scores add up."""
    assert {"score", "execution_time", "output", "tests"} <= set(doc)
    assert isinstance(doc["score"], float) and doc["execution_time"] >= 0 and isinstance(doc["output"], str)
    for test in doc["tests"]:
        assert {"name", "score", "max_score", "status", "output", "visibility"} <= set(test)
        assert test["status"] in ("passed", "failed") and 0 <= test["score"] <= test["max_score"]
    assert abs(sum(t["score"] for t in doc["tests"]) - doc["score"]) < 1e-9


def test_a_correct_submission_scores_every_point_from_a_fresh_seed():
    result, doc = autograde(CLASS / "good.py")
    assert result.exit_code == 0, result.output
    check_schema(doc)
    assert doc["score"] == 2.0 and [t["status"] for t in doc["tests"]] == ["passed", "passed"]
    _, again = autograde(CLASS / "good.py")
    assert doc["extra_data"]["seed"] != again["extra_data"]["seed"]          # inputs a submission cannot predict
    assert f"seed {doc['extra_data']['seed']}" in doc["output"]
    _, fixed = autograde(CLASS / "good.py", "--seed", "17")
    assert fixed["extra_data"]["seed"] == 17 and "--seed 17" in fixed["output"]


def test_a_failing_submission_with_a_rubric(tmp_path):
    junit = tmp_path / "checks.xml"
    result, doc = autograde(CLASS / "wrong.py", "--rubric", str(FIXTURES / "rubric.toml"), "--junit", str(junit))
    assert result.exit_code == 1, result.output
    check_schema(doc)
    assert [(t["name"], t["score"], t["max_score"], t["status"]) for t in doc["tests"]] == [
        ("affine (affine_forward, affine_backward)", 3.0, 3.0, "passed"),
        ("relu (relu_forward, relu_backward)", 0.0, 2.0, "failed")]
    relu = doc["tests"][1]["output"]
    assert relu.startswith("relu: 0 of 2 points (differs, reference at notebook)\nrelu/wrong dx: differs:")
    assert "[wrong.py:" in relu and "Try next:" in relu
    assert doc["score"] == 3.0 and doc["extra_data"]["max_score"] == 5.0
    assert "<testsuites" in junit.read_text()


def test_a_crashing_submission_keeps_its_other_points():
    result, doc = autograde(CLASS / "crash.py")
    assert result.exit_code == 1
    check_schema(doc)
    assert doc["score"] == 1.0 and doc["extra_data"]["outcome"] == "crashed"
    assert "signal SIGSEGV" in doc["tests"][0]["output"]


def test_a_module_that_does_not_load_still_gives_a_valid_document():
    result, doc = autograde(CLASS / "typo.py")
    assert result.exit_code == 1, result.output
    check_schema(doc)
    assert doc["score"] == 0.0 and len(doc["tests"]) == 2
    assert "Your submission did not load: cannot import typo: SyntaxError: expected ':'" in doc["output"]
    assert doc["extra_data"]["outcome"] == "load-error"


def test_importing_the_reference_scores_nothing():
    result = CliRunner().invoke(main, ["gradcheck", "relu", "--module", str(FIXTURES / "cheat.py"), *FAST,
                                       "--format", "gradescope"])
    doc = json.loads(result.stdout)
    check_schema(doc)
    assert doc["score"] == 0.0 and doc["extra_data"]["outcome"] == "uses-reference"


def test_a_submission_folder_as_an_autograder_unpacks_it(tmp_path):
    (tmp_path / "submission" / "cnn").mkdir(parents=True)
    shutil.copy(CLASS / "good.py", tmp_path / "submission" / "cnn" / "layers.py")
    (tmp_path / "submission" / "README.md").write_text("my notes\n")
    result, doc = autograde(tmp_path / "submission")
    assert result.exit_code == 0, result.output
    check_schema(doc)
    assert doc["score"] == 2.0 and "--module cnn/layers.py" in doc["output"]


@pytest.mark.parametrize("args, message", [
    (["--module", "{good}", "--rubric", "{tmp}/r.toml", "--format", "gradescope"],
     "r.toml: [layers.affine]: affine has no subgradient checks"),
    (["relu", "--module", "{good}", "--rubric", "{tmp}/r.toml", "--format", "gradescope"],
     "[layers.affine]: affine is not among the layers checked (relu)"),
    (["--module", "{good}", "--rubric", "{tmp}/r.toml"], "--rubric applies to --format gradescope"),
    (["affine", "--format", "gradescope"], "give one --module"),
    (["--module", "{good}", "--format", "gradescope"], "give --rubric FILE, or name the layers"),
    (["affine", "--module", "{good}", "--module", "{good}", "--format", "gradescope"], "give one --module"),
    (["affine", "--module", "{good}", "--impl", "numpy", "--format", "gradescope"], "--impl does not apply"),
    (["affine", "--module", "{good}", "--no-isolate", "--format", "gradescope"], "does not apply with --no-isolate"),
    (["affine", "--module", "cnn.layers", "--format", "gradescope"], "neither a .py file nor a folder"),
])
def test_usage_errors(tmp_path, args, message):
    (tmp_path / "r.toml").write_text("[layers.affine]\npoints = 1\nchecks = { subgradient = 1 }\n")
    args = [a.format(good=CLASS / "good.py", tmp=tmp_path) for a in args]
    result = CliRunner().invoke(main, ["gradcheck", *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stdout == ""
