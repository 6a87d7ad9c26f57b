"""`cnncheck gradcheck` through CliRunner: statuses, formats, exit codes, usage errors and the JSON schema.

Shapes are small and the loop-based naive implementations are only run on the
course notebook's small defaults, so the whole file runs in seconds.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from importlib import resources
from pathlib import Path

import pytest
from click.testing import CliRunner

from cnncheck import __version__
from cnncheck.cli.main import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "layers"
QUICK = ["--impl", "fast,numpy"]           # vectorised implementations only


def fixture(name: str) -> str:
    return str(FIXTURES / f"{name}.py")


@pytest.fixture(scope="module")
def schema():
    jsonschema = pytest.importorskip("jsonschema")
    text = resources.files("cnncheck").joinpath("schemas/gradcheck.schema.json").read_text(encoding="utf-8")
    data = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(data)
    return jsonschema.Draft202012Validator(data)


def run(*args):
    return CliRunner().invoke(main, ["gradcheck", *args])


def run_json(*args):
    result = run(*args, "--format", "json")
    return result, json.loads(result.stdout)


def statuses(data) -> dict:
    return {(r["layer"], r["impl"], r["gradient"]): r["status"] for r in data["results"]}


# -- passing runs ---------------------------------------------------------------------
def test_readme_conv_command_passes():
    result = run("conv", "--stride", "2", "--pad", "1", "--impl", "naive,fast")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.splitlines()[0].split()[:4] == ["layer", "impl", "grad", "status"]
    for impl in ("naive", "fast"):
        for grad in ("dx", "dw", "db"):
            assert any(line.split()[:4] == ["conv", impl, grad, "pass"] for line in out.splitlines())
    assert out.splitlines()[-1].startswith("PASSED: 6 gradients: 6 pass [float64, max error 1e-07, eps 1e-05")
    assert "\x1b[" not in out
    assert result.stderr == ""


def test_all_builtin_layers_pass_as_json(schema):
    result, data = run_json("all", *QUICK)
    assert result.exit_code == 0, result.stderr
    schema.validate(data)
    assert data["command"] == "gradcheck" and data["passed"] is True and data["threshold"] == 1e-7
    assert {(r["layer"], r["impl"]) for r in data["results"]} == \
        {("affine", "numpy"), ("relu", "numpy"), ("relu", "fast"), ("conv", "fast"), ("pool", "fast")}
    conv = [r for r in data["results"] if r["layer"] == "conv"]
    assert [r["gradient"] for r in conv] == ["dx", "dw", "db"]
    assert conv[0]["params"] == {"shape": [4, 3, 5, 5], "filters": 2, "kernel": [3, 3], "stride": 2, "pad": 1}
    assert all(r["rel_error"] < 1e-7 and r["mode"] == "full" for r in data["results"])


def test_default_is_all_layers_and_every_implementation():
    result, data = run_json("--impl", "all", "--mode", "directional", "--probes", "2")
    assert result.exit_code == 0, result.stderr
    assert {r["layer"] for r in data["results"]} == {"affine", "relu", "conv", "pool"}
    assert {"naive", "fast"} <= {r["impl"] for r in data["results"]}


def test_float32_defaults_pass_for_builtins(schema):
    result, data = run_json("all", *QUICK, "--dtype", "float32")
    assert result.exit_code == 0, result.stdout
    schema.validate(data)
    assert data["dtype"] == "float32" and data["config"]["eps"] == 3e-2 and data["threshold"] == 1e-2
    assert all(r["dtype"] == "float32" for r in data["results"])


@pytest.mark.parametrize("args,mode,compared", [
    (["--mode", "sample", "--samples", "7"], "sample", 7),
    (["--mode", "directional", "--probes", "3"], "directional", 3),
    (["--mode", "full"], "full", 96),
])
def test_modes(args, mode, compared):
    result, data = run_json("relu", "--impl", "numpy", *args)
    assert result.exit_code == 0, result.stdout
    (r,) = data["results"]
    assert (r["mode"], r["compared"]) == (mode, compared)
    assert data["config"]["mode"] == mode


def test_auto_mode_goes_directional_for_large_inputs():
    result, data = run_json("conv", "--impl", "fast", "--shape", "8,16,16,16", "--filters", "4")
    assert result.exit_code == 0, result.stdout
    assert {r["mode"] for r in data["results"]} == {"directional"}


def test_shape_options_reach_every_layer():
    result, data = run_json("conv", "pool", "--impl", "fast", "--shape", "2,3,6,6", "--stride", "1")
    assert result.exit_code == 0, result.stdout
    params = {r["layer"]: r["params"] for r in data["results"]}
    assert params["conv"]["shape"] == params["pool"]["shape"] == [2, 3, 6, 6]
    assert params["conv"]["stride"] == params["pool"]["stride"] == 1
    result, data = run_json("conv", "--impl", "fast", "--kernel", "2", "--filters", "3", "--pad", "0")
    assert data["results"][0]["params"]["kernel"] == [2, 2] and data["results"][0]["params"]["filters"] == 3
    result, data = run_json("pool", "--impl", "fast", "--pool-height", "3", "--pool-width", "2")
    assert (data["results"][0]["params"]["pool_height"], data["results"][0]["params"]["pool_width"]) == (3, 2)


def test_seed_decides_the_inputs():
    _, a = run_json("conv", "--impl", "fast", "--seed", "3")
    _, b = run_json("conv", "--impl", "fast", "--seed", "3")
    _, c = run_json("conv", "--impl", "fast", "--seed", "4")
    assert [r["analytic"] for r in a["results"]] == [r["analytic"] for r in b["results"]]
    assert [r["analytic"] for r in a["results"]] != [r["analytic"] for r in c["results"]]


# -- broken implementations are caught and named -------------------------------------------
@pytest.mark.parametrize("name,layer,bad", [
    ("conv_missing_term", "conv", "dx"),
    ("conv_transposed_dw", "conv", "dw"),
    ("relu_output_sign", "relu", "dx"),
    ("pool_spread", "pool", "dx"),
])
def test_wrong_gradients_fail(schema, name, layer, bad):
    result, data = run_json(layer, "--module", fixture(name))
    assert result.exit_code == 1
    schema.validate(data)
    got = statuses(data)
    assert got.pop((layer, name, bad)) == "fail"
    assert set(got.values()) <= {"pass"}
    failed = next(r for r in data["results"] if r["gradient"] == bad)
    assert failed["location"].endswith(f"{name}.py:" + failed["location"].rsplit(":", 1)[1])
    plain = run(layer, "--module", fixture(name))
    assert f"{layer}/{name} {bad}: fail:" in plain.stdout


def test_skeleton_is_not_implemented_and_allow_missing_accepts_it():
    result, data = run_json("--module", fixture("skeleton"))
    assert result.exit_code == 1
    assert set(statuses(data).values()) == {"not-implemented"}
    assert len(data["results"]) == 8
    result = run("--module", fixture("skeleton"), "--allow-missing")
    assert result.exit_code == 0, result.stdout
    assert "(missing implementations allowed)" in result.stdout


def test_raising_backward_is_an_error_with_traceback_on_request():
    result = run("conv", "--module", fixture("raises"))
    assert result.exit_code == 1
    assert "conv/raises dx, dw, db: error: backward raised IndexError: index 2 is out of bounds" in result.stdout
    assert "--traceback" in result.stderr
    result = run("conv", "--module", fixture("raises"), "--traceback")
    assert "Traceback (most recent call last)" in result.stderr
    assert "db[f] = dout[:, f].sum()" in result.stderr
    assert "Traceback" not in result.stdout


def test_in_place_changes_fail_with_their_own_status():
    result, data = run_json("relu", "affine", "pool", "--module", fixture("mutates"))
    assert result.exit_code == 1
    assert set(statuses(data).values()) == {"mutates-input"}
    messages = {r["layer"]: r["message"] for r in data["results"]}
    assert messages == {"relu": "backward changed dout in place", "affine": "forward changed b in place",
                        "pool": "backward changed x in place"}


def test_errors_name_the_problem():
    result, data = run_json("--module", fixture("misc_errors"))
    assert result.exit_code == 1
    messages = {(r["layer"], r["gradient"]): r["message"] for r in data["results"] if r["status"] == "error"}
    assert messages[("affine", "dw")] == "dw has shape (2, 32), expected (32, 2) (the shape of w)"
    assert messages[("relu", "dx")] == "dx contains NaN"
    assert messages[("conv", "dx")] == "forward returned ndarray, expected a tuple (out, cache)"
    assert messages[("pool", "dx")] == "dx has dtype float32, expected float64 (the dtype of x)"


def test_a_correct_user_module_passes_and_only_its_implementations_run():
    result, data = run_json("--module", fixture("correct"), "--dtype", "float32")
    assert result.exit_code == 0, result.stdout
    assert {r["impl"] for r in data["results"]} == {"correct", "correct-fast"}
    assert {r["source"] for r in data["results"]} == {fixture("correct")}
    result, data = run_json("relu", "--module", fixture("correct"), "--impl", "correct,numpy")
    assert [r["impl"] for r in data["results"]] == ["correct", "numpy"]   # in --impl order


def test_what_implementations_print_goes_to_stderr(schema):
    result, data = run_json("relu", "--module", fixture("noisy"))
    assert result.exit_code == 0
    schema.validate(data)
    assert "loading noisy layers" in result.stderr and "relu_forward called" in result.stderr


def test_ctrl_c_prints_the_partial_report_and_exits_130(tmp_path):
    module = tmp_path / "interrupting.py"
    module.write_text(
        "from cnncheck.layers import relu_forward, relu_backward, affine_forward\n"
        "def affine_backward(dout, cache):\n"
        "    raise KeyboardInterrupt\n")
    result = run("relu", "affine", "--module", str(module), "--format", "json")
    assert result.exit_code == 130
    data = json.loads(result.stdout)
    assert data["interrupted"] is True and data["passed"] is False
    assert [(r["layer"], r["status"]) for r in data["results"]] == [("relu", "pass")]
    assert "interrupted: 1 of 2 checks finished" in result.stderr


# -- formats and files -------------------------------------------------------------------
def test_markdown_and_github_formats():
    result = run("relu", "--module", fixture("relu_output_sign"), "--format", "markdown")
    assert result.exit_code == 1
    assert result.stdout.startswith("| layer ")
    assert "**FAILED: 1 gradient: 1 fail" in result.stdout
    result = run("relu", "--module", fixture("relu_output_sign"), "--format", "github")
    first = result.stdout.splitlines()[0]
    assert first.startswith("::error file=") and "relu_output_sign.py,line=" in first
    assert "title=cnncheck gradcheck relu/relu_output_sign dx%3A fail::" in first


def test_rich_format_when_piped_has_no_colour_codes():
    result = run("relu", "--impl", "numpy", "--format", "rich")
    assert result.exit_code == 0
    assert "relu" in result.stdout and "PASSED" in result.stdout
    assert "\x1b[" not in result.stdout


def test_junit_file(tmp_path):
    path = tmp_path / "out" / "junit.xml"
    path.parent.mkdir()
    result = run("conv", "--module", fixture("conv_transposed_dw"), "--junit", str(path))
    assert result.exit_code == 1
    suite = ET.parse(path).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "0")
    failing = [c.get("name") for c in suite.findall("testcase") if c.find("failure") is not None]
    assert failing == ["dw"]


def test_verbose_reports_progress_on_stderr():
    result = run("relu", "pool", *QUICK, "-v")
    assert result.exit_code == 0
    assert "relu/numpy: dx pass" in result.stderr and "pool/fast: dx pass" in result.stderr


# -- usage errors --------------------------------------------------------------------------
@pytest.mark.parametrize("args,fragment", [
    (["convv"], "unknown layer 'convv'; known: affine, relu, conv, pool (did you mean 'conv'?)"),
    (["conv", "--stride", "0"], "Invalid value for '--stride': 0 is not in the range x>=1"),
    (["conv", "--pad", "-1"], "Invalid value for '--pad': -1 is not in the range x>=0"),
    (["conv", "--shape", "4,3,5"], "conv --shape must be N,C,H,W, got 4,3,5"),
    (["conv", "--kernel", "9", "--pad", "0"], "kernel 9x9 is larger than the padded input 5x5"),
    (["conv", "--pool-height", "2"], "--pool-height does not apply to conv (it applies to pool)"),
    (["conv", "--impl", "fsat"], "unknown implementation for conv 'fsat'"),
    (["conv", "--module", "no/such/layers.py"], "cannot import --module no/such/layers.py: no such file"),
    (["--module", str(FIXTURES / "syntax_error.py")], "SyntaxError: expected ':' (syntax_error.py, line 3)"),
    (["--module", str(FIXTURES / "import_error.py")], "NameError: name 'undefined_name' is not defined"),
    (["--module", str(FIXTURES / "unrelated.py")], "defines none of the layer functions"),
    (["conv", "--mode", "fast"], "Invalid value for '--mode'"),
    (["conv", "--eps", "0"], "Invalid value for '--eps'"),
    (["conv", "--dtype", "float16"], "Invalid value for '--dtype'"),
    (["conv", "--shape", "4,x,5,5"], "expected comma-separated integers"),
])
def test_usage_errors_exit_2_with_one_clear_line(args, fragment):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr


def test_help_shows_examples_and_exit_codes():
    result = CliRunner().invoke(main, ["gradcheck", "--help"])
    assert result.exit_code == 0
    assert "cnncheck gradcheck conv --module cnn/layers.py" in result.stdout
    assert "Exit status: 0 every gradient passed" in result.stdout
    top = CliRunner().invoke(main, ["--help"])
    assert "cnncheck gradcheck all --format json" in top.stdout
    version = CliRunner().invoke(main, ["--version"])
    assert __version__ in version.stdout


def test_a_dotted_module_is_found_in_the_current_directory(monkeypatch):
    # As with `python -m`, `--module package.module` looks in the working directory,
    # even when the console script's own folder heads sys.path.
    monkeypatch.chdir(FIXTURES)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(FIXTURES))])
    for name in [m for m in sys.modules if m == "student_pkg" or m.startswith("student_pkg.")]:
        monkeypatch.delitem(sys.modules, name)
    result, data = run_json("relu", "--module", "student_pkg.layers")
    assert result.exit_code == 0, result.stderr
    assert {r["impl"] for r in data["results"]} == {"layers"}
