"""``rtplan dose CT_DIR RTSTRUCT RTPLAN --out RTDOSE.dcm``: recompute a plan's dose.

Reads an RT-PLAN (from rtplan or another planning system; static, step-and-shoot,
sliding-window or arc photon MLC beams), checks that it belongs to the CT and structure
set given, computes the total plan dose with rtplan's dose engine (each beam with the
beam model for its NominalBeamEnergy and fluence mode: the shipped 6X, 10X and 6FFF
models, or the commissioned ones given with ``--beam-model FILE``, repeatable;
``--algorithm ccc`` for the collapsed-cone engine, which a model needs a commissioning
for) and writes it as an
RT-DOSE that references the plan, naming the algorithm in its SeriesDescription and
DoseComment.  Arcs/VMAT and sliding-window beams are computed as static apertures every
2 degrees and 2 mm (:mod:`rtplan.io._rtplan_read`).  Unsupported beams (collimator or
couch rotation, wedges, electrons, a NominalBeamEnergy or fluence mode (FFF) the beam model
is not for, …), mismatched references and a beam model that cannot be read or whose SAD
differs from the plan's are refused: one line on stderr (for energy and fluence mode, with
the beam models available), exit status 2, no output.  CT voxels inside the body outside
the density table's range, or metal (:func:`rtplan.safety.ct_calibration_warnings`), are
printed as ``WARNING:`` lines after the dose is written, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterable

from dose_engine import BeamModel

from .._internal.atomic import check_output_path
from ..delivery._machine import load_machine
from ..dose._models import BeamModels, resolve_beam_models, shipped_beam_models
from ..dose._plan_dose import (
    ALGORITHM_LABELS,
    DOSE_ALGORITHMS,
    DOSE_QUANTITY,
    compute_plan_dose,
    require_ct_volume,
    resolve_density_table,
)
from ..errors import InputError
from ..io import read_patient
from ..io._rtdose import write_rtdose
from ..io._rtplan_read import read_rtplan_beams
from ..planning._dask import dask_client
from ..planning._final_algorithm import require_ccc_commissioning
from ..safety import ct_calibration_warnings, synthetic_model_warnings
from ..structures import body_structure
from ._plan import add_beam_model_option, add_density_table_option

log = logging.getLogger("rtplan.cli")


def register(subparsers) -> None:
    """Add the ``dose`` sub-command."""
    p = subparsers.add_parser(
        "dose",
        help="recompute the dose of an RT-PLAN on its CT and write an RT-DOSE",
        description=(
            "Recompute the total dose (all fractions) of a DICOM RT-PLAN with rtplan's "
            "pencil-beam (default) or collapsed-cone engine on the CT it was planned on, and "
            "write a DICOM RT-DOSE "
            "referencing the plan: a round-trip check of rtplan's own plans and an "
            "independent second check of plans from other systems."
        ),
    )
    p.add_argument("ct_dir", metavar="CT_DIR", help="folder with the CT series")
    p.add_argument("rtstruct", metavar="RTSTRUCT", help="RT Structure Set the plan references")
    p.add_argument("rtplan", metavar="RTPLAN", help="RT-PLAN file")
    p.add_argument("--out", required=True, metavar="RTDOSE.dcm", help="RT-DOSE file to write")
    p.add_argument(
        "--dose-grid-mm",
        type=float,
        default=3.0,
        help="isotropic dose-grid spacing in mm (default 3)",
    )
    p.add_argument(
        "--machine",
        default=None,
        help="machine name or TOML file whose MLC limits the plan is checked against "
        "(default: the plan's TreatmentMachineName if shipped, else generic)",
    )
    p.add_argument(
        "--fraction-group",
        type=int,
        default=None,
        help="(300A,0071) FractionGroupNumber, when the plan has several",
    )
    add_beam_model_option(p, repeatable=True)
    add_density_table_option(p)
    p.add_argument(
        "--algorithm",
        choices=DOSE_ALGORITHMS,
        default="pencil_beam",
        help="dose algorithm: pencil_beam (default, the planning engine) or ccc "
        "(collapsed-cone convolution/superposition: lung and bone)",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="pencil beam: compute each beam and each gantry angle of an arc as a task on "
        "this Dask scheduler (tcp://host:8786), or 'local' for a LocalCluster of two "
        "threaded workers (needs rtplan[dask]); the same dose to the last bit",
    )
    p.add_argument("--force", action="store_true", help="replace RTDOSE.dcm if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load, check, compute, write; print a one-line summary."""
    check_output_path(args.out, overwrite=args.force, kind="file", what="--out")  # before work
    if not (args.dose_grid_mm > 0):
        raise InputError(f"`--dose-grid-mm` must be positive; got {args.dose_grid_mm!r}.")
    if args.scheduler is not None and args.algorithm == "ccc":
        raise InputError(
            "`--scheduler` distributes the pencil beam's beams and arc angles; the collapsed "
            "cone (`--algorithm ccc`) transports all beams at once in one process: drop "
            "`--scheduler`."
        )
    models = resolve_beam_models(args.beam_model)  # None: the shipped ones
    table = resolve_density_table(args.density_table)  # a bad table: refused before any work
    if args.algorithm == "ccc" and args.beam_model:  # a given model: before reading anything
        _require_ccc(models)
    machine = load_machine(args.machine) if args.machine else None
    patient = read_patient(args.ct_dir, args.rtstruct)
    require_ct_volume(patient, "a dose")  # the CT's fault, not the RT-PLAN's
    plan = read_rtplan_for_models(
        args.rtplan, patient, models, machine=machine, fraction_group_number=args.fraction_group
    )
    if args.algorithm == "ccc":  # the models the plan's beams use, before any dose
        _require_ccc([models.for_beam(b) for b in plan.beams])
    with _cluster(args.scheduler) as client:
        try:
            result = compute_plan_dose(
                plan,
                patient,
                dose_grid_mm=args.dose_grid_mm,
                model=models,
                density_table=table,
                algorithm=args.algorithm,
                client=client,
            )
        except InputError as exc:
            raise InputError(f"RT-PLAN '{args.rtplan}': {exc}") from exc
    write_rtdose(
        args.out,
        result.dose_gy,
        result.grid,
        patient,
        plan_sop_instance_uid=plan.sop_instance_uid,
        series_description=f"rtplan dose ({ALGORITHM_LABELS[result.algorithm]})",
        comment=f"rtplan recalculation, {ALGORITHM_LABELS[result.algorithm]}, {DOSE_QUANTITY}",
        tissue_heterogeneity_correction="IMAGE",
        overwrite=args.force,
    )
    used = sorted(set(result.beam_models.values()))
    print(
        f"RT-DOSE: {args.out} ({len(plan.beams)} beams, {plan.fractions} fractions, "
        f"max {float(result.dose_gy.max()):.3f} Gy, algorithm {result.algorithm}, "
        f"beam model{'s' if len(used) > 1 else ''} {'; '.join(used)})"
    )
    warnings = _calibration_warnings(patient, table, result.grid)
    warnings += synthetic_model_warnings({b.number: models.for_beam(b) for b in plan.beams})
    for w in warnings:
        print(f"WARNING: {w.message}")
    return 1 if warnings else 0


def _cluster(scheduler: str | None) -> contextlib.AbstractContextManager:
    """The Dask client of ``--scheduler`` (none without it)."""
    if scheduler is None:
        return contextlib.nullcontext()
    return dask_client(None if scheduler == "local" else scheduler)


def _require_ccc(models: Iterable[BeamModel]) -> None:
    """Refuse a beam model without a collapsed-cone commissioning (names it): only the
    shipped 6X model has one; 10X and 6FFF compute with the pencil beam only."""
    for model in models:
        require_ccc_commissioning(model)


def read_rtplan_for_models(
    path, patient, models: BeamModels, *, machine=None, fraction_group_number=None
):
    """The RT-PLAN's beams, each refused unless one of ``models`` is for its
    NominalBeamEnergy and fluence mode (the refusal lists the beam models available)."""
    return read_rtplan_beams(
        path,
        patient,
        machine=machine,
        fraction_group_number=fraction_group_number,
        beam_keys=models.keys,
        beam_models=beam_models_available(models),
    )


def read_rtplan_for_model(
    path, patient, model: BeamModel, *, machine=None, fraction_group_number=None
):
    """:func:`read_rtplan_for_models` with one beam model (``rtplan check-mc``)."""
    return read_rtplan_for_models(
        path,
        patient,
        BeamModels([model]),
        machine=machine,
        fraction_group_number=fraction_group_number,
    )


def _calibration_warnings(patient, table, dose_grid) -> list:
    """The CT against ``table`` inside the body, named by the RT-STRUCT's other ROIs."""
    body = body_structure(patient)
    structures = {
        name: s.occupancy(dose_grid)
        for name, s in patient.structures.items()
        if s is not body and not s.is_empty and str(s.roi_type).upper() != "EXTERNAL"
    }
    return ct_calibration_warnings(
        patient.ct.array, patient.ct.grid, table, dose_grid, body.occupancy(dose_grid), structures
    )


def beam_models_available(models: BeamModels) -> str:
    """The beam models ``rtplan dose`` can compute with, for a refusal's message: those in
    use (``--beam-model``, else the shipped ones) and, when models were given, the shipped
    ones too."""
    text = models.describe()
    if models.source != "shipped":
        text = f"{text} (given); shipped: {shipped_beam_models().describe()}"
    return (
        f"{text}; commission another (python -m dose_engine.fit) and pass it with "
        "--beam-model (repeatable: one per energy and fluence mode)"
    )
