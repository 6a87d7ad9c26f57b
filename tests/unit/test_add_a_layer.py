"""Adding a layer takes its functions and its spec, and nothing else in cnncheck.

The layer below (``scale``: ``out = factor * x * w``) is defined here, in
full: two functions and one :class:`~cnncheck.specs.LayerSpec`.  Registered
with :func:`cnncheck.catalog.register`, the path a built-in spec module
takes, it appears in ``cnncheck list``, ``cnncheck gradcheck`` (built-in and
from a user's module under its course names), ``cnncheck bench``, the Python
API, and as a generated command-line option (``--factor``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cnncheck import api, catalog
from cnncheck.cli.main import main
from cnncheck.specs import Builtin, Geometry, Input, LayerSpec, Param, Sample


# -- the layer: its functions ---------------------------------------------------------------------
def scale_forward(x, w, scale_param):
    """``out = factor * x * w``: x (N, D), w (D,), ``scale_param = {'factor': f}``; cache (x, w, factor)."""
    factor = scale_param["factor"]
    return factor * x * w, (x, w, factor)


def scale_backward(dout, cache):
    """(dx, dw) of :func:`scale_forward`."""
    x, w, factor = cache
    return factor * dout * w, factor * (dout * x).sum(axis=0)


# -- the layer: its spec --------------------------------------------------------------------------
def _build(p, rng, dtype, margin, kinks) -> Sample:
    N, D = p["shape"]
    values = {"x": rng.standard_normal((N, D)).astype(dtype), "w": rng.standard_normal(D).astype(dtype),
              "scale_param": {"factor": p["factor"]}}
    return Sample(values, rng.standard_normal((N, D)).astype(dtype))


SPEC = LayerSpec(
    name="scale",
    title="Scale",
    functions={"": ("scale_forward", "scale_backward")},
    inputs=(Input("x"), Input("w"), Input("scale_param", "config")),
    params=(Param("shape", "shape", (3, 4), "input shape N,D", bench=(64, 128), ndim=(2,)),
            Param("factor", "float", 2.0, "the constant factor")),
    build=_build,
    output_shape=lambda p: p["shape"],
    shapes=lambda p: {"x": p["shape"], "w": (p["shape"][1],), "out": p["shape"]},
    geometries=(Geometry("notebook", {}, "x (3, 4)"), Geometry("tall", {"shape": (6, 2), "factor": -0.5}, "N > D")),
    reference="numpy",
    bytes=lambda p, itemsize: (2 * np.prod(p["shape"]) * itemsize, 3 * np.prod(p["shape"]) * itemsize),
    impls=(Builtin("numpy", f"{__name__}:scale_forward", f"{__name__}:scale_backward", "numpy"),),
)

USER_MODULE = '''
import numpy as np


def scale_forward(x, w, scale_param):
    return scale_param["factor"] * x * w, (x, w, scale_param["factor"])


def scale_backward(dout, cache):
    x, w, factor = cache
    return {dx} * dout * w, factor * (dout * x).sum(axis=0)
'''


@pytest.fixture
def registered():
    catalog.register(SPEC)
    try:
        yield SPEC
    finally:
        catalog.unregister(SPEC.name)
    assert "scale" not in [s.name for s in catalog.specs()]


def invoke(*args):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code in (0, 1), result.output
    return result


def test_a_registered_layer_is_listed_with_its_parameters_geometries_and_implementation(registered):
    data = json.loads(invoke("list", "--format", "json").stdout)
    layer = next(entry for entry in data["layers"] if entry["name"] == "scale")
    assert layer["gradients"] == ["dx", "dw"] and layer["functions"] == {"": ["scale_forward", "scale_backward"]}
    assert [(p["name"], p["option"]) for p in layer["parameters"]] == [("shape", "--shape"), ("factor", "--factor")]
    assert [g["label"] for g in layer["geometries"]] == ["notebook", "tall"]
    assert [(i["name"], i["reference"]) for i in layer["implementations"]] == [("numpy", True)]


def test_a_registered_layer_is_checked_by_gradcheck_and_the_api(registered):
    result = invoke("gradcheck", "scale", "--format", "json")
    data = json.loads(result.stdout)
    assert result.exit_code == 0 and data["passed"]
    assert {(r["layer"], r["impl"]) for r in data["results"]} == {("scale", "numpy")}
    assert {r["geometry"] for r in data["results"] if r["geometry"]} == {"notebook", "tall"}
    data = json.loads(invoke("gradcheck", "scale", "-p", "factor=3", "--format", "json").stdout)
    assert {r["geometry"] for r in data["results"] if r["geometry"]} == {"custom"}
    assert all(r["params"]["factor"] == 3.0 for r in data["results"] if r["geometry"])
    assert api.gradcheck("scale", factor=-1.5).passed


def test_a_users_module_is_found_by_the_layers_course_names(registered, tmp_path: Path):
    right, wrong = tmp_path / "mylayers.py", tmp_path / "wronglayers.py"
    right.write_text(USER_MODULE.format(dx="factor"))
    wrong.write_text(USER_MODULE.format(dx="1.0"))          # backward forgets the factor in dx
    result = invoke("gradcheck", "scale", "--module", str(right), "--format", "json")
    assert result.exit_code == 0, result.stdout
    assert {r["impl"] for r in json.loads(result.stdout)["results"]} == {"mylayers"}
    result = invoke("gradcheck", "scale", "--module", str(wrong), "--format", "json")
    failing = {(r["kind"], r["subject"]) for r in json.loads(result.stdout)["results"] if r["status"] == "fail"}
    assert result.exit_code == 1 and ("gradient", "dx") in failing


def test_a_registered_layer_is_timed_by_bench(registered):
    result = invoke("bench", "scale", "--repeat", "1", "--min-time", "0", "--format", "json")
    data = json.loads(result.stdout)
    assert result.exit_code == 0, result.output
    rows = [(r["layer"], r["impl"], r["direction"]) for r in data["results"]]
    assert rows == [("scale", "numpy", "forward"), ("scale", "numpy", "backward")]


def test_a_layer_registered_before_the_cli_is_built_gets_its_own_option():
    """The commands generate their options when first built: a fresh process registers the layer first."""
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from click.testing import CliRunner
        from cnncheck import catalog
        import test_add_a_layer as layer
        catalog.register(layer.SPEC)
        from cnncheck.cli.main import main
        runner = CliRunner()
        out = {{name: runner.invoke(main, [name, "--help"]).stdout for name in ("gradcheck", "bench")}}
        run = runner.invoke(main, ["gradcheck", "scale", "--factor", "0.25", "--format", "json"])
        out["run"] = [run.exit_code, json.loads(run.stdout)]
        print(json.dumps(out))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    out = json.loads(done.stdout)
    for name in ("gradcheck", "bench"):
        assert "--factor X" in out[name] and "The constant factor (scale)." in " ".join(out[name].split())
    code, data = out["run"]
    assert code == 0 and data["passed"]
    assert {r["params"]["factor"] for r in data["results"] if r["geometry"]} == {0.25}
