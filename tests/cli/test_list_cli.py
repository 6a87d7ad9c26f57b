"""`cnncheck list` through CliRunner: layers, defaults, implementations and backends."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from cnncheck.cli.main import main
from cnncheck.layers import fast

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "layers"


def run(*args):
    return CliRunner().invoke(main, ["list", *args])


def test_plain_lists_layers_parameters_defaults_and_implementations():
    result = run()
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.stdout.splitlines()]
    assert ["conv", "--shape", "4,3,5,5", "100,3,31,31"] == rows[[r[:2] for r in rows].index(["conv", "--shape"])][:4]
    assert ["pool", "--pool-height", "2", "2"] in [r[:4] for r in rows]
    assert ["conv", "dx,", "dw,", "db", "fast", fast.BACKEND, "builtin"] in rows
    assert ["conv", "dx,", "dw,", "db", "naive", "python", "loops", "builtin"] in rows
    assert result.stdout.rstrip().endswith(f"fast layers run on: {fast.BACKEND}")
    assert "\x1b[" not in result.stdout


def test_json_catalog():
    result = run("--format", "json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["command"] == "list" and data["fast_backend"] in ("cython", "numpy")
    layers = {layer["name"]: layer for layer in data["layers"]}
    assert list(layers) == ["affine", "relu", "conv", "pool"]
    conv = layers["conv"]
    assert conv["gradients"] == ["dx", "dw", "db"] and conv["has_kinks"] is False
    params = {p["name"]: p for p in conv["parameters"]}
    assert params["kernel"]["gradcheck_default"] == [3, 3] and params["kernel"]["option"] == "--kernel"
    assert params["shape"]["bench_default"] == [100, 3, 31, 31]
    assert {i["name"] for i in conv["implementations"]} >= {"naive", "fast"}


def test_user_modules_show_with_their_backend():
    result = run("--module", str(FIXTURES / "partial.py"), "--format", "json")
    assert result.exit_code == 0
    impls = {(layer["name"], i["name"]): i for layer in json.loads(result.stdout)["layers"]
             for i in layer["implementations"]}
    assert impls[("affine", "partial")]["backend"] == "user"
    assert impls[("conv", "partial")]["backend"] == "missing"
    assert impls[("affine", "partial")]["source"] == str(FIXTURES / "partial.py")


def test_rich_format_and_errors():
    result = run("--format", "rich")
    assert result.exit_code == 0 and "Implementations" in result.stdout
    result = run("--module", "missing_file.py")
    assert result.exit_code == 2
    assert "Error: cannot import --module missing_file.py: no such file" in result.stderr
