"""One BLAS thread while a block runs, in every thread of the process.

Used by the first-order solver's dense products (:mod:`optimizers._array_backend`) and the
matrix compression's sketch (:mod:`optimizers._compress`); a leaf module (it imports no
other module of the package), so both can use it without an import cycle.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from typing import Any

from threadpoolctl import ThreadpoolController

__all__ = ["one_blas_thread"]


@functools.cache
def _blas_controller() -> Any:
    """threadpoolctl's view of the BLAS libraries loaded, built once (it scans them)."""
    return ThreadpoolController()


def _release_blas_control() -> None:
    """Clear threadpoolctl's claim on OpenBLAS (>= 3.6: only the "controlling" thread that
    first changed a pthreads OpenBLAS may change it again; other threads' changes are
    ignored silently).  The hold below changes it from whichever thread enters first or
    leaves last, under its own lock, so it clears the claim around each change."""
    for lib in _blas_controller().lib_controllers:
        clear = getattr(lib, "clear_controlling_thread", None)
        if clear is not None:
            clear(force=True)


_hold_lock = threading.Lock()
_hold_count = 0
_hold_limiter: Any = None


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Hold BLAS to one thread while the block runs, in every thread of the process.

    The BLAS thread count is one setting per process.  A plain set-and-restore around
    each product lets two solves running in threads of one process (a threaded Dask
    worker) restore it under each other: a product then runs on several BLAS threads (its
    sums in another order) and the process may be left at one thread.  The hold is
    counted: the first product to enter sets one thread, the last to leave restores the
    setting found by the first, so while any product runs BLAS has one thread (whichever
    thread enters or leaves: see :func:`_release_blas_control`).
    """
    global _hold_count, _hold_limiter
    with _hold_lock:
        if _hold_count == 0:
            _release_blas_control()
            _hold_limiter = _blas_controller().limit(limits=1, user_api="blas")
            _release_blas_control()
        _hold_count += 1
    try:
        yield
    finally:
        with _hold_lock:
            _hold_count -= 1
            if _hold_count == 0:
                _release_blas_control()
                _hold_limiter.restore_original_limits()
                _release_blas_control()
                _hold_limiter = None
