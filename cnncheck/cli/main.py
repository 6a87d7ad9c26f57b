"""Top-level Click group. Subcommands live in their own modules and are added here.

Error policy, the same for every subcommand:

* exit 0: everything checked passed (or was measured and agreed);
* exit 1: a check failed (data, never an exception);
* exit 2: a usage error -- a :class:`~cnncheck.errors.CnnCheckError` (bad
  layer, parameter or module) becomes a one-line Click usage error; a
  subcommand turns its own into ``click.UsageError`` with ``usage_errors()``,
  and the group catches any that escape;
* exit 130: interrupted with Ctrl-C;
* a closed stdout (``cnncheck ... | head``) ends the run quietly.

cnncheck's own bugs are not caught: they end with a traceback.
"""

from __future__ import annotations

import os
import sys

import click

from cnncheck import __version__
from cnncheck.errors import CnnCheckError

#: Exit status of a run stopped with Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130


class CnnCheckGroup(click.Group):
    """A Click group that applies cnncheck's error policy to every subcommand."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CnnCheckError as exc:
            raise click.UsageError(str(exc), ctx) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:
            # The reader went away: say nothing more, and keep Python from
            # complaining when it flushes stdout at exit.
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, sys.stdout.fileno())
            except (OSError, ValueError):   # stdout is not a real file (tests)
                pass
            ctx.exit(1)

EPILOG = """\b
Examples:
  cnncheck list
  cnncheck gradcheck all
  cnncheck gradcheck conv --stride 2 --pad 1
  cnncheck gradcheck all --format json
  cnncheck gradcheck conv --module cnn/layers.py
  cnncheck bench pool
  cnncheck grade submissions/ --timeout 10 --jobs 4 --output grades.csv
"""


@click.group(cls=CnnCheckGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cnncheck")
def main() -> None:
    """Check and time the forward and backward passes of CNN layers.

    gradcheck compares each backward pass with centred differences of its
    forward pass; bench times naive against fast implementations; list shows
    the layers, their defaults and implementations.  Your own layers file
    joins in with --module PATH.py (functions named as in the course:
    affine_forward, conv_backward_naive, max_pool_backward_naive, ...).

    Exit status: 0 passed, 1 a check failed, 2 usage error, 130 interrupted.
    """


def _add_subcommands() -> None:
    from cnncheck.cli.bench_cmd import bench
    from cnncheck.cli.grade_cmd import grade
    from cnncheck.cli.gradcheck_cmd import gradcheck
    from cnncheck.cli.list_cmd import list_layers

    main.add_command(list_layers, "list")
    main.add_command(gradcheck, "gradcheck")
    main.add_command(bench, "bench")
    main.add_command(grade, "grade")


_add_subcommands()
