"""``cnncheck gradcheck``: analytic gradients against centred differences, with CI exit codes."""

from __future__ import annotations

import contextlib
import sys

import click

from cnncheck import __version__
from cnncheck import gradcheck as engine
from cnncheck import isolate, memory
from cnncheck.catalog import SPECS
from cnncheck.cli.common import progress_bar, usage_errors
from cnncheck.cli.isolation_options import isolation_options, isolation_settings
from cnncheck.cli.options import CommaList, defaults_help, layer_parameter_options, parameter_overrides
from cnncheck.plugins import build_registry
from cnncheck.report import gradcheck as report
from cnncheck.results import GradcheckReport

FORMATS = ("rich", "plain", "markdown", "github", "json")

#: Exit status of a run stopped with Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130  # keep equal to cnncheck.cli.main.EXIT_INTERRUPTED


_F64 = engine.DEFAULT_TOLERANCES["float64"]
_F32 = engine.DEFAULT_TOLERANCES["float32"]

HELP = f"""Check the backward pass of LAYER (several, or all; default all) against
centred differences of the same implementation's forward pass.

For every gradient (dx, dw, db) the table shows the course notebook's rel_error, the
largest absolute error and where the worst element is.  Inputs come from
--seed and keep a margin of 10 x --eps from relu's kink and max-pool ties.

\b
Default sizes, those of the course notebook's checks; the shape options override them:
{defaults_help(SPECS, "gradcheck", ",")}

\b
Statuses: pass; fail (gradients disagree); kink (the disagreement sits on a
nondifferentiable point; not a failure); error (raised, wrong shape or
dtype, NaN or inf); not-implemented (backward returned None); mutates-input
(changed x, w, b, dout or its cache in place).

\b
Exit status: 0 every gradient passed; 1 any fail, error, mutates-input or
not-implemented (unless --allow-missing); 2 a usage error; 130 interrupted.
"""

EPILOG = """\b
Examples:
  cnncheck gradcheck conv --stride 2 --pad 1
  cnncheck gradcheck all
  cnncheck gradcheck all --format json
  cnncheck gradcheck conv --module cnn/layers.py
  cnncheck gradcheck all --module student/layers.py --timeout 10 --memory-limit 2G
  cnncheck gradcheck conv --impl fast --shape 32,64,32,32 --filters 64 --mode directional
  cnncheck gradcheck all --dtype float32 --junit gradcheck.xml
"""


@contextlib.contextmanager
def _progress(enabled: bool, total: int):
    """Yields a callback(label) that advances a progress bar by one check, or None when off."""
    with progress_bar(enabled, "checking", total) as update:
        yield None if update is None else (lambda label: update(advance=1, description=label))


@click.command("gradcheck", help=HELP, epilog=EPILOG)
@click.argument("layers", nargs=-1, metavar="[LAYER ...|all]")
@layer_parameter_options
@click.option("--impl", "impls", type=CommaList(), multiple=True, metavar="NAMES",
              help="Implementations to check, comma separated or repeated (default: every one, or only the "
                   "--module ones when --module is given; 'all' for every one).")
@click.option("--module", "modules", multiple=True, metavar="PATH.py|MODULE",
              help="Load a user layers module (a .py file or a dotted name) that uses the course notebook's function "
                   "names; its layers are checked as implementations named after the file. Repeatable. "
                   "Loading runs the module's code.")
@click.option("--no-entry-points", is_flag=True,
              help="Do not load implementations registered by installed packages (entry-point group "
                   "cnncheck.implementations).")
@click.option("--mode", type=click.Choice(engine.MODES), default="auto", show_default=True,
              help=f"full: every element; sample: --samples random elements per gradient; directional: "
                   f"--probes random directions (2 forward calls each, whatever the size); auto: full up to "
                   f"{engine.AUTO_FULL_LIMIT} input elements, directional above.")
@click.option("--samples", type=click.IntRange(min=1), default=engine.DEFAULT_SAMPLES, show_default=True,
              metavar="K", help="Elements per gradient in sample mode.")
@click.option("--probes", type=click.IntRange(min=1), default=engine.DEFAULT_PROBES, show_default=True,
              metavar="K", help="Random directions per gradient in directional mode.")
@click.option("--eps", type=click.FloatRange(min=0, min_open=True), default=None,
              help=f"Finite-difference step (default {_F64[0]:g} in float64, {_F32[0]:g} in float32).")
@click.option("--max-error", type=click.FloatRange(min=0, min_open=True), default=None, metavar="TOL",
              help=f"Largest relative error that passes (default {_F64[1]:g} in float64, {_F32[1]:g} in float32).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the random inputs, dout, samples and directions.")
@click.option("--dtype", type=click.Choice(engine.DTYPES), default="float64", show_default=True,
              help="dtype of the inputs and dout the implementations get.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Output format (default: rich on a terminal, plain when piped).")
@click.option("--junit", type=click.Path(dir_okay=False, writable=True), default=None, metavar="FILE",
              help="Also write JUnit XML to FILE (one testcase per layer, implementation and gradient).")
@click.option("--traceback", "show_traceback", is_flag=True,
              help="Print the full traceback of every implementation that raised (to stderr).")
@click.option("--allow-missing", is_flag=True,
              help="Do not fail the run for not-implemented gradients (skeletons returning None).")
@click.option("-v", "--verbose", is_flag=True, help="Print each implementation's outcome to stderr as it finishes.")
@isolation_options
@click.pass_context
def gradcheck(ctx: click.Context, layers, impls, modules, no_entry_points, mode, samples, probes, eps, max_error, seed, dtype,
              fmt, junit, show_traceback, allow_missing, verbose, **params) -> None:
    isolation = isolation_settings(params)
    overrides = parameter_overrides(params)
    impl_names = [name for group in impls for name in group]
    # What user modules print (at import or while checked) is a diagnostic: keep it off stdout.
    with usage_errors(), contextlib.redirect_stdout(sys.stderr):
        config = engine.GradcheckConfig(mode=mode, samples=samples, probes=probes, eps=eps, max_error=max_error,
                                        dtype=dtype, seed=seed)
        if isolation.isolate:
            # User modules are imported in child processes only; the built-in layers suffice here.
            registry = build_registry((), entry_points=not no_entry_points)
            selection = isolate.Selection(tuple(layers) or ("all",), tuple(impl_names), tuple(modules), overrides,
                                          config, not no_entry_points)
            items = isolate.plan_checks_isolated(selection, timeout=isolation.timeout,
                                                 memory_limit=isolation.memory_limit)
            sized = [(registry.layer(job.layer), registry.layer(job.layer).resolve(job.overrides)) for job in items]
        else:
            registry = build_registry(modules, entry_points=not no_entry_points)
            items = engine.select_checks(registry, list(layers) or ["all"], impl_names, list(modules), overrides)
            sized = [(spec, resolved) for spec, _, resolved in items]
        memory.guard(sized, dtype=dtype, mode=mode, memory_limit=isolation.memory_limit, force=isolation.force)
    if fmt is None:
        fmt = "rich" if sys.stdout.isatty() else "plain"

    finished: list = []
    per_check: dict = {}
    stderr = sys.stderr
    interrupted = False
    with _progress(fmt == "rich" and stderr.isatty() and not verbose, len(items)) as advance:
        def on_result(result) -> None:
            finished.append(result)
            batch = per_check.setdefault((result.layer, result.impl), [])
            batch.append(result)
            if len(batch) < len(registry.layer(result.layer).grads):
                return
            if advance is not None:
                advance(f"{result.layer}/{result.impl}")
            if verbose:
                statuses = ", ".join(f"{r.gradient} {r.status}" for r in batch)
                click.echo(f"{result.layer}/{result.impl}: {statuses} ({batch[0].seconds:.2f} s)", err=True)

        outcomes: list = []
        try:
            if isolation.isolate:
                isolate.run_checks_isolated(items, timeout=isolation.timeout, memory_limit=isolation.memory_limit,
                                            on_result=on_result, on_outcome=outcomes.append)
            else:
                with contextlib.redirect_stdout(sys.stderr):
                    engine.run_checks(items, config, on_result=on_result)
        except KeyboardInterrupt:
            interrupted = True

    result = GradcheckReport(results=tuple(finished), config=config.to_dict(), allow_missing=allow_missing,
                             interrupted=interrupted, version=__version__)
    emit_report(result, fmt, junit=junit, show_traceback=show_traceback)
    if isolation.show_output:
        for outcome in outcomes:
            click.echo(isolate.describe_output(f"{outcome.layer}/{outcome.impl}", outcome.output), err=True, nl=False)
    if isolation.memory_limit is not None and any(not outcome.memory_limited for outcome in outcomes):
        click.echo("warning: --memory-limit cannot be applied on this system; the checks ran without it", err=True)
    if interrupted:
        click.echo(f"interrupted: {len({(r.layer, r.impl) for r in finished})} of {len(items)} checks finished",
                   err=True)
        ctx.exit(EXIT_INTERRUPTED)
    ctx.exit(0 if result.passed else 1)


def emit_report(result: GradcheckReport, fmt: str, *, junit: str | None = None, show_traceback: bool = False) -> None:
    """Write the report to stdout in ``fmt``, JUnit XML to ``junit``, tracebacks to stderr."""
    if fmt == "rich":
        from rich.console import Console

        Console(file=sys.stdout).print(report.rich_renderable(result))
    else:
        click.echo(report.render_text(result, fmt), nl=False)
    if junit:
        with open(junit, "w", encoding="utf-8") as handle:
            handle.write(report.junit_xml(result))
    if show_traceback:
        shown = set()
        for r in result.results:
            if r.traceback and r.traceback not in shown:
                shown.add(r.traceback)
                click.echo(f"--- {r.layer}/{r.impl} {r.gradient}: {r.message}", err=True)
                click.echo(r.traceback.rstrip("\n"), err=True)
    elif any(r.traceback for r in result.results) and fmt != "json":
        click.echo("(run with --traceback to see where the implementations raised)", err=True)

