"""The boundary's own code: wire format, facts about returned values, the guard, module loading, timing."""

from __future__ import annotations

import os
import struct
import sys

import numpy as np
import pytest

from cnncheck import runner

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(__file__), os.pardir, "fixtures")

# -- wire format ---------------------------------------------------------------------------------
_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
                     st.floats(allow_nan=False), st.text(max_size=20), st.binary(max_size=20))
_arrays = hnp.arrays(st.sampled_from([np.float64, np.float32, np.int64, np.bool_, np.uint8, np.complex128]),
                     hnp.array_shapes(min_dims=0, max_dims=4, max_side=4))
_values = st.recursive(st.one_of(_scalars, _arrays),
                       lambda inner: st.one_of(st.lists(inner, max_size=4),
                                               st.dictionaries(st.text(max_size=5), inner, max_size=4)),
                       max_leaves=12)


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
                and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, (list, tuple)):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b and type(a) is type(b)


@settings(max_examples=80, deadline=None)
@given(_values)
def test_encode_decode_round_trip(value):
    assert _same(value, runner.decode(runner.encode(value)))


def test_arrays_travel_little_endian_and_contiguous():
    a = np.arange(12, dtype=">f8").reshape(3, 4).T
    back = runner.decode(runner.encode(a))
    assert back.dtype == np.dtype("<f8") and np.array_equal(back, a) and back.flags.c_contiguous


@pytest.mark.parametrize("data, reason", [
    (b"", "past the end"),
    (b"Z", "unknown value tag"),
    (b"s" + struct.pack("<I", 10) + b"abc", "past the end"),
    (b"a" + struct.pack("<BB", 99, 0), "dtype code"),
    (b"a" + struct.pack("<BB", 0, 1) + struct.pack("<Q", 1 << 40), "past the end"),
    (b"l" + struct.pack("<I", 1 << 30), "longer than the frame"),
    (b"d" + struct.pack("<I", 1) + b"i" + struct.pack("<q", 1) + b"N", "not text"),
    (b"N" + b"N", "left over"),
    (b"".join([b"l" + struct.pack("<I", 1)] * 60) + b"N", "too deeply"),
])
def test_malformed_values_are_refused(data, reason):
    with pytest.raises(runner.WireError, match=reason):
        runner.decode(data)


def test_frame_reader_splits_a_stream_and_refuses_garbage():
    reader = runner.FrameReader()
    stream = runner.frame(1, {"a": 1}) + runner.frame(2, [1, 2])
    assert reader.feed(stream[:5]) == []
    frames = reader.feed(stream[5:])
    assert [seq for seq, _ in frames] == [1, 2]
    assert runner.decode(frames[1][1]) == [1, 2]
    with pytest.raises(runner.WireError, match="frame header"):
        runner.FrameReader().feed(b'{"event": "result", "status": "pass"}\n')
    with pytest.raises(runner.WireError, match="larger than allowed"):
        runner.FrameReader(max_frame=10).feed(runner.frame(1, "x" * 100))


# -- facts ----------------------------------------------------------------------------------------
class _HasArray:
    def __array__(self, dtype=None, copy=None):
        return np.ones((2, 2))


class _BadArray:
    def __array__(self, dtype=None, copy=None):
        raise RuntimeError("no")


class _Sub(np.ndarray):
    pass


@pytest.mark.parametrize("value, expect", [
    (np.ones((2, 3)), {"dtype": "float64", "shape": [2, 3], "subclass": None, "converted": None}),
    (None, {"problem": "None"}),
    ([[1.0, 2.0]], {"converted": "sequence", "shape": [1, 2]}),
    (3.5, {"converted": "scalar", "shape": []}),
    (_HasArray(), {"converted": "__array__", "shape": [2, 2]}),
    (np.ma.masked_less(np.array([-1.0, 2.0]), 0), {"masked": 1}),
    (np.ones(3).view(_Sub), {"subclass": "test_runner._Sub"}),
    (np.ones(2, dtype=np.int64), {"dtype": "int64"}),
    (np.array([1 + 2j]), {"dtype": "complex128"}),
    (np.array([object()]), {"dtype": "object", "array": None}),
    ({"a": 1}, {"problem": "a dict"}),
])
def test_array_facts(value, expect):
    facts = runner.array_facts(value)
    for key, want in expect.items():
        assert facts[key] == want, key


def test_array_facts_of_a_failing_conversion_say_why():
    facts = runner.array_facts(_BadArray())
    assert facts["array"] is None and "cannot be read as an array (RuntimeError: no)" in facts["problem"]


def test_array_facts_copy_the_data():
    a = np.zeros(3)
    facts = runner.array_facts(a)
    a[:] = 1
    assert not facts["array"].any()


def test_split_by_expectation():
    out = np.ones(2)
    assert runner._split((out, "cache"), "pair")["kind"] == "pair"
    assert runner._split([out, {"x": 1}], "pair")["cache"] == "dict"
    assert runner._split(out, "pair") == {"kind": "shape", "got": {"type": "numpy.ndarray", "length": None}}
    assert runner._split(None, "grads:3") == {"kind": "none"}
    assert runner._split(out, "grads:1")["kind"] == "grads"
    assert runner._split([out, out], "grads:3")["got"] == {"type": "list", "length": 2}
    loss = runner._split((1.0, {"W1": out}), "loss")
    assert loss["kind"] == "loss" and loss["grads"]["W1"]["shape"] == [2]


def test_arrays_inside_a_cache_of_any_shape():
    class Cache:
        def __init__(self):
            self.x = np.ones(2)

    x = np.zeros(3)
    closure = (lambda: x)
    found = dict(runner.arrays_inside((Cache(), {"w": np.ones(1)}, [closure])))
    assert set(found) == {"cache[0].x", "cache[1]['w']", "cache[2][0].<closure 0>"}


def test_error_facts_name_the_exception_and_the_line():
    def layer():
        raise NotImplementedError("later")

    server = runner.Server({"f": layer})
    response = server.handle({"op": "call", "fn": "f", "args": []})
    raised = response["raised"]
    assert raised["exception"] == "NotImplementedError" and raised["not_implemented"]
    assert raised["location"].startswith(__file__) and "later" in raised["traceback"]


def test_sys_exit_in_code_under_test_is_a_fact():
    server = runner.Server({"f": lambda: sys.exit(7)})
    assert server.handle({"op": "call", "fn": "f"})["raised"]["exit_code"] == 7


def test_the_server_gives_fresh_copies_and_keeps_results():
    calls = []

    def forward(x, param):
        calls.append((x, param))
        x += 1
        param["seen"] = True
        return x * 2, x

    server = runner.Server({"f": forward})
    x = np.ones(3)
    response = server.handle({"op": "call", "fn": "f", "args": [{"value": x}, {"value": {"k": 1}}],
                              "expect": "pair"})
    assert np.array_equal(x, np.ones(3))
    h = response["handle"]
    assert np.array_equal(response["returned"]["items"][0]["array"], np.full(3, 4.0))
    assert np.array_equal(server.handle({"op": "fetch", "ref": [h, "args", 0]})["item"]["array"], np.full(3, 2.0))
    assert server.handle({"op": "fetch", "ref": [h, "args", 1], "as": "dict"})["dict"] == {"k": 1, "seen": True}


@pytest.mark.parametrize("layout", ["C", "F", "T", "S"])
def test_layouts_keep_the_values(layout):
    value = np.arange(24.0).reshape(2, 3, 4)
    laid = runner._lay_out(value, layout)
    assert np.array_equal(laid, value)
    if layout != "C":
        assert not laid.flags.c_contiguous


def test_probe_restores_the_input_and_stacks_outputs():
    server = runner.Server({"f": lambda x: (x ** 2, None)})
    x = np.array([1.0, 2.0, 3.0])
    response = server.handle({"op": "probe", "fn": "f", "args": [{"value": x}], "target": 0, "h": 0.5,
                              "size": 3, "index": np.array([0, 2]), "expect": "pair"})
    assert response["failed"] is None
    assert np.allclose(response["plus"], [[2.25, 4, 9], [1, 4, 12.25]])
    assert np.allclose(response["minus"], [[0.25, 4, 9], [1, 4, 6.25]])


# -- the guard ------------------------------------------------------------------------------------
def test_guard_refuses_and_records(tmp_path):
    protected = tmp_path / "class"
    protected.mkdir()
    guard = runner.Guard(["cnncheck", "torch"], [str(protected)], spawn=False, reference=[str(tmp_path / "ref")])
    with guard.armed():
        with pytest.raises(ImportError):
            guard("import", ("cnncheck.layers.naive", None, [], [], []))
        with pytest.raises(PermissionError):
            guard("open", (str(protected / "alice.py"), "r", 0))
        with pytest.raises(PermissionError):
            guard("open", (str(tmp_path / "ref" / "naive.py"), "r", 0))
        with pytest.raises(PermissionError):
            guard("subprocess.Popen", ("cat", ["cat"], None, None))
        guard("import", ("numpy", None, [], [], []))
        guard("open", (str(tmp_path / "mine.py"), "r", 0))
        guard("open", (3, "r", 0))
    kinds = [(r["kind"], os.path.basename(r["what"])) for r in guard.refused]
    assert kinds == [("import", "cnncheck"), ("open", "alice.py"), ("reference", "naive.py"),
                     ("spawn", "subprocess.Popen")]


def test_guard_outside_the_armed_block_refuses_without_recording(tmp_path):
    guard = runner.Guard([], [str(tmp_path)])
    with pytest.raises(PermissionError):
        guard("open", (str(tmp_path / "x"), "r", 0))
    assert guard.refused == []


def test_the_runner_reads_its_own_source():
    guard = runner.Guard([], [os.path.dirname(runner.__file__)])
    guard("open", (runner.__file__, "r", 0))


# -- loading --------------------------------------------------------------------------------------
@pytest.fixture
def clean_import_state():
    saved_path, saved_modules = list(sys.path), dict(sys.modules)
    yield
    sys.path[:] = saved_path
    for name in set(sys.modules) - set(saved_modules):
        del sys.modules[name]


@pytest.mark.parametrize("relative", ["layouts/cs231n/layers.py", "layouts/pkg/cnn/layers.py",
                                      "layouts/flat/layers.py"])
def test_course_layouts_load_by_path(relative, clean_import_state):
    module = runner.load_module(os.path.join(FIXTURES, relative))
    out, _ = module.relu_forward(np.array([-1.0, 2.0]))
    assert np.array_equal(out, [0.0, 2.0])


def test_a_missing_package_is_named_with_its_install_command(clean_import_state):
    with pytest.raises(runner.LoadError, match=r"the package 'scikit_missing_pkg' is not installed: pip install "
                                               r"scikit_missing_pkg"):
        runner.load_module(os.path.join(FIXTURES, "layouts", "needs_package.py"))


@pytest.mark.parametrize("spec, message", [
    ("no/such/file.py", "no such file"),
    ("README.md", "expected a Python file"),
    ("no_such_module_xyz", "no such file or module"),
])
def test_what_cannot_load_says_why(spec, message, tmp_path, monkeypatch, clean_import_state):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "README.md").write_text("# notes\n")
    with pytest.raises(runner.LoadError, match=message):
        runner.load_module(spec)


def test_an_import_error_names_file_and_line(tmp_path, clean_import_state):
    path = tmp_path / "broken.py"
    path.write_text("x = 1\nraise ValueError('bad start')\n")
    with pytest.raises(runner.LoadError, match=r"ValueError: bad start \(broken.py:2\)"):
        runner.load_module(str(path))


# -- timing -----------------------------------------------------------------------------------------
def test_measure_groups_fast_calls_and_stops_at_the_budget():
    now = [0.0]

    def clock():
        return now[0]

    def fast():
        now[0] += 1e-5

    times, loops, limited = runner.measure(fast, repeat=3, min_time=0.0, clock=clock)
    assert loops >= 100 and len(times) == 3 and all(abs(t - 1e-5) < 1e-12 for t in times) and not limited

    def slow():
        now[0] += 2.0

    times, loops, limited = runner.measure(slow, repeat=5, min_time=0.0, max_seconds=3.0, clock=clock)
    assert loops == 1 and limited and len(times) == 2
