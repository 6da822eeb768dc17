"""``rtplan influence``: the beamlet dose-influence matrix of a patient, as HDF5.

Usage::

    rtplan influence CT_DIR RTSTRUCT --target PTV [--beams 9 | --gantry 0,40,80]
                     [--dose-grid-mm 3] [--beamlet-mm 5] [--margin-mm 5]
                     --out FILE.h5 [--force] [--backend numpy|cupy] [--cache-dir DIR]
                     [--algorithm pencil_beam|ccc] [--cones 48]
                     [--beam-model FILE] [--hu-table FILE]

The file holds the float32 CSR matrix (Gy per MU; rows = every dose-grid voxel in C order,
columns = beamlets in beam order), the dose grid, the beams, the beamlet table and the beam
model's provenance; read it with :func:`dose_engine.load_influence_matrix`.

Exit status: 0 on success, 2 on bad input (unreadable DICOM, unknown target, existing
output without ``--force``); other failures have the statuses of
:mod:`rtplan._internal.exit_status`.
A failed run leaves no output file behind.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from .._internal.atomic import atomic_file, check_cache_dir, check_output_path
from ..dose._influence import (
    INFLUENCE_ALGORITHMS,
    check_influence_algorithm,
    influence_matrix,
)
from ..errors import InputError
from ..io import read_patient
from ._plan import add_beam_model_option, add_density_table_option

__all__ = ["register", "run"]

logger = logging.getLogger("rtplan.cli")


def _angles(text: str) -> list[float]:
    try:
        vals = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise InputError(
            f"--gantry must be comma-separated angles in degrees, e.g. 0,40,80; got {text!r}."
        ) from None
    if not vals:
        raise InputError("--gantry lists no angle.")
    return vals


def register(subparsers) -> None:
    """Add the ``influence`` sub-command."""
    p = subparsers.add_parser(
        "influence",
        help="beamlet dose-influence matrix (Gy/MU, HDF5) for a CT + RT-STRUCT",
        description="Compute the voxel x beamlet dose-influence matrix of a 6 MV pencil-beam "
        "model for beams aimed at a target and write it as HDF5.",
    )
    p.add_argument("ct_dir", metavar="CT_DIR", help="folder with the CT series")
    p.add_argument("rtstruct", metavar="RTSTRUCT", help="RT Structure Set file")
    p.add_argument("--target", required=True, help="target structure name (e.g. PTV)")
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--beams",
        type=int,
        default=9,
        metavar="N",
        help="number of equispaced coplanar beams (default 9)",
    )
    group.add_argument("--gantry", metavar="ANGLES", help="gantry angles, e.g. 0,40,80")
    p.add_argument(
        "--dose-grid-mm",
        type=float,
        default=3.0,
        metavar="MM",
        help="dose-grid spacing in mm (default 3)",
    )
    p.add_argument(
        "--beamlet-mm", type=float, default=5.0, metavar="MM", help="beamlet size in mm (default 5)"
    )
    p.add_argument(
        "--margin-mm",
        type=float,
        default=5.0,
        metavar="MM",
        help="beamlet margin around the target projection in mm (default 5)",
    )
    p.add_argument("--out", required=True, metavar="FILE.h5", help="output HDF5 file")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    p.add_argument(
        "--algorithm",
        choices=INFLUENCE_ALGORITHMS,
        default="pencil_beam",
        help="engine of each beamlet's dose: pencil_beam (default) or ccc, the collapsed cone "
        "(one transport per beamlet: minutes; not cached)",
    )
    p.add_argument(
        "--cones",
        type=int,
        default=48,
        metavar="N",
        help="collapsed-cone transport directions (even, >= 48; default 48)",
    )
    p.add_argument(
        "--cache-dir", metavar="DIR", help="reuse/store pencil-beam matrices in this folder"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_beam_model_option(p)
    add_density_table_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``rtplan influence``; return the exit status."""
    from dose_engine import save_influence_matrix

    out = Path(args.out)
    check_output_path(out, overwrite=args.force, kind="file", what="--out")  # before any work
    check_cache_dir(args.cache_dir)
    check_influence_algorithm(args.algorithm, args.cones, args.cache_dir)
    if args.beams is not None and args.beams < 1:
        raise InputError(f"--beams must be at least 1; got {args.beams}.")
    if not args.dose_grid_mm > 0 or not args.beamlet_mm > 0 or args.margin_mm < 0:
        raise InputError("--dose-grid-mm and --beamlet-mm must be > 0 and --margin-mm >= 0.")
    gantry = _angles(args.gantry) if args.gantry else None
    patient = read_patient(args.ct_dir, args.rtstruct)
    im = influence_matrix(
        patient,
        target=args.target,
        n_beams=args.beams or 9,
        gantry_angles_deg=gantry,
        dose_grid_mm=args.dose_grid_mm,
        beamlet_mm=args.beamlet_mm,
        margin_mm=args.margin_mm,
        backend=args.backend,
        cache_dir=args.cache_dir,
        progress=not args.no_progress,
        beam_model=args.beam_model,
        density_table=args.density_table,
        algorithm=args.algorithm,
        cones=args.cones,
    )
    with atomic_file(out, overwrite=args.force) as tmp:
        save_influence_matrix(
            im, tmp, cache_key=str(im.settings.get("cache_key", "")), overwrite=True
        )
    sys.stdout.write(
        f"{out}: {im.shape[0]} voxels x {im.shape[1]} beamlets ({len(im.beams)} beams), "
        f"nnz {im.nnz}, {im.nbytes / 2**20:.1f} MiB, Gy/MU, algorithm {args.algorithm}\n"
    )
    return 0
