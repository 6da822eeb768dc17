"""The plan report (one self-contained ``report.html``) and the machine-readable ``plan.json``.

``report.html`` embeds its images as base64 PNG, and its style and the few lines of script
of its slice viewer inline: it opens offline, can be mailed or archived as one file, and
loads nothing from the network.  Neither file
contains patient names or IDs: only UIDs identify the inputs.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import html
import json
import logging
import os
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .._internal.arguments import ARRAY, PATH, check_arguments, optional
from .._internal.atomic import atomic_file, refuse_existing
from ..errors import InputError
from ..evaluation import DVHCollection, dvh, quality_indices
from ..safety import IMPLICIT_LABEL
from ._colours import roi_colours
from ._plots import dvh_figure, figure_to_png_base64
from ._slices import legend_html, render_slices, slice_viewer_html
from ._tables import (
    DEFAULT_ISODOSE_PCT,
    beam_table_html,
    deliverability_html,
    dose_calculation_rows,
    isodose_lines,
    max_dose_html,
    voxel_max,
)

__all__ = ["PLAN_JSON_SCHEMA", "plan_json", "software_versions", "write_plan_json", "write_report"]

logger = logging.getLogger("rtplan.report")

#: Identifier of the plan.json layout written by :func:`plan_json`.
PLAN_JSON_SCHEMA = "rtplan.plan/1"

_VERSION_PACKAGES = ("rtplan", "numpy", "scipy", "cvxpy", "pydicom")
_UID_ATTRS = (
    "frame_of_reference_uid",
    "study_instance_uid",
    "ct_series_instance_uid",
    "structure_set_uid",
)
_TARGET_TYPES = ("PTV", "CTV", "GTV")


def software_versions() -> dict[str, str | None]:
    """Installed versions of rtplan, numpy, scipy, cvxpy and pydicom (None if absent).

    Read from package metadata, so CVXPY is not imported.
    """
    out: dict[str, str | None] = {}
    for name in _VERSION_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _jsonable(x):
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    return str(x)


def _input_uids(patient, plan_summary: Mapping[str, Any]) -> dict[str, Any]:
    uids: dict[str, Any] = {}
    if patient is not None:
        for attr in _UID_ATTRS:
            val = getattr(patient, attr, None)
            if val is not None:
                uids[attr] = str(val)
    for k, v in dict(plan_summary.get("uids", {}) or {}).items():
        uids[str(k)] = None if v is None else str(v)
    return uids


#: What the plan-record arguments of :func:`plan_json`, :func:`write_plan_json` and
#: :func:`write_report` must be.
_RECORD_ARGUMENTS = {
    "goal_table": optional("rtplan.evaluation._goals:GoalTable"),
    "dvhs": optional("collections.abc:Mapping"),
    "timings": optional("collections.abc:Mapping"),
    "plan_summary": optional("collections.abc:Mapping"),
    "patient": optional("rtplan.patient._patient:Patient"),
}


def _beams(plan_summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [dict(b) for b in plan_summary.get("beams", []) or []]


@check_arguments(**_RECORD_ARGUMENTS)
def plan_json(
    *,
    goal_table=None,
    dvhs=None,
    timings: Mapping[str, float] | None = None,
    plan_summary: Mapping[str, Any] | None = None,
    patient=None,
) -> dict[str, Any]:
    """The machine-readable plan record (a JSON-ready dict).

    Parameters
    ----------
    goal_table : rtplan.evaluation.GoalTable, optional
    dvhs : mapping of str to DVH, optional
        Default: ``goal_table.dvhs``.
    timings : mapping of str to float, optional, s
        Wall time per stage, in run order, e.g. ``{"load": 1.2, "dose": 30.5}``.
    plan_summary : mapping, optional
        Plan facts; recognised keys (all optional): ``label`` (str), ``prescription_gy``
        (float, total), ``fractions`` (int), ``machine`` (str), ``beams`` (list of mappings,
        each e.g. ``{"name", "gantry_angle_deg", "collimator_angle_deg",
        "couch_angle_deg", "mu"}`` with ``mu`` per fraction), ``uids`` (mapping of output
        UIDs, e.g. ``{"rt_plan_sop_instance_uid": ...}``), ``solver``, ``notes``,
        ``warnings`` (list of ``{"code", "message"}`` from the safety layer, written at
        the top level), ``deliverability``
        (:meth:`rtplan.delivery.Deliverability.to_dict`, written at the top level).
        Other keys are copied under ``"plan"`` as they are.
    patient : rtplan.Patient, optional
        Source of the input UIDs.  Names and IDs are never read.

    Returns
    -------
    dict
        Layout (``"schema": "rtplan.plan/1"``)::

            {
              "schema": "rtplan.plan/1",
              "created_utc": "2026-01-01T12:00:00Z",
              "versions": {"rtplan": str, "numpy": str, "scipy": str,
                           "cvxpy": str | null, "pydicom": str},
              "inputs": {"frame_of_reference_uid": str, "study_instance_uid": str,
                         "ct_series_instance_uid": str, "structure_set_uid": str | null,
                         ...plan_summary["uids"]},
              "plan": {"label": str, "prescription_gy": float, "fractions": int,
                       "machine": str, "beams": [{"name": str, "mu": float, ...}],
                       "total_mu_per_fraction": float | null,
                       "leaf_refinement": null | {"objective_before": float,
                           "objective_after": float, "objective_change_pct": float,
                           "mu_before": float, "mu_after": float (per fraction),
                           "leaf_travel_mm": {"mean": float, "max": float, "count": int},
                           "iterations": int, "evaluations": int, "message": str,
                           "solve_time_s": float, "mu_unit": str}, ...},
              "goals": [{"structure": str, "metric": str, "comparison": "<=" | ">=",
                         "level": float, "acceptable_level": float | null,
                         "unit": "Gy" | "%" | "cc" | "", "priority": int, "label": str,
                         "value": float, "status": "pass" | "acceptable" | "fail",
                         "passed": bool}, ...,
                        {... "value": null, "status": "not_evaluated", "passed": null,
                         "reason": str}],
              "goals_summary": {"n_goals": int (evaluated), "n_failed": int,
                                "all_passed": bool, "n_not_evaluated": int, "text": str},
              "reported": [{... as a goal, "status": "reported", "passed": null,
                            "within_reference": bool}],
              "warnings": [{"code": str, "message": str}],
              "deliverability": null | {"fractions": int,
                  "total_mu_per_fraction": float, "delivery_time_s": float | null,
                  "mcs": float, "ok": bool,
                  "beams": [{"number": int, "name": str, "is_arc": bool,
                             "n_control_points": int, "mu_per_fraction": float,
                             "delivery_time_s": float | null,
                             "max_leaf_speed_mm_per_s": float | null, "mcs": float,
                             "mean_aperture_area_cm2": float}],
                  "violations": [{"beam": int, "control_point": int, "limit": str,
                                  "message": str}]},
              "dvh_metrics": [{"structure": str, "volume_cc": float, "mean_gy": float,
                               "min_gy": float, "max_gy": float (D0.03cc),
                               "d98_gy": float, "d95_gy": float, "d50_gy": float,
                               "d2_gy": float}],
              "timings_s": {"<stage>": float, ..., "total": float}
            }

        Non-finite numbers become ``null``.
    """
    plan_summary = dict(plan_summary or {})
    timings = {str(k): float(v) for k, v in (timings or {}).items()}
    if timings and "total" not in timings:
        timings["total"] = float(sum(timings.values()))
    if dvhs is None and goal_table is not None:
        dvhs = goal_table.dvhs
    beams = _beams(plan_summary)
    mus = [b.get("mu") for b in beams]
    total_mu = float(sum(mus)) if beams and all(m is not None for m in mus) else None
    top_level = ("uids", "beams", "warnings", "deliverability")
    plan = {k: v for k, v in plan_summary.items() if k not in top_level}
    plan["beams"] = beams
    plan["total_mu_per_fraction"] = total_mu
    goals = goal_table.as_records() if goal_table is not None else []
    n_failed = sum(not g["passed"] for g in goals)
    n_goals = len(goals)
    if goal_table is not None:
        goals += goal_table.not_evaluated_records()
    dvh_rows = [{"structure": n, **d.summary()} for n, d in (dvhs or {}).items()]
    record = {
        "schema": PLAN_JSON_SCHEMA,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "versions": software_versions(),
        "inputs": _input_uids(patient, plan_summary),
        "plan": plan,
        "goals": goals,
        "goals_summary": {
            "n_goals": n_goals,
            "n_failed": n_failed,
            "all_passed": n_failed == 0,
            "n_not_evaluated": len(goals) - n_goals,
            "text": goal_table.summary_line() if goal_table is not None else "",
        },
        "reported": goal_table.reported_records() if goal_table is not None else [],
        "warnings": [dict(w) for w in plan_summary.get("warnings", []) or []],
        "deliverability": plan_summary.get("deliverability"),
        "dvh_metrics": dvh_rows,
        "timings_s": timings,
    }
    return _jsonable(record)


@check_arguments(path=PATH, **_RECORD_ARGUMENTS)
def write_plan_json(
    path: str | os.PathLike,
    *,
    goal_table=None,
    dvhs=None,
    timings: Mapping[str, float] | None = None,
    plan_summary: Mapping[str, Any] | None = None,
    patient=None,
    overwrite: bool = False,
) -> Path:
    """Write :func:`plan_json` to ``path`` atomically; returns the path.

    Raises
    ------
    rtplan.errors.OutputExistsError
        ``path`` exists and ``overwrite`` is false.
    """
    record = plan_json(
        goal_table=goal_table,
        dvhs=dvhs,
        timings=timings,
        plan_summary=plan_summary,
        patient=patient,
    )
    text = json.dumps(record, indent=2, allow_nan=False)
    with atomic_file(path, overwrite=overwrite) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    logger.info("plan.json written: %s", path)
    return Path(path)


# ------------------------------------------------------------------------- report
def _target_name(patient, dvhs, plan_summary) -> str | None:
    name = plan_summary.get("target")
    if name:
        return str(name)
    structures = getattr(patient, "structures", None) or {}
    for kind in _TARGET_TYPES:
        for n, s in structures.items():
            if str(getattr(s, "roi_type", "")).upper() == kind:
                return n
    for n in list(dvhs or {}) + list(structures):
        if any(n.upper().startswith(k) for k in _TARGET_TYPES):
            return n
    return None


def _centroid_mm(occ: np.ndarray, grid) -> np.ndarray:
    w = np.asarray(occ, float)
    total = w.sum()
    zz, yy, xx = np.indices(w.shape)
    idx = np.array([(zz * w).sum(), (yy * w).sum(), (xx * w).sum()]) / total
    return grid.index_to_point(idx)


def _dvh_of(dose: np.ndarray, structure, grid):
    return dvh(
        dose,
        structure.occupancy(grid),
        voxel_volume_cc=grid.voxel_volume_cc,
        name=structure.name,
        color_rgb=getattr(structure, "color_rgb", None),
    )


def _indices(dose, grid, dvhs, target, structures, rx) -> dict[str, Any] | None:
    """HI / Paddick CI / GI of the target, isodoses in the EXTERNAL structure or the grid."""
    if rx is None or target not in dvhs:
        return None
    body = next(
        (
            dvhs[n]
            for n, s in structures.items()
            if str(getattr(s, "roi_type", "")).upper() == "EXTERNAL" and n in dvhs
        ),
        None,
    )
    if body is None:
        body = dvh(
            dose,
            np.ones(dose.shape, np.float32),
            voxel_volume_cc=grid.voxel_volume_cc,
            name="dose grid",
        )
    return {
        "target": target,
        "body": body.name,
        **quality_indices(dvhs[target], body, prescription_gy=float(rx)),
    }


def _e(x: Any) -> str:
    return html.escape(str(x))


def _fmt_num(x: Any, nd: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, (float, np.floating)):
        return f"{float(x):.{nd}g}"
    return _e(x)


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;color:#222;
max-width:1200px}
h1{font-size:1.6em;margin-bottom:0.2em} h2{font-size:1.25em;border-bottom:1px solid #ccc;
padding-bottom:0.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:0.6em 0;font-size:0.92em}
th,td{border:1px solid #bbb;padding:0.25em 0.6em;text-align:right}
th{background:#eee} td:first-child{text-align:left}
caption{text-align:left;font-weight:bold;padding:0.3em 0}
.summary{font-size:1.05em;font-weight:bold;padding:0.4em 0.8em;display:inline-block}
.ok{background:#c8e6c9} .bad{background:#ffcdd2} .partial{background:#ffe0b2}
.muted{color:#666;font-size:0.85em} .maxdose{font-size:1.05em}
.viewer{display:flex;flex-wrap:wrap;gap:1em} .slice-view{margin:0}
.slice-view img{display:block;background:#000;image-rendering:pixelated}
.slice-view input{width:100%}
.legend{margin:0.5em 0} .key{margin-right:1.2em;white-space:nowrap}
.swatch{display:inline-block;width:1.6em;height:0;vertical-align:middle;margin-right:0.3em}
.swatch.roi{border-top:4px solid} .swatch.iso{border-top:2px solid}
"""


def _kv_table(rows: Sequence[tuple[str, Any]]) -> str:
    body = "".join(
        f"<tr><th style='text-align:left'>{_e(k)}</th><td style='text-align:left'>"
        f"{_fmt_num(v)}</td></tr>"
        for k, v in rows
    )
    return f"<table>{body}</table>"


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{b64}"/>'


@check_arguments(path=PATH, dose_gy=ARRAY, dose_grid="dose_engine._grid:Grid", **_RECORD_ARGUMENTS)
def write_report(
    path: str | os.PathLike,
    *,
    patient=None,
    dose_gy,
    dose_grid,
    goal_table=None,
    dvhs=None,
    timings: Mapping[str, float] | None = None,
    plan_summary: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    isodose_pct: Sequence[float] = DEFAULT_ISODOSE_PCT,
) -> Path:
    """Write the self-contained plan report ``report.html``.

    Sections: title (the protocol's full name; the RT Plan Label, at most 16 characters, is
    a row below), goal summary, every safety warning, normalisation, the global maximum
    (value, LPS position, the structures it lies in), plan facts, the dose calculation
    (algorithm, beam model file name, CT-to-density table), beams with MU per fraction,
    deliverability (per beam: MU, delivery-time estimate, maximum leaf speed, MCS, mean
    aperture area; the totals; the machine limits), the goal table (implicit goals and goals
    not evaluated included), DVH metrics, the DVH plot, a slice viewer with every axial,
    coronal and sagittal slice of the dose grid (isodose lines, structure contours, the
    maximum marked), timings, software versions and input UIDs. Structures get distinct
    colours (:func:`rtplan.report._colours.roi_colours`), the same in the DVH plot and the
    slices.

    Parameters
    ----------
    path : path-like
        Output file (``.html``); written atomically.
    patient : rtplan.Patient, optional
        Gives the CT drawn under the isodoses, the structures drawn as contours and the
        input UIDs.  Without it the slices show the dose in grey, with no contours.
    dose_gy : (Z, Y, X) ndarray of float, Gy
        Total plan dose on ``dose_grid``.
    dose_grid : dose_engine.Grid
    goal_table : rtplan.evaluation.GoalTable, optional
    dvhs : mapping of str to DVH, optional
        Curves for the DVH plot; default ``goal_table.dvhs``.
    timings : mapping of str to float, optional, s
        Wall time per stage.
    plan_summary : mapping, optional
        As for :func:`plan_json`; additionally ``protocol`` (the full name, the title),
        ``target`` (the structure whose centroid the slices show first; default: first
        PTV/CTV/GTV, else the dose maximum), ``target_levels_gy`` (target → level, Gy),
        ``dose_algorithm``, ``hu_table``, ``deliverability``.
    overwrite : bool, default False
        Replace an existing file.
    isodose_pct : sequence of float, default (50, 80, 95, 100, 107)
        Isodose lines in % of the highest prescription level; each prescription level
        gets a line too when there are several.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    rtplan.errors.InputError
        ``dose_gy`` does not match ``dose_grid``; ``isodose_pct`` holds a value that is
        not a finite number > 0.
    rtplan.errors.OutputExistsError
        ``path`` exists and ``overwrite`` is false.

    Notes
    -----
    One PNG of the DVH (matplotlib, Agg canvas) and one small palette PNG per dose-grid
    slice and view (numpy + Pillow) are embedded as base64, with a few lines of inline
    script for the sliders; the report references no network resource and no path of
    the machine it ran on.  Open it with ``#max`` (or ``#axial=K&coronal=J&sagittal=I``)
    to show those slices.
    """
    dose = np.asarray(dose_gy, dtype=float)
    if dose.shape != tuple(dose_grid.shape):
        raise InputError(
            f"`dose_gy` has shape {dose.shape} but `dose_grid` describes "
            f"{tuple(dose_grid.shape)} voxels."
        )
    refuse_existing(path, overwrite=overwrite)  # fail before spending time on plots
    plan_summary = dict(plan_summary or {})
    if dvhs is None and goal_table is not None:
        dvhs = goal_table.dvhs
    dvhs = dict(dvhs or {})
    rx = plan_summary.get("prescription_gy")
    if rx is None and goal_table is not None:
        rx = goal_table.prescription_gy
    record = plan_json(
        goal_table=goal_table,
        dvhs=dvhs,
        timings=timings,
        plan_summary=plan_summary,
        patient=patient,
    )
    plan = record["plan"]
    levels = dict(plan.get("target_levels_gy") or {})
    highest = max(levels.values()) if levels else rx
    lines = isodose_lines(highest, percent=isodose_pct, levels_gy=levels) if highest else []

    # ---- structures on the CT grid (whole contours; dose grid without a CT)
    structures = getattr(patient, "structures", None) or {}
    ct = getattr(patient, "ct", None)
    sgrid = ct.grid if ct is not None else dose_grid
    occs: dict[str, np.ndarray] = {}
    for name, s in structures.items():
        if not getattr(s, "contours", None) or not hasattr(s, "occupancy"):
            continue
        occ = np.asarray(s.occupancy(sgrid))
        if name not in dvhs:  # the DVH plot shows every structure
            try:
                dvhs[name] = _dvh_of(dose, s, dose_grid)
            except InputError as exc:  # e.g. a structure outside the dose grid
                logger.info("structure %r left out of the DVH plot: %s", name, exc)
        if occ.any():
            occs[name] = occ
    order = list(structures) + [n for n in dvhs if n not in structures]
    colours = roi_colours(
        {
            n: getattr(structures.get(n), "color_rgb", None)
            or getattr(dvhs.get(n), "color_rgb", None)
            for n in order
        }
    )
    # the report's own colours everywhere (DVH plot, metric table, slices)
    dvhs = {n: dataclasses.replace(d, color_rgb=colours[n]) for n, d in dvhs.items()}
    target = _target_name(patient, dvhs, plan_summary)
    dmax, kmax = voxel_max(dose)
    if target in occs:
        centre = _centroid_mm(occs[target], sgrid)
        centre_note = f"centroid of {target}"
    else:
        centre = dose_grid.index_to_point(np.array(kmax, float))
        centre_note = "dose maximum"
    centre = np.asarray(centre, float) + 0.0  # no "-0.0" in the text
    initial = np.clip(np.rint(dose_grid.point_to_index(centre)), 0, np.array(dose_grid.shape) - 1)

    indices = _indices(dose, dose_grid, dvhs, target, structures, rx)

    dvh_png = figure_to_png_base64(
        dvh_figure(
            {n: dvhs[n] for n in order if n in dvhs},
            prescription_gy=rx,
            colours={n: colours[n] for n in order if n in dvhs},
        )
    )
    stacks, inside = render_slices(
        dose,
        dose_grid,
        ct=ct,
        structures={n: (o, sgrid) for n, o in occs.items()},
        colours={n: colours[n] for n in occs},
        isodoses=[(gy, rgb) for gy, _, rgb in lines],
        max_index_zyx=kmax,
    )
    volume = {n: float(o.sum()) for n, o in occs.items()}
    in_structs = sorted((n for n, yes in inside.items() if yes), key=lambda n: volume[n])

    # ---- HTML
    label = plan.get("label") or "rtplan plan"
    title = plan.get("protocol") or label
    parts = [
        (
            f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{_e(title)} — rtplan report</title><style>{_CSS}</style></head><body>"
        )
    ]
    parts.append(f"<h1>{_e(title)}</h1>")
    parts.append(
        f"<p class='muted'>Generated {_e(record['created_utc'])} by rtplan "
        f"{_e(record['versions'].get('rtplan'))}. Doses are total plan doses in Gy; "
        "MU are per fraction.</p>"
    )
    if goal_table is not None:
        nf = goal_table.n_failed
        # amber, not green, when goals could not be evaluated: "all met" is then partial
        cls = "bad" if nf else ("partial" if goal_table.not_evaluated else "ok")
        parts.append(
            f"<div class='summary {cls}'>{_e(goal_table.summary_line())}"
            f"{'' if nf == 0 else f' — {nf} failed'}</div>"
        )
    for w in record["warnings"]:
        parts.append(f"<div class='summary bad warning'>WARNING: {_e(w['message'])}</div>")
    norm = plan.get("normalization_detail")
    if norm:
        parts.append(
            f"<p>Normalisation x {norm['factor']:.4f} (cap ±{norm['cap_pct']:g} %): "
            f"{_e(norm['goal'])} {_fmt_num(norm['value_before'])} before, "
            f"{_fmt_num(norm['value_after'])} after.</p>"
        )
    elif plan.get("normalization") is not None:
        parts.append(f"<p>Normalisation x {float(plan['normalization']):.4f}.</p>")
    parts.append(
        max_dose_html(
            dmax,
            dose_grid.index_to_point(np.array(kmax, float)),
            kmax,
            inside=in_structs if occs else None,
            highest_rx_gy=highest,
        )
    )
    fx = plan.get("fractions")
    rows = [
        ("Protocol", plan.get("protocol")),
        ("RT Plan Label (300A,0002)", plan.get("label")),
        (
            "Prescription",
            f"{rx:g} Gy" + (f" in {fx} fractions" if fx else "") if rx is not None else None,
        ),
        ("Machine", plan.get("machine")),
        ("Total MU per fraction", plan.get("total_mu_per_fraction")),
        (
            "Dose levels",
            ", ".join(f"{t} {lv:g} Gy" for t, lv in levels.items()) if levels else None,
        ),
    ]
    skip = {
        "label",
        "protocol",
        "prescription_gy",
        "fractions",
        "machine",
        "beams",
        "total_mu_per_fraction",
        "normalization",
    }
    rows += [
        (k.replace("_", " ").capitalize(), v)
        for k, v in plan.items()
        if k not in skip and not isinstance(v, (dict, list))
    ]
    if indices:
        rows += [
            (f"{k} ({indices['target']}; isodoses in {indices['body']})", indices[k])
            for k in ("HI", "CI", "GI")
        ]
    parts.append("<h2>Plan</h2>" + _kv_table([r for r in rows if r[1] is not None]))
    calc = dose_calculation_rows(plan)
    if calc:
        parts.append("<h2>Dose calculation</h2>" + _kv_table(calc))
    beams = plan.get("beams") or []
    if beams:
        parts.append("<h2>Beams</h2>" + beam_table_html(beams))
    if record["deliverability"]:
        parts.append("<h2>Deliverability</h2>" + deliverability_html(record["deliverability"]))
    if goal_table is not None:
        n_not = len(goal_table.not_evaluated)
        n_implicit = sum(r.goal.label.startswith(IMPLICIT_LABEL) for r in goal_table)
        parts.append(
            "<h2>Goals</h2>"
            f"<p class='muted'>{n_implicit} implicit goal(s) added by the safety layer "
            f"(labelled '{IMPLICIT_LABEL}: …'); {n_not} goal(s) not evaluated, with the "
            "reason in the Note column.</p>" + goal_table._repr_html_()
        )
    if dvhs:
        parts.append(
            "<h2>Dose-volume metrics</h2>"
            + DVHCollection(dvhs)._repr_html_()
            + "<p class='muted'>Max = D0.03cc. Partial voxels count with their "
            "occupied fraction; Dx interpolated between voxel midpoints.</p>"
        )
    parts.append(
        "<h2>Dose-volume histograms</h2>" + _img(dvh_png, "Cumulative DVH of every structure")
    )
    parts.append(
        "<h2>Dose distribution</h2><p class='muted'>Every slice of the dose grid "
        f"({' × '.join(str(n) for n in dose_grid.shape)} voxels, z × y × x, "
        f"{' × '.join(f'{s:g}' for s in dose_grid.spacing_mm[::-1])} mm); first shown "
        f"through the {_e(centre_note)} at (x, y, z) = ({centre[0]:.1f}, "
        f"{centre[1]:.1f}, {centre[2]:.1f}) mm, DICOM patient coordinates. Move a "
        "slider (or use the arrow keys on it) to scroll.</p>"
        + legend_html(
            {n: colours[n] for n in occs},
            [(lab, rgb) for _, lab, rgb in lines],
            marker=True,
        )
        + slice_viewer_html(stacks, initial_zyx=[int(i) for i in initial], max_index_zyx=kmax)
    )
    if record["timings_s"]:
        parts.append(
            "<h2>Timings</h2>"
            + _kv_table([(k, f"{v:.2f} s") for k, v in record["timings_s"].items()])
        )
    parts.append(
        "<h2>Software and inputs</h2>"
        + _kv_table(list(record["versions"].items()) + list(record["inputs"].items()))
    )
    parts.append("</body></html>")
    text = "\n".join(parts)
    with atomic_file(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    n_images = 1 + sum(len(s.png_base64) for s in stacks.values())
    logger.info("report written: %s (%d images, %.1f MB)", path, n_images, len(text) / 1e6)
    return Path(path)
