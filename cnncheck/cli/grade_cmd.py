"""``cnncheck grade``: check a whole folder of submissions, each isolated, and sum it up per student."""

from __future__ import annotations

import sys
import time

import click

from cnncheck import __version__, memory
from cnncheck import gradcheck as engine
from cnncheck import grade as grading
from cnncheck.cli.common import usage_errors
from cnncheck.cli.isolation_options import MemorySize
from cnncheck.cli.options import CommaList, layer_parameter_options, parameter_overrides
from cnncheck.isolate import describe_output

FORMATS = ("rich", "plain", "markdown", "json")

#: Exit status of a run stopped with Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130

HEADERS = ("submission", "passed", "failed", "errors", "missing", "seconds", "problems")

HELP = """Grade every submission in DIRECTORY: each *.py file in it, and each
subfolder's layers.py.  Every submission is imported and checked in child
processes of its own (as gradcheck --isolate does), so one that loops
forever, exhausts memory, calls sys.exit or crashes the interpreter loses
only its own checks.

\b
Per submission and layer the table shows the worst outcome:
  passed   every gradient of every implementation passed
  failed   a wrong gradient, or an input changed in place
  errors   raised, timed out, crashed, or did not import
  missing  not implemented (a skeleton returning None, or no function)

Loading a submission runs its code with your rights: isolation limits
damage from bugs, not from malice (see the README).

\b
Exit status: 0 every submission passed every layer; 1 some did not;
2 a usage error; 130 interrupted (the table shows what finished).
"""

EPILOG = """\b
Examples:
  cnncheck grade submissions/
  cnncheck grade submissions/ --timeout 10 --jobs 4 --output grades.csv
  cnncheck grade submissions/ --layers conv,pool --format json > grades.json
  cnncheck grade submissions/ --shape 2,3,6,6 --memory-limit 1G
"""

_VERDICT_STYLES = {"passed": "green", "failed": "red", "errors": "red", "missing": "magenta"}


@click.command("grade", help=HELP, epilog=EPILOG)
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--layers", "layer_names", type=CommaList(), multiple=True, metavar="NAMES",
              help="Layers to grade, comma separated (default: all).")
@layer_parameter_options
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              metavar="SECONDS", help="Seconds a submission's import and each of its checks may take.")
@click.option("--memory-limit", type=MemorySize(), default="2G", show_default=True, metavar="SIZE",
              help="Memory a submission's code may allocate, e.g. 512M or 2G; 'none' for no limit (Linux).")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Submissions graded at the same time.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None, metavar="FILE",
              help="Also write every result to FILE: CSV when it ends in .csv, JSON otherwise.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Format of the summary on stdout (default: rich on a terminal, plain when piped).")
@click.option("--show-output", is_flag=True,
              help="Print what each submission wrote to stdout and stderr (cut to its first and last 32 KiB) "
                   "to stderr after the summary; with --format json it is also in the document.")
@click.option("--dtype", type=click.Choice(engine.DTYPES), default="float64", show_default=True,
              help="dtype of the inputs the submissions get.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--force", is_flag=True, help="Run even when the estimated memory need exceeds what is available.")
@click.pass_context
def grade(ctx: click.Context, directory, layer_names, timeout, memory_limit, jobs, output, fmt, show_output,
          dtype, seed, force, **params) -> None:
    names = [name for group in layer_names for name in group] or ["all"]
    overrides = parameter_overrides(params)
    with usage_errors():
        submissions = grading.discover_submissions(directory)
        config = engine.GradcheckConfig(dtype=dtype, seed=seed)
        # Names and parameters are checked here, against the built-in layers, before any child starts.
        checks = engine.select_checks(_builtin_layers(), names, [], [], overrides)
        specs = list({spec.name: spec for spec, _, _ in checks}.values())
        memory.guard([(spec, params) for spec, _, params in checks], dtype=dtype, mode=config.mode,
                     parallel=jobs, memory_limit=memory_limit, force=force)
    if fmt is None:
        fmt = "rich" if sys.stdout.isatty() else "plain"
    stderr = sys.stderr
    progress = stderr.isatty()
    finished: dict = {}

    def on_graded(result: grading.SubmissionResult) -> None:
        finished[result.name] = result
        if progress:
            verdict = "passed" if result.passed else "; ".join(result.problems(60)) or "did not pass"
            click.echo(f"[{len(finished)}/{len(submissions)}] {result.name}: {verdict} ({result.seconds:.1f} s)",
                       err=True)

    start = time.perf_counter()
    interrupted = False
    try:
        with usage_errors():
            grading.grade_all(submissions, config, layers=[s.name for s in specs], overrides=overrides,
                              timeout=timeout,
                              memory_limit=memory_limit, jobs=jobs, on_graded=on_graded)
    except KeyboardInterrupt:
        interrupted = True
    seconds = time.perf_counter() - start
    graded = [finished[s.name] for s in submissions if s.name in finished]

    document = grading.to_document(graded, directory=directory, config=config.to_dict(), version=__version__,
                                   timeout=timeout, memory_limit=memory_limit, interrupted=interrupted,
                                   with_output=show_output)
    _emit(graded, document, fmt, seconds=seconds, total=len(submissions), interrupted=interrupted)
    if output:
        grading.write_results_file(output, graded, document)
    if show_output:
        for result in graded:
            text = describe_output(result.name, result.output)
            if text:
                click.echo(text, err=True, nl=False)
    if interrupted:
        click.echo(f"interrupted: {len(graded)} of {len(submissions)} submissions graded", err=True)
        ctx.exit(EXIT_INTERRUPTED)
    ctx.exit(0 if document["passed"] else 1)


def _builtin_layers():
    """The built-in registry: every layer grading knows, with cnncheck's own implementations."""
    from cnncheck.catalog import builtin_registry

    return builtin_registry()


def summary_line(graded, *, seconds: float, total: int, interrupted: bool) -> str:
    """``GRADED 20 submissions in 25.1 s: 8 passed every layer; 12 did not: a, b, ...``."""
    bad = [s.name for s in graded if not s.passed]
    good = len(graded) - len(bad)
    head = "INTERRUPTED" if interrupted else "GRADED"
    count = f"{len(graded)} of {total}" if interrupted else f"{len(graded)}"
    text = f"{head} {count} submissions in {seconds:.1f} s: {good} passed every layer"
    if bad:
        text += f"; {len(bad)} did not: {', '.join(bad)}"
    return text


def _rows(graded) -> list[list]:
    return [[s.name, s.count("passed"), s.count("failed"), s.count("error"), s.count("missing"),
             f"{s.seconds:.1f}", "; ".join(s.problems()) or "-"] for s in graded]


def render_text(graded, fmt: str, *, seconds: float, total: int, interrupted: bool) -> str:
    """The summary as ``plain`` or ``markdown`` text, ending with a newline."""
    from tabulate import tabulate

    summary = summary_line(graded, seconds=seconds, total=total, interrupted=interrupted)
    if fmt == "markdown":
        table = tabulate(_rows(graded), headers=HEADERS, tablefmt="github", disable_numparse=True)
        return f"{table}\n\n**{summary}**\n"
    table = tabulate(_rows(graded), headers=HEADERS, tablefmt="simple", disable_numparse=True)
    return f"{table}\n\n{summary}\n"


def _emit(graded, document: dict, fmt: str, *, seconds: float, total: int, interrupted: bool) -> None:
    stdout = sys.stdout
    if fmt == "json":
        grading.write_json(document, stdout)
        return
    if fmt != "rich":
        click.echo(render_text(graded, fmt, seconds=seconds, total=total, interrupted=interrupted), nl=False)
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title="cnncheck grade", title_justify="left", header_style="bold")
    for header in HEADERS:
        numeric = header in ("passed", "failed", "errors", "missing", "seconds")
        table.add_column(header, justify="right" if numeric else "left", no_wrap=header != "problems")
    for sub, row in zip(graded, _rows(graded), strict=True):
        cells = [Text(row[0], style="green" if sub.passed else "bold red")]
        for header, value in zip(HEADERS[1:5], row[1:5], strict=True):
            cells.append(Text(str(value), style=_VERDICT_STYLES[header] if value else "dim"))
        cells += [row[5], "\n".join(sub.problems()) or "-"]
        table.add_row(*cells)
    console = Console(file=stdout)
    console.print(table)
    style = "bold green" if document["passed"] else "bold red"
    console.print(Text(summary_line(graded, seconds=seconds, total=total, interrupted=interrupted), style=style))
