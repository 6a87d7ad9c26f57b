"""Render a grading run: one row per submission (its outcome, points, time, problems), then a summary line."""

from __future__ import annotations

import json
from dataclasses import dataclass

from cnncheck import grade as grading

HEADERS = ("submission", "status", "points", "seconds", "problems")


@dataclass(frozen=True)
class GradeSummary:
    """What a grading run shows: the graded submissions, the JSON document, how many there were."""

    graded: list
    document: dict
    total: int

    @property
    def interrupted(self) -> bool:
        return bool(self.document.get("interrupted"))


def summary_line(summary: GradeSummary) -> str:
    """``GRADED 20 submissions in 25.1 s (seed 1234), mean 3.2 of 4 points: 8 passed every layer; 12 did not: ...``."""
    graded = summary.graded
    bad = [s.name for s in graded if not s.passed]
    head = "INTERRUPTED" if summary.interrupted else "GRADED"
    count = f"{len(graded)} of {summary.total}" if summary.interrupted else f"{len(graded)}"
    noun = "submission" if summary.total == 1 else "submissions"
    mean = summary.document.get("summary", {}).get("mean_points", 0.0)
    most = summary.document.get("max_points", 0)
    text = (f"{head} {count} {noun} in {summary.document.get('seconds', 0.0):.1f} s "
            f"(seed {summary.document.get('seed')}), mean {mean:g} of {most:g} point{'' if most == 1 else 's'}: "
            f"{len(graded) - len(bad)} passed every layer")
    if bad:
        shown = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        text += f"; {len(bad)} did not: {shown}"
    return text


def points(sub) -> str:
    """``3/4`` (points of the maximum)."""
    return f"{sub.points:g}/{sub.max_points:g}"


def rows(summary: GradeSummary, width: int = 90) -> list:
    return [[s.name, s.outcome, points(s), f"{s.seconds:.1f}", "; ".join(s.problems(width)) or "-"]
            for s in summary.graded]


def render_text(summary: GradeSummary, fmt: str = "plain") -> str:
    if fmt == "json":
        return json.dumps(summary.document, indent=2) + "\n"
    if fmt == "csv":
        return grading.csv_text(summary.graded, summary.document)
    from tabulate import tabulate

    table = tabulate(rows(summary), headers=HEADERS, tablefmt="github" if fmt == "markdown" else "simple",
                     disable_numparse=True)
    line = f"**{summary_line(summary)}**" if fmt == "markdown" else summary_line(summary)
    return f"{table}\n\n{line}\n"


def rich_renderable(summary: GradeSummary, width: int | None = None):
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, show_edge=False)
    for header in HEADERS:
        numeric = header in ("points", "seconds")
        table.add_column(header, justify="right" if numeric else "left", no_wrap=header != "problems",
                         min_width=len(header) if header != "problems" else None)
    for sub, row in zip(summary.graded, rows(summary)):
        style = "green" if sub.passed else "bold red"
        cells = [Text(row[0], style=style), Text(row[1], style=style), row[2], row[3],
                 "\n".join(sub.problems()) or "-"]
        table.add_row(*cells)
    style = "bold green" if summary.document.get("passed") else "bold red"
    return Group(table, Text(summary_line(summary), style=style))
