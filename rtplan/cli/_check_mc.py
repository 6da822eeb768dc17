"""``rtplan check-mc CT_DIR RTSTRUCT RTPLAN``: an independent Monte Carlo check of a plan.

Computes the plan's dose by Monte Carlo (ompMC, EGSnrc physics, run in its own process:
:mod:`rtplan.monte_carlo`) on a grid over the body, and compares it with rtplan's dose of
the same plan (``--algorithm``) or with an RT-DOSE (``--rtdose``, e.g. the planning
system's): gamma pass rate at 3 % (global) / 3 mm above 10 % of the maximum, and D95,
mean and D2 of each ROI. The Monte Carlo's source spectrum (``--mc-spectrum``) is by
default the collapsed cone's commissioned one (the beam rtplan's dose is computed with);
``ompmc`` takes ompMC's shipped Varian 6 MV spectrum (softer: 4-6 % less dose at 200-250
mm relative to 100 mm); the output and the JSON name it. Exit status 0 when the pass rate
is at least ``--min-pass``, 1 when it is below, 2 on bad input (or ompMC not installed:
``pip install "rtplan[mc]"``).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from .._internal.atomic import atomic_file, check_output_path
from ..dose._plan_dose import (
    DOSE_ALGORITHMS,
    compute_plan_dose,
    require_ct_volume,
    resolve_beam_model,
    resolve_density_table,
)
from ..errors import InputError, ReferenceMismatchError
from ..io import read_patient, read_rtdose
from ..monte_carlo import compare_with_monte_carlo, monte_carlo_dose
from ..monte_carlo._run import DEFAULT_HISTORIES
from ..monte_carlo._spectrum import DEFAULT_MC_SPECTRUM, MC_SPECTRA
from ..structures import body_grid, body_structure
from ._dose import read_rtplan_for_model
from ._plan import add_beam_model_option, add_density_table_option

#: Default lowest gamma pass rate of a passing check.
DEFAULT_MIN_PASS = 0.95


def register(subparsers) -> None:
    """Add the ``check-mc`` sub-command."""
    p = subparsers.add_parser(
        "check-mc",
        help="compare a plan's dose with an independent Monte Carlo dose (ompMC)",
        description=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("ct_dir", metavar="CT_DIR", help="folder with the CT series")
    p.add_argument("rtstruct", metavar="RTSTRUCT", help="RT Structure Set the plan references")
    p.add_argument("rtplan", metavar="RTPLAN", help="RT-PLAN file")
    p.add_argument(
        "--rtdose", default=None, metavar="RTDOSE.dcm", help="compare this dose instead of ours"
    )
    p.add_argument(
        "--algorithm",
        choices=DOSE_ALGORITHMS,
        default="ccc",
        help="rtplan's dose to compare when no --rtdose is given (default ccc)",
    )
    p.add_argument(
        "--histories",
        type=int,
        default=DEFAULT_HISTORIES,
        help=f"Monte Carlo histories (default {DEFAULT_HISTORIES:,}; about 0.2 CPU s per 1,000)",
    )
    p.add_argument(
        "--mc-spectrum",
        choices=MC_SPECTRA,
        default=DEFAULT_MC_SPECTRUM,
        help="the Monte Carlo's source spectrum: the collapsed cone's commissioned one "
        "(default) or ompMC's shipped Varian 6 MV spectrum",
    )
    p.add_argument("--dose-grid-mm", type=float, default=5.0, help="grid spacing, mm (default 5)")
    p.add_argument(
        "--min-pass",
        type=float,
        default=DEFAULT_MIN_PASS,
        help=f"lowest gamma pass rate of a passing check, 0-1 (default {DEFAULT_MIN_PASS})",
    )
    p.add_argument("--json", default=None, metavar="OUT.json", help="write the comparison here")
    add_beam_model_option(p)
    add_density_table_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load, compute both doses, compare, print (and write) the result."""
    if args.json:
        check_output_path(args.json, overwrite=True, kind="file", what="--json")
    if not (0.0 <= args.min_pass <= 1.0):
        raise InputError(f"`--min-pass` must lie in 0-1; got {args.min_pass!r}.")
    if not (args.dose_grid_mm > 0):
        raise InputError(f"`--dose-grid-mm` must be positive; got {args.dose_grid_mm!r}.")
    model = resolve_beam_model(args.beam_model)
    table = resolve_density_table(args.density_table)
    patient = read_patient(args.ct_dir, args.rtstruct)
    require_ct_volume(patient, "a dose")
    plan = read_rtplan_for_model(args.rtplan, patient, model)
    body = body_structure(patient)
    grid = body_grid(patient.ct.grid, body, float(args.dose_grid_mm))
    if args.rtdose:  # read and checked before minutes of Monte Carlo
        from dose_engine._resample import resample

        dose, dose_grid, refs = read_rtdose(args.rtdose)
        _require_plan_dose_of(refs, args.rtdose, patient, plan)
        ours = np.asarray(resample(dose, dose_grid, grid, order=1), dtype=np.float64)
        label = f"RT-DOSE {args.rtdose}"
    mc = monte_carlo_dose(
        plan,
        patient,
        dose_grid=grid,
        model=model,
        density_table=table,
        histories=args.histories,
        spectrum=args.mc_spectrum,
    )
    if not args.rtdose:
        ours = compute_plan_dose(
            plan,
            patient,
            dose_grid=grid,
            model=model,
            density_table=table,
            algorithm=args.algorithm,
        ).dose_gy
        label = f"rtplan {args.algorithm}"
    occupancies = {n: s.occupancy(grid) for n, s in patient.structures.items() if not s.is_empty}
    result = compare_with_monte_carlo(ours, mc.dose_gy, grid, occupancies)
    high = mc.dose_gy > 0.5 * float(mc.dose_gy.max())
    noise = float(np.median(mc.uncertainty[high])) if high.any() else float("nan")
    print(
        f"Monte Carlo (ompMC, {mc.spectrum['name']} spectrum, {mc.histories:,} histories, "
        f"median 1 sigma {100 * noise:.1f} % "
        f"above 50 % of max) vs {label}: gamma 3 %/3 mm pass rate "
        f"{100 * result.gamma_pass_rate:.1f} % (need {100 * args.min_pass:.0f} %)"
    )
    print(f"{'ROI':<20}{'metric':>8}{'ours Gy':>10}{'MC Gy':>10}{'diff %':>9}")
    for name, metrics in result.structures.items():
        for metric, (a, b) in metrics.items():
            diff = 100.0 * (a - b) / b if b > 0 else float("nan")
            print(f"{name:<20}{metric:>8}{a:>10.3f}{b:>10.3f}{diff:>9.1f}")
    if args.json:
        record = {
            "compared": label,
            "histories": mc.histories,
            "mc_spectrum": mc.spectrum,
            "mc_median_uncertainty": noise,
        }
        record.update(result.as_dict())
        with atomic_file(args.json, overwrite=True) as tmp:
            tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")
    return 0 if result.gamma_pass_rate >= args.min_pass else 1


def _require_plan_dose_of(refs, path, patient, plan) -> None:
    """Refuse an RT-DOSE that is not the total dose of this plan on this CT: another frame
    of reference, another plan (when it names one), or not a PLAN summation (the Monte
    Carlo dose is the whole plan's)."""
    if refs.frame_of_reference_uid != patient.frame_of_reference_uid:
        raise ReferenceMismatchError(
            f"RT-DOSE '{path}' belongs to frame of reference "
            f"{refs.frame_of_reference_uid or '(none)'} but the CT to "
            f"{patient.frame_of_reference_uid}; the doses would be compared in the wrong place."
        )
    if refs.referenced_plan_uid and refs.referenced_plan_uid != plan.sop_instance_uid:
        raise ReferenceMismatchError(
            f"RT-DOSE '{path}' (300C,0002) ReferencedRTPlanSequence names plan "
            f"{refs.referenced_plan_uid}, not the RT-PLAN given ({plan.sop_instance_uid})."
        )
    if str(refs.dose_summation_type).upper() != "PLAN":
        raise InputError(
            f"RT-DOSE '{path}' (3004,000A) DoseSummationType is {refs.dose_summation_type!r}; "
            "the Monte Carlo dose is the whole plan's, so compare a PLAN dose."
        )
