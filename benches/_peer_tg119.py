"""One planning tool on the TG-119 C-shape, in a fresh process (run by bench_peers).

Usage: ``python benches/_peer_tg119.py {rtplan,pyradplan} PHANTOM_DIR OUT_DIR``

``PHANTOM_DIR`` is what :func:`rtplan.phantoms.write_phantom` wrote (``CT/`` + ``RS.dcm``).
Writes ``OUT_DIR/dose.npz`` (``dose_gy`` ``(nz, ny, nx)`` and its grid: ``origin_mm`` and
``spacing_mm`` as ``(x, y, z)``, DICOM patient coordinates of voxel centres) and prints one
JSON line: stage times (s), end-to-end time (s) and the process's peak resident memory
(``VmHWM``, MiB). A fresh process per tool keeps each peak memory its own.

Both tools plan 9 equispaced beams (0°, 40°, …, 320°) on a 3 mm dose grid:

- rtplan: ``read_patient`` + ``plan_patient(patient, "tg119_cshape")`` + ``result.write``
  (influence matrix, optimisation, leaf sequencing, aperture dose, DICOM RT-PLAN/RT-DOSE).
- pyRadPlan: its DICOM import, ``PhotonPlan`` (machine "Generic", its photon pencil-beam
  engine, 5 mm bixels, its default optimiser), objectives of its shipped TG-119 example with
  the core limit at TG-119's harder level: PTV squared deviation from 50 Gy (priority 1000),
  core squared overdose above 10 Gy (300), body squared overdose above 30 Gy (100); the dose
  is the fluence dose on its dose grid (pyRadPlan does no leaf sequencing here).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

N_BEAMS = 9
DOSE_GRID_MM = 3.0
RX_GY = 50.0


def peak_rss_mib() -> float:
    """Peak resident memory of this process (``VmHWM``), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_rtplan(phantom_dir: Path, out_dir: Path) -> dict:
    """Plan with rtplan's shipped ``tg119_cshape`` protocol; returns stage times, s."""
    from rtplan.io import read_patient
    from rtplan.planning import plan_patient

    t0 = time.perf_counter()
    patient = read_patient(phantom_dir / "CT", phantom_dir / "RS.dcm")
    t_load = time.perf_counter() - t0
    result = plan_patient(patient, "tg119_cshape", progress=False)
    result.write(out_dir / "plan")
    end_to_end = time.perf_counter() - t0
    grid = result.dose_grid
    np.savez(
        out_dir / "dose.npz",
        dose_gy=np.asarray(result.dose_gy, dtype=np.float32),
        origin_mm=np.asarray(grid.origin_mm),
        spacing_mm=np.asarray(grid.spacing_mm),
    )
    return {
        "load_s": t_load,
        "influence_matrix_s": result.timings["dose"],
        "optimization_s": result.timings["optimise"],
        "stages_s": result.timings,
        "end_to_end_s": end_to_end,
        "n_beamlets": int(result.fluence_mu.size),
        "goals": {f"{r.goal.structure} {r.goal.metric.text}": r.value for r in result.goal_table},
    }


def run_pyradplan(phantom_dir: Path, out_dir: Path) -> dict:
    """Plan with pyRadPlan (see the module notes); returns stage times, s."""
    import pyRadPlan as prp
    import SimpleITK as sitk
    from pyRadPlan.optimization.objectives import SquaredDeviation, SquaredOverdosing

    # pyRadPlan's DICOM import reads one folder: show it the CT slices and RT-STRUCT together
    flat = out_dir / "dicom"
    flat.mkdir()
    for f in [*sorted((phantom_dir / "CT").iterdir()), phantom_dir / "RS.dcm"]:
        os.symlink(f.resolve(), flat / f.name)

    t0 = time.perf_counter()
    ct, cst = prp.read_patient(flat)
    t_load = time.perf_counter() - t0
    objectives = {
        "PTV": [SquaredDeviation(priority=1000.0, d_ref=RX_GY)],
        "Core": [SquaredOverdosing(priority=300.0, d_max=0.2 * RX_GY)],
        "Body": [SquaredOverdosing(priority=100.0, d_max=0.6 * RX_GY)],
    }
    for voi in cst.vois:
        voi.objectives = objectives[voi.name]
    pln = prp.PhotonPlan(machine="Generic", prescribed_dose=RX_GY, num_of_fractions=25)
    angles = [i * 360.0 / N_BEAMS for i in range(N_BEAMS)]
    pln.prop_stf = {"gantry_angles": angles, "couch_angles": [0.0] * N_BEAMS}
    res = {"x": DOSE_GRID_MM, "y": DOSE_GRID_MM, "z": DOSE_GRID_MM}
    pln.prop_dose_calc = {"dose_grid": {"resolution": res}}

    t = time.perf_counter()
    stf = prp.generate_stf(ct, cst, pln)
    t_stf = time.perf_counter() - t
    t = time.perf_counter()
    dij = prp.calc_dose_influence(ct, cst, stf, pln)
    t_dose = time.perf_counter() - t
    t = time.perf_counter()
    info: dict = {}
    weights = prp.fluence_optimization(ct, cst, stf, dij, pln, opt_info=info)
    t_opt = time.perf_counter() - t
    dose = dij.compute_result_dose_grid(weights)["physical_dose"]
    end_to_end = time.perf_counter() - t0

    direction = np.asarray(dose.GetDirection())
    if not np.allclose(direction, np.eye(3).ravel()):
        raise SystemExit(f"pyRadPlan dose grid is not axis-aligned: direction {direction}")
    np.savez(
        out_dir / "dose.npz",
        dose_gy=sitk.GetArrayFromImage(dose).astype(np.float32),  # (z, y, x)
        origin_mm=np.asarray(dose.GetOrigin()),
        spacing_mm=np.asarray(dose.GetSpacing()),
    )
    return {
        "load_s": t_load,
        "beam_geometry_s": t_stf,
        "influence_matrix_s": t_dose,
        "optimization_s": t_opt,
        "end_to_end_s": end_to_end,
        "n_beamlets": int(weights.size),
        "iterations": info.get("num_iter"),
        "pyradplan": prp.__version__,
    }


if __name__ == "__main__":
    tool, phantom, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    runners = {"rtplan": run_rtplan, "pyradplan": run_pyradplan}
    figures = runners[tool](phantom, out)
    print(json.dumps(figures | {"peak_rss_mib": peak_rss_mib()}))
