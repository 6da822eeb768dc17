"""``rtplan batch MANIFEST``: plan many patients on a Dask cluster.

The manifest (TOML with ``[[patient]]`` tables, or CSV with a header) lists ``ct_dir``,
``rtstruct``, ``protocol`` and ``out`` per patient, optionally ``map`` and ``beam_model``
(a patient's own beam-model file, overriding ``--beam-model``; relative paths are
relative to the manifest; any other key is refused).  Without ``--scheduler`` a
LocalCluster is started.  Exit status: the largest of the patients' own (0 every plan
written with its goals met and no safety warning, 1 every plan written but a goal failed
or the safety layer warned (its warnings are printed under the patient), 2/3/4/5 a patient
could not be planned: listed on stderr, nothing written for it), or 2 for a bad manifest.
"""

from __future__ import annotations

import sys

from ..planning import plan_batch, read_manifest
from ._plan import add_planning_options, planning_kwargs

__all__ = ["register"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "batch",
        help="plan many patients on a Dask cluster (needs rtplan[dask])",
        description="Plan every patient of MANIFEST (TOML [[patient]] tables or CSV with "
        "columns ct_dir, rtstruct, protocol, out) on a Dask distributed cluster.",
    )
    p.add_argument("manifest", metavar="MANIFEST", help="TOML or CSV manifest")
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="Dask scheduler address (default: start a LocalCluster)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        metavar="N",
        help="LocalCluster workers when no --scheduler is given (default 2)",
    )
    p.add_argument(
        "--processes",
        action="store_true",
        help="LocalCluster with worker processes (default: threads)",
    )
    add_planning_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    entries = read_manifest(args.manifest)
    outcomes = plan_batch(
        entries,
        scheduler=args.scheduler,
        n_workers=args.workers,
        processes=args.processes,
        **planning_kwargs(args),
    )
    bad = 0
    for o in outcomes:
        if o.error is not None:
            bad += 1
            print(f"rtplan batch: {o.out}: error: {o.error}", file=sys.stderr)
            continue
        status = "all goals met" if o.all_goals_met else f"{o.n_failed} goal(s) failed"
        if o.warnings:
            status += f", {len(o.warnings)} safety warning(s)"
        bad += o.needs_attention
        print(f"{o.out}: {status} ({o.time_s:.1f} s)")
        for w in o.warnings:
            print(f"  WARNING: {w}")
    print(
        f"{len(outcomes) - bad}/{len(outcomes)} plans written with every goal met and no "
        "safety warning"
    )
    return max((o.status for o in outcomes), default=0)
