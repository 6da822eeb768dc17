"""A plan's pencil-beam dose one ray frame at a time (``compute_plan_dose``).

Two arcs over the same gantry angles at collimators 30 and 330 degrees (the default VMAT
pair): each angle is ray-traced once for both, and the plan's dose is the sum of each
arc's own dose (:func:`rtplan.dose.aperture_dose`, which traces every angle of its arc;
the sums differ only in the order of float32 additions).  That the shared trace turned to
each collimator gives the dose of the collimator's own trace is checked in
``tests/dose_engine/test_kernel.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from dose_engine import hu_to_density
from dose_engine._beam import Beam
from rtplan import DeliverablePlan, load_machine
from rtplan.delivery import ArcBeam, ControlPoint
from rtplan.dose import aperture_dose, compute_plan_dose
from rtplan.dose._aperture import frame_groups, static_parts
from rtplan.dose._plan_dose import resolve_beam_model
from rtplan.phantoms import make_phantom
from rtplan.structures import body_grid, body_structure

VARIAN = load_machine("VarianMLC120")


def _slit_arc(number, iso, position, collimator, direction) -> ArcBeam:
    """A 20 mm slit sweeping along the leaves over 200 -> 224 degrees (7 control points)."""
    y = VARIAN.mlc.leaf_centers_mm
    inside = np.abs(y) < 30.0
    angles = 200.0 + 4.0 * np.arange(7)
    angles = angles if direction == "CW" else angles[::-1]
    cps = []
    for k, angle in enumerate(angles):
        a = -40.0 + 8.0 * k
        leaves = np.stack([np.where(inside, a, 0.0), np.where(inside, a + 20.0, 0.0)])
        cps.append(ControlPoint(angle, leaves, {"X": (-50.0, 50.0), "Y": (-30.0, 30.0)}, k / 6))
    return ArcBeam(
        number,
        f"arc{number}",
        Beam(angles[0], collimator, isocenter_mm=iso, patient_position=position),
        VARIAN,
        control_points=cps,
        meterset_mu=30.0,
        rotation_direction=direction,
    )


@pytest.fixture(scope="module")
def case():
    patient = make_phantom("cshape", pixel_spacing_mm=5.0, slice_spacing_mm=5.0)
    iso = tuple(round(v, 1) for v in patient.structure("PTV").centroid_mm(patient.ct.grid))
    arcs = [
        _slit_arc(1, iso, patient.position, 30.0, "CW"),
        _slit_arc(2, iso, patient.position, 330.0, "CC"),
    ]
    return patient, DeliverablePlan(arcs, 1, 2.0, "PTV")


def test_both_arcs_share_each_gantry_angle(case):
    _, plan = case
    groups = frame_groups(plan.beams)
    angles = [{item.part.beam.gantry_angle_deg for item in g} for g in groups]
    assert all(len(a) == 1 for a in angles)
    assert len(groups) == len(static_parts(plan.beams[0])) >= 12  # every 2 deg of 24
    assert all([item.index for item in g] == [0, 1] for g in groups)
    assert {item.part.beam.collimator_angle_deg for g in groups for item in g} == {30.0, 330.0}


def test_each_angle_is_traced_once_and_the_dose_is_each_arcs_own(case, traced_beams):
    patient, plan = case
    model = resolve_beam_model(None)
    grid = body_grid(patient.ct.grid, body_structure(patient), 8.0)
    mask = body_structure(patient).occupancy(grid) > 0
    dose = compute_plan_dose(plan, patient, dose_grid=grid, model=model, voxel_mask=mask)
    assert len(traced_beams) == len(set(traced_beams)) == len(frame_groups(plan.beams))
    assert {b.collimator_angle_deg for b in traced_beams} == {0.0}
    density = hu_to_density(np.asarray(patient.ct.array, np.float32), None)
    own = [
        np.asarray(aperture_dose(a, density, patient.ct.grid, grid, model, voxel_mask=mask))
        for a in plan.beams
    ]
    assert len(traced_beams) == 3 * len(frame_groups(plan.beams))  # each arc alone: every angle
    peak = float(dose.dose_gy.max())
    assert peak > 0.05
    np.testing.assert_allclose(dose.dose_gy, own[0] + own[1], rtol=0, atol=1e-6 * peak)
    assert dose.beam_max_gy == pytest.approx({1: own[0].max(), 2: own[1].max()}, rel=1e-6)
    assert not np.allclose(own[0], own[1], rtol=0.05)  # the collimators' apertures differ
