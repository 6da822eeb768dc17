"""HTML tables and statements of the report: beams (MU per fraction), deliverability, the
global maximum, the dose calculation (algorithm, beam model, CT-to-density table) and
isodose levels."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

import numpy as np

from ..errors import InputError
from ._colours import ISODOSE_COLOURS

__all__ = [
    "DEFAULT_ISODOSE_PCT",
    "beam_table_html",
    "deliverability_html",
    "dose_calculation_rows",
    "isodose_lines",
    "max_dose_html",
    "voxel_max",
]

#: Isodose lines drawn by default, % of the highest prescription level.
DEFAULT_ISODOSE_PCT = (50.0, 80.0, 95.0, 100.0, 107.0)

#: Two isodose levels closer than this are drawn as one line, Gy.
_SAME_LEVEL_GY = 0.05


def _e(x: Any) -> str:
    return html.escape(str(x))


def _num(x: Any, fmt: str) -> str:
    return "–" if x is None else format(float(x), fmt)


def isodose_lines(
    highest_rx_gy: float,
    *,
    percent: Sequence[float] = DEFAULT_ISODOSE_PCT,
    levels_gy: Mapping[str, float] | None = None,
) -> list[tuple[float, str, tuple[int, int, int]]]:
    """The isodose lines to draw: ``(level_gy, label, rgb)``, lowest first.

    Parameters
    ----------
    highest_rx_gy : float, Gy
        The highest prescription level (total dose); ``percent`` is relative to it.
    percent : sequence of float, %
        Isodose levels in % of ``highest_rx_gy``.
    levels_gy : mapping of str to float, optional, Gy
        Target → its prescription level.  When the protocol has several distinct levels,
        each gets a line too (labelled with its targets); a level within 0.05 Gy of a
        percentage line shares that line.

    Raises
    ------
    rtplan.errors.InputError
        A value of ``percent`` is not a finite number > 0 (named).
    """
    for p in percent:
        try:
            ok = bool(np.isfinite(float(p)) and float(p) > 0)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InputError(
                f"`isodose_pct` must hold finite percentages > 0 of the highest "
                f"prescription level; got {p!r}."
            )
    lines: dict[float, list[str]] = {}

    def add(gy: float, label: str) -> None:
        for k in lines:
            if abs(k - gy) < _SAME_LEVEL_GY:
                lines[k].append(label)
                return
        lines[gy] = [label]

    for p in percent:
        gy = float(p) / 100.0 * highest_rx_gy
        add(gy, f"{float(p):g} % ({gy:.4g} Gy)")
    levels = dict(levels_gy or {})
    if len(set(levels.values())) > 1:
        for lv in sorted(set(levels.values())):
            who = ", ".join(t for t, v in levels.items() if v == lv)
            add(float(lv), f"{lv:g} Gy prescription ({who})")
    out = []
    for i, gy in enumerate(sorted(lines)):
        rgb = ISODOSE_COLOURS[min(i, len(ISODOSE_COLOURS) - 1)]
        out.append((gy, " = ".join(lines[gy]), rgb))
    return out


def beam_table_html(beams: Sequence[Mapping[str, Any]]) -> str:
    """One row per beam: name, number, gantry/collimator/couch angles (IEC 61217, °),
    segments and MU per fraction ((300A,0086) *BeamMeterset*), and their totals."""
    rows = []
    for b in beams:
        cells = [
            _e(b.get("name", "")),
            _e(b.get("number", "–")),
            _num(b.get("gantry_angle_deg"), "g"),
            _num(b.get("collimator_angle_deg"), "g"),
            _num(b.get("couch_angle_deg"), "g"),
            _e(b.get("segments", "–")),
            _num(b.get("mu"), ".1f"),
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    mus = [b.get("mu") for b in beams]
    segs = [b.get("segments") for b in beams]
    total_mu = _num(sum(mus), ".1f") if all(m is not None for m in mus) else "–"
    total_seg = str(sum(segs)) if all(s is not None for s in segs) else "–"
    rows.append(
        f"<tr class='total'><td><b>Total</b></td><td></td><td></td><td></td><td></td>"
        f"<td><b>{total_seg}</b></td><td><b>{total_mu}</b></td></tr>"
    )
    head = (
        "<tr><th>Beam</th><th>Number</th><th>Gantry (°)</th><th>Collimator (°)</th>"
        "<th>Couch (°)</th><th>Segments</th><th>MU per fraction</th></tr>"
    )
    return (
        "<table class='beams'><caption>Beams (IEC 61217 angles; MU per fraction, the "
        "RT-PLAN's BeamMeterset)</caption>"
        f"<thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
    )


def deliverability_html(record: Mapping[str, Any]) -> str:
    """Per beam: MU per fraction, delivery-time estimate, maximum leaf speed, modulation
    complexity score and mean aperture area; the plan's totals; the machine limits.

    Parameters
    ----------
    record : mapping
        :meth:`rtplan.delivery.Deliverability.to_dict` (plan.json ``deliverability``).
    """
    rows = []
    for b in record["beams"]:
        cells = [
            _e(b["name"]),
            _e(b["number"]),
            "arc" if b["is_arc"] else "fixed",
            _e(b["n_control_points"]),
            _num(b["mu_per_fraction"], ".2f"),
            _num(b["delivery_time_s"], ".1f"),
            _num(b["max_leaf_speed_mm_per_s"], ".1f"),
            _num(b["mcs"], ".3f"),
            _num(b["mean_aperture_area_cm2"], ".1f"),
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    total = [
        "<b>Total</b>",
        "",
        "",
        "",
        f"<b>{_num(record['total_mu_per_fraction'], '.2f')}</b>",
        f"<b>{_num(record['delivery_time_s'], '.1f')}</b>",
        "",
        f"<b>{_num(record['mcs'], '.3f')}</b>",
        "",
    ]
    rows.append("<tr class='total'>" + "".join(f"<td>{c}</td>" for c in total) + "</tr>")
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "Beam",
            "Number",
            "Type",
            "Control points",
            "MU per fraction",
            "Delivery time (s)",
            "Max leaf speed (mm/s)",
            "MCS",
            "Mean aperture (cm²)",
        )
    )
    n_bad = len(record["violations"])
    limits = (
        "Every limit of the machine holds."
        if record["ok"]
        else f"{n_bad} violation(s) of the machine's limits: see the warning above; "
        "plan.json ('deliverability') lists every one."
    )
    return (
        "<table class='beams deliverability'><caption>Deliverability per fraction "
        "(delivery time: beam on at the machine's dose rate plus leaf travel between "
        "control points, beam changes excluded; a fixed beam's leaves move with the beam "
        "off, at the machine's leaf speed; MCS: modulation complexity score, McNiven et al. "
        "2010, 1 = open fields, MU-weighted over the plan in the total)</caption>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f"<p class='{'muted' if record['ok'] else 'bad'}'>{limits}</p>"
    )


def max_dose_html(
    value_gy: float,
    point_mm: Sequence[float],
    voxel_zyx: Sequence[int],
    *,
    inside: Sequence[str] | None,
    highest_rx_gy: float | None,
) -> str:
    """The global maximum line: value (and % of the highest prescription), position in
    DICOM patient coordinates (LPS, mm), dose-grid voxel, structures containing it."""
    x, y, z = (float(v) + 0.0 for v in point_mm)
    pct = (
        f" ({100.0 * value_gy / highest_rx_gy:.1f} % of {highest_rx_gy:g} Gy)"
        if highest_rx_gy
        else ""
    )
    if inside is None:
        where = "no structures given"
    elif inside:
        where = "inside " + ", ".join(_e(n) for n in inside)
    else:
        where = "outside every structure"
    k = ", ".join(str(int(i)) for i in voxel_zyx)
    return (
        f"<p class='maxdose'>Global maximum (voxel): <b>{value_gy:.2f} Gy</b>{pct} at "
        f"(x, y, z) = ({x:.1f}, {y:.1f}, {z:.1f}) mm (DICOM patient LPS), dose-grid voxel "
        f"[z, y, x] = [{k}]; {where}. Marked + on its slices.</p>"
    )


def _file_name(path: Any) -> str | None:
    """The file name of a recorded path (never the folder of the machine it ran on)."""
    return None if path is None else PurePath(str(path)).name


def dose_calculation_rows(plan: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Rows stating how the dose was computed, from plan.json's ``plan`` record:
    ``dose_algorithm``, ``beam_model``, ``mlc_parameters`` and ``hu_table``."""
    rows = []
    alg = plan.get("dose_algorithm")
    if isinstance(alg, Mapping):
        quantity = alg.get("dose_quantity")
        selection = alg.get("selection")
        reason = selection.get("reason") if isinstance(selection, Mapping) else None
        rows.append(
            (
                "Dose algorithm",
                (
                    f"{alg.get('name')} ({alg.get('engine')} {alg.get('version')})"
                    + (f", {quantity}" if quantity else "")
                    + f": {alg.get('description')}"
                    + (f". Chosen: {reason}" if reason else "")
                ),
            )
        )
    model = plan.get("beam_model")
    if isinstance(model, Mapping):
        fp = str(model.get("fingerprint") or "")[:12]
        beam = f"{model['beam']}, " if model.get("beam") else ""
        rows.append(
            (
                "Beam model",
                (
                    f"{model.get('name')} ({beam}every beam; file "
                    f"{_file_name(model.get('file'))}, SAD "
                    f"{_num(model.get('sad_mm'), 'g')} mm, fingerprint {fp}…)"
                ),
            )
        )
    mlc = plan.get("mlc_parameters")
    if isinstance(mlc, Mapping):
        rows.append(
            (
                "MLC and jaws",
                (
                    f"leaf transmission {_num(mlc.get('transmission'), 'g')}, dosimetric leaf gap "
                    f"{_num(mlc.get('dosimetric_leaf_gap_mm'), 'g')} mm, interleaf leakage "
                    f"{_num(mlc.get('interleaf_leakage'), 'g')}, tongue-and-groove "
                    f"{_num(mlc.get('tongue_and_groove_mm'), 'g')} mm, jaw transmission "
                    f"{_num(mlc.get('jaw_transmission'), 'g')}, head-scatter heights (source "
                    f"to leaves / X / Y jaws) {_num(mlc.get('source_to_mlc_mm'), 'g')} / "
                    f"{_num(mlc.get('source_to_x_jaws_mm'), 'g')} / "
                    f"{_num(mlc.get('source_to_y_jaws_mm'), 'g')} mm "
                    f"(machine {mlc.get('machine')}; "
                    f"from the beam model: {', '.join(mlc.get('from_beam_model') or []) or 'none'})"
                ),
            )
        )
    corrections = plan.get("corrections")
    if isinstance(corrections, list) and corrections:
        rows.append(("Final-dose correction", final_dose_correction_text(corrections)))
    hu = plan.get("hu_table")
    if isinstance(hu, Mapping):
        quantity = str(hu.get("quantity", "relative_electron_density")).replace("_", " ")
        pairs = ", ".join(
            f"{h:g} HU → {r:g}"
            for h, r in zip(hu.get("hu", []), hu.get("relative_electron_density", []), strict=True)
        )
        rows.append(
            (
                "CT to density table",
                (
                    f"file {_file_name(hu.get('file'))} ({quantity}, piecewise linear, "
                    f"clamped at the ends): {pairs}. Source: {hu.get('source')}"
                ),
            )
        )
    return rows


def final_dose_correction_text(corrections: Sequence[Mapping[str, Any]]) -> str:
    """One line on plan.json's ``corrections``: goals met per pass (before and after
    normalisation), how far each loop moved the target dose, how many hot-spot voxels
    it optimised as rows of their own, why the loop stopped early and which pass was kept."""
    passes = []
    for c in corrections:
        text = (
            f"pass {c.get('loop')}: {c.get('goals_met')}/{c.get('n_goals')} goals "
            f"({c.get('goals_met_normalized')} normalised)"
        )
        if "target_max_abs_change_gy" in c:
            text += (
                f", target dose moved max {_num(c.get('target_max_abs_change_gy'), '.2f')} "
                f"mean {_num(c.get('target_mean_abs_change_gy'), '.2f')} Gy "
                f"(correction max {_num(c.get('target_max_abs_correction_gy'), '.2f')} Gy)"
            )
        if c.get("hotspot_voxels"):
            text += f", {c['hotspot_voxels']} hot-spot voxels as rows"
        if c.get("stopped"):
            text += f", loop stopped: {c['stopped']}"
        if c.get("kept"):
            text += " [kept]"
        passes.append(text)
    return (
        "re-optimised on the final dose, d = D x + (d_final - D x0); "
        + "; ".join(passes)
        + " (goals on the final dose before normalisation)"
    )


def voxel_max(dose: np.ndarray) -> tuple[float, tuple[int, int, int]]:
    """The largest voxel dose and its ``[z, y, x]`` index (the first in C order on a tie)."""
    k = np.unravel_index(int(np.argmax(dose)), dose.shape)
    return float(dose[k]), tuple(int(i) for i in k)  # type: ignore[return-value]
