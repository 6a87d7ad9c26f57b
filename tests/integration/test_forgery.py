"""A grade cannot be forged: a class with honest submissions and cheaters, through grade and gradcheck.

Every cheater must end with a failing status that names what it tried; the
honest submissions are graded as they would be anyway.
"""

from __future__ import annotations

import json
import os
import textwrap

import pytest
from click.testing import CliRunner

from cnncheck import grade as grading
from cnncheck.cli.main import main
from cnncheck.gradcheck import GradcheckConfig
from cnncheck.status import Status

pytestmark = pytest.mark.skipif(os.name != "posix", reason="grading runs submissions in child processes")

RELU = """
import numpy as np

def relu_forward(x):
    return np.maximum(x, 0), x

def relu_backward(dout, x):
    return dout * (x > 0)
"""

SKELETON = """
def relu_forward(x):
    return None, x

def relu_backward(dout, cache):
    return None
"""

CHEATERS = {
    # name: (source, the status it must get)
    "imports_reference": ("from cnncheck.layers.naive import relu_forward, relu_backward\n", Status.USES_REFERENCE),
    "importlib_built_name": (
        "import importlib\n"
        "ref = importlib.import_module(''.join(['cnn', 'check', '.layers', '.naive']))\n"
        "relu_forward, relu_backward = ref.relu_forward, ref.relu_backward\n", Status.USES_REFERENCE),
    "sys_path_entry": (
        "import sys\nsys.path.insert(0, {package_parent!r})\nsys.meta_path.clear()\n"
        "import cnncheck.layers.naive as ref\nrelu_forward, relu_backward = ref.relu_forward, ref.relu_backward\n",
        Status.USES_REFERENCE),
    "reads_reference_source": (
        "src = open({naive_file!r}).read()\nexec(compile(src, 'naive.py', 'exec'))\n", Status.USES_REFERENCE),
    "rewrites_json": (
        "import json\n_dumps = json.dumps\n"
        "json.dumps = lambda obj, *a, **k: _dumps(obj, *a, **k).replace('\"fail\"', '\"pass\"')\n" + SKELETON,
        Status.TAMPERING),
    "rewrites_pickle": (
        "import pickle\n_dumps = pickle.dumps\npickle.dumps = lambda *a, **k: _dumps({{'status': 'pass'}})\n"
        + SKELETON, Status.TAMPERING),
    "rewrites_to_dict": (
        "import cnncheck.results as r\nr.CheckResult.to_dict = lambda self: {{'status': 'pass'}}\n" + SKELETON,
        Status.USES_REFERENCE),
    "forges_messages": (
        "import os, struct\n"
        "for fd in range(0, 256):\n"
        "    try:\n"
        "        os.write(fd, b'CNKR' + struct.pack('<IQ', 2, 1) + b'T')\n"
        "        os.write(fd, b'{{\"event\": \"result\", \"status\": \"pass\"}}\\n')\n"
        "    except OSError:\n"
        "        pass\n"
        "os._exit(0)\n", Status.PROTOCOL_ERROR),
    "replaces_numpy": (
        "import numpy as np\nnp.allclose = lambda *a, **k: True\nnp.abs = lambda x: x * 0\n" + SKELETON,
        Status.TAMPERING),
    "reads_neighbour": (
        "src = open({neighbour!r}).read()\nexec(src)\n", Status.FORBIDDEN_ACCESS),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    import cnncheck

    folder = tmp_path_factory.mktemp("class")
    (folder / "honest.py").write_text(textwrap.dedent(RELU))
    (folder / "skeleton.py").write_text(textwrap.dedent(SKELETON))
    package_dir = os.path.dirname(os.path.realpath(cnncheck.__file__))
    values = {"package_parent": os.path.dirname(package_dir), "neighbour": str(folder / "honest.py"),
              "naive_file": os.path.join(package_dir, "layers", "naive.py")}
    for name, (source, _) in CHEATERS.items():
        (folder / f"{name}.py").write_text(source.format(**values))
    settings = grading.GradeSettings(GradcheckConfig(seed=1234), ("relu",), timeout=20.0,
                                     protect=(str(folder),))
    submissions = grading.discover_submissions(folder)
    results = grading.grade_all(submissions, settings, jobs=2)
    return folder, {r.name: r for r in results}


def test_the_honest_submissions_are_graded_as_before(graded):
    _, results = graded
    assert results["honest"].passed and results["honest"].statuses == {"relu": "pass"}
    assert results["skeleton"].layers == {"relu": "missing"}


@pytest.mark.parametrize("name", sorted(CHEATERS))
def test_no_cheater_passes_and_each_gets_a_status_naming_what_it_tried(graded, name):
    _, results = graded
    result = results[name]
    assert not result.passed
    assert result.statuses["relu"] == CHEATERS[name][1], (result.status, result.message, result.problems())


def test_the_same_cheaters_through_gradcheck(graded):
    folder, _ = graded
    for name in ("imports_reference", "importlib_built_name", "rewrites_json", "forges_messages", "replaces_numpy"):
        result = CliRunner().invoke(main, ["gradcheck", "relu", "--module", str(folder / f"{name}.py"),
                                           "--format", "json", "--quick"])
        assert result.exit_code == 1, (name, result.output)
        document = json.loads(result.stdout)
        statuses = {r["status"] for r in document["results"]}
        assert str(CHEATERS[name][1]) in statuses, (name, statuses)


def test_the_seed_is_recorded_so_a_grade_can_be_reproduced(graded, tmp_path):
    folder, _ = graded
    output = tmp_path / "grades.json"
    result = CliRunner().invoke(main, ["grade", str(folder), "--layers", "relu", "--quick", "--format", "json",
                                       "--output", str(output)])
    document = json.loads(output.read_text())
    assert isinstance(document["seed"], int)
    again = CliRunner().invoke(main, ["grade", str(folder), "--layers", "relu", "--quick", "--format", "json",
                                      "--seed", str(document["seed"])])
    first = {s["name"]: s["statuses"] for s in json.loads(result.stdout)["submissions"]}
    second = {s["name"]: s["statuses"] for s in json.loads(again.stdout)["submissions"]}
    assert first == second


@pytest.mark.skipif(not grading.can_drop_privileges()[0], reason="needs root and a Python other users can read")
def test_children_run_as_an_unprivileged_user(tmp_path):
    folder = tmp_path / "class"
    folder.mkdir()
    (folder / "whoami.py").write_text(textwrap.dedent(RELU) + "import os\nassert os.getuid() != 0\n")
    settings = grading.GradeSettings(GradcheckConfig(), ("relu",), quick=True)
    (result,) = grading.grade_all(grading.discover_submissions(folder), settings)
    assert result.passed, result.problems()
