"""``cnncheck bench``: time implementations against a baseline, with CI exit codes."""

from __future__ import annotations

import contextlib
import os
import sys

import click

from cnncheck import __version__, machine, memory, plot
from cnncheck import bench as bench_lib
from cnncheck import compare as compare_lib
from cnncheck import sweep as sweep_lib
from cnncheck.catalog import SPECS
from cnncheck.cli.common import progress_bar, usage_errors
from cnncheck.cli.options import CommaList, defaults_help, layer_parameter_options, parameter_overrides
from cnncheck.plugins import build_registry
from cnncheck.report import bench as report
from cnncheck.results import BenchConfig, BenchReport

EXIT_INTERRUPTED = 130  # as gradcheck


HELP = f"""Time the forward and backward passes of LAYER (several, or all; default all).

Each implementation is warmed up, then timed with time.perf_counter until it
has at least --repeat runs and --min-time seconds of runs; the backward pass
is timed on its own from one forward cache.  The table shows the median, the
IQR and the number of runs, the speedup over --baseline, GFLOP/s and percent
of this machine's measured GEMM peak (conv, affine) or GB/s (pool, relu), and
the rel_error of outputs and gradients against the baseline.

\b
Default sizes, those of the course notebook's Task 4 (affine and relu at sizes of the
same order); the shape options override them:
{defaults_help(SPECS, "bench", "x")}

\b
Exit status: 0 all measured and agreeing; 1 an implementation differs from
the baseline beyond --max-diff, fails, is slower than --min-speedup, or
regressed beyond --max-regression against --compare; 2 a usage error;
130 interrupted.
"""

EPILOG = """\b
Examples:
  cnncheck bench pool
  cnncheck bench conv --impl fast --shape 64,64,32,32 --filters 64 --stride 1
  cnncheck bench all --format json --save base.json
  cnncheck bench conv --impl fast --sweep N=1,2,4,8,16,32,64 --plot conv.png
  cnncheck bench all --compare base.json --max-regression 20%
"""


def _parse_sweep(ctx, param, value):
    if value is None:
        return None
    with usage_errors(param_hint="--sweep"):
        return sweep_lib.parse_sweep(value)


def _parse_fraction(ctx, param, value):
    with usage_errors(param_hint="--max-regression"):
        return compare_lib.parse_fraction(value)


def _explicit(ctx: click.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


@contextlib.contextmanager
def _progress_bar(enabled: bool):
    """Yields the callback for :func:`run_bench` (None when off)."""
    with progress_bar(enabled, "timing", width=28) as update:
        yield None if update is None else (
            lambda done, total, label: update(completed=done, total=total, description=label or "done"))


@click.command("bench", help=HELP, epilog=EPILOG)
@click.argument("layers", nargs=-1, metavar="[LAYER ...|all]")
@layer_parameter_options
@click.option("--impl", "impls", type=CommaList(), multiple=True, metavar="NAMES",
              help="Implementations to time, comma separated or repeated (default: every one, or the "
                   "baseline and the --module ones when --module is given; 'all' for every one). Leaving the "
                   "baseline out skips it: no speedups or differences, useful for large shapes.")
@click.option("--module", "modules", multiple=True, metavar="PATH.py|MODULE",
              help="Load a user layers module (a .py file or a dotted name) that uses the course notebook's function names "
                   "and time its layers, named after the file, against the baseline. Repeatable. Loading runs "
                   "the module's code.")
@click.option("--no-entry-points", is_flag=True,
              help="Do not load implementations registered by installed packages (entry-point group "
                   "cnncheck.implementations).")
@click.option("--baseline", default="naive", show_default=True, metavar="IMPL",
              help="Implementation speedups and differences are measured against. A layer without it "
                   "has no speedup.")
@click.option("--repeat", type=click.IntRange(min=1), default=5, show_default=True,
              help="Least number of timed runs per measurement.")
@click.option("--min-time", type=click.FloatRange(min=0), default=0.5, show_default=True, metavar="SECONDS",
              help="Least total seconds of timed runs per measurement.")
@click.option("--max-seconds", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              metavar="SECONDS",
              help="Budget for the timed runs of one measurement (the warm-up call is not counted): a slower "
                   "one (naive loops on large shapes) stops with fewer runs, at least one, and is marked "
                   "limited (*).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True,
              help="Floating dtype of inputs, outputs and the GEMM peak.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Limit BLAS (and OpenMP) threads for the run (default: the libraries' own count).")
@click.option("--format", "fmt", type=click.Choice(report.FORMATS), default=None,
              help="Output format (default: rich on a terminal, plain when piped).")
@click.option("--save", type=click.Path(dir_okay=False), default=None, metavar="FILE.json",
              help="Also write the JSON result to FILE, for a later --compare.")
@click.option("--compare", "compare_file", type=click.Path(dir_okay=False), default=None, metavar="FILE.json",
              help="Compare medians and speedups with a saved result; a regression beyond "
                   "--max-regression exits 1.")
@click.option("--max-regression", default="20%", show_default=True, callback=_parse_fraction,
              metavar="PERCENT", help="Largest slowdown allowed against --compare (e.g. 20% or 0.2).")
@click.option("--min-speedup", type=click.FloatRange(min=0, min_open=True), default=None, metavar="X",
              help="Exit 1 when an implementation is not X times faster than the baseline.")
@click.option("--max-diff", type=click.FloatRange(min=0), default=None, metavar="TOL",
              help="Largest difference from the baseline that agrees: the course notebook's rel_error (default 1e-9 in "
                   "float64); in float32 its denominator is floored at 1e-3 of the outputs' scale, since "
                   "elements summing to nearly zero carry float32 rounding (default 1e-2).")
@click.option("--sweep", callback=_parse_sweep, default=None, metavar="PARAM=V1,V2,...",
              help="Time across values of one parameter and fit how time grows with work: N, C, H, W, D, F, "
                   "K, or stride, pad, filters, kernel, pool_height, pool_width.")
@click.option("--force", is_flag=True,
              help="Run even when the estimated memory of a measurement exceeds what is available now.")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Draw the sweep to a .png, .svg or .pdf (needs pip install 'cnncheck[plot]').")
@click.pass_context
def bench(ctx: click.Context, layers, impls, modules, no_entry_points, baseline, repeat, min_time, max_seconds,
          seed, dtype, threads, fmt, save, compare_file, max_regression, min_speedup, max_diff, sweep, force,
          plot_file, **kwargs) -> None:
    overrides = parameter_overrides(kwargs)
    impl_names = tuple(name for group in impls for name in group)
    layer_names = tuple(layers) or ("all",)
    if max_diff is None:
        max_diff = bench_lib.DEFAULT_MAX_DIFF[dtype]

    for option, path in (("--save", save), ("--plot", plot_file)):
        if path is not None and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise click.BadParameter(f"the folder of {path} does not exist", param_hint=option)
    if plot_file is not None:
        if sweep is None:
            raise click.UsageError("--plot draws a sweep; add --sweep PARAM=V1,V2,...")
        with usage_errors(param_hint="--plot"):
            plot.check_path(plot_file)
            plot.require_matplotlib()

    with usage_errors():
        registry = build_registry(modules, entry_points=not no_entry_points)
        pairs = bench_lib.select_pairs(registry, layer_names, impl_names, modules, baseline=baseline,
                                       check_baseline=_explicit(ctx, "baseline"))
        cases = bench_lib.plan_cases(pairs, overrides=overrides, baseline=baseline, sweep=sweep)
        config = BenchConfig(
            layers=layer_names, impls=impl_names, baseline=baseline, dtype=dtype, repeat=repeat,
            min_time=min_time, max_seconds=max_seconds, seed=seed, threads=threads, max_diff=max_diff,
            min_speedup=min_speedup, max_regression=max_regression if compare_file else None,
            compare=compare_file, sweep_param=sweep.param if sweep else None,
            sweep_values=sweep.values if sweep else (), overrides=overrides, modules=tuple(modules),
        )
        bench_lib.check_plan(cases, config)
        memory.guard(((case.spec, case.params) for case in cases), purpose="bench", dtype=dtype, force=force)
    reference = None
    if compare_file is not None:
        with usage_errors(param_hint="--compare"):
            reference = compare_lib.load_result(compare_file)
            compare_lib.require_overlap(reference, bench_lib.planned_keys(cases, dtype), source=compare_file)

    if fmt is None:
        fmt = "rich" if sys.stdout.isatty() else "plain"
    show_progress = sys.stderr.isatty() and os.environ.get("TERM") != "dumb"

    try:
        with machine.limit_threads(threads):
            peak = machine.gemm_peak_gflops(dtype)
            facts = machine.machine_facts(dtype=dtype, gemm_peak=peak)
            # What the implementations print is a diagnostic: it must not mix with the report on stdout.
            with _progress_bar(show_progress) as progress, contextlib.redirect_stdout(sys.stderr):
                results = bench_lib.run_bench(cases, config, peak_gflops=peak, progress=progress)
    except KeyboardInterrupt:
        click.echo("interrupted: no report (timings of an interrupted run are incomplete)", err=True)
        ctx.exit(EXIT_INTERRUPTED)

    fits = sweep_lib.fit_sweep(results, sweep.param) if sweep else ()
    comparisons, info = (), None
    if reference is not None:
        with usage_errors(param_hint="--compare"):
            comparisons, info = compare_lib.compare_results(reference, results, max_regression,
                                                            source=compare_file)
    result = BenchReport(machine=facts, config=config, results=results, fits=fits, comparisons=comparisons,
                         reference=info, version=__version__)

    if fmt == "rich":
        from rich.console import Console

        report.print_rich(result, Console(file=sys.stdout))
    elif fmt == "json":
        click.echo(report.render_json(result), nl=False)
        for line in report.failure_lines(result):
            click.echo(line, err=True)
    else:
        click.echo(report.render_text(result, fmt), nl=False)

    if save is not None:
        try:
            with open(save, "w", encoding="utf-8") as fh:
                fh.write(report.render_json(result))
        except OSError as exc:
            raise click.BadParameter(f"cannot write {save}: {exc.strerror or exc}", param_hint="--save") from None
        click.echo(f"saved {save}", err=True)
    if plot_file is not None:
        with usage_errors(param_hint="--plot"):
            plot.plot_sweep(fits, plot_file, title=f"cnncheck bench --sweep {sweep}")
        click.echo(f"plotted {plot_file}", err=True)
    ctx.exit(0 if result.passed else 1)
