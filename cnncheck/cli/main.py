"""The ``cnncheck`` command: a Click group whose subcommands load on first use.

Error policy, the same for every subcommand (exit codes in
:class:`cnncheck.status.ExitCode`):

* 0: everything checked passed (or was measured and agreed);
* 1: a check failed (data, never an exception);
* 2: a usage error -- a :class:`~cnncheck.errors.CnnCheckError` (bad
  layer, parameter or module) becomes one Click usage line on stderr;
* 130: interrupted with Ctrl-C, after the report of what finished;
* a closed stdout (``cnncheck ... | head``) ends the run quietly.

cnncheck's own bugs are not caught: they end with a traceback.  Subcommands
are imported only when run (or asked for help), so ``cnncheck --help`` and
``--version`` start without loading numpy.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from cnncheck import __version__
from cnncheck.errors import CnnCheckError
from cnncheck.status import ExitCode

#: Subcommands: module, attribute, and the one-line help the group lists.
COMMANDS = {
    "list": ("cnncheck.cli.list_cmd", "list_layers", "Show the layers, their parameters and implementations."),
    "gradcheck": ("cnncheck.cli.gradcheck_cmd", "gradcheck",
                  "Check layers against centred differences, a reference and the call protocol."),
    "bench": ("cnncheck.cli.bench_cmd", "bench", "Time implementations against a baseline and the machine's peak."),
    "grade": ("cnncheck.cli.grade_cmd", "grade", "Grade every submission in a folder, each in a sandboxed process."),
}


class CnnCheckGroup(click.Group):
    """A Click group with lazily loaded subcommands and cnncheck's error policy."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, short) for name, (_, _, short) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CnnCheckError as exc:
            raise click.UsageError(str(exc), ctx) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(ExitCode.INTERRUPTED)
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, sys.stdout.fileno())
            except (OSError, ValueError):   # stdout is not a real file (tests)
                pass
            ctx.exit(ExitCode.FAILED)


EPILOG = """\b
Examples:
  cnncheck list
  cnncheck gradcheck all
  cnncheck gradcheck conv --stride 2 --pad 1
  cnncheck gradcheck all --module cnn/layers.py
  cnncheck gradcheck all --format json
  cnncheck bench pool
  cnncheck grade submissions/ --jobs 2 --output grades.csv
"""


@click.group(cls=CnnCheckGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cnncheck")
def main() -> None:
    """Check, time and grade the forward and backward passes of CNN layers.

    gradcheck runs a battery of checks on each layer (several geometries,
    centred differences, a reference implementation, the way a network
    calls layers); bench times implementations; grade checks a class of
    submissions; list shows the layers.  Your own layers join in with
    --module PATH.py (the course's function names: affine_forward,
    conv_backward_naive, max_pool_backward_naive, ...).

    Exit status: 0 passed, 1 a check failed, 2 usage error, 130 interrupted.
    """
