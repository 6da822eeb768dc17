"""The ``rtplan`` command line.

Each sub-command lives in its own module ``rtplan/cli/_<name>.py`` exposing
``register(subparsers)``, which adds its parser and sets ``func(args) -> int``.
Every exception becomes one line on stderr and the exit status of
:mod:`rtplan._internal.exit_status` (2: bad input, 3: internal error, 4: I/O error, 5: a limit,
6: the Dask scheduler, 130: interrupted); status 1 is reserved for "written, but a goal
failed".  ``--debug`` (or ``RTPLAN_DEBUG=1``) prints the traceback as well.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence

from .._internal.exit_status import (
    EXIT_INPUT_ERROR,
    EXIT_OK,
    EXIT_STATUSES,
    debug_requested,
    exit_status_for,
    one_line_message,
)
from .._internal.version import __version__
from ._limits import limit_overrides, limits_help

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
    "check",
    "check_mc",
    "evaluate",
)

__all__ += ["EXIT_INPUT_ERROR", "EXIT_OK", "exit_status_epilog"]


def exit_status_epilog() -> str:
    """The exit-status table every ``--help`` ends with."""
    rows = "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_STATUSES)
    return f"exit status:\n{rows}"


_TABLES = ("exit status:", "limits (")


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, keeping the line breaks of the exit-status table."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n\n".join(
            part
            if part.startswith(_TABLES)
            else super(_HelpFormatter, self)._fill_text(part, width, indent)
            for part in text.split("\n\n")
        )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="rtplan",
        description="Radiation therapy planning from DICOM to DICOM RT-PLAN.",
        epilog=exit_status_epilog(),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rtplan {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="print the traceback of an error as well (also: RTPLAN_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}._{name}").register(sub)
    for p in sub.choices.values():
        p.add_argument(
            "--limit",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="raise (or lower) a documented limit for this run, e.g. "
            "--limit grid_voxels=4e9 or --limit hu_max=30000; names and defaults below",
        )
        p.epilog = "\n\n".join(e for e in (p.epilog, limits_help(), exit_status_epilog()) if e)
        p.formatter_class = _HelpFormatter
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit status (see :data:`EXIT_STATUSES`)."""
    args = build_parser().parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        with limit_overrides(args.limit):
            return int(args.func(args))
    except (Exception, KeyboardInterrupt) as exc:  # every failure: one line, its own status
        if debug_requested(args.debug):
            traceback.print_exc(file=sys.stderr)
        print(f"rtplan {args.command}: error: {one_line_message(exc)}", file=sys.stderr)
        return exit_status_for(exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
