"""`cnncheck list`: layers, parameters, geometries and implementations."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from cnncheck.cli.main import main
from cnncheck.layers import fast

CLI = Path(__file__).resolve().parents[1] / "fixtures" / "cli"


def run(*args):
    return CliRunner().invoke(main, ["list", *map(str, args)])


def test_plain_lists_parameters_geometries_and_implementations():
    result = run()
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.stdout.splitlines()]
    assert ["conv", "--shape", "4,3,5,5", "100,3,31,31"] in [r[:4] for r in rows]
    assert ["pool", "--pool-height", "2", "2"] in [r[:4] for r in rows]
    assert ["conv", "pad0", "x", "(2,", "4,", "5,", "7),"] in [r[:7] for r in rows]
    assert ["conv", "dx,", "dw,", "db", "naive", "(reference)", "python", "loops", "builtin"] in rows
    assert result.stdout.rstrip().endswith(f"fast layers run on: {fast.BACKEND}")


def test_json_and_markdown():
    data = json.loads(run("--format", "json").stdout)
    conv = next(layer for layer in data["layers"] if layer["name"] == "conv")
    assert conv["reference"] == "naive" and conv["geometries"][0]["label"] == "notebook"
    assert run("--format", "markdown").stdout.startswith("## Layers and parameters")


def test_a_module_adds_its_implementations():
    result = run("--module", CLI / "good.py", "--format", "json")
    relu = next(layer for layer in json.loads(result.stdout)["layers"] if layer["name"] == "relu")
    assert any(i["name"] == "good" and i["backend"] == "user" for i in relu["implementations"])


def test_a_module_that_does_not_load_is_a_usage_error():
    result = run("--module", CLI / "syntax_error.py")
    assert result.exit_code == 2 and "SyntaxError" in result.stderr
