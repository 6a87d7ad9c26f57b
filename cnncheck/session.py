"""Where code under test runs: in cnncheck's own process, or in a child process.

Both kinds of session answer the same requests (see :class:`cnncheck.runner.Server`)
and return the same facts, so the engines never know where the code ran:

:class:`LocalSession`
    a :class:`~cnncheck.runner.Server` in this process: cnncheck's own
    layers, and user modules with ``--no-isolate``.
:class:`ChildSession`
    a fresh interpreter running ``cnncheck/runner.py`` as a script (it never
    imports cnncheck), talking over two private pipes in the runner's binary
    format.  Its stdout and stderr are captured (a head and a tail are
    kept), it leads its own process group (a timeout kills everything it
    started), its address space can be capped, and its guard refuses
    imports of cnncheck or of forbidden modules, reads of protected paths
    and new processes.  When it dies, hangs or sends anything that is not
    a well-formed answer to the request just made, the request raises
    :class:`SessionFailure` with status ``crashed``, ``timeout`` or
    ``protocol-error``; the next request starts a fresh child and loads the
    same modules again.

Isolation needs a POSIX system (Linux, macOS).
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from cnncheck import runner
from cnncheck.errors import CnnCheckError
from cnncheck.status import Status

#: Bytes of each of a child's stdout and stderr kept (half from the start, half from the end).
DEFAULT_CAPTURE_LIMIT = 64 * 1024

#: Seconds a child may take to start (interpreter and numpy) before the run gives up.
STARTUP_TIMEOUT = 120.0

#: The folder of cnncheck's own code: its layers are the reference a submission may not use.
PACKAGE_DIR = os.path.dirname(os.path.realpath(__file__))


class SessionFailure(Exception):
    """The code under test ended the session: ``status`` is crashed, timeout or protocol-error."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Cancelled(Exception):
    """The run was cancelled (``Sandbox.cancel`` was set); the child was killed."""


class InternalError(RuntimeError):
    """cnncheck itself failed while serving a request (a bug, never the checked code's fault)."""


@dataclass(frozen=True)
class CapturedOutput:
    """What code under test wrote to stdout and stderr in a child (head and tail kept)."""

    stdout: str = ""
    stderr: str = ""
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    truncated: bool = False

    def __bool__(self) -> bool:
        return bool(self.stdout_bytes or self.stderr_bytes)

    def to_dict(self) -> dict:
        return {"stdout": self.stdout, "stderr": self.stderr, "stdout_bytes": self.stdout_bytes,
                "stderr_bytes": self.stderr_bytes, "truncated": self.truncated}


@dataclass(frozen=True)
class Sandbox:
    """How a child is confined.

    Attributes
    ----------
    timeout : float or None
        Seconds for each :meth:`ChildSession.begin` span (loading a module,
        one layer's checks); None: no limit.
    memory_limit : int or None
        Bytes the child may map on top of what it has once started (Linux).
    forbid_modules : tuple of str
        Top-level modules the code may not import (cnncheck always).
    forbid_paths : tuple of str
        Files and folders it may not open or list (cnncheck's own always).
    cwd : str or None
        Working folder of the child.
    uid, gid : int or None
        Identity to drop to when cnncheck runs as root.
    env : dict
        Extra environment variables (thread pools).
    capture : bool
        Capture stdout and stderr (else they go to this process's stderr).
    capture_limit : int
    cancel : threading.Event, optional
        When set, the child is killed and the waiting request raises :class:`Cancelled`.
    """

    timeout: float | None = None
    memory_limit: int | None = None
    forbid_modules: tuple = ()
    forbid_paths: tuple = ()
    cwd: str | None = None
    uid: int | None = None
    gid: int | None = None
    env: dict = field(default_factory=dict)
    capture: bool = True
    capture_limit: int = DEFAULT_CAPTURE_LIMIT
    cancel: object = None


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
        return max(0, self.total - len(self.head) - min(len(self.tail), self.half))

    def text(self) -> str:
        tail = bytes(self.tail[-self.half:]).decode("utf-8", "replace")
        head = self.head.decode("utf-8", "replace")
        if not self.omitted:
            return head + tail
        return f"{head}\n[... {self.omitted} bytes left out ...]\n{tail}"


class LocalSession:
    """Code under test in this process: a :class:`~cnncheck.runner.Server` called directly.

    Parameters
    ----------
    functions : dict of str to callable, optional
        Functions callable by name.
    """

    isolated = False

    def __init__(self, functions: dict | None = None) -> None:
        self.server = runner.Server(functions, reference_dirs=(PACKAGE_DIR,), quiet=True)
        self.output = CapturedOutput()
        self.memory_limited = False

    def begin(self) -> None:
        """Start a span of work; in this process nothing is timed out."""

    def request(self, request: dict) -> dict:
        return self.server.handle(request)

    def close(self) -> None:
        self.server.objects.clear()


class ChildSession:
    """Code under test in a child process; see the module docstring.

    Parameters
    ----------
    sandbox : Sandbox
    """

    isolated = True

    def __init__(self, sandbox: Sandbox | None = None) -> None:
        _require_posix()
        self.sandbox = sandbox or Sandbox()
        self.proc: subprocess.Popen | None = None
        self.loads: list = []
        self.deadline: float | None = None
        self.seq = 0
        self.captures = {"stdout": _Capture(self.sandbox.capture_limit),
                         "stderr": _Capture(self.sandbox.capture_limit)}
        self.memory_limited = False
        self.uid = None
        self.starts = 0

    # -- the public side --------------------------------------------------------------------
    @property
    def output(self) -> CapturedOutput:
        out, err = self.captures["stdout"], self.captures["stderr"]
        return CapturedOutput(out.text(), err.text(), out.total, err.total, out.omitted > 0 or err.omitted > 0)

    def begin(self) -> None:
        """Start a span of work: the next requests share ``sandbox.timeout`` seconds."""
        timeout = self.sandbox.timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def request(self, request: dict) -> dict:
        """Send one request and return the child's answer (facts, untrusted).

        Raises
        ------
        SessionFailure
            The child died, ran past the deadline or answered out of protocol;
            it is gone, and the next request starts a fresh one.
        InternalError
            cnncheck's own code failed in the child.
        """
        if self.proc is None:
            self._start()
        if request.get("op") == "load":
            self.loads.append(request)
        return self._ask(request)

    def close(self) -> None:
        if self.proc is not None:
            self._stop()

    # -- the child ----------------------------------------------------------------------------
    def _command(self, request_fd: int, response_fd: int) -> list:
        bootstrap = ("import sys; del sys.path[0]; import runpy; "
                     f"runpy.run_path({runner.__file__!r}, run_name='__main__')")
        return [sys.executable, "-s", "-c", bootstrap, str(request_fd), str(response_fd)]

    def _start(self) -> None:
        request_read, request_write = os.pipe()
        response_read, response_write = os.pipe()
        capture = self.sandbox.capture
        env = dict(os.environ)
        env.update(self.sandbox.env)
        env.pop("PYTHONSTARTUP", None)
        env["PYTHONHASHSEED"] = env.get("PYTHONHASHSEED", "0")
        try:
            self.proc = subprocess.Popen(
                self._command(request_read, response_write), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if capture else sys.stderr.fileno(),
                stderr=subprocess.PIPE if capture else sys.stderr.fileno(),
                pass_fds=(request_read, response_write), start_new_session=True, env=env,
                cwd=self.sandbox.cwd or None)
        finally:
            os.close(request_read)
            os.close(response_write)
        self.starts += 1
        self.request_fd = request_write
        self.response_fd = response_read
        self.reader = runner.FrameReader()
        self.selector = selectors.DefaultSelector()
        os.set_blocking(self.response_fd, False)
        self.selector.register(self.response_fd, selectors.EVENT_READ, "response")
        if capture:
            for name in ("stdout", "stderr"):
                stream = getattr(self.proc, name)
                os.set_blocking(stream.fileno(), False)
                self.selector.register(stream.fileno(), selectors.EVENT_READ, name)
        sandbox = self.sandbox
        setup = {"op": "setup", "sys_path": [p for p in sys.path if os.path.realpath(p or ".") != PACKAGE_DIR],
                 "cwd": sandbox.cwd, "memory_limit": sandbox.memory_limit, "uid": sandbox.uid, "gid": sandbox.gid,
                 "forbid_modules": ["cnncheck", *sandbox.forbid_modules],
                 "forbid_paths": list(sandbox.forbid_paths), "spawn": False,
                 "reference_dirs": [PACKAGE_DIR]}
        saved = self.deadline
        self.deadline = time.monotonic() + STARTUP_TIMEOUT
        try:
            ready = self._exchange(setup, startup=True)
        finally:
            self.deadline = saved
        self.memory_limited = bool(ready.get("memory_limited"))
        self.uid = ready.get("uid")
        for load in self.loads:           # importing the module again has a span of its own
            saved = self.deadline
            self.begin()
            try:
                self._ask(load)
            finally:
                self.deadline = saved

    def _stop(self) -> None:
        proc, self.proc = self.proc, None
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._drain(0.05)
        proc.wait()
        self.selector.close()
        for fd in (self.request_fd, self.response_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    def _ask(self, request: dict) -> dict:
        answer = self._exchange(request)
        if answer.get("internal"):
            self._stop()
            raise InternalError("cnncheck failed inside the checking child process:\n" + str(answer["internal"]))
        if answer.get("oom"):
            self._stop()
            raise SessionFailure(Status.CRASHED, "out of memory")
        body = answer.get("ok")
        if not isinstance(body, dict):
            self._fail(Status.PROTOCOL_ERROR, "sent an answer that is not a response")
        return body

    def _fail(self, status: str, message: str):
        proc = self.proc
        self._stop()
        self.deadline = None          # the span ends with its failure
        if status == Status.CRASHED:
            message = _death(proc.returncode)
        raise SessionFailure(status, message)

    def _exchange(self, request: dict, startup: bool = False) -> dict:
        self.seq += 1
        seq = self.seq
        data = runner.frame(seq, request)
        try:
            runner._write_all(self.request_fd, data)
        except (BrokenPipeError, OSError):
            self._wait_exit()
            self._fail(Status.CRASHED, "")
        while True:
            frames = self._read(startup)
            if frames is None:
                continue
            if len(frames) != 1 or frames[0][0] != seq:
                self._fail(Status.PROTOCOL_ERROR, "sent a message out of order (not the answer to the request "
                                                  "just made)")
            try:
                answer = runner.decode(frames[0][1])
            except runner.WireError as exc:
                self._fail(Status.PROTOCOL_ERROR, f"sent a malformed message ({exc})")
            if not isinstance(answer, dict):
                self._fail(Status.PROTOCOL_ERROR, "sent a message that is not a response")
            return answer

    def _read(self, startup: bool):
        """Wait for the next frames on the response pipe, capturing output meanwhile; None: keep waiting."""
        now = time.monotonic()
        cancel = self.sandbox.cancel
        if cancel is not None and cancel.is_set():
            self._stop()
            raise Cancelled("cancelled")
        if self.deadline is not None and now > self.deadline:
            if startup:
                self._stop()
                raise CnnCheckError(f"the checking child process did not start within {STARTUP_TIMEOUT:.0f} s")
            self._fail(Status.TIMEOUT, f"no answer within {_seconds(self.sandbox.timeout)}")
        wait = 0.5 if self.deadline is None else max(0.0, min(0.5, self.deadline - now))
        for key, _ in self.selector.select(timeout=wait):
            try:
                chunk = os.read(key.fd, 1 << 20)
            except BlockingIOError:
                continue
            if key.data != "response":
                if chunk:
                    self.captures[key.data].feed(chunk)
                else:
                    self.selector.unregister(key.fd)
                continue
            if not chunk:
                self._wait_exit()
                if self.reader.buffer:
                    self._fail(Status.PROTOCOL_ERROR, "sent a malformed message (a partial frame) and exited")
                if startup:
                    err = self.captures["stderr"].text().strip()
                    proc = self.proc
                    self._stop()
                    raise InternalError(f"the checking child process ended before it started "
                                        f"({_death(proc.returncode)}); its error output was:\n{err}")
                self._fail(Status.CRASHED, "")
            try:
                frames = self.reader.feed(chunk)
            except runner.WireError as exc:
                self._fail(Status.PROTOCOL_ERROR, f"sent a malformed message ({exc})")
            if frames:
                if self.reader.buffer:
                    self._fail(Status.PROTOCOL_ERROR, "sent more than the answer to the request just made")
                return frames
        if self.proc.poll() is not None and not self._open_response():
            self._fail(Status.CRASHED, "")
        return None

    def _open_response(self) -> bool:
        return any(key.data == "response" for key in self.selector.get_map().values())

    def _wait_exit(self) -> None:
        try:
            self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass

    def _drain(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and any(k.data != "response" for k in self.selector.get_map().values()):
            for key, _ in self.selector.select(timeout=0.01):
                if key.data == "response":
                    self.selector.unregister(key.fd)
                    continue
                try:
                    chunk = os.read(key.fd, 1 << 20)
                except (BlockingIOError, OSError):
                    continue
                if chunk:
                    self.captures[key.data].feed(chunk)
                else:
                    self.selector.unregister(key.fd)


def _death(returncode) -> str:
    if returncode is None:
        return "did not exit"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}" if name == "SIGKILL" else f"signal {name}"
    return f"exit code {returncode}"


def _seconds(value) -> str:
    return f"{value:g} s"


def _require_posix() -> None:
    if os.name != "posix":
        raise CnnCheckError("isolated checks (--isolate, --timeout, grade) need a POSIX system such as Linux or macOS")
