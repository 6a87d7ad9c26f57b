"""Rubrics: reading a TOML file, refusing names that do not exist, and scoring results."""

from __future__ import annotations

import pytest

from cnncheck import catalog, rubric
from cnncheck.errors import CnnCheckError
from cnncheck.results import CheckResult
from cnncheck.status import Status

SPECS = {s.name: s for s in catalog.specs()}
BATTERY = {name: tuple(g.label for g in spec.geometries) for name, spec in SPECS.items()}

EXAMPLE = """
partial = "parts"

[layers]
affine = 2
relu = 1

[layers.conv]
points = 6
checks = { gradient = 3, reference = 2, protocol = 1 }

[layers.pool]
points = 4
geometries = { notebook = 3, overlap = 1 }
partial = "geometries"
title = "Max pooling"

[layers.conv-fast]
points = 1
"""


def write(tmp_path, text: str, name: str = "rubric.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def resolved(text_or_rubric, tmp_path=None, **kwargs):
    loaded = text_or_rubric if isinstance(text_or_rubric, rubric.Rubric) else \
        rubric.load_rubric(write(tmp_path, text_or_rubric))
    return loaded.resolve(SPECS, battery=kwargs.pop("battery", BATTERY), **kwargs)


# -- reading ---------------------------------------------------------------------------------------
def test_reads_every_form_of_entry(tmp_path):
    loaded = resolved(EXAMPLE, tmp_path)
    assert [i.name for i in loaded.items] == ["affine", "relu", "conv", "pool", "conv-fast"]
    assert loaded.max_points == 14
    assert loaded.layers == ["affine", "relu", "conv", "pool"]
    conv = loaded.item("conv")
    assert [(p.name, p.kind, p.weight) for p in conv.parts] == [
        ("gradient", "check", 3), ("reference", "check", 2), ("protocol", "check", 1)]
    assert conv.functions == ("conv_forward_naive", "conv_backward_naive")
    assert loaded.item("conv-fast").functions == ("conv_forward_fast", "conv_backward_fast")
    pool = loaded.item("pool")
    assert pool.partial == "geometries" and pool.label == "Max pooling"
    assert [(p.name, p.kind) for p in pool.parts] == [("notebook", "geometry"), ("overlap", "geometry")]
    assert loaded.item("affine").partial == "parts" and loaded.item("affine").points == 2


def test_default_rubric_is_one_point_per_layer():
    default = rubric.default_rubric(["affine", "conv"]).resolve(SPECS, battery=BATTERY)
    assert [(i.name, i.points, i.parts) for i in default.items] == [("affine", 1.0, ()), ("conv", 1.0, ())]
    assert default.max_points == 2


def test_digest_depends_on_the_points_not_on_the_file(tmp_path):
    a = rubric.load_rubric(write(tmp_path, "[layers]\naffine = 2\n", "a.toml"))
    b = rubric.load_rubric(write(tmp_path, "# a comment\n[layers]\naffine = 2.0\n", "b.toml"))
    c = rubric.load_rubric(write(tmp_path, "[layers]\naffine = 3\n", "c.toml"))
    assert a.digest == b.digest != c.digest


@pytest.mark.parametrize("text, message", [
    ("[layers]\naffine = ", "not valid TOML"),
    ("points = 3\n", "unknown key 'points'"),
    ("partial = 'some'\n[layers]\naffine = 1\n", "partial: expected one of none, parts, geometries"),
    ("cheating = 'ok'\n[layers]\naffine = 1\n", "cheating: expected one of zero, item"),
    ("[extra]\n", "unknown key 'extra'"),
    ("", "gives no points"),
    ("[layers]\naffine = -1\n", "[layers.affine]: expected a number >= 0, got -1"),
    ("[layers]\naffine = true\n", "expected a number >= 0, got True"),
    ("[layers]\naffine = 'two'\n", "expected a number >= 0, got 'two'"),
    ("[layers]\naffine = 0\n", "every entry is worth 0 points"),
    ("[layers.affine]\ncheks = {gradient = 1}\npoints = 1\n", "unknown key 'cheks' (did you mean 'checks'?)"),
    ("[layers.affine]\nchecks = {gradient = 1}\n", "says nothing about points"),
    ("[layers.affine]\npoints = 1\nchecks = {gradiant = 1}\n", "no kind of check 'gradiant' (did you mean "
                                                               "'gradient'?)"),
    ("[layers.affine]\npoints = 1\nchecks = {integrity = 1}\n", "a prerequisite of every part"),
    ("[layers.affine]\npoints = 1\nchecks = {gradient = 0}\n", "gradient: expected a number > 0, got 0"),
    ("[layers.affine]\npoints = 1\nchecks = [1]\n", "expected a table of weights"),
    ("[layers.affine]\npoints = 1\ntitle = 3\n", "title: expected a string"),
])
def test_malformed_rubrics_are_refused_with_the_entry_named(tmp_path, text, message):
    with pytest.raises(CnnCheckError, match=None) as caught:
        rubric.load_rubric(write(tmp_path, text))
    assert message in str(caught.value)
    assert str(caught.value).startswith(str(tmp_path / "rubric.toml"))
    assert "\n" not in str(caught.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(CnnCheckError, match="no such rubric file"):
        rubric.load_rubric(tmp_path / "absent.toml")
    with pytest.raises(CnnCheckError, match="is a folder"):
        rubric.load_rubric(tmp_path)


@pytest.mark.parametrize("text, kwargs, message", [
    ("[layers]\nconw = 1\n", {}, "[layers.conw]: no layer 'conw' (did you mean 'conv'?); known: affine, relu"),
    ("[layers]\nconv-fastest = 1\n", {}, "conv has no implementation 'conv-fastest'; known: conv, conv-fast"),
    ("[layers]\naffine-fast = 1\n", {}, "affine has no implementation 'affine-fast'; known: affine"),
    ("[layers.affine]\npoints = 1\nchecks = {subgradient = 1}\n", {}, "affine has no subgradient checks"),
    ("[layers.conv]\npoints = 1\ngeometries = {pad1 = 1}\n", {}, "conv has no geometry 'pad1' (did you mean "
                                                                 "'pad0'?); known: notebook, pad0"),
    ("[layers.conv]\npoints = 1\ngeometries = {pad0 = 1}\n", {"battery": {"conv": ("notebook",)}},
     "geometry 'pad0' is not checked in this run (only notebook"),
    ("[layers.conv]\npoints = 1\nchecks = {reference = 1}\n", {"reference": False}, "--no-reference"),
    ("[layers.conv]\npoints = 1\nchecks = {reference = 1}\n", {"has_reference": {"conv": False}},
     "conv has no reference implementation"),
    ("[layers]\npool = 1\n", {"battery": {"conv": ("notebook",)}}, "pool is not among the layers checked (conv)"),
])
def test_names_that_do_not_exist_are_refused(tmp_path, text, kwargs, message):
    with pytest.raises(CnnCheckError) as caught:
        resolved(text, tmp_path, **kwargs)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


# -- scoring ---------------------------------------------------------------------------------------
def r(status="pass", kind="gradient", geometry="notebook", subject="dx", layer="relu", impl="alice", finding=""):
    return CheckResult(layer, impl, kind, subject, Status(status), geometry=geometry, finding=finding,
                       message=f"{kind} {status}")


def battery_results(changes=None, layer="relu", impl="alice", geometries=("notebook", "4d", "2d")):
    """A clean battery: call, reference and gradient results at each geometry, protocol at the first."""
    out = []
    for index, label in enumerate(geometries):
        out += [r(kind="call", geometry=label, subject="out", layer=layer, impl=impl),
                r(kind="reference", geometry=label, layer=layer, impl=impl),
                r(kind="gradient", geometry=label, layer=layer, impl=impl)]
        if index == 0:
            out.append(r(kind="protocol", geometry=label, subject="out", layer=layer, impl=impl,
                         finding="repeat-forward"))
    for (kind, label), status in (changes or {}).items():
        out = [x if (x.kind, x.geometry) != (kind, label) else CheckResult(
            x.layer, x.impl, x.kind, x.subject, Status(status), geometry=x.geometry, message=f"{kind} {status}")
            for x in out]
    return out


def score(rub, results, impls=None, **kwargs):
    return rubric.score(rub, results, impls=impls if impls is not None else {"relu": "alice"},
                        battery={"relu": ("notebook", "4d", "2d"), "affine": ("notebook", "4d", "5d", "single")},
                        **kwargs)


def relu_rubric(tmp_path, body: str, partial: str = "parts"):
    return resolved(f"[layers.relu]\npoints = 6\npartial = '{partial}'\n{body}", tmp_path,
                    battery={"relu": ("notebook", "4d", "2d")})


def test_all_or_nothing_by_default():
    rub = rubric.default_rubric(["relu"]).resolve(SPECS, battery=BATTERY)
    assert score(rub, battery_results()).points == 1
    sheet = score(rub, battery_results({("gradient", "2d"): "fail"}))
    assert sheet.points == 0 and sheet.max_points == 1
    item = sheet["relu"]
    assert item.status == "fail" and item.failing.geometry == "2d" and item.parts[0].passed == 2


def test_parts_score_separately(tmp_path):
    rub = relu_rubric(tmp_path, "checks = { gradient = 2, reference = 1 }")
    sheet = score(rub, battery_results({("reference", "4d"): "differs"}))
    gradient, reference = sheet["relu"].parts
    assert (gradient.points, gradient.max_points) == (4, 4)
    assert (reference.points, reference.max_points, reference.passed, reference.checked) == (0, 2, 2, 3)
    assert reference.failing.kind == "reference" and reference.failing.geometry == "4d"
    assert sheet.points == 4 and sheet["relu"].status == "differs"


def test_prerequisites_fail_every_part(tmp_path):
    rub = relu_rubric(tmp_path, "checks = { gradient = 1, reference = 1 }")
    sheet = score(rub, battery_results({("call", "4d"): "error"}))
    assert [p.points for p in sheet["relu"].parts] == [0, 0] and sheet.points == 0
    assert sheet["relu"].status == "error"


def test_protocol_counts_at_the_first_geometry_only(tmp_path):
    rub = relu_rubric(tmp_path, "checks = { protocol = 1, gradient = 1 }", partial="geometries")
    sheet = score(rub, battery_results({("gradient", "2d"): "fail"}))
    protocol, gradient = sheet["relu"].parts
    assert (protocol.points, protocol.checked) == (3, 1)
    assert (gradient.points, gradient.passed, gradient.checked) == (2, 2, 3)
    assert sheet.points == 5


def test_geometry_parts(tmp_path):
    rub = relu_rubric(tmp_path, "geometries = { notebook = 1, 2d = 1 }")
    sheet = score(rub, battery_results({("reference", "2d"): "differs"}))
    assert [p.points for p in sheet["relu"].parts] == [3, 0]


def test_rule_none_takes_every_point_or_none(tmp_path):
    rub = relu_rubric(tmp_path, "checks = { gradient = 1, reference = 1 }", partial="none")
    assert score(rub, battery_results()).points == 6
    assert score(rub, battery_results({("reference", "4d"): "differs"})).points == 0


def test_a_geometry_never_checked_fails(tmp_path):
    """A crash at 4d ends the battery: 2d has no results at all and counts as failed."""
    rub = relu_rubric(tmp_path, "checks = { gradient = 1 }", partial="geometries")
    results = [x for x in battery_results() if x.geometry != "2d"]
    results = [x if x.geometry != "4d" else CheckResult(x.layer, x.impl, "call", x.subject, Status.CRASHED,
                                                         geometry="4d", message="signal SIGSEGV") for x in results]
    sheet = score(rub, results)
    (part,) = sheet["relu"].parts
    assert (part.passed, part.checked, part.points) == (1, 3, 2)
    assert sheet["relu"].status == "crashed"


def test_warnings_cost_points_only_when_strict():
    rub = rubric.default_rubric(["relu"]).resolve(SPECS, battery=BATTERY)
    results = battery_results() + [r("warning", kind="protocol", finding="mutates-dout", subject="out")]
    assert score(rub, results).points == 1
    assert score(rub, results, strict=True).points == 0


def test_missing_implementation_and_load_failure():
    rub = rubric.default_rubric(["relu", "affine"]).resolve(SPECS, battery=BATTERY)
    sheet = score(rub, battery_results())
    assert sheet["relu"].points == 1
    affine = sheet["affine"]
    assert affine.points == 0 and affine.status == "not-implemented"
    assert affine.reason == "the submission does not define affine_forward and affine_backward"
    failed = score(rub, [], failure=("error", "SyntaxError: invalid syntax"))
    assert failed.points == 0 and {i.status for i in failed.items} == {"error"}
    assert failed["relu"].reason == "did not load: SyntaxError: invalid syntax"


def test_cheating_zeroes_the_submission_or_the_item(tmp_path):
    results = battery_results() + battery_results(layer="affine", geometries=("notebook", "4d", "5d", "single"))
    cheat = r("uses-reference", kind="integrity", geometry="", subject="out", finding="imports-cnncheck")
    results.append(cheat)
    zero = rubric.default_rubric(["relu", "affine"]).resolve(SPECS, battery=BATTERY)
    sheet = score(zero, results, impls={"relu": "alice", "affine": "alice"})
    assert sheet.points == 0
    assert sheet["relu"].status == "uses-reference" and sheet["affine"].status == "uses-reference"
    assert sheet["affine"].reason.startswith("the submission is not graded: relu/alice: uses-reference")
    item_only = resolved("cheating = 'item'\n[layers]\nrelu = 1\naffine = 1\n", tmp_path)
    sheet = score(item_only, results, impls={"relu": "alice", "affine": "alice"})
    assert (sheet["relu"].points, sheet["affine"].points) == (0, 1)


def test_scores_add_up_and_round(tmp_path):
    rub = relu_rubric(tmp_path, "checks = { gradient = 1, reference = 1, protocol = 1 }", partial="geometries")
    sheet = score(rub, battery_results({("gradient", "4d"): "fail"}))
    assert sheet.points == round(sum(i.points for i in sheet.items), rubric.DIGITS)
    assert sheet["relu"].points == round(sum(p.points for p in sheet["relu"].parts), rubric.DIGITS)
    assert sheet.to_dict()["items"][0]["parts"][0] == {
        "part": "gradient", "points": 1.3333, "max_points": 2.0, "geometries_passed": 2, "geometries": 3,
        "failing": {"subject": "dx", "kind": "gradient", "finding": "", "status": "fail", "geometry": "4d",
                    "message": "gradient fail"}}
