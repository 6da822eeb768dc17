"""Every bench run states the Python, library versions and BLAS it ran with.

They are printed in the header and the closing summary of the terminal report, and saved
with pytest-benchmark's results (``--benchmark-json`` / ``--benchmark-autosave``): in
``machine_info["rtplan_environment"]`` and in every benchmark's ``extra_info["environment"]``.
``benches/requirements-lock.txt`` pins the versions the README's figures were measured with.
"""

from __future__ import annotations

import platform
from functools import cache
from importlib.metadata import PackageNotFoundError, version

import pytest

# Worker scripts the benches run in their own processes (with a peer's Python and
# packages, e.g. PortPy): not importable here, so not collected for doctests either.
collect_ignore = ["_portpy_pipeline.py", "_peer_tg119.py"]

LIBRARIES = (
    "rtplan",
    "numpy",
    "scipy",
    "cvxpy",
    "clarabel",
    "osqp",
    "scs",
    "pydicom",
    "h5py",
    "array-api-compat",
    "threadpoolctl",
)


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _blas() -> str:
    """The BLAS/LAPACK libraries numpy and scipy loaded, with their thread counts."""
    import numpy  # noqa: F401 - loads numpy's BLAS, so threadpoolctl sees it
    import scipy.linalg  # noqa: F401 - and scipy's

    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    libs = [
        f"{lib['internal_api']} {lib['version']} ({lib['num_threads']} threads, "
        f"{lib.get('threading_layer', '?')} threading, {lib['filepath'].rsplit('/', 1)[-1]})"
        for lib in threadpool_info()
        if lib["user_api"] == "blas"
    ]
    return "; ".join(libs) or "none found"


@cache
def environment() -> dict[str, str]:
    """Python, platform, the versions of :data:`LIBRARIES` and the BLAS, as strings."""
    info = {
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "platform": platform.platform(),
    }
    info.update({name: _version(name) for name in LIBRARIES})
    info["blas"] = _blas()
    return info


def _lines() -> list[str]:
    return [f"{key}: {value}" for key, value in environment().items()]


def pytest_report_header(config) -> list[str]:
    return ["bench environment: " + ", ".join(_lines()[:-1]), "bench BLAS: " + _lines()[-1]]


def pytest_terminal_summary(terminalreporter) -> None:
    terminalreporter.write_sep("-", "bench environment")
    for line in _lines():
        terminalreporter.write_line(line)


def pytest_benchmark_update_machine_info(config, machine_info) -> None:
    machine_info["rtplan_environment"] = environment()


@pytest.fixture(autouse=True)
def _record_environment(request) -> None:
    """Store :func:`environment` in the ``extra_info`` of every benchmark that runs."""
    if "benchmark" in request.fixturenames:
        request.getfixturevalue("benchmark").extra_info["environment"] = environment()
