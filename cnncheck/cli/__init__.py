"""The ``cnncheck`` command: a Click group with list, gradcheck and bench."""

from cnncheck.cli.main import main

__all__ = ["main"]
