"""Colours of the report: one distinct colour per ROI, and the isodose-line colours.

Every figure of the report (DVH plot, slice viewer, legends) takes its colours from
:func:`roi_colours`, so a structure has the same colour everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["ISODOSE_COLOURS", "MAX_MARKER_COLOUR", "hex_colour", "roi_colours"]

#: Qualitative palette (matplotlib ``tab10``, then ``Dark2``/``Set1`` hues not close to
#: those), 0–255 RGB, for ROIs without a usable (3006,002A) *ROIDisplayColor*.
ROI_PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (27, 158, 119),
    (117, 112, 179),
    (230, 171, 2),
    (166, 86, 40),
    (102, 166, 30),
    (231, 41, 138),
)

#: Two colours closer than this (Euclidean distance of 0–255 RGB) count as "the same".
MIN_COLOUR_DISTANCE = 100.0
#: A ROIDisplayColor whose R + G + B exceeds this is too light to read on white paper.
MAX_BRIGHTNESS = 720

#: Isodose-line colours, lowest level first (saturated hues, unlike the ROI palette);
#: more levels than colours reuse the last one.
ISODOSE_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 255),
    (0, 200, 255),
    (0, 230, 0),
    (255, 255, 0),
    (255, 140, 0),
    (255, 0, 0),
    (150, 0, 0),
    (255, 150, 150),
)
#: The global-maximum marker (drawn with a black outline).
MAX_MARKER_COLOUR = (255, 0, 255)


def _close(a, b) -> bool:
    return float(np.linalg.norm(np.subtract(a, b, dtype=float))) < MIN_COLOUR_DISTANCE


def roi_colours(
    display_colours: Mapping[str, Sequence[int] | None],
) -> dict[str, tuple[int, int, int]]:
    """A distinct, deterministic colour for each ROI.

    Parameters
    ----------
    display_colours : mapping of str to (3,) sequence of int or None
        ROI name → its (3006,002A) *ROIDisplayColor* (0–255 RGB) or None, in the order
        the ROIs are listed (the structure set's order).

    Returns
    -------
    dict of str to (3,) tuple of int, 0–255 RGB
        Same keys and order.  A ROI keeps its display colour unless it is missing, too
        light (R + G + B > :data:`MAX_BRIGHTNESS`) or within :data:`MIN_COLOUR_DISTANCE`
        of a colour already given to an earlier ROI (e.g. both lungs in one colour); it
        then gets the next colour of :data:`ROI_PALETTE` not close to any colour in use
        (cycling when the palette is exhausted).
    """
    out: dict[str, tuple[int, int, int]] = {}
    nxt = 0
    for name, rgb in display_colours.items():
        if rgb is not None:
            c = tuple(int(v) for v in rgb)
            if sum(c) <= MAX_BRIGHTNESS and not any(_close(c, u) for u in out.values()):
                out[name] = c  # type: ignore[assignment]
                continue
        for k in range(len(ROI_PALETTE)):
            cand = ROI_PALETTE[(nxt + k) % len(ROI_PALETTE)]
            if not any(_close(cand, u) for u in out.values()):
                nxt += k + 1
                break
        else:  # every palette colour in use: cycle deterministically
            cand = ROI_PALETTE[nxt % len(ROI_PALETTE)]
            nxt += 1
        out[name] = cand
    return out


def hex_colour(rgb: Sequence[int]) -> str:
    """``"#rrggbb"`` of a 0–255 RGB triple."""
    r, g, b = (int(v) for v in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"
