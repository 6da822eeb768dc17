"""The ``rtplan`` command line.

Each sub-command lives in its own module ``rtplan/cli/_<name>.py`` exposing
``register(subparsers)``, which adds its parser and sets ``func(args) -> int``.
Errors from bad input (:class:`rtplan.errors.RtplanError`,
:class:`dose_engine.errors.DoseEngineError`, :class:`optimizers.errors.OptimizerError`)
become one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from dose_engine.errors import DoseEngineError
from optimizers.errors import OptimizerError

from .. import __version__
from ..errors import RtplanError

__all__ = ["main"]

#: Sub-command modules, in the order ``rtplan --help`` lists them.
COMMANDS: tuple[str, ...] = (
    "demo",
    "plan",
    "batch",
    "phantom",
    "inspect",
    "influence",
    "dose",
    "evaluate",
)

EXIT_OK = 0
EXIT_INPUT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="rtplan", description="Radiation therapy planning from DICOM to DICOM RT-PLAN."
    )
    parser.add_argument("--version", action="version", version=f"rtplan {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}._{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit status."""
    args = build_parser().parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        return int(args.func(args))
    except (RtplanError, DoseEngineError, OptimizerError) as exc:
        print(f"rtplan {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
