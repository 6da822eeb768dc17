"""Decimal String elements written as already-encoded bytes (contour data, leaf positions).

pydicom builds and validates one ``DSfloat`` per value when a list is assigned to a DS
element, and it decodes a :class:`~pydicom.dataelem.RawDataElement` again on writing
unless the dataset holding it says it is already in the written encoding.  For the
hundreds of thousands of values of a thorax's contours or an arc's leaf positions that
dominated writing (a 512 × 512 × 131 thorax's RT-STRUCT: about 40 CPU s, nearly all of
it pydicom re-parsing the contour strings).  Here the values are formatted once, kept
as bytes, and their item is marked explicit VR little endian (the transfer syntax every
rtplan writer uses), so :func:`pydicom.dcmwrite` copies them as they are
(:meth:`pydicom.dataset.Dataset.set_original_encoding`).
"""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.charset import default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

__all__ = ["raw_ds_element", "raw_item"]


def raw_ds_element(tag: BaseTag, texts: Iterable[str]) -> RawDataElement:
    """A DS element of ``texts`` (each a valid DS value, ≤ 16 characters), encoded as is:
    backslash-separated ASCII, padded with a space to even length."""
    raw = "\\".join(texts).encode("ascii")
    if len(raw) % 2:
        raw += b" "
    return RawDataElement(tag, "DS", len(raw), raw, 0, False, True)


def raw_item() -> Dataset:
    """A new sequence item whose raw elements pydicom writes without decoding them.

    The item is marked as read in explicit VR little endian with the default character
    set; pydicom re-encodes its elements only when the file's encoding differs (never
    for rtplan's writers).  Only ASCII elements (DS, IS, CS, UI) belong in it.
    """
    item = Dataset()
    item.set_original_encoding(False, True, default_encoding)
    return item
