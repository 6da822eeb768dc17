"""HDF5 round trip and the content-addressed influence-matrix cache."""

import numpy as np
import pytest

from dose_engine import (
    Beam,
    DoseEngineError,
    beamlets_for_target,
    cached_influence_matrix,
    load_influence_matrix,
    save_influence_matrix,
)
from dose_engine._validation import water_phantom


@pytest.fixture(scope="module")
def case():
    dens, ct = water_phantom(900.0, spacing_mm=10.0, half_width_mm=50, depth_mm=120)
    beams = [Beam(0.0), Beam(90.0, couch_angle_deg=10.0, patient_position="FFS")]
    bl = beamlets_for_target(beams, np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 5.0]]))
    return dens, ct, beams, bl


def test_round_trip(tmp_path, case):
    dens, ct, beams, bl = case
    im = cached_influence_matrix(dens, ct, ct, beams, bl, cache_dir=tmp_path, progress=False)
    out = save_influence_matrix(im, tmp_path / "m.h5")
    back = load_influence_matrix(out)
    assert (back.matrix != im.matrix).nnz == 0 and back.matrix.dtype == np.float32
    assert back.beams == im.beams and back.dose_grid == im.dose_grid
    np.testing.assert_array_equal(back.beamlets.x_mm, bl.x_mm)
    assert back.beamlets.map_shapes == bl.map_shapes
    assert back.model_provenance["fingerprint"] == im.model_provenance["fingerprint"]
    with pytest.raises(DoseEngineError, match="already exists"):
        save_influence_matrix(im, out)


def test_second_request_loads_and_any_change_recomputes(tmp_path, case):
    dens, ct, beams, bl = case
    first = cached_influence_matrix(dens, ct, ct, beams, bl, cache_dir=tmp_path, progress=False)
    assert first.settings["cache_hit"] is False
    assert len(list(tmp_path.glob("influence-*.h5"))) == 1
    again = cached_influence_matrix(dens, ct, ct, beams, bl, cache_dir=tmp_path, progress=False)
    assert again.settings["cache_hit"] is True
    assert (again.matrix != first.matrix).nnz == 0
    # change one voxel of the CT -> recompute (new file)
    d2 = dens.copy()
    d2[0, 0, 0] = 0.5
    c2 = cached_influence_matrix(d2, ct, ct, beams, bl, cache_dir=tmp_path, progress=False)
    assert c2.settings["cache_hit"] is False
    # change a beam angle, a threshold, a mask -> recompute
    b2 = [beams[0], Beam(91.0, couch_angle_deg=10.0, patient_position="FFS")]
    assert (
        cached_influence_matrix(dens, ct, ct, b2, bl, cache_dir=tmp_path, progress=False).settings[
            "cache_hit"
        ]
        is False
    )
    assert (
        cached_influence_matrix(
            dens, ct, ct, beams, bl, cache_dir=tmp_path, relative_threshold=0.01, progress=False
        ).settings["cache_hit"]
        is False
    )
    mask = np.ones(ct.shape, bool)
    assert (
        cached_influence_matrix(
            dens, ct, ct, beams, bl, cache_dir=tmp_path, voxel_mask=mask, progress=False
        ).settings["cache_hit"]
        is False
    )
    assert len(list(tmp_path.glob("influence-*.h5"))) == 5
    assert not list(tmp_path.glob(".tmp-*"))


def test_not_an_influence_file(tmp_path):
    import h5py

    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f.attrs["format"] = "something else"
    with pytest.raises(DoseEngineError, match="not an rtplan influence-matrix file"):
        load_influence_matrix(p)
