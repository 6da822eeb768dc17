"""Slab benches of issue 16: collapsed cone and pencil beam against Monte Carlo (ompMC).

Water / lung (0.25 g/cm³) / water and water / bone (1.8 g/cm³) / water slabs (the slab from
50 to 150 mm depth), one square field of 3 × 3, 5 × 5, 10 × 10 and 20 × 20 cm² (at the
isocentre, 100 mm deep: SSD 900 mm), gantry 0.  For each engine the central-axis
heterogeneity correction factor CF = D(slab) / D(water) (same engine, same field, same
depths) is compared with the Monte Carlo's, computed here by ompMC in its own process
(:func:`rtplan.monte_carlo._run.run_monte_carlo_job`, the runner of ``rtplan check-mc``;
EGSnrc physics, no calibration run: CF is a ratio) with the source spectrum
``RTPLAN_SLAB_MC_SPECTRUM`` (:data:`MC_SPECTRUM`, below).

- Monte Carlo on a 5 mm grid; depth bins are its voxels, laterally the central 3 × 3
  voxels (15 × 15 mm², fields 3 × 3 and 5 × 5 cm²), 5 × 5 voxels (10 × 10) or 9 × 9
  voxels (45 × 45 mm², 20 × 20): "central axis" means that region.
- Collapsed cone (72 cones) and pencil beam on a 2.5 mm grid whose voxel faces include
  the Monte Carlo grid's, averaged over the same region.
- Monte Carlo media by density (``rtplan.monte_carlo._job``): LUNG700ICRU, H2O700ICRU,
  ICRPBONE700ICRU, the slab densities (0.25, 1.8) taken as mass densities; our engines get
  the electron density relative to water of the same medium (``ELECTRONS_PER_MASS``: lung
  0.248, bone 1.690), as they would from a CT.  The Monte Carlo scores dose to medium,
  our engines dose to water: in the bone slab they differ by the stopping-power ratio
  (water to bone about 1.1), so only the rows outside the bone compare like with like,
  and the bone rows are printed only.

The table prints CF over depth ranges more than 5 mm from an interface (the issue's bar is
stated there), the Monte Carlo's 1 σ of each CF (bins taken as independent: the run's
primary-fluence fluctuation, common to all depths, is not in it; the 20-45 mm row, water
above the slab where CF is 1 within 0.5 % for both our engines, shows its size) and the
largest deviation over all bins more than 5 mm from an interface and beyond 20 mm depth.
Asserted, for the lung slab (lung's composition is tissue-like, so dose to medium and to
water agree within about 1 %, and a "type b" engine should meet it): inside the lung from 90 to
145 mm, the collapsed cone within the issue's 2 % bar (+ 2 σ) and closer to the Monte
Carlo than the pencil beam.  Everything else is printed with ``ok`` / ``MISSED``.  The
``ccc*/MC`` column divides ``ccc/MC`` by its value in the water above the slab
(:data:`LEVEL_MM`), which takes out the Monte Carlo runs' dose levels (a run's level is
common to all its depths; the water and slab runs of a case are different runs).

Lung profiles (issue 16: 3 %/3 mm gamma ≥ 95 %): where the Monte Carlo runs stored the
plane of the lateral profiles (runs made since session 15, :func:`_plane`), each depth
bin's profile across the lung, more than 5 mm from its faces, is compared by a 1-D gamma
(pymedphys; 3 % of the central-axis dose at :data:`LEVEL_MM` in the same phantom, 3 mm,
10 % cut-off; :func:`lung_profile_gamma`).  Printed, not asserted: one run of 100,000
histories leaves the 20 × 20's 5 mm voxels of the plane scattered by up to ±8 % in the
field, more than the criterion.  Both our engines take the pencil-beam model's fluence
(focal-spot penumbra, head scatter), the Monte Carlo a point source: the penumbra and
the dose outside the field differ by the beam model as well as by the transport.

The Monte Carlo's source spectrum is ``RTPLAN_SLAB_MC_SPECTRUM``: ``ompmc`` (the default
here, the references of sessions 11-14), ompMC's Varian 6 MV spectrum (Sheikh-Bagheri and
Rogers 2002, the collapsed cone's reference spectrum), or ``commissioned`` (the default of
``rtplan check-mc`` since session 14), the collapsed cone's commissioned spectrum: the
reference tilted by ``exp(t (E - 3 MeV))``, ``t = 0.168/MeV`` fitted to the measured depth
doses, a harder beam (its water depth dose 3.7-6.2 % above ompMC's spectrum's at
200-250 mm relative to 100 mm).  A slab's CF depends on the beam's quality (below a slab
through the primary's attenuation, in lung through the electrons' ranges), so the table
has two collapsed-cone columns: ``ccc``, the commissioned engine (like with like against
the ``commissioned`` references), and ``ccc=``, the same engine and commissioning with
ompMC's spectrum (:func:`same_beam`; like with like against the ``ompmc`` references); and
a row per field comparing each engine's water depth dose with the Monte Carlo's
(``water PDD``).

The Monte Carlo references are cached in ``benches/data/ccc_slab_monte_carlo_<F>mm.json``
(ompMC's spectrum) and ``..._<F>mm_commissioned.json`` (one file per field and spectrum,
one entry per run), made by this script: ``RTPLAN_SLAB_MC_SPECTRUM=... python
benches/bench_ccc_slabs.py [FIELD_MM ...] [water lung bone]`` computes the missing runs
(:data:`RUNS` per spectrum, field and phantom, each with its own seed;
``RTPLAN_SLAB_HISTORIES``, default 200,000 histories per run, about 65 CPU s each); the runs
of a case are pooled
(:func:`pooled`, history-weighted).  The run-to-run fluctuation of a run's dose level
(1-3 % at 10 × 10: the primary photons through the small scoring region) is common to all
its depths and not in the per-bin σ; pooling runs is what reduces it.  Delete an entry to
recompute it.
Run the bench with ``python -m pytest benches/bench_ccc_slabs.py -s -p no:cacheprovider``
(it computes missing references first).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

from dose_engine import Beam, Grid, collapsed_cone_dose, field_dose, load_beam_model
from dose_engine._ccc_commission import (
    CCCCommissioning,
    load_ccc_commissioning,
    reference_spectrum,
)
from rtplan.monte_carlo._job import ELECTRONS_PER_MASS, _media, open_field_job
from rtplan.monte_carlo._run import run_monte_carlo_job
from rtplan.monte_carlo._spectrum import commissioned_spectrum, require_mc_spectrum

FIELDS_MM = (30.0, 50.0, 100.0, 200.0)
SLABS = {"lung": 0.25, "bone": 1.8}
SLAB_MM = (50.0, 150.0)
SSD_MM = 900.0
MC_MM, FINE_MM = 5.0, 2.5
DEPTH_MM = 300.0
HISTORIES = int(os.environ.get("RTPLAN_SLAB_HISTORIES", "200000"))
#: The Monte Carlo's source spectrum (``rtplan.monte_carlo._spectrum``): ``"ompmc"``
#: (ompMC's ``var_6MV.spectrum``, the references of sessions 13-14) or ``"commissioned"``
#: (the collapsed cone's commissioned spectrum, the default of ``rtplan check-mc``).
MC_SPECTRUM = require_mc_spectrum(
    os.environ.get("RTPLAN_SLAB_MC_SPECTRUM", "ompmc"), "RTPLAN_SLAB_MC_SPECTRUM"
)
#: Depth ranges of the table, mm: before, in and after the slab, all > 5 mm from an interface.
RANGES_MM = (
    (20.0, 45.0),
    (60.0, 80.0),
    (90.0, 110.0),
    (125.0, 145.0),
    (155.0, 175.0),
    (200.0, 250.0),
)
#: Ranges where the collapsed cone is held to the 2 % bar: inside the lung, more than 10 mm
#: past its entry, where a "type b" engine's density-scaled kernels should carry the
#: lateral electron disequilibrium the pencil beam misses.
ASSERTED = ((90.0, 110.0), (125.0, 145.0))
BAR = 0.02
#: Water above the slab, where every engine's CF is 1 within 0.5 %: ``ccc*/MC`` is
#: ``ccc/MC`` divided by its value here, which takes out the Monte Carlo runs' dose levels
#: (common to all depths of a run); the lung profiles are normalised here too.
LEVEL_MM = (20.0, 45.0)
#: Folder of the Monte Carlo references, one file per field, computed by this script
#: (``python benches/bench_ccc_slabs.py``).
MC_DIR = Path(__file__).parent / "data"


def _mc_file(side_mm: float, spectrum: str = MC_SPECTRUM) -> Path:
    """The field's reference file: ``..._<F>mm.json`` with ompMC's spectrum,
    ``..._<F>mm_commissioned.json`` with the commissioned one."""
    tail = "" if spectrum == "ompmc" else f"_{spectrum}"
    return MC_DIR / f"ccc_slab_monte_carlo_{side_mm:g}mm{tail}.json"


#: Half-width, in 5 mm voxels beside the central one, of the averaged region, per field (mm).
LATERAL_VOXELS = {30.0: 1, 50.0: 1, 100.0: 2, 200.0: 4}


def _half_width_mm(side_mm: float) -> float:
    """Lateral half-width of the phantom: the field diverged to 300 mm depth plus 50 mm."""
    return float(np.ceil((side_mm / 2.0 * (SSD_MM + DEPTH_MM) / 1000.0 + 50.0) / MC_MM) * MC_MM)


def _grid(spacing_mm: float, half_mm: float) -> Grid:
    """Water box, surface at y = 0, depth along +y; voxel faces at multiples of
    ``spacing_mm`` in depth and at ±(k + 1/2) × 5 mm laterally."""
    n_lat = int(round(2 * half_mm / spacing_mm)) | 1
    n_dep = int(round(DEPTH_MM / spacing_mm))
    o = -(n_lat // 2) * spacing_mm
    return Grid((n_lat, n_dep, n_lat), (o, spacing_mm / 2.0, o), (spacing_mm,) * 3)


def _density(grid: Grid, slab_density: float) -> np.ndarray:
    depth = grid.zyx_axes_mm()[1]
    rho = np.ones(grid.shape, np.float32)
    rho[:, (depth > SLAB_MM[0]) & (depth < SLAB_MM[1]), :] = slab_density
    return rho


def _electron_density(mass_density: np.ndarray) -> np.ndarray:
    """Electron density relative to water (our engines' input) of the Monte Carlo's media
    at these mass densities (g/cm³): lung 0.25 → 0.248, bone 1.8 → 1.690."""
    return mass_density * np.asarray(ELECTRONS_PER_MASS, np.float32)[_media(mass_density) - 1]


def _lateral_weights(grid: Grid, k: int) -> np.ndarray:
    """(nx,) weights of the fine voxels over the Monte Carlo's central (2k+1) voxels."""
    x = grid.zyx_axes_mm()[2]
    edge = (k + 0.5) * MC_MM
    return np.clip((edge + grid.spacing_mm[0] / 2.0 - np.abs(x)) / grid.spacing_mm[0], 0.0, 1.0)


def _axis_profile(dose: np.ndarray, grid: Grid, k: int) -> np.ndarray:
    """Depth dose averaged over the central region, in 5 mm depth bins."""
    w = _lateral_weights(grid, k)
    lat = np.einsum("zyx,z,x->y", dose, w, w) / (w.sum() ** 2)
    step = int(round(MC_MM / grid.spacing_mm[1]))
    return lat.reshape(-1, step).mean(axis=1)


def _mc_profile(side_mm: float, slab_density: float | None, k: int, seed: int, spectrum: str):
    """Monte Carlo depth dose (central (2k+1)² voxels) and its relative 1 σ, per 5 mm bin,
    and the central plane (:func:`_plane`)."""
    grid = _grid(MC_MM, _half_width_mm(side_mm))
    rho = _density(grid, 1.0 if slab_density is None else slab_density)
    beam = Beam(0.0, isocenter_mm=(0.0, 1000.0 - SSD_MM, 0.0))
    job = open_field_job(rho, grid, beam, side_mm)
    lines = commissioned_spectrum(load_beam_model()) if spectrum == "commissioned" else None
    dose, unc = run_monte_carlo_job(job, histories=HISTORIES, seed=seed, spectrum=lines)
    c = grid.shape[0] // 2
    sl = (slice(c - k, c + k + 1), slice(None), slice(c - k, c + k + 1))
    d = dose[sl]
    var = (d * unc[sl]) ** 2
    n = d.shape[0] * d.shape[2]
    mean = d.mean(axis=(0, 2))
    sigma = np.sqrt(var.sum(axis=(0, 2))) / n / np.maximum(mean, 1e-30)
    return mean, sigma, _plane(dose, k)


def _plane(dose: np.ndarray, k: int) -> np.ndarray:
    """(depth, x) dose on the Monte Carlo's 5 mm voxels, averaged over the central
    (2k+1) voxels in z: the plane of the lateral profiles."""
    c = dose.shape[0] // 2
    return dose[c - k : c + k + 1].mean(axis=0)


def _mc_key(side_mm: float, slab: str, run: int = 1) -> str:
    """Key of one Monte Carlo run in the field's file: run 1 ``"100mm-lung"``, further runs
    (other seeds) ``"100mm-lung-2"``, ``"100mm-lung-3"``…"""
    base = f"{side_mm:g}mm-{slab}"
    return base if run == 1 else f"{base}-{run}"


#: Monte Carlo runs pooled per field (200,000 histories each unless
#: ``RTPLAN_SLAB_HISTORIES`` says otherwise): more where the fields' 1 σ and run-to-run
#: fluctuation came near the 2 % bar (the 10 × 10 water run of seed 120 lies 1-3 % below
#: two others); 5 × 5 has one run so far.  With the commissioned spectrum (100,000
#: histories a run; water and lung in session 14, 5 × 5 and bone in session 15): three
#: runs, six at 10 × 10 (the first 10 × 10 lung run's level lay 4.8 % above its water
#: run's at 20-45 mm, the pooled three 3.0 % below).  Runs stored since session 15 also
#: hold the plane of the lung profiles (:func:`_plane`); the lung phantoms of 3 × 3 and
#: 20 × 20 have a fourth run for it (:func:`_runs` pools every stored run).
RUNS = {
    "ompmc": {30.0: 2, 50.0: 1, 100.0: 3, 200.0: 3},
    "commissioned": {30.0: 3, 50.0: 3, 100.0: 6, 200.0: 3},
}


def _seed(side_mm: float, j: int, run: int) -> int:
    """Seed of run ``run`` of phantom ``j`` (0 water, 1 lung, 2 bone) of a field."""
    return 100 + 10 * FIELDS_MM.index(side_mm) + j + 1000 * (run - 1)


def _runs(refs: dict, side_mm: float, slab: str) -> list[dict]:
    """The stored runs of one case (field, phantom), run 1 first."""
    return [refs[k] for r in range(1, 100) if (k := _mc_key(side_mm, slab, r)) in refs]


def pooled(refs: dict, side_mm: float, slab: str) -> tuple[np.ndarray, np.ndarray]:
    """History-weighted mean depth dose of all stored runs of one case and its relative 1 σ.

    Returns
    -------
    mean, sigma : (60,) ndarray
        Per 5 mm depth bin (dose per history of ompMC, relative 1 σ).
    """
    runs = _runs(refs, side_mm, slab)
    h = np.array([e["histories"] for e in runs], float)
    means = np.array([e["mean"] for e in runs])
    abs_sig = np.array([e["sigma"] for e in runs]) * means
    mean = h @ means / h.sum()
    sigma = np.sqrt((h**2) @ (abs_sig**2)) / h.sum()
    return mean, sigma / np.maximum(mean, 1e-30)


def mc_references(
    fields_mm=FIELDS_MM,
    *,
    spectrum: str = MC_SPECTRUM,
    phantoms=("water", *SLABS),
    save: bool = True,
) -> dict:
    """The Monte Carlo depth doses of every field and phantom (water, lung, bone) with the
    source ``spectrum``, from the field's file (:func:`_mc_file`); missing runs
    (:data:`RUNS` per case) are computed (ompMC) and, with ``save``, added to it.

    Each entry (one run, :func:`_mc_key`): ``mean`` and ``sigma`` (relative 1 σ) per 5 mm
    depth bin, ``histories``, ``seed``, ``cpu_s`` (user + system of the Monte Carlo
    process) and the ompMC version.  :func:`pooled` combines a case's runs.
    """
    refs = {}
    for side in fields_mm:
        path = _mc_file(side, spectrum)
        mine = json.loads(path.read_text()) if path.is_file() else {}
        for run in range(1, RUNS[spectrum][side] + 1):
            for j, (slab, rho) in enumerate((("water", None), *SLABS.items())):
                key = _mc_key(side, slab, run)
                if key in mine or slab not in phantoms:
                    continue
                c0 = _children_cpu()
                seed = _seed(side, j, run)
                mean, sigma, plane = _mc_profile(side, rho, LATERAL_VOXELS[side], seed, spectrum)
                mine[key] = {
                    "mean": mean.tolist(),
                    "sigma": sigma.tolist(),
                    "plane": [[float(f"{v:.5g}") for v in row] for row in plane],
                    "histories": HISTORIES,
                    "seed": seed,
                    "cpu_s": round(_children_cpu() - c0, 1),
                    "ompmc": version("ompmc"),
                    "spectrum": spectrum,
                }
                print(f"{key}: {mine[key]['cpu_s']} CPU s", flush=True)
                if save:
                    tmp = path.with_suffix(".tmp")
                    tmp.write_text(json.dumps(mine, indent=1))
                    tmp.replace(path)
        refs.update(mine)
    return refs


def same_beam(comm: CCCCommissioning) -> CCCCommissioning:
    """``comm`` with the Monte Carlo's spectrum: the reference spectrum untilted (``t = 0``),
    ompMC's ``var_6MV.spectrum`` rebinned onto the kernel's energies (the scale, which the
    correction factors do not see, kept)."""
    return replace(comm, weights=reference_spectrum(comm.energies_mev))


def _engine_profiles(side_mm: float, slab_density: float | None, k: int, model) -> dict:
    grid = _grid(FINE_MM, _half_width_mm(side_mm))
    rho = _electron_density(_density(grid, 1.0 if slab_density is None else slab_density))
    beam = Beam(0.0, isocenter_mm=(0.0, 1000.0 - SSD_MM, 0.0))
    h = side_mm / 2.0
    f = [-h, h, -h, h]
    comm = load_ccc_commissioning(model)
    out = {}
    for name, c in (("ccc", comm), ("ccc=", same_beam(comm))):
        d = np.asarray(
            collapsed_cone_dose(rho, grid, grid, [beam], [f], [1.0], model, commissioning=c)
        )
        out[name] = _axis_profile(d, grid, k)
        out[f"{name} plane"] = _engine_plane(d, grid, k, _half_width_mm(side_mm))
    pb = np.asarray(field_dose(rho, grid, grid, beam, f, 1.0, model))
    return {**out, "pb": _axis_profile(pb, grid, k)}


def _engine_plane(dose: np.ndarray, grid: Grid, k: int, half_mm: float) -> np.ndarray:
    """Our engine's dose on the Monte Carlo's plane (:func:`_plane`): the fine voxels
    averaged over the central (2k+1) 5 mm voxels in z, then onto 5 mm voxels in x and depth."""
    w = _lateral_weights(grid, k)
    plane = np.einsum("zyx,z->yx", dose, w) / w.sum()
    step = int(round(MC_MM / grid.spacing_mm[1]))
    plane = plane.reshape(-1, step, plane.shape[1]).mean(axis=1)
    x = grid.zyx_axes_mm()[2]
    n_mc = int(round(2 * half_mm / MC_MM)) | 1
    centres = MC_MM * (np.arange(n_mc) - n_mc // 2)
    half = (MC_MM + grid.spacing_mm[0]) / 2.0
    wx = np.clip((half - np.abs(x[None, :] - centres[:, None])) / grid.spacing_mm[0], 0.0, 1.0)
    return plane @ (wx / wx.sum(axis=1, keepdims=True)).T


#: Lung profiles' gamma criterion (issue 16): 3 % of the dose on the central axis at
#: :data:`LEVEL_MM` (water above the slab), 3 mm, points above 10 % of it; depth bins
#: inside the lung more than 5 mm from its faces.
GAMMA_PERCENT, GAMMA_MM, GAMMA_CUTOFF_PERCENT, GAMMA_TARGET = 3.0, 3.0, 10.0, 95.0


def pooled_plane(refs: dict, side_mm: float, slab: str) -> tuple[np.ndarray, np.ndarray, int]:
    """History-weighted mean plane (:func:`_plane`) and central-axis depth dose of the runs
    of one case that stored a plane, and how many they are (0: no plane, arrays empty)."""
    runs = [e for e in _runs(refs, side_mm, slab) if "plane" in e]
    if not runs:
        return np.empty(0), np.empty(0), 0
    h = np.array([e["histories"] for e in runs], float)
    plane = np.einsum("r,ryx->yx", h, np.array([e["plane"] for e in runs])) / h.sum()
    return plane, h @ np.array([e["mean"] for e in runs]) / h.sum(), len(runs)


def lung_profile_gamma(ref_plane, ref_axis, ev_plane, ev_axis) -> float:
    """Percentage of points passing the 3 %/3 mm gamma on the lateral profiles through the
    lung (one 1-D gamma per 5 mm depth bin, :data:`GAMMA_PERCENT` …), each plane divided by
    its own central-axis dose at :data:`LEVEL_MM`."""
    import contextlib
    import io

    import pymedphys

    depth = _bins()
    inside = (depth > SLAB_MM[0] + 5.0) & (depth < SLAB_MM[1] - 5.0)
    ref = ref_plane / _range_cf(ref_axis, np.ones_like(ref_axis), *LEVEL_MM)
    ev = ev_plane / _range_cf(ev_axis, np.ones_like(ev_axis), *LEVEL_MM)
    x = MC_MM * (np.arange(ref.shape[1]) - ref.shape[1] // 2)
    passed = counted = 0
    for j in np.flatnonzero(inside):
        with contextlib.redirect_stdout(io.StringIO()):
            g = pymedphys.gamma(
                (x,), ref[j], (x,), ev[j],
                dose_percent_threshold=GAMMA_PERCENT, distance_mm_threshold=GAMMA_MM,
                lower_percent_dose_cutoff=GAMMA_CUTOFF_PERCENT, global_normalisation=1.0,
                interp_algo="scipy",
            )  # fmt: skip
        ok = np.isfinite(g)
        passed += int(np.sum(g[ok] <= 1.0))
        counted += int(ok.sum())
    return 100.0 * passed / max(counted, 1)


def _bins() -> np.ndarray:
    return MC_MM / 2.0 + MC_MM * np.arange(int(round(DEPTH_MM / MC_MM)))


def _range_cf(num, den, a, b):
    sel = (_bins() >= a) & (_bins() <= b)
    return float(num[sel].mean() / den[sel].mean())


@pytest.fixture(scope="module")
def slab_results():
    refs = mc_references()
    model = load_beam_model()
    out = {}
    for side in FIELDS_MM:
        k = LATERAL_VOXELS[side]
        c0 = time.process_time()
        phantoms = (("water", None), *SLABS.items())
        ours = {name: _engine_profiles(side, rho, k, model) for name, rho in phantoms}
        mc = {n: pooled(refs, side, n) for n, _ in phantoms}
        cpu = {n: sum(e["cpu_s"] for e in _runs(refs, side, n)) for n, _ in phantoms}
        out[side] = {
            "ours": ours,
            "mc": mc,
            "mc plane": pooled_plane(refs, side, "lung"),
            "cpu_mc": cpu,
            "cpu_ours": time.process_time() - c0,
        }
    return out


def _children_cpu() -> float:
    r = os.times()
    return r.children_user + r.children_system


def _cf_table(res) -> list[dict]:
    rows = []
    depth = _bins()
    usable = (
        (depth >= 20.0) & (np.abs(depth - SLAB_MM[0]) > 5.0) & (np.abs(depth - SLAB_MM[1]) > 5.0)
    )
    for side, r in res.items():
        w_mc, w_sig = r["mc"]["water"]
        for slab in SLABS:
            s_mc, s_sig = r["mc"][slab]
            for a, b in RANGES_MM:
                sel = (depth >= a) & (depth <= b)
                mc_cf = _range_cf(s_mc, w_mc, a, b)
                sigma = float(
                    np.sqrt(np.sum(s_sig[sel] ** 2) + np.sum(w_sig[sel] ** 2)) / sel.sum()
                )
                row = {"side": side, "slab": slab, "range": (a, b), "mc": mc_cf, "sigma": sigma}
                for algo in ALGOS:
                    row[algo] = _range_cf(r["ours"][slab][algo], r["ours"]["water"][algo], a, b)
                # ccc/MC relative to the same ratio in the water above the slab: the Monte
                # Carlo runs' dose levels, common to all depths of a run, cancel
                above = [
                    _range_cf(num, den, *LEVEL_MM)
                    for num, den in ((r["ours"][slab]["ccc"], r["ours"]["water"]["ccc"]),
                                     (s_mc, w_mc))
                ]  # fmt: skip
                row["ccc*"] = row["ccc"] / above[0] * above[1]
                rows.append(row)
            for algo in ALGOS:
                cf = r["ours"][slab][algo] / r["ours"]["water"][algo]
                dev = np.abs(cf / (s_mc / w_mc) - 1.0)[usable]
                rows.append(
                    {
                        "side": side,
                        "slab": slab,
                        "range": "max",
                        "algo": algo,
                        "dev": float(dev.max()),
                    }
                )
    return rows


#: Our engines' columns: the collapsed cone (commissioned spectrum), the collapsed cone
#: with the Monte Carlo's spectrum (:func:`same_beam`), the pencil beam.
ALGOS = ("ccc", "ccc=", "pb")
#: Depth ranges (mm) of the water depth-dose comparison, relative to :data:`PDD_NORM_MM`.
PDD_RANGES_MM = ((20.0, 45.0), (155.0, 175.0), (200.0, 250.0))
PDD_NORM_MM = (90.0, 110.0)


def _pdd_rows(res) -> list[str]:
    """Per field, each engine's water depth dose over the Monte Carlo's (both relative to
    :data:`PDD_NORM_MM`), minus 1, over :data:`PDD_RANGES_MM`: how alike the beams are."""
    lines = []
    for side, r in res.items():
        mc = r["mc"]["water"][0]
        cells = []
        for algo in ALGOS:
            ours = r["ours"]["water"][algo]
            dev = [
                _range_cf(ours, mc, a, b) / _range_cf(ours, mc, *PDD_NORM_MM) - 1.0
                for a, b in PDD_RANGES_MM
            ]
            cells.append(f"{algo} " + "/".join(f"{d:+.3f}" for d in dev))
        name = f"{side / 10:.0f}x{side / 10:.0f}"
        lines.append(
            f"{name:<6} water PDD / MC - 1 at 20-45/155-175/200-250 mm: " + ", ".join(cells)
        )
    return lines


def _gamma_rows(res) -> None:
    """Print each field's lung-profile gamma pass rate (both collapsed-cone columns) where
    the Monte Carlo runs stored planes, against :data:`GAMMA_TARGET`."""
    for side, r in res.items():
        name = f"{side / 10:.0f}x{side / 10:.0f}"
        plane, axis, n = r["mc plane"]
        if not n:
            print(f"{name:<6} lung profiles: no Monte Carlo plane stored")
            continue
        ours = r["ours"]["lung"]
        rates = {a: lung_profile_gamma(plane, axis, ours[f"{a} plane"], ours[a]) for a in ALGOS[:2]}
        print(
            f"{name:<6} lung profiles {SLAB_MM[0] + 5:.0f}-{SLAB_MM[1] - 5:.0f} mm, gamma "
            f"{GAMMA_PERCENT:g} %/{GAMMA_MM:g} mm pass ({n} Monte Carlo runs): "
            + ", ".join(f"{a} {v:.1f} %" for a, v in rates.items())
            + f" (target {GAMMA_TARGET:g} %)"
        )


def print_table(slab_results) -> list[str]:
    """Print the table; return the asserted rows that miss the bar (beyond 2 σ)."""
    rows = _cf_table(slab_results)
    print(
        f"\nCF = D(slab)/D(water) on the central axis, SSD {SSD_MM:g} mm, Monte Carlo with "
        f"the {MC_SPECTRUM} spectrum"
    )
    print(
        f"{'field':<6} {'slab':<5} {'depth mm':<9} {'MC':>6} {'1σ':>5} {'ccc':>6} "
        f"{'ccc/MC':>7} {'ccc*/MC':>7} {'ccc=':>6} {'ccc=/MC':>7} {'pb':>6} {'pb/MC':>7}  "
        "2 % bar (ccc)"
    )
    failures = []
    for row in rows:
        name = f"{row['side'] / 10:.0f}x{row['side'] / 10:.0f}"
        if row["range"] == "max":
            print(
                f"{name:<6} {row['slab']:<5} max |{row['algo']}/MC-1| over bins >5 mm from "
                f"interfaces: {row['dev']:.3f}"
            )
            continue
        a, b = row["range"]
        dc, dp = row["ccc"] / row["mc"] - 1, row["pb"] / row["mc"] - 1
        ds = row["ccc="] / row["mc"] - 1
        verdict = "ok" if abs(dc) <= BAR else "MISSED"
        print(
            f"{name:<6} {row['slab']:<5} {a:.0f}-{b:<5.0f} {row['mc']:6.3f} {row['sigma']:5.3f} "
            f"{row['ccc']:6.3f} {dc:+7.3f} {row['ccc*'] / row['mc'] - 1:+7.3f} "
            f"{row['ccc=']:6.3f} {ds:+7.3f} {row['pb']:6.3f} "
            f"{dp:+7.3f}  {verdict}"
        )
        if row["slab"] == "lung" and (a, b) in ASSERTED:
            if abs(dc) > BAR + 2 * row["sigma"]:
                failures.append(f"{name} lung {a:.0f}-{b:.0f} mm: ccc/MC-1 = {dc:+.3f}")
            if abs(dc) > abs(dp):
                failures.append(f"{name} lung {a:.0f}-{b:.0f} mm: ccc {dc:+.3f}, pb {dp:+.3f}")
    for line in _pdd_rows(slab_results):
        print(line)
    _gamma_rows(slab_results)
    for side, r in slab_results.items():
        print(
            f"{side / 10:.0f}x{side / 10:.0f}: MC CPU s (water, lung, bone) "
            + ", ".join(f"{v:.0f}" for v in r["cpu_mc"].values())
            + f"; ccc (two spectra) + pencil beam, 3 phantoms: {r['cpu_ours']:.0f} CPU s"
        )
    return failures


def test_slab_correction_factors_against_monte_carlo(slab_results):
    failures = print_table(slab_results)
    assert not failures, failures


if __name__ == "__main__":  # compute the missing Monte Carlo references (minutes each)
    # python benches/bench_ccc_slabs.py [FIELD_MM ...] [water|lung|bone ...]
    names = [a for a in sys.argv[1:] if a in ("water", *SLABS)]
    sides = [float(a) for a in sys.argv[1:] if a not in names]
    mc_references(sides or FIELDS_MM, phantoms=names or ("water", *SLABS))
