"""The Gradescope autograder document (``results.json``) of one graded submission.

One test per rubric item, named after the item and its functions, with its
score, its maximum, ``passed`` when it got every point and ``failed``
otherwise, and as output the item's feedback text
(:class:`cnncheck.report.feedback.ItemFeedback`): ``gradcheck``'s notes,
the failing geometry, the worst element and what to try next.  The
document's ``score`` is the sum of the tests' scores; its ``output`` says
the score, the outcome and the seed.  A submission that did not load still
gets every test, each with 0 points and the reason.

Field names follow Gradescope's autograder specification (``score``,
``execution_time``, ``output``, ``output_format``, ``visibility``,
``stdout_visibility``, ``extra_data``, ``tests``; each test ``name``,
``number``, ``score``, ``max_score``, ``status``, ``output``,
``visibility``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from cnncheck.report import feedback
from cnncheck.report.gradcheck import summary_line

#: Test statuses Gradescope shows.
TEST_STATUSES = ("passed", "failed")

#: Visibility settings Gradescope knows.
VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")


@dataclass(frozen=True)
class Autograded:
    """One submission graded for an autograder platform.

    Attributes
    ----------
    submission : SubmissionResult
        With its score sheet.
    context : dict
        What the run was: ``seed``, ``version``, ``config``, ``layers``,
        ``quick``, ``overrides``, ``strict`` (as in a grade document).
    seconds : float
        Wall time of the whole run.
    visibility : str
        Of the tests and the document (:data:`VISIBILITIES`).
    """

    submission: object
    context: dict = field(default_factory=dict)
    seconds: float = 0.0
    visibility: str = "visible"


def test_name(item) -> str:
    """``conv (conv_forward_naive, conv_backward_naive)``, or the rubric's title."""
    if item.item.title or not item.item.functions:
        return item.item.label
    return f"{item.item.label} ({', '.join(item.item.functions)})"


def document(run: Autograded) -> dict:
    """The ``results.json`` document."""
    sub = run.submission
    sheet = sub.score
    entries = feedback.items(sub, run.context)
    tests = []
    for number, (item, entry) in enumerate(zip(sheet.items, entries), start=1):
        tests.append({"name": test_name(item), "number": str(number), "score": item.points,
                      "max_score": item.max_points, "status": "passed" if item.full else "failed",
                      "output": entry.text(), "visibility": run.visibility})
    seed = run.context.get("seed")
    unit = "point" if sheet.max_points == 1 else "points"
    lines = [f"{sheet.points:g} of {sheet.max_points:g} {unit} ({sub.outcome})"]
    if sub.status != "ok":
        lines += [f"Your submission did not load: {sub.message}", f"Try next: {feedback.load_step(sub.status)}"]
    elif sub.results:
        lines.append(summary_line(feedback.student_report(sub, run.context)))
    lines += [f"Checked with cnncheck {run.context.get('version', '')}, seed {seed}. The same checks on your "
              f"machine: {feedback.command(sub, run.context)}"]
    return {
        "score": sheet.points,
        "execution_time": round(run.seconds, 2),
        "output": "\n".join(lines),
        "output_format": "text",
        "visibility": run.visibility,
        "stdout_visibility": "hidden",
        "tests": tests,
        "extra_data": {"cnncheck": run.context.get("version", ""), "seed": seed, "outcome": sub.outcome,
                       "max_score": sheet.max_points, "rubric": sheet.rubric.digest,
                       "rubric_file": sheet.rubric.source},
    }


def render_text(run: Autograded, fmt: str = "gradescope") -> str:
    """The document as strict JSON, ending with a newline."""
    if fmt != "gradescope":
        raise ValueError(f"unknown format {fmt!r}")
    return json.dumps(document(run), indent=2, allow_nan=False) + "\n"


def rich_renderable(run: Autograded, width: int | None = None):
    """The document is for machines: on a terminal too it is the JSON text."""
    from rich.text import Text

    return Text(render_text(run))
