"""``rtplan plan`` on a real patient's chest CT (issue 12): pyradiomics' ``lung2``.

Data (fetched by ``_real_data``, never committed): the ``lung2`` chest CT of pyradiomics
3.1.0's test data, a real patient (512 × 512 × 61, 0.627 × 0.627 × 5 mm) with one tumour
label and **no organ contours and no body contour**.  ``_lung2_dicom.write_lung2`` turns it
into a DICOM CT series + RT-STRUCT with rtplan's own writers (the label contoured as
``GTV`` by marching squares on each CT slice: ``rtplan.structures.contours_from_occupancy``).

The plan: the shipped ``lung_60gy_30fx`` protocol with only one change, its cord and lung
tables made optional (``required = false``; the source has no organs and rtplan has no
generic way to find them in the CT, so none is drawn).  PTV = GTV + 10 mm is derived, the
body outline found in the CT (couch removed), final dose ``auto``; goals on the cord and on
``Lungs-PTV`` (built from the absent lungs) are reported "not evaluated".

Measured in fresh processes by ``benches/_measure.py`` (CPU = user + system of all
threads; peak resident memory of the child): ``rtplan plan``, then ``rtplan dose`` with the
plan's engine on the written RT-PLAN, compared with the planner's RT-DOSE.  From the
written files: every goal and its dicompyler-core value, the global maximum and where it
lies, the derived body's volume, the CT voxels above −500 HU left outside it (the couch),
the PTV voxels wholly inside the PTV below 90 % of Rx, normalisation and warnings; an axial
PNG through the GTV and one through the global maximum (CT, dose colour wash, isodoses,
body outline, PTV) in ``benches/results/``.

Asserted (independent of the machine): the plan is written, every protocol goal is
accounted for (evaluated, or not evaluated with a reason), rtplan's goal values agree with
dicompyler-core's (``bench_thorax.AGREEMENT``; target near-minima printed only), and the
recomputed dose agrees with the planner's (:data:`RECOMPUTE_TOL_PCT`).

Run with ``PYTHONPATH=. python -m pytest benches/bench_real_thorax.py -s -p
no:cacheprovider`` (``RTPLAN_REAL_DATA=DIR`` chooses the download folder).  Writes
``benches/results/bench_real_thorax.json`` and the PNGs.
"""

from __future__ import annotations

import json
import os
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
from _lung2_dicom import write_lung2
from _real_data import DataUnavailable, lung2, pytest_folder
from bench_thorax import (
    MEASURE,
    _run,
    assert_goals_agree,
    crosscheck_table,
    dicompyler_goal_values,
    stage_table,
)

import rtplan
from rtplan.io import read_rtdose
from rtplan.patient import Image

RESULTS = Path(__file__).parent / "results"
PROTOCOL, RX_GY = "lung_60gy_30fx", 60.0
OPTIONAL = ("SpinalCord", "Lung_L", "Lung_R")
#: Largest difference between ``rtplan dose`` on the written plan and the planner's RT-DOSE,
#: % of Rx, over voxels above 10 % of Rx: the same engine on the same MU (written to
#: 0.0001 MU) and the same grid.
RECOMPUTE_TOL_PCT = 1.0
#: Couch and other objects: CT voxels above this HU outside the body outline.
DENSE_HU = -500.0


@pytest.fixture(scope="module")
def data(request, tmp_path_factory) -> tuple[Path, Path]:
    try:
        return lung2(pytest_folder(request, tmp_path_factory))
    except DataUnavailable as exc:
        pytest.skip(f"real data not reachable: {exc}")


def optional_organs_protocol(path: Path) -> Path:
    """The shipped protocol with the cord and lung tables ``required = false``."""
    text = (files("rtplan.protocols") / "data" / f"{PROTOCOL}.toml").read_text()
    for name in OPTIONAL:
        table = f"[structures.{name}]\n"
        assert table in text, table
        text = text.replace(table, f"{table}required = false\n")
    path.write_text(text)
    return path


def unaccounted_goals(record: dict, protocol) -> list[str]:
    """The protocol goals with no row in plan.json ``record`` (a row is evaluated, or "not
    evaluated" with its reason); goals on mapped structures are looked up by the patient's
    name (``plan.structure_mapping``)."""
    mapping = record["plan"]["structure_mapping"]
    rows = {(g["structure"], g["metric"]) for g in record["goals"]}
    return [
        g.label
        for g in protocol.goals
        if (mapping.get(g.structure, g.structure), g.goal.metric.text) not in rows
    ]


def _dose_on(path: Path, grid) -> np.ndarray:
    dose, g, _ = read_rtdose(path)
    return Image(dose.astype(np.float32), g).resample(grid).array


def recompute_agreement(planned: Path, recomputed: Path, rx_gy: float) -> dict:
    """``rtplan dose``'s RT-DOSE against the planner's, on the planner's grid (Gy, % Rx)."""
    ref, grid, _ = read_rtdose(planned)
    ours = _dose_on(recomputed, grid)
    mask = ref >= 0.1 * rx_gy
    diff = ours[mask] - ref[mask]
    return {
        "grid_shape": list(grid.shape),
        "voxels_above_10pct": int(mask.sum()),
        "max_abs_diff_pct_rx": float(100 * np.abs(diff).max() / rx_gy),
        "mean_diff_pct_rx": float(100 * diff.mean() / rx_gy),
        "max_planned_gy": float(ref.max()),
        "max_recomputed_gy": float(ours.max()),
    }


def body_and_maximum(
    ct_dir: Path, rtstruct: Path, rtdose: Path, rx_gy: float, centre: str = "GTV"
) -> dict:
    """The body (volume, couch left outside it), the global maximum and where it lies
    (distance from ``centre``'s centroid, the structures holding it), and the PTV's
    coldest whole voxels, from the written files."""
    patient = rtplan.read_patient(ct_dir, rtstruct)
    body = next(s for s in patient.structures.values() if s.roi_type == "EXTERNAL")
    ct = patient.ct
    body_occ = body.occupancy(ct.grid)
    outside_dense = (ct.array > DENSE_HU) & (body_occ < 0.5)
    rows = np.flatnonzero(outside_dense.any(axis=(0, 2)))
    dose, grid, _ = read_rtdose(rtdose)
    z, y, x = grid.zyx_axes_mm()
    k = np.unravel_index(int(np.argmax(dose)), dose.shape)
    at = np.array([x[k[2]], y[k[1]], z[k[0]]])
    gtv = patient.structure(centre).occupancy(grid)
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    mid = np.array([(a * gtv).sum() / gtv.sum() for a in (xx, yy, zz)])
    ptv = patient.structure("PTV").occupancy(grid)
    whole = ptv >= 1.0
    inside = {n: float(s.occupancy(grid)[k]) for n, s in patient.structures.items()}
    return {
        "body_name": body.name,
        "body_volume_cc": body.volume_cc(ct.grid),
        "ct_voxels_above_minus500_outside_body": int(outside_dense.sum()),
        "ct_cc_above_minus500_outside_body": float(outside_dense.sum() * ct.grid.voxel_volume_cc),
        "outside_body_dense_rows_y_mm": (
            [float(ct.grid.zyx_axes_mm()[1][rows[0]]), float(ct.grid.zyx_axes_mm()[1][rows[-1]])]
            if len(rows)
            else []
        ),
        "body_posterior_y_mm": float(
            ct.grid.zyx_axes_mm()[1][np.flatnonzero((body_occ >= 0.5).any(axis=(0, 2)))[-1]]
        ),
        "dose_outside_body_max_gy": float(dose[body.occupancy(grid) <= 0].max(initial=0.0)),
        "centre_roi": centre,
        "centre_mm": mid.tolist(),
        "centre_roi_volume_cc": patient.structure(centre).volume_cc(ct.grid),
        "ptv_volume_cc": patient.structure("PTV").volume_cc(ct.grid),
        "global_max_gy": float(dose[k]),
        "global_max_pct": float(100 * dose[k] / rx_gy),
        "global_max_at_mm": at.tolist(),
        "global_max_from_centre_mm": float(np.linalg.norm(at - mid)),
        "global_max_occupancy": {n: v for n, v in inside.items() if v > 0},
        "ptv_whole_voxels": int(whole.sum()),
        "ptv_whole_voxels_below_90pct": int((whole & (dose < 0.9 * rx_gy)).sum()),
        "ptv_whole_voxels_min_pct": float(100 * dose[whole].min() / rx_gy),
        "ptv_partial_voxels_below_90pct": int(((ptv > 0) & ~whole & (dose < 0.9 * rx_gy)).sum()),
    }


def axial_pngs(
    case: str, ct_dir: Path, rtstruct: Path, rtdose: Path, rx_gy: float, z_mm: dict[str, float]
) -> list[str]:
    """``benches/results/{case}_{label}.png`` per ``label: z``: the CT slice, the dose
    (colour wash above 10 % Rx, isodoses 50/90/95/107 %), the body outline and the
    targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    patient = rtplan.read_patient(ct_dir, rtstruct)
    ct = patient.ct
    dose = _dose_on(rtdose, ct.grid)
    z, y, x = ct.grid.zyx_axes_mm()
    written = []
    for label, zc in z_mm.items():
        k = int(np.argmin(np.abs(z - zc)))
        fig, ax = plt.subplots(figsize=(8, 8), dpi=100)
        extent = (x[0], x[-1], y[-1], y[0])
        ax.imshow(ct.array[k], cmap="gray", vmin=-1000, vmax=400, extent=extent)
        wash = np.ma.masked_less(dose[k], 0.1 * rx_gy)
        im = ax.imshow(wash, cmap="jet", alpha=0.35, extent=extent, vmin=0, vmax=1.1 * rx_gy)
        levels = [0.5 * rx_gy, 0.9 * rx_gy, 0.95 * rx_gy, 1.07 * rx_gy]
        ax.contour(x, y, dose[k], levels=levels, colors=["c", "y", "orange", "m"], linewidths=1)
        for s in patient.structures.values():
            colour = {"EXTERNAL": "lime", "PTV": "red", "GTV": "white"}.get(s.roi_type)
            for c in s.contours if colour else []:
                if abs(c[0, 2] - z[k]) < 0.5 * ct.grid.spacing_mm[2]:
                    ax.plot(*np.vstack([c, c[:1]])[:, :2].T, color=colour, linewidth=1.2)
        ax.set_title(
            f"{case} z = {z[k]:.1f} mm ({label}): body (green), PTV (red), GTV (white); "
            "isodoses 50/90/95/107 %",
            fontsize=8,
        )
        fig.colorbar(im, ax=ax, fraction=0.04, label="Gy")
        path = RESULTS / f"{case}_{label}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(str(path))
    return written


def test_rtplan_plan_on_real_chest_ct(data, tmp_path):
    image, label = data
    written, label_cc = write_lung2(image, label, tmp_path / "input")
    protocol = optional_organs_protocol(tmp_path / "lung_optional_organs.toml")
    out = tmp_path / "plan"
    env_note = f"PYTHONPATH={os.environ.get('PYTHONPATH', '')}"
    plan = _run(
        [str(MEASURE), "plan", str(written.ct_dir), str(written.rtstruct_path)]
        + [str(protocol), str(out)]
    )
    assert plan["exit_status"] == 0, plan["output"][-3000:]
    measure = json.loads(plan["output"].rsplit("MEASURE ", 1)[1])
    record = json.loads((out / "plan.json").read_text())
    algorithm = record["plan"]["dose_algorithm"]["algorithm"]
    dose = _run(
        [str(MEASURE), "dose", str(written.ct_dir), str(out / "RS_derived.dcm")]
        + [str(out / "RTPLAN.dcm"), str(tmp_path / "RTDOSE_recomputed.dcm"), algorithm]
    )
    assert dose["exit_status"] == 0, dose["output"][-3000:]

    goals = record["goals"]
    assert not unaccounted_goals(record, rtplan.protocols.load_protocol(protocol))
    not_evaluated = {
        (g["structure"], g["metric"]): g["reason"] for g in goals if g["status"] == "not_evaluated"
    }

    RESULTS.mkdir(exist_ok=True)
    crosscheck = dicompyler_goal_values(out, goals)
    rs, rd = out / "RS_derived.dcm", out / "RTDOSE.dcm"
    agreement = recompute_agreement(rd, tmp_path / "RTDOSE_recomputed.dcm", RX_GY)
    checks = body_and_maximum(written.ct_dir, rs, rd, RX_GY)
    pngs = axial_pngs(
        "bench_real_thorax",
        written.ct_dir,
        rs,
        rd,
        RX_GY,
        {"gtv": checks["centre_mm"][2], "global_max": checks["global_max_at_mm"][2]},
    )
    result = {
        "case": "pyradiomics 3.1.0 lung2 chest CT 512x512x61, 0.627 x 0.627 x 5 mm, GTV only, "
        f"{PROTOCOL} with {', '.join(OPTIONAL)} optional (7 beams, 3 mm grid)",
        "environment": env_note,
        "label_volume_cc": label_cc,
        "cpus_visible": os.cpu_count(),
        "load_average_after": os.getloadavg(),
        "plan": {k: v for k, v in plan.items() if k != "output"},
        "plan_measure": measure,
        "dose": {k: v for k, v in dose.items() if k != "output"},
        "dose_algorithm": record["plan"]["dose_algorithm"],
        "corrections": record["plan"].get("corrections"),
        "goals": goals,
        "not_evaluated": [f"{k[0]} {k[1]}" for k in not_evaluated],
        "dicompyler_crosscheck": crosscheck,
        "recompute_agreement": agreement,
        "checks": checks,
        "pngs": pngs,
        "warnings": record.get("warnings", []),
        "normalization": record["plan"].get("normalization_detail"),
    }
    (RESULTS / "bench_real_thorax.json").write_text(json.dumps(result, indent=2, default=str))
    norm = result["normalization"] or {}
    print(
        f"\nbench_real_thorax: {result['case']}\n"
        f"rtplan plan: {plan['cpu_s']:.1f} CPU s, peak {plan['peak_gib']:.2f} GiB; "
        f"rtplan dose (ccc): {dose['cpu_s']:.1f} CPU s, peak {dose['peak_gib']:.2f} GiB\n"
        + "\n".join(stage_table(measure))
        + f"\nGTV {checks['centre_roi_volume_cc']:.2f} cc (label {label_cc:.2f} cc), PTV "
        f"{checks['ptv_volume_cc']:.1f} cc; body {checks['body_name']!r} "
        f"{checks['body_volume_cc']:.0f} cc; CT above {DENSE_HU:g} HU outside it: "
        f"{checks['ct_cc_above_minus500_outside_body']:.1f} cc (rows y "
        f"{checks['outside_body_dense_rows_y_mm']} mm, body ends at y "
        f"{checks['body_posterior_y_mm']:.1f} mm); dose outside body max "
        f"{checks['dose_outside_body_max_gy']:.2f} Gy\n"
        f"normalisation x{norm.get('factor', float('nan')):.3f} (needed "
        f"x{norm.get('needed', float('nan')):.3f}, cap {norm.get('cap_pct')} %)\n"
        f"global maximum {checks['global_max_pct']:.1f} % of Rx at "
        f"{[round(v, 1) for v in checks['global_max_at_mm']]} mm, "
        f"{checks['global_max_from_centre_mm']:.1f} mm from the GTV centre, in "
        f"{checks['global_max_occupancy']}\n"
        f"PTV whole voxels {checks['ptv_whole_voxels']}, below 90 %: "
        f"{checks['ptv_whole_voxels_below_90pct']} (min {checks['ptv_whole_voxels_min_pct']:.1f}"
        f" %); partial voxels below 90 %: {checks['ptv_partial_voxels_below_90pct']}\n"
        f"rtplan dose vs planner RT-DOSE: max |diff| {agreement['max_abs_diff_pct_rx']:.3f} % "
        f"Rx, mean {agreement['mean_diff_pct_rx']:.4f} % Rx over "
        f"{agreement['voxels_above_10pct']} voxels\n"
        f"not evaluated: {result['not_evaluated']}\nwarnings: {result['warnings']}\n"
        "| goal | rtplan | dicompyler-core | status | agree |\n|---|---|---|---|---|\n"
        + crosscheck_table(crosscheck)
    )
    assert not_evaluated, "the cord and lung goals have no structure"
    assert_goals_agree(crosscheck)
    assert agreement["max_abs_diff_pct_rx"] <= RECOMPUTE_TOL_PCT, agreement
