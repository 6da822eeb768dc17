"""dciodvfy (dicom3tools) on rtplan's RT-DOSE files: the 16-bit copy it can read."""

from __future__ import annotations

import pydicom


def to_16bit_copy(path, out):
    """A 16-bit copy of an RT-DOSE for dciodvfy.

    dciodvfy (dicom3tools) aborts with an assertion in attrothr.cc
    (``bitsallocated <= bytesinword*8u``) on 32-bit native pixel data, a known bug of
    the tool, so the header is validated on a copy whose pixels are the top 16 bits and
    whose DoseGridScaling is multiplied by 65536: every other element is unchanged.
    """
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelData = (arr >> 16).astype("<u2").tobytes()
    ds.DoseGridScaling = f"{float(ds.DoseGridScaling) * 65536:.10g}"
    ds.save_as(out)
    return out
