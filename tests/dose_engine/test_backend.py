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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [0.5, 8.0, 60.0])
def test_erf_equals_scipy_bit_for_bit(dtype, scale):
    # The numpy erf evaluates only the points where it is not exactly ±1 when those are
    # few (scale 8, 60: most of |x| is beyond 4 or 6); every value is scipy's.
    from scipy.special import erf as scipy_erf

    from dose_engine._backend import erf

    x = (np.random.default_rng(7).standard_normal((300, 41)) * scale).astype(dtype)
    x[0, :4] = [0.0, -0.0, 4.0, -6.0]
    got = erf(x)
    assert got.dtype == x.dtype and got.shape == x.shape
    np.testing.assert_array_equal(got, scipy_erf(x))
    np.testing.assert_array_equal(np.signbit(got), np.signbit(scipy_erf(x)))
