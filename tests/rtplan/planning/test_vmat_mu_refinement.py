"""The arcs' MU refinement (rtplan.planning._vmat.refine_arc_mu) on a small case.

A 40-degree sliding-window arc (a 20 mm slit sweeping across the C-shape's PTV) on the
Varian-style machine, 8 mm dose grid, fitted to 1.2 times its own dose on the PTV.
Independent checks:

- the fit scales the meterset by the factor its reference was scaled by: the reference
  is ``compute_plan_dose`` of the arc (the other path from control points to dose), so
  the exact optimum, every interval at 1.2 times its meterset, is reached only if the
  intervals' columns sum to that dose;
- the intervals' columns computed as tasks on a 2-worker Dask LocalCluster give the same
  plan as the serial run, to the last bit.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from dose_engine import hu_to_density
from dose_engine._beam import Beam
from rtplan import DeliverablePlan, load_machine
from rtplan.delivery import ArcBeam, ControlPoint
from rtplan.dose import compute_plan_dose
from rtplan.dose._aperture import resolve_mlc_parameters
from rtplan.dose._plan_dose import resolve_beam_model
from rtplan.phantoms import make_phantom
from rtplan.planning._vmat import refine_arc_mu
from rtplan.structures import body_grid, body_structure

VARIAN = load_machine("VarianMLC120")
FRACTIONS = 2
N_CP = 11  # 10 intervals of 4 degrees


def _slit_arc(iso, position) -> ArcBeam:
    """A 20 mm slit sweeping from -40 to +40 mm along the leaves over 200 -> 240 CW."""
    y = VARIAN.mlc.leaf_centers_mm
    inside = np.abs(y) < 30.0
    cps = []
    for k in range(N_CP):
        a = -40.0 + 6.0 * k
        leaves = np.stack([np.where(inside, a, 0.0), np.where(inside, a + 20.0, 0.0)])
        cps.append(
            ControlPoint(
                200.0 + 4.0 * k, leaves, {"X": (-50.0, 50.0), "Y": (-30.0, 30.0)}, k / (N_CP - 1)
            )
        )
    return ArcBeam(
        1,
        "slit",
        Beam(200.0, isocenter_mm=iso, patient_position=position),
        VARIAN,
        control_points=cps,
        meterset_mu=2.0 * (N_CP - 1) * FRACTIONS,
        rotation_direction="CW",
    )


@pytest.fixture(scope="module")
def case():
    patient = make_phantom("cshape", pixel_spacing_mm=5.0, slice_spacing_mm=5.0)
    grid = body_grid(patient.ct.grid, body_structure(patient), 8.0)
    mask = body_structure(patient).occupancy(grid) > 0
    ptv = np.flatnonzero((patient.structure("PTV").occupancy(grid) > 0).ravel() & mask.ravel())
    iso = tuple(round(v, 1) for v in patient.structure("PTV").centroid_mm(patient.ct.grid))
    arc = _slit_arc(iso, patient.position)
    model = resolve_beam_model(None)
    plan_dose = compute_plan_dose(
        DeliverablePlan([arc], FRACTIONS, 4.0, "PTV"),
        patient,
        dose_grid=grid,
        model=model,
        voxel_mask=mask,
    ).dose_gy
    density = hu_to_density(np.asarray(patient.ct.array, np.float32), None)
    kwargs = dict(
        density=density,
        ct_grid=patient.ct.grid,
        dose_grid=grid,
        model=model,
        backend="numpy",
        mlc_parameters=resolve_mlc_parameters(VARIAN, model),
        fractions=FRACTIONS,
        cap_pct=0.0,
    )
    fit_args = (
        [arc],
        1.2 * plan_dose.ravel()[ptv],
        ptv,
        np.ones(ptv.size),
        np.zeros(ptv.size),
    )
    arcs, record = refine_arc_mu(*fit_args, **kwargs)
    context = dict(  # what the planner's final dose reads
        plan=DeliverablePlan(arcs, FRACTIONS, 4.0, "PTV"),
        patient=patient,
        dose_grid=grid,
        beam_model=model,
        backend="numpy",
        body_occupancy=mask.astype(np.float32),
        occupancy={},
        matrix_rows=ptv,
        density_table=None,
        final_algorithm="pencil_beam",
        protocol=types.SimpleNamespace(
            optimization=types.SimpleNamespace(final_dose_corrections=1)
        ),
    )
    return fit_args, kwargs, arcs, record, context


def test_fit_recovers_the_reference_scale(case):
    _, _, arcs, record, _ = case
    assert record["n_columns"] == record["n_intervals"] == N_CP - 1
    assert record["objective_after"] < 1e-3 * record["objective_before"]
    assert record["mu_after"] == pytest.approx(1.2 * record["mu_before"], rel=1e-3)
    assert arcs[0].meterset_mu == pytest.approx(1.2 * 2.0 * (N_CP - 1) * FRACTIONS, rel=1e-3)


def test_columns_on_a_dask_cluster_give_the_same_plan(case):
    distributed = pytest.importorskip("distributed")
    fit_args, kwargs, arcs, record, _ = case
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        arcs_d, record_d = refine_arc_mu(*fit_args, **kwargs, client=client)
    assert record_d["objective_after"] == record["objective_after"]
    assert record_d["mu_after"] == record["mu_after"]
    w = [cp.cumulative_meterset_weight for cp in arcs[0].control_points]
    w_d = [cp.cumulative_meterset_weight for cp in arcs_d[0].control_points]
    assert w_d == w


@pytest.mark.parametrize("arcs", [True, False])
def test_final_dose_keeps_no_ray_traced_points_for_arcs(case, arcs):
    """The correction loop skips arcs, so their final dose must not keep each angle's
    ray-traced points (24 bytes per voxel and angle: about 3 GB for two full arcs on the
    C-shape's 3 mm grid); a static plan's are kept for the loop."""
    from rtplan.planning._plan import aperture_dose

    ctx = types.SimpleNamespace(**case[-1], arcs=["arc"] if arcs else [], points_cache={})
    dose = aperture_dose(ctx)
    assert float(np.max(dose)) > 0.1
    assert (len(ctx.points_cache) == 0) is arcs
