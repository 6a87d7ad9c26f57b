"""Feedback a student can act on: one Markdown file per submission, and the text of each rubric item.

A student reads the verdicts and messages ``cnncheck gradcheck`` would have
shown them at home (:func:`cnncheck.report.gradcheck.describe`, ``notes``,
``summary_line`` and the plain report, word for word), then for each item
that lost points: the failing geometry, the worst element, and what to try
next.  Locations are shown relative to the submission, as the student's
own files are laid out.

The same item text is the ``output`` of each test in the Gradescope
document (:mod:`cnncheck.report.gradescope`).  Reporters only format: the
points come from the submission's score sheet.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from cnncheck.report.gradcheck import notes, render_text
from cnncheck.results import GradcheckReport
from cnncheck.status import Status

#: What to try next, by finding (the most specific), then by status, then by kind of check.
FINDING_HINTS = {
    "imports-cnncheck": "write the layer yourself: a submission may not import `cnncheck`, whose layers are the "
                        "reference solution.",
    "forbidden-import": "this assignment forbids that module: compute with numpy only.",
    "reads-protected": "read only your own files.",
    "starts-process": "do not start processes.",
    "replaces-functions": "do not replace functions of numpy or of Python's standard library.",
    "not-implemented": "write the function: it still returns `None` (or raises `NotImplementedError`).",
    "returns": "return what the course's functions return: forward returns `(out, cache)`, backward "
               "the gradients in the order of the inputs (`dx, dw, db`).",
    "dtype": "return arrays of the input's dtype: allocate with `np.zeros_like(x)` or `dtype=x.dtype`.",
    "not-ndarray": "return numpy arrays (`np.asarray` turns lists and scalars into one).",
    "returns-subclass": "return plain numpy arrays (`np.asarray`), not masked arrays or matrices.",
    "ignores-input": "the forward output did not change when that input changed: check that forward uses it "
                     "(a typo such as `w` for `x`), and that it does not return an output stored from an earlier call.",
    "float32-precision": "compute in the input's dtype: something casts to float32 (`np.float32`, `astype`), so a "
                         "float64 check cannot judge the result.",
    "mutates-dout": "copy `dout` before changing it (`dx = dout.copy()`, or `dx = dout * mask`): the caller may "
                    "pass the same dout to another layer.",
    "mutates-input": "compute into new arrays instead of writing into `x` or the other inputs (`x[...] = ...` and "
                     "`x += ...` write into the caller's array).",
    "mutates-cache": "leave what forward cached as it is: a network may call backward twice on one cache.",
    "modifies-param": "read `conv_param` or `pool_param` without changing it: the caller reuses the dict.",
    "nondeterministic-forward": "the same input must give the same output: no random numbers, no state kept "
                                "between calls.",
    "stale-state": "keep nothing between calls in module-level variables or function attributes: compute "
                   "everything from the arguments and the cache.",
    "repeat-forward": "keep nothing between calls: a second call with the same input must give the same output.",
    "repeat-backward": "keep nothing between calls, and write into no argument: backward called twice on one "
                       "cache must give the same gradients.",
    "reused-output": "return new arrays on every call, not one array reused from call to call.",
    "shared-cache": "put everything backward needs into the cache forward returns: a network keeps the caches of "
                    "several calls and runs backward on each later.",
    "layout": "do not assume C-ordered inputs: index with shapes (`x.shape`, `x[n, c, i, j]`), not strides, "
              "`.data` or flat offsets.",
    "ties": "at exact ties send a window's whole gradient to one maximum (`np.argmax` picks the first), and give "
            "relu at exactly 0 a gradient of 0.",
}

STATUS_HINTS = {
    Status.ERROR: "your code raised or returned something unusable: run the command below with `--traceback` "
                  "to see where.",
    Status.TIMEOUT: "it ran past the time limit: look for a loop that never ends, or a loop over every element "
                    "where numpy can work on whole arrays.",
    Status.CRASHED: "the process running your code died: do not call `sys.exit` or `os._exit`, and do not allocate "
                    "arrays far larger than the input.",
    Status.NOT_IMPLEMENTED: FINDING_HINTS["not-implemented"],
    Status.USES_REFERENCE: FINDING_HINTS["imports-cnncheck"],
    Status.FORBIDDEN_ACCESS: "read only your own files, and start no processes.",
    Status.TAMPERING: FINDING_HINTS["replaces-functions"],
    Status.PROTOCOL_ERROR: "your code must not write to the checker's channel or interfere with it.",
    Status.INTERNAL_ERROR: "cnncheck itself failed on this check, which is not your fault: tell your instructor.",
}

KIND_HINTS = {
    "gradient": "your backward pass disagrees with centred differences of your own forward pass. Work out the "
                "element named by hand at this geometry; check strides, padding and every size that differs here "
                "(H != W, HH != WW, N = 1), and that each gradient sums over the batch.",
    "reference": "your forward output differs from the reference on the same inputs: the forward pass itself "
                 "computes something else (padding, stride, output size with floor division, filter orientation), "
                 "and a backward pass can agree with a wrong forward pass.",
    "subgradient": FINDING_HINTS["ties"],
    "protocol": "a network calls layers repeatedly and keeps several caches at once: keep no state between calls, "
                "write into no argument, and return new arrays.",
    "forward": FINDING_HINTS["ignores-input"],
    "call": FINDING_HINTS["returns"],
}

LOAD_HINTS = {
    Status.ERROR: "your file does not import: run python on it (or import it in the notebook) and fix the first "
                  "error; keep tests and experiments under `if __name__ == \"__main__\":`.",
    Status.TIMEOUT: "importing your file ran past the time limit: code at module level (training, tests, plots) "
                    "runs at import; move it under `if __name__ == \"__main__\":`.",
    Status.CRASHED: "the process importing your file died: code at module level must not exit, and must not "
                    "allocate huge arrays; move it under `if __name__ == \"__main__\":`.",
}


def next_step(result) -> str:
    """What to try next about a failing result, in a sentence: by finding, else status, else kind of check."""
    if result.finding in FINDING_HINTS:
        return FINDING_HINTS[result.finding]
    status = Status(result.status)
    if status in STATUS_HINTS:
        return STATUS_HINTS[status]
    if result.kind == "reference" and result.subject != "out":
        return (f"your {result.subject} differs from the reference's for the same inputs and dout: work out the "
                "element named by hand; check each sum over the batch and over the windows, and the strides and "
                "padding at this geometry.")
    return KIND_HINTS.get(result.kind, KIND_HINTS["call"])


def load_step(status: str) -> str:
    """What to try next about a submission that did not load."""
    status = Status(status)
    return LOAD_HINTS.get(status) or STATUS_HINTS.get(status, LOAD_HINTS[Status.ERROR])


def student_results(sub) -> tuple:
    """The submission's results with locations relative to its own file or folder."""
    root = sub.root or sub.path
    base = os.path.dirname(root) if root == sub.path else root
    out = []
    for result in sub.results:
        path, sep, line = result.location.rpartition(":")
        if sep and path and base and (path == base or path.startswith(base.rstrip(os.sep) + os.sep)):
            result = replace(result, location=f"{os.path.relpath(path, base)}:{line}")
        out.append(result)
    return tuple(out)


def student_report(sub, context: dict) -> GradcheckReport:
    """The report ``cnncheck gradcheck`` gives on the submission's results."""
    return GradcheckReport(student_results(sub), config=dict(context.get("config", {})),
                           strict=bool(context.get("strict")), version=context.get("version", ""))


def module_path(sub) -> str:
    """The submission's module as the student calls it (``layers.py``, ``cnn/layers.py``)."""
    root = sub.root or sub.path
    if not sub.path:
        return "layers.py"
    return os.path.basename(sub.path) if root == sub.path else os.path.relpath(sub.path, root)


def command(sub, context: dict) -> str:
    """The ``cnncheck gradcheck`` command that runs the same checks on the student's machine."""
    parts = ["cnncheck gradcheck", *context.get("layers", ()), "--module", module_path(sub),
             "--seed", str(context.get("seed", 0))]
    config = context.get("config", {})
    if config.get("dtype", "float64") != "float64":
        parts += ["--dtype", config["dtype"]]
    if context.get("quick"):
        parts.append("--quick")
    for name, value in context.get("overrides", {}).items():
        text = ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
        parts += [f"--{name.replace('_', '-')}", text]
    return " ".join(parts)


@dataclass(frozen=True)
class ItemFeedback:
    """What a student reads about one rubric item.

    Attributes
    ----------
    title : str
    points, max_points : float
    status : str
    check : str
        The failing check in a few words (``gradient at pad0``), or what passed.
    reason : str
        Why it scored 0 whatever its checks said (did not load, not defined, cheating elsewhere).
    notes : tuple of str
        ``gradcheck``'s note lines for this implementation (failures and warnings).
    geometry, worst : str
        The failing geometry in words; the worst element (both "" when not applicable).
    parts : tuple of str
        ``gradient 2/2``, ``reference 0/1 (differs at pad0)``: when the rubric splits the item.
    step : str
        What to try next ("" when it got every point).
    """

    title: str
    points: float
    max_points: float
    status: str
    check: str = ""
    reason: str = ""
    notes: tuple = ()
    geometry: str = ""
    worst: str = ""
    parts: tuple = ()
    step: str = ""

    @property
    def heading(self) -> str:
        unit = "point" if self.max_points == 1 else "points"
        return f"{self.title}: {self.points:g} of {self.max_points:g} {unit}"

    def text(self) -> str:
        """Plain text (the Gradescope test output)."""
        lines = [f"{self.heading} ({self.status}{', ' + self.check if self.check else ''})"]
        lines += [self.reason] if self.reason else []
        lines += list(self.notes)
        if self.geometry:
            lines.append(f"Failing geometry: {self.geometry}")
        if self.worst:
            lines.append(f"Worst element: {self.worst}")
        if self.parts:
            lines.append("Points: " + "; ".join(self.parts))
        if self.step:
            lines.append(f"Try next: {self.step}")
        return "\n".join(lines)

    def markdown(self) -> str:
        lines = [f"## {self.heading}", ""]
        if self.reason:
            lines += [_md(self.reason), ""]
        if self.notes:
            lines += ["```text", *self.notes, "```", ""]
        bullets = []
        if self.geometry:
            bullets.append(f"- **Failing geometry:** {_code_head(self.geometry)}")
        if self.worst:
            bullets.append(f"- **Worst element:** {_code_head(self.worst)}")
        if self.parts:
            bullets.append("- **Points:** " + _md("; ".join(self.parts)))
        if self.step:
            bullets.append(f"- **Try next:** {self.step}")
        return "\n".join(lines + bullets).rstrip("\n") + "\n"


def _md(text: str) -> str:
    """``text`` safe in Markdown prose and tables (underscores inside names are left alone)."""
    for char in "\\`*<>|":
        text = text.replace(char, "\\" + char)
    return text


def _code_head(text: str) -> str:
    """``pad0: x (2, 3, 7, 5)`` as ```pad0`: x (2, 3, 7, 5)`` in Markdown."""
    head, sep, rest = text.partition(": ")
    return f"`{head}`{sep}{_md(rest)}"


def items(sub, context: dict) -> list:
    """One :class:`ItemFeedback` per rubric item of the submission's score sheet."""
    if sub.score is None:
        return []
    report = student_report(sub, context)
    verdicts = report.verdicts()
    found = []
    for item in sub.score.items:
        mine = tuple(r for r in report.results if r.layer == item.item.layer and r.impl == item.impl) \
            if item.impl else ()
        row = verdicts.get((item.item.layer, item.impl))
        failing = row.failing if row is not None else None
        lines = tuple(notes(GradcheckReport(mine, config=report.config, strict=report.strict))) \
            if sub.status == "ok" else ()
        geometry = worst = ""
        if failing is not None and failing.geometry:
            geometry = f"{failing.geometry}: {failing.where}" if failing.where else failing.geometry
        if failing is not None and failing.worst_index is not None and failing.got is not None:
            worst = (f"{failing.subject}{list(failing.worst_index)}: got {failing.got:.6g}, expected "
                     f"{failing.expected:.6g}")
            if failing.rel_error is not None:
                worst += f" (error {failing.rel_error:.1e}, allowed {failing.threshold:.0e})"
        parts = ()
        if item.item.parts:
            parts = tuple(_part_text(p) for p in item.parts)
        step = ""
        if item.points < item.max_points or item.status != str(Status.PASS):
            if sub.status != "ok":
                step = load_step(sub.status)
            elif failing is not None:
                step = next_step(failing)
            elif not item.impl:
                step = "write them, with the course's names and arguments, in the file you submit."
        found.append(ItemFeedback(item.item.label, item.points, item.max_points, item.status,
                                  row.check if row is not None else "", item.reason, lines, geometry, worst,
                                  parts, step))
    return found


def _part_text(part) -> str:
    text = f"{part.part.label} {part.points:g}/{part.max_points:g}"
    if part.checked > 1 and part.passed < part.checked:
        text += f", passed at {part.passed} of {part.checked} geometries"
    if part.failing is not None and part.passed < part.checked:
        at = f" at {part.failing.geometry}" if part.failing.geometry else ""
        text += f" ({part.failing.status}{at})"
    return text


def markdown(sub, context: dict) -> str:
    """The feedback file of one submission.

    ``context`` holds what the run was: ``seed``, ``version``, ``config``,
    ``layers``, ``quick``, ``overrides``, ``strict`` (a grade document has them).
    """
    report = student_report(sub, context)
    feedback = items(sub, context)
    lines = [f"# Feedback: {_md(sub.name)}", ""]
    score = sub.score
    if score is not None:
        unit = "point" if score.max_points == 1 else "points"
        lines.append(f"**{score.points:g} of {score.max_points:g} {unit}** ({sub.outcome}), checked in "
                     f"{sub.seconds:.1f} s.")
    else:
        lines.append(f"**{sub.outcome}**, checked in {sub.seconds:.1f} s.")
    lines.append("")
    if sub.status != "ok":
        lines += ["Your submission did not load, so none of its layers could be checked:", "",
                  "```text", sub.message, "```", "", f"**Try next:** {load_step(sub.status)}", ""]
    if feedback:
        lines += ["| item | points | status | check |", "|---|---:|---|---|"]
        for entry in feedback:
            lines.append(f"| {_md(entry.title)} | {entry.points:g}/{entry.max_points:g} | {entry.status} | "
                         f"{_md(entry.check) or '-'} |")
        lines.append("")
        for entry in feedback:
            if entry.points < entry.max_points or entry.notes or entry.status != str(Status.PASS):
                if sub.status == "ok":
                    lines.append(entry.markdown())
    if sub.status == "ok" and report.results:
        lines += ["## What `cnncheck gradcheck` says", "", "```text", render_text(report, "plain").rstrip("\n"),
                  "```", ""]
    seed = context.get("seed", 0)
    lines += [f"Checked with cnncheck {_md(context.get('version', ''))} (seed {seed}). The same checks on your "
              "machine:", "", "```bash", command(sub, context), "```", ""]
    return "\n".join(lines)


def file_name(sub) -> str:
    """The feedback file's name: the submission's name, path separators replaced."""
    return sub.name.replace(os.sep, "__").replace("/", "__") + ".md"
