"""Influence matrices: layout, units, consistency with field_dose, truncation bound, physics."""

import numpy as np
import pytest
import scipy.sparse as sp

from dose_engine import (
    Beam,
    Grid,
    InvalidGeometryError,
    beamlets_for_target,
    compute_influence_matrix,
    field_dose,
    load_beam_model,
)
from dose_engine._validation import water_phantom


@pytest.fixture(scope="module")
def setup():
    dens, ct = water_phantom(900.0, spacing_mm=5.0, half_width_mm=60, depth_mm=150)
    beam = Beam(0.0)
    pts = np.array([[x, 0, z] for x in np.linspace(-10, 10, 5) for z in np.linspace(-10, 10, 5)])
    bl = beamlets_for_target([beam], pts, margin_mm=0)  # 6 x 6 beamlets, 30 x 30 mm
    open_dose = field_dose(dens, ct, ct, beam, [[-15, 15, -15, 15]], 1.0)
    return dens, ct, beam, bl, open_dose


def test_layout_dtype_and_units(setup):
    dens, ct, beam, bl, open_dose = setup
    im = compute_influence_matrix(dens, ct, ct, [beam], bl, progress=False)
    assert sp.issparse(im.matrix) and im.matrix.format == "csr"
    assert im.matrix.dtype == np.float32 and im.matrix.indices.dtype == np.int32
    assert im.shape == (ct.voxel_count, 36)
    assert im.nbytes == im.matrix.data.nbytes + im.matrix.indices.nbytes + im.matrix.indptr.nbytes
    # Gy per MU: the central beamlet's maximum is below the 10 x 10 calibration (0.01 Gy/MU)
    # but of the right order (a 5 x 5 mm beamlet gives roughly 10-25 % of it at this depth).
    assert 0.0005 < im.matrix.max() < 0.01


def test_sum_of_beamlets_equals_open_field(setup):
    # With a cut-off that reaches every voxel and no threshold, the columns add up to the
    # open-field dose of the same rectangle (one primitive: the dose of a rectangle).
    dens, ct, beam, bl, open_dose = setup
    im = compute_influence_matrix(
        dens, ct, ct, [beam], bl, lateral_cutoff_mm=150.0, relative_threshold=0.0, progress=False
    )
    total = im.dose(np.ones(len(bl)))
    assert np.max(np.abs(total - open_dose)) <= 0.01 * open_dose.max()
    inner = open_dose > 0.2 * open_dose.max()
    np.testing.assert_allclose(total[inner], open_dose[inner], rtol=1e-4)


def test_fff_columns_carry_the_central_peak(setup):
    # An FFF model's peaked fluence (horn dip < 0) is in the beamlet columns as in its field
    # dose (before, the columns left the peak out: the horn was applied for a dip > 0 only).
    dens, ct, beam, bl, _ = setup
    fff = load_beam_model(
        str(__import__("importlib").resources.files("dose_engine") / "data/beam_model_6FFF.json")
    )
    assert fff.horn[0] < 0
    open_dose = field_dose(dens, ct, ct, beam, [[-15, 15, -15, 15]], 1.0, fff)
    im = compute_influence_matrix(
        dens, ct, ct, [beam], bl, fff, lateral_cutoff_mm=150.0, relative_threshold=0.0,
        progress=False,
    )  # fmt: skip
    inner = open_dose > 0.2 * open_dose.max()
    np.testing.assert_allclose(im.dose(np.ones(len(bl)))[inner], open_dose[inner], rtol=1e-4)


def test_truncation_error_bound_documented(setup):
    # Documented bound (compute_influence_matrix Notes): for a 3 x 3 cm^2 field in water the
    # defaults keep the summed open field within 2 % of its maximum, of which the relative
    # threshold alone costs < 1.5 %.  Entries are only ever dropped (never added).
    dens, ct, beam, bl, open_dose = setup
    ones = np.ones(len(bl))

    def summed(**kw):
        return compute_influence_matrix(dens, ct, ct, [beam], bl, progress=False, **kw).dose(ones)

    d_def = summed()
    d_cut = summed(relative_threshold=0.0)
    peak = open_dose.max()
    assert np.all(d_def <= open_dose * (1 + 1e-5) + 1e-9)
    assert np.max(open_dose - d_def) <= 0.02 * peak
    assert np.max(d_cut - d_def) <= 0.015 * peak
    # a harsh cut-off and threshold break the bound: the test can fail
    d_bad = summed(lateral_cutoff_mm=10.0, relative_threshold=0.05)
    assert np.max(open_dose - d_bad) > 0.02 * peak


def test_voxel_mask_rows_and_beam_order(setup):
    dens, ct, beam, bl, open_dose = setup
    beams = [beam, Beam(90.0)]
    pts = np.array([[0.0, 0.0, 0.0], [4.0, 4.0, 4.0]])
    bl2 = beamlets_for_target(beams, pts)
    mask = np.zeros(ct.shape, bool)
    mask[:, 10:, :] = True
    im = compute_influence_matrix(dens, ct, ct, beams, bl2, voxel_mask=mask, progress=False)
    rows = np.flatnonzero(np.diff(im.matrix.indptr))
    assert np.all(mask.ravel()[rows])
    # columns of beam 1 equal a single-beam computation of beam 1
    alone = compute_influence_matrix(
        dens, ct, ct, [beams[1]], bl2.subset_beams([1]), voxel_mask=mask, progress=False
    )
    sl = bl2.beam_slice(1)
    assert abs(im.matrix[:, sl] - alone.matrix).max() == 0.0


def test_lung_slab_follows_radiological_depth():
    # Water phantom at SSD 900 with a 50 mm lung slab (density 0.25) at 50-100 mm depth.
    # Behind it (150 mm geometric depth) the radiological depth is 150 - 0.75 * 50 = 112.5 mm,
    # so the dose must equal the all-water dose at 112.5 mm, rescaled by the inverse square
    # of the geometric distances ((900 + 112.5) / (900 + 150))^2 and the different field
    # width at that distance (same iso-plane rectangle -> exactly the same projection).
    model = load_beam_model()
    dens, ct = water_phantom(900.0, spacing_mm=2.5, half_width_mm=100, depth_mm=250)
    lung = dens.copy()
    lung[:, 20:40, :] = 0.25  # y in [-50, 0): depth 50..100
    rect = [[-50, 50, -50, 50]]
    g150 = Grid((1, 1, 1), (0.0, 50.0, 0.0), (1.0, 1.0, 1.0))  # depth 150 mm
    g112 = Grid((1, 1, 1), (0.0, 12.5, 0.0), (1.0, 1.0, 1.0))  # depth 112.5 mm
    d_slab = float(field_dose(lung, ct, g150, Beam(0), rect, 1.0, model)[0, 0, 0])
    d_water150 = float(field_dose(dens, ct, g150, Beam(0), rect, 1.0, model)[0, 0, 0])
    d_water112 = float(field_dose(dens, ct, g112, Beam(0), rect, 1.0, model)[0, 0, 0])
    expected = d_water112 * ((900.0 + 112.5) / (900.0 + 150.0)) ** 2
    assert d_slab == pytest.approx(expected, rel=0.01)
    assert d_slab > 1.1 * d_water150  # less attenuation behind lung


def test_beamlets_beams_mismatch_refused(setup):
    dens, ct, beam, bl, _ = setup
    with pytest.raises(InvalidGeometryError, match="covers 1 beams but 2 beams"):
        compute_influence_matrix(dens, ct, ct, [beam, beam], bl, progress=False)


@pytest.mark.parametrize("workers", [1, 3])
def test_chunks_on_threads_give_the_serial_result(setup, monkeypatch, workers):
    # The numpy backend runs point chunks on a thread pool (Backend.map); small chunks force
    # several of them, and the result must not depend on how many threads ran them.
    from dose_engine import _backend, _field_dose, _influence

    dens, ct, beam, bl, _ = setup
    serial_matrix = compute_influence_matrix(dens, ct, ct, [beam], bl, progress=False).matrix
    serial_dose = field_dose(dens, ct, ct, beam, [[-15, 15, -5, 10]], 2.0)
    monkeypatch.setattr(_backend, "worker_count", lambda: workers)
    monkeypatch.setattr(_field_dose, "worker_count", lambda: workers)
    monkeypatch.setattr(_field_dose, "CHUNK_POINTS", 1000)
    monkeypatch.setattr(_influence, "CHUNK_PAIRS", 20_000)
    threaded = compute_influence_matrix(dens, ct, ct, [beam], bl, progress=False).matrix
    assert (threaded != serial_matrix).nnz == 0
    np.testing.assert_array_equal(
        field_dose(dens, ct, ct, beam, [[-15, 15, -5, 10]], 2.0), serial_dose
    )


@pytest.mark.parametrize("cutoff_mm", [12.0, 40.0])
def test_columns_are_beamlet_field_doses_within_the_cutoff(setup, cutoff_mm):
    # Column b is the dose of beamlet b's rectangle at 1 MU (field_dose) on the voxels whose
    # window of floor(2 cut-off / w) + 1 lattice cells, starting at the first beamlet centre
    # within the cut-off of the voxel's ray, holds b; zero elsewhere.  A 12 mm cut-off gives
    # a 5-cell window on the 6 x 6 lattice; 40 mm a 17-cell one, wider than the lattice
    # (evaluated on the whole lattice with the cells outside the cut-off masked).
    dens, ct, beam, bl, _ = setup
    im = compute_influence_matrix(
        dens,
        ct,
        ct,
        [beam],
        bl,
        lateral_cutoff_mm=cutoff_mm,
        relative_threshold=0.0,
        progress=False,
    )
    u, v, _ = beam.to_fan_coordinates(ct.index_to_point(np.argwhere(np.ones(ct.shape, bool))))
    (x0, y0), w, h = bl.map_origin_mm[0], bl.width_mm[0], bl.height_mm[0]
    k_x, k_y = int(np.floor(2 * cutoff_mm / w)) + 1, int(np.floor(2 * cutoff_mm / h)) + 1
    c_lo, r_lo = np.ceil((u - cutoff_mm - x0) / w), np.ceil((v - cutoff_mm - y0) / h)
    n_r, n_c = bl.fluence_map_shape(0)
    # and whose ray passes within the cut-off of the lattice (the beam's reach)
    in_reach = (np.abs(u - (x0 + (n_c - 1) * w / 2)) <= n_c * w / 2 + cutoff_mm) & (
        np.abs(v - (y0 + (n_r - 1) * h / 2)) <= n_r * h / 2 + cutoff_mm
    )
    dense = im.matrix.toarray()
    for b in range(len(bl)):
        rect = [[bl.x_mm[b] - w / 2, bl.x_mm[b] + w / 2, bl.y_mm[b] - h / 2, bl.y_mm[b] + h / 2]]
        ref = np.asarray(field_dose(dens, ct, ct, beam, rect, 1.0)).ravel()
        c, r = bl.col[b], bl.row[b]
        inside = (c >= c_lo) & (c < c_lo + k_x) & (r >= r_lo) & (r < r_lo + k_y) & in_reach
        np.testing.assert_allclose(dense[:, b], np.where(inside, ref, 0.0), rtol=1e-4, atol=1e-9)
        assert np.any(~inside & (ref > 1e-3 * ref.max())) == (cutoff_mm < 30)


def test_wide_rows_in_one_pass_equal_two_passes(setup):
    # Rows in `wide_mask` with the wide cut-off and threshold, the others with the defaults:
    # one ray trace per beam gives the two separately computed matrices, side by side.
    dens, ct, beam, bl, _ = setup
    near, wide = np.zeros(ct.shape, bool), np.zeros(ct.shape, bool)
    near[:, :, :12] = True
    wide[:, :, 10:] = True  # overlaps `near`: wide settings win there
    kw = dict(progress=False)
    one = compute_influence_matrix(
        dens,
        ct,
        ct,
        [beam],
        bl,
        voxel_mask=near,
        wide_mask=wide,
        wide_lateral_cutoff_mm=100.0,
        wide_relative_threshold=1e-4,
        **kw,
    )
    a = compute_influence_matrix(dens, ct, ct, [beam], bl, voxel_mask=near & ~wide, **kw)
    b = compute_influence_matrix(
        dens,
        ct,
        ct,
        [beam],
        bl,
        voxel_mask=wide,
        lateral_cutoff_mm=100.0,
        relative_threshold=1e-4,
        **kw,
    )
    two = (a.matrix + b.matrix).tocsr()
    assert one.nnz == two.nnz and a.nnz > 0 and b.nnz > 0
    assert abs(one.matrix - two).max() <= 1e-6 * two.max()
    assert one.settings["wide_rows"] == wide.sum()
    with pytest.raises(InvalidGeometryError, match="wide_lateral_cutoff_mm"):
        compute_influence_matrix(dens, ct, ct, [beam], bl, wide_mask=wide, **kw)
