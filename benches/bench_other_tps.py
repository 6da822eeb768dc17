"""Another planning system's DICOM-RT (issue 12): RayStation's Alderson pelvis set.

Data (fetched by ``_real_data``, never committed): pydosert 1.5.0's ``mr_alderson`` set,
an Alderson anthropomorphic pelvis **phantom** (not a patient): 160 CT slices (512²,
0.742 mm, 2 mm), a RayStation RT-STRUCT (Body, PTV, Bladder, Rectum, FemoralHead_L/R),
a RayStation **10 MV** VMAT RT-PLAN (Versa_E, 1 arc of 76 control points, 390 MU,
20 fractions, plus three SETUP beams) and its RT-DOSE (PLAN sum, 3 mm).

Measured and printed (not asserted: this bench reports):

1. ``rtplan.read_patient`` on the CT + RT-STRUCT: ROI volumes, CPU time.
2. ``rtplan dose`` (CLI) on the RT-PLAN: its 10 MV arc is computed with the shipped 10X
   model (the model for its NominalBeamEnergy; before the 10X model it was refused, exit
   status 2); exit status, CPU seconds and the summary line recorded.
3. The RT-PLAN read with the shipped models' energies, its MU and control points, and the
   dose of that arc computed (10X model) on RayStation's own dose grid, against
   RayStation's RT-DOSE: gamma (pymedphys, global, 10 % cut-off) at 3 %/2 mm and
   2 %/2 mm, absolute and after scaling ours to RayStation's PTV mean dose (shape only),
   and D95 / Dmean / D2 of PTV, bladder, rectum.  The 10X model is a representative
   10 MV beam (synthetic commissioning, ``docs/commissioning.md``), not RayStation's
   Versa HD beam model: this checks interoperability and the energy choice, not the
   dose of that linac.

Run with ``python -m pytest benches/bench_other_tps.py -s -p no:randomly``
(``RTPLAN_REAL_DATA=DIR`` to choose the download folder).  Writes
``benches/results/bench_other_tps.json``.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from _real_data import DataUnavailable, alderson, pytest_folder

import rtplan
from rtplan.dose import compute_plan_dose, shipped_beam_models
from rtplan.evaluation import dvh
from rtplan.io import read_rtdose, read_rtplan_beams

RESULTS = Path(__file__).parent / "results"
GAMMA_CRITERIA = ((3.0, 2.0), (2.0, 2.0))  # (% global, mm)
GAMMA_CUTOFF_PERCENT = 10.0
DVH_ROIS = ("PTV", "Bladder", "Rectum")


@pytest.fixture(scope="module")
def data(request, tmp_path_factory) -> Path:
    try:
        return alderson(pytest_folder(request, tmp_path_factory))
    except DataUnavailable as exc:
        pytest.skip(f"real data not reachable: {exc}")


def _files(root: Path) -> dict:
    return {
        "ct": root / "CT",
        "rs": next((root / "RS").glob("*.dcm")),
        "rp": next((root / "RP").glob("*.dcm")),
        "rd": {
            str(pydicom.dcmread(p, stop_before_pixels=True).DoseSummationType): p
            for p in (root / "RD").glob("*.dcm")
        },
    }


def _gamma(axes, ref, ev, percent, mm) -> float:
    import pymedphys

    g = pymedphys.gamma(
        axes,
        ref,
        axes,
        ev,
        dose_percent_threshold=percent,
        distance_mm_threshold=mm,
        lower_percent_dose_cutoff=GAMMA_CUTOFF_PERCENT,
        max_gamma=1.1,
        interp_algo="scipy",
    )
    valid = np.isfinite(g)
    return float(np.mean(g[valid] <= 1.0))


def _table(title: str, header: tuple, rows: list) -> None:
    print(f"\n{title}")
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row))


def test_raystation_alderson(data, tmp_path):
    pytest.importorskip("pymedphys")
    f = _files(data)
    out: dict = {}
    t0 = time.process_time()
    patient = rtplan.read_patient(f["ct"], f["rs"])
    out["read_patient_cpu_s"] = time.process_time() - t0
    out["ct_shape"] = list(patient.ct.array.shape)
    out["roi_volumes_cc"] = {n: s.volume_cc(patient.ct.grid) for n, s in patient.structures.items()}
    _table(
        f"read_patient: CT {out['ct_shape']}, {out['read_patient_cpu_s']:.1f} CPU s",
        ("ROI", "type", "volume cc"),
        [(n, s.roi_type, out["roi_volumes_cc"][n]) for n, s in patient.structures.items()],
    )

    t0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cli = subprocess.run(
        [sys.executable, "-m", "rtplan.cli", "dose", str(f["ct"]), str(f["rs"]), str(f["rp"])]
        + ["--out", str(tmp_path / "RD.dcm")],
        capture_output=True,
        text=True,
    )
    t1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["cli_dose"] = {
        "exit_status": cli.returncode,
        "stdout": cli.stdout.strip()[-600:],
        "stderr": cli.stderr.strip()[-400:],
        "cpu_s": (t1.ru_utime - t0.ru_utime) + (t1.ru_stime - t0.ru_stime),
        "peak_rss_mib": t1.ru_maxrss / 1024,
    }
    print(
        f"\nrtplan dose: exit {cli.returncode}, {out['cli_dose']['cpu_s']:.1f} CPU s: "
        f"{cli.stdout.strip()[:400]} {cli.stderr.strip()[:300]}"
    )

    plan = read_rtplan_beams(f["rp"], patient, beam_keys=shipped_beam_models().keys)
    out["beam_energies"] = [
        (b.number, b.machine.nominal_energy_mv, b.machine.fluence_mode) for b in plan.beams
    ]
    beams = [(b.number, b.name, len(b.segments), b.total_mu / plan.fractions) for b in plan.beams]
    out["plan"] = {"fractions": plan.fractions, "beams": beams}
    _table(
        f"RT-PLAN read ({plan.fractions} fractions)",
        ("beam", "name", "segments", "MU/fx"),
        beams,
    )

    rs_dose, grid, _ = read_rtdose(f["rd"]["PLAN"])
    t0 = time.process_time()
    result = compute_plan_dose(plan, patient, dose_grid=grid)
    ours = result.dose_gy
    out["dose_cpu_s"] = time.process_time() - t0
    out["beam_models"] = result.beam_models
    occ = {n: patient.structure(n).occupancy(grid) for n in DVH_ROIS}
    ptv = dvh(rs_dose, occ["PTV"], voxel_volume_cc=grid.voxel_volume_cc).mean_gy
    scale = ptv / dvh(ours, occ["PTV"], voxel_volume_cc=grid.voxel_volume_cc).mean_gy
    axes = grid.zyx_axes_mm()
    gamma = {}
    for label, ev in (("absolute", ours), (f"scaled x{scale:.3f}", ours * scale)):
        gamma[label] = {
            f"{p:g}%/{d:g}mm": _gamma(axes, rs_dose, ev, p, d) for p, d in GAMMA_CRITERIA
        }
    out["gamma_pass"] = gamma
    out["ptv_mean_scale"] = scale
    _table(
        f"gamma vs RayStation RT-DOSE (global, cut-off {GAMMA_CUTOFF_PERCENT:g} %), "
        f"max ours {ours.max():.2f} Gy / RayStation {rs_dose.max():.2f} Gy, "
        f"dose {out['dose_cpu_s']:.0f} CPU s",
        ("our dose", *gamma["absolute"]),
        [(k, *(100 * x for x in v.values())) for k, v in gamma.items()],
    )
    rows, out["dvh_gy"] = [], {}
    for name in DVH_ROIS:
        a = dvh(ours, occ[name], voxel_volume_cc=grid.voxel_volume_cc)
        b = dvh(rs_dose, occ[name], voxel_volume_cc=grid.voxel_volume_cc)
        out["dvh_gy"][name] = {
            "D95": (a.d95_gy, b.d95_gy),
            "Dmean": (a.mean_gy, b.mean_gy),
            "D2": (a.d2_gy, b.d2_gy),
        }
        for metric, (x, y) in out["dvh_gy"][name].items():
            rows.append((name, metric, x, y, x - y))
    _table(
        "DVH (Gy, 20 fractions, ours unscaled)",
        ("ROI", "metric", "ours", "RayStation", "diff"),
        rows,
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_other_tps.json").write_text(json.dumps(out, indent=2, default=str))


def test_plan_alderson_with_prostate_protocol(data, tmp_path):
    """``rtplan plan`` on RayStation's CT + RT-STRUCT with the shipped
    ``prostate_78gy_39fx`` (its ROI names Body, PTV, Bladder, Rectum, FemoralHead_L/R are
    the protocol's names or aliases: no ``--map``), measured in a fresh process like
    ``bench_real_thorax``; then ``rtplan dose`` on the written plan against the planner's
    RT-DOSE.  Our plan is not compared with RayStation's dose: a different plan (10 MV arc,
    20 fractions) for a different prescription."""
    from bench_real_thorax import (
        RECOMPUTE_TOL_PCT,
        axial_pngs,
        body_and_maximum,
        recompute_agreement,
        unaccounted_goals,
    )
    from bench_thorax import (
        MEASURE,
        _run,
        assert_goals_agree,
        crosscheck_table,
        dicompyler_goal_values,
        stage_table,
    )

    protocol, rx_gy = "prostate_78gy_39fx", 78.0
    f = _files(data)
    out = tmp_path / "plan"
    plan = _run([str(MEASURE), "plan", str(f["ct"]), str(f["rs"]), protocol, str(out)])
    assert plan["exit_status"] == 0, plan["output"][-3000:]
    measure = json.loads(plan["output"].rsplit("MEASURE ", 1)[1])
    record = json.loads((out / "plan.json").read_text())
    algorithm = record["plan"]["dose_algorithm"]["algorithm"]
    rs = out / "RS_derived.dcm" if (out / "RS_derived.dcm").exists() else f["rs"]
    recomputed = tmp_path / "RTDOSE_recomputed.dcm"
    dose = _run(
        [str(MEASURE), "dose", str(f["ct"]), str(rs), str(out / "RTPLAN.dcm")]
        + [str(recomputed), algorithm]
    )
    assert dose["exit_status"] == 0, dose["output"][-3000:]
    goals = record["goals"]
    assert not unaccounted_goals(record, rtplan.protocols.load_protocol(protocol))
    rd = out / "RTDOSE.dcm"
    RESULTS.mkdir(exist_ok=True)
    crosscheck = dicompyler_goal_values(out, goals, rtstruct=rs, rx_gy=rx_gy)
    agreement = recompute_agreement(rd, recomputed, rx_gy)
    checks = body_and_maximum(f["ct"], rs, rd, rx_gy, centre="PTV")
    pngs = axial_pngs(
        "bench_alderson_plan",
        f["ct"],
        rs,
        rd,
        rx_gy,
        {"ptv": checks["centre_mm"][2], "global_max": checks["global_max_at_mm"][2]},
    )
    norm = record["plan"].get("normalization_detail") or {}
    result = {
        "case": f"RayStation Alderson pelvis CT + RT-STRUCT, {protocol}",
        "plan": {k: v for k, v in plan.items() if k != "output"},
        "plan_measure": measure,
        "dose": {k: v for k, v in dose.items() if k != "output"},
        "dose_algorithm": record["plan"]["dose_algorithm"],
        "goals": goals,
        "dicompyler_crosscheck": crosscheck,
        "recompute_agreement": agreement,
        "checks": checks,
        "pngs": pngs,
        "warnings": record.get("warnings", []),
        "normalization": norm,
    }
    (RESULTS / "bench_alderson_plan.json").write_text(json.dumps(result, indent=2, default=str))
    print(
        f"\nAlderson plan ({protocol}, final dose {algorithm}): {plan['cpu_s']:.1f} CPU s, peak "
        f"{plan['peak_gib']:.2f} GiB; rtplan dose: {dose['cpu_s']:.1f} CPU s, peak "
        f"{dose['peak_gib']:.2f} GiB\n"
        + "\n".join(stage_table(measure))
        + f"\nbody {checks['body_name']!r} {checks['body_volume_cc']:.0f} cc; CT above -500 HU "
        f"outside it {checks['ct_cc_above_minus500_outside_body']:.1f} cc\n"
        f"normalisation x{norm.get('factor', float('nan')):.3f} (needed "
        f"x{norm.get('needed', float('nan')):.3f}, cap {norm.get('cap_pct')} %)\n"
        f"global maximum {checks['global_max_pct']:.1f} % of Rx at "
        f"{[round(v, 1) for v in checks['global_max_at_mm']]} mm, "
        f"{checks['global_max_from_centre_mm']:.1f} mm from the PTV centre, in "
        f"{checks['global_max_occupancy']}\n"
        f"PTV whole voxels {checks['ptv_whole_voxels']}, below 90 %: "
        f"{checks['ptv_whole_voxels_below_90pct']}; recompute max |diff| "
        f"{agreement['max_abs_diff_pct_rx']:.3f} % Rx\nwarnings: {result['warnings']}\n"
        + crosscheck_table(crosscheck)
    )
    assert_goals_agree(crosscheck)
    assert agreement["max_abs_diff_pct_rx"] <= RECOMPUTE_TOL_PCT, agreement
