"""``rtplan demo OUT_DIR``: the TG-119 C-shape phantom planned end to end.

Writes the phantom as DICOM into ``OUT_DIR/input`` (CT series + RT-STRUCT), loads it back
like any patient, plans it with the shipped ``tg119_cshape`` protocol and writes the plan
into ``OUT_DIR/plan``.  Exit status 0 when the plan was produced (goal failures are shown,
not fatal), 2 on bad input.  The protocol's own settings apply (9 beams, 3 mm grid) unless
``--dose-grid-mm`` / ``--max-iterations`` say otherwise; ``--beam-model FILE`` plans with a
commissioned beam model instead of the shipped 6 MV one.  ``--phantom thorax`` plans the
thorax phantom (lungs, bone, a tumour in lung) with ``lung_60gy_30fx``; its final dose is
the collapsed cone (``--final-dose auto``: the body holds lung and bone).
"""

from __future__ import annotations

from ..planning import run_demo
from ._plan import add_planning_options, planning_kwargs

__all__ = ["register"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="plan the TG-119 C-shape phantom end to end (start here)",
        description="Write the TG-119 C-shape phantom as DICOM into OUT_DIR/input, plan it "
        "with the tg119_cshape protocol and write RTPLAN.dcm, RTDOSE.dcm, plan.json and "
        "report.html into OUT_DIR/plan.",
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder (new)")
    p.add_argument(
        "--phantom",
        default="cshape",
        help="phantom to plan (cshape, multitarget, prostate, head_neck, or thorax: "
        "lungs and bone, planned with lung_60gy_30fx on the collapsed-cone final dose)",
    )
    p.add_argument(
        "--protocol",
        default=None,
        metavar="NAME|FILE",
        help="protocol (default: the TG-119 protocol of the phantom)",
    )
    add_planning_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    result = run_demo(
        args.out_dir,
        phantom=args.phantom,
        protocol=args.protocol,
        progress=not args.no_progress,
        **planning_kwargs(args),
    )
    print(result.summary)
    print(f"input (DICOM):  {result.input_dir}")
    print(f"plan written:   {result.out}")
    print(f"open the report: {result.out}/report.html")
    return 0
