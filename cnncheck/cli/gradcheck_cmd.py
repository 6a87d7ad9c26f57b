"""``cnncheck gradcheck``: the battery of checks, with CI exit codes."""

from __future__ import annotations

import contextlib
import sys

import click

from cnncheck import api, catalog
from cnncheck import gradcheck as engine
from cnncheck import report as reporters
from cnncheck.cli.common import progress_bar, usage_errors
from cnncheck.cli.options import (CommaList, check_output_path, defaults_help, isolation_options,
                                  isolation_settings, layer_parameter_options, memory_bytes, names, parameter_overrides,
                                  sandbox_for)
from cnncheck.numeric import DEFAULT_TOLERANCES
from cnncheck.status import ExitCode

_F64 = DEFAULT_TOLERANCES["float64"]
_F32 = DEFAULT_TOLERANCES["float32"]

HELP = f"""Check LAYER (several, or all; the default) and say whether each
implementation is right, and if not, where.

\b
Every layer runs a battery of checks (what a PASS means):
  - several geometries: the course notebook's first, then ones where every
    size a loop could confuse differs (H != W, HH != WW, pad 0 and > 1,
    stride 1 and > 2, N = 1, C = 1, overlapping and non-square pools,
    2-D to 5-D affine inputs);
  - every gradient against centred differences of the same forward pass;
  - forward output and gradients against the layer's reference
    implementation (--no-reference to skip);
  - the call protocol: forward and backward twice, two caches at once, the
    caller's parameter dict, Fortran-ordered and strided inputs;
  - max-pool ties and relu at 0 (a valid subgradient).
Layer options (--shape, --stride, ...) or --quick check one geometry.

\b
Default sizes of the first geometry (the course notebook's):
{defaults_help(catalog.specs(), "gradcheck")}

\b
Statuses: pass; warning (writes into dout or its inputs, float64 output for
float32 input, ...: fails only with --strict); fail (a wrong gradient, or a
call-protocol or subgradient finding); differs (from the reference); error
(raised, wrong shape, dtype, NaN); not-implemented; timeout; crashed;
protocol-error, uses-reference, forbidden-access, tampering (what isolated
code may not do); internal-error.

\b
Exit status: 0 every check passed; 1 anything failed; 2 a usage error;
130 interrupted.
"""

EPILOG = """\b
Examples:
  cnncheck gradcheck all
  cnncheck gradcheck conv --stride 2 --pad 1
  cnncheck gradcheck all --module cnn/layers.py
  cnncheck gradcheck all --module cnn/layers.py --quick
  cnncheck gradcheck all --format json
  cnncheck gradcheck all --dtype float32 --junit gradcheck.xml
"""

_RESERVED = ("--mode", "--eps", "--seed", "--dtype", "--format", "--impl", "--module")


@click.command("gradcheck", help=HELP, epilog=EPILOG)
@click.argument("layers", nargs=-1, metavar="[LAYER ...|all]")
@layer_parameter_options(_RESERVED)
@click.option("--impl", "impls", type=CommaList(), multiple=True, metavar="NAMES",
              help="Implementations to check, comma separated or repeated (default: every one, or only the "
                   "--module ones; 'all' for every one).")
@click.option("--module", "modules", multiple=True, metavar="PATH.py|MODULE",
              help="A layers module (a .py file or a dotted name) with the course's function names; its layers "
                   "are checked as implementations named after the file. Repeatable.")
@click.option("--no-entry-points", is_flag=True,
              help="Skip implementations that installed packages register (group cnncheck.implementations).")
@click.option("--quick", is_flag=True, help="Check the course notebook's geometry only.")
@click.option("--no-reference", is_flag=True, help="Do not compare with the layer's reference implementation.")
@click.option("--mode", type=click.Choice(engine.MODES), default="auto", show_default=True,
              help=f"full: every element; sample: --samples elements per gradient; directional: --probes random "
                   f"directions; auto: full up to {engine.AUTO_FULL_LIMIT} input elements, directional and "
                   f"sampled elements above.")
@click.option("--samples", type=click.IntRange(min=1), default=None, metavar="K",
              help=f"Elements per gradient in sample and auto mode [default: {engine.DEFAULT_SAMPLES}].")
@click.option("--probes", type=click.IntRange(min=1), default=None, metavar="K",
              help=f"Random directions per gradient in directional and auto mode [default: {engine.DEFAULT_PROBES}].")
@click.option("--eps", type=click.FloatRange(min=0, min_open=True), default=None, metavar="H",
              help=f"Finite-difference step [default: {_F64[0]:g} in float64, {_F32[0]:g} in float32].")
@click.option("--max-error", type=click.FloatRange(min=0, min_open=True), default=None, metavar="TOL",
              help=f"Largest relative error that passes [default: {_F64[1]:g} in float64, {_F32[1]:g} in float32].")
@click.option("--seed", type=click.IntRange(min=0), default=None, metavar="INT",
              help="Seed of the inputs, dout, samples and directions [default: 0; a fresh one, recorded in the "
                   "output, with --format gradescope].")
@click.option("--dtype", type=click.Choice(engine.DTYPES), default="float64", show_default=True,
              help="dtype of the inputs and dout.")
@click.option("--format", "fmt", type=click.Choice(reporters.FORMATS["gradcheck"]), default=None,
              help="Output format [default: rich on a terminal, plain when piped].")
@click.option("--junit", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Also write JUnit XML to FILE (one testcase per check).")
@click.option("--rubric", "rubric_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="With --format gradescope: points per layer and per kind of check (TOML, as for cnncheck "
                   "grade) [default: one point per layer].")
@click.option("--strict", is_flag=True, help="Warnings fail the run too.")
@click.option("--allow-missing", is_flag=True, help="Layers not implemented yet do not fail the run.")
@click.option("--traceback", "show_traceback", is_flag=True,
              help="Print the full traceback of every implementation that raised (to stderr).")
@click.option("-v", "--verbose", is_flag=True, help="Print each implementation's verdict to stderr as it finishes.")
@click.option("--model", "models", multiple=True, metavar="PATH.py:CLASS",
              help="With LAYER 'model': a model class whose loss(X, y) returns every parameter's gradient, such "
                   "as cnn/classifiers/cnn.py:ThreeLayerConvNet (default: cnncheck's own models). Repeatable.")
@click.option("--model-arg", "model_args", multiple=True, metavar="NAME=VALUE",
              help="A constructor argument of the --model class (a Python literal), e.g. hidden_dims=[20,30]. "
                   "Repeatable.")
@isolation_options
@click.pass_context
def gradcheck(ctx: click.Context, layers, impls, modules, no_entry_points, quick, no_reference, mode, samples,
              probes, eps, max_error, seed, dtype, fmt, junit, rubric_file, strict, allow_missing, show_traceback,
              verbose, models, model_args, **params) -> None:
    check_output_path(junit, "--junit")
    if fmt == "gradescope" or rubric_file is not None:
        from cnncheck.cli.grade_cmd import autograde

        if models or model_args or "model" in layers:
            raise click.UsageError("--format gradescope grades layers; models are checked with gradcheck model")
        for flag, given in (("-v", verbose), ("--no-entry-points", no_entry_points)):
            if given:
                raise click.UsageError(f"{flag} does not apply to --format gradescope (a submission is graded on its "
                                       "own, as grade does)")
        if samples is not None and mode in ("full", "directional"):
            raise click.UsageError(f"--samples does not apply to --mode {mode}")
        if probes is not None and mode in ("full", "sample"):
            raise click.UsageError(f"--probes does not apply to --mode {mode}")
        config = dict(mode=mode, samples=samples or engine.DEFAULT_SAMPLES, probes=probes or engine.DEFAULT_PROBES,
                      eps=eps, max_error=max_error, reference=not no_reference)
        autograde(ctx, layers=layers, impls=names(impls), modules=list(modules), params=params, quick=quick,
                  rubric_file=rubric_file, seed=seed, config=config, dtype=dtype, junit=junit, strict=strict,
                  allow_missing=allow_missing, show_traceback=show_traceback)
        return
    seed = 0 if seed is None else seed
    if "model" in layers:
        _models(ctx, layers, models, model_args, params, seed=seed, eps=eps, max_error=max_error, samples=samples,
                probes=probes, dtype=dtype, fmt=fmt, junit=junit, strict=strict, show_traceback=show_traceback)
        return
    if models or model_args:
        raise click.UsageError("--model and --model-arg apply to `cnncheck gradcheck model`")
    if samples is not None and mode in ("full", "directional"):
        raise click.UsageError(f"--samples does not apply to --mode {mode}")
    if probes is not None and mode in ("full", "sample"):
        raise click.UsageError(f"--probes does not apply to --mode {mode}")
    isolation = isolation_settings(params)
    overrides = parameter_overrides(params)
    if quick and overrides:
        raise click.UsageError("--quick checks the notebook's geometry; it does not apply with layer parameters")
    with usage_errors():
        config = engine.GradcheckConfig(mode=mode, samples=samples or engine.DEFAULT_SAMPLES,
                                        probes=probes or engine.DEFAULT_PROBES, eps=eps, max_error=max_error,
                                        dtype=dtype, seed=seed, reference=not no_reference)
        plan = api.prepare(list(layers) or ["all"], names(impls), list(modules), overrides,
                           isolate=isolation.isolate, sandbox=sandbox_for(isolation),
                           entry_points=not no_entry_points, quick=quick)
    try:
        with usage_errors():
            _guard_memory(plan, config, isolation)
        fmt = fmt or reporters.default_format("gradcheck", sys.stdout)
        report = _run(plan, config, fmt, verbose, allow_missing, strict)
        outputs = {source: session.output for source, session in plan.loaded.sessions.items()}
    finally:
        plan.close()
    emit(report, fmt, junit=junit, show_traceback=show_traceback)
    if isolation.show_output:
        for source, output in outputs.items():
            click.echo(describe_output(source, output), err=True, nl=False)
    if report.interrupted:
        done = len(report.implementations())
        click.echo(f"interrupted: {done} of {len(plan.pairs)} implementations checked", err=True)
        ctx.exit(ExitCode.INTERRUPTED)
    ctx.exit(ExitCode.OK if report.passed else ExitCode.FAILED)


def _models(ctx, layers, models, model_args, params, *, seed, eps, max_error, samples, probes, dtype, fmt, junit,
            strict, show_traceback) -> None:
    import ast

    if tuple(layers) != ("model",):
        raise click.UsageError("check models on their own: `cnncheck gradcheck model --model FILE:CLASS`")
    if dtype != "float64":
        raise click.UsageError("models are checked in float64, as the notebooks do")
    isolation = isolation_settings(params)
    if parameter_overrides(params):
        raise click.UsageError("layer parameters do not apply to models; use --model-arg NAME=VALUE")
    kwargs = {}
    for pair in model_args:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise click.BadParameter(f"expected NAME=VALUE, got {pair!r}", param_hint="'--model-arg'")
        try:
            kwargs[key.strip()] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            kwargs[key.strip()] = text.strip()
    with usage_errors():
        config = engine.GradcheckConfig(eps=eps, max_error=max_error, seed=seed,
                                        samples=samples or engine.DEFAULT_SAMPLES,
                                        probes=probes or engine.DEFAULT_PROBES)
        fmt = fmt or reporters.default_format("gradcheck", sys.stdout)
        with contextlib.redirect_stdout(sys.stderr):
            report = api.check_models(list(models), kwargs, config=config, isolate=isolation.isolate,
                                      sandbox=sandbox_for(isolation))
    report = api.Report(results=report.results, config=report.config, strict=strict, version=report.version)
    emit(report, fmt, junit=junit, show_traceback=show_traceback)
    ctx.exit(ExitCode.OK if report.passed else ExitCode.FAILED)


def _guard_memory(plan, config, isolation) -> None:
    from cnncheck import memory

    sized = []
    for spec, _ in plan.pairs:
        for _, params in spec.battery(plan.overrides or None):
            sized.append((spec, params))
    memory.guard(sized, dtype=config.dtype, mode=config.mode, memory_limit=memory_bytes(isolation.memory_limit))


def _run(plan, config, fmt: str, verbose: bool, allow_missing: bool, strict: bool):
    total = len(plan.pairs)
    with progress_bar(fmt == "rich" and sys.stderr.isatty() and not verbose, "checking", total) as update:
        def on_result(batch) -> None:
            if not batch:
                return
            label = f"{batch[0].layer}/{batch[0].impl}"
            if update is not None:
                update(advance=1, description=label)
            if verbose:
                failing = [r for r in batch if r.fails(strict=strict, allow_missing=allow_missing)]
                verdict = f"{failing[0].status} ({failing[0].finding or failing[0].kind})" if failing else "pass"
                click.echo(f"{label}: {verdict} ({batch[0].seconds:.2f} s)", err=True)

        with contextlib.redirect_stdout(sys.stderr):
            return api.check(plan, config, on_result=on_result, keep_on_interrupt=True,
                             allow_missing=allow_missing, strict=strict)


def emit(report, fmt: str, *, junit: str | None = None, show_traceback: bool = False) -> None:
    """Write the report to stdout in ``fmt``, JUnit XML to ``junit``, tracebacks to stderr."""
    if fmt == "rich":
        from rich.console import Console

        console = Console(file=sys.stdout)
        console.print(reporters.renderable("gradcheck", report, console.width))
    else:
        click.echo(reporters.render("gradcheck", fmt, report), nl=False)
    if junit:
        with open(junit, "w", encoding="utf-8") as handle:
            handle.write(reporters.render("gradcheck", "junit", report))
    if show_traceback:
        shown = set()
        for r in report.results:
            if r.traceback and r.traceback not in shown:
                shown.add(r.traceback)
                click.echo(f"--- {r.layer}/{r.impl} {r.subject}: {r.message}", err=True)
                click.echo(r.traceback.rstrip("\n"), err=True)
    elif any(r.traceback for r in report.results) and fmt not in ("json", "junit"):
        click.echo("(run with --traceback to see where the implementations raised)", err=True)


def describe_output(title: str, output) -> str:
    """What code under test wrote, as a block for stderr."""
    if not output:
        return f"--- {title}: no output\n"
    parts = [f"--- {title}: {output.stdout_bytes} bytes on stdout, {output.stderr_bytes} on stderr"
             + (" (cut)" if output.truncated else "")]
    if output.stdout:
        parts.append("stdout:\n" + output.stdout.rstrip("\n"))
    if output.stderr:
        parts.append("stderr:\n" + output.stderr.rstrip("\n"))
    return "\n".join(parts) + "\n"
