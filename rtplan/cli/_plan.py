"""``rtplan plan``: plan a patient automatically from a protocol.

Exit status: 0 when every goal of the protocol is met, 1 when the plan was written but
some goal failed or the safety layer warned (capped normalisation, beam balance, a failed
implicit goal); failures have their own statuses (:mod:`rtplan._internal.exit_status`).
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..planning import PlanOptions, plan_and_write
from ..protocols._protocol import FINAL_ALGORITHMS, TECHNIQUES

__all__ = ["register"]

logger = logging.getLogger("rtplan.cli")

EXIT_ALL_MET = 0
EXIT_GOALS_FAILED = 1


def add_planning_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``plan``, ``demo`` and ``batch``."""
    p.add_argument(
        "--backend",
        choices=("numpy", "cupy"),
        default="numpy",
        help="array back-end of the dose engine (default numpy)",
    )
    p.add_argument(
        "--solver",
        choices=("first_order", "cvxpy"),
        default=None,
        help="fluence optimiser (default: the protocol's)",
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="HDF5 influence-matrix cache folder (default: no cache)",
    )
    p.add_argument(
        "--dose-grid-mm",
        type=float,
        default=None,
        metavar="MM",
        help="override the protocol's dose-grid spacing",
    )
    p.add_argument(
        "--beams",
        type=int,
        default=None,
        metavar="N",
        help="override the protocol's beams with N equispaced coplanar beams",
    )
    p.add_argument(
        "--max-iterations",
        type=int,
        default=None,
        metavar="N",
        help="override the first-order solver's iterations per level",
    )
    add_beam_model_option(p)
    add_density_table_option(p)
    p.add_argument(
        "--final-dose",
        choices=FINAL_ALGORITHMS,
        default=None,
        help="engine of the final dose and the RT-DOSE: ccc (collapsed cone), pencil_beam, "
        "or auto (collapsed cone when the body holds lung or bone; docs/dose_algorithms.md); "
        "default: the protocol's [dose] final_algorithm, else auto",
    )
    p.add_argument(
        "--technique",
        choices=TECHNIQUES,
        default=None,
        help="imrt (static step-and-shoot beams) or vmat (the protocol's arcs, default two "
        "full arcs; docs/vmat.md); default: the protocol's [beams] technique, else imrt",
    )
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def add_beam_model_option(p: argparse.ArgumentParser, *, repeatable: bool = False) -> None:
    """``--beam-model FILE``: a commissioned beam model instead of the shipped ones
    (``repeatable``: one per energy and fluence mode, for ``rtplan dose``)."""
    if repeatable:
        p.add_argument(
            "--beam-model",
            action="append",
            default=None,
            metavar="FILE",
            help="beam-model JSON file from `python -m dose_engine.fit`; repeat it for each "
            "energy and fluence mode (default: the shipped 6X, 10X and 6FFF models); each "
            "beam is computed with the model for its NominalBeamEnergy and fluence mode",
        )
        return
    p.add_argument(
        "--beam-model",
        default=None,
        metavar="FILE",
        help="beam-model JSON file from `python -m dose_engine.fit` (default: the shipped "
        "model for the machine's nominal energy and fluence mode, 6X on the shipped "
        "machines); its SAD must match the machine's, and the plan's beams take its energy "
        "and fluence mode",
    )


def add_density_table_option(p: argparse.ArgumentParser) -> None:
    """``--hu-table FILE``: the scanner's CT-to-density calibration."""
    p.add_argument(
        "--hu-table",
        dest="density_table",
        default=None,
        metavar="FILE",
        help="the scanner's HU to relative electron (or mass) density table: CSV or TOML, "
        "two columns, HU increasing (default: the protocol's [dose] density_table, else the "
        "shipped generic table)",
    )


def planning_kwargs(args: argparse.Namespace) -> dict:
    """The options of :func:`add_planning_options` as keyword arguments of
    ``plan_and_write``, ``run_demo`` and ``plan_batch``: ``options`` (one
    :class:`rtplan.planning.PlanOptions`) and ``overwrite`` (``--no-progress`` aside:
    batch jobs never show progress bars)."""
    options = PlanOptions(
        backend=args.backend,
        solver=args.solver,
        cache_dir=args.cache_dir,
        dose_grid_mm=args.dose_grid_mm,
        n_beams=args.beams,
        max_iterations=args.max_iterations,
        beam_model=args.beam_model,
        density_table=args.density_table,
        final_dose=args.final_dose,
        technique=args.technique,
    )
    return {"options": options, "overwrite": args.force}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "plan",
        help="plan a patient from CT + RT-STRUCT and a protocol",
        description="Automatic planning: load, influence matrix, prioritised optimisation, "
        "sequencing, segment weights, final dose, evaluation; writes RTPLAN.dcm, "
        "RTDOSE.dcm, plan.json and report.html into OUT_DIR (and RS_derived.dcm when the "
        "protocol derives structures or the body outline is found in the CT). Output paths "
        "are checked before any work. Exit status 0: every goal met; 1: plan written, some "
        "goal failed or a safety warning; other statuses in the table below.",
    )
    p.add_argument("ct_dir", metavar="CT_DIR", help="folder with the CT series")
    p.add_argument("rtstruct", metavar="RTSTRUCT", help="RT Structure Set file")
    p.add_argument(
        "--protocol",
        required=True,
        metavar="NAME|FILE",
        help="shipped protocol name (e.g. tg119_cshape) or a protocol TOML file",
    )
    p.add_argument("--out", required=True, metavar="OUT_DIR", help="output folder (new)")
    p.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="PROTOCOL=PATIENT",
        help="map a protocol structure to a patient structure, e.g. PTV=OuterTarget",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="run the planning job on this Dask scheduler (needs rtplan[dask])",
    )
    p.add_argument(
        "--arc-scheduler",
        default=None,
        metavar="ADDRESS|local",
        help="arcs (VMAT): compute each interval's aperture dose of the MU refinement as a "
        "task on this Dask scheduler (tcp://host:8786), or 'local' for a LocalCluster of two "
        "workers (needs rtplan[dask]); the same plan as without",
    )
    add_planning_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    kwargs = planning_kwargs(args)
    if args.arc_scheduler is not None:
        kwargs["options"] = kwargs["options"].with_changes(scheduler=args.arc_scheduler)
    result = plan_and_write(
        args.ct_dir,
        args.rtstruct,
        args.protocol,
        args.out,
        structure_map=args.map,
        progress=not args.no_progress,
        scheduler=args.scheduler,
        **kwargs,
    )
    print(result.summary)
    print(f"written: {result.out}")
    return EXIT_GOALS_FAILED if result.needs_attention else EXIT_ALL_MET


if __name__ == "__main__":  # pragma: no cover
    sys.exit(1)
