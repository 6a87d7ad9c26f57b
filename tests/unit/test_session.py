"""Child sessions: what code under test can do to the process that runs it, and what the parent makes of it."""

from __future__ import annotations

import os
import textwrap

import numpy as np
import pytest

from cnncheck import session as sessions
from cnncheck.session import ChildSession, LocalSession, Sandbox, SessionFailure
from cnncheck.status import Status

pytestmark = pytest.mark.skipif(os.name != "posix", reason="child sessions need a POSIX system")


def _module(tmp_path, body: str) -> str:
    path = tmp_path / "layers.py"
    path.write_text("import os, sys, time\nimport numpy as np\n" + textwrap.dedent(body))
    return str(path)


def _loaded(tmp_path, body, **sandbox) -> ChildSession:
    child = ChildSession(Sandbox(**sandbox))
    response = child.request({"op": "load", "module": _module(tmp_path, body), "names": ["f", "g"]})
    assert response["loaded"], response
    return child


def test_a_child_calls_and_captures_output(tmp_path):
    child = _loaded(tmp_path, """
        print("hello from the module")
        def f(x):
            print("in f", file=sys.stderr)
            return x * 2, None
    """)
    try:
        response = child.request({"op": "call", "fn": "f", "args": [{"value": np.arange(3.0)}], "expect": "pair"})
        assert np.array_equal(response["returned"]["items"][0]["array"], [0.0, 2.0, 4.0])
        child.request({"op": "ping"})
        output = child.output
        assert "hello from the module" in output.stdout and "in f" in output.stderr
    finally:
        child.close()


@pytest.mark.parametrize("body, status, message", [
    ("def f():\n    import ctypes\n    ctypes.string_at(0)\n", Status.CRASHED, "signal SIGSEGV"),
    ("def f():\n    os._exit(3)\n", Status.CRASHED, "exit code 3"),
    ("def f():\n    while True:\n        pass\n", Status.TIMEOUT, "no answer within 1 s"),
    ("def f():\n    for fd in range(3, 64):\n        try:\n            os.write(fd, b'garbage')\n"
     "        except OSError:\n            pass\n    os._exit(0)\n", Status.PROTOCOL_ERROR, "malformed"),
])
def test_what_ends_a_child_becomes_a_status(tmp_path, body, status, message):
    child = _loaded(tmp_path, body, timeout=1.0)
    try:
        child.begin()
        with pytest.raises(SessionFailure) as failure:
            print(child.request({"op": "call", "fn": "f"}))
        assert failure.value.status == status and message in failure.value.message
        # The next request starts a fresh child with the module loaded again.
        assert child.request({"op": "ping"})["pong"]
        assert child.starts == 2
    finally:
        child.close()


def test_forged_frames_are_a_protocol_error(tmp_path):
    child = _loaded(tmp_path, """
        from cnncheck import runner  # noqa: F401  (refused: cnncheck cannot be imported)
    """.replace("from cnncheck import runner  # noqa: F401  (refused: cnncheck cannot be imported)", """
def f():
    import struct
    for fd in range(3, 32):
        try:
            os.write(fd, b"CNKR" + struct.pack("<IQ", 99, 1) + b"T")
        except OSError:
            pass
    time.sleep(5)
"""))
    try:
        with pytest.raises(SessionFailure) as failure:
            child.request({"op": "call", "fn": "f"})
        assert failure.value.status == Status.PROTOCOL_ERROR
    finally:
        child.close()


def test_memory_limit_makes_allocation_fail(tmp_path):
    child = _loaded(tmp_path, "def f():\n    return np.ones(1 << 30)\n", memory_limit=256 << 20)
    try:
        if not child.memory_limited:
            pytest.skip("the address-space limit cannot be set here")
        response = child.request({"op": "call", "fn": "f"})
        assert response["raised"]["memory"]
    finally:
        child.close()


def test_the_guard_refuses_cnncheck_and_protected_paths(tmp_path):
    secret = tmp_path / "other"
    secret.mkdir()
    (secret / "alice.py").write_text("x = 1\n")
    body = f"""
        def f():
            import importlib
            importlib.import_module("cnn" + "check")
        def g():
            return open({str(secret / 'alice.py')!r}).read()
    """
    child = _loaded(tmp_path, body, forbid_paths=(str(secret),))
    try:
        first = child.request({"op": "call", "fn": "f"})
        second = child.request({"op": "call", "fn": "g"})
        assert first["raised"]["exception"] in ("BlockedError", "BlockedImport")
        assert second["raised"]["blocked"]
        kinds = {entry["kind"] for entry in first["refused"] + second["refused"]}
        assert kinds == {"reference", "open"} or kinds == {"import", "open"}
    finally:
        child.close()


def test_replaced_library_functions_are_reported(tmp_path):
    child = _loaded(tmp_path, "import json\njson.dumps = lambda *a, **k: '{}'\ndef f():\n    return None\n")
    try:
        assert "json.dumps" in child.request({"op": "ping"})["replaced"]
    finally:
        child.close()


def test_cancel_stops_a_waiting_request(tmp_path):
    import threading

    cancel = threading.Event()
    child = _loaded(tmp_path, "def f():\n    time.sleep(30)\n", cancel=cancel)
    threading.Timer(0.3, cancel.set).start()
    try:
        with pytest.raises(sessions.Cancelled):
            child.request({"op": "call", "fn": "f"})
    finally:
        child.close()


def test_a_local_session_sends_prints_to_stderr(capsys):
    local = LocalSession({"f": lambda: print("noise") or 1})
    local.request({"op": "call", "fn": "f"})
    captured = capsys.readouterr()
    assert captured.out == "" and "noise" in captured.err
