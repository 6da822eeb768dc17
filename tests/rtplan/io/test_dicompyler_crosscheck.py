"""Cross-check of rtplan's DVH against dicompyler-core on the same DICOM files.

The TG-119 prostate phantom (rtplan.phantoms.write_phantom) supplies the RT-STRUCT; the
dose is analytic (a 3-D Gaussian, and a linear gradient) written as RT-DOSE with
rtplan.io's writer.  dicompyler-core (dicompylercore.dvhcalc.get_dvh) computes its DVH
independently: binary in-plane rasterisation of the contours on the dose pixels (voxel
centre inside the polygon), one slab per contour plane, 1 cGy bins, and Dx read at the
nearest bin.  rtplan uses fractional occupancy and interpolates.

Fair settings: the dose grid's slices sit on the contour planes (so neither tool
interpolates dose between planes) and cover every structure compared (dicompyler adds
contour planes outside the dose grid at the edge dose); in-plane, the dose pixels are
deliberately *not* aligned with the CT (offset by a third of a pixel).  Mean dose and D95
must agree within 1 %.

dicompyler-core 0.5.6 still imports ``pydicom.dicomio.read_file``, which pydicom 3
renamed to ``dcmread``; the fixture adds that alias for the duration of the test.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from pydicom.uid import generate_uid

from dose_engine import Grid
from rtplan.evaluation import dvh
from rtplan.io import read_rtdose, read_structure_set, write_patient, write_rtdose
from rtplan.phantoms import make_phantom


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    out = tmp_path_factory.mktemp("xcheck") / "prostate"
    patient = make_phantom("prostate", pixel_spacing_mm=3.0, slice_spacing_mm=2.5)
    written = write_patient(patient, out)
    # dose grid: slices on the contour planes (z = k * 2.5 mm), pixels offset by 1 mm
    dose_grid = Grid((41, 31, 41), origin_mm=(-59.0, -39.0, -50.0), spacing_mm=(3.0, 3.0, 2.5))
    z, y, x = dose_grid.zyx_axes_mm()
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    doses = {
        "gauss": 70.0 * np.exp(-((xx - 5) ** 2 + (yy + 3) ** 2 + zz**2) / (2 * 35.0**2)),
        "linear": np.clip(60.0 + 0.4 * xx - 0.25 * yy + 0.1 * zz, 0, None),
    }
    paths = {}
    for name, d in doses.items():
        p = out.parent / f"RD_{name}.dcm"
        write_rtdose(p, d, dose_grid, patient, plan_sop_instance_uid=generate_uid())
        paths[name] = p
    return written.rtstruct_path, paths


def _ours(rs_path, rd_path, roi_name):
    dose, grid, _ = read_rtdose(rd_path)
    s = read_structure_set(rs_path).structures[roi_name]
    return dvh(dose, s.occupancy(grid), voxel_volume_cc=grid.voxel_volume_cc, name=roi_name), s


@pytest.mark.parametrize("dose_name", ["gauss", "linear"])
@pytest.mark.parametrize("roi_name", ["PTV", "Rectum"])
def test_mean_and_d95_agree_with_dicompyler(dicompyler, case, dose_name, roi_name):
    rs_path, rd_paths = case
    ours, s = _ours(rs_path, rd_paths[dose_name], roi_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = dicompyler.get_dvh(str(rs_path), str(rd_paths[dose_name]), s.number)
    assert theirs.name == roi_name
    assert ours.mean_gy == pytest.approx(float(theirs.mean), rel=0.01)
    assert ours.d95_gy == pytest.approx(float(theirs.D95.value), rel=0.01)
    # volume: ours is the polygon areas (shoelace) times the 2.5 mm slabs; dicompyler's
    # binary centre-in-polygon rasterisation on 3 mm pixels is coarser (the 13 mm-radius
    # rectum comes out ~5 % small), so it is only checked loosely.
    area_mm2 = sum(
        0.5 * abs(np.dot(c[:, 0], np.roll(c[:, 1], 1)) - np.dot(c[:, 1], np.roll(c[:, 0], 1)))
        for c in s.contours
    )
    assert ours.total_volume_cc == pytest.approx(area_mm2 * 2.5 / 1000.0, rel=0.002)
    assert ours.total_volume_cc == pytest.approx(float(theirs.volume), rel=0.08)
    if dose_name == "linear" and roi_name == "PTV":
        # the PTV ellipsoid is centred on the origin: a linear dose averages to its value there
        assert ours.mean_gy == pytest.approx(60.0, rel=1e-3)
    # and the comparison is not vacuous: the doses do vary across the structure
    assert ours.d2_gy - ours.d98_gy > 2.0
