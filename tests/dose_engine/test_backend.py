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


@pytest.mark.parametrize("scale", [0.5, 8.0, 60.0])
def test_erf_float64_equals_scipy_bit_for_bit(scale):
    # The numpy erf evaluates only the points where it is not exactly ±1 when those are
    # few (scale 8, 60: most of |x| is beyond 6); every value is scipy's.
    from scipy.special import erf as scipy_erf

    from dose_engine._backend import erf

    x = np.random.default_rng(7).standard_normal((300, 41)) * scale
    x[0, :4] = [0.0, -0.0, 4.0, -6.0]
    got = erf(x)
    assert got.dtype == x.dtype and got.shape == x.shape
    np.testing.assert_array_equal(got, scipy_erf(x))
    np.testing.assert_array_equal(np.signbit(got), np.signbit(scipy_erf(x)))


def test_erf_float32_within_1e7_of_scipy_float64():
    # The float32 erf is a polynomial and expm1 in float32: against scipy's float64 erf
    # on every float32 step between -0.01 and 0.01 and a fine grid out to ±8, at most
    # 1.0e-7 off (1.7 float32 spacings at 1); exactly ±1 from 4 on, ±0 at ±0, NaN kept.
    from scipy.special import erf as scipy_erf

    from dose_engine._backend import erf

    tiny = np.arange(-(2**24), 2**24, 97, dtype=np.int64).astype(np.float32) * np.float32(6e-10)
    x = np.concatenate([tiny, np.linspace(-8.0, 8.0, 3_000_001, dtype=np.float32)])
    got = erf(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    assert np.abs(got - scipy_erf(x.astype(np.float64))).max() <= 1.01e-7
    edge = np.array([0.0, -0.0, 4.0, -4.0, 9.5, -np.inf, np.nan], dtype=np.float32)
    np.testing.assert_array_equal(erf(edge), [0.0, -0.0, 1.0, -1.0, 1.0, -1.0, np.nan])
    np.testing.assert_array_equal(np.signbit(erf(edge[:2])), [False, True])
