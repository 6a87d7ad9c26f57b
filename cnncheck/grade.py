"""Batch grading: check every submission in a folder, each in child processes of its own.

A *submission* is a ``*.py`` file directly in the folder, or a subfolder
holding a ``layers.py`` (directly, or a single one deeper down, as in the
course's ``cnn/layers.py``).  Each is imported and checked with
:func:`cnncheck.isolate.check_module_isolated`, so a submission that hangs,
exhausts memory, exits or crashes costs only its own checks.  Submissions run
one after another, or ``jobs`` at a time on worker threads that each drive
their own child processes.

Per submission and layer the verdict is the worst of its results:
``error`` (raised, timed out, crashed), then ``failed`` (wrong gradient,
changed its input), then ``missing`` (not implemented), else ``passed``.
A submission that does not import gets ``error`` for every layer.
"""

from __future__ import annotations

import csv
import io
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from cnncheck import isolate
from cnncheck.errors import CnnCheckError
from cnncheck.results import Status

#: Verdicts of a layer, best first.
VERDICTS = ("passed", "failed", "error", "missing")

#: Columns of the CSV file, one row per result (or per submission that did not import).
CSV_COLUMNS = ("submission", "path", "layer", "impl", "gradient", "status", "rel_error", "abs_error",
               "threshold", "message")

_ERRORS = (Status.ERROR, Status.TIMEOUT, Status.CRASHED)
_FAILURES = (Status.FAIL, Status.MUTATED)


@dataclass(frozen=True)
class Submission:
    """One student's code.

    Attributes
    ----------
    name : str
        What the table calls it: the file's stem or the folder's name.
    path : str
        The module file to import (``""`` when the folder has none).
    problem : str
        Why it cannot be checked (no ``layers.py``, several of them), else "".
    """

    name: str
    path: str
    problem: str = ""


def discover_submissions(directory) -> list[Submission]:
    """Every submission in ``directory``, sorted by name.

    ``*.py`` files directly inside count (``__init__.py``, ``conftest.py``,
    ``setup.py`` and hidden files do not); each subfolder counts with its
    ``layers.py``, or the one ``layers.py`` somewhere below it.  Hidden
    folders, ``__pycache__`` and folders without any ``.py`` file are skipped.

    Raises
    ------
    CnnCheckError
        ``directory`` is not a folder, or holds no submission.
    """
    root = Path(directory)
    if not root.is_dir():
        raise CnnCheckError(f"{directory} is not a folder")
    found: list[Submission] = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.name.startswith((".", "_")):
            continue
        if entry.is_file() and entry.suffix == ".py" and entry.name not in ("conftest.py", "setup.py"):
            found.append(Submission(entry.stem, str(entry)))
        elif entry.is_dir():
            submission = _folder_submission(entry)
            if submission is not None:
                found.append(submission)
    if not found:
        raise CnnCheckError(f"no submissions in {directory}: expected *.py files or folders with a layers.py")
    return _unique_names(found, root)


def _folder_submission(folder: Path) -> Submission | None:
    direct = folder / "layers.py"
    if direct.is_file():
        return Submission(folder.name, str(direct))
    deeper = sorted(p for p in folder.rglob("layers.py")
                    if not any(part.startswith((".", "__pycache__")) for part in p.relative_to(folder).parts))
    if len(deeper) == 1:
        return Submission(folder.name, str(deeper[0]))
    if len(deeper) > 1:
        names = ", ".join(str(p.relative_to(folder)) for p in deeper)
        return Submission(folder.name, "", f"several layers.py files ({names}); keep one")
    if any(folder.rglob("*.py")):
        return Submission(folder.name, "", "no layers.py in this folder")
    return None


def _unique_names(found: list, root: Path) -> list:
    """Name clashes (``alice.py`` and ``alice/``) fall back to paths relative to the folder."""
    counts: dict = {}
    for sub in found:
        counts[sub.name] = counts.get(sub.name, 0) + 1
    out = []
    for sub in found:
        if counts[sub.name] > 1:
            where = Path(sub.path).relative_to(root) if sub.path else Path(sub.name)
            sub = Submission(str(where), sub.path, sub.problem)
        out.append(sub)
    return sorted(out, key=lambda s: s.name)


@dataclass(frozen=True)
class SubmissionResult:
    """How one submission did.

    Attributes
    ----------
    name, path : str
    status : str
        ``"ok"`` when it imported; ``error``, ``timeout`` or ``crashed`` when it did not.
    message : str
        Why it did not import, else "".
    layers : dict of str to str
        Verdict per layer (see :data:`VERDICTS`).
    results : tuple of GradcheckResult
        Every result of every check.
    output : CapturedOutput
        What its code wrote to stdout and stderr, cut to a bounded size.
    seconds : float
        Wall time of the whole submission.
    """

    name: str
    path: str
    status: str
    message: str = ""
    layers: dict = field(default_factory=dict)
    results: tuple = ()
    output: isolate.CapturedOutput = isolate.CapturedOutput()
    seconds: float = 0.0

    def count(self, verdict: str) -> int:
        """How many layers got ``verdict``."""
        return sum(1 for v in self.layers.values() if v == verdict)

    @property
    def passed(self) -> bool:
        """True when every layer passed."""
        return bool(self.layers) and all(v == "passed" for v in self.layers.values())

    def problems(self, width: int = 90) -> list[str]:
        """One short line per layer that did not pass: ``conv: timeout (no result after 2 s)``."""
        if self.status != "ok":
            return [_clip(f"import: {self.status} ({self.message})", width)]
        lines = []
        for layer, verdict in self.layers.items():
            if verdict == "passed":
                continue
            worst = _worst(r for r in self.results if r.layer == layer)
            detail = f"{worst.gradient} {worst.status}" + (f" ({worst.message})" if worst.message else "")
            if verdict == "missing":
                detail = "not implemented"
            lines.append(_clip(f"{layer}: {detail}", width))
        return lines

    def to_dict(self, *, with_output: bool = False) -> dict:
        """JSON-ready dict; the captured text is included with ``with_output``."""
        data = {
            "name": self.name, "path": self.path, "status": self.status, "message": self.message,
            "passed": self.passed, "layers": dict(self.layers),
            "counts": {"passed": self.count("passed"), "failed": self.count("failed"),
                       "errors": self.count("error"), "missing": self.count("missing")},
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


def _rank(result) -> int:
    if result.status in _ERRORS:
        return 3
    if result.status in _FAILURES:
        return 2
    if result.status == Status.NOT_IMPLEMENTED:
        return 1
    return 0


def _worst(results):
    return max(results, key=_rank)


def layer_verdict(results: Sequence) -> str:
    """``passed``, ``failed``, ``error`` or ``missing`` for one layer's results (worst wins)."""
    if not results:
        return "missing"
    if any(r.status in _ERRORS for r in results):
        return "error"
    if any(r.status in _FAILURES for r in results):
        return "failed"
    if any(r.status == Status.NOT_IMPLEMENTED for r in results):
        return "missing"
    return "passed"


def grade_submission(submission: Submission, config, *, layers: Sequence[str], overrides: dict | None = None,
                     timeout: float | None = None, memory_limit: int | None = None,
                     capture_limit: int = isolate.DEFAULT_CAPTURE_LIMIT,
                     cancel: threading.Event | None = None) -> SubmissionResult:
    """Check one submission in child processes and sum it up per layer.

    Parameters
    ----------
    submission : Submission
    config : GradcheckConfig
    layers : sequence of str
        Layer names every submission is graded on (resolved, no ``all``).
    overrides : dict, optional
        Layer parameters.
    timeout, memory_limit, capture_limit, cancel
        As for :func:`cnncheck.isolate.check_module_isolated`.

    Returns
    -------
    SubmissionResult
    """
    if submission.problem:
        return SubmissionResult(submission.name, submission.path, Status.ERROR, submission.problem,
                                dict.fromkeys(layers, "error"))
    outcome = isolate.check_module_isolated(submission.path, config, overrides=overrides, layers=layers,
                                            timeout=timeout, memory_limit=memory_limit,
                                            capture_limit=capture_limit, cancel=cancel)
    if outcome.load_status != "ok":
        message = outcome.load_message
        prefix = f"cannot import --module {submission.path}: "
        if message.startswith(prefix):
            message = message[len(prefix):]
        return SubmissionResult(submission.name, submission.path, outcome.load_status, message,
                                dict.fromkeys(layers, "error"), (), outcome.output, outcome.seconds)
    results = tuple(outcome.results)
    verdicts = {layer: layer_verdict([r for r in results if r.layer == layer]) for layer in layers}
    return SubmissionResult(submission.name, submission.path, "ok", "", verdicts, results, outcome.output,
                            outcome.seconds)


def grade_all(submissions: Sequence[Submission], config, *, layers: Sequence[str], overrides: dict | None = None,
              timeout: float | None = None, memory_limit: int | None = None, jobs: int = 1,
              capture_limit: int = isolate.DEFAULT_CAPTURE_LIMIT,
              on_graded: Callable[[SubmissionResult], None] | None = None) -> list[SubmissionResult]:
    """Grade every submission, ``jobs`` at a time; results in the order of ``submissions``.

    Parameters
    ----------
    submissions : sequence of Submission
    config, layers, overrides, timeout, memory_limit, capture_limit
        As for :func:`grade_submission`.
    jobs : int
        Submissions graded at the same time, each by its own child processes.
    on_graded : callable(SubmissionResult), optional
        Called as each submission finishes (in finishing order).

    Returns
    -------
    list of SubmissionResult

    Raises
    ------
    KeyboardInterrupt
        When interrupted; running children are killed first.  The results
        finished by then were passed to ``on_graded``.
    """
    if jobs < 1:
        raise CnnCheckError(f"--jobs must be at least 1, got {jobs}")

    def one(submission: Submission) -> SubmissionResult:
        result = grade_submission(submission, config, layers=layers, overrides=overrides, timeout=timeout,
                                  memory_limit=memory_limit, capture_limit=capture_limit, cancel=cancel)
        if on_graded is not None:
            with lock:
                on_graded(result)
        return result

    lock = threading.Lock()
    cancel = threading.Event()
    if jobs == 1 or len(submissions) <= 1:
        return [one(s) for s in submissions]
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="cnncheck-grade")
    futures = [pool.submit(one, s) for s in submissions]
    try:
        results = [f.result() for f in futures]
    except BaseException:
        # Ctrl-C (or a bug) in this thread: stop the queue, kill the running children, wait for the workers.
        for f in futures:
            f.cancel()
        cancel.set()
        pool.shutdown(wait=True)
        raise
    pool.shutdown(wait=True)
    return results


# -- writers ----------------------------------------------------------------------
def to_document(graded: Sequence[SubmissionResult], *, directory: str, config: dict, version: str = "",
                timeout: float | None = None, memory_limit: int | None = None, interrupted: bool = False,
                with_output: bool = False) -> dict:
    """The JSON document of a grading run.

    Schema: ``{"command": "grade", "version", "directory", "passed",
    "interrupted", "config", "timeout", "memory_limit", "summary":
    {"submissions", "passed"}, "submissions": [SubmissionResult.to_dict()]}``.
    """
    return {
        "command": "grade",
        "version": version,
        "directory": str(directory),
        "passed": not interrupted and bool(graded) and all(s.passed for s in graded),
        "interrupted": interrupted,
        "config": config,
        "timeout": timeout,
        "memory_limit": memory_limit,
        "summary": {"submissions": len(graded), "passed": sum(1 for s in graded if s.passed)},
        "submissions": [s.to_dict(with_output=with_output) for s in graded],
    }


def write_json(document: dict, file) -> None:
    """Write a grading document (see :func:`to_document`) as indented JSON to an open text file."""
    json.dump(document, file, indent=2)
    file.write("\n")


def csv_rows(graded: Sequence[SubmissionResult]) -> list[dict]:
    """One row per result; a submission with no results gets one row with its status and message."""
    rows = []
    for sub in graded:
        if not sub.results:
            rows.append({"submission": sub.name, "path": sub.path, "layer": "", "impl": "", "gradient": "",
                         "status": sub.status, "rel_error": "", "abs_error": "", "threshold": "",
                         "message": sub.message})
            continue
        for r in sub.results:
            rows.append({"submission": sub.name, "path": sub.path, "layer": r.layer, "impl": r.impl,
                         "gradient": r.gradient, "status": r.status,
                         "rel_error": "" if r.rel_error is None else repr(r.rel_error),
                         "abs_error": "" if r.abs_error is None else repr(r.abs_error),
                         "threshold": repr(r.threshold), "message": r.message})
    return rows


def write_csv(graded: Sequence[SubmissionResult], file) -> None:
    """Write :func:`csv_rows` with a header of :data:`CSV_COLUMNS` to an open text file (``newline=""``)."""
    writer = csv.DictWriter(file, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(csv_rows(graded))


def write_results_file(path, graded: Sequence[SubmissionResult], document: dict) -> str:
    """Write ``graded`` to ``path`` as CSV when it ends in ``.csv``, else as JSON; returns the format."""
    kind = "csv" if os.fspath(path).lower().endswith(".csv") else "json"
    with open(path, "w", encoding="utf-8", newline="" if kind == "csv" else None) as handle:
        if kind == "csv":
            write_csv(graded, handle)
        else:
            write_json(document, handle)
    return kind


def csv_text(graded: Sequence[SubmissionResult]) -> str:
    """The CSV file's text, for tests and for writing elsewhere."""
    buffer = io.StringIO()
    write_csv(graded, buffer)
    return buffer.getvalue()
