"""`python -m training <command>`: the offline pipeline in one CLI.

:mod:`training.cli.parser` builds the whole argument tree and runs a command;
:mod:`training.cli.pipeline` and :mod:`training.cli.measurement` hold the handlers.
"""

from training.cli.parser import build_parser, main
from training.cli.pipeline import cmd_all

__all__ = ["build_parser", "cmd_all", "main"]
