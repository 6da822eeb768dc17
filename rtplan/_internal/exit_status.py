"""Exit statuses of the ``rtplan`` commands, and how an exception maps to one.

Exit status 1 means "a plan (or dose) was written, but a goal failed" (or the safety
layer warned about it, e.g. an optimiser that stopped with a hard goal violated) and
nothing else, so a script can trust it.  Hard goals that contradict each other are bad
input (2), and only when proven (a solver's infeasibility status or a certificate).
Every failure has its own status and a one-line message; a
traceback is shown only with ``rtplan --debug`` or ``RTPLAN_DEBUG=1``.
"""

from __future__ import annotations

import os

from dose_engine.errors import DoseEngineError, ResourceLimitError
from optimizers.errors import OptimizerError

from ..errors import ClusterError, OutputError, RtplanError

__all__ = [
    "EXIT_CLUSTER_ERROR",
    "EXIT_GOAL_FAILED",
    "EXIT_INPUT_ERROR",
    "EXIT_INTERNAL_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_IO_ERROR",
    "EXIT_LIMIT_EXCEEDED",
    "EXIT_OK",
    "EXIT_STATUSES",
    "debug_requested",
    "exit_status_for",
    "one_line_message",
]

EXIT_OK = 0
EXIT_GOAL_FAILED = 1
EXIT_INPUT_ERROR = 2
EXIT_INTERNAL_ERROR = 3
EXIT_IO_ERROR = 4
EXIT_LIMIT_EXCEEDED = 5
EXIT_CLUSTER_ERROR = 6
EXIT_INTERRUPTED = 130

#: (status, meaning) for README and ``--help``.
EXIT_STATUSES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "success (plan, demo, evaluate, batch: every goal met)"),
    (
        EXIT_GOAL_FAILED,
        (
            "output written (plan/batch) or dose evaluated, but a goal failed or a safety "
            "warning (e.g. the optimiser did not converge); check: a machine limit is violated"
        ),
    ),
    (EXIT_INPUT_ERROR, "bad input or option (or hard goals proven contradictory); nothing written"),
    (EXIT_INTERNAL_ERROR, "internal error (a bug; rerun with --debug); nothing written"),
    (EXIT_IO_ERROR, "a file or folder could not be read or written; nothing written"),
    (EXIT_LIMIT_EXCEEDED, "the job would exceed a memory/work limit; nothing written"),
    (EXIT_CLUSTER_ERROR, "the Dask scheduler could not be reached or failed"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C); nothing written"),
)

#: Longest message printed for one error (characters).
MAX_MESSAGE_CHARS = 2000


def debug_requested(flag: bool = False) -> bool:
    """True with ``--debug`` or a non-empty ``RTPLAN_DEBUG`` other than ``0``."""
    return flag or os.environ.get("RTPLAN_DEBUG", "") not in ("", "0")


def exit_status_for(exc: BaseException) -> int:
    """The exit status of a command that ended with ``exc``."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, ResourceLimitError | MemoryError):
        return EXIT_LIMIT_EXCEEDED
    if isinstance(exc, ClusterError):
        return EXIT_CLUSTER_ERROR
    if isinstance(exc, OutputError):
        return EXIT_IO_ERROR
    if isinstance(exc, RtplanError | DoseEngineError | OptimizerError):
        return EXIT_INPUT_ERROR
    if isinstance(exc, OSError):
        return EXIT_IO_ERROR
    return EXIT_INTERNAL_ERROR


def one_line_message(exc: BaseException) -> str:
    """``exc`` as one line of bounded length, saying what kind of failure it is."""
    status = exit_status_for(exc)
    if status == EXIT_INTERRUPTED:
        text = "interrupted; nothing was written"
    elif isinstance(exc, MemoryError):
        text = "out of memory; use a coarser dose grid or beamlets, or fewer beams"
    elif status == EXIT_IO_ERROR and not isinstance(exc, OutputError):
        name = getattr(exc, "filename", None)
        where = f" '{name}'" if name else ""
        text = f"I/O error on{where}: {getattr(exc, 'strerror', None) or exc}"
    elif status == EXIT_INTERNAL_ERROR:
        text = (
            f"internal error ({type(exc).__name__}: {exc}); this is a bug in rtplan. Rerun "
            "with --debug (or RTPLAN_DEBUG=1) for the traceback and report it"
        )
    else:
        text = str(exc) or type(exc).__name__
    text = " ".join(text.split())
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[:MAX_MESSAGE_CHARS] + f"… ({len(text):,} characters)"
    return text
