"""``rtplan phantom NAME OUT_DIR``: write a test phantom as DICOM CT + RT-STRUCT."""

from __future__ import annotations

import argparse

from ..phantoms import PHANTOM_NAMES, write_phantom


def register(subparsers) -> None:
    """Add the ``phantom`` sub-command."""
    p = subparsers.add_parser(
        "phantom",
        help="write a test phantom (CT series + RT-STRUCT)",
        description=(
            "Write a procedural AAPM TG-119 phantom, a water box or a thorax (lungs, heart, "
            "bone, couch, a GTV in the right lung) as a DICOM CT series "
            "(OUT_DIR/CT/CT.0001.dcm ...) and an RT Structure Set (OUT_DIR/RS.dcm). The "
            "folder is written under a temporary name and renamed when complete."
        ),
    )
    p.add_argument(
        "name", metavar="NAME", choices=PHANTOM_NAMES, help=f"one of: {', '.join(PHANTOM_NAMES)}"
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder to create")
    p.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")
    p.add_argument(
        "--pixel-spacing-mm",
        type=float,
        default=2.5,
        help="in-plane voxel size in mm (default 2.5)",
    )
    p.add_argument(
        "--slice-spacing-mm", type=float, default=2.5, help="slice spacing in mm (default 2.5)"
    )
    p.add_argument(
        "--matrix-size",
        type=int,
        default=None,
        help="columns = rows of each slice (default: body + 20 mm margin)",
    )
    p.add_argument("--slices", type=int, default=None, help="number of slices")
    p.add_argument(
        "--position",
        choices=("HFS", "FFS", "HFP", "FFP"),
        default="HFS",
        help="(0018,5100) PatientPosition to record (default HFS)",
    )
    p.add_argument(
        "--no-body-contour",
        action="store_true",
        help="leave the Body (EXTERNAL) ROI out of the RT-STRUCT (planning then derives "
        "the body outline from the CT)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the phantom; print the written paths."""
    written = write_phantom(
        args.name,
        args.out_dir,
        overwrite=args.force,
        pixel_spacing_mm=args.pixel_spacing_mm,
        slice_spacing_mm=args.slice_spacing_mm,
        matrix_size=args.matrix_size,
        n_slices=args.slices,
        position=args.position,
        body_contour=not args.no_body_contour,
    )
    print(f"CT series: {written.ct_dir} ({len(written.ct_files)} slices)")
    print(f"RT-STRUCT: {written.rtstruct_path}")
    return 0
