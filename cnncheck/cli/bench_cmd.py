"""``cnncheck bench``: time implementations against each layer's baseline, with CI exit codes.

The command only wires: :func:`cnncheck.api.prepare` loads and selects,
:mod:`cnncheck.bench` checks, compares and times, :mod:`cnncheck.report`
renders, :mod:`cnncheck.compare` holds the run against a saved one.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

import click

from cnncheck import __version__, api, catalog, machine, memory
from cnncheck import bench as engine
from cnncheck import report as reporters
from cnncheck.cli.common import usage_errors
from cnncheck.cli.options import (CommaList, check_output_path, defaults_help, isolation_options,
                                  isolation_settings, layer_parameter_options, memory_bytes, names, parameter_overrides,
                                  sandbox_for)
from cnncheck.results import BenchConfig
from cnncheck.status import ExitCode

HELP = f"""Time the forward and backward passes of LAYER (several, or all; the
default) and compare each implementation with the layer's reference.

Each implementation is first called once, forward then backward, and judged
as gradcheck judges it (an exception, sys.exit, None, the wrong shape or
dtype, NaN); its output and gradients are compared with the baseline's (the
course notebook's rel_error, --max-diff).  It is then timed next to its code
(in a child process for --module files): a warm-up call, then runs until
--repeat runs and --min-time seconds, stopping early at --max-seconds
(limited, *).  A first call that already took half of --max-seconds is the one
timed run.  The table shows the median, the IQR, the runs, the speedup over
the baseline, GFLOP/s and percent of this machine's GEMM peak (conv, affine)
or GB/s (pool, relu), and the difference from the baseline.

\b
Baselines: each layer's reference unless --baseline names another
implementation:
{chr(10).join(f"  {spec.name:<8} {spec.reference}" for spec in catalog.specs() if spec.reference)}

\b
Default sizes, those of the course notebook's timing cells; the layer
options override them:
{defaults_help(catalog.specs(), "bench")}

\b
Statuses: ok; differs (from the baseline beyond --max-diff); slow (below
--min-speedup); error; not-implemented; timeout; crashed; and the other
statuses of gradcheck.

\b
Exit status: 0 every row measured and agreeing; 1 a row is not ok, or a
regression against --compare; 2 a usage error; 130 interrupted (the rows
that finished are printed).
"""

EPILOG = """\b
Examples:
  cnncheck bench pool
  cnncheck bench conv --module cnn/layers.py
  cnncheck bench conv --impl fast --shape 64,64,32,32 --filters 64 --stride 1
  cnncheck bench conv --impl fast,torch --baseline torch
  cnncheck bench all --format json --save base.json
  cnncheck bench all --compare base.json --max-regression 20%
  cnncheck bench conv --impl fast --sweep N=1,2,4,8,16,32,64 --plot conv.png
"""

_RESERVED = ("--seed", "--dtype", "--format", "--impl", "--module", "--repeat", "--baseline", "--sweep",
             "--threads", "--save", "--compare", "--plot", "--force")

#: Environment variables that size the thread pools of BLAS, OpenMP and their kin in a child process.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                     "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def _sweep_help() -> str:
    letters = {}
    for spec in catalog.specs():
        for letter in spec.sweep:
            letters.setdefault(letter, []).append(spec.name)
    listed = ", ".join(f"{letter} ({', '.join(layers)})" for letter, layers in letters.items())
    return (f"Time across values of one parameter and fit how time grows with work: a dimension letter, {listed}, "
            "or an integer parameter such as stride, pad, filters, kernel, pool_height.")


def _parse_sweep(ctx, param, value):
    if value is None:
        return None
    from cnncheck import sweep as sweep_lib

    with usage_errors(param_hint="'--sweep'"):
        return sweep_lib.parse_sweep(value)


def _parse_fraction(ctx, param, value):
    if value is None:
        return None
    from cnncheck import compare as compare_lib

    with usage_errors(param_hint="'--max-regression'"):
        return compare_lib.parse_fraction(value)


@contextlib.contextmanager
def _progress(enabled: bool):
    """A transient progress bar on stderr: the row being measured, how long it has taken so far, rows done.

    Yields the callback for :func:`cnncheck.bench.iter_bench`, or None when off.
    """
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class RowElapsed(ProgressColumn):
        """Seconds spent on the current row, ticking while a slow call runs."""

        def render(self, task):
            start = task.fields.get("row_start")
            return Text("" if start is None else f"{time.monotonic() - start:6.1f} s", style="progress.elapsed")

    columns = (TextColumn("{task.description:<30}"), RowElapsed(), BarColumn(bar_width=24), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("timing", total=None, row_start=None)

        def update(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=label or "done", row_start=time.monotonic())

        yield update


def _sandbox(isolation, threads):
    """The child processes' limits, with the same thread pools as this process (``--threads`` or none)."""
    import dataclasses

    sandbox = sandbox_for(isolation)
    env = {k: v for k, v in sandbox.env.items() if k not in _THREAD_VARIABLES}
    if threads is not None:
        env.update(dict.fromkeys(_THREAD_VARIABLES, str(threads)))
    return dataclasses.replace(sandbox, env=env)


@click.command("bench", help=HELP, epilog=EPILOG)
@click.argument("layers", nargs=-1, metavar="[LAYER ...|all]")
@layer_parameter_options(_RESERVED)
@click.option("--impl", "impls", type=CommaList(), multiple=True, metavar="NAMES",
              help="Implementations to time, comma separated or repeated (default: every one, or the --module "
                   "ones and each layer's baseline; 'all' for every one). A list without the baseline leaves it "
                   "out: no speedups or differences, useful for large shapes.")
@click.option("--module", "modules", multiple=True, metavar="PATH.py|MODULE",
              help="A layers module (a .py file or a dotted name) with the course's function names; its layers "
                   "are timed as implementations named after the file. Repeatable.")
@click.option("--no-entry-points", is_flag=True,
              help="Skip implementations that installed packages register (group cnncheck.implementations).")
@click.option("--baseline", default=None, metavar="IMPL",
              help="Implementation speedups and differences are measured against, timed even when --impl "
                   "leaves it out [default: each layer's reference].")
@click.option("--repeat", type=click.IntRange(min=1), default=5, show_default=True, metavar="INT",
              help="Least number of timed runs per measurement.")
@click.option("--min-time", type=click.FloatRange(min=0), default=0.5, show_default=True, metavar="SECONDS",
              help="Least total seconds of timed runs per measurement.")
@click.option("--max-seconds", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              metavar="SECONDS",
              help="Seconds of runs after which a measurement starts no new run (at least one is made); it is "
                   "then marked limited (*). A first call taking half of this is the one timed run.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, metavar="INT",
              help="Seed of the random inputs.")
@click.option("--dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True,
              help="dtype of the inputs, and of the GEMM peak.")
@click.option("--threads", type=click.IntRange(min=1), default=None, metavar="INT",
              help="Limit BLAS and OpenMP threads, here and in child processes [default: the libraries' own].")
@click.option("--format", "fmt", type=click.Choice(reporters.FORMATS["bench"]), default=None,
              help="Output format [default: rich on a terminal, plain when piped].")
@click.option("--save", type=click.Path(dir_okay=False), default=None, metavar="FILE.json",
              help="Also write the JSON result to FILE, for a later --compare.")
@click.option("--compare", "compare_file", type=click.Path(dir_okay=False), default=None, metavar="FILE.json",
              help="Compare medians and speedups with a saved result; a regression beyond --max-regression "
                   "exits 1.")
@click.option("--max-regression", default=None, callback=_parse_fraction, metavar="PERCENT",
              help="Largest slowdown allowed against --compare, such as 20% or 0.2 [default: 20%].")
@click.option("--min-speedup", type=click.FloatRange(min=0, min_open=True), default=None, metavar="X",
              help="Exit 1 when an implementation is not X times faster than the baseline.")
@click.option("--max-diff", type=click.FloatRange(min=0), default=None, metavar="TOL",
              help=f"Largest difference from the baseline that agrees: the course notebook's rel_error; in "
                   f"float32 its denominator is floored at 1e-3 of the outputs' scale [default: "
                   f"{engine.DEFAULT_MAX_DIFF['float64']:g} in float64, {engine.DEFAULT_MAX_DIFF['float32']:g} "
                   f"in float32].")
@click.option("--sweep", callback=_parse_sweep, default=None, metavar="PARAM=V1,V2,...", help=_sweep_help())
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Draw the sweep to a .png, .svg or .pdf (needs pip install 'cnncheck[plot]').")
@click.option("--force", is_flag=True,
              help="Run even when the estimated memory of a measurement exceeds what is available now.")
@isolation_options
@click.pass_context
def bench(ctx: click.Context, layers, impls, modules, no_entry_points, baseline, repeat, min_time, max_seconds,
          seed, dtype, threads, fmt, save, compare_file, max_regression, min_speedup, max_diff, sweep, plot_file,
          force, **kwargs) -> None:
    check_output_path(save, "--save")
    check_output_path(plot_file, "--plot")
    if plot_file is not None:
        from cnncheck import plot

        if sweep is None:
            raise click.UsageError("--plot draws a sweep; add --sweep PARAM=V1,V2,...")
        with usage_errors(param_hint="'--plot'"):
            plot.check_path(plot_file)
            plot.require_matplotlib()
    if max_regression is not None and compare_file is None:
        raise click.UsageError("--max-regression bounds the change against a saved run; add --compare FILE.json")
    isolation = isolation_settings(kwargs)
    if isolation.timeout is not None and isolation.timeout <= max_seconds:
        raise click.UsageError(f"--timeout {isolation.timeout:g} would stop measurements that --max-seconds "
                               f"{max_seconds:g} allows; give a --timeout above --max-seconds, or a smaller "
                               "--max-seconds")
    overrides = parameter_overrides(kwargs)
    impl_names = names(impls)
    layer_names = list(layers) or ["all"]
    max_diff_given = max_diff is not None
    if max_diff is None:
        max_diff = engine.DEFAULT_MAX_DIFF[dtype]
    if compare_file is not None and max_regression is None:
        max_regression = 0.2

    with usage_errors():
        plan = api.prepare(layer_names, impl_names, list(modules), {}, isolate=isolation.isolate,
                           sandbox=_sandbox(isolation, threads), entry_points=not no_entry_points)
    try:
        with usage_errors():
            registry = plan.loaded.registry
            specs = registry.expand_layers(layer_names)
            api.check_overrides_apply(overrides, specs, registry.layers())
            if baseline is not None:
                engine.check_baseline(registry, specs, baseline)
            pairs = plan.pairs
            if not impl_names or baseline is not None:
                pairs = engine.add_baselines(registry, pairs, baseline)
            cases = engine.plan_cases(pairs, overrides=overrides, baseline=baseline, sweep=sweep)
            config = BenchConfig(
                layers=tuple(layer_names), impls=tuple(impl_names), baseline=baseline, dtype=dtype, repeat=repeat,
                min_time=min_time, max_seconds=max_seconds, seed=seed, threads=threads, max_diff=max_diff,
                min_speedup=min_speedup, max_regression=max_regression, compare=compare_file,
                sweep_param=sweep.param if sweep else None, sweep_values=sweep.values if sweep else (),
                overrides=overrides, modules=tuple(modules))
            failed = engine.failed_module_rows(plan.failed, registry, config)
            if cases or not failed:
                engine.check_plan(cases, config, max_diff_given=max_diff_given)
            memory.guard(((case.spec, case.params) for case in cases), purpose="bench", dtype=dtype,
                         memory_limit=memory_bytes(isolation.memory_limit), force=force)
        saved = None
        if compare_file is not None:
            from cnncheck import compare as compare_lib

            with usage_errors(param_hint="'--compare'"):
                saved = compare_lib.load_result(compare_file)
                compare_lib.require_overlap(saved, engine.planned_keys(cases, dtype), source=compare_file)
        fmt = fmt or reporters.default_format("bench", sys.stdout)
        rows, facts, interrupted = _run(plan, cases, config)
        outputs = {source: session.output for source, session in plan.loaded.sessions.items()}
    finally:
        plan.close()

    results = tuple(failed) + tuple(rows)
    fits, comparisons, info = (), (), None
    if not interrupted:
        from cnncheck import sweep as sweep_lib

        fits = sweep_lib.fit_sweep(results, sweep.param) if sweep else ()
        if saved is not None:
            from cnncheck import compare as compare_lib

            with usage_errors(param_hint="'--compare'"):
                comparisons, info = compare_lib.compare_results(saved, results, max_regression,
                                                                source=compare_file)
    report = engine.BenchRun(machine=facts, config=config, results=results, fits=fits, comparisons=comparisons,
                             reference=info, version=__version__, interrupted=interrupted)
    _emit(report, fmt)
    if isolation.show_output:
        from cnncheck.cli.gradcheck_cmd import describe_output

        for source, output in outputs.items():
            click.echo(describe_output(source, output), err=True, nl=False)
    if interrupted:
        total = len(engine.planned_keys(cases, dtype))
        click.echo(f"interrupted: {len(rows)} of {total} rows measured"
                   + ("; nothing saved or plotted" if save or plot_file else ""), err=True)
        ctx.exit(ExitCode.INTERRUPTED)
    _write(report, save, plot_file, fits, sweep)
    ctx.exit(ExitCode.OK if report.passed else ExitCode.FAILED)


def _run(plan, cases, config) -> tuple:
    """Measure the GEMM peak and every row; Ctrl-C keeps the rows that finished.

    Returns
    -------
    (rows, machine facts, interrupted)
    """
    rows: list = []
    facts = None
    interrupted = False
    show_progress = sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
    try:
        with machine.limit_threads(config.threads):
            peak = machine.gemm_peak_gflops(config.dtype)
            facts = machine.machine_facts(dtype=config.dtype, gemm_peak=peak)
            # What the implementations print is a diagnostic: it must not mix with the report on stdout.
            with _progress(show_progress and bool(cases)) as progress, contextlib.redirect_stdout(sys.stderr):
                for row in engine.iter_bench(plan.loaded, cases, config, peak_gflops=peak, progress=progress):
                    rows.append(row)
    except KeyboardInterrupt:
        interrupted = True
    if facts is None:
        with machine.limit_threads(config.threads):
            facts = machine.machine_facts(dtype=config.dtype)
    return rows, facts, interrupted


def _emit(report, fmt: str) -> None:
    """The report on stdout; with JSON, what failed also goes to stderr."""
    if fmt == "rich":
        from rich.console import Console

        console = Console(file=sys.stdout)
        console.print(reporters.renderable("bench", report, console.width))
        return
    click.echo(reporters.render("bench", fmt, report), nl=False)
    if fmt == "json":
        from cnncheck.report.bench import failure_lines

        for line in failure_lines(report):
            click.echo(line, err=True)


def _write(report, save, plot_file, fits, sweep) -> None:
    if save is not None:
        try:
            with open(save, "w", encoding="utf-8") as fh:
                fh.write(reporters.render("bench", "json", report))
        except OSError as exc:
            raise click.BadParameter(f"cannot write {save}: {exc.strerror or exc}", param_hint="'--save'") from None
        click.echo(f"saved {save}", err=True)
    if plot_file is not None:
        from cnncheck import plot

        with usage_errors(param_hint="'--plot'"):
            plot.plot_sweep(fits, plot_file, title=f"cnncheck bench --sweep {sweep}")
        click.echo(f"plotted {plot_file}", err=True)
