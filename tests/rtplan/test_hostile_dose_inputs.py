"""Hostile input, class "wrong dose produced silently" (issue 13).

CT pixel data the header misdescribes, a CT series or structure set mixing patients,
RT-PLAN beams carrying accessories or impossible values, negative or NaN doses and
prescriptions, and corrupted influence-matrix cache files.  Each refusal is one line
naming the file and the element (or the argument); each accepted variant is checked
against the value it must give.
"""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pydicom
import pytest
from _hostile import (
    assert_names,
    copy_ct,
    edit,
    first_slice,
    raw,
    two_beam_plan,
)
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dose_engine import (
    Beam,
    DoseEngineError,
    DoseEngineWarning,
    beamlets_for_target,
    cached_influence_matrix,
    load_influence_matrix,
)
from dose_engine._cache import _arrays_sha256
from dose_engine._validation import water_phantom
from rtplan import evaluate_goals, parse_goal, read_patient, read_rtplan
from rtplan.errors import (
    DicomReadError,
    DicomWarning,
    InputError,
    ReferenceMismatchError,
    SeriesError,
)
from rtplan.io import read_ct, read_rtdose, write_rtplan
from rtplan.io._ct import HU_LIMITS

# ---------------------------------------------------------------------------------------
# CT pixel decoding


@pytest.fixture
def ct(small_phantom_dicom, tmp_path):
    return copy_ct(small_phantom_dicom.ct_dir, tmp_path / "CT")


def _hu_as_signed_int16(ds):
    """Store the slice's HU directly as signed int16 with intercept 0."""
    hu = ds.pixel_array.astype(np.int32) * int(float(ds.RescaleSlope)) + int(
        float(ds.RescaleIntercept)
    )
    ds.PixelData = hu.astype("<i2").tobytes()
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = "0"


def _signed_flagged_unsigned(ds):
    _hu_as_signed_int16(ds)
    ds.PixelRepresentation = 0  # air (-1000) now reads 64536


def _bits_allocated_8(ds):
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7


def _bits_allocated_32(ds):
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31


def _pixel(value_stored):
    def change(ds):
        a = ds.pixel_array.copy()
        a[3, 4] = value_stored
        ds.PixelData = a.tobytes()

    return change


CT_REFUSALS = {
    # id: (change of the first slice, regex of the element)
    "slope-negative": (lambda ds: setattr(ds, "RescaleSlope", "-1"), r"\(0028,1053\)"),
    "slope-zero": (lambda ds: setattr(ds, "RescaleSlope", "0"), r"\(0028,1053\)"),
    "slope-nan": (lambda ds: raw(ds, "RescaleSlope", b"NaN ", "DS"), r"\(0028,1053\)"),
    "slope-inf": (lambda ds: raw(ds, "RescaleSlope", b"inf ", "DS"), r"\(0028,1053\)"),
    "slope-text": (lambda ds: raw(ds, "RescaleSlope", b"one ", "DS"), r"\(0028,1053\)"),
    "slope-two-values": (lambda ds: raw(ds, "RescaleSlope", b"1\\2 ", "DS"), r"\(0028,1053\)"),
    "slope-overflow": (lambda ds: raw(ds, "RescaleSlope", b"1e308 ", "DS"), r"\(7FE0,0010\)"),
    "slope-huge": (lambda ds: setattr(ds, "RescaleSlope", "1000"), r"\(7FE0,0010\).*HU"),
    "intercept-nan": (lambda ds: raw(ds, "RescaleIntercept", b"NaN ", "DS"), r"\(0028,1052\)"),
    "intercept-inf": (lambda ds: raw(ds, "RescaleIntercept", b"-inf", "DS"), r"\(0028,1052\)"),
    "intercept-high": (lambda ds: setattr(ds, "RescaleIntercept", "30000"), r"\(7FE0,0010\)"),
    "intercept-low": (lambda ds: setattr(ds, "RescaleIntercept", "-5000"), r"\(7FE0,0010\)"),
    "intercept-missing": (lambda ds: delattr(ds, "RescaleIntercept"), r"\(0028,1052\)"),
    "slope-missing": (lambda ds: delattr(ds, "RescaleSlope"), r"\(0028,1053\)"),
    "bits-allocated-8": (_bits_allocated_8, r"\(0028,0100\) BitsAllocated"),
    "bits-allocated-32": (_bits_allocated_32, r"\(7FE0,0010\)"),
    "bits-allocated-12": (lambda ds: setattr(ds, "BitsAllocated", 12), r"\(0028,0100\)"),
    "rows-halved": (lambda ds: setattr(ds, "Rows", 20), r"\(0028,0010\)|Rows"),
    "columns-short": (lambda ds: setattr(ds, "Columns", 30), r"Columns"),
    "pixel-representation-2": (lambda ds: setattr(ds, "PixelRepresentation", 2), r"\(0028,0103\)"),
    "signed-flagged-unsigned": (_signed_flagged_unsigned, r"\(7FE0,0010\).*PixelRepresentation"),
    "high-bit-wrong": (lambda ds: setattr(ds, "HighBit", 15 - 4), r"\(0028,0102\) HighBit"),
    "bits-stored-17": (lambda ds: setattr(ds, "BitsStored", 17), r"\(0028,0101\) BitsStored"),
    "bits-stored-0": (lambda ds: setattr(ds, "BitsStored", 0), r"\(0028,0101\) BitsStored"),
    "pixel-above-range": (_pixel(30000), r"\(7FE0,0010\).*row 3, column 4"),
    "pixel-data-missing": (lambda ds: delattr(ds, "PixelData"), r"\(7FE0,0010\)"),
    "pixel-data-short": (lambda ds: setattr(ds, "PixelData", b"\0" * 100), r"\(7FE0,0010\)"),
    "samples-per-pixel-3": (lambda ds: setattr(ds, "SamplesPerPixel", 3), r"\(0028,0002\)"),
    "photometric-rgb": (
        lambda ds: setattr(ds, "PhotometricInterpretation", "RGB"),
        r"\(0028,0004\)",
    ),
}


#: Cases changed in every slice (else the matrix-size consistency check speaks first).
EVERY_SLICE = {"rows-halved", "columns-short"}


@pytest.mark.parametrize("case", sorted(CT_REFUSALS))
def test_misdescribed_ct_pixels_are_refused(case, ct):
    change, element = CT_REFUSALS[case]
    path = first_slice(ct)
    for p in sorted(ct.glob("*.dcm")) if case in EVERY_SLICE else [path]:
        edit(p, change)
    with pytest.raises(DicomReadError) as exc:
        read_ct(ct)
    assert_names(str(exc.value), rf"'{path}'", element)


def test_signed_flagged_unsigned_would_have_read_air_as_64536_hu(ct):
    """The refusal above is about real numbers: with the flag fixed the slice is right."""
    path = first_slice(ct)
    expected = read_ct(ct).image.array[0].copy()
    edit(path, _hu_as_signed_int16)
    np.testing.assert_array_equal(read_ct(ct).image.array[0], expected)


def test_hu_limits_can_be_widened_on_purpose(ct):
    path = first_slice(ct)
    edit(path, _pixel(30000))  # stored 30000, intercept -1024 -> 28976 HU
    with pytest.raises(DicomReadError, match="28976 HU"):
        read_ct(ct)
    img = read_ct(ct, hu_limits=(-1100, 40000)).image
    assert img.array[0, 3, 4] == 28976  # row 3, column 4 of the lowest slice (HFS: no flip)


@pytest.mark.parametrize(
    ("limits", "error"),
    [((1, 2, 3), TypeError), ("wide", TypeError), ((0, 0), ValueError), ((1, np.nan), ValueError)],
)
def test_hu_limits_argument_is_checked(limits, error, ct):
    with pytest.raises(error, match="hu_limits"):
        read_ct(ct, hu_limits=limits)


def test_declared_padding_below_air_is_accepted(ct):
    """Scanners pad outside the FOV at -3024 HU and declare (0028,0120): that is air."""
    path = first_slice(ct)

    def pad(ds):
        a = ds.pixel_array.copy()
        a[0, :] = -2000  # stored; intercept -1024 -> -3024 HU
        ds.PixelData = a.tobytes()
        ds.add_new(0x00280120, "SS", -2000)  # (0028,0120) PixelPaddingValue

    edit(path, pad)
    hu = read_ct(ct).image.array[0]
    assert np.count_nonzero(hu == -3024.0) == 40 and hu.min() == -3024.0


def test_undeclared_values_below_air_are_refused(ct):
    path = first_slice(ct)
    edit(path, _pixel(-2000))
    with pytest.raises(DicomReadError) as exc:
        read_ct(ct)
    assert_names(str(exc.value), rf"'{path}'", r"-3024 HU", rf"{HU_LIMITS[0]:g}")


def test_ct_slices_of_two_patients_are_refused_without_printing_ids(ct):
    paths = sorted(ct.glob("*.dcm"))
    for k, p in enumerate(paths):
        edit(p, lambda ds, k=k: setattr(ds, "PatientID", "SECRET-A" if k else "SECRET-B"))
    with pytest.raises(SeriesError) as exc:
        read_ct(ct)
    assert_names(str(exc.value), r"\(0010,0020\) PatientID", str(ct))
    assert "SECRET" not in str(exc.value)


def test_one_patient_id_in_every_slice_loads(ct, small_phantom_patient):
    for p in ct.glob("*.dcm"):
        edit(p, lambda ds: setattr(ds, "PatientID", "SAME"))
    np.testing.assert_array_equal(read_ct(ct).image.array, small_phantom_patient.ct.array)


@pytest.mark.parametrize("bad", [None, 5, b"CT", ""])
def test_load_ct_path_argument_is_checked(bad):
    with pytest.raises((TypeError, ValueError), match="ct_dir"):
        read_ct(bad)


# ---------------------------------------------------------------------------------------
# RT-STRUCT identity


@pytest.fixture
def identified(small_phantom_dicom, tmp_path):
    """The small phantom with PatientID/Name/BirthDate set in the CT and the RT-STRUCT."""
    ct = copy_ct(small_phantom_dicom.ct_dir, tmp_path / "CT")
    rs = tmp_path / "RS.dcm"
    rs.write_bytes(small_phantom_dicom.rtstruct_path.read_bytes())

    def ident(ds):
        ds.PatientID, ds.PatientName, ds.PatientBirthDate = "ID1", "Doe^Jane", "19600101"

    for p in [*ct.glob("*.dcm"), rs]:
        edit(p, ident)
    return ct, rs


def test_rtstruct_same_id_other_birth_date_is_refused(identified):
    ct, rs = identified
    edit(rs, lambda ds: setattr(ds, "PatientBirthDate", "19700202"))
    with pytest.raises(ReferenceMismatchError) as exc:
        read_patient(ct, rs)
    assert_names(str(exc.value), rf"'{rs}'", r"\(0010,0030\) PatientBirthDate")
    assert "1970" not in str(exc.value) and "1960" not in str(exc.value)


def test_rtstruct_same_id_other_name_warns(identified):
    ct, rs = identified
    edit(rs, lambda ds: setattr(ds, "PatientName", "Roe^Richard"))
    with pytest.warns(DicomWarning, match=r"\(0010,0010\) PatientName differs") as rec:
        patient = read_patient(ct, rs)
    assert "Roe" not in str(rec[0].message) and "Doe" not in str(rec[0].message)
    assert "CentralTarget" in patient.structures


@pytest.mark.parametrize("spelling", ["DOE^JANE", "Doe^Jane^^", " Doe^Jane"])
def test_rtstruct_name_spelled_differently_is_the_same_name(identified, spelling):
    ct, rs = identified
    edit(rs, lambda ds: setattr(ds, "PatientName", spelling))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_patient(ct, rs)


# ---------------------------------------------------------------------------------------
# RT-PLAN reader


@pytest.fixture(scope="module")
def plan_case(small_phantom_dicom, tmp_path_factory):
    patient = read_patient(small_phantom_dicom.ct_dir, small_phantom_dicom.rtstruct_path)
    rp = tmp_path_factory.mktemp("rp") / "RP.dcm"
    write_rtplan(rp, two_beam_plan(patient), patient)
    return patient, rp


@pytest.fixture
def rp(plan_case, tmp_path):
    path = tmp_path / "RP.dcm"
    path.write_bytes(plan_case[1].read_bytes())
    return path


def _accessory(keyword, count_keyword=None, count=None):
    def change(ds):
        beam = ds.BeamSequence[0]
        item = Dataset()
        if keyword == "PrimaryFluenceModeSequence":
            item.FluenceMode, item.FluenceModeID = "NON_STANDARD", "FFF"
        else:
            item.AccessoryCode = "X1"
        setattr(beam, keyword, Sequence([item]))
        if count_keyword is not None:
            if count is None:
                if count_keyword in beam:
                    delattr(beam, count_keyword)
            else:
                setattr(beam, count_keyword, count)

    return change


def _cp0(keyword, value):
    def change(ds):
        setattr(ds.BeamSequence[0].ControlPointSequence[0], keyword, value)

    return change


def _raw_fractions(value):
    def change(ds):
        raw(ds.FractionGroupSequence[0], "NumberOfFractionsPlanned", value, "IS")

    return change


def _ref_beam(ds):
    return ds.FractionGroupSequence[0].ReferencedBeamSequence[0]


def _dup_beam_number(ds):
    ds.BeamSequence[1].BeamNumber = ds.BeamSequence[0].BeamNumber


RTPLAN_REFUSALS = {
    "wedge-count-0": (_accessory("WedgeSequence", "NumberOfWedges", 0), r"\(300A,00D1\)"),
    "wedge-count-missing": (_accessory("WedgeSequence", "NumberOfWedges"), r"\(300A,00D1\)"),
    "block-count-0": (_accessory("BlockSequence", "NumberOfBlocks", 0), r"\(300A,00F4\)"),
    "block-count-missing": (_accessory("BlockSequence", "NumberOfBlocks"), r"\(300A,00F4\)"),
    "compensator-count-0": (
        _accessory("CompensatorSequence", "NumberOfCompensators", 0),
        r"\(300A,00E3\)",
    ),
    "bolus-count-0": (_accessory("ReferencedBolusSequence", "NumberOfBoli", 0), r"\(300C,00B0\)"),
    "applicator": (_accessory("ApplicatorSequence"), r"\(300A,0107\)"),
    "general-accessory": (_accessory("GeneralAccessorySequence"), r"\(300A,0420\)"),
    "fff-fluence": (_accessory("PrimaryFluenceModeSequence"), r"\(3002,0051\) FluenceMode"),
    "wedge-count-1": (lambda ds: setattr(ds.BeamSequence[0], "NumberOfWedges", 1), r"00D0"),
    "wedge-count-text": (
        lambda ds: raw(ds.BeamSequence[0], "NumberOfWedges", b"a ", "IS"),
        r"\(300A,00D0\) NumberOfWedges",
    ),
    "beam-number-missing": (
        lambda ds: delattr(ds.BeamSequence[0], "BeamNumber"),
        r"\(300A,00C0\) BeamNumber",
    ),
    "referenced-beam-number-missing": (
        lambda ds: delattr(
            ds.FractionGroupSequence[0].ReferencedBeamSequence[0], "ReferencedBeamNumber"
        ),
        r"\(300C,0006\) ReferencedBeamNumber",
    ),
    "beam-number-text": (
        lambda ds: raw(ds.BeamSequence[0], "BeamNumber", b"b1", "IS"),
        r"\(300A,00C0\) BeamNumber",
    ),
    "beam-number-duplicate": (_dup_beam_number, r"two beams numbered"),
    "fractions-a": (_raw_fractions(b"a "), r"\(300A,0078\) NumberOfFractionsPlanned"),
    "fractions-2.5": (_raw_fractions(b"2.5 "), r"\(300A,0078\)"),
    "fractions-0": (_raw_fractions(b"0 "), r"\(300A,0078\)"),
    "fractions-negative": (_raw_fractions(b"-3"), r"\(300A,0078\)"),
    "gantry-400": (_cp0("GantryAngle", 400), r"\(300A,011E\) GantryAngle is 400"),
    "gantry-720.5": (_cp0("GantryAngle", 720.5), r"\(300A,011E\) GantryAngle is 720.5"),
    "gantry-360": (_cp0("GantryAngle", 360), r"\(300A,011E\)"),
    "gantry-negative": (_cp0("GantryAngle", -10), r"\(300A,011E\)"),
    "gantry-nan": (
        lambda ds: raw(ds.BeamSequence[0].ControlPointSequence[0], "GantryAngle", b"NaN ", "DS"),
        r"GantryAngle",
    ),
    "collimator-361": (_cp0("BeamLimitingDeviceAngle", 361), r"\(300A,0120\)"),
    "couch-negative": (_cp0("PatientSupportAngle", -5), r"\(300A,0122\)"),
    "meterset-negative": (
        lambda ds: setattr(
            ds.FractionGroupSequence[0].ReferencedBeamSequence[0], "BeamMeterset", -5
        ),
        r"BeamMeterset",
    ),
    "meterset-nan": (
        lambda ds: raw(_ref_beam(ds), "BeamMeterset", b"NaN ", "DS"),
        r"BeamMeterset",
    ),
    "prescription-negative": (
        lambda ds: setattr(ds.DoseReferenceSequence[0], "TargetPrescriptionDose", -2),
        r"\(300A,0026\) TargetPrescriptionDose",
    ),
    "photon-electron": (
        lambda ds: setattr(ds.BeamSequence[0], "RadiationType", "ELECTRON"),
        r"\(300A,00C6\) RadiationType",
    ),
}


@pytest.mark.parametrize("case", sorted(RTPLAN_REFUSALS))
def test_rtplan_beam_refusals(case, rp, plan_case):
    change, element = RTPLAN_REFUSALS[case]
    edit(rp, change)
    with pytest.raises(InputError) as exc:
        read_rtplan(rp, plan_case[0])
    assert_names(str(exc.value), str(rp), element)


@pytest.mark.parametrize("gantry", [0.0, 359.9, 180.0])
def test_rtplan_gantry_in_range_is_read_as_written(gantry, rp, plan_case):
    def change(ds):
        for cp in ds.BeamSequence[0].ControlPointSequence:
            if "GantryAngle" in cp:
                cp.GantryAngle = gantry

    edit(rp, change)
    plan = read_rtplan(rp, plan_case[0])
    assert plan.beams[0].beam.gantry_angle_deg == pytest.approx(gantry)


# ---------------------------------------------------------------------------------------
# Doses and prescriptions in evaluation


@pytest.fixture(scope="module")
def uniform(small_phantom_patient):
    grid = small_phantom_patient.ct.grid
    structures = {"CentralTarget": small_phantom_patient.structure("CentralTarget")}
    return grid, structures, np.full(grid.shape, 50.0)


GOAL = "CentralTarget D95% >= 49 Gy"


@pytest.mark.parametrize(
    ("voxel_value", "pattern"),
    [(-23.59, r"negative.*-23\.59 Gy"), (np.nan, "NaN"), (np.inf, "infinite"), (-np.inf, "NaN")],
)
def test_evaluate_goals_refuses_impossible_doses(voxel_value, pattern, uniform):
    grid, structures, dose = uniform
    bad = dose.copy()
    bad[6, 20, 20] = voxel_value
    with pytest.raises(InputError) as exc:
        evaluate_goals(bad, structures, [parse_goal(GOAL)], grid, prescription_gy=50)
    assert_names(str(exc.value), r"`dose_gy`", pattern, r"\(6, 20, 20\)")


@pytest.mark.parametrize(
    ("rx", "error"),
    [
        (-50, InputError),
        (0, InputError),
        (np.nan, InputError),
        (np.inf, InputError),
        ("50", TypeError),
        (True, TypeError),
        ([50], TypeError),
    ],
)
def test_evaluate_goals_refuses_impossible_prescriptions(rx, error, uniform):
    grid, structures, dose = uniform
    with pytest.raises(error, match="`prescription_gy`"):
        evaluate_goals(dose, structures, [parse_goal(GOAL)], grid, prescription_gy=rx)


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ({"grid": None}, "grid"),
        ({"structures": ["CentralTarget"]}, "structures"),
        ({"dose_gy": "fifty"}, "dose_gy"),
    ],
)
def test_evaluate_goals_wrong_argument_types(args, name, uniform):
    grid, structures, dose = uniform
    kwargs = {"dose_gy": dose, "structures": structures, "grid": grid, **args}
    with pytest.raises(TypeError, match=f"`{name}`"):
        evaluate_goals(kwargs["dose_gy"], kwargs["structures"], [parse_goal(GOAL)], kwargs["grid"])


def test_evaluate_goals_accepts_a_valid_dose_and_is_right(uniform):
    grid, structures, dose = uniform
    table = evaluate_goals(dose, structures, [parse_goal(GOAL)], grid, prescription_gy=50)
    assert table.all_passed and table[0].value == pytest.approx(50.0)


@pytest.fixture(scope="module")
def signed_dose(tmp_path_factory):
    from _other_systems_build import write_dose_variant

    path = tmp_path_factory.mktemp("rd") / "RD.dcm"
    write_dose_variant(path, bits=16, scaling=1e-3)
    return path


def _negative_stored(ds):
    a = ds.pixel_array.astype(np.int32)
    a.flat[7] = -23590
    ds.PixelRepresentation = 1
    ds.PixelData = np.clip(a, -32768, 32767).astype("<i2").tobytes()


def test_rtdose_with_negative_values_is_refused(signed_dose, tmp_path):
    path = tmp_path / "RD.dcm"
    path.write_bytes(signed_dose.read_bytes())
    edit(path, _negative_stored)
    with pytest.raises(DicomReadError) as exc:
        read_rtdose(path)
    assert_names(str(exc.value), str(path), r"\(7FE0,0010\)", r"-23\.59 Gy", r"\(3004,0004\)")


def test_rtdose_difference_dose_may_be_negative(signed_dose, tmp_path):
    path = tmp_path / "RD.dcm"
    path.write_bytes(signed_dose.read_bytes())

    def change(ds):
        _negative_stored(ds)
        ds.DoseType = "ERROR"

    edit(path, change)
    dose, _, _ = read_rtdose(path)
    assert dose.min() == pytest.approx(-23.59)


def test_cli_evaluate_refuses_a_negative_dose(signed_dose, small_phantom_dicom, tmp_path, capsys):
    from rtplan.cli import main

    path = tmp_path / "RD.dcm"
    path.write_bytes(signed_dose.read_bytes())
    edit(path, _negative_stored)
    assert main(["evaluate", str(path), str(small_phantom_dicom.rtstruct_path)]) == 2
    err = capsys.readouterr().err
    assert_names(err, r"^rtplan evaluate: error: ", r"\(7FE0,0010\)")


# ---------------------------------------------------------------------------------------
# Influence-matrix cache


@pytest.fixture(scope="module")
def cache_case(tmp_path_factory):
    dens, grid = water_phantom(900.0, spacing_mm=10.0, half_width_mm=50, depth_mm=120)
    beams = [Beam(0.0), Beam(90.0)]
    bl = beamlets_for_target(beams, np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 5.0]]))
    folder = tmp_path_factory.mktemp("cache")
    fresh = cached_influence_matrix(dens, grid, grid, beams, bl, cache_dir=folder, progress=False)
    return dens, grid, beams, bl, folder, fresh


def _cached(cache_case, folder):
    dens, grid, beams, bl = cache_case[:4]
    return cached_influence_matrix(dens, grid, grid, beams, bl, cache_dir=folder, progress=False)


def _tamper(path, fn, *, reseal):
    with h5py.File(path, "r+") as f:
        g = f["matrix"]
        arrays = {k: g[k][()] for k in ("data", "indices", "indptr")}
        fn(f, arrays)
        for k, v in arrays.items():
            del g[k]
            g.create_dataset(k, data=v)
        if reseal:
            from dose_engine._beamlets import Beamlets
            from dose_engine._cache import _BEAMLET_FIELDS

            lg = f["beamlets"]
            bl = Beamlets(
                *(lg[n][()] for n in _BEAMLET_FIELDS),
                lg["map_origin_mm"][()],
                tuple(tuple(int(v) for v in s) for s in lg["map_shapes"][()]),
            )
            f.attrs["arrays_sha256"] = _arrays_sha256(
                (arrays["data"], arrays["indices"], arrays["indptr"]), bl
            )


def _set(key, fn):
    def change(f, arrays):
        arrays[key] = fn(arrays[key])

    return change


def _nan_data(d):
    d = d.copy()
    d[::3] = np.nan
    return d


def _neg_data(d):
    d = d.copy()
    d[0] = -1.0
    return d


def _bad_index(ix):
    ix = ix.copy()
    ix[0] = 10**6
    return ix


def _bad_indptr(p):
    p = p.copy()
    p[-1] += 5
    return p


def _shape(f, arrays):
    f["matrix"].attrs["shape"] = np.asarray([5, 7], np.int64)


def _drop_checksum(f, arrays):
    del f.attrs["arrays_sha256"]


CACHE_CORRUPTIONS = {
    "nan-data-sealed": (_set("data", _nan_data), True, "non-finite"),
    "nan-data": (_set("data", _nan_data), False, "sha256"),
    "negative-data-sealed": (_set("data", _neg_data), True, "negative"),
    "changed-value": (_set("data", lambda d: d * 1.01), False, "sha256"),
    "index-out-of-range-sealed": (_set("indices", _bad_index), True, "out of range"),
    "indptr-sealed": (_set("indptr", _bad_indptr), True, "indptr"),
    "shape-sealed": (_shape, True, "rows for a dose grid"),
    "no-checksum": (_drop_checksum, False, "no arrays_sha256"),
}


@pytest.mark.parametrize("case", sorted(CACHE_CORRUPTIONS))
def test_corrupt_cache_file_is_recomputed_with_a_warning(case, cache_case, tmp_path):
    dens, grid, beams, bl, folder, fresh = cache_case
    change, reseal, reason = CACHE_CORRUPTIONS[case]
    (src,) = folder.glob("influence-*.h5")
    path = tmp_path / src.name
    path.write_bytes(src.read_bytes())
    _tamper(path, change, reseal=reseal)
    with pytest.raises(DoseEngineError, match=reason):
        load_influence_matrix(path)
    with pytest.warns(DoseEngineWarning, match=reason):
        im = cached_influence_matrix(
            dens, grid, grid, beams, bl, cache_dir=tmp_path, progress=False
        )
    assert im.settings["cache_hit"] is False
    assert (im.matrix != fresh.matrix).nnz == 0
    again = _cached(cache_case, tmp_path)
    assert again.settings["cache_hit"] is True  # the recomputed file replaced the bad one


@pytest.mark.parametrize("junk", [b"", b"not hdf5", b"\x89HDF\r\n\x1a\n" + b"\0" * 64])
def test_unreadable_cache_file_is_recomputed(junk, cache_case, tmp_path):
    dens, grid, beams, bl, folder, fresh = cache_case
    (src,) = folder.glob("influence-*.h5")
    (tmp_path / src.name).write_bytes(junk)
    with pytest.warns(DoseEngineWarning, match="recomputing"):
        im = cached_influence_matrix(
            dens, grid, grid, beams, bl, cache_dir=tmp_path, progress=False
        )
    assert im.settings["cache_hit"] is False and (im.matrix != fresh.matrix).nnz == 0


def test_pydicom_keeps_a_long_ds_as_un():
    """The premise of the VR UN case below: pydicom leaves >64 KiB UN values as bytes."""
    ds = pydicom.Dataset()
    raw(ds, "ContourData", b"1.0\\" * 20000 + b"1.0 ", "UN")
    assert ds["ContourData"].VR == "UN"
