"""Reading PortPy-format patient folders (issue 4)."""

import json

import h5py
import numpy as np
import pytest
from _portpy_synth import synthetic_lung, write_portpy_patient

from rtplan.errors import InputError
from rtplan.io import read_portpy_patient

PID = "Synthetic_Patient_7"


def _tiny(folder):
    """CT 2 x 4 x 4; dose voxels = 2 x 2 x 1 blocks; two beams with hand-made triplets."""
    ct = np.arange(32, dtype=np.int16).reshape(2, 4, 4)
    ct2dose = np.repeat(np.repeat(np.arange(8).reshape(2, 2, 2), 2, 1), 2, 2).astype(np.int64)
    ct2dose[0, 0, 0] = -1  # one CT voxel outside the optimisation voxels
    a = np.zeros((2, 4, 4), bool)
    a[0, :2, :2] = True  # dose voxel 0 (3 of its 4 mapped CT voxels... plus the -1 one)
    a[1, 1:3, 1:3] = True  # one CT voxel in each of dose voxels 4, 5, 6, 7
    b = np.zeros_like(a)
    masks = {"PTV": a, "EMPTY": b}
    rng = np.random.default_rng(0)
    beams = []
    for bid, nb in ((3, 4), (5, 2)):
        rows = np.array([0, 1, 7, 7, 2])
        cols = np.array([0, 1, nb - 1, 0, 1])
        vals = rng.uniform(0.1, 1.0, 5)
        table = {
            "id": np.arange(nb),
            "width_mm": np.full(nb, 5.0),
            "height_mm": np.full(nb, 5.0),
            "position_x_mm": np.arange(nb) * 5.0,
            "position_y_mm": np.zeros(nb),
            "MLC_leaf_idx": np.zeros(nb, int),
        }
        beams.append(
            {
                "id": bid,
                "gantry": 40 * bid,
                "iso": [1.0, 2.0, 3.0],
                "table": table,
                "triplets": np.stack([rows, cols, vals], 1),
            }
        )
    write_portpy_patient(
        folder / PID,
        ct_hu=ct,
        origin_xyz_mm=(-3, -3, 0),
        spacing_xyz_mm=(2, 2, 3),
        masks=masks,
        ct_to_dose=ct2dose,
        dose_spacing_xyz_mm=(4, 4, 3),
        beams=beams,
    )
    return beams


def test_reads_layout_and_assembles_matrix(tmp_path):
    beams = _tiny(tmp_path)
    p = read_portpy_patient(tmp_path, PID)
    assert p.ct_hu.shape == (2, 4, 4) and p.ct_hu[1, 3, 2] == 30
    assert p.ct_grid.origin_mm == (-3, -3, 0) and tuple(p.ct_grid.spacing_mm) == (2, 2, 3)
    assert [b.beam_id for b in p.beams] == [3, 5]
    assert p.beams[1].gantry_angle_deg == 200 and p.beams[0].isocenter_mm == (1.0, 2.0, 3.0)
    assert p.beams[1].columns == slice(4, 6) and p.beams[0].beamlets["position_x_mm"].shape == (4,)
    a = p.influence_matrix
    assert a.shape == (8, 6) and a.dtype == np.float32 and a.format == "csr"
    dense = np.zeros((8, 6))
    for off, b in zip((0, 4), beams, strict=True):
        for r, c, v in b["triplets"]:
            dense[int(r), off + int(c)] += v
    np.testing.assert_allclose(a.toarray(), dense, rtol=1e-6)
    # structure voxels and fractions by brute force over the CT voxels
    vmap = p.ct_to_dose_voxel
    for name, m in p.structure_masks.items():
        counts = {}
        for idx in zip(*np.nonzero(m), strict=True):
            if vmap[idx] >= 0:
                counts[int(vmap[idx])] = counts.get(int(vmap[idx]), 0) + 1
        assert p.structure_voxels[name].tolist() == sorted(counts)
        totals = {v: int((vmap == v).sum()) for v in counts}
        np.testing.assert_allclose(
            p.structure_fractions[name], [counts[v] / totals[v] for v in sorted(counts)]
        )
    assert p.structure_fractions["PTV"][0] == pytest.approx(1.0)  # 3 of 3 mapped CT voxels
    assert p.structure_fractions["PTV"][-1] == pytest.approx(0.25)


def test_beam_subset_in_given_order(tmp_path):
    _tiny(tmp_path)
    p = read_portpy_patient(tmp_path, PID, beam_ids=[5])
    assert [b.beam_id for b in p.beams] == [5] and p.influence_matrix.shape == (8, 2)


def test_missing_file_is_named_without_patient_id(tmp_path):
    _tiny(tmp_path)
    (tmp_path / PID / "Beams" / "Beam_5_Data.h5").unlink()
    with pytest.raises(InputError, match=r"`Beams/Beam_5_Data.h5`.*missing") as info:
        read_portpy_patient(tmp_path, PID)
    assert PID not in str(info.value)
    with pytest.raises(InputError, match="Beam_9_MetaData.json"):
        read_portpy_patient(tmp_path, PID, beam_ids=[9])


def test_missing_key_is_named(tmp_path):
    _tiny(tmp_path)
    path = tmp_path / PID / "Beams" / "Beam_3_MetaData.json"
    meta = json.loads(path.read_text())
    del meta["gantry_angle"]
    path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"Beam_3_MetaData.json` lacks the key `gantry_angle`"):
        read_portpy_patient(tmp_path, PID)


def test_missing_dataset_and_bad_triplets(tmp_path):
    _tiny(tmp_path)
    with h5py.File(tmp_path / PID / "Beams" / "Beam_3_Data.h5", "a") as f:
        del f["inf_matrix_sparse"]
        f["inf_matrix_sparse"] = np.array([[99.0, 0.0, 1.0]])
    with pytest.raises(InputError, match="refers to dose voxel 99, but the voxel map has 8"):
        read_portpy_patient(tmp_path, PID)
    with h5py.File(tmp_path / PID / "Beams" / "Beam_3_Data.h5", "a") as f:
        del f["inf_matrix_sparse"]
    with pytest.raises(InputError, match="has no dataset `inf_matrix_sparse`"):
        read_portpy_patient(tmp_path, PID)


def test_missing_patient_folder(tmp_path):
    with pytest.raises(InputError, match="patient folder is missing") as info:
        read_portpy_patient(tmp_path, PID)
    assert PID not in str(info.value)


def test_synthetic_lung_feeds_the_optimizer(tmp_path):
    import optimizers as op

    info = synthetic_lung(tmp_path / "Lung", shape_zyx=(8, 40, 60), ptv_radius_mm=10, n_beams=5)
    p = read_portpy_patient(tmp_path, "Lung", all_beamlets=True)
    assert p.influence_matrix.shape == (info["n_dose_voxels"], info["n_beamlets"])
    assert p.influence_matrix.nnz == info["nnz"]
    terms = [
        op.Underdose("PTV", 60, weight=100),
        op.Overdose("PTV", 62, weight=100),
        op.Overdose("BODY", 30, weight=1),
    ]
    prob = op.Problem(
        p.influence_matrix, p.structure_voxels, terms, voxel_weights=p.structure_fractions
    )
    r = op.solve_first_order(prob)
    dose = p.influence_matrix @ r.x.astype(np.float32)
    assert r.success and np.median(dose[p.structure_voxels["GTV"]]) == pytest.approx(61, abs=1.5)


# --------------------------------------------------------- PortPy's beamlet selection (issue 18)
def _portpy_rule_by_grid(table, outline, margin_mm):
    """PortPy's selection computed another way: matplotlib's point-in-polygon, the distance
    to the outline from points sampled every 0.005 mm along it, and the leaf-pair fill on
    the 2-D beamlet lattice (rows = distinct y, columns = distinct x), as PortPy lays it out."""
    from matplotlib.path import Path as MplPath

    x, y = table["position_x_mm"], table["position_y_mm"]
    closed = np.vstack([outline, outline[:1]])
    pts = np.concatenate(
        [
            a
            + np.linspace(0, 1, int(np.ceil(np.linalg.norm(b - a) / 0.005)) + 1)[:, None] * (b - a)
            for a, b in zip(closed[:-1], closed[1:], strict=True)
        ]
    )
    centres = np.stack([x, y], 1)
    dist = np.min(np.linalg.norm(centres[:, None, :] - pts[None, :, :], axis=2), axis=1)
    inside = MplPath(closed).contains_points(centres)
    marked = (dist < margin_mm) & ~inside & (dist > 1e-6)
    xs, ys = np.unique(x), np.unique(y)
    grid = np.zeros((ys.size, xs.size), bool)
    grid[np.searchsorted(ys, y[marked]), np.searchsorted(xs, x[marked])] = True
    filled = np.zeros_like(grid)
    for r, row in enumerate(grid):
        on = np.flatnonzero(row)
        if on.size:
            filled[r, on[0] : on[-1] + 1] = True
    return np.flatnonzero(filled[np.searchsorted(ys, y), np.searchsorted(xs, x)])


def test_beamlet_selection_is_portpys(tmp_path):
    info = synthetic_lung(tmp_path / "Lung", shape_zyx=(12, 50, 70), ptv_radius_mm=14, n_beams=5)
    p = read_portpy_patient(tmp_path, "Lung")
    full = read_portpy_patient(tmp_path, "Lung", all_beamlets=True)
    assert full.influence_matrix.shape[1] == info["n_beamlets"]
    n_kept = 0
    for beam, whole in zip(p.beams, full.beams, strict=True):
        with h5py.File(tmp_path / "Lung" / "Beams" / f"Beam_{beam.beam_id}_Data.h5") as f:
            outline = f["BEV_structure_contour_points/PTV/Segment_0"][()]
        expected = _portpy_rule_by_grid(whole.beamlets, outline, 3.0)
        assert beam.selection == "bev"
        np.testing.assert_array_equal(beam.beamlet_indices, expected)
        assert 0 < expected.size < whole.n_beamlets
        # the columns are the file's columns of those beamlets, in the same order
        cols = whole.columns.start + expected
        assert (p.influence_matrix[:, beam.columns] != full.influence_matrix[:, cols]).nnz == 0
        np.testing.assert_array_equal(beam.beamlets["id"], whole.beamlets["id"][expected])
        n_kept += expected.size
    assert p.influence_matrix.shape == (info["n_dose_voxels"], n_kept)


def test_beamlet_selection_on_a_square_by_hand():
    from rtplan.io._portpy_beamlets import portpy_beamlet_selection

    # centres every 2.5 mm in x, 5 mm in y; the outline a 10 mm square around the origin
    x, y = np.meshgrid(np.arange(-10, 10.1, 2.5), np.arange(-10, 10.1, 5.0))
    square = np.array([[-5, -5], [5, -5], [5, 5], [-5, 5]], float)
    keep = portpy_beamlet_selection(x.ravel(), y.ravel(), [square], 3.0)
    # rows y = -5, 0, 5: x = +-7.5 lie 2.5 mm outside the square (marked), the leaf pair is
    # opened between them (x = -7.5 ... 7.5: 7 beamlets); rows y = +-10 are 5 mm away
    kept = {(float(a), float(b)) for a, b in zip(x.ravel()[keep], y.ravel()[keep], strict=True)}
    assert kept == {(float(a), float(b)) for b in (-5, 0, 5) for a in np.arange(-7.5, 7.6, 2.5)}
    # a margin narrower than the beamlet pitch marks no centre in these rows (PortPy's rule)
    assert not portpy_beamlet_selection(x.ravel(), y.ravel(), [square], 2.0).any()


def test_beams_without_an_outline_keep_every_beamlet(tmp_path, caplog):
    beams = _tiny(tmp_path)
    p = read_portpy_patient(tmp_path, PID)
    assert [b.selection for b in p.beams] == ["all (no beam's-eye-view outline of PTV)"] * 2
    assert p.influence_matrix.shape[1] == sum(b["table"]["id"].size for b in beams)
    assert "has no beam's-eye-view outline of PTV: all 4 beamlets read" in caplog.text


def test_bad_margin_is_refused(tmp_path):
    _tiny(tmp_path)
    with pytest.raises(InputError, match=r"^`beamlet_margin_mm` must be a finite margin >= 0"):
        read_portpy_patient(tmp_path, PID, beamlet_margin_mm=-1.0)
