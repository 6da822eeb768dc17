"""TG-119 phantoms: geometry against analytic values, DICOM round trip, dciodvfy/dcentvfy."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

import rtplan
from rtplan.errors import InputError, OutputExistsError
from rtplan.io import write_patient
from rtplan.phantoms import PHANTOM_NAMES, make_phantom, write_phantom

# Structure names exactly as in tests/rtplan/evaluation/data/tg119_goals.toml (+ the Body).
TG119_NAMES = {
    "multitarget": ["CentralTarget", "SuperiorTarget", "InferiorTarget"],
    "prostate": ["PTV", "Rectum", "Bladder"],
    "head_neck": ["PTV", "Cord", "ParotidLeft", "ParotidRight"],
    "cshape": ["PTV", "Core"],
    "water_box": [],
    "two_level": ["PTV70", "PTV56", "Cord", "ParotidLeft", "ParotidRight"],
}


def dice(a, b):
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.mark.parametrize("name", list(TG119_NAMES))
def test_names_types_and_body(name):
    p = make_phantom(name, pixel_spacing_mm=5.0, slice_spacing_mm=5.0)
    assert sorted(p.structures) == sorted(["Body", *TG119_NAMES[name]])
    assert p.structures["Body"].roi_type == "EXTERNAL"
    for s in p.structures.values():
        assert s.contours, f"{s.name} has no contours"
        assert s.roi_type in ("EXTERNAL", "PTV", "ORGAN")
    hu = p.ct.array
    assert hu.dtype == np.float32 and hu.min() == -1000 and hu.max() == 0
    assert np.all(hu == np.round(hu))
    assert hu[tuple(np.array(hu.shape) // 2)] == 0.0  # water at the centre
    assert hu[0, 0, 0] == -1000.0  # air in the corner
    # Structures lie inside the body.
    g = p.ct.grid
    body = p.structure("Body").occupancy(g)
    for n in TG119_NAMES[name]:
        occ = p.structure(n).occupancy(g)
        assert np.all(occ <= body + 1e-6)


def test_cshape_geometry(cshape_patient):
    g = cshape_patient.ct.grid
    core, ptv = cshape_patient.structure("Core"), cshape_patient.structure("PTV")
    assert core.volume_cc(g) == pytest.approx(np.pi * 1.0**2 * 10.0, rel=0.01)
    assert ptv.volume_cc(g) == pytest.approx(200 / 360 * np.pi * (3.7**2 - 1.5**2) * 8.0, rel=0.01)
    # 5 mm gap: no PTV within 15 mm of the axis, no voxel shared with the core.
    occ = ptv.occupancy(g)
    z, y, x = g.zyx_axes_mm()
    r = np.hypot(*np.meshgrid(y, x, indexing="ij"))
    assert occ[:, r < 15.0 - g.spacing_mm[0] * 0.71].max() == 0
    assert np.all(np.minimum(occ, core.occupancy(g)) == 0)
    # The C opens anteriorly (-y): its centroid is posterior.
    assert ptv.centroid_mm(g)[1] > 10.0
    # Lengths along z: PTV 80 mm, core 100 mm.
    assert len(ptv.z_planes_mm) * g.spacing_mm[2] == pytest.approx(80.0)
    assert len(core.z_planes_mm) * g.spacing_mm[2] == pytest.approx(100.0)


def test_multitarget_geometry():
    p = make_phantom("multitarget")
    g = p.ct.grid
    cz = {}
    for n in TG119_NAMES["multitarget"]:
        s = p.structure(n)
        assert s.volume_cc(g) == pytest.approx(np.pi * 2.0**2 * 4.0, rel=0.01)
        cz[n] = s.centroid_mm(g)[2]
    assert cz["CentralTarget"] == pytest.approx(0.0, abs=1.3)
    assert cz["SuperiorTarget"] == pytest.approx(40.0, abs=1.3)
    assert cz["InferiorTarget"] == pytest.approx(-40.0, abs=1.3)


def test_prostate_organs_abut_ptv_without_overlap():
    p = make_phantom("prostate")
    g = p.ct.grid
    ptv, rectum, bladder = (p.structure(n) for n in TG119_NAMES["prostate"])
    assert ptv.volume_cc(g) == pytest.approx(4 / 3 * np.pi * 3.0 * 2.2 * 2.8, rel=0.02)
    occ = {s.name: s.occupancy(g) for s in (ptv, rectum, bladder)}
    total = occ["PTV"] + occ["Rectum"] + occ["Bladder"]
    assert total.max() <= 1.0 + 0.02  # no overlap beyond polygon-chord slivers
    for organ in ("Rectum", "Bladder"):  # abutting: they share boundary voxels
        assert np.count_nonzero((occ["PTV"] > 0.05) & (occ[organ] > 0.05)) > 20
    c_ptv, c_rect, c_blad = (s.centroid_mm(g) for s in (ptv, rectum, bladder))
    assert c_rect[1] > c_ptv[1] + 20  # rectum posterior (+y)
    assert c_blad[2] > c_ptv[2] + 20 and c_blad[1] < c_ptv[1]  # bladder superior, anterior


def test_head_neck_geometry():
    p = make_phantom("head_neck")
    g = p.ct.grid
    cord, ptv = p.structure("Cord"), p.structure("PTV")
    cx, cy, _ = cord.centroid_mm(g)
    z, y, x = g.zyx_axes_mm()
    yy, xx = np.meshgrid(y, x, indexing="ij")
    dist = np.hypot(xx - cx, yy - cy)
    occ = ptv.occupancy(g)
    # 15 mm gap between the cord surface (r 7 mm) and the PTV, up to one voxel diagonal.
    assert occ[:, dist < 22.0 - g.spacing_mm[0] * 0.71].max() == 0
    assert occ[:, dist < 22.0 + g.spacing_mm[0]].max() > 0
    assert ptv.centroid_mm(g)[1] < cy - 15  # PTV anterior (-y) of the cord
    assert p.structure("ParotidLeft").centroid_mm(g)[0] > 50  # patient left = +x
    assert p.structure("ParotidRight").centroid_mm(g)[0] < -50


def test_water_box_has_flat_entrance_surfaces():
    p = make_phantom("water_box")
    g = p.ct.grid
    hu = p.ct.array
    z, y, x = g.zyx_axes_mm()
    assert np.all(hu[:, (y > -150) & (y < 150), :][:, :, (x > -150) & (x < 150)] == 0)
    assert np.all(hu[:, y < -150, :] == -1000) and np.all(hu[:, :, x > 150] == -1000)
    length_cm = g.shape[0] * g.spacing_mm[2] / 10
    assert p.structure("Body").volume_cc(g) == pytest.approx(30 * 30 * length_cm, rel=1e-6)


def test_every_phantom_is_tested():
    assert set(PHANTOM_NAMES) == {*TG119_NAMES, "thorax", "thorax_breast"}  # test_thorax.py


def test_unknown_phantom_and_bad_sizes():
    with pytest.raises(InputError, match="Unknown phantom 'liver'.*cshape, multitarget"):
        make_phantom("liver")
    with pytest.raises(InputError, match="pixel_spacing_mm"):
        make_phantom("cshape", pixel_spacing_mm=0)


# ------------------------------------------------------------------ DICOM round trip
def test_cshape_round_trip(cshape_dicom, cshape_patient):
    loaded = rtplan.read_patient(cshape_dicom.ct_dir, cshape_dicom.rtstruct_path)
    assert loaded.ct.grid == cshape_patient.ct.grid
    np.testing.assert_array_equal(loaded.ct.array, cshape_patient.ct.array)
    g = loaded.ct.grid
    assert list(loaded.structures) == list(cshape_patient.structures)
    for name, s in cshape_patient.structures.items():
        assert dice(loaded.structure(name).mask(g), s.mask(g)) >= 0.99
        assert loaded.structure(name).volume_cc(g) == pytest.approx(s.volume_cc(g), rel=1e-4)


@pytest.mark.parametrize("name", [n for n in PHANTOM_NAMES if n != "cshape"])
def test_other_phantoms_round_trip(name, tmp_path):
    p = make_phantom(name, pixel_spacing_mm=4.0, slice_spacing_mm=4.0)
    w = write_phantom(name, tmp_path / name, pixel_spacing_mm=4.0, slice_spacing_mm=4.0)
    loaded = rtplan.read_patient(w.ct_dir, w.rtstruct_path)
    g = loaded.ct.grid
    assert g == p.ct.grid
    np.testing.assert_array_equal(loaded.ct.array, p.ct.array)
    for n, s in p.structures.items():
        assert dice(loaded.structure(n).mask(g), s.mask(g)) >= 0.99
        assert loaded.structure(n).roi_type == s.roi_type
        assert loaded.structure(n).color_rgb == s.color_rgb
    for f in (w.ct_files[0], w.rtstruct_path):
        out = run_tool("dciodvfy", str(f))
        assert "Error" not in out and "Warning" not in out, f"{f.name}:\n{out}"


def run_tool(*args):
    proc = subprocess.run(list(args), capture_output=True, text=True)
    return proc.stdout + proc.stderr


def test_dciodvfy_reports_no_errors_or_warnings(cshape_dicom):
    files = [
        cshape_dicom.ct_files[0],
        cshape_dicom.ct_files[40],
        cshape_dicom.ct_files[-1],
        cshape_dicom.rtstruct_path,
    ]
    for f in files:
        out = run_tool("dciodvfy", str(f))
        assert out.strip().splitlines()[0] in ("CTImage", "RTStructureSet"), out
        assert "Error" not in out, f"{f.name}:\n{out}"
        assert "Warning" not in out, f"{f.name}:\n{out}"


def test_dcentvfy_finds_ct_and_rtstruct_consistent(cshape_dicom):
    """dcentvfy checks that patient, study, series and frame-of-reference attributes agree
    across all files and that referenced instances exist.

    One finding is expected and harmless: RT Referenced Study Sequence (3006,0012) holds,
    by the RT Structure Set convention, (0008,1150) Detached Study Management SOP Class and
    (0008,1155) = the StudyInstanceUID; dcentvfy treats that as a reference to an instance
    it cannot find.  Every other line would be a real inconsistency.
    """
    files = [str(f) for f in cshape_dicom.ct_files] + [str(cshape_dicom.rtstruct_path)]
    out = run_tool("dcentvfy", *files)
    lines = [ln for ln in out.splitlines() if ln.strip()]
    study_uid = rtplan.read_patient(cshape_dicom.ct_dir).study_instance_uid
    expected = f"Error - Missing SOPInstanceUID that was referenced - {study_uid} for file <"
    unexpected = [ln for ln in lines if not ln.startswith(expected)]
    assert unexpected == [], "\n".join(unexpected)
    assert len(lines) <= 1
    # And the links are right: every ContourImageSequence UID is a CT slice.
    import pydicom

    ds = pydicom.dcmread(cshape_dicom.rtstruct_path)
    ct_uids = set(rtplan.read_patient(cshape_dicom.ct_dir).ct_sop_instance_uids)
    refs = {
        i.ReferencedSOPInstanceUID
        for rc in ds.ROIContourSequence
        for c in rc.ContourSequence
        for i in c.ContourImageSequence
    }
    assert refs and refs <= ct_uids


# ------------------------------------------------------------------ atomic output
def test_existing_output_is_refused_and_untouched(tmp_path):
    out = tmp_path / "ph"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="already exists.*--force"):
        write_phantom("multitarget", out, pixel_spacing_mm=10.0, slice_spacing_mm=10.0)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    w = write_phantom(
        "multitarget", out, overwrite=True, pixel_spacing_mm=10.0, slice_spacing_mm=10.0
    )
    assert not (out / "keep.txt").exists() and w.rtstruct_path.is_file()


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    from rtplan.io import _patient_write as _dicom

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(_dicom, "_rtstruct", boom)
    p = make_phantom("cshape", pixel_spacing_mm=10.0, slice_spacing_mm=10.0)
    with pytest.raises(RuntimeError, match="disk full"):
        write_patient(p, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
