r"""The photon pencil-beam model: parameters, file format and the dose-of-a-rectangle kernel.

Model
-----
A beam is a fluence in the isocentre plane (BLD coordinates ``x, y``): a rectangle ``R``
with unit fluence per MU blurred by the focal source (Gaussian ``σ_src``) plus a fraction
``w_h`` of extra-focal head scatter (a broad Gaussian ``σ_h``), which makes the output depend
on field size (head-scatter factor) while staying linear in the aperture.  A point at
distance ``z`` from the source along the beam axis and radiological depth ``d`` (mm of
water-equivalent path along the ray from the source, from exact ray tracing) receives

.. math::

   D = N \left(\frac{SAD}{z}\right)^2 A(d) \sum_{f \in \{src, h\}} w_f
       \left[P(σ_f ⊕ σ_p(d)) + r(d) P(σ_f ⊕ σ_s(d))\right]

plus, when the model has a ``scatter_tail``, the long-range phantom scatter

.. math::

   D_{tail} = N \left(\frac{SAD}{z}\right)^2 A(d)\, r_t(d)\, P(σ_{src} ⊕ σ_t(d))

(one broad Gaussian of width ``σ_t(d) = t0 + t1 d`` weighted by its own depth function
``r_t(d)``; it carries the scatter of the whole fluence, focal and extra-focal, whose
shapes differ only near the field edges on its scale, and leaves the horn out: the
flattened beam's dip is narrower than the tail, which blurs it below 0.1 % of the dose,
and an FFF beam's fitted tail absorbs its peak), and, when the model has an
``electron_contamination``, the dose of the charged particles that reach the phantom with
the beam (from the flattening filter, the collimators and the air)

.. math::

   D_e = N \left(\frac{SAD}{z}\right)^2 w_e\, e^{-d/λ_e}\, P(σ_e)

(an exponential in radiological depth, of e-folding depth ``λ_e``, times the aperture
blurred by a broad Gaussian ``σ_e``, mm in the isocentre plane, so that it grows with the
field size and saturates: Sjögren R, Karlsson M 1996, Med Phys 23:1873; the contamination
pencil kernel of Ahnesjö A, Andreo P 1989, Phys Med Biol 34:1451, exponential in depth and
Gaussian-like laterally), with ``w_src = 1 - w_h`` (the focal part
carries the off-axis horn factor
``1 - a exp(-(x²+y²)/2s²)``, integrated exactly as a product of Gaussians, see
:func:`horn_axis_terms`),
``a ⊕ b = sqrt(a² + b²)`` (Gaussians convolve; the focal blur
``σ_src`` and the head-scatter width ``σ_h`` each have one value along BLD x (MLC
direction) and one along y (jaw direction)), the lateral kernel
widths ``σ_p(d), σ_s(d)`` (mm at the point, scaled to the isocentre plane by ``SAD / z``),
the depth functions ``A(d)`` (primary) and ``r(d)`` (scatter-to-primary weight), and ``P(σ)``
the integral of a unit 2-D Gaussian over ``R`` projected to the point's fan coordinates
``(u, v)``:

.. math::

   P(σ) = \tfrac14 [\mathrm{erf}(\tfrac{x_2-u}{\sqrt2σ})
          - \mathrm{erf}(\tfrac{x_1-u}{\sqrt2σ})]
          [\mathrm{erf}(\tfrac{y_2-v}{\sqrt2σ}) - \mathrm{erf}(\tfrac{y_1-v}{\sqrt2σ})].

This is the analytically integrated form of a pencil-beam kernel that is a sum of Gaussians
(cf. Bortfeld T, Schlegel W, Rhein B 1993, Med Phys 20:311, doi:10.1118/1.597070; Ahnesjö A,
Saxner M, Trepp A 1992, Med Phys 19:263, doi:10.1118/1.596856; Nyholm T, Olofsson J,
Ahnesjö A, Karlsson M 2006, Phys Med Biol 51:6245, doi:10.1088/0031-9155/51/23/019, who
parametrise the scatter part of the pencil kernel with several radial terms): the
narrow scatter Gaussian holds the scatter within a few cm, which saturates by 10 × 10 cm²;
the tail makes the phantom scatter, and so the depth dose, keep growing with the field
size.  The dose of any aperture is the sum of the doses of its rectangles, so beamlet
columns add up exactly to the open-field dose.

``N`` is set so that a 10 × 10 cm² field at SSD 1000 mm gives the calibration dose (default
0.01 Gy/MU) at ``dmax``.  Parameters are fitted by :mod:`dose_engine._fit` to measured data.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._arguments import ARRAY, PATH, check_arguments, optional
from ._backend import erf
from ._data_files import read_json_data
from .errors import BeamModelError, InvalidGeometryError

__all__ = ["FLUENCE_MODES", "BeamModel", "load_beam_model", "rectangle_dose"]

DEFAULT_MODEL = "beam_model_6MV.json"
#: Fluence modes of a beam model (its file's ``"fluence_mode"``, default ``"STANDARD"``):
#: a flattened beam, or a flattening-filter-free one (DICOM (3002,0051) *FluenceMode*
#: NON_STANDARD with (3002,0052) *FluenceModeID* FFF).
FLUENCE_MODES: tuple[str, ...] = ("STANDARD", "FFF")

REQUIRED_KEYS: tuple[str, ...] = (
    "name",
    "sad_mm",
    "calibration",
    "normalisation_gy_per_mu",
    "depth_mm",
    "primary_weight",
    "scatter_ratio",
    "sigma_primary_mm",
    "sigma_scatter_mm",
    "source_sigma_mm",
    "head_scatter_weight",
    "head_scatter_sigma_mm",
    "provenance",
)
CALIBRATION_KEYS: tuple[str, ...] = ("dose_gy_per_mu", "field_size_mm", "ssd_mm", "depth_mm")

#: Step of the uniform depth lookup tables used by the kernels, mm.
TABLE_STEP_MM = 0.5


@check_arguments(parameters="collections.abc:Mapping")
@dataclass(frozen=True)
class BeamModel:
    """A fitted pencil-beam model (see the module docstring for the formula).

    Attributes
    ----------
    parameters : dict
        The content of the model file (JSON), including ``provenance``.
    path : str
        Where it was read from.
    """

    parameters: dict[str, Any]
    path: str = "<memory>"
    _tables: dict[str, np.ndarray] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        p = self.parameters
        missing = [k for k in REQUIRED_KEYS if k not in p]
        if not missing and isinstance(p.get("calibration"), dict):
            missing += [f"calibration.{k}" for k in CALIBRATION_KEYS if k not in p["calibration"]]
        if missing:
            raise BeamModelError(
                f"Beam model {self.path} lacks the key(s) {', '.join(missing)}; a model file needs "
                f"{', '.join(REQUIRED_KEYS)}. Regenerate it with `python -m dose_engine.fit`."
            )
        depth = np.asarray(p["depth_mm"], float)
        prim = np.asarray(p["primary_weight"], float)
        ratio = np.asarray(p["scatter_ratio"], float)
        if (
            depth.ndim != 1
            or depth.size < 2
            or prim.shape != depth.shape
            or ratio.shape != depth.shape
        ):
            raise BeamModelError(
                f"Beam model {self.path}: depth_mm, primary_weight and scatter_ratio must be "
                f"1-D lists of equal length; got {depth.shape}, {prim.shape}, {ratio.shape}."
            )
        if np.any(np.diff(depth) <= 0) or depth[0] != 0:
            raise BeamModelError(
                f"Beam model {self.path}: depth_mm must start at 0 and increase strictly."
            )
        mode = p.get("fluence_mode", "STANDARD")
        if not isinstance(mode, str) or mode.upper() not in FLUENCE_MODES:
            raise BeamModelError(
                f"Beam model {self.path}: fluence_mode must be one of "
                f"{', '.join(FLUENCE_MODES)}; got {mode!r}."
            )
        energy = p.get("energy_mv")
        if energy is not None and (
            isinstance(energy, bool)
            or not isinstance(energy, int | float)
            or not (0 < energy < 100)
        ):
            raise BeamModelError(
                f"Beam model {self.path}: energy_mv must be a nominal energy in MV (0-100) "
                f"or null; got {energy!r}."
            )
        dip = float((p.get("horn") or {}).get("dip", 0.0))
        if not dip < 1.0:
            raise BeamModelError(
                f"Beam model {self.path}: horn.dip is {dip:g}; the off-axis fluence "
                "1 - dip exp(-r^2/2s^2) must stay positive (dip < 1)."
            )
        tail = _check_tail(p.get("scatter_tail"), self.path)
        self._check_contamination()
        n = int(math.ceil(depth[-1] / TABLE_STEP_MM)) + 1
        grid = np.arange(n) * TABLE_STEP_MM
        # float64: a float32 table rounds a change of 1e-8 in a scatter-ratio node away, which
        # left the commissioning fit's finite-difference Jacobian without those columns (the
        # fit then stopped wherever the rounding of one numpy build took it).  Kernels cast
        # the interpolated values to the dtype of the points.
        tables = {"primary": np.interp(grid, depth, prim), "ratio": np.interp(grid, depth, ratio)}
        if tail is not None:
            tables["tail"] = np.interp(grid, tail[0], tail[1])
        object.__setattr__(self, "_tables", tables)

    # ----------------------------------------------------------- accessors
    @property
    def sad_mm(self) -> float:
        """Source-axis distance of the machine the model was fitted for, mm."""
        return float(self.parameters["sad_mm"])

    @property
    def name(self) -> str:
        return str(self.parameters["name"])

    @property
    def energy_mv(self) -> float | None:
        """Nominal energy the model is for, MV (the file's ``energy_mv``; None if unstated)."""
        energy = self.parameters.get("energy_mv")
        return None if energy is None else float(energy)

    @property
    def fluence_mode(self) -> str:
        """``"STANDARD"`` (flattened) or ``"FFF"`` (flattening-filter free): the file's
        ``fluence_mode``, default STANDARD."""
        return str(self.parameters.get("fluence_mode", "STANDARD")).upper()

    @property
    def max_depth_mm(self) -> float:
        """Deepest tabulated radiological depth, mm (deeper points use the last value)."""
        return float(self.parameters["depth_mm"][-1])

    @property
    def horn(self) -> tuple[float, float]:
        """``(a, s)`` of the off-axis fluence ``1 - a exp(-(x² + y²) / (2 s²))`` (iso plane).

        A shallow central dip (``a`` ≈ a few %, ``s`` ≈ 50-100 mm) that reproduces the
        flattening-filter "horns" of the profiles and saturates far off axis; ``a = 0``
        (or no ``horn`` entry in the file) switches it off.  A flattening-filter-free beam
        has ``a < 0``: a central peak ``1 + |a|`` times the fluence far off axis.
        """
        h = self.parameters.get("horn")
        if not h:
            return 0.0, 1.0
        return float(h["dip"]), float(h["sigma_mm"])

    @property
    def electron_contamination(self) -> tuple[float, float, float]:
        """``(w_e, λ_e, σ_e)`` of the electron-contamination term ``w_e exp(-d/λ_e) P(σ_e)``
        (weight relative to the primary depth function's scale, e-folding depth mm, lateral
        width mm in the isocentre plane); ``w_e = 0`` (or no entry in the file) switches it
        off."""
        e = self.parameters.get("electron_contamination")
        if not e:
            return 0.0, 1.0, 1.0
        return float(e["weight"]), float(e["depth_mm"]), float(e["sigma_mm"])

    def _check_contamination(self) -> None:
        """Refuse an ``electron_contamination`` entry that is not ``{"weight": w >= 0,
        "depth_mm": λ > 0, "sigma_mm": σ > 0}``."""
        e = self.parameters.get("electron_contamination")
        if e is None:
            return
        try:
            w, lam, sig = (float(e[k]) for k in ("weight", "depth_mm", "sigma_mm"))
        except (KeyError, TypeError, ValueError) as exc:
            raise BeamModelError(
                f"Beam model {self.path}: electron_contamination must be {{'weight': w, "
                f"'depth_mm': λ, 'sigma_mm': σ}}; got {e!r} ({exc})."
            ) from None
        if not (math.isfinite(w) and w >= 0 and lam > 0 and sig > 0 and math.isfinite(lam + sig)):
            raise BeamModelError(
                f"Beam model {self.path}: electron_contamination needs weight >= 0 and a "
                f"positive depth_mm and sigma_mm; got weight {w:g}, depth_mm {lam:g}, "
                f"sigma_mm {sig:g}."
            )

    def provenance(self) -> dict[str, Any]:
        """Where the parameters come from (data, script, date, residuals)."""
        return dict(self.parameters["provenance"])

    def fingerprint(self) -> str:
        """Return the SHA-256 of the canonical JSON of the parameters (for cache keys)."""
        import hashlib

        blob = json.dumps(self.parameters, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    # ----------------------------------------------------------- kernels
    def components(self, z_mm, depth_mm, xp):
        """Weights and iso-plane widths of the four Gaussian terms at each point.

        Parameters
        ----------
        z_mm : (m,) array, mm
            Distance from the source along the beam axis.
        depth_mm : (m,) array, mm
            Radiological depth.
        xp : namespace

        Returns
        -------
        weights : list of 4 to 6 (m,) arrays, Gy/MU per unit ``P``
            Focal primary, focal scatter, extra-focal primary, extra-focal scatter, then
            the long-range scatter tail (with a ``scatter_tail``) and the electron
            contamination (with a non-zero ``electron_contamination``); the horn applies
            to the first two.
        sig_x, sig_y : lists of 4 to 6 (m,) arrays, mm in the isocentre plane
            Widths along BLD x and y (the focal-source blur differs between the MLC and
            jaw directions: ``source_sigma_mm = [σ_x, σ_y]``).
        """
        p = self.parameters
        dt = depth_mm.dtype
        sad = self.sad_mm
        d = xp.clip(depth_mm, 0.0, self.max_depth_mm)
        fidx = d / TABLE_STEP_MM
        i0 = xp.astype(xp.floor(fidx), xp.int64)
        n = int(self._tables["primary"].size)
        i0 = xp.clip(i0, 0, n - 2)
        frac = fidx - xp.astype(i0, dt)
        out = []
        for key in self._tables:  # primary, ratio[, tail]
            tab = xp.asarray(self._tables[key], dtype=dt, **_device_kw(depth_mm, xp))
            a = xp.take(tab, i0)
            b = xp.take(tab, i0 + 1)
            out.append(a + (b - a) * frac)
        prim, ratio = out[:2]
        scale = sad / z_mm
        p0, p1 = p["sigma_primary_mm"]
        s0, s1 = p["sigma_scatter_mm"]
        sp = (p0 + p1 * d) * scale
        ss = (s0 + s1 * d) * scale
        srcx2, srcy2 = (float(v) ** 2 for v in _pair(p["source_sigma_mm"]))
        hx2, hy2 = (float(v) ** 2 for v in _pair(p["head_scatter_sigma_mm"]))
        wh = float(p["head_scatter_weight"])
        amp = float(p["normalisation_gy_per_mu"]) * scale * scale * prim
        weights = [amp * (1.0 - wh), amp * (1.0 - wh) * ratio, amp * wh, amp * wh * ratio]
        sp2, ss2 = sp * sp, ss * ss
        sig_x = [xp.sqrt(sp2 + srcx2), xp.sqrt(ss2 + srcx2), xp.sqrt(sp2 + hx2), xp.sqrt(ss2 + hx2)]
        sig_y = [xp.sqrt(sp2 + srcy2), xp.sqrt(ss2 + srcy2), xp.sqrt(sp2 + hy2), xp.sqrt(ss2 + hy2)]
        if len(out) == 3:  # the long-range scatter tail
            t0, t1 = p["scatter_tail"]["sigma_mm"]
            st = (t0 + t1 * d) * scale
            st2 = st * st
            weights.append(amp * out[2])
            sig_x.append(xp.sqrt(st2 + srcx2))
            sig_y.append(xp.sqrt(st2 + srcy2))
        w_e, lam_e, sig_e = self.electron_contamination
        if w_e > 0.0:
            norm = float(p["normalisation_gy_per_mu"]) * w_e
            weights.append(norm * scale * scale * xp.exp(d * (-1.0 / lam_e)))
            sig_x.append(xp.full(d.shape, sig_e, dtype=dt, **_device_kw(depth_mm, xp)))
            sig_y.append(sig_x[-1])
        return weights, sig_x, sig_y


def _check_tail(tail, path: str) -> tuple[np.ndarray, np.ndarray] | None:
    """``(depth_mm, ratio)`` of a model file's ``scatter_tail`` entry (None without one).

    ``{"sigma_mm": [t0, t1], "depth_mm": [...], "ratio": [...]}``: width ``t0 + t1 d``
    (mm, positive at every depth up to 600 mm) and the tail's weight relative to the primary
    at depth nodes (increasing from 0, ratio ≥ 0; constant beyond the last node).
    """
    if tail is None:
        return None
    try:
        t0, t1 = (float(v) for v in tail["sigma_mm"])
        depth = np.asarray(tail["depth_mm"], float)
        ratio = np.asarray(tail["ratio"], float)
    except (KeyError, TypeError, ValueError) as exc:
        raise BeamModelError(
            f"Beam model {path}: scatter_tail must be {{'sigma_mm': [t0, t1], 'depth_mm': "
            f"[...], 'ratio': [...]}}; got {tail!r} ({exc})."
        ) from None
    if (
        depth.ndim != 1
        or depth.size < 1
        or ratio.shape != depth.shape
        or depth[0] != 0.0
        or np.any(np.diff(depth) <= 0)
        or not np.all(np.isfinite(ratio))
        or np.any(ratio < 0)
        or not (t0 > 0 and t0 + 600.0 * t1 > 0)
    ):
        raise BeamModelError(
            f"Beam model {path}: scatter_tail needs depth_mm increasing from 0, as many "
            f"non-negative ratios and a positive width; got sigma_mm [{t0:g}, {t1:g}], "
            f"depth_mm {depth.tolist()}, ratio {ratio.tolist()}."
        )
    return depth, ratio


def _pair(value) -> tuple[float, float]:
    """``[x, y]`` values, or one number for both BLD directions."""
    if np.ndim(value) == 0:
        return float(value), float(value)
    a, b = value
    return float(a), float(b)


def _device_kw(array, xp) -> dict:
    dev = getattr(array, "device", None)
    return {} if dev is None or xp.__name__.startswith("numpy") else {"device": dev}


@check_arguments(path=optional(PATH))
def load_beam_model(path: str | Path | None = None) -> BeamModel:
    """Read a beam-model JSON file (default: the shipped 6 MV model).

    Raises
    ------
    BeamModelError
        If the file cannot be read, is not JSON, or lacks keys (named in the message).

    Examples
    --------
    >>> from dose_engine import load_beam_model
    >>> model = load_beam_model()
    >>> model.name, model.sad_mm
    ('rtplan generic 6 MV pencil beam', 1000.0)
    """
    params, name = read_json_data(path, DEFAULT_MODEL, what="Beam model")
    if not isinstance(params, dict):
        raise BeamModelError(f"Beam model {name} must hold a JSON object.")
    return BeamModel(params, name)


def check_rectangles(rectangles_mm) -> np.ndarray:
    """Validate ``(n, 4)`` rectangles ``[x1, x2, y1, y2]`` (mm); refuse empty ones."""
    r = np.asarray(rectangles_mm, dtype=float)
    if r.ndim == 1 and r.size == 4:
        r = r[None, :]
    if r.ndim != 2 or r.shape[1] != 4 or r.shape[0] == 0:
        raise InvalidGeometryError(
            f"`rectangles_mm` must be an (n, 4) array of [x1, x2, y1, y2] in mm; got shape "
            f"{r.shape}."
        )
    if not np.all(np.isfinite(r)):
        raise InvalidGeometryError("`rectangles_mm` contains NaN or infinite values.")
    bad = np.flatnonzero((r[:, 1] <= r[:, 0]) | (r[:, 3] <= r[:, 2]))
    if bad.size:
        i = int(bad[0])
        raise InvalidGeometryError(
            f"Rectangle {i} [x1, x2, y1, y2] = {r[i].tolist()} mm has zero or negative size; "
            "need x2 > x1 and y2 > y1 (drop closed leaf pairs instead of passing them)."
        )
    return r


@check_arguments(
    u_mm=ARRAY,
    v_mm=ARRAY,
    z_mm=ARRAY,
    depth_mm=ARRAY,
    rectangles_mm=ARRAY,
    mu=ARRAY,
    model="dose_engine._model:BeamModel",
)
def rectangle_dose(u_mm, v_mm, z_mm, depth_mm, rectangles_mm, mu, model: BeamModel):
    """Dose at points from rectangular apertures (the one primitive of the engine).

    Parameters
    ----------
    u_mm, v_mm : (m,) array (any array-API namespace), mm
        Fan coordinates of the points: BLD x and y of the ray through each point, in the
        isocentre plane.
    z_mm : (m,) array, mm
        Distance from the source along the beam axis.
    depth_mm : (m,) array, mm
        Radiological depth of each point along its ray.
    rectangles_mm : (n, 4) array, mm
        ``[x1, x2, y1, y2]`` in the isocentre plane (validated numpy or same namespace).
    mu : (n,) array, MU
    model : BeamModel

    Returns
    -------
    dose : (m,) array, Gy, same namespace and dtype as ``u_mm``.
    """
    from array_api_compat import array_namespace

    xp = array_namespace(u_mm, v_mm, z_mm, depth_mm)
    dt = u_mm.dtype
    rects = np.asarray(rectangles_mm, dtype=float)
    mus = np.asarray(mu, dtype=float)
    weights, sig_x, sig_y = model.components(z_mm, depth_mm, xp)
    horn_a, horn_s = model.horn
    kw = _device_kw(u_mm, xp)
    layout = _ApertureLayout(rects, mus)
    dose = xp.zeros(u_mm.shape, dtype=dt, **kw)
    inv_sqrt2 = 1.0 / math.sqrt(2.0)
    for term, (w, sx, sy) in enumerate(zip(weights, sig_x, sig_y, strict=True)):
        acc = layout.integrate(u_mm, inv_sqrt2 / sx, v_mm, inv_sqrt2 / sy, xp, kw)
        # The horn dip (or FFF peak) shapes the focal fluence only (terms 0, 1), not the
        # extra-focal one nor the long-range tail (term 4, see the module docstring).
        if horn_a != 0.0 and term < 2:
            cx, ix, fx = horn_axis_terms(u_mm, sx, horn_s, xp)
            cy, iy, fy = horn_axis_terms(v_mm, sy, horn_s, xp)
            acc = acc - (horn_a * fx * fy) * layout.integrate(cx, ix, cy, iy, xp, kw)
        dose = dose + w * (0.25 * acc)
    return dose


#: ``|e - c| · inv`` beyond which ``erf`` is ±1 to float32 precision (see
#: :meth:`_ApertureLayout.integrate`).
ERF_SATURATION = 5.0
#: :meth:`_ApertureLayout.integrate` skips the saturated points only when they are at least
#: this share of all (below it, selecting them costs more than it saves).
MIN_SATURATED_SHARE = 0.2


class _ApertureLayout:
    """Rectangles regrouped for a separable sum over edges.

    ``sum_r mu_r [E_x(x2_r) - E_x(x1_r)] [E_y(y2_r) - E_y(y1_r)]`` equals
    ``E_x @ K @ E_y``: ``E_x`` and ``E_y`` hold the error function at each distinct x and
    y edge (step-and-shoot leaves sit on a few beamlet edges, leaf pairs on a few leaf
    boundaries) and ``K`` (x edges × y edges) the meterset of every edge pair:
    ``K = C @ Δ.T`` where ``C`` (x edges × rows) holds ``+mu`` at each rectangle's ``x2``
    and ``-mu`` at its ``x1`` in the column of its ``(y1, y2)`` row (leaf pair) and ``Δ``
    (y edges × rows) ``+1`` at each row's ``y2`` and ``-1`` at its ``y1``.  One erf per
    distinct edge and one product with ``K`` replace a pass over the points per rectangle
    (and two products over the rows, which outnumber the edges with tongue-and-groove
    bands).
    """

    def __init__(self, rects: np.ndarray, mus: np.ndarray) -> None:
        used = mus != 0.0
        rects, mus = rects[used], mus[used]
        self.x_edges, x_idx = np.unique(rects[:, :2], return_inverse=True)
        x_idx = x_idx.reshape(-1, 2)
        rows, row_idx = np.unique(rects[:, 2:], axis=0, return_inverse=True)
        self.y_edges, y_idx = np.unique(rows, return_inverse=True)
        y_idx = y_idx.reshape(-1, 2)
        coeff = np.zeros((self.x_edges.size, rows.shape[0]))
        np.add.at(coeff, (x_idx[:, 1], row_idx.ravel()), mus)
        np.add.at(coeff, (x_idx[:, 0], row_idx.ravel()), -mus)
        y_diff = np.zeros((self.y_edges.size, rows.shape[0]))
        y_diff[y_idx[:, 1], np.arange(rows.shape[0])] = 1.0
        y_diff[y_idx[:, 0], np.arange(rows.shape[0])] = -1.0
        self.kernel = coeff @ y_diff.T  # float64, summed before the float32 products

    def integrate(self, cx, inv_x, cy, inv_y, xp, kw):
        """``sum_r mu_r ΔE_x ΔE_y`` at every point, for error functions
        ``E(e) = erf((e - c) · inv)`` with per-point centres ``c`` and scales ``inv``.

        A point whose centre lies beyond every x (or every y) edge by more than
        :data:`ERF_SATURATION` / ``inv`` gets 0 without evaluation: there every ``erf`` is
        ±1 in float32 (``1 - erf(5) = 1.5e-12``), so each difference is exactly 0 (below
        1.5e-12 in float64).  For a narrow Gaussian term most of a body lies out there.
        """
        dt = cx.dtype
        if self.kernel.size == 0:
            return xp.zeros(cx.shape, dtype=dt, **kw)
        x_lo, x_hi = float(self.x_edges[0]), float(self.x_edges[-1])
        y_lo, y_hi = float(self.y_edges[0]), float(self.y_edges[-1])
        near = (
            ((x_lo - cx) * inv_x <= ERF_SATURATION)
            & ((cx - x_hi) * inv_x <= ERF_SATURATION)
            & ((y_lo - cy) * inv_y <= ERF_SATURATION)
            & ((cy - y_hi) * inv_y <= ERF_SATURATION)
        )
        near_i = xp.astype(near, xp.int64)
        n_near = int(xp.sum(near_i))
        if n_near > (1.0 - MIN_SATURATED_SHARE) * cx.shape[0]:
            return self._integrate(cx, inv_x, cy, inv_y, xp, kw)
        keep = xp.nonzero(near)[0]
        part = self._integrate(*(xp.take(a, keep) for a in (cx, inv_x, cy, inv_y)), xp, kw)
        # gather, not scatter (array API): point i takes part[k - 1] as the k-th near point
        pos = xp.cumulative_sum(near_i) * near_i
        return xp.take(xp.concat([xp.zeros((1,), dtype=dt, **kw), part]), pos)

    def _integrate(self, cx, inv_x, cy, inv_y, xp, kw):
        """:meth:`integrate` evaluated at every point."""
        dt = cx.dtype
        ex = erf((xp.asarray(self.x_edges, dtype=dt, **kw)[None, :] - cx[:, None]) * inv_x[:, None])
        ey = erf((xp.asarray(self.y_edges, dtype=dt, **kw)[None, :] - cy[:, None]) * inv_y[:, None])
        x_y = ex @ xp.asarray(self.kernel, dtype=dt, **kw)
        x_y *= ey
        return xp.sum(x_y, axis=1)


def horn_axis_terms(coord, sigma, horn_sigma_mm: float, xp):
    """One axis of the Gaussian product ``exp(-x²/2s²) · N(x; c, σ²)``.

    ``exp(-x²/(2 s²)) N(x; c, σ²) = K N(x; μ', σ'²)`` with ``μ' = c s²/(s²+σ²)``,
    ``σ'² = s²σ²/(s²+σ²)`` and ``K = s/sqrt(s²+σ²) exp(-c²/(2(s²+σ²)))``, so the integral over
    an interval is ``K/2 [erf((x₂-μ')/(√2σ')) - erf((x₁-μ')/(√2σ'))]``.

    Returns
    -------
    centre, inv_sqrt2_sigma, factor : arrays like ``coord``
    """
    s2 = horn_sigma_mm * horn_sigma_mm
    den = s2 + sigma * sigma
    centre = coord * (s2 / den)
    inv = xp.sqrt(den / (2.0 * s2)) / sigma
    factor = horn_sigma_mm / xp.sqrt(den) * xp.exp(-(coord * coord) / (2.0 * den))
    return centre, inv, factor
