"""Phantom scatter by field size (issue 15): the pencil-beam model against broad-field depth
doses, 2 × 2 to 40 × 40 cm², before and after the long-range scatter tail.

References (``dose_engine._broad_fields``): the measured pymedphys 5 × 5 and 10 × 10 cm²
PDDs (SSD 900 mm), and for 20 × 20 and 40 × 40 cm² the measured 10 × 10 PDD
times the ompMC field-size ratio.  Printed per field: PDD(100 mm) and PDD(200 mm)
(normalised at dmax), the largest local deviation of the depth dose from 20 to 280 mm
normalised at 100 mm (the field-size dependence beyond dmax), the output factor at 100 mm
depth (measured only for 5 × 5), and the 80-20 % penumbra of the 10 × 10 profile at 100 mm.
The "before" model is ``git show <rev>:dose_engine/data/beam_model_6MV.json``
(``RTPLAN_BEFORE_REV``, default ``b85d3f9``, the model without the tail), the "after" one
the shipped model or the file ``RTPLAN_AFTER_MODEL`` (e.g. ``python -m dose_engine.fit
/tmp/6mv_tail.json`` run on this branch: the refit with the tail).  A report: nothing is
asserted (``tests/dose_engine/test_broad_fields.py`` checks the references).

Data: ``python benches/bench_broad_fields.py --write`` computes the missing ompMC water
run of 40 × 40 cm² (``benches/data/broad_field_monte_carlo_400mm.json``,
1,000,000 histories: the scoring region of a broad field sees fewer histories
per area) the way ``benches/bench_ccc_slabs.py`` computes its water runs (whose 3 × 3 to
20 × 20 cm² runs it reuses), and writes ``dose_engine/data/broad_field_monte_carlo_6MV.json``.

Run: ``python -m pytest benches/bench_broad_fields.py -s -p no:cacheprovider``
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np

from dose_engine import BeamModel, load_beam_model
from dose_engine._broad_fields import (
    BROAD_FIELDS_MM,
    DATA_FILE,
    RATIO_DEPTHS_MM,
    broad_field_pdds,
)
from dose_engine._fit import _dose
from dose_engine._measured import pymedphys_6mv_data
from dose_engine._validation import profile_metrics

HERE = Path(__file__).parent
BEFORE_REV = os.environ.get("RTPLAN_BEFORE_REV", "b85d3f9")
#: Extra ompMC runs (side mm: (histories, seed, lateral voxels beside the central one)).
EXTRA_RUNS = {400.0: (1_000_000, 140, 4)}
SSD_MM = 900.0


def _water_runs() -> dict[float, list[dict]]:
    """Every stored ompMC water run by field side (bench_ccc_slabs' and this bench's)."""
    runs: dict[float, list[dict]] = {}
    for path in sorted((HERE / "data").glob("*monte_carlo_*mm.json")):
        side = float(path.stem.rsplit("_", 1)[1].removesuffix("mm"))
        for key, entry in json.loads(path.read_text()).items():
            if key.split("-")[1] == "water":
                runs.setdefault(side, []).append(entry)
    return runs


def write_data() -> Path:
    """Compute missing runs, then write ``dose_engine/data/`` :data:`DATA_FILE`."""
    sys.path.insert(0, str(HERE))
    import bench_ccc_slabs as slabs

    for side, (histories, seed, k) in EXTRA_RUNS.items():
        path = HERE / "data" / f"broad_field_monte_carlo_{side:g}mm.json"
        if path.is_file():
            continue
        os.environ["RTPLAN_SLAB_HISTORIES"] = str(histories)
        slabs.HISTORIES = histories
        c0 = slabs._children_cpu()
        mean, sigma, _ = slabs._mc_profile(side, None, k, seed=seed, spectrum="ompmc")
        entry = {
            "mean": mean.tolist(),
            "sigma": sigma.tolist(),
            "histories": histories,
            "seed": seed,
            "lateral_voxels": 2 * k + 1,
            "cpu_s": round(slabs._children_cpu() - c0, 1),
            "ompmc": version("ompmc"),
        }
        path.write_text(json.dumps({f"{side:g}mm-water": entry}, indent=1))
    lateral = {**{s: 2 * k + 1 for s, k in slabs.LATERAL_VOXELS.items()}}
    lateral.update({s: 2 * k + 1 for s, (_, _, k) in EXTRA_RUNS.items()})
    fields = {}
    for side, runs in sorted(_water_runs().items()):
        h = np.array([r["histories"] for r in runs], float)
        means = np.array([r["mean"] for r in runs])
        abs_sig = np.array([r["sigma"] for r in runs]) * means
        mean = h @ means / h.sum()
        sigma = np.sqrt((h**2) @ (abs_sig**2)) / h.sum() / mean
        fields[f"{side:g}"] = {
            "mean": [float(f"{v:.6g}") for v in mean],
            "sigma": [float(f"{v:.4g}") for v in sigma],
            "runs": [{"histories": r["histories"], "seed": r["seed"]} for r in runs],
            "scoring_region_mm": f"{5 * lateral[side]}x{5 * lateral[side]}",
        }
    out = HERE.parent / "dose_engine" / "data" / DATA_FILE
    out.write_text(
        json.dumps(
            {
                "description": "ompMC central-axis depth doses in water (dose per history, "
                "pooled over runs), square fields at the isocentre, SSD 900 mm, 5 mm depth "
                "bins centred at depth_mm, averaged over the central scoring region",
                "provenance": {
                    "code": f"ompMC {version('ompmc')} (EGSnrc physics), its Varian 6 MV "
                    "spectrum, point source, no head",
                    "made_by": "python benches/bench_broad_fields.py --write (runs of "
                    "benches/bench_ccc_slabs.py and benches/data/broad_field_monte_carlo_*)",
                },
                "ssd_mm": SSD_MM,
                "depth_mm": [2.5 + 5.0 * i for i in range(60)],
                "fields": fields,
            },
            indent=1,
        )
        + "\n"
    )
    return out


def _before_model() -> BeamModel:
    text = subprocess.run(
        ["git", "show", f"{BEFORE_REV}:dose_engine/data/beam_model_6MV.json"],
        cwd=HERE.parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return BeamModel(json.loads(text), f"beam_model_6MV.json@{BEFORE_REV}")


def _references() -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """``{side: (depth_mm, PDD)}``: measured 5 x 5 and 10 x 10, broad fields derived."""
    data = pymedphys_6mv_data()
    refs = {s.field[0]: (s.position_mm, s.value) for s in data.pdds()}
    for s in broad_field_pdds(data, BROAD_FIELDS_MM):
        refs[s.field[0]] = (s.position_mm, s.value)
    return refs


def field_table(model: BeamModel) -> list[dict]:
    """One row per square field: the model's figures and the references'."""
    refs = _references()
    depth = np.arange(0.0, 300.5, 0.5)
    d_ref = _dose(model, SSD_MM, (100.0, 100.0), 100.0, 0.0)
    rows = []
    for side in (20.0, 30.0, 50.0, 100.0, 150.0, 200.0, 300.0, 400.0):
        dose = _dose(model, SSD_MM, (side, side), depth, 0.0)
        row = {
            "side_mm": side,
            "pdd100": 100 * float(np.interp(100.0, depth, dose) / dose.max()),
            "pdd200": 100 * float(np.interp(200.0, depth, dose) / dose.max()),
            "of": float(np.interp(100.0, depth, dose) / d_ref),
            "dev_pct": None,
        }
        if side in refs:
            z, v = refs[side]
            use = (z >= RATIO_DEPTHS_MM[0]) & (z <= RATIO_DEPTHS_MM[1])
            calc = np.interp(z[use], depth, dose)
            meas = v[use] / np.interp(100.0, z, v)
            row["dev_pct"] = 100 * float(
                np.max(np.abs(calc / np.interp(100.0, depth, dose) / meas - 1))
            )
        rows.append(row)
    return rows


def penumbra_10x10(model: BeamModel) -> float:
    x = np.arange(-100.0, 100.5, 0.5)
    return profile_metrics(x, _dose(model, SSD_MM, (100.0, 100.0), 100.0, x))[1]


def test_broad_fields_table():
    after = os.environ.get("RTPLAN_AFTER_MODEL")
    models = {"before": _before_model(), "after": load_beam_model(after)}
    tables = {k: field_table(m) for k, m in models.items()}
    print(f"\nSSD {SSD_MM:g} mm; dev = largest local deviation 20-280 mm, normalised at 100 mm")
    print(
        f"{'field':>7} | {'PDD(100) b/a':>13} | {'PDD(200) b/a':>13} | {'dev % b/a':>11} | OF b/a"
    )
    for b, a in zip(tables["before"], tables["after"], strict=True):
        dev = "      -    " if b["dev_pct"] is None else f"{b['dev_pct']:5.2f}/{a['dev_pct']:5.2f}"
        side = b["side_mm"] / 10
        print(
            f"{side:3g}x{side:<3g} | {b['pdd100']:5.1f} / {a['pdd100']:5.1f} | "
            f"{b['pdd200']:5.1f} / {a['pdd200']:5.1f} | {dev} | {b['of']:.3f}/{a['of']:.3f}"
        )
    print(
        "80-20 % penumbra 10x10 at 100 mm: "
        + ", ".join(f"{k} {penumbra_10x10(m):.2f} mm" for k, m in models.items())
    )


if __name__ == "__main__":
    if "--write" in sys.argv:
        print(write_data())
