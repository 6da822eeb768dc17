"""The commissioning report: one self-contained HTML page a physicist reads and signs.

:func:`commissioning_report_html` lays out a :class:`~dose_engine.ValidationReport` (the
model's dose along every measured scan, :func:`~dose_engine.compare_to_measured`): per field,
measured and computed PDDs and profiles (inline, crossline, diagonal; every depth) overlaid
with their difference curves, the output factors, the pass table judged by
:data:`~dose_engine._validation.TARGETS` (held-out fields marked) and the provenance (files,
date, model fingerprint).  Figures are PNG images embedded as base64 ``data:`` URIs: the
page loads nothing from the network.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io

import numpy as np

from ._measured import MeasuredData
from ._scan import field_label
from ._validation import TARGETS, Curve, ValidationReport

__all__ = ["commissioning_report_html"]

#: Column of the pass table → (heading, number format).
_COLUMNS = {
    "pdd_local_max_pct": ("PDD beyond dmax, max local |Δ| %", "{:.2f}"),
    "dmax_diff_mm": ("dmax Δ mm", "{:+.2f}"),
    "width_diff_mm": ("field width Δ mm", "{:+.2f}"),
    "penumbra_diff_mm": ("80–20 % penumbra Δ mm", "{:+.2f}"),
    "gamma_min_pass_pct": ("gamma 2 %/2 mm pass %", "{:.1f}"),
    "output_factor_pct": ("output factor Δ %", "{:+.2f}"),
    "absolute_dose_pct": ("absolute dose Δ %", "{:+.2f}"),
}
_CURVE_NAMES = {
    "PDD": "PDD",
    "CROSSPLANE_PROFILE": "crossline profiles",
    "INPLANE_PROFILE": "inline profiles",
    "DIAGONAL_PROFILE": "diagonal profiles",
}
_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #111; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.5em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.fail td { background: #fdd; } tr.heldout td:first-child { font-style: italic; }
.pass { color: #060; font-weight: bold; } .fail { color: #a00; font-weight: bold; }
#provenance td { text-align: left; }
img { max-width: 100%; } .sign { margin-top: 3em; }
"""


def _png(fig) -> str:
    """``<img>`` of a matplotlib figure as an embedded PNG (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def _curve_figure(title: str, curves: list[tuple[str, Curve]]) -> str:
    """Measured (points) and computed (line) curves overlaid, differences below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(7.5, 5.0), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    for i, (label, c) in enumerate(curves):
        colour = f"C{i % 10}"
        top.plot(c.position_mm, c.measured_pct, ".", ms=3, color=colour, label=f"{label} measured")
        top.plot(c.calc_position_mm, c.calc_pct, "-", lw=1, color=colour, label=f"{label} model")
        bottom.plot(c.position_mm, c.difference_pct(), "-", lw=1, color=colour)
    xlabel = "depth (mm)" if curves[0][1].scan.curve == "PDD" else "off-axis position (mm)"
    top.set_title(title)
    top.set_ylabel("relative dose (%)")
    top.legend(fontsize=6, ncol=2)
    top.grid(alpha=0.3)
    bottom.axhline(0.0, color="k", lw=0.5)
    for level in (-2.0, 2.0):
        bottom.axhline(level, color="r", lw=0.5, ls="--")
    bottom.set_ylabel("model − meas. (%)")
    bottom.set_xlabel(xlabel)
    bottom.grid(alpha=0.3)
    return _png(fig)


def _output_factor_figure(report: ValidationReport, held_out: set[str]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(report.output_factor)
    calc = np.array([report.output_factor[k][0] for k in labels])
    meas = np.array([report.output_factor[k][1] for k in labels])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 4.5), sharex=True)
    at = np.arange(len(labels))
    top.plot(at, meas, "o", label="measured")
    top.plot(at, calc, "x", label="model")
    top.set_ylabel("output factor")
    top.set_title("Output factors (relative to the reference field)")
    top.legend(fontsize=7)
    top.grid(alpha=0.3)
    bottom.bar(at, 100 * (calc / meas - 1), color=["C1" if k in held_out else "C0" for k in labels])
    bottom.axhline(0.0, color="k", lw=0.5)
    bottom.set_ylabel("model − meas. (%)")
    bottom.set_xticks(at, [k + (" *" if k in held_out else "") for k in labels], rotation=45)
    bottom.grid(alpha=0.3)
    return _png(fig)


def _cell(key: str, value) -> str:
    if value is None or key not in _COLUMNS:
        return "<td>–</td>"
    return f"<td>{_COLUMNS[key][1].format(value)}</td>"


def _pass_table(rows: list[dict], held_out_of) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h, _ in _COLUMNS.values())
    lines = [f"<table id='pass-table'><tr><th>scan</th>{head}<th>held out</th><th>result</th></tr>"]
    for row in rows:
        held = held_out_of(row)
        classes = " ".join(c for c, on in (("fail", row["failed"]), ("heldout", held)) if on)
        result = (
            "<td class='fail'>FAIL: " + html.escape("; ".join(row["failed"])) + "</td>"
            if row["failed"]
            else "<td class='pass'>pass</td>"
        )
        cells = "".join(_cell(k, row["values"].get(k)) for k in _COLUMNS)
        lines.append(
            f"<tr class='{classes}' data-kind='{html.escape(row['kind'])}'>"
            f"<td>{html.escape(row['kind'])}: {html.escape(row['label'])}</td>{cells}"
            f"<td>{'held out' if held else ''}</td>{result}</tr>"
        )
    lines.append("</table>")
    return "\n".join(lines)


def _targets_text(tolerances: dict) -> str:
    t = tolerances
    return (
        f"depth dose beyond dmax within {t['pdd_local_max_pct']:g} % (local), dmax within "
        f"{t['dmax_diff_mm']:g} mm; profiles: field width and 80–20 % penumbra within "
        f"{t['width_diff_mm']:g} / {t['penumbra_diff_mm']:g} mm, gamma 2 %/2 mm (global, 10 % "
        f"cut-off) pass rate ≥ {t['gamma_min_pass_pct']:g} %; output factors within "
        f"{t['output_factor_pct']:g} % ({t.get('small_field_output_factor_pct', 0):g} % for a "
        f"side below 30 mm); absolute dose within {t['absolute_dose_pct']:g} %."
    )


def commissioning_report_html(
    report: ValidationReport,
    measured: MeasuredData,
    params: dict,
    *,
    fingerprint: str,
    model_file: str,
    held_out_mm: tuple[tuple[float, float], ...] = (),
    tolerances: dict | None = None,
    when: _dt.datetime | None = None,
) -> str:
    """The commissioning report of a fitted model, as one self-contained HTML page.

    Parameters
    ----------
    report : ValidationReport
        The model against every scan of ``measured`` (with its ``curves``).
    measured : MeasuredData
        The whole data set (fitted and held-out scans).
    params : dict
        The model file's content (name, energy, provenance with the fit residuals).
    fingerprint : str
        :meth:`BeamModel.fingerprint` of the written model.
    model_file : str
        Name of the model file the report sits beside.
    held_out_mm : tuple of (x_mm, y_mm)
        Fields left out of the fit (validated only); marked in the table and figures.
    tolerances : dict, optional
        Default :data:`~dose_engine._validation.TARGETS`.
    when : datetime, optional
        Date of the report (default now, UTC).
    """
    tol = TARGETS if tolerances is None else tolerances
    held_labels = {field_label(f) for f in held_out_mm}
    rows = report.rows(tol)

    def held_out_of(row) -> bool:
        curve = report.curves.get(row["label"])
        field = curve.scan.field if curve is not None else None
        if row["kind"] == "output factor":
            return row["label"] in held_labels
        return field is not None and field_label(field) in held_labels

    failed = [r for r in rows if r["failed"]]
    when = when or _dt.datetime.now(_dt.timezone.utc)
    prov = params.get("provenance", {})
    residuals = prov.get("residuals", {})
    files = sorted({s.source.split(", scan ")[0] for s in measured.scans})  # one per file
    verdict = (
        f"<p class='fail' id='verdict'>{len(failed)} of {len(rows)} comparisons outside the "
        "targets: " + html.escape(", ".join(r["label"] for r in failed)) + "</p>"
        if failed
        else f"<p class='pass' id='verdict'>All {len(rows)} comparisons within the targets.</p>"
    )
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Commissioning report: {html.escape(str(params.get('name', model_file)))}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Commissioning report: {html.escape(str(params.get('name', model_file)))}</h1>",
        verdict,
        "<h2>Provenance</h2><table id='provenance'>",
        f"<tr><td>model file</td><td>{html.escape(model_file)}</td></tr>",
        f"<tr><td>model fingerprint (sha256)</td><td id='fingerprint'>{fingerprint}</td></tr>",
        f"<tr><td>report date (UTC)</td><td>{when.strftime('%Y-%m-%d %H:%M')}</td></tr>",
        f"<tr><td>energy</td><td>{params.get('energy_mv')} MV</td></tr>",
        f"<tr><td>SAD</td><td>{params.get('sad_mm'):g} mm</td></tr>",
        f"<tr><td>measurements</td><td>{html.escape(measured.source)}</td></tr>",
        f"<tr><td>table</td><td>{html.escape(measured.table)}</td></tr>",
        "<tr><td>scan files</td><td>" + "<br>".join(html.escape(f) for f in files) + "</td></tr>",
        "<tr><td>held out of the fit</td><td>"
        + (html.escape(", ".join(sorted(held_labels))) or "none")
        + "</td></tr>",
        f"<tr><td>fit converged</td><td>{residuals.get('converged')}</td></tr>",
        "<tr><td>software</td><td>"
        + html.escape(", ".join(f"{k} {v}" for k, v in prov.get("software", {}).items()))
        + "</td></tr></table>",
        "<h2>Pass table</h2>",
        (
            f"<p>Targets: {html.escape(_targets_text(tol))} Held-out fields (italic) were "
            "not used by the fit.</p>"
        ),
        _pass_table(rows, held_out_of),
    ]
    by_field: dict[tuple[float, float], dict[str, list]] = {}
    for label, curve in report.curves.items():
        by_field.setdefault(curve.scan.field, {}).setdefault(curve.scan.curve, []).append(
            (label, curve)
        )
    parts.append("<h2>Measured and computed curves</h2>")
    for field in sorted(by_field):
        tag = " (held out of the fit)" if field_label(field) in held_labels else ""
        parts.append(f"<h3>{field_label(field)} mm{tag}</h3>")
        for kind in ("PDD", "CROSSPLANE_PROFILE", "INPLANE_PROFILE", "DIAGONAL_PROFILE"):
            curves = by_field[field].get(kind)
            if not curves:
                continue
            named = [
                (f"SSD {c.scan.ssd_mm:g}" if kind == "PDD" else f"{c.scan.depth_mm:g} mm", c)
                for _, c in sorted(
                    curves, key=lambda lc: (lc[1].scan.ssd_mm, lc[1].scan.depth_mm or 0)
                )
            ]
            parts.append(_curve_figure(f"{field_label(field)} mm {_CURVE_NAMES[kind]}", named))
    if report.output_factor:
        parts.append("<h2>Output factors</h2>")
        parts.append(_output_factor_figure(report, held_labels))
    parts.append(
        "<div class='sign'><p>Reviewed and accepted for clinical use by: "
        "____________________________ &nbsp; Date: ____________</p></div></body></html>"
    )
    return "\n".join(parts)
