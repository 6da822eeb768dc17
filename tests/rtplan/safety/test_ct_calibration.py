"""CT numbers outside the HU table are counted with a warning; metal is flagged (issue 15).

Counts are checked against voxels placed by hand: CT grid and dose grid are the same, so
each CT voxel is its own dose voxel and the expected counts are exact.  The planner's
warning is checked on the C-shape phantom with a metal insert in its core: the count is
the insert's CT voxels, the structure named is the core, and plan.json carries it.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from _tiny_protocol import tiny_cshape_protocol

from dose_engine import Grid, HUTable
from rtplan.phantoms import make_phantom
from rtplan.planning import plan_patient
from rtplan.protocols import load_protocol
from rtplan.safety import LOW_TOLERANCE_HU, METAL_HU, ct_calibration_warnings

#: In a folder: the warnings name the file only (they go into plan.json and the report,
#: which carry no folder of the machine; the Alderson phantom's 3069 HU showed the path).
TABLE = HUTable([-1000.0, 0.0, 2000.0], [0.001, 1.0, 1.9], path="/site/physics/clinic.csv")


def _case():
    grid = Grid((10, 10, 10), (0.0, 0.0, 0.0), (2.0, 2.0, 2.0))
    hu = np.zeros(grid.shape)
    body = np.zeros(grid.shape)
    body[:, :, :8] = 1.0  # x index 8, 9 outside the body
    organ = np.zeros(grid.shape)
    organ[:5] = 1.0
    hu[0, 0, :7] = METAL_HU + 500  # 7 metal voxels in the organ (also above the table)
    hu[9, 9, :3] = 2500.0  # 3 above the table's top, outside the organ
    hu[8, 1, :5] = -1000 - LOW_TOLERANCE_HU - 150  # 5 well below the table's air row
    hu[7, 2, :4] = -1000 - LOW_TOLERANCE_HU + 26  # 4 within the noise band: not counted
    hu[3, 3, 8:] = METAL_HU + 900  # metal outside the body: not counted
    # a ring of air around each slice: the body does not reach the image's edge
    ring = ((0, 0), (1, 1), (1, 1))
    grid = Grid((10, 12, 12), (-2.0, -2.0, 0.0), (2.0, 2.0, 2.0))
    hu = np.pad(hu, ring, constant_values=-1000.0)
    body, organ = np.pad(body, ring), np.pad(organ, ring)
    return hu, grid, body, {"Organ": organ, "Other": body - organ}


def test_counts_clamped_and_metal_voxels_in_the_body():
    hu, grid, body, structures = _case()
    warnings = {
        w.code: w.message for w in ct_calibration_warnings(hu, grid, TABLE, grid, body, structures)
    }
    assert set(warnings) == {"hu_clamped", "metal"}
    clamped = warnings["hu_clamped"]
    assert clamped.startswith("CT calibration: 15 CT voxels inside the body")  # 7 + 3 + 5
    assert "table clinic.csv (-1000 to 2000 HU; found -1200 to 3500 HU)" in clamped
    assert "/site" not in clamped
    assert "in Other 8, Organ 7;" in clamped  # most affected first
    metal = warnings["metal"]
    assert metal.startswith(f"CT calibration: 7 CT voxels inside the body are above {METAL_HU:g}")
    assert "highest 3500 HU), in Organ 7;" in metal


def test_no_warning_when_the_ct_is_within_the_table():
    hu, grid, body, structures = _case()
    hu = np.clip(hu, -1000.0 - LOW_TOLERANCE_HU + 1, 2000.0)
    assert ct_calibration_warnings(hu, grid, TABLE, grid, body, structures) == []


def test_a_body_cut_by_the_field_of_view_is_flagged_with_its_edges_and_slices():
    # a real chest CT (pyradiomics lung2, 321 mm field of view) cuts the patient's sides:
    # tissue inside the body on the image's first and last columns
    hu, grid, body, structures = _case()
    hu = np.clip(hu, -1000.0, 2000.0)
    body[2:5, 1:11, 0:3] = 1.0  # the body reaches the right edge (column 0) on slices 2-4
    hu[2:5, 3:6, 0] = 40.0  # soft tissue on it: 3 slices x 3 rows
    hu[6, 1:11, 0] = -1000.0  # air on the edge inside the body: not tissue, not counted
    body[6, 1:11, 0] = 1.0
    hu[8, 11, 4:6] = 40.0  # tissue on the posterior edge but outside the body: not counted
    (w,) = ct_calibration_warnings(hu, grid, TABLE, grid, body, structures)
    assert w.code == "ct_truncated"
    z = grid.zyx_axes_mm()[0]
    assert w.message.startswith(
        f"CT FIELD OF VIEW: the body reaches the right edge of the CT image on 3 of 10 slices "
        f"(z {z[2]:g} to {z[4]:g} mm; 9 CT voxels above -350 HU on the edge)"
    )
    hu[3, 4, 11] = 40.0  # and the left edge
    body[3, 4, 11] = 1.0
    (w,) = ct_calibration_warnings(hu, grid, TABLE, grid, body, structures)
    assert "reaches the right, left edge" in w.message and "10 CT voxels" in w.message


@pytest.mark.slow
def test_planner_flags_metal_in_the_core(tmp_path):
    patient = make_phantom("cshape", pixel_spacing_mm=5.0, slice_spacing_mm=5.0)
    ct = patient.ct
    core = patient.structures["Core"].occupancy(ct.grid) > 0.99
    insert = np.zeros(ct.array.shape, dtype=bool)
    zyx = np.argwhere(core)
    centre = zyx[len(zyx) // 2]
    insert[centre[0] - 1 : centre[0] + 2, centre[1] - 1 : centre[1] + 1, centre[2]] = True
    insert &= core
    ct.array[insert] = 4000.0
    (tmp_path / "tiny.toml").write_text(tiny_cshape_protocol(ring=False))
    protocol = load_protocol(tmp_path / "tiny.toml")
    result = plan_patient(patient, protocol)
    found = {w.code: w.message for w in result.warnings}
    n = int(np.count_nonzero(insert))
    assert n >= 3
    assert re.match(
        rf"CT calibration: {n} CT voxels inside the body are above 3000 HU", found["metal"]
    )
    assert "highest 4000 HU), in Core" in found["metal"]
    assert "hu_clamped" in found and f": {n} CT voxels" in found["hu_clamped"]  # table top 3000
    recorded = result.plan_summary()["warnings"]
    assert {"code": "metal", "message": found["metal"]} in recorded
