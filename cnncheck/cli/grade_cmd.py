"""``cnncheck grade``: grade a folder of submissions, each in a sandboxed child process."""

from __future__ import annotations

import os
import secrets
import sys
import time

import click

from cnncheck import __version__, catalog
from cnncheck import gradcheck as engine
from cnncheck import grade as grading
from cnncheck import report as reporters
from cnncheck.cli.common import usage_errors
from cnncheck.cli.options import (CommaList, MemorySize, check_output_path, layer_parameter_options, names,
                                  parameter_overrides)
from cnncheck.status import ExitCode

HELP = """Grade every submission in DIRECTORY: each *.py file in it, and each
subfolder's layers.py, with the battery of `cnncheck gradcheck`.

\b
Each submission runs in a child process of its own that works in a
temporary copy of the submission (as an unprivileged user of its own when
cnncheck runs as root), cannot import cnncheck (the reference) or the
--forbid-import modules, cannot read the class folder or the grades file,
and only computes forward and backward passes at inputs drawn from a fresh
seed (recorded in the output; --seed reproduces a run).  Every verdict is
computed in this process.  A submission that hangs, exhausts memory, exits
or crashes loses only its own checks.

\b
Per submission and layer the table shows the worst outcome:
  passed   every check of every implementation passed
  failed   a wrong gradient, a difference from the reference, a protocol
           finding, or what a submission may not do (uses-reference, ...)
  error    raised, timed out, crashed, or did not load
  missing  not implemented

\b
Exit status: 0 every submission passed every layer; 1 some did not;
2 a usage error; 130 interrupted (the table shows what finished).
"""

EPILOG = """\b
Examples:
  cnncheck grade submissions/
  cnncheck grade submissions/ --jobs 2 --output grades.csv
  cnncheck grade submissions/ --layers conv,pool --format json > grades.json
  cnncheck grade submissions/ --forbid-import torch,scipy --seed 1234
"""

_RESERVED = ("--seed", "--dtype", "--format", "--layers", "--output", "--timeout")


@click.command("grade", help=HELP, epilog=EPILOG)
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--layers", "layer_names", type=CommaList(), multiple=True, metavar="NAMES",
              help="Layers to grade, comma separated [default: all].")
@layer_parameter_options(_RESERVED)
@click.option("--quick", is_flag=True, help="Grade at the course notebook's geometry only.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              metavar="SECONDS", help="Seconds a submission's import, and each of its layers, may take.")
@click.option("--memory-limit", type=MemorySize(), default="2G", show_default=True, metavar="SIZE",
              help="Memory a submission's code may allocate, such as 512M or 2G; 'none' for no limit (Linux).")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="Submissions graded at the same time (their thread pools share the cores).")
@click.option("--forbid-import", "forbid", type=CommaList(), multiple=True, metavar="MODULES",
              help="Modules submissions may not import, such as torch,scipy (status uses-reference).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Also write the results to FILE: a summary row per submission when it ends in .csv, the "
                   "JSON document otherwise.")
@click.option("--format", "fmt", type=click.Choice(reporters.FORMATS["grade"]), default=None,
              help="Format of the summary on stdout [default: rich on a terminal, plain when piped].")
@click.option("--show-output", is_flag=True,
              help="Print what each submission wrote (its first and last 32 KiB) to stderr after the summary.")
@click.option("--dtype", type=click.Choice(engine.DTYPES), default="float64", show_default=True,
              help="dtype of the inputs.")
@click.option("--seed", type=click.IntRange(min=0), default=None, metavar="INT",
              help="Seed of the inputs [default: a fresh one each run, recorded in the output].")
@click.option("--no-drop-privileges", is_flag=True,
              help="When root, keep running the children as root (they are run as an unprivileged user "
                   "of their own otherwise).")
@click.pass_context
def grade(ctx: click.Context, directory, layer_names, quick, timeout, memory_limit, jobs, forbid, output, fmt,
          show_output, dtype, seed, no_drop_privileges, **params) -> None:
    check_output_path(output, "--output")
    overrides = parameter_overrides(params)
    if quick and overrides:
        raise click.UsageError("--quick grades at the notebook's geometry; it does not apply with layer parameters")
    seed = secrets.randbelow(2 ** 31) if seed is None else seed
    with usage_errors():
        from cnncheck.api import check_overrides_apply
        from cnncheck.loading import builtin_registry

        submissions = grading.discover_submissions(directory)
        registry = builtin_registry()
        specs = registry.expand_layers(names(layer_names) or ["all"])
        check_overrides_apply(overrides, specs, registry.layers())
        for spec in specs:
            spec.resolve(overrides)
        config = engine.GradcheckConfig(dtype=dtype, seed=seed)
        from cnncheck import machine

        env = machine.child_thread_env(jobs) if hasattr(machine, "child_thread_env") else {}
        protect = [os.path.abspath(directory)] + ([os.path.abspath(output)] if output else [])
        settings = grading.GradeSettings(config, tuple(s.name for s in specs), overrides, quick, timeout,
                                         memory_limit, tuple(n for n in names(forbid) if n), tuple(protect),
                                         not no_drop_privileges, env)
    fmt = fmt or reporters.default_format("grade", sys.stdout)
    progress = sys.stderr.isatty()
    finished: dict = {}

    def on_graded(result) -> None:
        finished[result.name] = result
        if progress:
            verdict = "passed" if result.passed else "; ".join(result.problems(60)) or "did not pass"
            click.echo(f"[{len(finished)}/{len(submissions)}] {result.name}: {verdict} ({result.seconds:.1f} s)",
                       err=True)

    start = time.perf_counter()
    interrupted = False
    try:
        grading.grade_all(submissions, settings, jobs=jobs, on_graded=on_graded)
    except KeyboardInterrupt:
        interrupted = True
    seconds = time.perf_counter() - start
    graded = [finished[s.name] for s in submissions if s.name in finished]
    document = grading.to_document(graded, directory=directory, settings=settings, version=__version__,
                                   interrupted=interrupted, with_output=show_output, seconds=seconds)
    from cnncheck.report.grade import GradeSummary

    summary = GradeSummary(graded, document, len(submissions))
    if fmt == "rich":
        from rich.console import Console

        console = Console(file=sys.stdout)
        console.print(reporters.renderable("grade", summary, console.width))
    else:
        click.echo(reporters.render("grade", fmt, summary), nl=False)
    if output:
        grading.write_results_file(output, graded, document)
    if show_output:
        from cnncheck.cli.gradcheck_cmd import describe_output

        for result in graded:
            click.echo(describe_output(result.name, result.output), err=True, nl=False)
    if interrupted:
        click.echo(f"interrupted: {len(graded)} of {len(submissions)} submissions graded", err=True)
        ctx.exit(ExitCode.INTERRUPTED)
    ctx.exit(ExitCode.OK if document["passed"] else ExitCode.FAILED)
