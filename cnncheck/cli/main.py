"""Top-level Click group. Subcommands live in their own modules and are added here."""

from __future__ import annotations

import click

from cnncheck import __version__

EPILOG = """\b
Examples:
  cnncheck list
  cnncheck gradcheck conv --stride 2 --pad 1
  cnncheck gradcheck all --format json
  cnncheck gradcheck conv --module cnn/layers.py
  cnncheck bench pool
"""


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cnncheck")
def main() -> None:
    """Check and time the forward and backward passes of CNN layers."""


def _add_subcommands() -> None:
    from cnncheck.cli.bench_cmd import bench
    from cnncheck.cli.gradcheck_cmd import gradcheck
    from cnncheck.cli.list_cmd import list_layers

    main.add_command(list_layers, "list")
    main.add_command(gradcheck, "gradcheck")
    main.add_command(bench, "bench")


_add_subcommands()
