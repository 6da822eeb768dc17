"""Precision of the collapsed-cone transport's float32 arithmetic, and the CT-to-density
lookup against the piecewise-linear table evaluated independently.

The transport runs in the dtype of its TERMA (float32 in every dose): the same transport
run on float64 TERMA is the reference. Its float32 result may differ only by rounding:
at most :data:`TRANSPORT_TOLERANCE` of the maximum dose, on a phantom with water, lung
and bone (the recursion's cancellation ``P - T F`` is largest at the interfaces).
"""

from __future__ import annotations

import numpy as np
import pytest
from array_api_compat import array_namespace

from dose_engine import hu_to_density, load_beam_model, load_hu_table
from dose_engine._backend import get_backend
from dose_engine._ccc_commission import load_ccc_commissioning, water_phantom
from dose_engine._ccc_cones import cone_directions, cone_kernels, with_beam_axes
from dose_engine._ccc_terma import aperture_fluence, beam_terma, terma_points
from dose_engine._ccc_transport import collapsed_cone_transport

#: Largest |float32 - float64| transport dose, relative to the maximum (measured: 3e-7).
TRANSPORT_TOLERANCE = 2e-6


@pytest.fixture(scope="module")
def slab_terma():
    """A 6 MV 60 × 60 mm² field's TERMA in water with a lung slab (0.25) and a bone
    slab (1.8) across the beam, float32 as in a dose, with what the transport needs."""
    model = load_beam_model()
    comm = load_ccc_commissioning(model)
    density, grid, beam, depth, _ = water_phantom(half_width_mm=60.0)
    density = np.array(density, dtype=np.float32)
    y = grid.zyx_axes_mm()[1]
    density[:, (y > 40.0) & (y < 90.0), :] = 0.25
    density[:, (y > 110.0) & (y < 125.0), :] = 1.8
    be = get_backend("numpy")
    xp = array_namespace(be.xp.zeros(1))
    points = terma_points(density, grid, grid, beam, comm.energies_mev, comm.part_weights(), xp=xp)
    field = np.array([[-30.0, 30.0, -30.0, 30.0]])
    terma = beam_terma(points, grid, field, np.ones(1), model, xp=xp)[:, None]
    directions = with_beam_axes(cone_directions(24), [beam.beam_axis])
    kernels = cone_kernels(
        comm.kernel, comm.released_share(), [beam.beam_axis], directions, shared=24
    )
    return terma, density, grid, directions, kernels, be


def test_float32_transport_is_float64_transport_to_rounding(slab_terma):
    terma, density, grid, directions, kernels, be = slab_terma
    assert terma.dtype == np.float32
    got = collapsed_cone_transport(terma, density, grid.spacing_mm, directions, kernels, be)
    ref = collapsed_cone_transport(
        terma.astype(np.float64), density, grid.spacing_mm, directions, kernels, be
    )
    assert got.dtype == np.float32 and ref.dtype == np.float64
    assert np.isfinite(got).all() and ref.max() > 0
    err = float(np.abs(got - ref).max() / ref.max())
    assert err <= TRANSPORT_TOLERANCE, err


def test_hu_to_density_is_the_table_interpolated():
    """Every voxel's density is the table's linear interpolation (float64 ``np.interp``,
    to float32 rounding), clamped at both ends; a NaN HU gets the table's first density."""
    table = load_hu_table()
    rng = np.random.default_rng(7)
    hu = rng.uniform(-1500.0, 4000.0, (5, 40, 60)).astype(np.float32)
    hu.flat[: table.hu.size] = table.hu  # the rows themselves
    hu.flat[table.hu.size : table.hu.size + 3] = (np.nan, np.inf, -np.inf)
    got = hu_to_density(hu, table)
    assert got.dtype == np.float32 and got.shape == hu.shape
    finite = np.where(np.isnan(hu), -np.inf, hu).astype(np.float64)
    ref = np.interp(np.clip(finite, table.hu[0], table.hu[-1]), table.hu, table.density)
    np.testing.assert_allclose(got, ref, rtol=2e-6, atol=1e-7)
    n = table.hu.size
    assert got.flat[n] == np.float32(table.density[0])  # NaN
    assert got.flat[n + 1] == np.float32(table.density[-1])  # +inf
    assert got.flat[n + 2] == np.float32(table.density[0])  # -inf


def test_terma_fluence_in_float32_is_the_float64_fluence_to_rounding():
    """A sequenced aperture (leaf pairs of several widths, two segments): the TERMA's
    float32 fluence within 1e-6 of the maximum of the float64 fluence at the same points."""
    model = load_beam_model()
    comm = load_ccc_commissioning(model)
    density, grid, beam, _, _ = water_phantom(half_width_mm=60.0)
    xp = array_namespace(get_backend("numpy").xp.zeros(1))
    points = terma_points(density, grid, grid, beam, comm.energies_mev, comm.part_weights(), xp=xp)
    rng = np.random.default_rng(3)
    y = np.arange(-40.0, 40.0, 5.0)
    x1 = -5.0 * rng.integers(1, 8, y.size)
    rects = np.concatenate(
        [
            np.stack([x1, x1 + 5.0 * rng.integers(1, 9, y.size), y, y + 5.0], axis=1),
            [[-30.0, 25.0, -20.0, 20.0]],
        ]
    )
    mu = rng.uniform(2.0, 20.0, rects.shape[0])
    terma = np.asarray(beam_terma(points, grid, rects, mu, model, xp=xp))
    flu64 = np.asarray(aperture_fluence(points.u_mm, points.v_mm, rects, mu, model, xp))
    assert flu64.dtype == np.float64
    ref = np.zeros((2, grid.voxel_count))
    ref[:, np.asarray(points.flat_index)] = flu64 * np.asarray(points.released)
    ref = ref.reshape(terma.shape)
    err = float(np.abs(terma - ref).max() / ref.max())
    assert err <= 1e-6, err
