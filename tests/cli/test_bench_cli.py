"""`cnncheck bench` through CliRunner: options, formats, exit codes, the JSON schema, code that misbehaves.

Shapes are tiny and the timing settings minimal, so every invocation takes
well under a second of timing; no test asserts how fast anything is.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import pytest
from click.testing import CliRunner

from cnncheck.cli.main import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bench"
QUICK = ["--repeat", "1", "--min-time", "0", "--max-seconds", "0.05"]
TWICE = ["--repeat", "2", "--min-time", "0"]
SMALL_POOL = ["pool", "--shape", "2,2,4,4"]
SMALL_CONV = ["conv", "--shape", "2,3,6,6", "--filters", "2"]
SMALL_RELU = ["relu", "--shape", "2,3,4,4"]


def fixture(name: str) -> str:
    return str(FIXTURES / f"{name}.py")


@pytest.fixture(scope="module")
def schema():
    jsonschema = pytest.importorskip("jsonschema")
    text = resources.files("cnncheck").joinpath("schemas/bench.schema.json").read_text(encoding="utf-8")
    data = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(data)
    return jsonschema.Draft202012Validator(data)


def run(*args, command="bench"):
    return CliRunner().invoke(main, [command, *args])


def run_json(*args, command="bench"):
    result = run(*args, "--format", "json", command=command)
    return result, (json.loads(result.stdout) if result.stdout.strip() else None)


def rows_of(data, **match):
    return [r for r in data["results"] if all(r[k] == v for k, v in match.items())]


# -- formats --------------------------------------------------------------------
def test_plain_table_is_the_default_when_piped():
    result = run(*SMALL_POOL, *TWICE)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Machine: CPU" in out and "numpy" in out and "GEMM peak float64" in out
    assert "baseline naive · --max-diff 1e-09" in out
    assert "pool: shape 2x2x4x4, pool_height 2, pool_width 2, stride 2" in out
    for word in ("Median", "IQR", "Runs", "Speedup", "Throughput", "Difference", "Status", "naive", "fast",
                 "GB/s"):
        assert word in out
    assert out.rstrip().endswith("PASSED: 4 measurements") or "torch" in out
    assert not out.lstrip().startswith("{")


def test_markdown_table():
    result = run(*SMALL_POOL, *QUICK, "--impl", "naive,fast", "--format", "markdown")
    assert result.exit_code == 0, result.output
    assert "| Layer" in result.stdout and "|---" in result.stdout.replace(" ", "").replace(":", "")
    assert "- Machine: CPU" in result.stdout


def test_rich_format_renders():
    result = run(*SMALL_POOL, *QUICK, "--impl", "naive,fast", "--format", "rich")
    assert result.exit_code == 0, result.output
    assert "Machine: CPU" in result.stdout and "fast" in result.stdout and "PASSED" in result.stdout


def test_json_compares_every_layer_with_its_reference(schema):
    result, data = run_json("affine", "relu", "conv", "pool", "--shape", "2,3,6,6", "--filters", "2", *TWICE,
                            "--impl", "all")
    assert result.exit_code == 0, result.output
    schema.validate(data)
    assert data["command"] == "bench" and data["schema_version"] == 2
    assert data["passed"] is True and data["interrupted"] is False and data["config"]["baseline"] is None
    assert data["machine"]["gemm_peak_gflops"] > 0 and data["machine"]["gemm_peak_dtype"] == "float64"
    assert {r["layer"] for r in data["results"]} == {"affine", "relu", "conv", "pool"}
    references = {"affine": "numpy", "relu": "numpy", "conv": "naive", "pool": "naive"}
    for r in data["results"]:
        assert r["median"] > 0 and r["status"] == "ok"
        assert r["runs"] >= 2 or r["limited"]   # a first call that pays a library's start-up may be the run
        if r["layer"] in ("conv", "affine"):
            assert r["gflops"] > 0 and r["peak_percent"] > 0 and r["gbps"] is None
        else:
            assert r["gbps"] > 0 and r["gflops"] is None
        if r["impl"] == references[r["layer"]]:
            assert r["is_baseline"] and r["speedup"] is None
        else:  # every other implementation of every layer is compared (affine and relu included)
            assert r["baseline"] == references[r["layer"]] and r["speedup"] > 0
            assert r["difference"] <= 1e-9
    (fast_bwd,) = rows_of(data, layer="conv", impl="fast", direction="backward")
    assert set(fast_bwd["differences"]) == {"dx", "dw", "db"}
    assert [r["impl"] for r in rows_of(data, layer="relu")][:2] == ["numpy", "numpy"]   # the baseline first


# -- defaults and options -----------------------------------------------------------
def test_help_names_the_bench_defaults_and_baselines():
    result = CliRunner().invoke(main, ["bench", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "conv shape 100,3,31,31, filters 25, kernel 3,3, stride 2, pad 1" in text
    assert "pool shape 100,3,32,32, pool-height 2, pool-width 2, stride 2" in text
    assert "affine numpy relu numpy conv naive pool naive" in text
    for option in ("--isolate / --no-isolate", "--timeout", "--memory-limit"):
        assert option in text


def test_impl_without_the_baseline_leaves_it_out_and_says_so():
    result, data = run_json(*SMALL_CONV, *QUICK, "--impl", "fast")
    assert result.exit_code == 0, result.output
    assert {r["impl"] for r in data["results"]} == {"fast"}
    assert all(r["speedup"] is None and r["difference"] is None for r in data["results"])
    plain = run(*SMALL_CONV, *QUICK, "--impl", "fast")
    assert "no baseline" in plain.stdout and "baseline naive" not in plain.stdout


def test_a_named_baseline_is_timed_first_even_when_impl_leaves_it_out():
    result, data = run_json(*SMALL_POOL, *QUICK, "--impl", "naive", "--baseline", "fast")
    assert result.exit_code == 0, result.output
    assert [r["impl"] for r in data["results"]] == ["fast", "fast", "naive", "naive"]
    naive = rows_of(data, impl="naive", direction="forward")[0]
    assert naive["baseline"] == "fast" and naive["speedup"] > 0 and data["config"]["baseline"] == "fast"


def test_torch_baseline_when_torch_is_installed():
    pytest.importorskip("torch")
    result, data = run_json(*SMALL_CONV, *QUICK, "--impl", "fast,torch", "--baseline", "torch")
    assert result.exit_code == 0, result.output
    fast = rows_of(data, impl="fast", direction="forward")[0]
    assert fast["baseline"] == "torch" and fast["speedup"] > 0


def test_threads_and_dtype_reach_the_run():
    result, data = run_json(*SMALL_POOL, *QUICK, "--impl", "naive,fast", "--threads", "1", "--dtype", "float32",
                            "--seed", "3")
    assert result.exit_code == 0, result.output
    if data["machine"]["blas"] is not None:
        assert data["machine"]["blas"]["threads"] == 1
    assert data["config"]["threads"] == 1 and data["config"]["seed"] == 3
    assert data["machine"]["gemm_peak_dtype"] == "float32"
    assert all(r["dtype"] == "float32" for r in data["results"])
    assert data["config"]["max_diff"] == 1e-2  # float32's default


def test_save_writes_a_result_compare_accepts(tmp_path, schema):
    path = tmp_path / "base.json"
    result = run(*SMALL_POOL, *QUICK, "--impl", "naive,fast", "--save", str(path))
    assert result.exit_code == 0, result.output
    assert f"saved {path}" in result.stderr
    schema.validate(json.loads(path.read_text()))
    again = run(*SMALL_POOL, *QUICK, "--impl", "naive,fast", "--compare", str(path), "--max-regression", "100000%")
    assert again.exit_code == 0, again.output
    assert "compared with" in again.stdout and "REGRESSION" not in again.stdout


def test_compare_fails_on_a_regression_and_names_it(tmp_path, schema):
    path = tmp_path / "base.json"
    assert run(*SMALL_POOL, *QUICK, "--impl", "naive,fast", "--save", str(path)).exit_code == 0
    data = json.loads(path.read_text())
    for row in data["results"]:  # pretend the saved run was a thousand times faster
        row["median"] /= 1000
    path.write_text(json.dumps(data))
    result, out = run_json(*SMALL_POOL, *QUICK, "--impl", "naive,fast", "--compare", str(path))
    assert result.exit_code == 1
    schema.validate(out)
    assert out["passed"] is False and out["config"]["max_regression"] == 0.2   # 20% unless given
    regressed = [c for c in out["comparisons"] if c["regressed"]]
    assert {(c["impl"], c["direction"], c["metric"]) for c in regressed} >= {("fast", "forward", "median")}
    assert "REGRESSION: pool forward fast: median" in result.stderr
    plain = run(*SMALL_POOL, *QUICK, "--impl", "naive,fast", "--compare", str(path))
    assert plain.exit_code == 1 and "REGRESSION: pool backward naive" in plain.stdout
    assert "regressions against the saved run" in plain.stdout and "problem(s)" not in plain.stdout


def test_min_speedup_fails_when_not_met():
    result, data = run_json(*SMALL_POOL, *QUICK, "--impl", "naive,fast", "--min-speedup", "1e9")
    assert result.exit_code == 1
    assert all(r["status"] == "slow" for r in rows_of(data, impl="fast"))
    assert "SLOW: pool forward fast: only" in result.stderr


# -- user modules: every misbehaviour is a row, with gradcheck's status and words ----------------------
def _gradcheck_findings(name: str, extra=()):
    result, data = run_json("relu", "--quick", "--module", fixture(name), *extra, command="gradcheck")
    failing = [r for r in data["results"] if r["impl"] == name and r["status"] not in ("pass", "warning")]
    warnings = [r for r in data["results"] if r["impl"] == name and r["status"] == "warning"]
    return result.exit_code, failing, warnings


@pytest.mark.parametrize("name, status, message, extra", [
    ("sys_exit", "error", "forward called sys.exit(7)", []),
    ("os_exit", "crashed", "exit code 7", []),
    ("hang", "timeout", "no answer within 2 s", ["--timeout", "2"]),
    ("nan", "error", "out contains NaN (first at out[0, 0, 0, 0])", []),
    ("int_dtype", "error", "out has dtype int64, expected float64", []),
])
def test_a_broken_forward_gets_gradchecks_status_and_message(name, status, message, extra):
    code, failing, _ = _gradcheck_findings(name, extra)
    assert code == 1 and {r["status"] for r in failing} == {status}
    assert failing[0]["message"] == message

    result, data = run_json(*SMALL_RELU, *QUICK, "--module", fixture(name), *extra)
    assert result.exit_code == 1, result.output     # never the code's own exit status
    assert [(r["impl"], r["status"]) for r in data["results"]] == [
        ("numpy", "ok"), ("numpy", "ok"), (name, status), (name, status)]
    forward, backward = rows_of(data, impl=name)
    assert forward["message"] == message and forward["median"] is None
    assert backward["message"] == "not timed: the forward pass failed"
    assert f"{status.upper()}: relu forward {name}: {message}" in result.stderr


@pytest.mark.parametrize("name, warning", [
    ("masked", "out is a numpy.ma.MaskedArray with 44 masked entries, not a plain ndarray; cnncheck reads its "
               "data, masked entries included"),
    ("lists", "out is a list, not an ndarray; cnncheck converted it"),
])
def test_masked_arrays_and_lists_pass_with_gradchecks_warning(name, warning):
    code, failing, warnings = _gradcheck_findings(name)
    assert code == 0 and not failing
    assert warnings[0]["message"].split(" with ")[0] == warning.split(" with ")[0]

    result, data = run_json(*SMALL_RELU, *QUICK, "--module", fixture(name))
    assert result.exit_code == 0, result.output
    forward, backward = rows_of(data, impl=name)
    assert forward["status"] == "ok" and forward["message"] == f"warning: {warning}"
    assert forward["difference"] == 0.0 and forward["median"] > 0
    assert backward["status"] == "ok" and backward["message"] == ""
    assert f"WARNING: relu forward {name}: {warning}" in run(*SMALL_RELU, *QUICK, "--module", fixture(name)).stdout


def test_list_gradients_are_accepted_as_in_gradcheck():
    result, data = run_json("affine", "--shape", "3,5", "--filters", "4", *QUICK, "--module", fixture("lists"))
    assert result.exit_code == 0, result.output
    backward = rows_of(data, impl="lists", direction="backward")[0]
    assert backward["status"] == "ok" and backward["differences"]["dw"] < 1e-9
    assert backward["message"].startswith("warning: dx is a list, not an ndarray; cnncheck converted it; dw is")


def test_a_skeleton_is_not_implemented_as_in_gradcheck():
    code, failing, _ = _gradcheck_findings("skeleton")
    assert code == 1 and [(r["subject"], r["status"], r["message"]) for r in failing] == [
        ("dx", "not-implemented", "backward returned None")]

    result, data = run_json("relu", "affine", "--shape", "2,6", *QUICK, "--module", fixture("skeleton"))
    assert result.exit_code == 1, result.output
    found = {(r["layer"], r["direction"]): (r["status"], r["message"]) for r in rows_of(data, impl="skeleton")}
    assert found == {("relu", "forward"): ("ok", ""),
                     ("relu", "backward"): ("not-implemented", "backward returned None"),
                     ("affine", "forward"): ("ok", ""),
                     ("affine", "backward"): ("not-implemented", "dx is None (not implemented yet?)")}
    assert "shape ()" not in result.stdout + result.stderr


def test_a_raising_backward_is_an_error_row():
    result = run(*SMALL_RELU, *QUICK, "--module", fixture("raises"))
    assert result.exit_code == 1
    assert "ERROR: relu backward raises: backward raised ValueError: shapes do not match" in result.stdout
    assert "FAILED: 1 of 4 measurements failed (1 error)" in result.stdout


def test_sys_exit_in_this_process_is_a_row_too():
    result, data = run_json(*SMALL_RELU, *QUICK, "--module", fixture("sys_exit"), "--no-isolate")
    assert result.exit_code == 1
    assert rows_of(data, impl="sys_exit")[0]["message"] == "forward called sys.exit(7)"


def test_a_module_alone_is_timed_against_the_reference():
    result, data = run_json(*SMALL_RELU, *QUICK, "--module", fixture("raises"))
    assert [r["impl"] for r in data["results"]] == ["numpy", "numpy", "raises", "raises"]
    assert rows_of(data, impl="raises", direction="forward")[0]["baseline"] == "numpy"


def test_a_module_that_imports_cnncheck_is_reported_not_timed(tmp_path):
    path = tmp_path / "borrowed.py"
    path.write_text("from cnncheck.layers import relu_backward, relu_forward  # noqa: F401\n")
    result, data = run_json(*SMALL_RELU, *QUICK, "--module", str(path))
    assert result.exit_code == 1, result.output
    rows = rows_of(data, impl="borrowed")
    assert [r["status"] for r in rows] == ["uses-reference", "uses-reference"]
    assert "imports cnncheck" in rows[0]["message"] and rows[0]["median"] is None


def test_a_module_that_does_not_import_is_a_usage_error(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("def relu_forward(x)\n    return x\n")
    result = run(*SMALL_RELU, *QUICK, "--module", str(path))
    assert result.exit_code == 2
    assert "SyntaxError" in error_line(result) and result.stdout == ""


# -- sweep and plot ---------------------------------------------------------------
def test_sweep_reports_values_and_a_fit(schema):
    result, data = run_json(*SMALL_POOL, *TWICE, "--impl", "fast", "--sweep", "N=1,2,4")
    assert result.exit_code == 0, result.output
    schema.validate(data)
    assert [r["sweep_value"] for r in data["results"]] == [1, 1, 2, 2, 4, 4]
    assert [r["params"]["shape"][0] for r in data["results"]] == [1, 1, 2, 2, 4, 4]
    assert data["config"]["sweep_param"] == "N" and data["config"]["sweep_values"] == [1, 2, 4]
    fits = {(f["impl"], f["direction"]): f for f in data["fits"]}
    assert set(fits) == {("fast", "forward"), ("fast", "backward")}
    assert fits["fast", "forward"]["values"] == [1, 2, 4] and fits["fast", "forward"]["work_unit"] == "byte"
    assert isinstance(fits["fast", "forward"]["exponent"], float)


def test_sweep_of_a_parameter_name_and_the_fit_table():
    result = run(*SMALL_POOL, *QUICK, "--impl", "fast", "--sweep", "stride=1,2")
    assert result.exit_code == 0, result.output
    assert "Exponent" in result.stdout and "Medians over stride" in result.stdout


def test_plot_needs_matplotlib(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    result = run(*SMALL_POOL, *QUICK, "--sweep", "N=1,2", "--plot", str(tmp_path / "s.png"))
    assert result.exit_code == 2
    assert "pip install 'cnncheck[plot]'" in result.stderr


def test_plot_writes_a_file(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "sweep.svg"
    result = run(*SMALL_POOL, *QUICK, "--impl", "fast", "--sweep", "N=1,2", "--plot", str(path))
    assert result.exit_code == 0, result.output
    assert path.read_text().lstrip().startswith("<?xml")


# -- usage errors: exit 2, one clear line, nothing run -------------------------------------------
def error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("args, fragment", [
    (["convv"], "unknown layer 'convv'"),
    (["pool", "--sweep", "N"], "Invalid value for '--sweep': expected PARAM=V1,V2"),
    (["pool", "--sweep", "Q=1,2"], "--sweep Q does not apply to pool; it takes N, C, H, W, K"),
    (["pool", "--sweep", "N=1,x"], "must be integers"),
    (["affine", "--sweep", "H=4,8"], "--sweep H does not apply to affine"),
    (["pool", "--sweep", "N=0,1"], "--sweep N=0 for pool: pool shape must have positive sizes"),
    (["pool", "--repeat", "0"], "--repeat"),
    (["pool", "--impl", "fastest"], "fastest"),
    (["pool", "--impl", ""], "--impl needs a name"),
    (["pool", "--baseline", "nope"], "unknown --baseline 'nope'"),
    (["pool", "--impl", "fast", "--min-speedup", "2"], "--min-speedup needs a baseline"),
    (["pool", "--impl", "fast", "--max-diff", "1e-3"], "--max-diff needs a baseline"),
    (["pool", "--max-regression", "20%"], "--max-regression bounds the change against a saved run"),
    (["pool", "--max-regression", "lots"], "--max-regression"),
    (["pool", "--plot", "x.png"], "--plot draws a sweep"),
    (["pool", "--sweep", "N=1,2", "--plot", "x.gif"], ".png, .svg, .pdf"),
    (["pool", "--dtype", "float16"], "float16"),
    (["pool", "--save", "no/such/folder/x.json"], "does not exist"),
    (["pool", "--sweep", "N=1,2", "--plot", "no/such/folder/x.png"], "does not exist"),
    (["pool", "--pad", "1"], "--pad does not apply to pool"),
    (["pool", "--seed", "-1"], "--seed"),
    (["pool", "--no-isolate", "--timeout", "5"], "--timeout needs a child process"),
    (["pool", "--timeout", "0.01"], "--timeout 0.01 would stop measurements that --max-seconds 0.05 allows"),
    (["relu", "--shape", "100000,64,256,256"], "needs about"),
])
def test_usage_errors(args, fragment):
    result = run(*QUICK, *args)
    assert result.exit_code == 2, result.output
    assert fragment in error_line(result)
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_output_paths_are_checked_before_any_work(tmp_path):
    marker = tmp_path / "imported"
    module = tmp_path / "noisy.py"
    module.write_text(f"open({str(marker)!r}, 'w').close()\n")
    result = run(*SMALL_RELU, *QUICK, "--module", str(module), "--save", str(tmp_path / "missing" / "x.json"))
    assert result.exit_code == 2 and "does not exist" in error_line(result)
    assert not marker.exists()


@pytest.mark.parametrize("content, fragment", [
    ('{"command": "gradcheck", "results": []}', "is not a cnncheck bench result"),
    ("hello", "not JSON"),
    ('{"command": "bench", "results": [{"layer": "pool"}]}', "lacks"),
])
def test_compare_file_that_is_not_a_bench_result(tmp_path, content, fragment):
    path = tmp_path / "other.json"
    path.write_text(content)
    result = run(*SMALL_POOL, *QUICK, "--compare", str(path))
    assert result.exit_code == 2
    assert fragment in error_line(result)


def test_compare_file_missing(tmp_path):
    result = run(*SMALL_POOL, *QUICK, "--compare", str(tmp_path / "absent.json"))
    assert result.exit_code == 2
    assert "cannot read" in error_line(result)


def test_compare_with_nothing_in_common_is_refused_before_timing(tmp_path):
    path = tmp_path / "base.json"
    assert run(*SMALL_POOL, *QUICK, "--impl", "fast", "--save", str(path)).exit_code == 0
    result = run("pool", "--shape", "2,2,6,6", *QUICK, "--impl", "fast", "--compare", str(path))
    assert result.exit_code == 2
    assert "matches this run" in error_line(result)


# -- Ctrl-C -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["plain", "json"])
def test_ctrl_c_prints_the_finished_rows_and_exits_130(tmp_path, fmt):
    marker = tmp_path / "hanging"
    env = {**os.environ, "CNNCHECK_TEST_HANG_MARKER": str(marker)}
    command = [sys.executable, "-m", "cnncheck", "bench", *SMALL_RELU, *QUICK, "--module", fixture("hang"),
               "--format", fmt]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted: 2 of 4 rows measured" in err and "Traceback" not in err
    if fmt == "json":
        data = json.loads(out)
        assert data["interrupted"] is True and data["passed"] is False
        assert [(r["impl"], r["direction"]) for r in data["results"]] == [("numpy", "forward"),
                                                                         ("numpy", "backward")]
    else:
        assert "relu     forward   numpy" in out and "hang" not in out
        assert out.rstrip().endswith("INTERRUPTED after 2 measurements")


def test_the_fixtures_do_not_import_cnncheck():
    import ast

    for path in FIXTURES.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] != "cnncheck" for a in node.names), path.name
            elif isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] != "cnncheck", path.name


def test_a_torch_baseline_without_torch_names_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    result = run(*SMALL_POOL, *QUICK, "--baseline", "torch")
    assert result.exit_code == 2
    assert "pip install 'cnncheck[torch]'" in error_line(result)


