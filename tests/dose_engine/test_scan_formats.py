"""Scan-file readers (W2CAD, OmniPro RFA300 ASCII, .mcc), the X/Y output-factor table and
the MLC entries of ``commissioning.toml``.

- Layout fixtures (``data/``, see its README): the annotated W2CAD and RFA300 samples of
  BistroMath, read back field, depth, axis, energy and point count.
- Round trip: one synthetic scan set (a perturbed shipped model, PDDs, in/cross-plane and
  diagonal profiles) written as .mcc, W2CAD and OmniPro ASCII by the writers below; the
  three readers must return the same curves (an independent check of each reader's axes,
  depth sign and units against the .mcc reader).
- End to end: ``python -m dose_engine.fit`` on W2CAD files alone, with an X≠Y output-factor
  table and MLC entries, writes a model ``load_beam_model`` reads; the fit recovers the
  focal-source width the data were generated with and validates the diagonal profiles.
- Bad files: refused with the file, the line and what was expected; nothing written.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import numpy as np
import pytest

from dose_engine import (
    Beam,
    BeamModel,
    BeamModelError,
    MeasuredScan,
    compare_to_measured,
    field_dose,
    load_beam_model,
    read_measured_data,
    read_omnipro_ascii,
    read_output_factor_table,
    read_scan_file,
    read_w2cad,
)
from dose_engine._commission_cli import main
from dose_engine._fit import _dose
from dose_engine._validation import TARGETS, _compare_profile, water_phantom

DATA = Path(__file__).parent / "data"
SSD_MM = 1000.0
SOURCE_SIGMA_X_MM = 3.2  # the shipped model has 2.16 mm
FIELDS_MM = [(30.0, 30.0), (60.0, 60.0), (150.0, 100.0)]
DEPTHS_MM = (16.0, 50.0, 150.0)
DIAGONAL_DEPTH_MM = 50.0
OF_SIDES_MM = (30.0, 60.0, 100.0, 150.0)
SQRT_HALF = math.sqrt(0.5)


# ---------------------------------------------------------------- synthetic clinic
def _clinic_model() -> BeamModel:
    params = copy.deepcopy(load_beam_model().parameters)
    params["source_sigma_mm"][0] = SOURCE_SIGMA_X_MM
    return BeamModel(params)


def _points(model, field):
    """``[(kind, depth, (n, 4) points x y z reading)]`` of one field: PDD, crossplane and
    inplane profiles at :data:`DEPTHS_MM` and (square fields) a diagonal at 50 mm."""
    depth = np.concatenate([np.arange(0.5, 30.0, 1.0), np.arange(30.0, 300.1, 5.0)])
    zero = np.zeros_like(depth)
    out = [
        ("PDD", None, np.column_stack([zero, zero, depth, _dose(model, SSD_MM, field, depth, 0.0)]))
    ]
    for d in DEPTHS_MM:
        half = max(field) / 2 * (SSD_MM + d) / 1000.0 + 40.0
        s = np.arange(-half, half + 0.01, 3.0)
        z, o = np.full_like(s, d), np.zeros_like(s)
        out.append(("X", d, np.column_stack([s, o, z, _dose(model, SSD_MM, field, d, s, 0.0)])))
        out.append(("Y", d, np.column_stack([o, s, z, _dose(model, SSD_MM, field, d, 0.0, s)])))
    if field[0] == field[1]:
        d = DIAGONAL_DEPTH_MM
        r = np.arange(-(field[0] * 0.75 + 40.0), field[0] * 0.75 + 40.01, 3.0)
        x = r * SQRT_HALF
        dose = _dose(model, SSD_MM, field, d, x, x)
        out.append(("D", d, np.column_stack([x, x, np.full_like(r, d), dose])))
    return out


def write_w2cad(path: Path, field, scans) -> None:
    """Write ``_points`` output as a W2CAD file (readings in % of each scan's maximum)."""
    lines = [f"$NUMS {len(scans):03d}"]
    for kind, depth, pts in scans:
        type_, axis = {
            "PDD": ("OPD", "Z"),
            "X": ("OPP", "X"),
            "Y": ("OPP", "Y"),
            "D": ("DPR", "D"),
        }[kind]
        lines += ["$STOM", "# Comment: synthetic", "%VERSION 02", "%DATE 05-12-2026", "%DETY CHA"]
        lines += ["%BMTY PHO", f"%FLSZ {field[0]:03.0f}*{field[1]:03.0f}", f"%TYPE {type_}"]
        lines += [f"%AXIS {axis}", f"%PNTS {len(pts)}", "%STEP 030", f"%SSD {SSD_MM:.0f}"]
        if depth is not None:
            lines.append(f"%DPTH {depth:03.0f}")
        value = 100.0 * pts[:, 3] / pts[:, 3].max()
        lines += [
            f"<{x:+08.3f} {y:+08.3f} {z:+08.3f} {v:+08.3f}>"
            for (x, y, z, _), v in zip(pts, value, strict=True)
        ]
        lines.append("$ENOM")
    path.write_text("\r\n".join([*lines, "$ENOF"]) + "\r\n")


def write_omnipro(path: Path, field, scans) -> None:
    """Write ``_points`` output as an OmniPro RFA300 ASCII file (depth negative downwards)."""
    lines = [
        f":MSR \t{len(scans)}\t # No. of measurement in file",
        ":SYS BDS 0 # Beam Data Scanner System",
    ]
    for i, (kind, depth, pts) in enumerate(scans, 1):
        scn = {"PDD": "DPT", "X": "PRO", "Y": "PRO", "D": "DIA"}[kind]
        lines += ["#", f"# Measurement number \t{i}", "#", "%VNR 1.0", "%MOD \tRAT", "%TYP \tSCN"]
        lines += [f"%SCN \t{scn}", "%FLD \tION", f"%FSZ \t{field[0]:.0f}\t{field[1]:.0f}"]
        lines += ["%BMT \tPHO\t    6.0", f"%SSD \t{SSD_MM:.0f}", "%WEG \t0", f"%PTS \t{len(pts)}"]
        lines.append(f"%PRD \t{0 if depth is None else depth * 10:.0f}")
        lines += [f"= \t{x:8.3f}\t{y:8.3f}\t{-z:8.3f}\t{v:.7g}" for x, y, z, v in pts]
        lines.append(":EOM  # End of Measurement")
    path.write_text("\n".join([*lines, ":EOF # End of File"]) + "\n", encoding="latin-1")


def write_mcc(path: Path, field, scans) -> None:
    """Write the non-diagonal scans of ``_points`` output as a PTW .mcc file."""
    blocks = []
    for i, (kind, depth, pts) in enumerate([s for s in scans if s[0] != "D"], 1):
        curve = {"PDD": "PDD", "X": "CROSSPLANE_PROFILE", "Y": "INPLANE_PROFILE"}[kind]
        pos = pts[:, {"PDD": 2, "X": 0, "Y": 1}[kind]]
        head = {"ISOCENTER": "1000.00", "ENERGY": "6.00", "SSD": f"{SSD_MM:.2f}"}
        head |= {"FIELD_INPLANE": f"{field[1]:.2f}", "FIELD_CROSSPLANE": f"{field[0]:.2f}"}
        head["SCAN_CURVETYPE"] = curve
        if depth is not None:
            head["SCAN_DEPTH"] = f"{depth:.2f}"
        rows = "".join(f"\t\t\t{p:.2f}\t\t{v:.6E}\n" for p, v in zip(pos, pts[:, 3], strict=True))
        text = "".join(f"\t\t{k}={v}\n" for k, v in head.items())
        blocks.append(
            f"\tBEGIN_SCAN  {i}\n{text}\t\tBEGIN_DATA\n{rows}\t\tEND_DATA\n\tEND_SCAN  {i}\n"
        )
    path.write_text(f"BEGIN_SCAN_DATA\n\tFORMAT=CC-Export V1.9\n{''.join(blocks)}END_SCAN_DATA\n")


def _name(field) -> str:
    return f"6X_{field[0]:g}x{field[1]:g}"


@pytest.fixture(scope="module")
def clinic_files(tmp_path_factory):
    """The synthetic scan set as .mcc, W2CAD (.asc) and OmniPro (.asc) files."""
    folder = tmp_path_factory.mktemp("formats")
    model = _clinic_model()
    out = {"mcc": [], "w2cad": [], "omnipro": []}
    for f in FIELDS_MM:
        scans = _points(model, f)
        for fmt, writer, name in (
            ("mcc", write_mcc, f"{_name(f)}.mcc"),
            ("w2cad", write_w2cad, f"{_name(f)}_w2cad.asc"),
            ("omnipro", write_omnipro, f"{_name(f)}_omnipro.asc"),
        ):
            writer(folder / name, f, scans)
            out[fmt].append(folder / name)
    return out


# ---------------------------------------------------------------- published layouts
def test_w2cad_layout_of_the_published_sample():
    scans = read_w2cad(DATA / "w2cad_layout_bistromath.asc")
    assert [s.curve for s in scans] == ["CROSSPLANE_PROFILE", "PDD", "DIAGONAL_PROFILE"]
    prof, pdd, diag = scans
    assert prof.field == (30.0, 30.0) and prof.ssd_mm == 1000.0 and prof.depth_mm == 15.0
    assert prof.position_mm[[0, -1]].tolist() == [-65.2, 65.4] and prof.position_mm.size == 9
    assert prof.offaxis_mm == 0.0 and prof.energy_mv is None
    assert pdd.depth_mm is None and pdd.position_mm[[0, -1]].tolist() == [0.0, 300.0]
    assert np.interp(15.0, pdd.position_mm, pdd.value) == 100.0
    assert diag.depth_mm == 50.0 and diag.direction == pytest.approx((SQRT_HALF, SQRT_HALF))
    # points written at 0.1 mm: (28.3, 28.3) is 40.02 mm from the axis
    assert diag.position_mm[[0, -1]] == pytest.approx([-40.0, 40.0], abs=0.05)


def test_omnipro_layout_of_the_published_sample():
    (scan,) = read_omnipro_ascii(DATA / "omnipro_layout_bistromath.asc")
    assert scan.curve == "INPLANE_PROFILE" and scan.field == (400.0, 400.0)
    assert scan.depth_mm == 50.0 and scan.ssd_mm == 1000.0 and scan.energy_mv == 6.0
    assert scan.position_mm.size == 11 and scan.position_mm[[0, -1]].tolist() == [-210.0, 210.0]
    assert np.all(np.diff(scan.position_mm) > 0)  # written from +210 down to -210
    assert scan.value[-1] == 99.9  # the sample's first point, now last


# ---------------------------------------------------------------- round trip
def test_three_formats_give_the_same_curves(clinic_files):
    by_format = {
        fmt: [s for p in paths for s in read_scan_file(p)] for fmt, paths in clinic_files.items()
    }
    assert len(by_format["w2cad"]) == len(by_format["omnipro"]) == 3 * 7 + 2
    assert sum(s.curve == "DIAGONAL_PROFILE" for s in by_format["w2cad"]) == 2
    for other in ("w2cad", "omnipro"):
        same = [s for s in by_format[other] if s.curve != "DIAGONAL_PROFILE"]
        assert len(same) == len(by_format["mcc"])
        for a, b in zip(by_format["mcc"], same, strict=True):
            assert (a.curve, a.field, a.ssd_mm, a.depth_mm) == (
                b.curve,
                b.field,
                b.ssd_mm,
                b.depth_mm,
            )
            assert b.position_mm == pytest.approx(a.position_mm, abs=0.006)
            assert b.value / b.value.max() == pytest.approx(a.value / a.value.max(), abs=2e-5)
    w2, omni = (
        [s for s in by_format[k] if s.curve == "DIAGONAL_PROFILE"] for k in ("w2cad", "omnipro")
    )
    for a, b in zip(w2, omni, strict=True):
        assert a.direction == pytest.approx((SQRT_HALF, SQRT_HALF), abs=1e-4)
        assert b.position_mm == pytest.approx(a.position_mm, abs=0.01)
        assert b.value / b.value.max() == pytest.approx(a.value / a.value.max(), abs=2e-5)
        # the reading is the model's dose along the diagonal, independently of the reader
        model = _clinic_model()
        x = a.position_mm * SQRT_HALF
        dose = _dose(model, SSD_MM, a.field, a.depth_mm, x, x)
        assert a.value / a.value.max() == pytest.approx(dose / dose.max(), abs=2e-4)


def test_unknown_file_is_refused_with_the_formats(tmp_path):
    bad = tmp_path / "notes.asc"
    bad.write_text("Beam data for linac 2\n1 2 3\n")
    with pytest.raises(BeamModelError, match=r"notes\.asc: not a recognised scan file; .*W2CAD"):
        read_scan_file(bad)


# ---------------------------------------------------------------- bad files
def _one_scan(tmp_path, edit) -> Path:
    model = _clinic_model()
    scans = [s for s in _points(model, (60.0, 60.0)) if s[0] in ("PDD", "X")][:2]
    path = tmp_path / "6X_60x60.asc"
    write_w2cad(path, (60.0, 60.0), scans)
    path.write_text(edit(path.read_text()))
    return path


def _nth_point(text: str, n: int) -> str:
    return [ln for ln in text.splitlines() if ln.startswith("<")][n]


W2CAD_BAD = [
    (
        "nan",
        lambda t: t.replace(_nth_point(t, 3), "<+000.00 +000.00 +003.50 nan>"),
        r"6X_60x60\.asc, line 17: data point .* is not four finite numbers",
    ),
    (
        "truncated",
        lambda t: t[: t.rindex("$ENOM")],
        r"6X_60x60\.asc: the scan starting at line \d+ has no \$ENOM",
    ),
    (
        "points_count",
        lambda t: t.replace(_nth_point(t, 5) + "\n", "", 1),
        r"6X_60x60\.asc, line 11: %PNTS gives 85 points but the scan holds 84",
    ),
    (
        "depth_in_cm",
        lambda t: t.replace("%DPTH 016", "%DPTH 1.6"),
        r"scan 2: the header gives the scan depth 1.6 mm but the points lie at 16 mm",
    ),
    (
        "field_in_cm",
        lambda t: t.replace("%FLSZ 060*060", "%FLSZ 3*3"),
        r"scan 1: field side 3 mm is outside 5-600 mm; field sizes must be given in mm",
    ),
    (
        "wedge",
        lambda t: t.replace("%TYPE OPD", "%TYPE WDD"),
        r"6X_60x60\.asc, line 9: %TYPE 'WDD'; expected OPD .*\(wedged scans are not used\)",
    ),
    (
        "shuffled",
        lambda t: t.replace(_nth_point(t, 4), "<+000.00 +000.00 +001.00 +050.000>"),
        r"6X_60x60\.asc, line 18: position 1 mm steps back from 3.5 mm",
    ),
    (
        "pdd_declared_profile",
        lambda t: t.replace("%TYPE OPD", "%TYPE OPP"),
        r"scan 1: the header declares a PROFILE scan but the points form a PDD",
    ),
    (
        "axis",
        lambda t: t.replace("%AXIS X", "%AXIS Y"),
        r"scan 2: the header declares a profile along Y but the points move along X",
    ),
    (
        "count",
        lambda t: t.replace("$NUMS 002", "$NUMS 003"),
        r"6X_60x60\.asc, line 1: \$NUMS gives 3 scans but the file holds 2",
    ),
    (
        "stray",
        lambda t: t.replace("$ENOM", "$ENOM\r\nhello", 1),
        r"6X_60x60\.asc, line \d+: 'hello' outside a \$STOM … \$ENOM block",
    ),
]


@pytest.mark.parametrize(("case", "edit", "message"), W2CAD_BAD, ids=[c[0] for c in W2CAD_BAD])
def test_bad_w2cad_names_file_and_line(tmp_path, case, edit, message):
    path = _one_scan(tmp_path, edit)
    with pytest.raises(BeamModelError, match=message):
        read_w2cad(path)


def test_bad_omnipro_is_refused(tmp_path):
    text = (DATA / "omnipro_layout_bistromath.asc").read_text(encoding="latin-1")
    cases = {
        "%BMT \tELE\t    6.0": r"line 16: %BMT 'ELE'; only photon beams",
        "%WEG \t30": r"line 22: a wedged measurement",
        "%PRD \t5": r"the header gives the scan depth 0.5 mm but the points lie at 50 mm",
        "%SCN \tDPT": r"the header declares a PDD scan but the points form a PROFILE",
        ":MSR \t2": r"line 1: :MSR gives 2 measurements but the file holds 1",
    }
    keys = {"%BMT": "%BMT \tPHO\t    6.0", "%WEG": "%WEG \t0", "%PRD": "%PRD \t500"}
    keys |= {"%SCN": "%SCN \tPRO", ":MSR": ":MSR \t1"}
    for new, message in cases.items():
        path = tmp_path / "bad.asc"
        path.write_text(text.replace(keys[new.split()[0]], new, 1), encoding="latin-1")
        with pytest.raises(BeamModelError, match=r"bad\.asc.*" + message):
            read_omnipro_ascii(path)


def test_diagonal_mcc_scan_is_refused(tmp_path, clinic_files):
    text = (
        clinic_files["mcc"][0]
        .read_text()
        .replace(
            "SCAN_CURVETYPE=CROSSPLANE",
            "SCAN_DIAGONAL=FIRST_DIAGONAL\n\t\tSCAN_CURVETYPE=CROSSPLANE",
            1,
        )
    )
    (tmp_path / "d.mcc").write_text(text)
    with pytest.raises(BeamModelError, match=r"d\.mcc, scan 2: SCAN_DIAGONAL=FIRST_DIAGONAL"):
        read_scan_file(tmp_path / "d.mcc")


# ---------------------------------------------------------------- X/Y output factors
def test_output_factor_table_x_across_y_down(tmp_path):
    path = tmp_path / "of.csv"
    path.write_text(
        "# jaws in cm\nY\\X cm, 3, 10, 20\n3, 0.80, 0.84,\n10, 0.83, 1.0, 1.03\n20, 0.84, -, 1.06\n"
    )
    table = read_output_factor_table(path)
    assert table == {
        (30.0, 30.0): 0.80, (100.0, 30.0): 0.84,
        (30.0, 100.0): 0.83, (100.0, 100.0): 1.0, (200.0, 100.0): 1.03,
        (30.0, 200.0): 0.84, (200.0, 200.0): 1.06,
    }  # fmt: skip
    path.write_text("Y\\X\t30\t100\n30\t0.8\t0.84\n")
    with pytest.raises(
        BeamModelError, match=r"of\.csv, line 1: the corner cell 'Y\\\\X' must name the unit"
    ):
        read_output_factor_table(path)
    path.write_text("mm 30 100\n30 0.8 0.84 0.9\n")
    with pytest.raises(BeamModelError, match=r"of\.csv, line 2: 3 factors but the header has 2"):
        read_output_factor_table(path)
    path.write_text("mm 30 100\n30 0.8 84\n100 1 0\n")
    with pytest.raises(
        BeamModelError, match=r"of\.csv, line 3: output factor '0' is not a positive"
    ):
        read_output_factor_table(path)


def _table(of_csv: str = "output_factors.csv", mlc: str = "") -> str:
    model = _clinic_model()
    ref = float(_dose(model, SSD_MM, (100.0, 100.0), 100.0, 0.0))
    return (
        '[output_factors]\nssd_mm = 1000.0\ndepth_mm = 100.0\nreference_field_mm = "60x60"\n'
        f'table = "{of_csv}"\n'
        f"[calibration]\ndose_gy_per_mu = {ref:.6g}\nfield_mm = 100\nssd_mm = 1000.0\n"
        f"depth_mm = 100.0\n{mlc}"
    )


def _of_csv(model) -> str:
    """Output factors of every X, Y pair of :data:`OF_SIDES_MM` (X across, Y down, cm)."""
    ref = _dose(model, SSD_MM, (100.0, 100.0), 100.0, 0.0)
    head = "Y\\X cm;" + ";".join(f"{x / 10:g}" for x in OF_SIDES_MM)
    rows = [
        f"{y / 10:g};"
        + ";".join(
            f"{float(_dose(model, SSD_MM, (x, y), 100.0, 0.0) / ref):.5f}" for x in OF_SIDES_MM
        )
        for y in OF_SIDES_MM
    ]
    return "\n".join([head, *rows]) + "\n"


MLC = "[mlc]\ntransmission = 0.015\ndosimetric_leaf_gap_mm = 1.6\ninterleaf_leakage = 0.022\n"


@pytest.fixture(scope="module")
def w2cad_folder(clinic_files, tmp_path_factory):
    folder = tmp_path_factory.mktemp("w2cad_clinic")
    for p in clinic_files["w2cad"]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "output_factors.csv").write_text(_of_csv(_clinic_model()))
    (folder / "commissioning.toml").write_text(_table(mlc=MLC))
    return folder


def test_energy_from_the_table_must_match_the_scans(w2cad_folder, clinic_files, tmp_path):
    assert read_measured_data(w2cad_folder).energy_mv is None  # W2CAD states no energy
    toml = tmp_path / "commissioning.toml"
    table = _table(of_csv=str(w2cad_folder / "output_factors.csv"))
    toml.write_text("energy_mv = 6.0\n" + table)
    assert read_measured_data(w2cad_folder, table=toml).energy_mv == 6.0
    mixed = [*clinic_files["w2cad"], clinic_files["omnipro"][0]]  # OmniPro: %BMT PHO 6.0
    assert read_measured_data(mixed, table=toml).energy_mv == 6.0
    toml.write_text("energy_mv = 10.0\n" + table)
    with pytest.raises(BeamModelError, match=r"`energy_mv` is 10 MV but .*_omnipro\.asc, scan 1"):
        read_measured_data(mixed, table=toml)


def test_fluence_mode_of_the_table(w2cad_folder, tmp_path):
    """``fluence_mode``: STANDARD by default, FFF (any case), anything else refused."""
    assert read_measured_data(w2cad_folder).fluence_mode == "STANDARD"
    toml = tmp_path / "commissioning.toml"
    table = _table(of_csv=str(w2cad_folder / "output_factors.csv"))
    toml.write_text('fluence_mode = "fff"\n' + table)
    assert read_measured_data(w2cad_folder, table=toml).fluence_mode == "FFF"
    toml.write_text('fluence_mode = "SRS"\n' + table)
    with pytest.raises(
        BeamModelError, match=r"commissioning\.toml: `fluence_mode` must be one of STANDARD, FFF"
    ):
        read_measured_data(w2cad_folder, table=toml)


def test_table_and_mlc_are_read(w2cad_folder):
    data = read_measured_data(w2cad_folder)
    assert len(data.output_factors) == len(OF_SIDES_MM) ** 2
    assert data.output_factors[(150.0, 30.0)] < data.output_factors[(150.0, 60.0)]
    assert data.mlc == {
        "transmission": 0.015,
        "dosimetric_leaf_gap_mm": 1.6,
        "interleaf_leakage": 0.022,
    }
    assert sum(s.curve == "DIAGONAL_PROFILE" for s in data.scans) == 2


@pytest.mark.parametrize(
    ("mlc", "message"),
    [
        (
            "[mlc]\ntransmission = 1.5\n",
            r"`mlc.transmission` = 1.5 is outside 0-0.1 \(a fraction, not per cent\)",
        ),
        (
            "[mlc]\ndosimetric_leaf_gap_mm = 16\n",
            r"`mlc.dosimetric_leaf_gap_mm` = 16 is outside 0-5 mm",
        ),
        (
            "[mlc]\ntransmission = 0.02\ninterleaf_leakage = 0.01\n",
            r"`mlc.interleaf_leakage` \(0.01\) is below `mlc.transmission`",
        ),
        ("[mlc]\ndlg_mm = 1.6\n", r"unknown `mlc` entries \['dlg_mm'\]"),
    ],
)
def test_bad_mlc_entries_are_refused(w2cad_folder, tmp_path, mlc, message):
    toml = tmp_path / "commissioning.toml"
    toml.write_text(_table(of_csv=str(w2cad_folder / "output_factors.csv"), mlc=mlc))
    with pytest.raises(BeamModelError, match=r"commissioning\.toml: " + message):
        read_measured_data(w2cad_folder, table=toml)


# ---------------------------------------------------------------- end to end
@pytest.mark.slow
def test_commissioning_from_w2cad_files_end_to_end(w2cad_folder, tmp_path, capsys):
    out = tmp_path / "model.json"
    files = [str(p) for p in sorted(w2cad_folder.glob("*.asc"))]
    table = str(w2cad_folder / "commissioning.toml")
    shipped = str(Path(load_beam_model().path))
    args = ["--measurements", *files, "--table", table, "--out", str(out), "--no-gamma"]
    status = main([*args, "--start", shipped])
    text = capsys.readouterr().out
    assert "DIAGONAL_PROFILE" in text and "MLC parameters" in text
    model = load_beam_model(out)  # what the planner loads
    # the exit status follows the commissioning targets, judged here independently
    data = read_measured_data(files, table=table)
    failed = [r["label"] for r in compare_to_measured(model, data).rows(TARGETS) if r["failed"]]
    assert status == (1 if failed else 0), text
    assert all(label in text for label in failed)
    params = model.parameters
    assert params["mlc"] == {
        "transmission": 0.015, "dosimetric_leaf_gap_mm": 1.6, "interleaf_leakage": 0.022,
        "applied_to_dose": True,
    }  # fmt: skip
    assert params["provenance"]["residuals"]["converged"] is True
    # generated with a 3.2 mm focal blur along x (shipped 2.16 mm): see test_commissioning
    blur = math.hypot(params["source_sigma_mm"][0], params["sigma_primary_mm"][0])
    generated = _clinic_model().parameters
    assert blur == pytest.approx(
        math.hypot(SOURCE_SIGMA_X_MM, generated["sigma_primary_mm"][0]), rel=0.03
    )
    ofs = params["provenance"]["residuals"]["output_factors"]
    assert len(ofs) == len(OF_SIDES_MM) ** 2 - 1
    for key, entry in ofs.items():
        assert entry["model"] == pytest.approx(entry["measured"], rel=0.01), key


def test_cli_writes_nothing_for_a_bad_w2cad_file(w2cad_folder, tmp_path, capsys):
    bad = tmp_path / "bad.asc"
    text = (w2cad_folder / "6X_60x60_w2cad.asc").read_text()
    bad.write_text(text.replace(_nth_point(text, 2), "<+000.00 +000.00 +002.50 +1e999>"))
    out = tmp_path / "model.json"
    table = str(w2cad_folder / "commissioning.toml")
    assert main(["--measurements", str(bad), "--table", table, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(r"bad\.asc, line 16: data point .* four finite", err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.asc"]


# ---------------------------------------------------------------- diagonal validation
def _diagonal_scan(model, field, angle_deg, *, direction_deg=None) -> MeasuredScan:
    """A diagonal profile of ``model`` at 50 mm along ``angle_deg`` from BLD x; labelled
    with ``direction_deg`` (default: the true angle)."""
    ux, uy = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    r = np.arange(-130.0, 130.1, 2.0)
    dose = _dose(model, SSD_MM, field, 50.0, r * ux, r * uy)
    label = math.radians(angle_deg if direction_deg is None else direction_deg)
    return MeasuredScan(
        curve="DIAGONAL_PROFILE",
        field_mm=field[0],
        field_inplane_mm=field[1],
        ssd_mm=SSD_MM,
        depth_mm=50.0,
        position_mm=r,
        value=dose,
        direction=(math.cos(label), math.sin(label)),
    )


def test_diagonal_profiles_are_computed_along_their_own_line():
    # A 150 x 80 mm field along a 30 degree line: the 50 % points lie where the line leaves
    # the field through its short (y) side.  Labelled with the mirrored direction (60
    # degrees) the same readings must fail, so the comparison sees which way the line runs.
    model = load_beam_model()
    dens, ct = water_phantom(SSD_MM, half_width_mm=160.0, depth_mm=120.0)
    beam = Beam(0.0, isocenter_mm=(0.0, 0.0, 0.0), sad_mm=1000.0)

    def calc(scan, grid):
        rect = np.array([[-75.0, 75.0, -40.0, 40.0]])
        return field_dose(dens, ct, grid, beam, rect, 1.0, model).ravel()

    right = _compare_profile(_diagonal_scan(model, (150.0, 80.0), 30.0), calc, 1.0, 1000.0, False)
    assert abs(right["width"]) < 0.5 and abs(right["penumbra"]) < 1.0
    wrong = _diagonal_scan(model, (150.0, 80.0), 30.0, direction_deg=60.0)
    assert abs(_compare_profile(wrong, calc, 1.0, 1000.0, False)["width"]) > 20.0
