"""The corpus: every broken layer module fails the default check on its layer; every correct one passes.

``tests/corpus/broken`` holds single-bug modules written the way students
write them, ``tests/corpus/correct`` correct modules written in unusual ways
(see ``manifest.json``).  The default battery runs on each, through the same
engine and boundary as ``cnncheck gradcheck all --module FILE``, in this
process to keep the suite fast; one test runs a few files through the
command line in child processes and checks the verdicts agree.
"""

from __future__ import annotations

import json
import os

import pytest

from cnncheck import api
from cnncheck.gradcheck import GradcheckConfig

CORPUS = os.path.join(os.path.dirname(__file__), os.pardir, "corpus")
MANIFEST = json.load(open(os.path.join(CORPUS, "manifest.json")))

pytestmark = pytest.mark.skipif(os.environ.get("CNNCHECK_PURE_PYTHON") == "1",
                                reason="the corpus exercises the engine, not cnncheck's kernels")


def _report(path: str, layers=("all",), strict: bool = False):
    plan = api.prepare(list(layers), [], [path], isolate=False)
    try:
        return api.check(plan, GradcheckConfig(), strict=strict)
    finally:
        plan.close()


def _verdicts(path: str, layers=("all",), strict: bool = False) -> dict:
    return {layer: row for (layer, _), row in _report(path, layers, strict).verdicts().items()}


def _needs(path: str) -> None:
    if "import torch" in open(path, encoding="utf-8").read():
        pytest.importorskip("torch")


@pytest.mark.parametrize("name", sorted(MANIFEST["broken"]))
def test_every_broken_module_fails_on_its_layer(name):
    entry = MANIFEST["broken"][name]
    layer, path = entry["layer"], os.path.join(CORPUS, "broken", name)
    _needs(path)
    if entry.get("strict"):
        # A finding that is not a wrong number: a warning by default, a failure with --strict.
        report = _report(path, [layer])
        assert report.passed and any(r.layer == layer for r in report.warnings), name
        assert _verdicts(path, [layer], strict=True)[layer].failing is not None
        return
    verdicts = _verdicts(path, [layer])
    assert verdicts[layer].failing is not None, f"{name}: {entry['description']}"


@pytest.mark.parametrize("name", sorted(MANIFEST["correct"]))
def test_every_correct_module_passes_every_layer(name):
    _needs(os.path.join(CORPUS, "correct", name))
    verdicts = _verdicts(os.path.join(CORPUS, "correct", name))
    failing = {layer: (row.failing.status, row.failing.message) for layer, row in verdicts.items()
               if row.failing is not None}
    assert set(verdicts) == {"affine", "relu", "conv", "pool"}
    assert not failing, failing


@pytest.mark.parametrize("kind, name", [("broken", "pool_forward_memo_by_id.py"),
                                        ("broken", "conv_shared_im2col_buffer.py"),
                                        ("correct", "torch_autograd.py")])
def test_a_child_process_gives_the_same_verdicts(kind, name):
    from click.testing import CliRunner

    from cnncheck.cli import main

    path = os.path.join(CORPUS, kind, name)
    _needs(path)
    result = CliRunner().invoke(main, ["gradcheck", "--module", path, "--format", "json"])
    document = json.loads(result.stdout)
    in_child = {i["layer"]: i["passed"] for i in document["implementations"]}
    in_process = {layer: row.failing is None for layer, row in _verdicts(path).items()}
    assert in_child == in_process
    assert result.exit_code == (0 if all(in_child.values()) else 1)
