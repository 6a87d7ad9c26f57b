"""`cnncheck bench` through CliRunner: options, formats, exit codes and the JSON schema.

Shapes are tiny and --min-time 0 so every invocation takes milliseconds; no
test asserts how fast anything is.
"""

from __future__ import annotations

import json
import sys
import textwrap
from importlib import resources

import pytest
from click.testing import CliRunner

from cnncheck.cli.main import main

QUICK = ["--repeat", "2", "--min-time", "0"]
SMALL_POOL = ["pool", "--shape", "2,2,4,4"]
SMALL_CONV = ["conv", "--shape", "2,3,6,6", "--filters", "2"]
SMALL_ALL = ["all", "--shape", "2,3,6,6", "--filters", "2"]


@pytest.fixture(scope="module")
def schema():
    jsonschema = pytest.importorskip("jsonschema")
    text = resources.files("cnncheck").joinpath("schemas/bench.schema.json").read_text(encoding="utf-8")
    data = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(data)
    return jsonschema.Draft202012Validator(data)


def run(*args):
    return CliRunner().invoke(main, ["bench", *args])


def run_json(*args):
    result = run(*args, "--format", "json")
    return result, (json.loads(result.stdout) if result.stdout.strip() else None)


def rows_of(data, **match):
    return [r for r in data["results"] if all(r[k] == v for k, v in match.items())]


# -- formats --------------------------------------------------------------------
def test_plain_table_is_the_default_when_piped():
    result = run(*SMALL_POOL, *QUICK)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Machine: CPU" in out and "numpy" in out and "GEMM peak float64" in out
    assert "pool: shape 2x2x4x4, pool_height 2, pool_width 2, stride 2" in out
    for word in ("Median", "IQR", "Runs", "Speedup", "Throughput", "Difference", "naive", "fast", "baseline",
                 "GB/s", "PASSED"):
        assert word in out
    assert not out.lstrip().startswith("{")


def test_markdown_table():
    result = run(*SMALL_POOL, *QUICK, "--format", "markdown")
    assert result.exit_code == 0, result.output
    assert "| Layer" in result.stdout and "|---" in result.stdout.replace(" ", "").replace(":", "")
    assert "- Machine: CPU" in result.stdout


def test_rich_format_renders():
    result = run(*SMALL_POOL, *QUICK, "--format", "rich")
    assert result.exit_code == 0, result.output
    assert "Machine: CPU" in result.stdout and "fast" in result.stdout


def test_json_document_matches_the_schema(schema):
    result, data = run_json(*SMALL_ALL, *QUICK)
    assert result.exit_code == 0, result.output
    schema.validate(data)
    assert data["command"] == "bench" and data["passed"] is True
    assert data["machine"]["gemm_peak_gflops"] > 0 and data["machine"]["gemm_peak_dtype"] == "float64"
    layers = {r["layer"] for r in data["results"]}
    assert layers == {"affine", "relu", "conv", "pool"}
    for r in data["results"]:
        assert r["median"] > 0 and r["runs"] >= 2 and r["status"] == "ok"
        if r["layer"] in ("conv", "affine"):
            assert r["gflops"] > 0 and r["peak_percent"] > 0 and r["gbps"] is None
        else:
            assert r["gbps"] > 0 and r["gflops"] is None
    (fast_fwd,) = rows_of(data, layer="conv", impl="fast", direction="forward")
    assert fast_fwd["baseline"] == "naive" and fast_fwd["speedup"] > 0
    assert fast_fwd["difference"] <= 1e-9 and set(fast_fwd["differences"]) == {"out"}
    (fast_bwd,) = rows_of(data, layer="conv", impl="fast", direction="backward")
    assert set(fast_bwd["differences"]) == {"dx", "dw", "db"}
    for r in rows_of(data, layer="affine"):
        assert r["speedup"] is None and r["difference"] is None  # no naive affine: no baseline


# -- defaults and options -----------------------------------------------------------
def test_help_names_the_task4_defaults():
    result = CliRunner().invoke(main, ["bench", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "conv shape 100x3x31x31, filters 25, kernel 3x3, stride 2, pad 1" in text
    assert "pool shape 100x3x32x32, pool-height 2, pool-width 2, stride 2" in text
    assert "affine shape 100x3072, filters 100" in text
    assert "relu shape 100x25x16x16" in text


def test_impl_fast_skips_the_baseline():
    result, data = run_json(*SMALL_CONV, *QUICK, "--impl", "fast")
    assert result.exit_code == 0, result.output
    assert {r["impl"] for r in data["results"]} == {"fast"}
    assert all(r["speedup"] is None and r["difference"] is None for r in data["results"])


def test_another_baseline_works_generically():
    result, data = run_json(*SMALL_POOL, *QUICK, "--impl", "naive,fast", "--baseline", "fast")
    assert result.exit_code == 0, result.output
    assert [r["impl"] for r in data["results"]][:2] == ["fast", "fast"]  # the baseline runs first
    naive = rows_of(data, impl="naive", direction="forward")[0]
    assert naive["baseline"] == "fast" and naive["speedup"] > 0


def test_torch_baseline_when_torch_is_installed():
    pytest.importorskip("torch")
    result, data = run_json(*SMALL_CONV, *QUICK, "--impl", "fast,torch", "--baseline", "torch")
    assert result.exit_code == 0, result.output
    fast = rows_of(data, impl="fast", direction="forward")[0]
    assert fast["baseline"] == "torch" and fast["speedup"] > 0


def test_threads_and_dtype_reach_the_run():
    result, data = run_json(*SMALL_POOL, *QUICK, "--threads", "1", "--dtype", "float32", "--seed", "3")
    assert result.exit_code == 0, result.output
    if data["machine"]["blas"] is not None:
        assert data["machine"]["blas"]["threads"] == 1
    assert data["config"]["threads"] == 1 and data["config"]["seed"] == 3
    assert data["machine"]["gemm_peak_dtype"] == "float32"
    assert all(r["dtype"] == "float32" for r in data["results"])
    assert data["config"]["max_diff"] == 1e-2  # float32's default


def test_save_writes_a_result_compare_accepts(tmp_path, schema):
    path = tmp_path / "base.json"
    result = run(*SMALL_POOL, *QUICK, "--save", str(path))
    assert result.exit_code == 0, result.output
    assert f"saved {path}" in result.stderr
    data = json.loads(path.read_text())
    schema.validate(data)
    again = run(*SMALL_POOL, *QUICK, "--compare", str(path), "--max-regression", "100000%")
    assert again.exit_code == 0, again.output
    assert "compared with" in again.stdout and "REGRESSION" not in again.stdout


def test_compare_fails_on_a_regression_and_names_it(tmp_path, schema):
    path = tmp_path / "base.json"
    assert run(*SMALL_POOL, *QUICK, "--save", str(path)).exit_code == 0
    data = json.loads(path.read_text())
    for row in data["results"]:  # pretend the saved run was a thousand times faster
        row["median"] /= 1000
    path.write_text(json.dumps(data))
    result, out = run_json(*SMALL_POOL, *QUICK, "--compare", str(path))
    assert result.exit_code == 1
    schema.validate(out)
    assert out["passed"] is False
    regressed = [c for c in out["comparisons"] if c["regressed"]]
    assert {(c["impl"], c["direction"], c["metric"]) for c in regressed} >= {("fast", "forward", "median")}
    assert "REGRESSION: pool forward fast: median" in result.stderr
    plain = run(*SMALL_POOL, *QUICK, "--compare", str(path))
    assert plain.exit_code == 1 and "REGRESSION: pool backward naive" in plain.stdout


def test_min_speedup_fails_when_not_met():
    result, data = run_json(*SMALL_POOL, *QUICK, "--min-speedup", "1e9")
    assert result.exit_code == 1
    slow = rows_of(data, impl="fast")
    assert all(r["status"] == "slow" for r in slow)
    assert "SLOW: pool forward fast: only" in result.stderr


# -- exit 1 from an implementation under test ------------------------------------------
@pytest.fixture
def user_module(tmp_path):
    path = tmp_path / "mylayers.py"
    path.write_text(textwrap.dedent("""
        from cnncheck.layers.naive import max_pool_backward_naive as _backward
        from cnncheck.layers.naive import max_pool_forward_naive as _forward


        def max_pool_forward_naive(x, pool_param):
            out, cache = _forward(x, pool_param)
            return out * (1 + 1e-6), cache


        def max_pool_backward_naive(dout, cache):
            raise RuntimeError("not finished")
    """))
    yield str(path)
    sys.modules.pop("mylayers", None)


def test_difference_beyond_max_diff_exits_1_and_says_which(user_module):
    result = run(*SMALL_POOL, *QUICK, "--module", user_module, "--impl", "naive,mylayers")
    assert result.exit_code == 1, result.output
    assert "DIFFERS: pool forward mylayers: differs from naive" in result.stdout
    assert "ERROR: pool backward mylayers: backward raised RuntimeError: not finished" in result.stdout
    assert "FAILED" in result.stdout
    loose = run(*SMALL_POOL, *QUICK, "--module", user_module, "--impl", "naive,mylayers", "--max-diff", "1e-3")
    assert "DIFFERS" not in loose.stdout and "ERROR: pool backward mylayers" in loose.stdout


def test_module_alone_is_timed_against_the_baseline(user_module):
    result, data = run_json(*SMALL_POOL, *QUICK, "--module", user_module, "--max-diff", "1e-3")
    assert [r["impl"] for r in data["results"]] == ["naive", "naive", "mylayers", "mylayers"]
    assert result.exit_code == 1  # its backward raises
    assert data["results"][2]["status"] == "ok" and data["results"][3]["status"] == "error"


# -- sweep and plot ---------------------------------------------------------------
def test_sweep_reports_values_and_a_fit(schema):
    result, data = run_json(*SMALL_POOL, *QUICK, "--impl", "fast", "--sweep", "N=1,2,4")
    assert result.exit_code == 0, result.output
    schema.validate(data)
    assert [r["sweep_value"] for r in data["results"]] == [1, 1, 2, 2, 4, 4]
    assert [r["params"]["shape"][0] for r in data["results"]] == [1, 1, 2, 2, 4, 4]
    assert data["config"]["sweep_param"] == "N" and data["config"]["sweep_values"] == [1, 2, 4]
    fits = {(f["impl"], f["direction"]): f for f in data["fits"]}
    assert set(fits) == {("fast", "forward"), ("fast", "backward")}
    assert fits["fast", "forward"]["values"] == [1, 2, 4] and fits["fast", "forward"]["work_unit"] == "byte"
    assert isinstance(fits["fast", "forward"]["exponent"], float)


def test_sweep_plain_output_has_the_fit_table():
    result = run(*SMALL_POOL, *QUICK, "--impl", "fast", "--sweep", "H=4,8")
    assert result.exit_code == 0, result.output
    assert "Exponent" in result.stdout and "Medians over H" in result.stdout


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


# -- usage errors: exit 2, one clear line -------------------------------------------
def error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("args, fragment", [
    (["convv"], "unknown layer 'convv'"),
    (["pool", "--sweep", "N"], "PARAM=V1,V2"),
    (["pool", "--sweep", "Q=1,2"], "unknown parameter 'Q'"),
    (["pool", "--sweep", "N=1,x"], "must be integers"),
    (["affine", "--sweep", "H=4,8"], "does not apply to affine"),
    (["pool", "--repeat", "0"], "--repeat"),
    (["pool", "--impl", "fastest"], "fastest"),
    (["pool", "--baseline", "nope"], "unknown --baseline 'nope'"),
    (["pool", "--impl", "fast", "--min-speedup", "2"], "--min-speedup needs the baseline"),
    (["pool", "--max-regression", "lots"], "--max-regression"),
    (["pool", "--plot", "x.png"], "--plot draws a sweep"),
    (["pool", "--sweep", "N=1,2", "--plot", "x.gif"], ".png, .svg, .pdf"),
    (["pool", "--dtype", "float16"], "float16"),
    (["pool", "--save", "no/such/folder/x.json"], "does not exist"),
    (["pool", "--pad", "1"], "--pad does not apply to pool"),
    (["pool", "--seed", "-1"], "--seed"),
    (["relu", "--shape", "100000,64,256,256"], "needs about"),
])
def test_usage_errors(args, fragment):
    result = run(*QUICK, *args)
    assert result.exit_code == 2, result.output
    assert fragment in error_line(result)
    assert "Traceback" not in result.output
    assert result.stdout == ""


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
    assert run(*SMALL_POOL, *QUICK, "--save", str(path)).exit_code == 0
    result = run("pool", "--shape", "2,2,6,6", *QUICK, "--compare", str(path))
    assert result.exit_code == 2
    assert "matches this run" in error_line(result)
