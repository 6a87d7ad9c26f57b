"""Run gradient checks in child processes, so code under test cannot hang or kill the run.

Each child is a fresh interpreter running :func:`cnncheck._child.main` in
a session of its own.  The parent sends it a pickled request on stdin
and reads three pipes: the child's stdout and stderr (captured, never
copied to the parent's stdout, and cut to a head and a tail of bounded
size) and a private results pipe on which the child writes one JSON line
per event (ready, module loaded, check started, check finished).

Why a subprocess rather than :mod:`multiprocessing`: the child's file
descriptors 1 and 2 are pipes the parent owns, so everything the code under
test writes (``print``, ``os.write``, C extensions, its own subprocesses) is
captured; the child leads its own process group, so a timeout kills the
code under test and anything it started; and nothing of the parent (its
``__main__``, its open files) is inherited or re-imported.  Results travel
back as JSON rather than pickles, so a child can at worst send wrong
numbers, never objects that run code in the parent.

What the parent does with a child:

* **timeout** -- ``timeout`` seconds run separately for importing the user
  module and for each check, starting when the child reports that it has
  started (the interpreter and numpy are loaded by then, so a busy machine
  does not eat into the code's time).  Past it the child's process group
  is killed and the check gets status ``timeout``.
* **death** -- a child that ends before reporting gets status ``crashed``
  with ``signal SIGSEGV``, ``exit code 3``, or ``out of memory`` (a
  ``MemoryError``, usually from ``memory_limit``).
* **memory_limit** -- on Linux the child's address space is capped with
  ``resource.setrlimit(RLIMIT_AS)`` at what it has mapped once started plus
  ``memory_limit`` bytes; allocations past it raise ``MemoryError``.  Where
  the OS refuses, the check runs unlimited and the outcome says so.

Isolation needs a POSIX system (Linux, macOS).  It protects the *run* from
bugs in the code under test; it is no sandbox (see the README).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import selectors
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from cnncheck.errors import CnnCheckError, ModuleLoadError
from cnncheck.results import GradcheckResult, Status, _jsonable

#: Bytes of each of a child's stdout and stderr kept by default (half from the start, half from the end).
DEFAULT_CAPTURE_LIMIT = 64 * 1024

#: Seconds a child may take to start (interpreter, numpy, cnncheck) before the run gives up.
STARTUP_TIMEOUT = 120.0

#: Seconds a child that has reported everything may take to exit before it is killed.
EXIT_GRACE = 2.0


class Cancelled(Exception):
    """The run was cancelled (``cancel`` was set); the child was killed."""


class IsolationError(RuntimeError):
    """A child process could not be started, or cnncheck itself failed inside one.

    This is an environment problem or a cnncheck bug, never the checked
    code's fault, so it is not turned into a result.
    """


# -- what the parent sends ------------------------------------------------------
@dataclass(frozen=True)
class Selection:
    """Which checks to run, by name, as the ``gradcheck`` command line gives them.

    Attributes
    ----------
    layers : tuple of str
        Layer names; ``("all",)`` for every layer.
    impls : tuple of str
        Implementation names; empty for the default choice (the modules'
        implementations when ``modules`` is given, else every one).
    modules : tuple of str
        User modules (``.py`` paths or dotted names).
    overrides : dict
        Layer parameters (``shape``, ``stride``, ...) given by the user.
    config : GradcheckConfig
        Engine settings shared by every check.
    entry_points : bool
        Load the ``cnncheck.implementations`` entry points.
    """

    layers: tuple = ("all",)
    impls: tuple = ()
    modules: tuple = ()
    overrides: dict = field(default_factory=dict)
    config: Any = None
    entry_points: bool = True

    def job(self, layer: str, impl: str):
        """The :class:`~cnncheck.gradcheck.CheckJob` of one (layer, implementation) of this selection."""
        from cnncheck.gradcheck import CheckJob

        return CheckJob(layer, impl, tuple(self.modules), dict(self.overrides), self.config, self.entry_points)


@dataclass(frozen=True)
class _Request:
    """What one child does: run ``jobs``; or plan ``selection`` and, with ``run``, run the plan too."""

    jobs: tuple = ()
    selection: Selection | None = None
    run: bool = True
    memory_limit: int | None = None
    sys_path: tuple = ()


# -- what the parent returns ----------------------------------------------------
@dataclass(frozen=True)
class CapturedOutput:
    """What a child wrote to stdout and stderr, cut to a bounded size.

    Attributes
    ----------
    stdout, stderr : str
        The text kept (UTF-8, undecodable bytes replaced); when more was
        written than the limit, the start and the end with a line saying
        how many bytes were left out between them.
    stdout_bytes, stderr_bytes : int
        How many bytes were written in all.
    truncated : bool
        True when some of either stream was left out.
    """

    stdout: str = ""
    stderr: str = ""
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    truncated: bool = False

    def __bool__(self) -> bool:
        return bool(self.stdout_bytes or self.stderr_bytes)

    def __add__(self, other: "CapturedOutput") -> "CapturedOutput":
        return CapturedOutput(self.stdout + other.stdout, self.stderr + other.stderr,
                              self.stdout_bytes + other.stdout_bytes, self.stderr_bytes + other.stderr_bytes,
                              self.truncated or other.truncated)

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class JobOutcome:
    """How one isolated (layer, implementation) check ended.

    Attributes
    ----------
    layer, impl : str
    results : tuple of GradcheckResult
        One per gradient: the engine's results when the child reported
        them, otherwise ``timeout``/``crashed`` results naming the cause.
    status : str
        ``"done"`` when the check ran to the end; ``Status.TIMEOUT`` or
        ``Status.CRASHED`` when it was killed or died (or ran out of memory);
        ``Status.ERROR`` when the job's module did not import.
    message : str
        ``""`` when done; otherwise, e.g. ``"signal SIGSEGV"``, ``"exit code 3"``,
        ``"out of memory"``, ``"no result after 2 s"``.
    output : CapturedOutput
        What the child wrote (for a shared child, all it wrote until this check ended).
    seconds : float
        Wall time of this check in the child (or until it was killed).
    memory_limited : bool
        Whether a requested memory limit was in force.
    """

    layer: str
    impl: str
    results: tuple
    status: str = "done"
    message: str = ""
    output: CapturedOutput = CapturedOutput()
    seconds: float = 0.0
    memory_limited: bool = False


@dataclass(frozen=True)
class ModuleOutcome:
    """How checking every implementation of one user module ended.

    Attributes
    ----------
    module : str
    load_status : str
        ``"ok"`` when the module imported; ``Status.ERROR`` when importing it
        raised (``load_message`` has the error); ``Status.TIMEOUT`` or
        ``Status.CRASHED`` when the import hung or killed the child.
    load_message : str
    jobs : tuple of JobOutcome
        One per implementation the module defines, in registry order.
    output : CapturedOutput
        Everything the module's children wrote.
    seconds : float
    memory_limited : bool
    """

    module: str
    load_status: str
    load_message: str = ""
    jobs: tuple = ()
    output: CapturedOutput = CapturedOutput()
    seconds: float = 0.0
    memory_limited: bool = False

    @property
    def results(self) -> list:
        """Every result of every check, in order."""
        return [r for job in self.jobs for r in job.results]


# -- public entry points ----------------------------------------------------------
def plan_checks_isolated(selection: Selection, *, timeout: float | None = None,
                         memory_limit: int | None = None) -> list:
    """The jobs a selection means, worked out without importing user modules into this process.

    With user modules the registry is built in a child (importing a module
    runs its code); without, here, as ``gradcheck`` does.

    Parameters
    ----------
    selection : Selection
    timeout : float, optional
        Seconds the child may spend importing the modules.
    memory_limit : int, optional
        Bytes of address space the modules' code may add (Linux).

    Returns
    -------
    list of CheckJob
        In registry order, one per (layer, implementation).

    Raises
    ------
    CnnCheckError
        Unknown names or bad parameters; a module that does not import,
        or whose import hangs or crashes (``ModuleLoadError``).
    """
    if not selection.modules:
        from cnncheck.gradcheck import select_checks
        from cnncheck.plugins import build_registry

        registry = build_registry((), entry_points=selection.entry_points)
        items = select_checks(registry, list(selection.layers) or ["all"], list(selection.impls), [],
                              dict(selection.overrides))
        return [selection.job(spec.name, impl.name) for spec, impl, _ in items]
    report = _Child(_Request(selection=selection, run=False, memory_limit=memory_limit, sys_path=tuple(sys.path)),
                    timeout=timeout, capture=True, capture_limit=DEFAULT_CAPTURE_LIMIT).run()
    if report.usage_error is not None:
        raise CnnCheckError(report.usage_error)
    if report.load_error is not None:
        raise ModuleLoadError(report.load_error)
    if report.plan is None:
        names = ", ".join(selection.modules)
        raise ModuleLoadError(f"cannot import --module {names}: {report.failure[0]} ({report.failure[1]})")
    return list(report.plan)


def run_job_isolated(job, *, timeout: float | None = None, memory_limit: int | None = None,
                     capture: bool = True, capture_limit: int = DEFAULT_CAPTURE_LIMIT) -> JobOutcome:
    """Run one :class:`~cnncheck.gradcheck.CheckJob` in a fresh child process.

    Parameters
    ----------
    job : CheckJob
        What to check; it names modules by path, so it pickles.
    timeout : float, optional
        Seconds the module import and the check may each take; None for no limit.
    memory_limit : int, optional
        Bytes of address space the checked code may add (Linux); None for no limit.
    capture : bool
        Capture the child's stdout and stderr (the default).  When False both
        go to this process's stderr as they are written, never to its stdout.
    capture_limit : int
        Bytes kept of each stream.

    Returns
    -------
    JobOutcome
    """
    report = _Child(_Request(jobs=(job,), memory_limit=memory_limit, sys_path=tuple(sys.path)),
                    timeout=timeout, capture=capture, capture_limit=capture_limit).run()
    if report.usage_error is not None:
        raise CnnCheckError(report.usage_error)
    return _job_outcome(job, report, 0)


def run_checks_isolated(jobs: Sequence, *, timeout: float | None = None, memory_limit: int | None = None,
                        capture: bool = True, capture_limit: int = DEFAULT_CAPTURE_LIMIT,
                        on_result: Callable[[GradcheckResult], None] | None = None,
                        on_outcome: Callable[[JobOutcome], None] | None = None) -> list[GradcheckResult]:
    """Run each job in its own child process, one after another: the isolated twin of ``run_checks``.

    Parameters
    ----------
    jobs : sequence of CheckJob
    timeout, memory_limit, capture, capture_limit
        As for :func:`run_job_isolated`.
    on_result : callable(GradcheckResult), optional
        Called with each result once its job has ended, as ``run_checks``
        does, so a caller interrupted by Ctrl-C holds the results that finished.
    on_outcome : callable(JobOutcome), optional
        Called once per job with its outcome (for its captured output).

    Returns
    -------
    list of GradcheckResult
        Every result of every job, in job order.
    """
    results: list[GradcheckResult] = []
    for job in jobs:
        outcome = run_job_isolated(job, timeout=timeout, memory_limit=memory_limit,
                                   capture=capture, capture_limit=capture_limit)
        results.extend(outcome.results)
        if on_result is not None:
            for result in outcome.results:
                on_result(result)
        if on_outcome is not None:
            on_outcome(outcome)
    return results


def check_module_isolated(module: str, config, *, overrides: dict | None = None, layers: Sequence = ("all",),
                          timeout: float | None = None, memory_limit: int | None = None,
                          capture_limit: int = DEFAULT_CAPTURE_LIMIT,
                          cancel: threading.Event | None = None) -> ModuleOutcome:
    """Import a user module in a child and check every implementation it defines, as a grader does.

    Its checks share the child, one after another; when one hangs or kills
    it, that check gets ``timeout``/``crashed`` and the rest go on in a fresh
    child.  The module never runs in this process.  A layer the module does
    not define gets one ``not-implemented`` check, as ``gradcheck`` reports it.

    Parameters
    ----------
    module : str
        Path of the ``.py`` file, or a dotted module name.
    config : GradcheckConfig
    overrides : dict, optional
        Layer parameters.
    layers : sequence of str
        Layers to check (default every one).
    timeout : float, optional
        Seconds the import and each check may take.
    memory_limit : int, optional
        Bytes of address space the module's code may add (Linux).
    capture_limit : int
        Bytes kept of each of stdout and stderr, per child.
    cancel : threading.Event, optional
        When set (from another thread), the running child is killed and
        :class:`Cancelled` is raised.

    Returns
    -------
    ModuleOutcome
    """
    selection = Selection(tuple(layers) or ("all",), (), (module,), dict(overrides or {}), config, False)
    start = time.perf_counter()
    first = _Child(_Request(selection=selection, run=True, memory_limit=memory_limit, sys_path=tuple(sys.path)),
                   timeout=timeout, capture=True, capture_limit=capture_limit, source=module, cancel=cancel).run()
    if first.usage_error is not None:
        raise CnnCheckError(first.usage_error)
    output = first.output
    if first.plan is None:
        status, message = (Status.ERROR, first.load_error) if first.load_error is not None else first.failure
        return ModuleOutcome(module, status, message, (), output, time.perf_counter() - start,
                             first.memory_limited)
    plan = first.plan
    outcomes: list[JobOutcome] = []
    report, offset = first, 0
    while True:
        ran = _outcomes_in_order(report)
        if not ran and offset < len(plan):
            # The child ended between checks, where only cnncheck's own code runs:
            # charge it to the next check so that the loop always advances.
            ran = [_job_outcome(report.jobs[0], report, 0)]
        outcomes.extend(ran)
        offset += len(ran)
        if offset >= len(plan):
            break
        rest = plan[offset:]
        report = _Child(_Request(jobs=tuple(rest), memory_limit=memory_limit, sys_path=tuple(sys.path)),
                        timeout=timeout, capture=True, capture_limit=capture_limit, source=module, cancel=cancel).run()
        if report.usage_error is not None:
            raise CnnCheckError(report.usage_error)
        output = output + report.output
        if not report.loaded:
            # It imported the first time but not now: the remaining checks share the failure.
            outcomes.extend(_job_outcome(job, report, i) for i, job in enumerate(rest))
            break
    return ModuleOutcome(module, "ok", "", tuple(outcomes), output, time.perf_counter() - start,
                         first.memory_limited)


def _outcomes_in_order(report: "_Report") -> list:
    """Outcomes of a child's checks that ran: those with results, then the one it died in, if any."""
    outcomes = []
    for index, job in enumerate(report.jobs):
        if index not in report.results and index != report.started:
            break
        outcomes.append(_job_outcome(job, report, index))
        if index not in report.results:
            break
    return outcomes


def describe_output(title: str, output: CapturedOutput) -> str:
    """Captured output as text for ``--show-output``: a header per stream, then what was kept.

    Returns "" when nothing was written.
    """
    parts = []
    for name, text, total in (("stdout", output.stdout, output.stdout_bytes),
                              ("stderr", output.stderr, output.stderr_bytes)):
        if total:
            parts.append(f"--- {title}: {name} ({total} bytes) ---\n{text.rstrip()}\n")
    return "".join(parts)


# -- the child, seen from the parent ------------------------------------------------
@dataclass
class _Report:
    """Everything the parent learnt from one child."""

    jobs: tuple = ()
    plan: tuple | None = None
    loaded: bool = False
    load_error: str | None = None
    usage_error: str | None = None
    started: int = -1
    start_times: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    failure: tuple | None = None          # (status, message) when the child died or was killed
    output: CapturedOutput = CapturedOutput()
    memory_limited: bool = False
    source: str = ""


class _Capture:
    """Keeps the first and last ``limit // 2`` bytes of a stream and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.half = max(1, limit // 2)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.half - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > 2 * self.half:
                del self.tail[:-self.half]

    @property
    def omitted(self) -> int:
        """Bytes between the head and the tail that were not kept."""
        return max(0, self.total - len(self.head) - min(len(self.tail), self.half))

    def text(self) -> str:
        """The head and the tail, decoded, with a line saying how much was left out between them."""
        tail = bytes(self.tail[-self.half:]).decode("utf-8", "replace")
        head = self.head.decode("utf-8", "replace")
        if not self.omitted:
            return head + tail
        return f"{head}\n[... {self.omitted} bytes left out ...]\n{tail}"


class _Child:
    """One child process: start it, feed it its request, watch it, and read what it reports."""

    def __init__(self, request: _Request, *, timeout: float | None, capture: bool, capture_limit: int,
                 source: str = "", cancel: threading.Event | None = None) -> None:
        self.request = request
        self.cancel = cancel
        self.timeout = timeout
        self.capture = capture
        self.captures = {"stdout": _Capture(capture_limit), "stderr": _Capture(capture_limit)}
        self.report = _Report(jobs=tuple(request.jobs), source=source)
        self.deadline: float | None = None
        self.phase = "startup"
        self.finished = False
        self._finished_at = 0.0
        self._oom = False
        self._pending = b""

    # -- process handling ------------------------------------------------------
    def run(self) -> _Report:
        _require_posix()
        read_fd, write_fd = os.pipe()
        out = subprocess.PIPE if self.capture else sys.stderr.fileno()
        try:
            proc = subprocess.Popen(
                _child_command(write_fd), stdin=subprocess.PIPE, stdout=out,
                stderr=subprocess.PIPE if self.capture else sys.stderr.fileno(),
                pass_fds=(write_fd,), start_new_session=True,
            )
        except BaseException:
            os.close(read_fd)
            os.close(write_fd)
            raise
        os.close(write_fd)
        try:
            self._feed(proc)
            self._watch(proc, read_fd)
        finally:
            _kill_group(proc)
            proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
            os.close(read_fd)
        if not self.finished and self.report.failure is None:
            self.report.failure = self._death(proc.returncode)
        out, err = self.captures["stdout"], self.captures["stderr"]
        self.report.output = CapturedOutput(out.text(), err.text(), out.total, err.total,
                                            out.omitted > 0 or err.omitted > 0)
        if self.phase == "startup":
            raise IsolationError(
                "the checking child process ended before it started "
                f"({self.report.failure[1]}); its error output was:\n{self.report.output.stderr.strip()}"
            )
        return self.report

    def _feed(self, proc: subprocess.Popen) -> None:
        data = pickle.dumps(self.request, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            proc.stdin.write(data)
            proc.stdin.close()
        except BrokenPipeError:
            pass

    def _watch(self, proc: subprocess.Popen, read_fd: int) -> None:
        selector = selectors.DefaultSelector()
        streams = {read_fd: "events"}
        if self.capture:
            streams[proc.stdout.fileno()] = "stdout"
            streams[proc.stderr.fileno()] = "stderr"
        for fd in streams:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
        self.deadline = time.monotonic() + STARTUP_TIMEOUT
        exited_at = None
        try:
            while True:
                if self.cancel is not None and self.cancel.is_set():
                    raise Cancelled("cancelled")
                now = time.monotonic()
                if exited_at is None and proc.poll() is not None:
                    exited_at = now
                if exited_at is not None and (not selector.get_map() or now - exited_at > 0.2):
                    break      # exited; the pipes are drained (or held open by a leftover grandchild)
                if self.finished and exited_at is None and now > self._finished_at + EXIT_GRACE:
                    break      # reported everything but does not exit: it is killed on return
                if exited_at is None and not self.finished and self.deadline is not None and now > self.deadline:
                    self._time_out(now)
                    break
                if not selector.get_map():
                    # Every pipe is closed: the child is exiting; wait for that rather than poll.
                    try:
                        proc.wait(timeout=0.1)
                    except subprocess.TimeoutExpired:
                        pass
                    continue
                for key, _ in selector.select(timeout=0.1):
                    fd = key.fd
                    try:
                        data = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    if not data:
                        selector.unregister(fd)
                        continue
                    if streams[fd] == "events":
                        self._events(data)
                    else:
                        self.captures[streams[fd]].feed(data)
        finally:
            selector.close()

    def _time_out(self, now: float) -> None:
        if self.phase == "startup":
            raise IsolationError(f"the checking child process did not start within {STARTUP_TIMEOUT:.0f} s")
        limit = _seconds(self.timeout if self.timeout is not None else 0.0)
        if self.phase == "import":
            self.report.failure = (Status.TIMEOUT, f"still importing the module after {limit}")
        else:
            self.report.failure = (Status.TIMEOUT, f"no result after {limit}")

    def _death(self, returncode: int | None) -> tuple:
        where = " while importing the module" if self.phase == "import" else ""
        if self.report.failure is not None:
            return self.report.failure
        if self._oom:
            return Status.CRASHED, "out of memory" + where
        if returncode is None:
            return Status.CRASHED, "did not exit" + where
        if returncode < 0:
            try:
                name = signal.Signals(-returncode).name
            except ValueError:
                name = f"signal {-returncode}"
            return Status.CRASHED, f"signal {name}{where}"
        return Status.CRASHED, f"exit code {returncode}{where}"

    # -- protocol ------------------------------------------------------------------
    def _events(self, data: bytes) -> None:
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            if line.strip():
                self._event(line)

    def _arm(self) -> None:
        self.deadline = None if self.timeout is None else time.monotonic() + self.timeout

    def _event(self, line: bytes) -> None:
        try:
            event = json.loads(line)
            kind = event["event"]
        except (ValueError, KeyError, TypeError):
            self.report.failure = (Status.CRASHED, "sent unreadable results")
            return
        now = time.monotonic()
        if kind == "ready":
            self.report.memory_limited = bool(event.get("memory_limited"))
            self.phase = "import"
            self._arm()
        elif kind == "loaded":
            self.report.loaded = True
            self.phase = "between"
            if "plan" in event and self.request.selection is not None:
                selection = self.request.selection
                self.report.plan = tuple(selection.job(layer, impl) for layer, impl in event["plan"])
                self.report.jobs = self.report.plan
            self.deadline = None
        elif kind == "load-error":
            self.report.load_error = str(event.get("message", ""))
            self.phase = "between"
        elif kind == "usage-error":
            self.report.usage_error = str(event.get("message", ""))
        elif kind == "start":
            self.report.started = int(event["index"])
            self.report.start_times[self.report.started] = now
            self.phase = "check"
            self._arm()
        elif kind == "result":
            index = int(event["index"])
            self.report.results[index] = tuple(result_from_dict(d) for d in event["results"])
            self.report.seconds[index] = now - self.report.start_times.get(index, now)
            self.phase = "between"
            self.deadline = None
        elif kind == "oom":
            self._oom = True
        elif kind == "internal-error":
            raise IsolationError("cnncheck failed inside the checking child process:\n" + event.get("traceback", ""))
        elif kind == "done":
            self.finished = True
            self._finished_at = now


def _job_outcome(job, report: _Report, index: int) -> JobOutcome:
    """The outcome of ``report.jobs[index]`` as the child reported it, or as it failed."""
    if index in report.results:
        results = report.results[index]
        died = [r for r in results if r.status in (Status.TIMEOUT, Status.CRASHED)]
        status, message = (died[0].status, died[0].message) if died else ("done", "")
        return JobOutcome(job.layer, job.impl, results, status, message, report.output,
                          report.seconds.get(index, 0.0), report.memory_limited)
    if report.load_error is not None:
        status, message = Status.ERROR, report.load_error
    else:
        status, message = report.failure or (Status.CRASHED, "ended without a result")
    seconds = time.monotonic() - report.start_times[index] if index in report.start_times else 0.0
    return JobOutcome(job.layer, job.impl, _failed_results(job, status, message, seconds, report.source),
                      status, message,
                      report.output, seconds, report.memory_limited)


def _failed_results(job, status: str, message: str, seconds: float, source: str = "") -> tuple:
    """One result per gradient of ``job``'s layer, all with ``status`` and ``message``.

    The layer's spec comes from the built-in catalog (a layer an entry point
    adds gets a single ``dx`` result).  Parameters are resolved as the
    engine resolves them, so the row reads like the engine's own.
    """
    from cnncheck.catalog import SPECS
    from cnncheck.memory import input_elements

    config = job.config
    spec = {s.name: s for s in SPECS}.get(job.layer)
    params = dict(job.overrides)
    mode = config.mode
    grads = ("x",)
    if spec is not None:
        grads = spec.grads
        try:
            params = spec.resolve(job.overrides)
            mode = config.resolve_mode(input_elements(spec, params))
        except CnnCheckError:
            pass
    return tuple(GradcheckResult(job.layer, job.impl, "d" + name, status, message=message,
                                 threshold=config.threshold, params=_jsonable(params), dtype=config.dtype,
                                 mode=mode, eps=config.step, seconds=seconds, source=source)
                 for name in grads)


def result_from_dict(data: dict) -> GradcheckResult:
    """Rebuild a :class:`GradcheckResult` from its ``to_dict()`` form (extra keys are ignored)."""
    names = {f.name for f in dataclasses.fields(GradcheckResult)}
    kwargs = {k: v for k, v in data.items() if k in names}
    if kwargs.get("worst_index") is not None:
        kwargs["worst_index"] = tuple(kwargs["worst_index"])
    return GradcheckResult(**kwargs)


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _child_command(result_fd: int) -> list[str]:
    """The child's command line: this Python, without the current folder on its path (``-P``).

    The folder holding this copy of cnncheck is appended to the child's path,
    so the child finds the same cnncheck as this process (a source checkout
    too) without shadowing anything it would otherwise import; the child
    then takes this process's ``sys.path`` from its request.
    """
    flags = ["-P"] if sys.version_info >= (3, 11) else []
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    bootstrap = f"import sys; sys.path.append({here!r}); from cnncheck._child import main; main()"
    return [sys.executable, *flags, "-c", bootstrap, str(result_fd)]


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the child's process group: the child and anything the checked code started."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _require_posix() -> None:
    if os.name != "posix":
        raise CnnCheckError("isolated checks (--isolate, --timeout, grade) need a POSIX system such as Linux or macOS")
