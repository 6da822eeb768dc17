"""``rtplan inspect CT_DIR RTSTRUCT [--json]``: grid, patient position and structures."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from ..errors import InputError
from ..io import read_ct, read_structure_set
from ..io._load import combine


def register(subparsers) -> None:
    """Add the ``inspect`` sub-command."""
    p = subparsers.add_parser(
        "inspect",
        help="summarise a CT series and its RT-STRUCT",
        description=(
            "Print the CT grid, orientation and patient position, and for each structure "
            "its type, volume (cm3), voxel count and bounding box. Coordinates are DICOM "
            "patient coordinates (LPS: +x left, +y posterior, +z superior) in mm. With a "
            "single RTSTRUCT argument the structures are measured on a 1 mm grid laid on "
            "the contour planes (a warning says so)."
        ),
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="CT_DIR RTSTRUCT",
        help="CT folder and RT-STRUCT file (or an RT-STRUCT alone)",
    )
    p.add_argument(
        "--series-uid",
        default=None,
        help="CT SeriesInstanceUID to use when the folder holds several series",
    )
    p.add_argument(
        "--recursive",
        action="store_true",
        help="also search the subfolders of CT_DIR for CT slices",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.set_defaults(func=run)


def _r(v, nd=2):
    return None if v is None else [round(float(x), nd) for x in v]


def summarise(patient_or_set, grid, *, position=None, orientation=None, ct=None) -> dict:
    """The inspection summary as a JSON-ready dict (units in the key names)."""
    out = {
        "frame": "DICOM patient coordinates (LPS), mm",
        "ct": ct,
        "grid": {
            "shape_zyx": list(grid.shape),
            "origin_mm_xyz": _r(grid.origin_mm, 3),
            "spacing_mm_xyz": _r(grid.spacing_mm, 4),
            "extent_mm_xyz": [_r(e, 2) for e in grid.extent_mm],
        },
        "patient_position": position,
        "image_orientation_patient": orientation,
        "structures": [],
    }
    for s in patient_or_set.structures.values():
        bb = s.bounding_box
        vbb = s.voxel_bounding_box(grid) if s.contours else None
        out["structures"].append(
            {
                "name": s.name,
                "number": s.number,
                "type": s.roi_type,
                "color_rgb": list(s.color_rgb) if s.color_rgb else None,
                "kind": "point" if s.is_point else ("empty" if s.is_empty else "closed_planar"),
                "n_contours": len(s.contours),
                "points_mm_xyz": [_r(p) for p in s.points_mm],
                "volume_cc": round(s.volume_cc(grid), 3) if s.contours else 0.0,
                "voxel_count": s.voxel_count(grid) if s.contours else 0,
                "bounding_box_mm_xyz": None if bb is None else {"min": _r(bb[0]), "max": _r(bb[1])},
                "voxel_box_zyx_half_open": None
                if vbb is None
                else {"start": list(vbb[0]), "stop": list(vbb[1])},
            }
        )
    return out


def _text(summary: dict) -> str:
    g = summary["grid"]
    lines = [f"Coordinates: {summary['frame']}"]
    if summary["ct"]:
        c = summary["ct"]
        lines.append(f"CT: {c['n_slices']} slices, series {c['series_instance_uid']}")
        lines.append(f"Frame of reference: {c['frame_of_reference_uid']}")
    lines.append(
        f"Grid (nz, ny, nx) = {tuple(g['shape_zyx'])}; spacing (dx, dy, dz) = "
        f"{tuple(g['spacing_mm_xyz'])} mm; origin (x, y, z) = {tuple(g['origin_mm_xyz'])} mm "
        "(centre of voxel [0,0,0])"
    )
    lines.append(
        "Extent: "
        + ", ".join(
            f"{a} {lo}..{hi} mm" for a, (lo, hi) in zip("xyz", g["extent_mm_xyz"], strict=True)
        )
    )
    if summary["patient_position"]:
        lines.append(
            f"Patient position (0018,5100): {summary['patient_position']}; "
            f"ImageOrientationPatient {tuple(summary['image_orientation_patient'])} "
            "(arrays flipped to +x, +y, +z)"
        )
    lines.append("")
    head = (
        f"{'#':>3}  {'name':<18} {'type':<10} {'volume cm3':>11} {'voxels':>9}  "
        "bounding box LPS mm (min .. max)"
    )
    lines.append(head)
    for s in summary["structures"]:
        bb = s["bounding_box_mm_xyz"]
        box = "-" if bb is None else f"{tuple(bb['min'])} .. {tuple(bb['max'])}"
        if s["kind"] == "point":
            box = "points " + ", ".join(str(tuple(p)) for p in s["points_mm_xyz"])
        lines.append(
            f"{s['number']:>3}  {s['name']:<18} {s['type'] or '-':<10} {s['volume_cc']:>11.2f} "
            f"{s['voxel_count']:>9d}  {box}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Load and summarise; return 0."""
    if len(args.paths) > 2:
        raise InputError(
            f"`inspect` takes CT_DIR and RTSTRUCT (or an RTSTRUCT alone); got "
            f"{len(args.paths)} paths."
        )
    if len(args.paths) == 1 and Path(args.paths[0]).is_file():
        ss = read_structure_set(args.paths[0])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            grid = ss.contour_grid()
        for w in caught:
            print(f"rtplan inspect: warning: {w.message}", file=sys.stderr)
        summary = summarise(ss, grid)
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ct = read_ct(
                args.paths[0],
                series_uid=args.series_uid,
                recursive=getattr(args, "recursive", False),
            )
            ss = read_structure_set(args.paths[1]) if len(args.paths) == 2 else None
            patient = combine(ct, ss)
        for w in caught:
            print(f"rtplan inspect: warning: {w.message}", file=sys.stderr)
        grid = patient.ct.grid
        summary = summarise(
            patient,
            grid,
            position=patient.position,
            orientation=[int(v) for v in ct.image_orientation_patient],
            ct={
                "n_slices": grid.shape[0],
                "series_instance_uid": patient.ct_series_instance_uid,
                "frame_of_reference_uid": patient.frame_of_reference_uid,
                "structure_set_uid": patient.structure_set_uid,
            },
        )
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(_text(summary))
    return 0
