"""Automatic optimisation helper structures: rings, overlap splits, normal tissue.

A planner adds these by hand before optimising; rtplan derives them from the protocol's
targets and organs at risk on the dose grid:

- **ring** around the targets, from ``inner_mm`` to ``outer_mm`` outside the target
  surface, to control dose fall-off;
- **target minus OAR** ("PTV minus overlap") and **OAR minus target** where a target and
  an organ at risk overlap, so coverage and sparing objectives do not fight over the
  same voxels;
- **normal tissue**: the body minus the targets expanded by a margin;
- with several **dose levels**: one ring per level (a voxel belongs to the ring of the
  highest level within ``ring_outer_mm``), and each lower-level target split into its part
  beyond the ``transition_margin_mm`` of the higher-level targets (``z<T>_low``) and the
  gradient zone inside that margin (``z<T>_gradient``), itself cut into bands by the
  relaxed level each voxel may reach (:func:`gradient_level_gy`,
  ``z<T>_gradient_<L>Gy``).

Rings and expansions are expressions of the structure algebra
(:func:`rtplan.structures.ring`, :func:`rtplan.structures.expand`): Euclidean distances in
mm between voxel centres, computed with :func:`scipy.ndimage.distance_transform_edt` using
the grid spacing (anisotropic voxels are handled), on a grid ``supersample`` times finer
than the dose grid (an odd factor, so that every dose-grid voxel centre is also a fine
voxel centre), cropped to the region that matters, and averaged back into a fractional
occupancy on the dose grid.  With ``supersample=3`` the volume of a 5–20 mm ring around a
sphere of radius 15–30 mm on 2–4 mm grids is within about 1.5 % of the analytic shell
volume (see ``tests/rtplan/planning/test_helper_structures.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from dose_engine import Grid

from ..errors import StructureError
from ..safety import nto_bands
from ..structures import expand, ring, union
from ..structures._algebra import _fine, evaluate_block

__all__ = [
    "nto_helpers",
    "HelperStructure",
    "build_helper_structures",
    "distance_outside_mm",
    "expanded_occupancy",
    "fine_grid",
    "gradient_level_gy",
    "ring_occupancy",
]

logger = logging.getLogger("rtplan.helpers")

#: Returns the fractional occupancy (nz, ny, nx) of a structure on the grid it is given.
OccupancyFn = Callable[[Grid], np.ndarray]


@dataclass(frozen=True, eq=False)
class HelperStructure:
    """A derived structure on the dose grid.

    Attributes
    ----------
    name : str
        E.g. ``"zRing_PTV"``, ``"zPTV-Core"``, ``"zCore-PTV"``, ``"zNormalTissue"``.
    kind : {"ring", "target_minus_oar", "oar_minus_target", "normal_tissue", "target_low", \
            "target_gradient", "target_gradient_band", "nto", "body", "hotspot"}
    occupancy : (nz, ny, nx) ndarray of float32
        Fractional occupancy in [0, 1] on the dose grid.
    sources : tuple of str
        Protocol structure names it was derived from.
    level_gy : float or None, Gy
        The dose level the helper stands for: a ring's level, a gradient band's relaxed
        level (:func:`gradient_level_gy`); ``None`` for the others.
    """

    name: str
    kind: str
    occupancy: np.ndarray
    sources: tuple[str, ...]
    level_gy: float | None = None

    @property
    def mask(self) -> np.ndarray:
        """Boolean mask, occupancy ≥ 0.5, shape (nz, ny, nx)."""
        return self.occupancy >= 0.5

    def volume_cc(self, grid: Grid) -> float:
        """Volume in cm³ (sum of occupancy × voxel volume)."""
        return float(self.occupancy.sum(dtype=np.float64)) * grid.voxel_volume_cc


def distance_outside_mm(mask: np.ndarray, spacing_mm) -> np.ndarray:
    """Distance from each voxel centre outside ``mask`` to the nearest voxel centre inside.

    Parameters
    ----------
    mask : (nz, ny, nx) ndarray of bool
    spacing_mm : (3,) tuple of float, mm
        Voxel size ``(dx, dy, dz)`` (a :attr:`Grid.spacing_mm`).

    Returns
    -------
    distance_mm : (nz, ny, nx) ndarray of float64, mm
        0 inside the mask; ``inf`` everywhere if the mask is empty.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise StructureError(f"`mask` must be a 3-D (nz, ny, nx) array; got shape {mask.shape}.")
    if not mask.any():
        return np.full(mask.shape, np.inf)
    dx, dy, dz = (float(s) for s in spacing_mm)
    return ndimage.distance_transform_edt(~mask, sampling=(dz, dy, dx))


#: Bands of the gradient zone: the relaxed level of :func:`gradient_level_gy` is taken at
#: the inner edge (the side of the higher level) of ``GRADIENT_BANDS`` bands of equal depth.
GRADIENT_BANDS = 3


def gradient_level_gy(
    own_gy: float, distance_mm: Mapping[float, np.ndarray], margin_mm: float
) -> np.ndarray:
    """Relaxed dose level of a lower-level target's voxels in the gradient zone.

    The level falls linearly from each higher level ``L`` at the surface of the targets
    of level ``>= L`` to the target's own level at ``margin_mm`` from them, evaluated at
    the inner edge of :data:`GRADIENT_BANDS` bands (so it never asks for less than the
    linear rule); near several higher levels the largest applies:
    ``max_L [own + (L - own) * (1 - floor(B * d_L / margin) / B)]`` for ``d_L < margin``.

    Parameters
    ----------
    own_gy : float, Gy
        The target's own level.
    distance_mm : mapping of float to (nz, ny, nx) ndarray, mm
        Per higher level ``L`` (Gy), the distance of each voxel centre from the targets of
        level ``>= L`` (:func:`distance_outside_mm`).
    margin_mm : float, mm
        The transition margin.

    Returns
    -------
    (nz, ny, nx) ndarray of float64, Gy
        ``own_gy`` where no higher level is within the margin.
    """
    out = None
    for level, dist in distance_mm.items():
        band = np.floor(GRADIENT_BANDS * np.asarray(dist) / margin_mm)
        frac = np.clip(1.0 - band / GRADIENT_BANDS, 0.0, 1.0)
        lv = own_gy + (level - own_gy) * frac
        out = lv if out is None else np.maximum(out, lv)
    if out is None:
        raise StructureError("`distance_mm` is empty: no higher dose level to relax towards.")
    return out


def fine_grid(grid: Grid, zyx_slices: tuple[slice, slice, slice], factor: int) -> Grid:
    """The grid ``factor`` times finer than ``grid`` covering the voxels ``zyx_slices``.

    ``factor`` must be odd so that every voxel centre of ``grid`` is a centre of the fine
    grid; fine voxel ``[k*factor + factor//2, ...]`` sits at the centre of coarse voxel
    ``k`` of the crop, so a ``(factor, factor, factor)`` block average maps back.
    """
    if factor < 1 or factor % 2 == 0:
        raise StructureError(f"`supersample` must be an odd integer >= 1; got {factor!r}.")
    return _fine(grid, zyx_slices, (factor,) * 3)


class _OccupancyRoi:
    """An occupancy function as a leaf of the structure algebra; its box (LPS mm) is that
    of its non-zero voxels on ``grid``."""

    def __init__(self, fn: OccupancyFn, grid: Grid) -> None:
        self.occupancy = fn
        idx = np.argwhere(np.asarray(fn(grid)) > 0)
        if idx.size == 0:
            raise StructureError("Cannot build a helper structure around an empty structure.")
        # one voxel beyond the non-zero voxels: a finer grid may find the structure in
        # the neighbours of its coarse voxels (e.g. centre-sampled occupancy)
        step = 1.5 * np.asarray(grid.spacing_mm)
        self.bounding_box = (
            grid.index_to_point(idx.min(axis=0)) - step,
            grid.index_to_point(idx.max(axis=0)) + step,
        )


def _on_grid(
    occupancy_fns: OccupancyFn | Iterable[OccupancyFn],
    grid: Grid,
    build: Callable,
    supersample: int,
) -> np.ndarray:
    """Occupancy on ``grid`` of ``build(union of the structures)`` (an algebra expression),
    evaluated ``supersample`` times finer along every axis."""
    if supersample < 1 or supersample % 2 == 0:
        raise StructureError(f"`supersample` must be an odd integer >= 1; got {supersample!r}.")
    fns = [occupancy_fns] if callable(occupancy_fns) else list(occupancy_fns)
    rois = {f"s{i}": _OccupancyRoi(fn, grid) for i, fn in enumerate(fns)}
    expr = build(union(*rois))
    sl, block = evaluate_block(expr, grid, rois, factors=(supersample,) * 3)
    out = np.zeros(grid.shape, dtype=np.float32)
    out[sl] = block
    return out


def ring_occupancy(
    occupancy_fns: OccupancyFn | Iterable[OccupancyFn],
    grid: Grid,
    *,
    inner_mm: float,
    outer_mm: float,
    supersample: int = 3,
) -> np.ndarray:
    """Fractional occupancy of the shell ``inner_mm < distance <= outer_mm`` around structures.

    :func:`rtplan.structures.ring` of the union of the structures, evaluated on a grid
    ``supersample`` times finer than ``grid``.

    Parameters
    ----------
    occupancy_fns : callable or iterable of callables
        ``fn(grid) -> (nz, ny, nx)`` fractional occupancy (e.g. ``Structure.occupancy``);
        the ring surrounds their union.
    grid : Grid
        The dose grid the result lives on.
    inner_mm, outer_mm : float, mm
        Distances from the structure surface (``0 <= inner_mm < outer_mm``).
    supersample : int, odd
        Sub-division of each dose voxel used for the distance transform.

    Returns
    -------
    occupancy : (nz, ny, nx) ndarray of float32
        Fraction of each dose voxel inside the ring.
    """
    if not 0 <= inner_mm < outer_mm:
        raise StructureError(
            f"Ring distances must satisfy 0 <= inner_mm < outer_mm; got {inner_mm!r}, {outer_mm!r}."
        )
    return _on_grid(
        occupancy_fns,
        grid,
        lambda s: ring(s, inner_mm=inner_mm, outer_mm=outer_mm),
        supersample,
    )


def expanded_occupancy(
    occupancy_fns: OccupancyFn | Iterable[OccupancyFn],
    grid: Grid,
    *,
    margin_mm: float,
    supersample: int = 3,
) -> np.ndarray:
    """Fractional occupancy of the union of structures expanded isotropically by ``margin_mm``
    (:func:`rtplan.structures.expand`, ``supersample`` times finer than ``grid``)."""
    if margin_mm < 0:
        raise StructureError(f"`margin_mm` must be >= 0; got {margin_mm!r}.")
    return _on_grid(occupancy_fns, grid, lambda s: expand(s, margin_mm), supersample)


def _gradient_bands(
    target: str,
    grad: np.ndarray,
    occupancy_fns: Mapping[str, OccupancyFn],
    levels: Mapping[str, float],
    grid: Grid,
    margin_mm: float,
    supersample: int,
) -> dict[str, HelperStructure]:
    """The gradient zone ``grad`` of ``target`` cut by relaxed level
    (:func:`gradient_level_gy`): ``z<T>_gradient_<L>Gy``, kind ``target_gradient_band``.

    The band of a voxel is found like the zone itself: the targets of level ``>= L`` are
    expanded (supersampled) by each band edge ``k * margin_mm / GRADIENT_BANDS``, and a
    voxel lies beyond an edge where that expansion covers less than half of it. A voxel
    of the zone beyond every edge keeps the target's own level."""
    own = levels[target]
    distances = {}
    for level in sorted({lv for lv in levels.values() if lv > own}):
        fns = [occupancy_fns[h] for h, lv in levels.items() if lv >= level]
        beyond = np.zeros(grid.shape)
        for k in range(1, GRADIENT_BANDS + 1):
            edge = k * margin_mm / GRADIENT_BANDS
            near = expanded_occupancy(fns, grid, margin_mm=edge, supersample=supersample)
            beyond += near < 0.5
        # the inner edge of each voxel's band, mm (the rule is taken there)
        distances[level] = beyond * margin_mm / GRADIENT_BANDS
    relaxed = np.round(gradient_level_gy(own, distances, margin_mm), 4)
    out = {}
    for lv in np.unique(relaxed[grad > 0]):
        occ = np.where(relaxed == lv, grad, 0.0).astype(np.float32)
        name = f"z{target}_gradient_{lv:g}Gy"
        out[name] = HelperStructure(name, "target_gradient_band", occ, (target,), float(lv))
    return out


def build_helper_structures(
    occupancy_fns: Mapping[str, OccupancyFn],
    grid: Grid,
    *,
    targets: Iterable[str],
    oars: Iterable[str],
    body_occupancy: np.ndarray | None = None,
    ring: bool = True,
    ring_inner_mm: float = 5.0,
    ring_outer_mm: float = 20.0,
    overlap: bool = True,
    normal_tissue: bool = True,
    normal_tissue_margin_mm: float = 20.0,
    normal_tissue_outer_mm: float | None = None,
    levels_gy: Mapping[str, float] | None = None,
    transition_margin_mm: float | None = None,
    supersample: int = 3,
) -> dict[str, HelperStructure]:
    """Derive the helper structures a planner would add for a protocol.

    Parameters
    ----------
    occupancy_fns : mapping of str to callable
        Protocol structure name → ``fn(grid)`` returning fractional occupancy.
    grid : Grid
        Dose grid.
    targets, oars : iterable of str
        Protocol names (keys of ``occupancy_fns``) of the targets and organs at risk.
    body_occupancy : (nz, ny, nx) ndarray, optional
        Occupancy of the external contour on ``grid``; the whole grid if omitted.  Rings
        and normal tissue are clipped to it.
    ring, overlap, normal_tissue : bool
        Which helpers to build.
    ring_inner_mm, ring_outer_mm, normal_tissue_margin_mm : float, mm
    normal_tissue_outer_mm : float, mm, optional
        Limit the normal tissue to within this distance of the targets (a thick shell
        where dose fall-off is shaped; keeps the optimisation problem small).  ``None``:
        the whole body beyond the margin.
    levels_gy : mapping of str to float, Gy, optional
        Dose level per target.  With several distinct levels the ring is built per level
        (``"zRing"`` for the highest, ``"zRing_<L>Gy"`` for the others, outside every
        target and beyond ``ring_outer_mm`` of higher-level targets).
    transition_margin_mm : float, mm, optional
        With several levels: split each lower-level target into ``"z<T>_low"`` (farther
        than this from every higher-level target) and ``"z<T>_gradient"`` (within it,
        outside the higher-level targets), the latter also as bands
        ``"z<T>_gradient_<L>Gy"`` of relaxed level ``L`` (:func:`gradient_level_gy`).
        ``None``: no split.
    supersample : int, odd

    Returns
    -------
    dict of str to HelperStructure
        Keyed by helper name: ``"zRing"`` (around all targets, or the highest level's
        targets), ``"zRing_<L>Gy"``, ``"z<T>-<O>"`` and ``"z<O>-<T>"`` for each
        overlapping target/OAR pair, ``"z<T>_low"``, ``"z<T>_gradient"``,
        ``"z<T>_gradient_<L>Gy"``, ``"zNormalTissue"``.
    """
    targets = [t for t in targets if t in occupancy_fns]
    oars = [o for o in oars if o in occupancy_fns]
    body = (
        np.ones(grid.shape, dtype=np.float32)
        if body_occupancy is None
        else np.asarray(body_occupancy, dtype=np.float32)
    )
    if body.shape != grid.shape:
        raise StructureError(
            f"`body_occupancy` has shape {body.shape} but the dose grid is {grid.shape}."
        )
    out: dict[str, HelperStructure] = {}
    if not targets:
        return out
    coarse = {
        name: np.asarray(occupancy_fns[name](grid), dtype=np.float32) for name in (*targets, *oars)
    }
    target_fns = [occupancy_fns[t] for t in targets]
    target_union = np.zeros(grid.shape, dtype=np.float32)
    for t in targets:
        target_union = np.maximum(target_union, coarse[t])
    levels = {t: float((levels_gy or {}).get(t, 0.0)) for t in targets}
    distinct = sorted(set(levels.values()), reverse=True)

    def higher_than(level: float) -> list:
        return [occupancy_fns[t] for t in targets if levels[t] > level]

    if ring:
        for i, level in enumerate(distinct):
            group = [t for t in targets if levels[t] == level]
            occ = ring_occupancy(
                [occupancy_fns[t] for t in group],
                grid,
                inner_mm=ring_inner_mm,
                outer_mm=ring_outer_mm,
                supersample=supersample,
            )
            occ = np.minimum(occ, body)
            if len(distinct) > 1:  # outside every target, and nearer to no higher level
                occ = occ * (1.0 - target_union)
                if higher_than(level):
                    near = expanded_occupancy(
                        higher_than(level), grid, margin_mm=ring_outer_mm, supersample=1
                    )
                    occ = occ * (1.0 - near)
            occ = occ.astype(np.float32)
            name = "zRing" if i == 0 else f"zRing_{level:g}Gy"
            if occ.any():
                out[name] = HelperStructure(name, "ring", occ, tuple(group), level)
    if transition_margin_mm is not None and len(distinct) > 1:
        for t in targets:
            fns = higher_than(levels[t])
            if not fns:
                continue
            near = expanded_occupancy(
                fns, grid, margin_mm=transition_margin_mm, supersample=supersample
            )
            inside = np.zeros(grid.shape, dtype=np.float32)
            for h in targets:
                if levels[h] > levels[t]:
                    inside = np.maximum(inside, coarse[h])
            low = (coarse[t] * (1.0 - near)).astype(np.float32)
            grad = (coarse[t] * near * (1.0 - inside)).astype(np.float32)
            for name, kind, occ in (
                (f"z{t}_low", "target_low", low),
                (f"z{t}_gradient", "target_gradient", grad),
            ):
                if occ.any():
                    out[name] = HelperStructure(name, kind, occ, (t,))
            out.update(
                _gradient_bands(
                    t, grad, occupancy_fns, levels, grid, transition_margin_mm, supersample
                )
            )
    if overlap:
        for t in targets:
            t_mask = coarse[t] >= 0.5
            for o in oars:
                o_mask = coarse[o] >= 0.5
                both = t_mask & o_mask
                if not both.any():
                    continue
                t_minus = np.where(o_mask, 0.0, coarse[t]).astype(np.float32)
                o_minus = np.where(t_mask, 0.0, coarse[o]).astype(np.float32)
                logger.info(
                    "%s and %s overlap in %d voxels; adding overlap helpers", t, o, int(both.sum())
                )
                if t_minus.any():
                    out[f"z{t}-{o}"] = HelperStructure(
                        f"z{t}-{o}", "target_minus_oar", t_minus, (t, o)
                    )
                if o_minus.any():
                    out[f"z{o}-{t}"] = HelperStructure(
                        f"z{o}-{t}", "oar_minus_target", o_minus, (o, t)
                    )
    if normal_tissue:
        grown = expanded_occupancy(
            target_fns, grid, margin_mm=normal_tissue_margin_mm, supersample=supersample
        )
        occ = np.clip(body - grown, 0.0, 1.0).astype(np.float32)
        if normal_tissue_outer_mm is not None:
            if not normal_tissue_outer_mm > normal_tissue_margin_mm:
                raise StructureError(
                    f"`normal_tissue_outer_mm` ({normal_tissue_outer_mm!r}) must exceed "
                    f"`normal_tissue_margin_mm` ({normal_tissue_margin_mm!r})."
                )
            reach = expanded_occupancy(
                target_fns, grid, margin_mm=normal_tissue_outer_mm, supersample=1
            )
            occ = np.minimum(occ, reach)
        if occ.any():
            out["zNormalTissue"] = HelperStructure(
                "zNormalTissue", "normal_tissue", occ, tuple(targets)
            )
    return out


def nto_helpers(occupancy_fns: Iterable, grid, body_occupancy, settings) -> dict[str, Any]:
    """The shells of :func:`nto_bands` around the union of the targets, in the body.

    Parameters
    ----------
    occupancy_fns : iterable of callable
        ``fn(grid) -> (nz, ny, nx)`` fractional occupancy of each target.
    grid : dose_engine.Grid
        The dose grid.
    body_occupancy : (nz, ny, nx) ndarray
        The body on ``grid``; the shells are clipped to it.
    settings : rtplan.protocols.SafetySettings

    Returns
    -------
    dict of str to HelperStructure
        Kind ``"nto"``: the dose-grid voxels whose centres lie in each shell (outside
        every target), clipped to the body; empty shells are left out.
    """
    fns = list(occupancy_fns)
    body = np.asarray(body_occupancy, dtype=np.float32)
    out = {}
    # one expansion per edge (voxel centres: a soft shaping term needs no partial volume)
    grown = {}
    for name, inner, outer, _ in nto_bands(settings):
        for edge in (inner, outer):
            if edge not in grown:
                grown[edge] = expanded_occupancy(fns, grid, margin_mm=edge, supersample=1)
        occ = np.minimum(np.clip(grown[outer] - grown[inner], 0.0, 1.0), body)
        if occ.any():
            out[name] = HelperStructure(name, "nto", occ.astype(np.float32), ())
    return out
