"""`cnncheck gradcheck` as a user types it: exit codes, messages, formats, and the rough edges."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cnncheck.cli.main import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CLI = FIXTURES / "cli"


def run(*args):
    return CliRunner().invoke(main, ["gradcheck", *map(str, args)])


def test_the_builtin_relu_passes_quietly():
    result = run("relu", "--impl", "fast", "--format", "plain")
    assert result.exit_code == 0, result.output
    assert "PASSED: 1 implementation checked against 3 geometries each, the reference, the call protocol, the " \
           "subgradient rules" in result.stdout


def test_a_users_module_is_checked_in_a_child_and_reported_as_json():
    result = run("--module", CLI / "good.py", "--format", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["passed"] and {i["layer"] for i in document["implementations"]} == {"relu", "affine"}
    assert "conv" in document["absent"] and "pool" in document["absent"]


def test_what_a_module_prints_never_reaches_stdout():
    result = run("relu", "--module", CLI / "chatty.py", "--format", "json")
    assert result.exit_code == 0
    json.loads(result.stdout)
    assert "loading my layers" not in result.stdout
    shown = run("relu", "--module", CLI / "chatty.py", "--format", "json", "--show-output")
    assert "loading my layers" in shown.stderr and "relu backward" in shown.stderr


def test_the_dout_idiom_is_a_warning_with_its_gradient_shown():
    result = run("relu", "--module", CLI / "dout_idiom.py", "--format", "plain")
    assert result.exit_code == 0, result.output
    assert "relu/dout_idiom out: warning: mutates-dout" in result.stdout
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith("relu ")]
    assert [(row[2], row[3]) for row in rows] == [("out", "warning"), ("dx", "pass")]
    strict = run("relu", "--module", CLI / "dout_idiom.py", "--format", "plain", "--strict")
    assert strict.exit_code == 1


def test_a_masked_array_is_reported_not_a_crash():
    result = run("relu", "--module", CLI / "masked.py", "--format", "json")
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["implementations"][0]["status"] == "differs"
    assert any(r["finding"] == "returns-subclass" for r in document["results"])


def test_a_skeleton_is_not_implemented_unless_allowed():
    result = run("relu", "--module", CLI / "skeleton.py", "--format", "plain")
    assert result.exit_code == 1 and "not-implemented" in result.stdout
    assert run("relu", "--module", CLI / "skeleton.py", "--allow-missing").exit_code == 0


def test_a_timeout_ends_one_layer_only():
    result = run("relu", "--module", CLI / "hangs.py", "--timeout", "2", "--format", "json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["implementations"][0]["status"] == "timeout"


def test_the_course_layout_loads_by_path():
    result = run("relu", "--module", FIXTURES / "layouts" / "cs231n" / "layers.py", "--quick")
    assert result.exit_code == 0, result.output


def test_quick_checks_the_notebooks_geometry_only():
    result = run("conv", "--impl", "fast", "--quick", "--format", "json")
    assert {r["geometry"] for r in json.loads(result.stdout)["results"] if r["geometry"]} == {"notebook"}


def test_layer_parameters_make_one_geometry_and_p_sets_any():
    result = run("conv", "--impl", "fast", "--stride", "1", "-p", "pad=0", "--format", "json")
    assert result.exit_code == 0, result.output
    results = json.loads(result.stdout)["results"]
    assert {r["geometry"] for r in results if r["geometry"]} == {"custom"}
    assert {(r["params"]["stride"], r["params"]["pad"]) for r in results if r["params"]} == {(1, 0)}


@pytest.mark.parametrize("args, message", [
    (["conv", "--stride", "0"], "conv stride must be >= 1, got 0"),
    (["conv", "--pool-height", "3"], "--pool-height does not apply to conv (it applies to pool"),
    (["conv", "--impl", ""], "--impl needs a name"),
    (["conv", "--impl", "fats"], "did you mean 'fast'"),
    (["cnov"], "unknown layer 'cnov'"),
    (["relu", "--mode", "full", "--samples", "5"], "--samples does not apply to --mode full"),
    (["relu", "--mode", "sample", "--probes", "5"], "--probes does not apply to --mode sample"),
    (["relu", "--no-isolate", "--timeout", "3"], "--timeout needs a child process"),
    (["relu", "--no-isolate", "--forbid-import", "torch"], "--forbid-import needs a child process"),
    (["relu", "--quick", "--shape", "2,2"], "--quick checks the notebook's geometry"),
    (["relu", "-p", "momentun=0.5"], "no layer has a parameter 'momentun' (did you mean 'momentum'?)"),
    (["relu", "--junit", "/no/such/dir/x.xml"], "the folder /no/such/dir does not exist"),
    (["relu", "--module", "README.md"], "expected a Python file (.py), got README.md"),
    (["relu", "--module", str(CLI / "syntax_error.py")], "SyntaxError"),
    (["conv", "--impl", "fast", "--shape", "100000,1000,1000,1000"], "TiB but only"),
    (["--model", "x.py:Net"], "--model and --model-arg apply to `cnncheck gradcheck model`"),
])
def test_usage_errors_are_one_line_and_exit_2(args, message):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_junit_is_written_next_to_the_report(tmp_path):
    junit = tmp_path / "g.xml"
    result = run("relu", "--impl", "numpy", "--junit", junit, "--quick")
    assert result.exit_code == 0 and junit.read_text().startswith("<?xml")


def test_help_lists_every_status_and_what_a_pass_means():
    text = run("--help").stdout
    for status in ("warning", "differs", "not-implemented", "timeout", "crashed", "uses-reference", "protocol-error"):
        assert status in text
    assert "several geometries" in text and "the call protocol" in text


def test_top_level_help_names_every_command():
    result = CliRunner().invoke(main, ["--help"])
    for command in ("list", "gradcheck", "bench", "grade"):
        assert f"  {command}" in result.stdout


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_ctrl_c_prints_what_finished_and_exits_130():
    proc = subprocess.Popen([sys.executable, "-m", "cnncheck", "gradcheck", "relu", "--module", str(CLI / "good.py"),
                             "--module", str(CLI / "hangs.py"), "--format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(8)          # good.py's relu is checked; hangs.py's backward never returns
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    document = json.loads(out)
    assert document["interrupted"] is True and not document["passed"]
    assert [i["impl"] for i in document["implementations"]] == ["good"]
    assert "interrupted: 1 of 2 implementations checked" in err


MODELS = FIXTURES / "models"


def test_a_users_model_is_checked_and_a_missing_reg_gradient_caught():
    good = run("model", "--model", f"{MODELS / 'two_layer.py'}:TwoLayerNet", "--model-arg", "input_dim=15",
               "--model-arg", "num_classes=10", "--format", "json")
    assert good.exit_code == 0, good.output
    document = json.loads(good.stdout)
    assert {r["subject"] for r in document["results"]} >= {"W1", "b1", "W2", "b2", "loss"}
    assert any(r["finding"] == "initial-loss" and r["status"] == "pass" for r in document["results"])
    broken = run("model", "--model", f"{MODELS / 'two_layer.py'}:TwoLayerNet", "--model-arg", "input_dim=15",
                 "--model-arg", "num_classes=10", "--model-arg", "forget_reg_in_grads=True", "--format", "json")
    assert broken.exit_code == 1
    failing = [r for r in json.loads(broken.stdout)["results"] if r["status"] == "fail"]
    assert {r["subject"] for r in failing} == {"W1", "W2"} and all(r["geometry"] == "reg=3.14" for r in failing)


def test_cnnchecks_own_models_pass():
    result = run("model", "--format", "plain")
    assert result.exit_code == 0, result.output
    assert "ThreeLayerConvNet" in result.stdout and "FullyConnectedNet[batchnorm,dropout]" in result.stdout


def test_a_model_class_that_does_not_exist_is_a_usage_error():
    result = run("model", "--model", f"{MODELS / 'two_layer.py'}:NoSuchNet")
    assert result.exit_code == 2 and "defines no class NoSuchNet" in result.stderr
