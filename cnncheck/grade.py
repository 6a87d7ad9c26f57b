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
child; the reference results are computed once for the class.  Each result
is scored against the run's rubric (:mod:`cnncheck.rubric`).

A run writing its JSON document also appends each graded submission to a
checkpoint beside it (``grades.json.partial``), removed once the document
is written; :func:`read_previous` and :func:`resumable` read both back, so
a run started again skips the submissions already graded with the same
files, rubric, settings and cnncheck version.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

from cnncheck import rubric as rubrics
from cnncheck.errors import CnnCheckError
from cnncheck.gradcheck import GradcheckConfig, References, run_checks, single_threaded
from cnncheck.results import CheckResult
from cnncheck.session import CapturedOutput, Cancelled, Sandbox
from cnncheck.status import CHEATING, RUN_FAILURES, Status, severity

#: Verdicts of a layer, best first.
VERDICTS = ("passed", "failed", "error", "missing")

#: What became of a submission as a whole: its ``outcome``.
OUTCOMES = ("passed", "failed", "load-error", "timeout", "crashed", "internal-error",
            *(str(s) for s in CHEATING))

#: Version of the JSON document's layout.
SCHEMA_VERSION = 3

#: Suffix of the checkpoint written beside a JSON document while a class is graded.
CHECKPOINT_SUFFIX = ".partial"

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




def submission_at(path) -> Submission:
    """The submission at ``path``: a ``.py`` file, or a folder holding its ``layers.py``.

    Raises
    ------
    CnnCheckError
        ``path`` is neither.
    """
    target = Path(path)
    if target.is_file() and target.suffix == ".py":
        return Submission(target.stem, str(target), str(target))
    if target.is_dir():
        found = _folder_submission(target)
        return found or Submission(target.name, "", str(target), "no Python file in this folder")
    raise CnnCheckError(f"{path} is neither a .py file nor a folder holding a layers.py")


def fingerprint(submission: Submission) -> str:
    """A hash of the submission's files (what :func:`grade_submission` copies), names and contents."""
    digest = hashlib.sha256()
    root = Path(submission.root or submission.path)
    if not root.exists():
        return ""
    files = [root] if root.is_file() else sorted(
        p for p in root.rglob("*") if p.is_file() and not p.is_symlink()
        and not any(part in ("__pycache__", ".git") for part in p.relative_to(root).parts) and p.suffix != ".pyc")
    for file in files:
        digest.update(str(file.relative_to(root) if file != root else file.name).encode() + b"\0")
        try:
            digest.update(file.read_bytes())
        except OSError:
            digest.update(b"unreadable")
        digest.update(b"\0")
    return digest.hexdigest()[:16]


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
    impls : dict of str to str
        The implementation checked for each rubric item name it has
        (``{"conv": "layers", "conv-fast": "layers-fast"}``).
    score : ScoreSheet or None
        Its points under the run's rubric.
    fingerprint : str
        A hash of its files (:func:`fingerprint`).
    root : str
        Its file or folder, which locations are shown relative to.
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
    impls: dict = field(default_factory=dict)
    score: rubrics.ScoreSheet | None = None
    fingerprint: str = ""
    root: str = ""

    def count(self, verdict: str) -> int:
        return sum(1 for v in self.layers.values() if v == verdict)

    @property
    def passed(self) -> bool:
        return bool(self.layers) and all(v == "passed" for v in self.layers.values())

    @property
    def outcome(self) -> str:
        """What became of the submission as a whole (:data:`OUTCOMES`).

        Cheating first (``uses-reference``...), then a failure to load
        (``load-error``; ``timeout`` or ``crashed`` while importing), then a
        check that timed out, crashed or hit an internal error, then
        ``passed`` or ``failed``.
        """
        statuses = [Status(self.status)] if self.status != "ok" else []
        statuses += [Status(r.status) for r in self.results]
        cheats = [s for s in statuses if s in CHEATING]
        if cheats:
            return str(max(cheats, key=severity))
        if self.status != "ok":
            return "load-error" if self.status == str(Status.ERROR) else self.status
        for status in (Status.TIMEOUT, Status.CRASHED, Status.INTERNAL_ERROR):
            if status in statuses:
                return str(status)
        return "passed" if self.passed else "failed"

    @property
    def points(self) -> float:
        return self.score.points if self.score is not None else 0.0

    @property
    def max_points(self) -> float:
        return self.score.max_points if self.score is not None else 0.0

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
            "name": self.name, "path": self.path, "root": self.root, "fingerprint": self.fingerprint,
            "status": self.status, "outcome": self.outcome, "message": self.message,
            "passed": self.passed, "points": self.points, "max_points": self.max_points,
            "layers": dict(self.layers), "statuses": dict(self.statuses),
            "counts": {v: self.count(v) for v in VERDICTS},
            "seconds": self.seconds, "impls": dict(self.impls),
            "score": self.score.to_dict() if self.score is not None else None,
            "output": {"stdout_bytes": self.output.stdout_bytes, "stderr_bytes": self.output.stderr_bytes},
            "results": [r.to_dict() for r in self.results],
        }
        if with_output:
            data["output"].update(stdout=self.output.stdout, stderr=self.output.stderr)
        return data

    @classmethod
    def from_dict(cls, data: dict, settings: GradeSettings | None = None) -> SubmissionResult:
        """A submission read back from :meth:`to_dict`, scored again under ``settings`` when given."""
        output = data.get("output") or {}
        sub = cls(data["name"], data["path"], data["status"], data.get("message", ""), dict(data.get("layers", {})),
                  dict(data.get("statuses", {})), tuple(result_from_dict(r) for r in data.get("results", [])),
                  CapturedOutput(output.get("stdout", ""), output.get("stderr", ""),
                                 int(output.get("stdout_bytes", 0)), int(output.get("stderr_bytes", 0))),
                  float(data.get("seconds", 0.0)), dict(data.get("impls", {})), None,
                  data.get("fingerprint", ""), data.get("root", ""))
        return sub.scored(settings) if settings is not None else sub

    def scored(self, settings: GradeSettings) -> SubmissionResult:
        """This submission with its score under ``settings.rubric``."""
        failure = (self.status, self.message) if self.status != "ok" else None
        sheet = rubrics.score(settings.scoring_rubric(), self.results, impls=self.impls,
                              battery=settings.battery(), failure=failure, strict=settings.strict)
        return replace(self, score=sheet)


def result_from_dict(data: dict) -> CheckResult:
    """A :class:`CheckResult` read back from its ``to_dict()``."""
    names = CheckResult.__dataclass_fields__
    values = {k: v for k, v in data.items() if k in names}
    values["status"] = Status(values["status"])
    if values.get("worst_index") is not None:
        values["worst_index"] = tuple(values["worst_index"])
    return CheckResult(**values)


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
    rubric : Rubric or None
        Points per item, resolved against the layers; None: one point per layer.
    strict : bool
        Warnings fail (and cost points).
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
    rubric: rubrics.Rubric | None = None
    strict: bool = False

    def battery(self) -> dict:
        """``{layer: (geometry label, ...)}``: what is checked of each layer, in order."""
        from cnncheck import catalog

        labels = {}
        for name in self.layers:
            geometries = [g.label for g, _ in catalog.spec(name).battery(self.overrides or None)]
            labels[name] = tuple(geometries[:1] if self.quick else geometries)
        return labels

    def scoring_rubric(self) -> rubrics.Rubric:
        """The rubric scores are given under: ``rubric``, or one point per layer."""
        if self.rubric is not None:
            return self.rubric
        from cnncheck import catalog

        default = rubrics.default_rubric(self.layers)
        return default.resolve({s.name: s for s in catalog.specs()}, battery=self.battery())

    def key(self, version: str) -> str:
        """A hash of what decides a grade: the check settings, the rubric, cnncheck's version."""
        data = {"version": version, "config": self.config.to_dict(), "layers": list(self.layers),
                "overrides": {k: str(v) for k, v in sorted(self.overrides.items())}, "quick": self.quick,
                "timeout": self.timeout, "memory_limit": self.memory_limit, "forbid": sorted(self.forbid),
                "strict": self.strict, "rubric": self.scoring_rubric().digest}
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
    ident = dict(fingerprint=fingerprint(submission), root=submission.root or submission.path)
    if submission.problem:
        return SubmissionResult(submission.name, submission.path, str(Status.ERROR), submission.problem,
                                dict.fromkeys(layers, "error"), dict.fromkeys(layers, str(Status.ERROR)),
                                **ident).scored(settings)
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
                                    time.perf_counter() - start, **ident).scored(settings)
        pairs = loaded.registry.select(layers, [], sources=[module])
        impls = {}
        for spec, impl in pairs:
            variant = next((v for v, (forward, _) in spec.functions.items() if forward == impl.forward), None)
            if variant is not None:
                impls.setdefault(spec.name if not variant else f"{spec.name}-{variant}", impl.name)
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
                                time.perf_counter() - start, impls, **ident).scored(settings)
    except Cancelled:
        raise
    except Exception as exc:  # cnncheck's own failure on this submission: the rest of the class goes on
        message = f"internal error while grading: {type(exc).__name__}: {exc}"
        results = tuple(CheckResult(layer, submission.name, "integrity", "out", Status.INTERNAL_ERROR,
                                    message=message, source=submission.path,
                                    traceback=traceback.format_exc()) for layer in layers)
        return SubmissionResult(submission.name, submission.path, str(Status.INTERNAL_ERROR), message,
                                dict.fromkeys(layers, "error"), dict.fromkeys(layers, str(Status.INTERNAL_ERROR)),
                                results, seconds=time.perf_counter() - start, **ident).scored(settings)
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
    rubric = settings.scoring_rubric()
    return {
        "command": "grade",
        "version": version,
        "schema_version": SCHEMA_VERSION,
        "directory": str(directory),
        "passed": not interrupted and bool(graded) and all(s.passed for s in graded),
        "interrupted": interrupted,
        "seed": settings.config.seed,
        "key": settings.key(version),
        "config": settings.config.to_dict(),
        "layers": list(settings.layers),
        "quick": settings.quick,
        "overrides": {k: str(v) for k, v in settings.overrides.items()},
        "timeout": settings.timeout,
        "memory_limit": settings.memory_limit,
        "forbid_import": list(settings.forbid),
        "rubric": rubric.to_dict(),
        "max_points": rubric.max_points,
        "seconds": seconds,
        "summary": {"submissions": len(graded), "passed": sum(1 for s in graded if s.passed),
                    "outcomes": {o: n for o in OUTCOMES if (n := sum(1 for s in graded if s.outcome == o))},
                    "mean_points": round(sum(s.points for s in graded) / len(graded), rubrics.DIGITS) if graded
                    else 0.0},
        "submissions": [s.to_dict(with_output=with_output) for s in graded],
    }


def write_json(document: dict, file) -> None:
    json.dump(document, file, indent=2)
    file.write("\n")


def summary_columns(document: dict) -> list:
    """The CSV header: who, the outcome and points, the points of each item, each layer's worst status, the time."""
    items = [i["name"] for i in document["rubric"]["items"]]
    return ["submission", "path", "status", "points", "max_points", *items,
            *(f"{layer}_status" for layer in document["layers"]), "seconds", "message"]


def csv_rows(graded: Sequence[SubmissionResult], document: dict) -> list:
    """One row per submission (see :func:`summary_columns`)."""
    rows = []
    for sub in graded:
        row = {"submission": sub.name, "path": sub.path, "status": sub.outcome, "points": _num(sub.points),
               "max_points": _num(sub.max_points), "seconds": f"{sub.seconds:.2f}",
               "message": sub.message or "; ".join(sub.problems(200))}
        if sub.score is not None:
            for item in sub.score.items:
                row[item.item.name] = _num(item.points)
        for layer in document["layers"]:
            row[f"{layer}_status"] = sub.statuses.get(layer, "")
        rows.append(row)
    return rows


def _num(value: float) -> str:
    return f"{value:g}"


def write_csv(graded: Sequence[SubmissionResult], document: dict, file) -> None:
    writer = csv.DictWriter(file, fieldnames=summary_columns(document), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(csv_rows(graded, document))


def csv_text(graded: Sequence[SubmissionResult], document: dict) -> str:
    buffer = io.StringIO()
    write_csv(graded, document, buffer)
    return buffer.getvalue()


def write_results_file(path, graded: Sequence[SubmissionResult], document: dict) -> str:
    """Write ``graded`` to ``path``: CSV when it ends in ``.csv``, else the JSON document; returns the kind."""
    kind = "csv" if is_csv(path) else "json"
    with open(path, "w", encoding="utf-8", newline="" if kind == "csv" else None) as handle:
        if kind == "csv":
            write_csv(graded, document, handle)
        else:
            write_json(document, handle)
    return kind


def is_csv(path) -> bool:
    return os.fspath(path).lower().endswith(".csv")


# -- resuming --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Previous:
    """Submissions an earlier run graded, as recorded in its document and checkpoint.

    Attributes
    ----------
    seed : int or None
        The seed of the latest of them (the checkpoint's, when there is one).
    sources : tuple of (key, version, list of dict)
        Each file's settings key, cnncheck version and submissions.
    """

    seed: int | None
    sources: tuple


def checkpoint_path(output) -> str:
    return os.fspath(output) + CHECKPOINT_SUFFIX


def read_previous(output) -> Previous | None:
    """What the JSON document ``output`` and its checkpoint hold; None when neither exists.

    Raises
    ------
    CnnCheckError
        ``output`` exists but is not a ``cnncheck grade`` JSON document.
    """
    sources, seed = [], None
    if os.path.exists(output):
        try:
            with open(output, encoding="utf-8") as handle:
                document = json.load(handle)
        except (OSError, ValueError) as exc:
            raise CnnCheckError(f"cannot resume from {output}: not a JSON document ({exc})") from None
        if not isinstance(document, dict) or document.get("command") != "grade" or "key" not in document:
            raise CnnCheckError(f"cannot resume from {output}: not the JSON document of a cnncheck grade run "
                                f"(schema {SCHEMA_VERSION})")
        sources.append((document["key"], document.get("version", ""), list(document.get("submissions", []))))
        seed = document.get("seed")
    partial = checkpoint_path(output)
    if os.path.exists(partial):
        header, entries = None, []
        with open(partial, encoding="utf-8") as handle:
            for line in handle:
                try:
                    data = json.loads(line)
                except ValueError:      # the last line of a run killed while writing it
                    break
                if header is None:
                    header = data
                elif isinstance(data, dict) and "name" in data:
                    entries.append(data)
        if isinstance(header, dict) and "key" in header:
            sources.append((header["key"], header.get("version", ""), entries))
            seed = header.get("seed", seed)
    if not sources:
        return None
    return Previous(seed, tuple(sources))


def resumable(previous: Previous | None, submissions: Sequence[Submission], settings: GradeSettings,
              version: str) -> dict:
    """``{name: SubmissionResult}``: the submissions ``previous`` graded with the same files and settings key."""
    if previous is None:
        return {}
    key = settings.key(version)
    recorded: dict = {}
    for source_key, source_version, entries in previous.sources:
        if source_key != key or source_version != version:
            continue
        for entry in entries:
            recorded[entry.get("name")] = entry
    done = {}
    for submission in submissions:
        entry = recorded.get(submission.name)
        if entry is not None and entry.get("fingerprint") == fingerprint(submission):
            done[submission.name] = SubmissionResult.from_dict(entry, settings)
    return done


class Checkpoint:
    """Appends each graded submission to ``path`` as a JSON line, after a header with the run's key and seed."""

    def __init__(self, path, *, key: str, seed: int, version: str) -> None:
        self.path = os.fspath(path)
        self.handle = open(self.path, "w", encoding="utf-8")
        self._write({"command": "grade", "checkpoint": True, "key": key, "seed": seed, "version": version})

    def _write(self, data: dict) -> None:
        self.handle.write(json.dumps(data) + "\n")
        self.handle.flush()

    def add(self, result: SubmissionResult) -> None:
        self._write(result.to_dict())

    def close(self, *, remove: bool) -> None:
        self.handle.close()
        if remove:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
