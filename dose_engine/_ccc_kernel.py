r"""Energy-deposition point kernels in water for the collapsed-cone engine, generated here.

Where the kernels come from
---------------------------
No Monte Carlo kernel table with a licence compatible with this BSD package was available
offline, so the kernels are computed by :func:`make_kernel_table` (run
``python -m dose_engine._ccc_kernel`` to regenerate ``data/ccc_kernel_water.json``) from
textbook interaction physics, for each photon energy ``E`` of a small set of bins:

* every interaction is a Compton scattering on a free electron (Klein-Nishina cross
  section; at 0.5-6 MeV in water Compton is 95-100 % of the attenuation, pair production
  and the photoelectric effect are neglected);
* the recoil electron (kinetic energy ``T = E - E'``, angle ``cot θ_e = (1 + k) tan(θ_γ/2)``)
  deposits ``T`` along a condensed-history track of its CSDA range in water (ICRU 37 /
  NIST ESTAR): equal range steps, the energy lost in each from the range table, and a
  Gaussian multiple-scattering deflection after each (Highland formula, Particle Data
  Group), sampled for 40 000 electrons per energy with a fixed seed: the *primary* kernel;
* the scattered photon (energy ``E'``, angle ``θ_γ``) is followed through every further
  Compton scattering (free paths from water's attenuation coefficient, NIST XCOM; angles
  and energies from Klein-Nishina; 100 000 photons per energy, fixed seed), each recoil
  electron's energy deposited where the photon scattered (their ranges, mm, are far below
  the photons' free paths), a photon below 30 keV absorbed where it is: the *scatter*
  kernel.  (Until session 13 every scatter order went straight ahead with ``μ_en``: scatter
  radii of 31-46 cm, all forward; the collapsed cone's water depth dose depended too
  strongly on the field size.)

Each part is summarised per polar bin ``i`` (48 bins of 3.75° from the photon direction,
as in Mackie et al 1988, Phys Med Biol 33:1) by its energy fraction ``F_i`` and a radius
``r̄_i``, i.e. the Ahnesjö (1989, Med Phys 16:577) form ``k_i(r) = F_i a_i exp(-a_i r)``
per unit radial distance with ``a_i = 1 / r̄_i``; in the cumulative form
``K_i(r) = F_i (1 - exp(-a_i r))``.  For the electrons ``r̄_i`` is the deposit's mean
radius; for the scattered photons it is the exponential's least-squares fit to the
cumulative deposit within :data:`SCATTER_FIT_RADIUS_MM` (a mixture of exponentials, whose
mean radius would put too much of it far away: :func:`_fitted_mean_radius`).  The
fractions of one energy add up to 1 (all released energy is deposited somewhere); the
electron share equals the energy-transfer fraction ``σ_tr / σ`` of Klein-Nishina.

Known simplifications: no energy-loss straggling, delta rays or secondary electrons' own
tracks; Gaussian multiple scattering; one exponential per part and bin; no bremsstrahlung or
annihilation photons; no binding effects, Rayleigh scattering or photoelectric absorption
above 30 keV in the scatter transport.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._data_files import read_json_data
from .errors import BeamModelError

__all__ = ["KernelTable", "load_kernel_table", "make_kernel_table"]

DEFAULT_KERNEL_FILE = "ccc_kernel_water.json"
ELECTRON_REST_MEV = 0.510999

#: Photon energies of the kernel (and spectrum) bins, MeV.
ENERGIES_MEV: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0)
#: Polar bins of the kernel (from the photon direction), as in Mackie et al 1988.
POLAR_BINS = 48
#: Recoil electrons tracked per energy, and steps per track.
ELECTRONS, TRACK_STEPS = 40000, 24
#: Scattered photons followed per energy, and the energy below which one is absorbed, MeV.
SCATTER_PHOTONS, PHOTON_CUTOFF_MEV = 100000, 0.03
#: Radii (mm) to which, and steps in which, the scatter kernel's exponentials are fitted
#: (the scatter a field's dose collects: 200 mm gave a 5 × 5 cm² output 0.3 % lower).
SCATTER_FIT_RADIUS_MM, SCATTER_FIT_STEP_MM = 100.0, 2.0
#: Radiation length of water, mm (PDG).
WATER_X0_MM = 360.8

# Water, NIST XCOM total attenuation coefficient (mu), cm^2/g.
_MU_TABLE_MEV = np.array(
    [0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
)
_MU_RHO = np.array(
    [0.1707, 0.1505, 0.1370, 0.1186, 0.1061, 0.0969, 0.0896, 0.0787, 0.0707, 0.0632, 0.0575]
    + [0.0494, 0.0397, 0.0340, 0.0303, 0.0277, 0.0243, 0.0222]
)
# Water, NIST ESTAR CSDA range, g/cm^2.
_CSDA_MEV = np.array(
    [0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
)
_CSDA_G_CM2 = np.array(
    [2.5e-4, 0.0143, 0.0449, 0.0842, 0.129, 0.177, 0.227, 0.330, 0.437, 0.708, 0.979]
    + [1.514, 2.037, 2.550, 3.052, 4.030, 4.975]
)


def _loglog(x, xs, ys):
    return np.exp(np.interp(np.log(x), np.log(xs), np.log(ys)))


def mu_water_per_mm(energy_mev) -> np.ndarray:
    """Linear attenuation coefficient of water, 1/mm (log-log interpolated XCOM)."""
    return _loglog(np.asarray(energy_mev, float), _MU_TABLE_MEV, _MU_RHO) / 10.0


def csda_range_mm(energy_mev) -> np.ndarray:
    """CSDA range of electrons in water, mm (ESTAR)."""
    e = np.clip(np.asarray(energy_mev, float), _CSDA_MEV[0], None)
    return _loglog(e, _CSDA_MEV, _CSDA_G_CM2) * 10.0


@dataclass(frozen=True)
class KernelTable:
    """Polar-binned exponential kernels per photon energy (see the module docstring).

    Attributes
    ----------
    energies_mev : (ne,) ndarray
    polar_edges_deg : (nb + 1,) ndarray
        Bin edges from the photon direction (0 = forward).
    primary_fraction, scatter_fraction : (ne, nb) ndarray
        Energy fraction deposited by the electron / scattered-photon part in each bin.
    primary_mean_mm, scatter_mean_mm : (ne, nb) ndarray
        Mean radiological radius of that deposit, mm (``1 / a``).
    source : str
    """

    energies_mev: np.ndarray
    polar_edges_deg: np.ndarray
    primary_fraction: np.ndarray
    scatter_fraction: np.ndarray
    primary_mean_mm: np.ndarray
    scatter_mean_mm: np.ndarray
    source: str = ""

    def to_json(self) -> dict:
        def r(a):
            return np.round(np.asarray(a, float), 7).tolist()

        return {
            "energies_mev": r(self.energies_mev),
            "polar_edges_deg": r(self.polar_edges_deg),
            "primary_fraction": r(self.primary_fraction),
            "scatter_fraction": r(self.scatter_fraction),
            "primary_mean_mm": r(self.primary_mean_mm),
            "scatter_mean_mm": r(self.scatter_mean_mm),
            "source": self.source,
        }


def _klein_nishina(energy_mev: float, n: int = 20000):
    """Photon angles (midpoints), probabilities, E'/E and electron angles of Compton events."""
    k = energy_mev / ELECTRON_REST_MEV
    theta = (np.arange(n) + 0.5) * (math.pi / n)
    ratio = 1.0 / (1.0 + k * (1.0 - np.cos(theta)))  # E'/E
    dsig = ratio**2 * (ratio + 1.0 / ratio - np.sin(theta) ** 2)  # dσ/dΩ up to a constant
    prob = dsig * np.sin(theta)
    prob /= prob.sum()
    half = np.tan(theta / 2.0)
    theta_e = np.arctan2(1.0, (1.0 + k) * half)  # cot θe = (1 + k) tan(θγ / 2)
    return theta, prob, ratio, theta_e


def _electron_tracks(t_mev: np.ndarray, theta_e: np.ndarray, weight: np.ndarray, rng):
    """Energy deposits of recoil electrons on condensed-history tracks.

    Each track is cut into :data:`TRACK_STEPS` equal steps of its CSDA range; the energy
    lost in a step (from the range table) is deposited at the step's midpoint, and the
    direction is then deflected by a Gaussian multiple-scattering angle of the Highland
    formula (PDG; water X0 = 360.8 mm).

    Returns
    -------
    energy, radius_mm, polar_rad : 1-D ndarrays (one entry per step of every track)
        Deposited energy (``weight``-scaled, MeV), distance and polar angle from the photon
        direction (+z) of each deposit.
    """
    m = t_mev.size
    rng_mm = csda_range_mm(t_mev)
    step = rng_mm / TRACK_STEPS
    pos = np.zeros((m, 3))
    d = np.stack([np.sin(theta_e), np.zeros(m), np.cos(theta_e)], axis=1)
    e_now = t_mev.copy()
    out_e, out_r, out_t = [], [], []
    for k in range(TRACK_STEPS):
        residual = rng_mm * (1.0 - (k + 1) / TRACK_STEPS)
        e_next = np.where(residual > 0, _energy_at_range(residual), 0.0)
        mid = pos + 0.5 * step[:, None] * d
        pos = pos + step[:, None] * d
        r = np.sqrt(np.sum(mid * mid, axis=1))
        out_e.append(weight * (e_now - e_next))
        out_r.append(r)
        out_t.append(np.arccos(np.clip(mid[:, 2] / np.maximum(r, 1e-12), -1.0, 1.0)))
        # Highland angle for this step at the mean energy of the step
        e_mid = np.maximum(0.5 * (e_now + e_next), 1e-3)
        pc = np.sqrt(e_mid * (e_mid + 2.0 * ELECTRON_REST_MEV))
        beta = pc / (e_mid + ELECTRON_REST_MEV)
        x = np.maximum(step / WATER_X0_MM, 1e-9)
        theta0 = 13.6 / (beta * pc) * np.sqrt(x) * np.maximum(1.0 + 0.038 * np.log(x), 0.1)
        e1, e2 = _perpendicular(d)
        tx, ty = rng.normal(size=(2, m)) * theta0
        d = d + tx[:, None] * e1 + ty[:, None] * e2
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        e_now = e_next
    return np.concatenate(out_e), np.concatenate(out_r), np.concatenate(out_t)


def _perpendicular(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors perpendicular to each row of ``d`` (m, 3) and to each other."""
    helper = np.where(np.abs(d[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    e1 = np.cross(d, helper)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    return e1, np.cross(d, e1)


def _compton(energy_mev: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """Klein-Nishina samples at each energy: cos θ of the photon and its energy ratio E'/E
    (rejection from a uniform cos θ; the cross section per solid angle is largest, 2 in
    these units, forward)."""
    cos = np.empty(energy_mev.size)
    ratio = np.empty(energy_mev.size)
    todo = np.arange(energy_mev.size)
    while todo.size:
        c = rng.uniform(-1.0, 1.0, todo.size)
        r = 1.0 / (1.0 + energy_mev[todo] / ELECTRON_REST_MEV * (1.0 - c))
        ok = rng.random(todo.size) * 2.0 < r * r * (r + 1.0 / r - (1.0 - c * c))
        cos[todo[ok]], ratio[todo[ok]] = c[ok], r[ok]
        todo = todo[~ok]
    return cos, ratio


def _scatter_deposits(energy_mev: float, edges_rad: np.ndarray, rng):
    """Energy fraction and mean radius (mm) per polar bin of what the photons scattered at a
    Compton event of a photon of ``energy_mev`` (along +z, at the origin) deposit, over all
    their further scatterings (module docstring)."""
    nb = edges_rad.size - 1
    cos, ratio = _compton(np.full(SCATTER_PHOTONS, energy_mev), rng)
    e = energy_mev * ratio
    d = _turn(np.tile([0.0, 0.0, 1.0], (SCATTER_PHOTONS, 1)), cos, rng)
    pos = np.zeros((SCATTER_PHOTONS, 3))
    r_edges = np.arange(0.0, SCATTER_FIT_RADIUS_MM + 1e-9, SCATTER_FIT_STEP_MM)
    hist = np.zeros((nb, r_edges.size))  # by radius bin; the last column: beyond
    live = np.arange(SCATTER_PHOTONS)
    while live.size:
        pos[live] += rng.exponential(1.0 / mu_water_per_mm(e[live]))[:, None] * d[live]
        absorbed = e[live] < PHOTON_CUTOFF_MEV
        cos, ratio = _compton(e[live], rng)
        dep = np.where(absorbed, 1.0, 1.0 - ratio) * e[live] / (energy_mev * SCATTER_PHOTONS)
        r = np.linalg.norm(pos[live], axis=1)
        polar = np.arccos(np.clip(pos[live, 2] / np.maximum(r, 1e-12), -1.0, 1.0))
        b = np.clip(np.searchsorted(edges_rad, polar, side="right") - 1, 0, nb - 1)
        j = np.searchsorted(r_edges, r, side="right") - 1
        np.add.at(hist, (b, j), dep)
        e[live] *= ratio
        d[live] = _turn(d[live], cos, rng)
        live = live[~absorbed]
    frac = hist.sum(axis=1)
    return frac, _fitted_mean_radius(hist, r_edges)


def _fitted_mean_radius(hist: np.ndarray, r_edges: np.ndarray) -> np.ndarray:
    """Per polar bin, the mean radius ``1 / a`` (mm) of the exponential ``1 - exp(-a r)``
    nearest (least squares) to the deposit's cumulative energy fraction at the radii
    ``r_edges[1:]``.

    ``hist`` (nb, nr) holds each bin's deposit between consecutive ``r_edges`` and, in its
    last column, beyond the last edge.  The scattered photons' deposit is a mixture of
    exponentials (their energies and scatter orders); matched by its mean radius a single
    exponential sends too much of it to the tail and too little near the interaction (the
    mixture's mean coefficient is above one over its mean radius), which lowers a small
    field's scatter dose (5 × 5 cm² output factor 1.0 % lower than with this fit over
    100 mm).
    """
    frac = hist.sum(axis=1, keepdims=True)
    cum = np.cumsum(hist[:, :-1], axis=1) / np.where(frac > 0, frac, 1.0)
    means = np.geomspace(1.0, 5000.0, 800)
    model = 1.0 - np.exp(-r_edges[None, 1:] / means[:, None])  # (na, nr)
    cost = ((cum[:, None, :] - model[None]) ** 2).sum(axis=2)
    return np.where(frac[:, 0] > 0, means[np.argmin(cost, axis=1)], 1.0)


def _turn(d: np.ndarray, cos: np.ndarray, rng) -> np.ndarray:
    """Directions ``d`` (m, 3) turned by polar angles of cosine ``cos`` at random azimuths."""
    e1, e2 = _perpendicular(d)
    phi = rng.uniform(0.0, 2.0 * math.pi, cos.size)
    sin = np.sqrt(np.maximum(1.0 - cos * cos, 0.0))
    out = cos[:, None] * d + sin[:, None] * (np.cos(phi)[:, None] * e1 + np.sin(phi)[:, None] * e2)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _energy_at_range(range_mm: np.ndarray) -> np.ndarray:
    """Inverse of :func:`csda_range_mm` (log-log), MeV."""
    r = np.clip(range_mm / 10.0, _CSDA_G_CM2[0], None)
    return np.exp(np.interp(np.log(r), np.log(_CSDA_G_CM2), np.log(_CSDA_MEV)))


def _mono_kernel(energy_mev: float, edges_rad: np.ndarray, seed: int = 0):
    """Per-bin fractions and mean radii (mm) of the primary and scatter parts at one energy."""
    theta, prob, _, _ = _klein_nishina(energy_mev)
    nb = edges_rad.size - 1
    rng = np.random.default_rng(seed)
    # electrons: sample Compton events (stratified over the photon angle)
    u = (np.arange(ELECTRONS) + rng.random(ELECTRONS)) / ELECTRONS
    idx = np.minimum(np.searchsorted(np.cumsum(prob), u), theta.size - 1)
    k = energy_mev / ELECTRON_REST_MEV
    th = theta[idx] + (rng.random(ELECTRONS) - 0.5) * (math.pi / theta.size)
    rat = 1.0 / (1.0 + k * (1.0 - np.cos(th)))
    th_e = np.arctan2(1.0, (1.0 + k) * np.tan(th / 2.0))
    t_mev = energy_mev * (1.0 - rat)
    dep, rad, pol = _electron_tracks(t_mev, th_e, np.full(ELECTRONS, 1.0 / ELECTRONS), rng)
    e_bin = np.clip(np.searchsorted(edges_rad, pol, side="right") - 1, 0, nb - 1)
    pf = np.bincount(e_bin, dep / energy_mev, nb)
    pr = np.bincount(e_bin, dep * rad / energy_mev, nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        pm = np.where(pf > 0, pr / pf, 1.0)
    sf, sm = _scatter_deposits(energy_mev, edges_rad, rng)
    return pf, sf, pm, sm


def make_kernel_table(energies_mev=ENERGIES_MEV, polar_bins: int = POLAR_BINS) -> KernelTable:
    """Compute the kernel table from Klein-Nishina, ESTAR and XCOM data (module docstring)."""
    energies = np.asarray(energies_mev, float)
    edges = np.linspace(0.0, math.pi, polar_bins + 1)
    parts = [_mono_kernel(float(e), edges) for e in energies]
    pf, sf, pm, sm = (np.array([p[i] for p in parts]) for i in range(4))
    return KernelTable(
        energies,
        np.degrees(edges),
        pf,
        sf,
        pm,
        sm,
        source="dose_engine._ccc_kernel.make_kernel_table: Klein-Nishina Compton events, "
        "electrons on condensed-history CSDA tracks (NIST ESTAR, Highland multiple "
        "scattering), scattered photons through all further Compton scatterings "
        "(NIST XCOM attenuation, Klein-Nishina; exponentials fitted within "
        f"{SCATTER_FIT_RADIUS_MM:g} mm), water",
    )


def load_kernel_table(path: str | Path | None = None) -> KernelTable:
    """Read a kernel table (default: the shipped ``data/ccc_kernel_water.json``).

    Raises
    ------
    BeamModelError
        If the file cannot be read or lacks a key (named in the message).
    """
    data, name = read_json_data(path, DEFAULT_KERNEL_FILE, what="Collapsed-cone kernel")
    keys = (
        "energies_mev",
        "polar_edges_deg",
        "primary_fraction",
        "scatter_fraction",
        "primary_mean_mm",
        "scatter_mean_mm",
    )
    missing = [k for k in keys if not isinstance(data, dict) or k not in data]
    if missing:
        raise BeamModelError(f"Collapsed-cone kernel {name} lacks {', '.join(missing)}.")
    energies, edges, pf, sf, pm, sm = (np.asarray(data[k], float) for k in keys)
    ne, nb = energies.size, edges.size - 1
    if any(a.shape != (ne, nb) for a in (pf, sf, pm, sm)):
        raise BeamModelError(
            f"Collapsed-cone kernel {name}: the per-bin arrays must have shape ({ne}, {nb})."
        )
    return KernelTable(energies, edges, pf, sf, pm, sm, source=str(data.get("source", name)))


def main() -> None:
    """Regenerate the shipped kernel file."""
    out = Path(__file__).parent / "data" / DEFAULT_KERNEL_FILE
    out.write_text(json.dumps(make_kernel_table().to_json(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
