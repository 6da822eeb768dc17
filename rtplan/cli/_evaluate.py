"""``rtplan evaluate``: DVH metrics and goal checks for any plan's RT-DOSE.

Usage::

    rtplan evaluate RTDOSE RTSTRUCT [--ct CT_DIR] [--protocol P] [--map NAME=ROI ...]
                    [--json] [--bin-width-gy B]

The dose may come from rtplan or from any other planning system.  Structures are
rasterised directly on the dose grid (fractional in-plane occupancy); ``--ct`` loads the
CT too, which checks that the RT-STRUCT belongs to it.  The RT-DOSE's (0020,0052)
FrameOfReferenceUID must equal the RT-STRUCT's.

Without ``--protocol`` the output is a metric table per structure (volume in cm³, mean,
min, max = D0.03cc, D98, D95, D50, D2 in Gy).  With ``--protocol`` (a shipped protocol
name or a TOML path, see ``rtplan.protocols``) the protocol's goals are checked as well,
and the prescription target's HI, Paddick CI and GI are reported (isodose volumes in the
protocol's external structure, else in the whole dose grid).
``--json`` prints one JSON document instead of tables.

Exit status: 0 when every goal is met (or no goals were asked for), 1 when at least one
goal fails (a goal meeting only its acceptable level counts as met), 2 on bad input
(unreadable files, mismatched frames of reference, unknown structures, negative doses);
other failures have the statuses of :mod:`rtplan._internal.exit_status`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from dataclasses import replace

import numpy as np

from ..errors import InputError, ReferenceMismatchError, StructureError
from ..evaluation import DVHCollection, dvh, evaluate_goals, quality_indices
from ..io import read_patient, read_rtdose, read_structure_set
from ..protocols import apply_derived, load_protocol, parse_mapping_overrides

__all__ = ["register", "run"]

logger = logging.getLogger("rtplan.cli")

EXIT_GOALS_MET = 0
EXIT_GOAL_FAILED = 1


def register(subparsers) -> None:
    """Add the ``evaluate`` sub-command."""
    p = subparsers.add_parser(
        "evaluate",
        help="DVH metrics and goal checks for an RT-DOSE and RT-STRUCT",
        description="DVH metrics (and, with --protocol, goal checks) for an RT-DOSE from any "
        "planning system; structures are rasterised on the dose grid.",
    )
    p.add_argument("rtdose", metavar="RTDOSE", help="RT-DOSE file (total plan dose in Gy)")
    p.add_argument("rtstruct", metavar="RTSTRUCT", help="RT Structure Set file")
    p.add_argument("--ct", metavar="CT_DIR", help="CT folder (checks the RT-STRUCT against it)")
    p.add_argument(
        "--protocol", metavar="P", help="protocol name or TOML path whose goals are checked"
    )
    p.add_argument(
        "--map",
        metavar="NAME=ROI",
        action="append",
        default=[],
        help="map a protocol structure to a patient ROI name (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument(
        "--bin-width-gy",
        type=float,
        default=0.01,
        metavar="B",
        help="DVH bin width in Gy for the exported curves (default 0.01)",
    )
    p.set_defaults(func=run)


def _structures(args):
    """Structures (name → Structure), the RT-STRUCT frame of reference UID and its
    (0010,0020) PatientID ("" when absent)."""
    ss = read_structure_set(args.rtstruct)
    if args.ct:
        patient = read_patient(args.ct, args.rtstruct)  # checks the RT-STRUCT against the CT
        return patient.structures, patient.frame_of_reference_uid, ss.patient_id
    return ss.structures, ss.frame_of_reference_uid, ss.patient_id


def _outside(structure, grid) -> bool:
    box = structure.bounding_box
    if box is None:
        return False
    lo, hi = box
    return any(lo[a] < e[0] - 1e-6 or hi[a] > e[1] + 1e-6 for a, e in enumerate(grid.extent_mm))


def evaluate_files(args) -> dict:
    """Do the work of ``rtplan evaluate``; returns the JSON-ready result."""
    protocol = None
    if args.protocol:
        protocol = load_protocol(args.protocol)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dose, grid, refs = read_rtdose(args.rtdose)
    dose, fractions = _course_dose(dose, refs.dose_summation_type, protocol, args.rtdose)
    for w in caught:  # a one-fraction dose scaled to the course needs no warning
        if fractions == 1:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    structures, struct_for, struct_patient = _structures(args)
    if protocol is not None:  # derived structures the RT-STRUCT lacks
        structures = apply_derived(
            structures,
            protocol,
            overrides=parse_mapping_overrides(args.map) if args.map else {},
            existing="keep",
        )
    if refs.patient_id and struct_patient and refs.patient_id != struct_patient:
        raise ReferenceMismatchError(
            f"RT-DOSE '{args.rtdose}' and RT-STRUCT '{args.rtstruct}' have different "
            "(0010,0020) PatientID (values not shown); rtplan does not evaluate one patient's "
            "dose on another's structures."
        )
    if refs.frame_of_reference_uid != struct_for:
        raise ReferenceMismatchError(
            f"RT-DOSE '{args.rtdose}' belongs to frame of reference "
            f"{refs.frame_of_reference_uid or '(none)'} but RT-STRUCT '{args.rtstruct}' to "
            f"{struct_for or '(none)'}; the structures would land in the wrong place. Use the "
            "structure set of the plan's CT."
        )
    dvhs = {}
    notes: dict[str, str] = {}
    occupancy: dict[str, np.ndarray] = {}
    for name, s in structures.items():
        if s.is_empty or s.is_point:
            notes[name] = "no closed contours (point or empty ROI)"
            continue
        occ = s.occupancy(grid)
        if not occ.any():
            notes[name] = "outside the dose grid"
            continue
        if _outside(s, grid):
            notes[name] = "partly outside the dose grid: DVH covers the part inside"
        occupancy[name] = occ
        dvhs[name] = dvh(
            dose,
            occ,
            voxel_volume_cc=grid.voxel_volume_cc,
            bin_width_gy=args.bin_width_gy,
            name=name,
            color_rgb=s.color_rgb,
        )
    result: dict = {
        "rtdose": str(args.rtdose),
        "rtstruct": str(args.rtstruct),
        "frame_of_reference_uid": refs.frame_of_reference_uid,
        "rtdose_sop_instance_uid": refs.sop_instance_uid,
        "dose_grid": {
            "shape_zyx": list(grid.shape),
            "origin_mm": list(grid.origin_mm),
            "spacing_mm": list(grid.spacing_mm),
        },
        "dose_summation_type": refs.dose_summation_type,
        "fractions_applied": fractions,
        "max_dose_gy": float(np.max(dose)),
        "structures": [
            {
                "structure": r["structure"],
                **{k: v for k, v in r.items() if k != "structure"},
                "note": notes.get(r["structure"], ""),
            }
            for r in DVHCollection(dvhs).table()
        ],
        "skipped": {n: v for n, v in notes.items() if n not in dvhs},
        "goals": None,
    }
    if protocol is not None:
        overrides = parse_mapping_overrides(args.map) if args.map else {}
        mapping = protocol.resolve_structures(list(structures), overrides=overrides)
        goals = protocol.evaluation_goals(mapping)
        for g in goals:
            if g.structure not in occupancy:
                raise StructureError(
                    f"Goal '{g.text}' of protocol '{protocol.name}' cannot be evaluated: "
                    f"structure '{g.structure}' in '{args.rtstruct}' has "
                    f"{notes.get(g.structure, 'no voxels on the dose grid')}."
                )
        rx = protocol.prescription.total_dose_gy
        table = evaluate_goals(
            dose, occupancy, goals, grid, prescription_gy=rx, bin_width_gy=args.bin_width_gy
        )
        absent = protocol.goals_not_evaluated(mapping)
        reported = evaluate_goals(
            dose,
            occupancy,
            [g for g in protocol.reported_goals(mapping) if g.structure in occupancy],
            grid,
            prescription_gy=rx,
            bin_width_gy=args.bin_width_gy,
        )
        table = replace(table, not_evaluated=tuple(absent), reported=reported.results)
        for g, why in absent:
            result["skipped"].setdefault(g.structure, why)
        result["protocol"] = protocol.name
        result["prescription_gy"] = rx
        target = mapping.get(protocol.prescription.target)
        if target in dvhs:
            ext = mapping.get(protocol.external) if protocol.external else None
            body = (
                dvhs[ext]
                if ext in dvhs
                else dvh(
                    dose,
                    np.ones(dose.shape, np.float32),
                    voxel_volume_cc=grid.voxel_volume_cc,
                    bin_width_gy=args.bin_width_gy,
                    name="dose grid",
                )
            )
            result["indices"] = {
                "target": target,
                "body": body.name,
                **quality_indices(dvhs[target], body, prescription_gy=rx),
            }
        result["goals"] = table.as_records() + table.not_evaluated_records()
        result["reported"] = table.reported_records()
        result["goals_summary"] = table.summary_line()
        result["all_goals_met"] = table.all_passed
        result["_table"] = table
    elif args.map:
        raise InputError("`--map` is only meaningful with `--protocol`.")
    return result


def _course_dose(dose, summation: str, protocol, path) -> tuple[np.ndarray, int]:
    """The dose the protocol's goals are written for (the whole course) and the factor
    applied: an RT-DOSE of one fraction ((3004,000A) DoseSummationType FRACTION) times the
    protocol's fractions; PLAN/MULTI_PLAN doses (and any dose without a protocol) as stored.
    A single beam's dose cannot be checked against course goals and is refused."""
    if protocol is None or summation in ("PLAN", "MULTI_PLAN", ""):
        return dose, 1
    if summation == "FRACTION":
        n = int(protocol.prescription.fractions)
        return (dose * np.float32(n)).astype(np.float32), n
    raise InputError(
        f"'{path}': (3004,000A) DoseSummationType is {summation!r}, a part of the course; "
        f"the goals of protocol '{protocol.name}' are for the whole course. Export the plan "
        "dose (PLAN) or one fraction's dose (FRACTION)."
    )


def _text(result: dict) -> str:
    lines = [
        (
            f"Dose grid {tuple(result['dose_grid']['shape_zyx'])} voxels of "
            f"{tuple(round(v, 3) for v in result['dose_grid']['spacing_mm'])} mm, "
            f"max {result['max_dose_gy']:.4g} Gy"
        ),
        "",
        "Doses in Gy; max = D0.03cc; partial voxels weighted by occupancy.",
        (
            f"{'structure':<22}{'vol cc':>10}{'mean':>8}{'min':>8}{'max':>8}{'D98':>8}"
            f"{'D95':>8}{'D50':>8}{'D2':>8}"
        ),
    ]
    if result["fractions_applied"] != 1:
        lines.insert(
            1,
            f"One fraction's dose (DoseSummationType FRACTION) x {result['fractions_applied']} "
            "fractions of the protocol: whole-course dose.",
        )
    for r in result["structures"]:
        vals = "".join(
            f"{r[k]:>8.2f}"
            for k in ("mean_gy", "min_gy", "max_gy", "d98_gy", "d95_gy", "d50_gy", "d2_gy")
        )
        note = f"  ({r['note']})" if r["note"] else ""
        lines.append(f"{r['structure'][:21]:<22}{r['volume_cc']:>10.2f}{vals}{note}")
    for n, why in result["skipped"].items():
        lines.append(f"{n[:21]:<22}  skipped: {why}")
    if result.get("goals") is not None:
        lines += [
            "",
            f"Protocol {result['protocol']} (Rx {result['prescription_gy']:g} Gy):",
            repr(result["_table"]),
        ]
        ind = result.get("indices")
        if ind:
            vals = ", ".join(
                f"{k} {'n/a' if ind[k] is None else format(ind[k], '.3f')}"
                for k in ("HI", "CI", "GI")
            )
            lines.append(f"Target {ind['target']} (isodoses in {ind['body']}): {vals}")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    """Run ``rtplan evaluate``; returns 0 (goals met), 1 (a goal failed)."""
    if not (args.bin_width_gy > 0):
        raise InputError(f"`--bin-width-gy` must be positive; got {args.bin_width_gy}.")
    result = evaluate_files(args)
    table = result.pop("_table", None)
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        result["_table"] = table
        sys.stdout.write(_text(result))
    if table is not None and not table.all_passed:
        return EXIT_GOAL_FAILED
    return EXIT_GOALS_MET
