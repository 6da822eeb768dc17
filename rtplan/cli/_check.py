"""``rtplan check RTPLAN [--machine M] [--json]``: deliverability and complexity of a plan.

Reads an RT-PLAN on its own (rtplan's or another system's; no CT needed) and prints, per
beam and per fraction, the estimated delivery time, MU, maximum leaf speed, modulation
complexity score and mean aperture area, then every machine limit the plan breaks
(:mod:`rtplan.delivery._deliverability`).  Exit status 0: every limit holds; 1: a limit
is violated; 2: the file cannot be read as an RT-PLAN, or an arc's machine has no arc
limits.
"""

from __future__ import annotations

import argparse
import json

from .._internal.exit_status import EXIT_GOAL_FAILED, EXIT_OK
from ..delivery._deliverability import Deliverability, check_deliverability
from ..delivery._machine import load_machine
from ..io._rtplan_read import read_rtplan_delivery


def register(subparsers) -> None:
    """Add the ``check`` sub-command."""
    p = subparsers.add_parser(
        "check",
        help="check an RT-PLAN against the machine's limits; delivery time, MU, complexity",
        description=(
            "Check that every beam of a DICOM RT-PLAN (rtplan's or another system's: static, "
            "step-and-shoot, sliding-window or arc) stays within the machine's limits (MLC "
            "and jaws, dose rates, minimum MU and spacing of control points, gantry and leaf "
            "speeds) and print per beam the estimated delivery time, MU per fraction, the "
            "maximum leaf speed used, the modulation complexity score (McNiven et al. 2010) "
            "and the mean aperture area. Exit status 1 when a limit is violated."
        ),
    )
    p.add_argument("rtplan", metavar="RTPLAN", help="RT-PLAN file")
    p.add_argument(
        "--machine",
        default=None,
        help="machine name or TOML file with the limits (default: the plan's "
        "TreatmentMachineName if shipped)",
    )
    p.add_argument(
        "--fraction-group",
        type=int,
        default=None,
        help="(300A,0071) FractionGroupNumber, when the plan has several",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run)


def _number(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_table(result: Deliverability) -> str:
    """The per-beam table, the plan's totals and the violations, as printed."""
    head = (
        f"{'beam':>4}  {'name':<12} {'type':<9} {'CPs':>5} {'MU/fx':>9} {'time s':>8} "
        f"{'leaf mm/s':>9} {'MCS':>6} {'area cm2':>9}"
    )
    rows = [head]
    for b in result.beams:
        kind = "arc" if b.is_arc else "fixed"
        rows.append(
            f"{b.number:>4}  {b.name[:12]:<12} {kind:<9} {b.n_control_points:>5} {b.mu:>9.2f} "
            f"{_number(b.delivery_time_s, '8.1f'):>8} "
            f"{_number(b.max_leaf_speed_mm_per_s, '9.1f'):>9} {b.mcs:>6.3f} "
            f"{b.mean_aperture_area_cm2:>9.2f}"
        )
    rows.append(
        f"total: {result.total_mu:.2f} MU per fraction ({result.fractions} fractions), "
        f"delivery {_number(result.delivery_time_s, '.1f')} s, MCS {result.mcs:.3f}"
    )
    if result.ok:
        rows.append("every machine limit holds")
    else:
        rows.append(f"{len(result.violations)} violation(s):")
        rows += [f"  {v} [{v.limit}]" for v in result.violations]
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:
    """Read, check, print; exit 1 on a violated limit."""
    machine = load_machine(args.machine) if args.machine else None
    plan = read_rtplan_delivery(
        args.rtplan, machine=machine, fraction_group_number=args.fraction_group
    )
    result = check_deliverability(plan)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(format_table(result))
    return EXIT_OK if result.ok else EXIT_GOAL_FAILED
