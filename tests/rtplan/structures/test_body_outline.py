"""Body outline from the CT (rtplan.structures.body_outline) on a thorax-like phantom.

The phantom: the C-shape body ellipse (300 x 200 mm, water) with two lungs (-800 HU
ellipsoids inside it) and a couch below it (a 2.5 mm carbon shell at +200 HU touching the
body, -850 HU foam, a bottom shell), no EXTERNAL contour.  The outline must hold the
lungs, leave out the couch and the outside air, and the planning dose grid must shrink to
it.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from _tiny_protocol import tiny_cshape_protocol

from rtplan import Image
from rtplan.phantoms import make_phantom
from rtplan.planning._plan import _Context, stage_structures
from rtplan.protocols import parse_protocol
from rtplan.structures import (
    BODY_OUTLINE_NAME,
    body_grid,
    body_outline,
    body_outline_mask,
    body_structure,
)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

COUCH_TOP_MM = 100.0  # the body ellipse's posterior edge (y = +100 mm)


@pytest.fixture(scope="module")
def thorax():
    p = make_phantom("cshape", matrix_size=(136, 124))  # FOV y to +153 mm, room for a couch
    g = p.grid
    z, y, x = np.meshgrid(*g.zyx_axes_mm(), indexing="ij")
    hu = np.array(p.ct.array)
    lungs = np.zeros(g.shape, bool)
    for cx in (-70.0, 70.0):
        lungs |= ((x - cx) / 45) ** 2 + ((y + 5) / 55) ** 2 + (z / 70) ** 2 <= 1
    hu[lungs] = -800.0
    couch_x = np.abs(x) <= 160
    top = couch_x & (y >= COUCH_TOP_MM) & (y < COUCH_TOP_MM + 2.5)
    foam = couch_x & (y >= COUCH_TOP_MM + 2.5) & (y < COUCH_TOP_MM + 40)
    bottom = couch_x & (y >= COUCH_TOP_MM + 40) & (y < COUCH_TOP_MM + 42.5)
    hu[foam] = -850.0
    hu[top | bottom] = 200.0
    body = p.structure("Body").occupancy(g) >= 0.5
    structures = {n: s for n, s in p.structures.items() if n != "Body"}
    patient = replace(p, ct=Image(hu.astype(np.float32), g), structures=structures)
    return patient, body, lungs, top | bottom | foam


def test_outline_holds_the_lungs_and_leaves_out_couch_and_air(thorax):
    patient, body, lungs, couch = thorax
    patient_body_occ = (
        make_phantom("cshape", matrix_size=(136, 124)).structure("Body").occupancy(patient.grid)
    )
    mask = body_outline_mask(patient.ct.array, patient.grid.spacing_mm)
    assert np.all(mask[lungs])  # lungs are inside the body
    assert mask.sum() == pytest.approx(body.sum(), rel=0.01)
    # the couch: only top-shell voxels within the 5 mm restore distance of the skin remain
    # (step 4 of the algorithm; here the 2.5 mm shell row under |x| <= 36 mm)
    g = patient.grid
    y = g.zyx_axes_mm()[1][None, :, None]
    kept = mask & couch
    assert np.count_nonzero(kept) <= 0.02 * np.count_nonzero(couch)
    assert np.all(np.broadcast_to(y, mask.shape)[kept] < COUCH_TOP_MM + 2.5)
    touches_body = patient_body_occ > 0  # surface voxels partly inside count as body
    assert not np.any(mask & ~touches_body & ~couch)  # no outside air
    # today's rule (HU > -500) drops the lungs from the body
    assert np.count_nonzero((patient.ct.array > -500) & lungs) == 0


def test_outline_structure_volume_and_planning_grid_crop(thorax):
    patient, body, lungs, couch = thorax
    outline = body_outline(patient)
    g = patient.grid
    assert outline.name == BODY_OUTLINE_NAME and outline.roi_type == "EXTERNAL"
    length_mm = g.shape[0] * g.spacing_mm[2]  # the body ellipse fills every CT slice
    assert outline.volume_cc(g) == pytest.approx(np.pi * 150 * 100 * length_mm / 1000, rel=0.01)
    protocol = parse_protocol(tomllib.loads(tiny_cshape_protocol(ring=True)))
    ctx = _Context(
        patient=patient,
        protocol=protocol,
        backend="numpy",
        cache_dir=None,
        progress=False,
        overrides={},
        beam_model=None,
    )
    stage_structures(ctx)
    assert BODY_OUTLINE_NAME in ctx.patient.structures  # written with the plan
    full = g.with_spacing(protocol.dose_grid_mm)
    lo, hi = (np.array(e) for e in zip(*ctx.dose_grid.extent_mm, strict=True))
    # the dose grid ends within one dose voxel + one voxel of the body, not at the couch
    assert hi[1] <= COUCH_TOP_MM + 2 * protocol.dose_grid_mm[1]
    assert ctx.dose_grid.voxel_count < full.voxel_count
    body_frac = ctx.body_occupancy.mean()
    assert body_frac > 0.6  # π/4 of an ellipse's bounding box, minus padding
    # `rtplan dose` (compute_plan_dose without a grid) crops the same way
    assert body_grid(g, body_structure(patient), protocol.dose_grid_mm) == ctx.dose_grid
    # lungs count as body (the ring and normal tissue reach into them)
    lung_occ = Image(lungs.astype(np.float32), g).resample(ctx.dose_grid, order=0).array
    assert np.all(ctx.body_occupancy[lung_occ > 0.5] > 0.5)


def test_influence_rows_stop_at_the_body_outline(thorax):
    from rtplan import influence_matrix
    from rtplan.dose._influence import body_mask

    patient, body, lungs, couch = thorax
    grid = patient.grid.with_spacing(10.0)
    mask = body_mask(patient, grid)  # no EXTERNAL ROI: the outline
    expected = body_outline(patient).occupancy(grid) > 0
    np.testing.assert_array_equal(mask, expected)
    im = influence_matrix(
        patient, target="PTV", gantry_angles_deg=[180.0], dose_grid_mm=10.0, progress=False
    )
    rows = np.flatnonzero(np.diff(im.matrix.indptr) > 0)
    assert rows.size > 0 and np.all(expected.ravel()[rows])  # nothing in the couch or air
