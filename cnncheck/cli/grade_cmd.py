"""``cnncheck grade``: grade a folder of submissions, each in a sandboxed child process.

Also :func:`autograde`, what ``cnncheck gradcheck --format gradescope``
runs: one submission graded the same way, written as an autograder
document.
"""

from __future__ import annotations

import os
import secrets
import stat
import sys
import time
from dataclasses import replace

import click

from cnncheck import __version__
from cnncheck import gradcheck as engine
from cnncheck import grade as grading
from cnncheck import report as reporters
from cnncheck.cli.common import usage_errors
from cnncheck.cli.options import (CommaList, MemorySize, check_output_path, layer_parameter_options, memory_bytes, names,
                                  parameter_overrides)
from cnncheck.status import ExitCode

HELP = """Grade every submission in DIRECTORY: each *.py file in it, and each
subfolder's layers.py, with the battery of `cnncheck gradcheck`, and score
it against a rubric (--rubric; default: one point per layer).

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
The table shows, per submission, its status (passed, failed, load-error,
timeout, crashed, internal-error, or what it may not do: uses-reference,
forbidden-access, tampering, protocol-error), its points, its time and
one line per layer that did not pass.  --feedback DIR writes one Markdown
file per submission with what `cnncheck gradcheck` would have told the
student and what to try next.  --output writes the class summary (CSV) or
the JSON document, which --resume reads back to skip the submissions
already graded with the same files, rubric, settings and cnncheck version.

\b
Exit status: 0 every submission passed every layer; 1 some did not;
2 a usage error; 130 interrupted (the table shows what finished).
"""

EPILOG = """\b
Examples:
  cnncheck grade submissions/
  cnncheck grade submissions/ --jobs 2 --output grades.csv
  cnncheck grade submissions/ --rubric rubric.toml --feedback feedback/ --output grades.json
  cnncheck grade submissions/ --output grades.json --resume
  cnncheck grade submissions/ --layers conv,pool --format json > grades.json
  cnncheck grade submissions/ --forbid-import torch,scipy --seed 1234
"""

_RESERVED = ("--seed", "--dtype", "--format", "--layers", "--output", "--timeout")

#: Defaults of a graded run's limits (grade, and gradcheck --format gradescope).
DEFAULT_TIMEOUT = 30.0
DEFAULT_MEMORY_LIMIT = "2G"


@click.command("grade", help=HELP, epilog=EPILOG)
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--layers", "layer_names", type=CommaList(), multiple=True, metavar="NAMES",
              help="Layers to grade, comma separated [default: the rubric's, or all].")
@layer_parameter_options(_RESERVED)
@click.option("--rubric", "rubric_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Points per layer and per kind of check, with partial credit (TOML) [default: one point per "
                   "layer, all or nothing].")
@click.option("--feedback", "feedback_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Write one Markdown file per submission into DIR (created if missing).")
@click.option("--quick", is_flag=True, help="Grade at the course notebook's geometry only.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_TIMEOUT, show_default=True,
              metavar="SECONDS", help="Seconds a submission's import, and each of its layers, may take.")
@click.option("--memory-limit", type=MemorySize(), default=DEFAULT_MEMORY_LIMIT, show_default=True, metavar="SIZE",
              help="Memory a submission's code may allocate, such as 512M or 2G; 'none' for no limit (Linux).")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="Submissions graded at the same time (their thread pools share the cores).")
@click.option("--forbid-import", "forbid", type=CommaList(), multiple=True, metavar="MODULES",
              help="Modules submissions may not import, such as torch,scipy (status uses-reference).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Also write the results to FILE: a summary row per submission when it ends in .csv, the "
                   "JSON document otherwise.")
@click.option("--resume", is_flag=True,
              help="Keep the submissions the JSON --output already holds (from a finished or interrupted run) "
                   "when their files, the rubric, the settings and cnncheck's version are the same; grade the "
                   "rest.  The seed is the earlier run's unless --seed is given.")
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
def grade(ctx: click.Context, directory, layer_names, rubric_file, feedback_dir, quick, timeout, memory_limit, jobs,
          forbid, output, resume, fmt, show_output, dtype, seed, no_drop_privileges, **params) -> None:
    check_output_path(output, "--output")
    if resume and (not output or grading.is_csv(output)):
        raise click.UsageError("--resume reads back the JSON document of --output; give --output grades.json")
    if output and not grading.is_csv(output):
        check_output_path(grading.checkpoint_path(output), "--output")
    check_feedback_dir(feedback_dir)
    overrides = parameter_overrides(params)
    if quick and overrides:
        raise click.UsageError("--quick grades at the notebook's geometry; it does not apply with layer parameters")
    previous = None
    with usage_errors():
        if resume:
            previous = grading.read_previous(output)
        submissions = grading.discover_submissions(directory)
    if seed is None:
        seed = previous.seed if previous is not None and previous.seed is not None else secrets.randbelow(2 ** 31)
    protect = [os.path.abspath(directory)]
    protect += [os.path.abspath(p) for p in (output, output and grading.checkpoint_path(output), feedback_dir,
                                             rubric_file) if p]
    settings = grade_settings(layer_names, overrides, rubric_file, quick=quick, timeout=timeout,
                              memory_limit=memory_limit, forbid=forbid, protect=protect, seed=seed, dtype=dtype,
                              drop_privileges=not no_drop_privileges, jobs=jobs)
    fmt = fmt or reporters.default_format("grade", sys.stdout)
    progress = sys.stderr.isatty()
    finished: dict = {}
    with usage_errors():
        done = grading.resumable(previous, submissions, settings, __version__)
    if resume:
        click.echo(f"resuming from {output}: {len(done)} of {len(submissions)} submissions already graded with the "
                   f"same files, rubric and settings (seed {seed})", err=True)
    checkpoint = None
    if output and not grading.is_csv(output):
        checkpoint = grading.Checkpoint(grading.checkpoint_path(output), key=settings.key(__version__), seed=seed,
                                        version=__version__)
    for name, result in done.items():
        finished[name] = result
        if checkpoint is not None:
            checkpoint.add(result)

    def on_graded(result) -> None:
        finished[result.name] = result
        if checkpoint is not None:
            checkpoint.add(result)
        if progress:
            verdict = "passed" if result.passed else "; ".join(result.problems(60)) or "did not pass"
            click.echo(f"[{len(finished)}/{len(submissions)}] {result.name}: {result.points:g}/"
                       f"{result.max_points:g}, {verdict} ({result.seconds:.1f} s)", err=True)

    start = time.perf_counter()
    interrupted = False
    try:
        grading.grade_all([s for s in submissions if s.name not in done], settings, jobs=jobs, on_graded=on_graded)
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
    if checkpoint is not None:
        checkpoint.close(remove=True)
    if feedback_dir:
        write_feedback(feedback_dir, graded, document)
    if show_output:
        from cnncheck.cli.gradcheck_cmd import describe_output

        for result in graded:
            click.echo(describe_output(result.name, result.output), err=True, nl=False)
    if interrupted:
        click.echo(f"interrupted: {len(graded)} of {len(submissions)} submissions graded"
                   + (f"; --resume grades the rest into {output}" if output and not grading.is_csv(output) else ""),
                   err=True)
        ctx.exit(ExitCode.INTERRUPTED)
    ctx.exit(ExitCode.OK if document["passed"] else ExitCode.FAILED)


def check_feedback_dir(folder) -> None:
    """Refuse, before any work, a feedback folder that cannot be made or written."""
    if folder is None:
        return
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise click.BadParameter(f"{folder} is a file; give a folder", param_hint="'--feedback'")
    parent = os.path.dirname(os.path.abspath(folder))
    if not os.path.isdir(folder) and not os.path.isdir(parent):
        raise click.BadParameter(f"the folder {parent} does not exist", param_hint="'--feedback'")
    if not os.access(folder if os.path.isdir(folder) else parent, os.W_OK):
        raise click.BadParameter(f"cannot write into {folder} (permission denied)", param_hint="'--feedback'")


def write_feedback(folder, graded, document: dict) -> None:
    """One Markdown file per submission in ``folder``."""
    from cnncheck.report import feedback

    os.makedirs(folder, exist_ok=True)
    for sub in graded:
        with open(os.path.join(folder, feedback.file_name(sub)), "w", encoding="utf-8") as handle:
            handle.write(feedback.markdown(sub, document))


def grade_settings(layer_names, overrides: dict, rubric_file, *, quick: bool, timeout, memory_limit, forbid,
                   protect, seed: int, dtype: str = "float64", drop_privileges: bool = True, jobs: int = 1,
                   strict: bool = False, config: dict | None = None) -> grading.GradeSettings:
    """The settings of a graded run, the rubric read and checked against the layers (usage errors otherwise)."""
    from cnncheck import memory, rubric
    from cnncheck.api import check_overrides_apply
    from cnncheck.loading import builtin_registry

    with usage_errors():
        loaded_rubric = rubric.load_rubric(rubric_file) if rubric_file else None
        registry = builtin_registry()
        if loaded_rubric is not None:
            loaded_rubric.check_names({s.name: s for s in registry.layers()})
        requested = names(layer_names) or (loaded_rubric.layers if loaded_rubric is not None else ["all"])
        specs = registry.expand_layers(requested)
        check_overrides_apply(overrides, specs, registry.layers())
        for spec in specs:
            spec.resolve(overrides)
        checks = engine.GradcheckConfig(dtype=dtype, seed=seed, **(config or {}))
        sized = [(spec, params) for spec in specs for _, params in
                 (spec.battery(overrides or None)[:1] if quick else spec.battery(overrides or None))]
        memory_limit = memory_bytes(memory_limit)
        memory.guard(sized, dtype=checks.dtype, mode=checks.mode, parallel=jobs, memory_limit=memory_limit)
        from cnncheck import machine

        env = machine.child_thread_env(jobs)
        settings = grading.GradeSettings(checks, tuple(s.name for s in specs), overrides, quick, timeout,
                                         memory_limit, tuple(n for n in names(forbid) if n), tuple(protect),
                                         drop_privileges, env, strict=strict)
        if loaded_rubric is not None:
            layers = {s.name: s for s in registry.layers()}
            resolved = loaded_rubric.resolve(layers, battery=settings.battery(), reference=checks.reference,
                                             protocol=checks.protocol,
                                             has_reference={n: registry.reference(s) is not None
                                                            for n, s in layers.items()})
            settings = replace(settings, rubric=resolved)
    return settings


def _stdout_file() -> str | None:
    """The file stdout is redirected to, when it is one (``> results.json``)."""
    try:
        fd = sys.stdout.fileno()
        if stat.S_ISREG(os.fstat(fd).st_mode):
            link = f"/proc/self/fd/{fd}"
            return os.path.realpath(link) if os.path.exists(link) else None
    except (OSError, ValueError, AttributeError):
        pass
    return None


def autograde(ctx: click.Context, *, layers, impls, modules, params: dict, quick: bool, rubric_file, seed,
              config: dict, dtype: str, junit, strict: bool, allow_missing: bool, show_traceback: bool) -> None:
    """``cnncheck gradcheck --format gradescope``: grade one submission as ``grade`` does; write results.json.

    The submission (``--module``: its file, or the folder holding its
    ``layers.py``) is copied and run in a sandboxed child (as an
    unprivileged user when root), from a fresh seed unless ``--seed`` is
    given, with the limits of ``grade`` unless given.  A module that does
    not load still gives a valid document: every test 0 with the reason.
    """
    from cnncheck.api import Report
    from cnncheck.cli.gradcheck_cmd import describe_output
    from cnncheck.cli.options import isolation_settings
    from cnncheck.report.gradescope import Autograded

    isolation = isolation_settings(params)
    overrides = parameter_overrides(params)
    if ctx.params.get("fmt") != "gradescope":
        raise click.UsageError("--rubric applies to --format gradescope here (and to cnncheck grade)")
    if isolation.isolate is False:
        raise click.UsageError("--format gradescope runs the submission in a sandboxed child; it does not apply "
                               "with --no-isolate")
    if impls:
        raise click.UsageError("--format gradescope grades the --module's own implementations; --impl does not apply")
    if len(modules) != 1:
        raise click.UsageError("--format gradescope grades one submission: give one --module (its .py file, or the "
                               "folder holding its layers.py)")
    if quick and overrides:
        raise click.UsageError("--quick checks the notebook's geometry; it does not apply with layer parameters")
    if not layers and rubric_file is None:
        raise click.UsageError("--format gradescope needs to know what is worth points: give --rubric FILE, or name "
                               "the layers (affine relu conv pool, or all)")
    with usage_errors():
        submission = grading.submission_at(modules[0])
    seed = secrets.randbelow(2 ** 31) if seed is None else seed
    protect = [os.path.abspath(submission.root or submission.path)]
    protect += [os.path.abspath(p) for p in (junit, rubric_file, _stdout_file()) if p]
    memory_limit = isolation.memory_limit if isolation.memory_limit is not None else \
        MemorySize().convert(DEFAULT_MEMORY_LIMIT, None, None)      # NO_LIMIT stays: --memory-limit none
    settings = grade_settings([tuple(layers)], overrides, rubric_file, quick=quick,
                              timeout=isolation.timeout or DEFAULT_TIMEOUT, memory_limit=memory_limit,
                              forbid=[isolation.forbid], protect=protect, seed=seed, dtype=dtype, strict=strict,
                              config=config)
    start = time.perf_counter()
    try:
        (result,) = grading.grade_all([submission], settings)
    except KeyboardInterrupt:
        click.echo("interrupted: no results.json written", err=True)
        ctx.exit(ExitCode.INTERRUPTED)
    context = {"seed": seed, "version": __version__, "config": settings.config.to_dict(),
               "layers": list(settings.layers), "quick": quick, "overrides": dict(overrides), "strict": strict}
    run = Autograded(result, context, time.perf_counter() - start)
    click.echo(reporters.render("gradcheck", "gradescope", run), nl=False)
    report = Report(results=result.results, config=context["config"], allow_missing=allow_missing, strict=strict,
                    version=__version__)
    if junit:
        with open(junit, "w", encoding="utf-8") as handle:
            handle.write(reporters.render("gradcheck", "junit", report))
    if show_traceback:
        for shown in dict.fromkeys(r.traceback for r in result.results if r.traceback):
            click.echo(shown.rstrip("\n"), err=True)
    if isolation.show_output:
        click.echo(describe_output(result.name, result.output), err=True, nl=False)
    ctx.exit(ExitCode.OK if result.status == "ok" and report.passed else ExitCode.FAILED)
