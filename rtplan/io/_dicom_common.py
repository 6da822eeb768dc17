"""Shared DICOM reading helpers: a safe ``dcmread`` and fast numeric element access."""

from __future__ import annotations

import logging
import os
import re
import struct
import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dose_engine._limits import check_limit

from .._internal.messages import quote
from ..errors import DicomReadError

__all__ = [
    "PATIENT_STUDY_KEYWORDS",
    "check_pixel_decoder",
    "floats",
    "has_dicm_prefix",
    "int_or",
    "patient_study_dataset",
    "read_dataset",
    "require",
    "sniff_dicom",
    "sop_class_uid",
    "stored_pixels",
    "tag_str",
]

logger = logging.getLogger("rtplan.io")

#: Patient module (C.7.1.1) and General Study module (C.7.2.1) keywords copied into
#: :attr:`rtplan.Patient.dicom_patient` so that new objects (RT-PLAN, RT-DOSE) can repeat them.
PATIENT_STUDY_KEYWORDS: tuple[str, ...] = (
    # Patient module
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "OtherPatientIDsSequence",
    "PatientComments",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "ResponsiblePerson",
    "ResponsibleOrganization",
    "PatientSpeciesDescription",
    # General Study module
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
    "PhysiciansOfRecord",
    "IssuerOfAccessionNumberSequence",
    "ProcedureCodeSequence",
    "ReasonForPerformedProcedureCodeSequence",
)


def has_dicm_prefix(path: str | os.PathLike) -> bool:
    """True if ``path`` has the 128-byte preamble followed by ``b"DICM"`` (PS3.10 7.1)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


#: Value representations (PS3.5 6.2) used to recognise explicit-VR data without a preamble.
_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL "
    b"UN UR US UT UV".split()
)


def sniff_dicom(path: str | os.PathLike) -> str | None:
    """What the first bytes of ``path`` say about it.

    Returns
    -------
    {"part10", "raw", "empty"} or None
        ``"part10"``: the PS3.10 128-byte preamble and ``b"DICM"``; ``"raw"``: no preamble,
        but the file starts with a plausible group 0002/0008 element in either byte order
        (a bare data set as some older systems and pydicom's ``rtstruct.dcm`` write it);
        ``"empty"``: zero bytes; None: anything else (not DICOM).
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return None
    if not head:
        return "empty"
    if len(head) == 132 and head[128:132] == b"DICM":
        return "part10"
    if len(head) < 8:
        return None
    for endian in "<>":
        group, elem = struct.unpack(endian + "HH", head[:4])
        if group not in (0x0002, 0x0008) or elem > 0x3FFF:
            continue
        if head[4:6] in _VRS:  # explicit VR
            return "raw"
        (length,) = struct.unpack(endian + "I", head[4:8])  # implicit VR: a sane length
        if length < 0x10000 or (elem == 0 and length == 4):
            return "raw"
    return None


def _redact(message: str) -> str:
    """pydicom's warnings quote element values (which may be a patient's name): drop them."""
    return re.sub(r"'[^']*'", "'…'", message)


def tag_str(keyword: str) -> str:
    """``"(gggg,eeee) Keyword"`` for a DICOM keyword."""
    tag = pydicom.datadict.tag_for_keyword(keyword)
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {keyword}" if tag is not None else keyword


def sop_class_uid(ds: Dataset) -> str:
    """(0008,0016) *SOPClassUID*, else the file meta's (0002,0002), else ""."""
    uid = str(ds.get("SOPClassUID", "") or "")
    if not uid:
        meta = getattr(ds, "file_meta", None)
        uid = str(meta.get("MediaStorageSOPClassUID", "") or "") if meta is not None else ""
    return uid


def check_pixel_decoder(ds: Dataset, path: str | os.PathLike) -> None:
    """Raise :class:`DicomReadError` if ``ds``'s compressed pixel data cannot be decoded here.

    The message names the file, the transfer syntax and the packages that would decode it
    (from pydicom's decoder registry), so a missing plugin never ends in a bare traceback.
    """
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts is None:
        return
    ts = pydicom.uid.UID(str(ts))
    if not ts.is_transfer_syntax:
        raise DicomReadError(
            f"'{path}': (0002,0010) TransferSyntaxUID {ts} is not a transfer syntax pydicom "
            "knows; re-export the file as Explicit VR Little Endian."
        )
    if not ts.is_compressed:
        return
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise DicomReadError(
            f"'{path}': pixel data is encoded as {ts.name} ({ts}), which pydicom cannot "
            "decode; re-export the CT uncompressed (Explicit VR Little Endian)."
        ) from None
    if not decoder.is_available:
        options = "; ".join(decoder.missing_dependencies) or "a pydicom pixel-data plugin"
        raise DicomReadError(
            f"'{path}': pixel data is compressed as {ts.name} ({ts}) and no installed "
            f"pydicom plugin can decode it. Install one of: {options} (for example "
            "`pip install pylibjpeg pylibjpeg-libjpeg`), or export the CT uncompressed."
        )


def int_or(value, default: int) -> int:
    """``int(value)``, or ``default`` when it is missing or not an integer."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def stored_pixels(ds: Dataset, path: str | os.PathLike, *, n_frames: int = 1) -> np.ndarray:
    """Stored pixel values of a greyscale image as an integer array (frames, rows, columns).

    Native (uncompressed) data in either byte order is read directly, honouring
    (0028,0101) *BitsStored* < (0028,0100) *BitsAllocated* (high bits masked, or
    sign-extended when (0028,0103) *PixelRepresentation* is 1).  Compressed data goes
    through pydicom's decoders after :func:`check_pixel_decoder`.

    Parameters
    ----------
    ds : pydicom.Dataset
        A CT slice, RT-DOSE or other single-sample image.
    path : path
        The file ``ds`` came from (named in errors).
    n_frames : int, optional
        Frames the caller expects ((0028,0008) *NumberOfFrames*; 1 for a CT slice).

    Returns
    -------
    (n_frames, Rows, Columns) ndarray of int

    Raises
    ------
    DicomReadError
        Not one greyscale sample per pixel, no (7FE0,0010) *PixelData*, fewer bytes than
        the frames need, an unsupported (0028,0100) *BitsAllocated* or *BitsStored*, or
        compressed data that cannot be decoded (the message names what to install).
    """
    rows, cols = int(require(ds, "Rows", path)), int(require(ds, "Columns", path))
    bits = int(require(ds, "BitsAllocated", path))
    representation = int_or(ds.get("PixelRepresentation"), -1) if "PixelRepresentation" in ds else 0
    if representation not in (0, 1):
        raise DicomReadError(
            f"'{path}': (0028,0103) PixelRepresentation is "
            f"{quote(ds.get('PixelRepresentation'))}; expected 0 (unsigned) or 1 (signed)."
        )
    signed = representation == 1
    spp = int_or(ds.get("SamplesPerPixel"), 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if spp != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomReadError(
            f"'{path}': (0028,0002) SamplesPerPixel is {spp} and (0028,0004) "
            f"PhotometricInterpretation is {photometric!r}; expected one greyscale sample "
            "per pixel (MONOCHROME2)."
        )
    if "PixelData" not in ds:
        raise DicomReadError(
            f"'{path}' has no (7FE0,0010) PixelData; the file is truncated or not an image."
        )
    shape = (n_frames, rows, cols)
    check_limit(
        "image_voxels",
        float(n_frames) * rows * cols,
        f"'{path}': (0028,0010) Rows {rows} × (0028,0011) Columns {cols} × {n_frames} frame(s)",
    )
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts is not None and pydicom.uid.UID(str(ts)).is_compressed:
        check_pixel_decoder(ds, path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                arr = np.asarray(ds.pixel_array)
        except Exception as exc:
            raise DicomReadError(
                f"Cannot decode the compressed (7FE0,0010) PixelData of '{path}' (transfer "
                f"syntax {pydicom.uid.UID(str(ts)).name}, {ts}): {type(exc).__name__}: {exc}. "
                "Re-export the object uncompressed."
            ) from exc
        if arr.size != np.prod(shape):
            raise DicomReadError(
                f"'{path}': decoded (7FE0,0010) PixelData has shape {arr.shape}; (0028,0008) "
                f"NumberOfFrames, (0028,0010) Rows and (0028,0011) Columns say {shape}."
            )
        return arr.reshape(shape)
    if bits not in (8, 16, 32):
        raise DicomReadError(
            f"'{path}': (0028,0100) BitsAllocated is {bits}; expected 8, 16 or 32."
        )
    raw = ds.PixelData
    need = n_frames * rows * cols * bits // 8
    if len(raw) < need:
        raise DicomReadError(
            f"'{path}' is truncated: (7FE0,0010) PixelData holds {len(raw)} bytes, "
            f"{n_frames} frame(s) of {rows}x{cols} pixels of {bits} bits need {need}. "
            "Re-export the file."
        )
    extra = np.frombuffer(raw, np.uint8, offset=need) if len(raw) > need else np.zeros(0)
    if len(raw) >= 2 * need or np.any(extra):  # trailing zero padding is tolerated
        raise DicomReadError(
            f"'{path}': (7FE0,0010) PixelData holds {len(raw)} bytes but (0028,0100) "
            f"BitsAllocated {bits}, (0028,0010) Rows {rows}, (0028,0011) Columns {cols} and "
            f"(0028,0008) NumberOfFrames {n_frames} account for {need}; the header does not "
            "describe the pixel data (wrong BitsAllocated?). Re-export the file."
        )
    encoding = getattr(ds, "original_encoding", (None, True))
    little = encoding[1] if encoding and encoding[1] is not None else True
    endian = "<" if little else ">"
    dtype = np.dtype(f"{endian}{'i' if signed else 'u'}{bits // 8}")
    arr = np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape)
    stored = int_or(ds.get("BitsStored"), bits)
    if not 1 <= stored <= bits:
        raise DicomReadError(
            f"'{path}': (0028,0101) BitsStored is {stored} with (0028,0100) BitsAllocated "
            f"{bits}; expected 1..{bits}."
        )
    high_bit = int_or(ds.get("HighBit"), stored - 1)
    if high_bit != stored - 1:
        raise DicomReadError(
            f"'{path}': (0028,0102) HighBit is {high_bit} with (0028,0101) BitsStored "
            f"{stored}; native pixel data needs HighBit = BitsStored - 1 (PS3.5 8.1.1)."
        )
    if stored < bits:
        arr = arr.astype(np.int64)
        if signed:
            shift = 64 - stored
            arr = (arr << shift) >> shift
        else:
            arr = arr & ((1 << stored) - 1)
    return arr


def read_dataset(
    path: str | os.PathLike, *, stop_before_pixels: bool = False, what: str = "DICOM file"
) -> Dataset:
    """Read a DICOM file, turning every failure into :class:`DicomReadError` naming the file.

    Files without the PS3.10 preamble (e.g. pydicom's ``rtstruct.dcm``) are read with
    ``force=True`` only when their first bytes look like a DICOM data set
    (:func:`sniff_dicom`), and accepted when they hold a (0008,0016) *SOPClassUID*.
    Implicit/explicit VR little endian, explicit VR big endian and deflated files are read
    natively.  pydicom's reading warnings are logged (with quoted values removed), not
    raised.

    Raises
    ------
    DicomReadError
        Not DICOM, truncated, or unreadable.
    """
    path = Path(path)
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise DicomReadError(
            f"Cannot open {what} '{path}' ({type(exc).__name__}: {exc.strerror or exc})."
        ) from exc
    kind = sniff_dicom(path)
    if kind == "empty":
        raise DicomReadError(f"'{path}' is empty (0 bytes); re-export the file.")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
            except InvalidDicomError:
                if kind != "raw":
                    raise DicomReadError(
                        f"'{path}' is not a DICOM file: no 'DICM' header and it does not "
                        "start like a DICOM data set. Remove it from the folder or re-export "
                        "it."
                    ) from None
                ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
                if "SOPClassUID" not in ds:
                    raise DicomReadError(
                        f"'{path}' is not a DICOM file: no 'DICM' header and no readable "
                        "(0008,0016) SOPClassUID. Remove it from the folder or re-export it."
                    ) from None
    except DicomReadError:
        raise
    except (
        OSError,
        EOFError,
        ValueError,
        KeyError,
        TypeError,
        IndexError,
        AttributeError,
        NotImplementedError,
        OverflowError,
        InvalidDicomError,
    ) as exc:
        raise DicomReadError(
            f"Cannot read {what} '{path}': it is truncated or corrupt "
            f"({type(exc).__name__}: {exc}). Re-export the file."
        ) from exc
    except Exception as exc:  # pydicom raises many kinds on garbage input
        raise DicomReadError(
            f"Cannot read {what} '{path}' ({type(exc).__name__}: {exc}); it is not valid DICOM."
        ) from exc
    for w in caught:
        logger.info("%s: pydicom: %s", path.name, _redact(str(w.message)))
    _check_complete(ds, path, what)
    return ds


def _check_complete(ds: Dataset, path: Path, what: str) -> None:
    """Raise if a top-level element claims more bytes than the file holds.

    pydicom reads a file cut short without complaint (the last element just gets fewer
    bytes); comparing each raw element's declared end with the file size catches it.
    """
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if ts == pydicom.uid.DeflatedExplicitVRLittleEndian:
        return  # offsets refer to the inflated stream; zlib itself reports a cut stream
    size = path.stat().st_size
    for tag in list(ds.keys()):
        elem = ds.get_item(tag)
        if not isinstance(elem, RawDataElement) or elem.length == 0xFFFFFFFF:
            continue
        if elem.value_tell is not None and elem.value_tell + elem.length > size:
            raise DicomReadError(
                f"Cannot read {what} '{path}': it is truncated (element "
                f"({tag >> 16:04X},{tag & 0xFFFF:04X}) needs {elem.length} bytes from offset "
                f"{elem.value_tell} but the file has {size} bytes). Re-export the file."
            )


def require(ds: Dataset, keyword: str, path: str | os.PathLike, *, what: str = ""):
    """``ds.<keyword>``, or a :class:`DicomReadError` naming the file and the element."""
    value = ds.get(keyword, None)
    if value is None or (isinstance(value, str | bytes) and len(value) == 0):
        tag = pydicom.datadict.tag_for_keyword(keyword)
        tag_s = f"({tag >> 16:04X},{tag & 0xFFFF:04X}) " if tag is not None else ""
        raise DicomReadError(
            f"'{path}'{(' ' + what) if what else ''} lacks the required element {tag_s}"
            f"{keyword}; re-export the object with it."
        )
    return value


def floats(ds: Dataset, keyword_or_tag, path: str | os.PathLike = "") -> np.ndarray:
    """Numeric (DS/FL/FD/IS) element as a float64 1-D array, parsing raw DS bytes directly.

    Much faster than letting pydicom build one ``DSfloat`` per value (ContourData).
    """
    tag = (
        pydicom.datadict.tag_for_keyword(keyword_or_tag)
        if isinstance(keyword_or_tag, str)
        else keyword_or_tag
    )
    if tag not in ds:
        return np.zeros(0)
    elem = ds.get_item(tag)
    try:
        if _stored_as_text(elem, tag):
            raw = elem.value
            if raw is None or len(raw) == 0:
                return np.zeros(0)
            text = raw.decode("ascii").replace("\\", " ").replace("\0", " ").strip()
            return np.array(text.split(), dtype=float) if text else np.zeros(0)
        value = ds[tag].value
        if ds[tag].VR == "UN" and isinstance(value, bytes) and _dictionary_vr(tag) in _TEXT_VRS:
            text = value.decode("ascii").replace("\\", " ").replace("\0", " ").strip()
            return np.array(text.split(), dtype=float) if text else np.zeros(0)
        if value is None:
            return np.zeros(0)
        if isinstance(value, str | bytes | float | int):
            value = [value]
        return np.asarray([float(v) for v in value], dtype=float)
    except (ValueError, UnicodeDecodeError, TypeError) as exc:
        keyword = pydicom.datadict.keyword_for_tag(tag)
        raise DicomReadError(
            f"'{path}': ({tag >> 16:04X},{tag & 0xFFFF:04X}) {keyword} holds non-numeric values "
            f"({quote(str(exc))}); expected decimal numbers."
        ) from exc


#: Numeric string VRs (PS3.5 6.2) parsed straight from their bytes.
_TEXT_VRS = ("DS", "IS")


def _dictionary_vr(tag) -> str:
    try:
        return pydicom.datadict.dictionary_VR(tag)
    except KeyError:
        return ""


def _stored_as_text(elem, tag) -> bool:
    """A raw element holding a DS/IS value as text: declared DS/IS, implicit VR, or VR UN
    for an element whose dictionary VR is DS/IS.

    Explicit VR little endian cannot give a DS value over 64 KiB a 2-byte length, so
    writers (pydicom among them) store e.g. a 3,000-point (3006,0050) ContourData as UN
    (allowed by PS3.5 6.2.2); pydicom only maps UN back to the dictionary VR below 64 KiB.
    """
    if not isinstance(elem, RawDataElement):
        return False
    if elem.VR in (None, *_TEXT_VRS):
        return True
    return elem.VR == "UN" and _dictionary_vr(tag) in _TEXT_VRS


def patient_study_dataset(ds: Dataset) -> Dataset:
    """A new Dataset holding only the Patient and General Study module elements of ``ds``."""
    out = Dataset()
    for kw in PATIENT_STUDY_KEYWORDS:
        if kw in ds:
            out[kw] = ds[kw]
    return out
