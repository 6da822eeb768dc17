"""Images on a voxel grid: :class:`Image` = array ``[z, y, x]`` + :class:`~dose_engine.Grid`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dose_engine import Grid
from dose_engine._resample import resample as _resample_array

from ..errors import InputError

__all__ = ["Image"]


@dataclass(frozen=True, eq=False)
class Image:
    """A scalar volume in DICOM patient coordinates (LPS, mm).

    Parameters
    ----------
    array : (nz, ny, nx) ndarray
        Voxel values, indexed ``[z, y, x]`` (slice, row, column); each value lives at its
        voxel centre.  A CT holds Hounsfield units as float32.  Rows, columns and slices
        increase along patient +y (posterior), +x (left) and +z (superior).
    grid : Grid
        Where the voxels are; ``grid.shape`` must equal ``array.shape``.

    Raises
    ------
    InputError
        If the shapes differ or the array is not 3-D.

    Examples
    --------
    >>> import numpy as np, rtplan
    >>> img = rtplan.Image(np.zeros((2, 3, 4), np.float32),
    ...                    rtplan.Grid((2, 3, 4), (0, 0, 0), (1, 1, 2)))
    >>> img.resample(img.grid.with_spacing(2.0)).array.shape
    (2, 2, 2)
    """

    array: Any
    grid: Grid

    def __post_init__(self) -> None:
        shape = tuple(getattr(self.array, "shape", ()))
        if len(shape) != 3:
            raise InputError(f"`array` must be 3-D (nz, ny, nx); got an array of shape {shape}.")
        if shape != tuple(self.grid.shape):
            raise InputError(
                f"`array` has shape {shape} but `grid` describes {self.grid.shape} voxels "
                "(nz, ny, nx); build the Grid from the array's shape."
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(nz, ny, nx)``."""
        return self.grid.shape

    @property
    def dtype(self):
        """dtype of :attr:`array`."""
        return self.array.dtype

    def resample(self, grid: Grid, *, order: int = 1, fill_value: float = 0.0) -> Image:
        """This image interpolated at the voxel centres of ``grid``.

        Parameters
        ----------
        grid : Grid
            Target grid (same LPS frame, mm).
        order : int, optional
            0 nearest neighbour, 1 trilinear (default), up to 5 (spline).
        fill_value : float, optional
            Value outside the box spanned by this image's voxel centres; use ``-1000.0``
            (air) for a CT.

        Returns
        -------
        Image
            On ``grid``; float32 stays float32.

        See Also
        --------
        dose_engine._resample.resample : the array-level kernel (numpy or CuPy).
        """
        return Image(
            _resample_array(self.array, self.grid, grid, order=order, fill_value=fill_value),
            grid,
        )

    def value_at(self, points_mm, *, order: int = 1, fill_value: float = np.nan) -> np.ndarray:
        """Interpolated values at patient points.

        Parameters
        ----------
        points_mm : (..., 3) array_like, mm
            Points ``(x, y, z)`` in LPS.

        Returns
        -------
        values : (...) ndarray of float
            ``fill_value`` outside the box of voxel centres.
        """
        from scipy.ndimage import map_coordinates

        pts = np.asarray(points_mm, dtype=float)
        idx = self.grid.point_to_index(pts.reshape(-1, 3)).T
        vals = map_coordinates(
            np.asarray(self.array, dtype=float),
            idx,
            order=order,
            mode="constant",
            cval=fill_value,
        )
        return vals.reshape(pts.shape[:-1])

    def __repr__(self) -> str:
        return f"Image(dtype={self.array.dtype}, {self.grid!r})"
