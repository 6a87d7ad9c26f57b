"""The child side of :mod:`cnncheck.isolate`: :func:`main` runs in a fresh interpreter.

Started as ``python -P -c "...; from cnncheck._child import main; main()" RESULT_FD``
(``python -m cnncheck._child RESULT_FD`` works the same).

Reads a pickled request from stdin, writes one JSON line per event to the
file descriptor ``RESULT_FD``, and leaves its stdout and stderr to the code
under test (the parent captures them).  Events, in order::

    {"event": "ready", "memory_limited": bool}        numpy and cnncheck loaded, limits set
    {"event": "loaded", "plan": [[layer, impl], ...]} user modules imported ("plan" for a selection)
    {"event": "load-error", "message": str}           a user module did not import
    {"event": "start", "index": i}                    check i begins
    {"event": "result", "index": i, "results": [...]} check i ended; GradcheckResult.to_dict() each
    {"event": "oom"}                                  a MemoryError ended the child (then it exits)
    {"event": "usage-error", "message": str}          the request itself is invalid
    {"event": "internal-error", "traceback": str}     cnncheck failed (a bug, reported in the parent)
    {"event": "done"}

The child exits with ``os._exit`` right after ``done``, so threads or
``atexit`` handlers the checked code left behind cannot keep it alive.
"""

from __future__ import annotations

import builtins
import faulthandler
import json
import os
import pickle
import sys
import traceback

#: Written when memory is exhausted; built up front because building it then may fail.
_OOM_LINE = b'{"event": "oom"}\n'


class _Channel:
    """Writes events as JSON lines to the parent's results pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, event: str, **fields) -> None:
        line = json.dumps({"event": event, **fields}).encode("utf-8") + b"\n"
        view = memoryview(line)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]

    def oom(self) -> None:
        os.write(self.fd, _OOM_LINE)


def _memory_limit(extra: int | None) -> bool:
    """Cap the address space at what is mapped now plus ``extra`` bytes; True when in force.

    Needs ``/proc/self/status`` to know what is mapped now (Linux); elsewhere
    the limit is not set, rather than set below what the child already uses.
    """
    if extra is None:
        return False
    try:
        import resource
    except ImportError:
        return False
    current = _mapped_bytes()
    if current is None:
        return False
    target = current + extra
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            target = min(target, hard)
        resource.setrlimit(resource.RLIMIT_AS, (target, target))
    except (ValueError, OSError):
        return False
    return True


def _mapped_bytes() -> int | None:
    """This process's virtual memory size (``VmSize``), or None where /proc is absent."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _no_core_dumps() -> None:
    """A crashing check should not leave a core file in the current folder."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass


def _is_memory_error(exc: BaseException | None) -> bool:
    """True when ``exc`` or an exception it was raised from or during is a MemoryError."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, MemoryError):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _out_of_memory_results(results):
    """Results whose check raised MemoryError, turned into ``crashed: out of memory``."""
    import dataclasses

    from cnncheck.results import Status

    fixed = []
    for result in results:
        if result.status == Status.ERROR and _traceback_says_memory_error(result.traceback, result.message):
            note = f"out of memory ({result.message})" if result.message else "out of memory"
            result = dataclasses.replace(result, status=Status.CRASHED, message=note)
        fixed.append(result)
    return fixed


def _traceback_says_memory_error(tb: str, message: str) -> bool:
    """True when the exception a traceback ends with is a MemoryError (or numpy's subclass)."""
    lines = [line for line in (tb or "").strip().splitlines() if line and not line.startswith(" ")]
    last = lines[-1] if lines else (message or "")
    name = last.split(":", 1)[0].strip()
    return name.rsplit(".", 1)[-1].endswith("MemoryError")


def main(argv=None) -> None:
    """Serve one request: ``argv[1]`` is the results pipe's file descriptor, the request is on stdin."""
    argv = sys.argv if argv is None else argv
    channel = _Channel(int(argv[1]))
    request = pickle.loads(sys.stdin.buffer.read())
    sys.path[:] = list(request.sys_path) or sys.path
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    _no_core_dumps()
    faulthandler.enable(file=sys.stderr)
    try:
        _serve(request, channel)
    except MemoryError:
        channel.oom()
        os._exit(1)
    except Exception:  # a bug in cnncheck itself: shown whole in the parent
        channel.send("internal-error", traceback=traceback.format_exc())
        os._exit(1)
    _flush()
    os._exit(0)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def _exit_now(code=None) -> None:
    """``sys.exit`` (and ``exit``, ``quit``) for the checked code: end the child at once, as a script would.

    The engine turns a ``SystemExit`` raised by an implementation into an
    ``error`` result so that an in-process run goes on; in a child the
    process itself can end, so the parent reports ``crashed: exit code N``.
    """
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = int(code) & 0xFF
    else:
        sys.stderr.write(f"{code}\n")
        status = 1
    _flush()
    os._exit(status)


def _serve(request, channel: _Channel) -> None:
    from cnncheck import gradcheck, plugins
    from cnncheck.errors import CnnCheckError, ModuleLoadError

    memory_limited = _memory_limit(request.memory_limit)
    channel.send("ready", memory_limited=memory_limited)
    sys.exit = builtins.exit = builtins.quit = _exit_now

    selection = request.selection
    if selection is not None:
        modules, entry_points = tuple(selection.modules), selection.entry_points
    else:
        modules = _job_modules(request.jobs)
        entry_points = any(job.entry_points for job in request.jobs)
    try:
        registry = plugins.build_registry(modules, entry_points=entry_points)
    except ModuleLoadError as exc:
        if _is_memory_error(exc):
            channel.oom()
            os._exit(1)
        channel.send("load-error", message=str(exc))
        channel.send("done")
        return

    if selection is None:
        jobs = list(request.jobs)
        channel.send("loaded")
    else:
        try:
            items = gradcheck.select_checks(registry, list(selection.layers) or ["all"], list(selection.impls),
                                            list(selection.modules), dict(selection.overrides))
        except CnnCheckError as exc:
            channel.send("usage-error", message=str(exc))
            channel.send("done")
            return
        jobs = [selection.job(spec.name, impl.name) for spec, impl, _ in items]
        channel.send("loaded", plan=[[job.layer, job.impl] for job in jobs])
        if not request.run:
            channel.send("done")
            return

    for index, job in enumerate(jobs):
        channel.send("start", index=index)
        _flush()
        try:
            spec = registry.layer(job.layer)
            impl = registry.impl(job.layer, job.impl)
            params = spec.resolve(job.overrides)
        except CnnCheckError as exc:
            channel.send("usage-error", message=str(exc))
            break
        results = _out_of_memory_results(gradcheck.check(spec, impl, params, job.config))
        _flush()
        channel.send("result", index=index, results=[r.to_dict() for r in results])
    channel.send("done")


def _job_modules(jobs) -> tuple:
    """Every module the jobs name, once each, in order."""
    seen: dict = {}
    for job in jobs:
        seen.update(dict.fromkeys(job.modules))
    return tuple(seen)


if __name__ == "__main__":
    main()
