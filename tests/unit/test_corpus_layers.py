"""The default ``cnncheck gradcheck LAYER --module FILE`` on the normalisation, dropout, loss and sandwich corpus.

Every file in ``tests/corpus_layers/broken`` holds one bug and must fail the
default command on its layer, with the check the manifest names; every file
in ``tests/corpus_layers/correct`` is right, written in an unusual way, and
must pass.  Files the check cannot judge yet carry an ``engine_gap`` in the
manifest and are expected to fail the test (strictly: when the check learns
to judge them, the test says so).  Each file is checked on its own layers
only, so each run is one layer's battery.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cnncheck.cli.main import main

CORPUS = Path(__file__).resolve().parents[1] / "corpus_layers"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text(encoding="utf-8"))


def gradcheck(layers, path: Path):
    result = CliRunner().invoke(main, ["gradcheck", *layers, "--module", str(path), "--format", "json"])
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def failing(data) -> list:
    return [r for r in data["results"] if r["status"] not in ("pass", "warning", "skipped")]


def cases(group: str):
    for name, entry in sorted(MANIFEST[group].items()):
        marks = [pytest.mark.xfail(reason=f"not judged yet: {entry['engine_gap']}", strict=True)] \
            if "engine_gap" in entry else []
        yield pytest.param(name, entry, marks=marks, id=name[:-3])


def test_manifest_lists_every_file_and_no_file_imports_cnncheck():
    for group in ("broken", "correct"):
        files = {p.name for p in (CORPUS / group).glob("*.py")}
        assert files == set(MANIFEST[group]), group
        for name in files:
            text = (CORPUS / group / name).read_text(encoding="utf-8")
            assert "cnncheck" not in text, f"{group}/{name} mentions cnncheck: it would be reported uses-reference"


@pytest.mark.parametrize("name,entry", list(cases("broken")))
def test_broken_file_fails_the_default_command_on_its_layer(name, entry):
    path = CORPUS / "broken" / name
    code, data = gradcheck([entry["layer"]], path)
    assert code == 1, f"{name} passed: {data['summary']}"
    found = failing(data)
    stem = path.stem
    assert found and all(r["layer"] == entry["layer"] and r["impl"].startswith(stem) for r in found)
    assert not any(r["status"] == "uses-reference" for r in found)
    for want in entry["caught_by"]:
        matches = [r for r in found if r["impl"] == stem + want["impl"] and r["kind"] == want["kind"]
                   and r["subject"] == want["subject"] and r["geometry"] == want.get("geometry", r["geometry"])]
        assert matches, (f"{name}: no failing {want} among "
                         f"{sorted({(r['impl'], r['kind'], r['subject'], r['geometry']) for r in found})}")


@pytest.mark.parametrize("name,entry", list(cases("correct")))
def test_correct_file_passes_the_default_command(name, entry):
    code, data = gradcheck(entry["layers"], CORPUS / "correct" / name)
    problems = [(r["layer"], r["impl"], r["kind"], r["subject"], r["geometry"], r["message"]) for r in failing(data)]
    assert code == 0 and not problems, problems
    checked = {r["layer"] for r in data["results"]}
    assert checked == set(entry["layers"])
