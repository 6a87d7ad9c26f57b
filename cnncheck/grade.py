"""Grading a class: every submission in a folder, each in a sandboxed child process.

A *submission* is a ``*.py`` file directly in the folder, or a subfolder
holding a ``layers.py`` (directly, or a single one deeper down, as in the
course's ``cnn/layers.py``).  Each one is graded by the same battery as
``cnncheck gradcheck``, through the same boundary, in a child process that:

* works in a temporary copy of its submission (its folder, or its file);
  when cnncheck runs as root the copy belongs to an unprivileged user of
  its own, which the child becomes before loading anything;
* can import neither cnncheck (whose layers are the reference solution) nor
  the modules the instructor forbids, and can read neither cnncheck's
  files, nor the class folder, nor the grades file, nor start processes;
* only runs forward and backward passes at inputs the grading process
  chooses, from a seed drawn afresh for every run unless one is given;
  every verdict is computed in the grading process from the raw arrays.

Submissions run ``jobs`` at a time on worker threads, each driving its own
child; the reference results are computed once for the class.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

from cnncheck.errors import CnnCheckError
from cnncheck.gradcheck import GradcheckConfig, References, run_checks, single_threaded
from cnncheck.results import CheckResult
from cnncheck.session import CapturedOutput, Cancelled, Sandbox
from cnncheck.status import RUN_FAILURES, Status, severity

#: Verdicts of a layer, best first.
VERDICTS = ("passed", "failed", "error", "missing")

#: First uid/gid given to a child when cnncheck runs as root (one per worker).
SANDBOX_UID = 61000


@dataclass(frozen=True)
class Submission:
    """One student's code.

    Attributes
    ----------
    name : str
        The file's stem or the folder's name.
    path : str
        The module file to import ("" when the folder has none).
    root : str
        What is copied for the child: the submission's folder, or its file.
    problem : str
        Why it cannot be graded (no ``layers.py``, several), else "".
    """

    name: str
    path: str
    root: str = ""
    problem: str = ""


def discover_submissions(directory) -> list:
    """Every submission in ``directory``, sorted by name.

    Raises
    ------
    CnnCheckError
        ``directory`` is not a folder, or holds no submission.
    """
    root = Path(directory)
    if not root.is_dir():
        raise CnnCheckError(f"{directory} is not a folder")
    found: list = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.name.startswith((".", "_")):
            continue
        if entry.is_file() and entry.suffix == ".py" and entry.name not in ("conftest.py", "setup.py"):
            found.append(Submission(entry.stem, str(entry), str(entry)))
        elif entry.is_dir():
            submission = _folder_submission(entry)
            if submission is not None:
                found.append(submission)
    if not found:
        raise CnnCheckError(f"no submissions in {directory}: expected *.py files or folders with a layers.py")
    return _unique_names(found, root)


def _folder_submission(folder: Path):
    direct = folder / "layers.py"
    if direct.is_file():
        return Submission(folder.name, str(direct), str(folder))
    deeper = sorted(p for p in folder.rglob("layers.py")
                    if not any(part.startswith((".", "__pycache__")) for part in p.relative_to(folder).parts))
    if len(deeper) == 1:
        return Submission(folder.name, str(deeper[0]), str(folder))
    if len(deeper) > 1:
        names = ", ".join(str(p.relative_to(folder)) for p in deeper)
        return Submission(folder.name, "", str(folder), f"several layers.py files ({names}); keep one")
    if any(folder.rglob("*.py")):
        return Submission(folder.name, "", str(folder), "no layers.py in this folder")
    return None


def _unique_names(found: list, root: Path) -> list:
    counts: dict = {}
    for sub in found:
        counts[sub.name] = counts.get(sub.name, 0) + 1
    out = []
    for sub in found:
        if counts[sub.name] > 1:
            where = Path(sub.path).relative_to(root) if sub.path else Path(sub.name)
            sub = replace(sub, name=str(where))
        out.append(sub)
    return sorted(out, key=lambda s: s.name)


def layer_verdict(results: Sequence) -> str:
    """``passed``, ``failed``, ``error`` or ``missing`` for one layer's results (worst wins)."""
    failing = [r for r in results if r.fails()]
    if not results:
        return "missing"
    if not failing:
        return "passed"
    worst = max(failing, key=lambda r: severity(r.status))
    if worst.status in RUN_FAILURES:
        return "error"
    if worst.status == Status.NOT_IMPLEMENTED:
        return "missing"
    return "failed"


@dataclass(frozen=True)
class SubmissionResult:
    """How one submission did.

    Attributes
    ----------
    name, path : str
    status : str
        ``ok`` when it loaded, else the status of its failure to (``error``,
        ``timeout``, ``crashed``, ``uses-reference``...).
    message : str
        Why it did not load, else "".
    layers : dict of str to str
        Verdict per layer (:data:`VERDICTS`).
    statuses : dict of str to str
        The worst status per layer (``uses-reference`` where the verdict says ``failed``).
    results : tuple of CheckResult
    output : CapturedOutput
        What its code wrote, cut to a bounded size.
    seconds : float
        Wall time of the whole submission.
    """

    name: str
    path: str
    status: str
    message: str = ""
    layers: dict = field(default_factory=dict)
    statuses: dict = field(default_factory=dict)
    results: tuple = ()
    output: CapturedOutput = CapturedOutput()
    seconds: float = 0.0

    def count(self, verdict: str) -> int:
        return sum(1 for v in self.layers.values() if v == verdict)

    @property
    def passed(self) -> bool:
        return bool(self.layers) and all(v == "passed" for v in self.layers.values())

    def first_failures(self) -> dict:
        """``{layer: CheckResult}``: the first failing result of each layer that did not pass."""
        found: dict = {}
        for result in self.results:
            if result.fails() and result.layer not in found:
                found[result.layer] = result
        return found

    def worst_failures(self) -> dict:
        """``{layer: CheckResult}``: the worst failing result of each layer (the first among equals)."""
        found: dict = {}
        for result in self.results:
            if result.fails() and (result.layer not in found
                                   or severity(result.status) > severity(found[result.layer].status)):
                found[result.layer] = result
        return found

    def problems(self, width: int = 90) -> list:
        """One short line per layer that did not pass: ``conv: dw fail (gradient at pad0)``."""
        if self.status != "ok":
            return [_clip(f"load: {self.status} ({self.message})", width)]
        lines = []
        for layer, result in self.worst_failures().items():
            name = result.finding or result.kind
            at = f" at {result.geometry}" if result.geometry else ""
            lines.append(_clip(f"{layer}: {result.subject} {result.status} ({name}{at}: {result.message})", width))
        return lines

    def to_dict(self, *, with_output: bool = False) -> dict:
        data = {
            "name": self.name, "path": self.path, "status": self.status, "message": self.message,
            "passed": self.passed, "layers": dict(self.layers), "statuses": dict(self.statuses),
            "counts": {v: self.count(v) for v in VERDICTS},
            "seconds": self.seconds,
            "output": {"stdout_bytes": self.output.stdout_bytes, "stderr_bytes": self.output.stderr_bytes},
            "results": [r.to_dict() for r in self.results],
        }
        if with_output:
            data["output"].update(stdout=self.output.stdout, stderr=self.output.stderr)
        return data


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 3] + "..."


@dataclass(frozen=True)
class GradeSettings:
    """How a class is graded.

    Attributes
    ----------
    config : GradcheckConfig
        Its seed is the run's (drawn afresh unless given).
    layers : tuple of str
        Layer names (no ``all``).
    overrides : dict
        Layer parameters (one geometry instead of the battery).
    quick : bool
    timeout, memory_limit : float or None, int or None
    forbid : tuple of str
        Modules submissions may not import.
    protect : tuple of str
        Paths submissions may not read (the class folder, the output files).
    drop_privileges : bool
        When root, run each child as an unprivileged user of its own.
    env : dict
        Environment for the children (thread pools sized for ``jobs``).
    capture_limit : int
    """

    config: GradcheckConfig
    layers: tuple
    overrides: dict = field(default_factory=dict)
    quick: bool = False
    timeout: float | None = 30.0
    memory_limit: int | None = 2 << 30
    forbid: tuple = ()
    protect: tuple = ()
    drop_privileges: bool = True
    env: dict = field(default_factory=dict)
    capture_limit: int = 64 * 1024


def _copy(submission: Submission, into: str) -> str:
    """Copy the submission into ``into``; return the module path inside the copy."""
    root = Path(submission.root or submission.path)
    if root.is_file():
        target = Path(into) / root.name
        shutil.copy2(root, target)
        return str(target)
    target = Path(into) / root.name
    shutil.copytree(root, target, ignore=shutil.ignore_patterns("__pycache__", ".git", "*.pyc"), symlinks=True)
    return str(target / Path(submission.path).relative_to(root))


def _hand_over(folder: str, uid: int) -> None:
    """Give a folder (recursively) to ``uid``; only its owner may enter it."""
    os.chown(folder, uid, uid)
    os.chmod(folder, 0o700)
    for base, dirs, files in os.walk(folder):
        for name in dirs + files:
            try:
                os.chown(os.path.join(base, name), uid, uid, follow_symlinks=False)
            except OSError:
                pass


def can_drop_privileges() -> tuple:
    """``(True, "")`` when children can run as an unprivileged user, else ``(False, why)``.

    That needs root, and a Python, numpy and cnncheck that other users may
    read: every folder above them searchable by all, as under ``/usr`` or
    ``/opt`` (not under a home folder only its owner can enter).
    """
    if not hasattr(os, "getuid") or os.getuid() != 0:
        return False, "cnncheck is not running as root"
    import sysconfig

    import numpy

    from cnncheck import runner

    needed = [os.path.realpath(sys.executable), sysconfig.get_paths()["stdlib"],
              os.path.dirname(os.path.realpath(numpy.__file__)), os.path.realpath(runner.__file__)]
    for path in needed:
        current = path
        while True:
            try:
                mode = os.stat(current).st_mode
            except OSError:
                return False, f"cannot inspect {current}"
            if os.path.isdir(current) and not mode & 0o001:
                return False, f"other users cannot enter {current}, where Python or cnncheck is installed"
            if os.path.isfile(current) and not mode & 0o004:
                return False, f"other users cannot read {current}"
            parent = os.path.dirname(current)
            if parent == current:
                break
            current = parent
    return True, ""


def grade_submission(submission: Submission, settings: GradeSettings, references: References | None = None, *,
                     slot: int = 0, cancel: threading.Event | None = None) -> SubmissionResult:
    """Grade one submission in a sandboxed child; see the module docstring.

    ``slot`` (the worker's number) picks the unprivileged user when root.
    """
    from cnncheck import loading

    start = time.perf_counter()
    layers = list(settings.layers)
    if submission.problem:
        return SubmissionResult(submission.name, submission.path, str(Status.ERROR), submission.problem,
                                dict.fromkeys(layers, "error"), dict.fromkeys(layers, str(Status.ERROR)))
    workdir = tempfile.mkdtemp(prefix="cnncheck-grade-")
    loaded = None
    try:
        module = _copy(submission, workdir)
        uid = None
        if settings.drop_privileges and can_drop_privileges()[0]:
            uid = SANDBOX_UID + slot
            _hand_over(workdir, uid)
        protect = tuple(settings.protect)
        sandbox = Sandbox(timeout=settings.timeout, memory_limit=settings.memory_limit, forbid_modules=settings.forbid,
                          forbid_paths=protect, cwd=os.path.dirname(module), uid=uid, gid=uid, env=settings.env,
                          capture_limit=settings.capture_limit, cancel=cancel)
        loaded = loading.load([module], entry_points=False, isolate=True, sandbox=sandbox)
        if references is None:
            references = References(loaded.registry, loaded.local)
        output = lambda: loaded.sessions[module].output  # noqa: E731
        if loaded.failures:
            failure = loaded.failures[0]
            message = failure.message.replace(f"--module {module}", submission.name).replace(module, submission.path)
            results = tuple(CheckResult(layer, submission.name, "integrity", "out", failure.status, message=message,
                                        source=submission.path) for layer in layers)
            return SubmissionResult(submission.name, submission.path, str(failure.status), message,
                                    dict.fromkeys(layers, layer_verdict(results[:1])),
                                    dict.fromkeys(layers, str(failure.status)), results, output(),
                                    time.perf_counter() - start)
        pairs = loaded.registry.select(layers, [], sources=[module])
        results = run_checks(loaded, pairs, overrides=settings.overrides or None, config=settings.config,
                             quick=settings.quick, references=references, limit_threads=False)
        results = tuple(replace(r, source=submission.path, location=_original(r.location, module, submission),
                                message=r.message.replace(workdir, "")) for r in results)
        verdicts, statuses = {}, {}
        for layer in layers:
            mine = [r for r in results if r.layer == layer]
            verdicts[layer] = layer_verdict(mine)
            failing = [r for r in mine if r.fails()]
            statuses[layer] = str(max(failing, key=lambda r: severity(r.status)).status) if failing \
                else str(Status.PASS)
        return SubmissionResult(submission.name, submission.path, "ok", "", verdicts, statuses, results, output(),
                                time.perf_counter() - start)
    finally:
        if loaded is not None:
            loaded.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _original(location: str, module: str, submission: Submission) -> str:
    """A location in the copy, as a location in the submission itself."""
    if not location:
        return location
    copy_root = os.path.dirname(module) if Path(submission.root or submission.path).is_file() else None
    root = Path(submission.root or submission.path)
    if copy_root is None:
        copy_root = str(Path(module).parents[len(Path(submission.path).relative_to(root).parts) - 1])
    original_root = str(root if root.is_dir() else root.parent)
    return location.replace(copy_root, original_root, 1)


def grade_all(submissions: Sequence[Submission], settings: GradeSettings, *, jobs: int = 1,
              on_graded: Callable | None = None) -> list:
    """Grade every submission, ``jobs`` at a time; results in the order of ``submissions``.

    Raises
    ------
    KeyboardInterrupt
        When interrupted; running children are killed first.  The results
        finished by then were passed to ``on_graded``.
    """
    from cnncheck import loading
    from cnncheck.session import LocalSession

    if jobs < 1:
        raise CnnCheckError(f"--jobs must be at least 1, got {jobs}")
    registry = loading.builtin_registry()
    functions = {k: v for layer in registry.layer_names() for impl in registry.impls(layer)
                 for k, v in impl.functions.items()}
    references = References(registry, LocalSession(functions))
    lock = threading.Lock()
    cancel = threading.Event()
    slots = list(range(jobs))

    def one(submission: Submission) -> SubmissionResult:
        with lock:
            slot = slots.pop(0)
        try:
            result = grade_submission(submission, settings, references, slot=slot, cancel=cancel)
        finally:
            with lock:
                slots.append(slot)
        if on_graded is not None:
            with lock:
                on_graded(result)
        return result

    with single_threaded():
        if jobs == 1 or len(submissions) <= 1:
            try:
                return [one(s) for s in submissions]
            except Cancelled:
                raise KeyboardInterrupt from None
        pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="cnncheck-grade")
        futures = [pool.submit(one, s) for s in submissions]
        try:
            results = [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            cancel.set()
            pool.shutdown(wait=True)
            raise
        pool.shutdown(wait=True)
    return results


# -- documents ---------------------------------------------------------------------------------
def to_document(graded: Sequence[SubmissionResult], *, directory: str, settings: GradeSettings, version: str = "",
                interrupted: bool = False, with_output: bool = False, seconds: float = 0.0) -> dict:
    """The JSON document of a grading run (``seed`` reproduces it with ``--seed``)."""
    return {
        "command": "grade",
        "version": version,
        "schema_version": 2,
        "directory": str(directory),
        "passed": not interrupted and bool(graded) and all(s.passed for s in graded),
        "interrupted": interrupted,
        "seed": settings.config.seed,
        "config": settings.config.to_dict(),
        "layers": list(settings.layers),
        "timeout": settings.timeout,
        "memory_limit": settings.memory_limit,
        "forbid_import": list(settings.forbid),
        "seconds": seconds,
        "summary": {"submissions": len(graded), "passed": sum(1 for s in graded if s.passed)},
        "submissions": [s.to_dict(with_output=with_output) for s in graded],
    }


def write_json(document: dict, file) -> None:
    json.dump(document, file, indent=2)
    file.write("\n")


def summary_columns(layers: Sequence[str]) -> list:
    return ["submission", "path", "status", *layers, "passed", "seconds", "message"]


def csv_rows(graded: Sequence[SubmissionResult], layers: Sequence[str]) -> list:
    """One row per submission: its status, the worst status per layer, whether it passed, the time."""
    rows = []
    for sub in graded:
        row = {"submission": sub.name, "path": sub.path, "status": sub.status, "passed": sub.passed,
               "seconds": f"{sub.seconds:.2f}", "message": sub.message or "; ".join(sub.problems(200))}
        for layer in layers:
            row[layer] = sub.statuses.get(layer, "")
        rows.append(row)
    return rows


def write_csv(graded: Sequence[SubmissionResult], layers: Sequence[str], file) -> None:
    writer = csv.DictWriter(file, fieldnames=summary_columns(layers))
    writer.writeheader()
    writer.writerows(csv_rows(graded, layers))


def csv_text(graded: Sequence[SubmissionResult], layers: Sequence[str]) -> str:
    buffer = io.StringIO()
    write_csv(graded, layers, buffer)
    return buffer.getvalue()


def write_results_file(path, graded: Sequence[SubmissionResult], document: dict) -> str:
    """Write ``graded`` to ``path``: CSV when it ends in ``.csv``, else the JSON document; returns the kind."""
    kind = "csv" if os.fspath(path).lower().endswith(".csv") else "json"
    with open(path, "w", encoding="utf-8", newline="" if kind == "csv" else None) as handle:
        if kind == "csv":
            write_csv(graded, document["layers"], handle)
        else:
            write_json(document, handle)
    return kind
