"""Isolated checks: every way a submission can misbehave becomes a status, and the rest is still reported."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from cnncheck import isolate
from cnncheck.errors import CnnCheckError, ModuleLoadError
from cnncheck.gradcheck import CheckJob, GradcheckConfig
from cnncheck.results import GradcheckResult, Status

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="isolation needs a POSIX system")

SUBMISSIONS = Path(__file__).resolve().parent.parent / "fixtures" / "submissions"
CONFIG = GradcheckConfig()
SMALL = {"shape": (2, 2, 4, 4)}        # fits every layer and keeps each check well under a second
TIMEOUT = 3.0


def sub(name: str) -> str:
    return str(SUBMISSIONS / name)


def check(name: str, layers=("all",), **kwargs) -> isolate.ModuleOutcome:
    """Check a fixture submission in children (import errors and the other fixtures: tests/cli/test_grade_cli.py)."""
    kwargs.setdefault("timeout", TIMEOUT)
    return isolate.check_module_isolated(sub(name), CONFIG, overrides=SMALL, layers=layers, **kwargs)


def by_layer(outcome: isolate.ModuleOutcome) -> dict:
    return {job.layer: job for job in outcome.jobs}


def statuses(job: isolate.JobOutcome) -> set:
    return {r.status for r in job.results}


# -- a submission that dies -------------------------------------------------------
def test_segfault_is_crashed_with_the_signal_and_the_others_still_pass():
    outcome = check("segfault.py")
    jobs = by_layer(outcome)
    assert outcome.load_status == "ok"
    assert jobs["conv"].status == Status.CRASHED and jobs["conv"].message == "signal SIGSEGV"
    assert [(r.gradient, r.status) for r in jobs["conv"].results] == [
        ("dx", Status.CRASHED), ("dw", Status.CRASHED), ("db", Status.CRASHED)]
    assert all(r.message == "signal SIGSEGV" for r in jobs["conv"].results)
    for layer in ("affine", "relu", "pool"):       # pool runs in a fresh child after the crash
        assert statuses(jobs[layer]) == {Status.PASS}, layer
    assert "Fatal Python error" in outcome.output.stderr       # faulthandler's report, captured


def test_sys_exit_in_a_backward_is_crashed_with_the_exit_code():
    jobs = by_layer(check("sys_exit.py", layers=("affine", "relu")))
    assert jobs["affine"].status == Status.CRASHED
    assert {r.message for r in jobs["affine"].results} == {"exit code 3"}
    assert statuses(jobs["relu"]) == {Status.PASS}


def test_unbounded_allocation_under_a_memory_limit_is_out_of_memory():
    jobs = by_layer(check("alloc_unbounded.py", layers=("affine", "relu"), memory_limit=256 * 2**20))
    relu = jobs["relu"]
    assert relu.memory_limited
    assert relu.status == Status.CRASHED and relu.message.startswith("out of memory")
    assert statuses(jobs["affine"]) == {Status.PASS}


# -- a submission that hangs ---------------------------------------------------------
def test_infinite_loop_in_a_check_times_out_and_the_next_check_runs():
    jobs = by_layer(check("hang_in_backward.py", layers=("conv", "pool"), timeout=2.0))
    conv = jobs["conv"]
    assert conv.status == Status.TIMEOUT and conv.message == "no result after 2 s"
    assert {r.status for r in conv.results} == {Status.TIMEOUT} and len(conv.results) == 3
    assert conv.seconds >= 2.0
    assert statuses(jobs["pool"]) == {Status.PASS}


# -- output ------------------------------------------------------------------------------
def test_megabytes_of_output_are_captured_and_cut(capfd):
    outcome = check("noisy_megabytes.py", layers=("relu",), capture_limit=8192)
    out = outcome.output
    assert out.stdout_bytes == 40000 * 101 and out.stderr_bytes == 40000 * 101
    assert out.truncated
    assert out.stdout.startswith("x" * 100 + "\n") and out.stdout.rstrip().endswith("x" * 100)
    assert f"[... {40000 * 101 - 8192} bytes left out ...]" in out.stdout
    assert len(out.stdout) < 8192 + 100
    assert statuses(by_layer(outcome)["relu"]) == {Status.PASS}
    captured = capfd.readouterr()
    assert "xxxx" not in captured.out and "eeee" not in captured.err


def test_capture_off_sends_child_output_to_stderr_never_stdout(capfd):
    job = CheckJob("relu", "good_chatty", (sub("good_chatty.py"),), SMALL, CONFIG, False)
    outcome = isolate.run_job_isolated(job, capture=False)
    assert statuses(outcome) == {Status.PASS}
    captured = capfd.readouterr()
    assert captured.out == ""
    assert "loading my layers" in captured.err


def test_capture_keeps_head_and_tail():
    capture = isolate._Capture(8)
    for chunk in (b"abc", b"defgh", b"ijklmnop", b"qrst"):
        capture.feed(chunk)
    assert capture.total == 20
    assert capture.text() == "abcd\n[... 12 bytes left out ...]\nqrst"
    whole = isolate._Capture(100)
    whole.feed(b"hello \xff")
    assert whole.text() == "hello \ufffd"


# -- the gradcheck path: one child per job ------------------------------------------------
def test_run_checks_isolated_reports_every_result_in_order():
    jobs = [CheckJob("relu", "numpy", (), SMALL, CONFIG, False),
            CheckJob("conv", "segfault", (sub("segfault.py"),), SMALL, CONFIG, False),
            CheckJob("affine", "numpy", (), SMALL, CONFIG, False)]
    seen, outcomes = [], []
    results = isolate.run_checks_isolated(jobs, timeout=TIMEOUT, on_result=seen.append, on_outcome=outcomes.append)
    assert results == seen
    assert [(r.layer, r.gradient, r.status) for r in results] == [
        ("relu", "dx", Status.PASS),
        ("conv", "dx", Status.CRASHED), ("conv", "dw", Status.CRASHED), ("conv", "db", Status.CRASHED),
        ("affine", "dx", Status.PASS), ("affine", "dw", Status.PASS), ("affine", "db", Status.PASS)]
    assert [o.status for o in outcomes] == ["done", Status.CRASHED, "done"]
    crashed = results[1]
    assert crashed.params == {"shape": [2, 2, 4, 4], "filters": 2, "kernel": [3, 3], "stride": 2, "pad": 1}
    assert crashed.threshold == CONFIG.threshold and crashed.eps == CONFIG.step and crashed.mode == "full"


def test_job_whose_module_does_not_import_is_an_error():
    job = CheckJob("relu", "raises_at_import", (sub("raises_at_import.py"),), SMALL, CONFIG, False)
    outcome = isolate.run_job_isolated(job, timeout=TIMEOUT)
    assert outcome.status == Status.ERROR and "RuntimeError" in outcome.message
    assert statuses(outcome) == {Status.ERROR}


def test_job_whose_module_crashes_at_import_says_so():
    job = CheckJob("relu", "layers", (sub("exits_at_import/layers.py"),), SMALL, CONFIG, False)
    outcome = isolate.run_job_isolated(job, timeout=TIMEOUT)
    assert (outcome.status, outcome.message) == (Status.CRASHED, "exit code 3 while importing the module")


def test_job_with_an_unknown_implementation_is_a_usage_error():
    with pytest.raises(CnnCheckError, match="unknown implementation"):
        isolate.run_job_isolated(CheckJob("relu", "nope", (), SMALL, CONFIG, False), timeout=TIMEOUT)


def test_plan_checks_never_imports_the_module_here():
    before = set(sys.modules)
    selection = isolate.Selection(("relu", "conv"), (), (sub("segfault.py"),), SMALL, CONFIG, False)
    jobs = isolate.plan_checks_isolated(selection, timeout=TIMEOUT)
    assert [(j.layer, j.impl) for j in jobs] == [("relu", "segfault"), ("conv", "segfault")]
    assert all(j.modules == (sub("segfault.py"),) and j.overrides == SMALL for j in jobs)
    assert not any("segfault" in name for name in set(sys.modules) - before)


def test_plan_checks_without_modules_runs_here():
    jobs = isolate.plan_checks_isolated(isolate.Selection(("pool",), ("fast",), (), {}, CONFIG, False))
    assert [(j.layer, j.impl) for j in jobs] == [("pool", "fast")]


def test_plan_checks_turns_a_hanging_import_into_a_load_error():
    selection = isolate.Selection(("all",), (), (sub("hang_at_import.py"),), {}, CONFIG, False)
    with pytest.raises(ModuleLoadError, match=r"timeout \(still importing the module after 1 s\)"):
        isolate.plan_checks_isolated(selection, timeout=1.0)


def test_plan_checks_reports_bad_names_as_usage_errors():
    selection = isolate.Selection(("conv",), ("nope",), (sub("good_vectorised.py"),), {}, CONFIG, False)
    with pytest.raises(CnnCheckError, match="unknown implementation"):
        isolate.plan_checks_isolated(selection, timeout=TIMEOUT)


# -- plumbing ------------------------------------------------------------------------------
def test_result_round_trips_through_json():
    result = GradcheckResult("conv", "fast", "dw", Status.FAIL, rel_error=0.5, abs_error=1.0, threshold=1e-7,
                             worst_index=(0, 1, 2, 2), analytic=1.0, numeric=2.0, message="m",
                             params={"shape": [4, 3, 5, 5]}, compared=54, seconds=0.1, source="x.py",
                             location="x.py:3")
    assert isolate.result_from_dict(result.to_dict()) == result


def test_cancel_kills_a_running_child():
    cancel = threading.Event()
    timer = threading.Timer(0.5, cancel.set)
    timer.start()
    try:
        with pytest.raises(isolate.Cancelled):
            isolate.check_module_isolated(sub("hang_at_import.py"), CONFIG, cancel=cancel)
    finally:
        timer.cancel()


def test_a_child_that_cannot_start_is_an_isolation_error(monkeypatch):
    monkeypatch.setattr(isolate, "_child_command",
                        lambda fd: [sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(5)"])
    with pytest.raises(isolate.IsolationError, match="boom"):
        isolate.run_job_isolated(CheckJob("relu", "numpy", (), {}, CONFIG, False))


def test_isolation_options_parse_and_imply_isolation():
    import click
    from click.testing import CliRunner

    from cnncheck.cli.isolation_options import isolation_options, isolation_settings

    @click.command()
    @isolation_options
    def cmd(**kwargs):
        settings = isolation_settings(kwargs)
        assert kwargs == {}
        click.echo(repr(settings))

    def run(*args):
        return CliRunner().invoke(cmd, list(args))

    assert run().stdout.strip() == repr(isolate_settings(False, None, None, False, False))
    assert run("--timeout", "2.5").stdout.strip() == repr(isolate_settings(True, 2.5, None, False, False))
    assert run("--memory-limit", "512M", "--show-output", "--force").stdout.strip() == \
        repr(isolate_settings(True, None, 512 * 2**20, True, True))
    assert run("--isolate", "--memory-limit", "none").stdout.strip() == repr(isolate_settings(True, None, None,
                                                                                              False, False))
    bad = run("--memory-limit", "2X")
    assert bad.exit_code == 2 and "a memory size looks like 512M" in bad.stderr
    assert run("--timeout", "0").exit_code == 2


def isolate_settings(*values):
    from cnncheck.cli.isolation_options import IsolationSettings

    return IsolationSettings(*values)
