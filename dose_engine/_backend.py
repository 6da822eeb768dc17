"""The one place that chooses between numpy/scipy (CPU) and CuPy/cupyx (GPU).

Hot code does not call this module to get its array namespace: it takes
``xp = array_namespace(*arrays)`` from the arrays it is given, so the same code runs
on numpy, CuPy and array-api-strict.  This module supplies what the array API
standard lacks: sparse matrices and ndimage-style resampling, through thin wrappers
over :mod:`scipy` and :mod:`cupyx.scipy` that mirror each other, plus the named
host↔device boundaries :func:`to_numpy` and :meth:`Backend.asarray`.

CuPy is imported only inside :func:`get_backend` when ``"cupy"`` is requested, so
everything imports and runs on a machine without a GPU.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np
from array_api_compat import array_namespace, is_cupy_array

from ._arguments import ARRAY, TEXT, check_arguments
from .errors import BackendError

__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "BackendName",
    "array_namespace",
    "backend_of",
    "get_backend",
    "to_numpy",
    "worker_count",
]

BackendName = Literal["numpy", "cupy"]
BACKEND_NAMES: tuple[str, ...] = ("numpy", "cupy")


@dataclass(frozen=True)
class Backend:
    """Array, sparse and ndimage modules of one device.

    Attributes
    ----------
    name : {"numpy", "cupy"}
    xp : module
        Array namespace (``numpy`` or ``cupy``).
    sparse : module
        ``scipy.sparse`` or ``cupyx.scipy.sparse``.
    ndimage : module
        ``scipy.ndimage`` or ``cupyx.scipy.ndimage``.
    """

    name: str
    xp: ModuleType
    sparse: ModuleType
    ndimage: ModuleType

    def asarray(self, array: Any, dtype: Any = None) -> Any:
        """Move ``array`` onto this backend's device (a named host→device boundary)."""
        return self.xp.asarray(array, dtype=dtype)

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        """``[fn(item) for item in items]``, in order. On numpy the items run on a thread
        pool with one worker per usable CPU (numpy, scipy.special and BLAS release the GIL
        in the hot loops), with BLAS held to one thread meanwhile (the workers already take
        every CPU: a multi-threaded BLAS under each of them only spun, 30 % more CPU time
        for the field-dose kernel); on CuPy one after another (the GPU kernels are
        parallel)."""
        items = list(items)
        if self.name != "numpy":
            return [fn(item) for item in items]
        with _one_blas_thread():
            if len(items) < 2 or worker_count() < 2:
                return [fn(item) for item in items]
            return list(_thread_pool(worker_count()).map(fn, items))

    def csr_matrix(self, matrix: Any) -> Any:
        """Move a scipy/cupyx sparse matrix onto this backend as CSR."""
        if self.name == "numpy":
            return self.sparse.csr_matrix(matrix.get() if hasattr(matrix, "get") else matrix)
        return self.sparse.csr_matrix(matrix)


def worker_count() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(int(n or 1), 1)


@functools.cache
def _blas_controller() -> Any:
    """threadpoolctl's view of the BLAS libraries loaded, built once (it scans them)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _release_blas_control() -> None:
    """Clear threadpoolctl's claim on OpenBLAS (>= 3.6: only the thread that first changed a
    pthreads OpenBLAS may change it again; other threads' changes are ignored silently)."""
    for lib in _blas_controller().lib_controllers:
        clear = getattr(lib, "clear_controlling_thread", None)
        if clear is not None:
            clear(force=True)


_hold_lock = threading.Lock()
_hold_count = 0
_hold_limiter: Any = None


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Hold BLAS to one thread while the block runs, in every thread of the process.

    The BLAS thread count is one setting per process, and the kernel's float32 products
    give other last bits on more BLAS threads.  A plain limit-and-restore was ignored in a
    Dask worker thread (not threadpoolctl's controlling thread) and let two doses in
    threads of one process restore it under each other, so an angle computed as a Dask
    task could differ from the serial one by a float32 rounding.  The hold is counted: the
    first to enter sets one thread, the last to leave restores the setting, clearing the
    controlling-thread claim around each change (as ``optimizers``' hold does; the two
    packages are independent, so each has its own).
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


@functools.cache
def _thread_pool(n_workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="dose-engine")


@check_arguments(name=TEXT)
def get_backend(name: str = "numpy") -> Backend:
    """Return the backend called ``name``.

    Parameters
    ----------
    name : {"numpy", "cupy"}
        ``"numpy"`` always works; ``"cupy"`` needs CuPy and a CUDA device.

    Raises
    ------
    BackendError
        If ``name`` is unknown, or CuPy cannot be imported or finds no device.
    """
    if name not in BACKEND_NAMES:
        raise BackendError(f"Unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}.")
    if name == "numpy":
        import scipy.ndimage
        import scipy.sparse

        return Backend("numpy", np, scipy.sparse, scipy.ndimage)
    try:
        cupy = importlib.import_module("cupy")
        sparse = importlib.import_module("cupyx.scipy.sparse")
        ndimage = importlib.import_module("cupyx.scipy.ndimage")
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no CUDA device found")
    except Exception as exc:  # ImportError, CUDARuntimeError, ...
        raise BackendError(
            f"The 'cupy' backend is not available here ({exc}); install the `gpu` extra "
            "(pip install 'rtplan[gpu]') on a machine with a CUDA GPU, or use backend='numpy'."
        ) from exc
    return Backend("cupy", cupy, sparse, ndimage)


def backend_of(*arrays: Any) -> Backend:
    """The backend whose device holds ``arrays`` (CuPy arrays → ``"cupy"``, else numpy)."""
    return get_backend("cupy" if any(is_cupy_array(a) for a in arrays) else "numpy")


@check_arguments(array=ARRAY)
def to_numpy(array: Any) -> np.ndarray:
    """Copy ``array`` to a host numpy array (a named device→host boundary)."""
    if is_cupy_array(array):
        return array.get()
    if hasattr(array, "toarray") and hasattr(array, "get"):  # cupyx sparse
        return array.get()
    return np.asarray(array)


# --------------------------------------------------------------------------- erf
# The error function is not part of the array API standard.  numpy and CuPy arrays use
# the vendor's special-function library; any other namespace (e.g. array-api-strict in
# the portability tests) uses Abramowitz & Stegun 7.1.26 written with ``xp.*`` only
# (|error| < 1.5e-7, below float32 resolution of the kernels).


def _erf_xp(x, xp):
    a1, a2, a3, a4, a5 = 0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429
    s = xp.sign(x)
    ax = xp.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * ax)
    y = 1.0 - (((((a5 * t + a4) * t) + a3) * t + a2) * t + a1) * t * xp.exp(-ax * ax)
    return s * y


#: ``|x|`` from which ``erf(x)`` rounds to exactly ±1 in each floating dtype
#: (``1 - erf(4) = 1.5e-8`` is below half of float32's spacing under 1, 3.0e-8;
#: ``1 - erf(6) = 2.2e-17`` below float64's, 5.6e-17).
ERF_ONE_FROM = {np.dtype(np.float32): 4.0, np.dtype(np.float64): 6.0}

#: :func:`erf` of a float64 numpy array evaluates only the points below
#: :data:`ERF_ONE_FROM` when they are less than this share of all (selecting them costs
#: more above it).
ERF_SELECT_BELOW_SHARE = 0.5

#: ``erf(t) = -expm1(t · R(t / 4))`` for ``0 ≤ t ≤ 4`` (:func:`_erf_float32`): the
#: coefficients of ``R``, lowest power first (``R(0) = -2/√π``), rounded to float32.  Fitted
#: to ``log(erfc(t)) / t`` by least squares on 4,000 Chebyshev nodes of [0, 4] weighted by
#: ``erfc(t)`` (so the error is the absolute error of ``erf``), re-weighted 40 times toward
#: the minimax fit: fit error 6e-9; evaluated in float32 the absolute error against float64
#: ``scipy.special.erf`` is at most 1.0e-7 (1.7 float32 spacings at 1; 1.3e-8 on average,
#: scipy's float32 erf: 3.0e-8 and 1.0e-8).
ERF_FLOAT32_COEFFS = tuple(
    np.float32(c)
    for c in (
        -1.1283793449401855,
        -2.5464673042297363,
        -1.6447099447250366,
        1.229056477546692,
        0.019519105553627014,
        -1.6272119283676147,
        2.427466869354248,
        -1.7523432970046997,
        0.5322953462600708,
    )
)


def _erf_float32(x: np.ndarray) -> np.ndarray:
    """The error function of a float32 array in float32 arithmetic, |error| ≤ 1.0e-7
    (:data:`ERF_FLOAT32_COEFFS`): a polynomial, ``expm1`` and ``copysign``, which numpy
    runs in SIMD loops, about 4× faster than :func:`scipy.special.erf` (which evaluates
    each float32 value in double precision, one at a time).  Exactly ±1 from
    ``|x| = 4`` (where float32's erf rounds to ±1), ±0 at ±0; NaN stays NaN."""
    a = np.minimum(np.abs(x), np.float32(4.0))
    s = a * np.float32(0.25)
    c = ERF_FLOAT32_COEFFS
    r = s * c[-1]
    for coeff in c[-2:0:-1]:
        r += coeff
        r *= s
    r += c[0]
    r *= a
    np.expm1(r, out=r)
    np.negative(r, out=r)
    return np.copysign(r, x, out=r)


def _erf_numpy(x: np.ndarray) -> np.ndarray:
    """:func:`_erf_float32` for float32 arrays; otherwise :func:`scipy.special.erf`, bit for
    bit, evaluated only where it is not ±1."""
    from scipy.special import erf as _erf

    if x.dtype == np.float32:
        return _erf_float32(x)
    one_from = ERF_ONE_FROM.get(x.dtype)
    if one_from is None or x.size == 0:
        return _erf(x)
    inner = np.abs(x) < one_from
    n_inner = int(np.count_nonzero(inner))
    if n_inner >= ERF_SELECT_BELOW_SHARE * x.size:
        return _erf(x)
    out = np.sign(x)
    out[inner] = _erf(x[inner])
    return out


def erf(x):
    """Error function of an array from any array-API namespace, on that array's device.

    numpy float32 → :func:`_erf_float32` (float32 arithmetic, absolute error ≤ 1.0e-7,
    the kernels' precision), other numpy dtypes → :func:`scipy.special.erf` (evaluated
    only where ``|x|`` is below :data:`ERF_ONE_FROM`, where it is not exactly ±1, when most
    of ``x`` is beyond: the same values bit for bit), CuPy →
    :func:`cupyx.scipy.special.erf`, other namespaces → a pure ``xp.*`` rational
    approximation (Abramowitz & Stegun 7.1.26, absolute error < 1.5e-7).
    """
    if isinstance(x, np.ndarray):
        return _erf_numpy(x)
    if is_cupy_array(x):
        special = importlib.import_module("cupyx.scipy.special")
        return special.erf(x)
    return _erf_xp(x, array_namespace(x))
