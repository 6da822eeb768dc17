"""Independent check of sequenced plans with pymedphys (0.41).

An Agility-style plan (ASYMY + MLCX, the only jaw configuration pymedphys models) is
sequenced from random fluence maps, written as a DICOM RT-PLAN with
:func:`rtplan.io.write_rtplan`, read back by ``pymedphys.Delivery.from_dicom`` and turned
into a per-fraction meterset map by ``Delivery.metersetmap()``.  That map must equal our
quantised fluence divided by the number of fractions.

pymedphys's metersetmap grid (``pymedphys.metersetmap.grid()``): 1 mm pixels, columns at
integer ``grid["mlc"]`` positions, rows at half-integer ``grid["jaw"]`` positions, and its
axes are the IEC BLD axes rotated by 180° (pymedphys (X, Y) = BLD (−x, −y)), found with a
single asymmetric field in ``test_pymedphys_axes``.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pymedphys
import pytest

from dose_engine import Beam
from rtplan import DeliverablePlan, load_machine, read_patient
from rtplan.io import write_rtplan
from rtplan.phantoms import write_phantom
from rtplan.sequencing import sequence_fluence

AGILITY = load_machine("AgilityMLC160")
FRACTIONS = 5


@pytest.fixture(scope="module")
def patient(tmp_path_factory):
    root = tmp_path_factory.mktemp("pmp")
    w = write_phantom("water_box", root / "wb", pixel_spacing_mm=10.0, slice_spacing_mm=10.0)
    return read_patient(w.ct_dir, w.rtstruct_path)


def _plan_metersetmaps(tmp_path, patient, results, gantries):
    beams = tuple(
        r.to_beam(i + 1, f"G{g:g}", Beam(float(g)), AGILITY)
        for i, (r, g) in enumerate(zip(results, gantries, strict=True))
    )
    plan = DeliverablePlan(
        beams, fractions=FRACTIONS, total_dose_gy=10.0, target_name=next(iter(patient.structures))
    )
    path = tmp_path / "plan.dcm"
    write_rtplan(path, plan, patient)
    delivery = pymedphys.Delivery.from_dicom(pydicom.dcmread(path), fraction_group_number=1)
    maps = delivery.metersetmap(
        gantry_angles=list(gantries), gantry_tolerance=3, output_always_list=True
    )
    grid = pymedphys.metersetmap.grid()
    return maps, grid["mlc"], grid["jaw"]


def test_pymedphys_axes(tmp_path, patient):
    # one 20 x 5 mm field at BLD x in [10, 30], y in [20, 25]; 10 MU over 5 fractions
    res = sequence_fluence(
        np.array([[10.0]]),
        AGILITY,
        x_edges_mm=np.array([10.0, 30.0]),
        y_edges_mm=np.array([20.0, 25.0]),
        n_levels=1,
    )
    (mm,), gx, gy = _plan_metersetmaps(tmp_path, patient, [res], [0])
    iy, ix = np.nonzero(mm > 1e-9)
    assert (gx[ix].min(), gx[ix].max()) == (-30.0, -10.0)
    assert (gy[iy].min(), gy[iy].max()) == (-24.5, -20.5)
    assert mm.max() == pytest.approx(10.0 / FRACTIONS)


def test_pymedphys_metersetmap_matches_sequenced_fluence(tmp_path, patient):
    rng = np.random.default_rng(42)
    gantries = (0, 90)
    results, edges = [], []
    for shape, x0, y0 in (((8, 10), -25.0, -20.0), ((6, 7), -10.0, 5.0)):
        f = rng.random(shape) * 40.0
        f[rng.random(shape) < 0.2] = 0.0
        xe = x0 + 5.0 * np.arange(shape[1] + 1)
        ye = y0 + 5.0 * np.arange(shape[0] + 1)
        results.append(sequence_fluence(f, AGILITY, x_edges_mm=xe, y_edges_mm=ye, n_levels=7))
        edges.append((xe, ye))
    maps, gx, gy = _plan_metersetmaps(tmp_path, patient, results, gantries)
    assert len(maps) == 2
    for mm, res, (xe, ye) in zip(maps, results, edges, strict=True):
        # our expectation on pymedphys's pixel centres: BLD (x, y) = (-X, -Y)
        bx, by = -gx, -gy
        col = np.searchsorted(xe, bx, side="right") - 1
        row = np.searchsorted(ye, by, side="right") - 1
        inside_x = (col >= 0) & (col < xe.size - 1)
        inside_y = (row >= 0) & (row < ye.size - 1)
        expected = np.zeros(mm.shape)
        q = res.quantized_fluence_mu / FRACTIONS
        sub = q[np.ix_(row[inside_y], col[inside_x])]
        expected[np.ix_(inside_y, inside_x)] = sub
        # compare away from cell edges (pixel centres on an x edge see half of each cell)
        on_edge = np.isin(bx, xe)
        np.testing.assert_allclose(mm[:, ~on_edge], expected[:, ~on_edge], atol=1e-4 * q.max())
        assert mm[:, ~on_edge].max() == pytest.approx(q.max(), rel=1e-4)
        # total meterset of the beam (sum over pixels, 1 mm² each) = fluence integral
        cell_area = 25.0
        assert mm.sum() == pytest.approx(q.sum() * cell_area, rel=1e-4)
