"""`classicnets` command line: a thin shell over the Python API.

Each area registers its subcommands from its own module (models, data, train, evaluate, bench,
reproduce), so one file never grows into a tangle. This package is the one place that imports lazily,
inside the command functions: registering the subcommands loads only torch-free modules (configs,
settings, the papers' tables), so `classicnets --help` answers in a fraction of a second. Errors the user can fix arrive as
`ClassicNetsError` and are printed as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from classicnets.errors import ClassicNetsError

# Modules under classicnets.cli that each define `register(subparsers)`.
_COMMAND_MODULES = ["models", "data", "train", "evaluate", "bench", "reproduce"]


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line (its default) but names the fix: see --help."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="classicnets",
        description="The classic convolutional networks: build, inspect, train, evaluate.",
    )
    from classicnets import __version__

    parser.add_argument("--version", action="version", version=f"classicnets {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"classicnets.cli.{name}")
        except ModuleNotFoundError as e:  # an area not built yet must not break the others
            if e.name == f"classicnets.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a name the terminal cannot show is escaped, not a traceback
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    stdout = sys.stdout
    if hasattr(stdout, "fileno"):
        sys.stdout = _OutlivesItsReader(stdout)
    try:
        result = args.func(args)
    except ClassicNetsError as e:
        print(f"classicnets: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("classicnets: interrupted", file=sys.stderr)
        return 130
    finally:
        sys.stdout.flush()  # while a gone reader is still caught, not at exit
        sys.stdout = stdout
    return int(result or 0)


class _OutlivesItsReader:
    """stdout that, once the program reading it has gone (`classicnets train | head -3`), sends the rest
    to /dev/null instead of raising BrokenPipeError: a closed pager must not stop a training run or end
    a command in a traceback."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._to_devnull()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._to_devnull()

    def _to_devnull(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())  # the stream's buffer now flushes into /dev/null
        os.close(devnull)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)
