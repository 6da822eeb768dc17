"""Helpers of the hostile-input suite (``tests/rtplan/test_hostile_*.py``, issue 13).

Malformed DICOM is made with pydicom from files the phantom writer produced; the
assertions every hostile case shares live here: the error is one line and names the file
and the element (or argument), and nothing was written.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from dose_engine._beam import Beam
from rtplan import DeliverableBeam, DeliverablePlan, Segment, load_machine

VARIAN = load_machine("VarianMLC120")
#: Longest one-line message a hostile case may produce (quoted values are capped at 200).
MAX_MESSAGE_CHARS = 1500


def one_line(message: str) -> str:
    """Assert ``message`` is one line of bounded length; return it."""
    text = str(message).rstrip("\n")
    assert "\n" not in text, f"message spans several lines: {text!r}"
    assert "Traceback" not in text
    assert len(text) <= MAX_MESSAGE_CHARS, f"message is {len(text)} characters long"
    return text


def assert_names(message: str, *patterns: str) -> None:
    """``message`` is one line and matches every regex of ``patterns``."""
    text = one_line(message)
    for pat in patterns:
        assert re.search(pat, text), f"{pat!r} not in {text!r}"


def raw(ds: Dataset, keyword: str, value: bytes, vr: str) -> None:
    """Put ``value`` into ``ds`` as stored bytes, as a broken exporter would write it."""
    tag = pydicom.tag.Tag(keyword)
    ds[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)


def edit(path: Path, fn: Callable[[Dataset], None]) -> None:
    ds = pydicom.dcmread(path)
    fn(ds)
    ds.save_as(path)


def copy_ct(ct_dir: Path, dst: Path) -> Path:
    shutil.copytree(ct_dir, dst)
    return dst


def first_slice(ct_dir: Path) -> Path:
    return sorted(ct_dir.glob("*.dcm"))[0]


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")} if folder.exists() else set()


def rect_segment(x1: float, x2: float, y1: float, y2: float, total_mu: float) -> Segment:
    """A rectangular MLC aperture with the jaws on it (closed pairs park at 0)."""
    c = VARIAN.mlc.leaf_centers_mm
    inside = (c > y1) & (c < y2)
    leaves = np.stack([np.where(inside, x1, 0.0), np.where(inside, x2, 0.0)])
    return Segment(leaves, {"X": (x1, x2), "Y": (y1, y2)}, total_mu, VARIAN.mlc.leaf_boundaries_mm)


def two_beam_plan(patient, *, rx_gy: float = 2.0) -> DeliverablePlan:
    """Two open 6 × 6 cm² beams on the patient's first target's centroid."""
    target = next(iter(patient.structures))
    iso = patient.structure(target).centroid_mm(patient.ct.grid)
    beams = [
        DeliverableBeam(
            n, f"G{g:g}", Beam(g, isocenter_mm=iso), VARIAN, (rect_segment(-30, 30, -30, 30, 50),)
        )
        for n, g in ((1, 0.0), (2, 90.0))
    ]
    return DeliverablePlan(beams, 2, rx_gy, target)
