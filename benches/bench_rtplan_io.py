"""Speed of the DICOM RT-PLAN / RT-DOSE path and of ``rtplan dose`` recalculation.

Run: ``python -m pytest benches/bench_rtplan_io.py -p no:cacheprovider``.
Case: the TG-119 C-shape phantom (2.5 mm CT), 7 equispaced beams of 12 sequenced
segments each (Varian-style 120-leaf MLC), dose on a 3 mm grid.
"""

from __future__ import annotations

import numpy as np
import pytest

from dose_engine._beam import Beam
from rtplan import (
    DeliverableBeam,
    DeliverablePlan,
    compute_plan_dose,
    load_machine,
    read_patient,
)
from rtplan.io import read_rtdose, read_rtplan, write_rtdose, write_rtplan
from rtplan.phantoms import write_phantom
from rtplan.sequencing import sequence_fluence

MACHINE = load_machine("VarianMLC120")


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_rtplan")
    written = write_phantom("cshape", root / "cshape")
    patient = read_patient(written.ct_dir, written.rtstruct_path)
    iso = patient.structure("PTV").centroid_mm(patient.ct.grid)
    rng = np.random.default_rng(0)
    xe = np.arange(-50.0, 50.1, 5.0)
    ye = np.arange(-40.0, 40.1, 5.0)
    beams = []
    for k in range(7):
        f = rng.random((ye.size - 1, xe.size - 1)) * 30.0
        seq = sequence_fluence(f, MACHINE, x_edges_mm=xe, y_edges_mm=ye, n_levels=12)
        beams.append(
            DeliverableBeam(
                k + 1,
                f"G{k * 360 / 7:.0f}",
                Beam(k * 360.0 / 7.0, isocenter_mm=iso),
                MACHINE,
                seq.segments,
            )
        )
    plan = DeliverablePlan(beams, 30, 60.0, "PTV")
    return root, patient, plan


def test_write_rtplan(benchmark, case):
    root, patient, plan = case
    ds = benchmark(lambda: write_rtplan(root / "RP.dcm", plan, patient, overwrite=True))
    n_cp = sum(int(b.NumberOfControlPoints) for b in ds.BeamSequence)
    print(f"{len(plan.beams)} beams, {n_cp} control points")


def test_read_rtplan(benchmark, case):
    root, patient, plan = case
    write_rtplan(root / "RP_read.dcm", plan, patient, overwrite=True)
    back = benchmark(read_rtplan, root / "RP_read.dcm", patient)
    assert back.total_mu == pytest.approx(plan.total_mu, rel=1e-6)


def test_compute_plan_dose_3mm(benchmark, case):
    _, patient, plan = case
    result = benchmark.pedantic(
        compute_plan_dose,
        args=(plan, patient),
        kwargs={"dose_grid_mm": 3.0},
        rounds=1,
        iterations=1,
    )
    print(f"dose grid {result.grid.shape}, max {result.dose_gy.max():.2f} Gy")


def test_write_and_read_rtdose(benchmark, case):
    root, patient, plan = case
    rng = np.random.default_rng(1)
    grid = patient.ct.grid.with_spacing(3.0)
    dose = rng.random(grid.shape) * 70.0

    def round_trip():
        write_rtdose(
            root / "RD.dcm", dose, grid, patient, plan_sop_instance_uid="1.2.3", overwrite=True
        )
        return read_rtdose(root / "RD.dcm")

    back, _, _ = benchmark(round_trip)
    assert np.max(np.abs(back - dose)) < 1e-7
    print(f"{dose.size} voxels, {dose.size * 4 / 1e6:.1f} MB of pixels")
