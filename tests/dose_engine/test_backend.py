"""Backend selection works without CuPy and never imports it unasked."""

import subprocess
import sys

import numpy as np
import pytest

from dose_engine import BackendError, backend_of, get_backend, to_numpy


def test_numpy_backend():
    be = get_backend("numpy")
    assert be.xp is np
    m = be.csr_matrix(np.eye(3, dtype=np.float32))
    assert m.format == "csr" and m.nnz == 3
    assert backend_of(np.zeros(2)).name == "numpy"
    np.testing.assert_array_equal(to_numpy(be.asarray([1, 2])), [1, 2])


def test_unknown_backend_lists_choices():
    with pytest.raises(BackendError, match="numpy, cupy"):
        get_backend("torch")


def test_cupy_absent_is_clear_error():
    pytest.importorskip("numpy")
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(BackendError, match="gpu"):
            get_backend("cupy")
    else:  # pragma: no cover - only on GPU machines
        pytest.skip("CuPy is installed here; the GPU tests cover it")


def test_import_is_light():
    code = (
        "import sys, rtplan, dose_engine, optimizers\n"
        "heavy = [m for m in ('cupy', 'cvxpy', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
