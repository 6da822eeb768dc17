"""Hostile input, class "valid data refused, and other gaps" (issue 13).

A contour over 64 KiB stored as VR UN (explicit VR little endian, PS3.5 6.2.2) is decoded by
the dictionary VR and gives the points written; error messages quoting huge values stay
short.
"""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
import pytest
from _hostile import MAX_MESSAGE_CHARS, assert_names, raw

from rtplan._internal.messages import QUOTE_LIMIT_CHARS, quote
from rtplan.errors import DicomReadError
from rtplan.io import read_patient, read_structure_set


def _circle(n_points, radius_mm, z_mm):
    t = np.linspace(0.0, 2.0 * np.pi, n_points, endpoint=False)
    return np.stack([radius_mm * np.cos(t), radius_mm * np.sin(t), np.full_like(t, z_mm)], 1)


def _write_big_contour(src, dst, pts, *, values=None):
    """Replace ROI 2's first contour by ``pts``; pydicom stores it as UN (> 64 KiB)."""
    ds = pydicom.dcmread(src)
    item = ds.ROIContourSequence[1].ContourSequence[0]
    item.NumberOfContourPoints = len(pts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom: "VR is changed from 'DS' to 'UN'"
        item.ContourData = values if values is not None else [f"{v:.4f}" for v in pts.ravel()]
        ds.save_as(dst)
    return ds.StructureSetROISequence[1].ROIName


@pytest.mark.parametrize("n_points", [3000, 20_000])
def test_contour_stored_as_un_is_decoded(n_points, small_phantom_dicom, tmp_path):
    z = float(
        pydicom.dcmread(small_phantom_dicom.rtstruct_path)
        .ROIContourSequence[1]
        .ContourSequence[0]
        .ContourData[2]
    )
    pts = _circle(n_points, 20.0, z)
    rs = tmp_path / "RS.dcm"
    name = _write_big_contour(small_phantom_dicom.rtstruct_path, rs, pts)
    raw = pydicom.dcmread(rs)
    assert raw.ROIContourSequence[1].ContourSequence[0]["ContourData"].VR == "UN"
    ss = read_structure_set(rs)
    got = [c for c in ss.structures[name].contours if len(c) == n_points]
    assert len(got) == 1
    np.testing.assert_allclose(got[0], np.round(pts, 4), atol=1e-9)
    patient = read_patient(small_phantom_dicom.ct_dir, rs)
    assert name in patient.structures


def _un_contour(src, dst, n_points, text: str):
    """ROI 2's first contour as a raw VR UN element holding ``text``."""
    ds = pydicom.dcmread(src)
    item = ds.ROIContourSequence[1].ContourSequence[0]
    item.NumberOfContourPoints = n_points
    raw(item, "ContourData", text.encode() + b" " * (len(text) % 2), "UN")
    ds.save_as(dst)


def test_bad_value_in_a_un_contour_is_named_briefly(small_phantom_dicom, tmp_path):
    values = [f"{v:.4f}" for v in _circle(3000, 20.0, 0.0).ravel()]
    values[100] = "abc"
    rs = tmp_path / "RS.dcm"
    _un_contour(small_phantom_dicom.rtstruct_path, rs, 3000, "\\".join(values))
    with pytest.raises(DicomReadError) as exc:
        read_structure_set(rs)
    assert_names(str(exc.value), str(rs), r"\(3006,0050\) ContourData", r"non-numeric")


def test_message_quoting_a_200k_point_contour_stays_short(small_phantom_dicom, tmp_path):
    pts = _circle(200_000, 20.0, 0.0)
    text = "\\".join(f"{v:.2f}" for v in pts.ravel()) + "\\x"
    rs = tmp_path / "RS.dcm"
    _un_contour(small_phantom_dicom.rtstruct_path, rs, 200_001, text)
    with pytest.raises(DicomReadError) as exc:
        read_structure_set(rs)
    assert len(str(exc.value)) < MAX_MESSAGE_CHARS


@pytest.mark.parametrize(
    "value", ["short", "x" * 10_000, list(range(100_000)), b"\x00" * 5000, 3.5]
)
def test_quote_caps_long_values(value):
    text = quote(value)
    assert len(text) <= QUOTE_LIMIT_CHARS + 40
    if len(repr(value)) <= QUOTE_LIMIT_CHARS:
        assert text == repr(value)
    else:
        assert text.startswith(repr(value)[:50]) and f"{len(repr(value)):,} characters" in text


# ---------------------------------------------------------------------------------------
# Gantry angles outside [0, 360) are refused wherever they are given, never wrapped


@pytest.mark.parametrize("angle", ["400", "720.5", "-40", "360"])
def test_protocol_gantry_outside_0_360_is_refused(angle, tmp_path):
    from _tiny_protocol import tiny_cshape_protocol

    from rtplan.errors import ProtocolError
    from rtplan.protocols import load_protocol

    text = tiny_cshape_protocol(ring=False).replace("count = 3", f"gantry_deg = [0, {angle}]")
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ProtocolError) as exc:
        load_protocol(path)
    assert_names(str(exc.value), r"\[beams\] gantry_deg", rf"found {angle}", r"\[0, 360\)")


def test_protocol_gantry_in_range_is_kept(tmp_path):
    from _tiny_protocol import tiny_cshape_protocol

    from rtplan.errors import ProtocolError
    from rtplan.protocols import load_protocol

    path = tmp_path / "p.toml"
    path.write_text(
        tiny_cshape_protocol(ring=False).replace("count = 3", "gantry_deg = [0, 359.5]")
    )
    protocol = load_protocol(path)
    assert protocol.beams.gantry_angles_deg == (0.0, 359.5)
    with pytest.raises(ProtocolError, match=r"`gantry_angles_deg`.*720\.5"):
        protocol.with_overrides(gantry_angles_deg=[720.5])


def test_cli_influence_gantry_400_is_refused(small_phantom_dicom, tmp_path, capsys):
    from rtplan.cli import main

    argv = ["influence", small_phantom_dicom.ct_dir, small_phantom_dicom.rtstruct_path]
    argv += ["--target", "CentralTarget", "--gantry", "0,400", "--out", tmp_path / "m.h5"]
    assert main([str(a) for a in argv]) == 2
    assert_names(capsys.readouterr().err, r"gantry_angle_deg", r"400", r"\[0, 360\)")
    assert not (tmp_path / "m.h5").exists()
