"""The Monte Carlo's source spectrum: the commissioned beam's, or ompMC's shipped one.

``"commissioned"`` (the default): the spectrum of the collapsed-cone commissioning of the
beam model (:func:`dose_engine._ccc_commission.load_ccc_commissioning`: the reference
spectrum of Sheikh-Bagheri and Rogers 2002 rebinned onto the kernel's energies and tilted
by ``exp(t (E - 3 MeV))``, ``t`` fitted to the measured depth doses), so the Monte Carlo
transports the beam the collapsed cone was commissioned with. Its energies are lines; the
spectrum file (EGSnrc format, which ompMC reads as a histogram, uniform within a bin) gives
each a bin of ±:data:`LINE_HALF_WIDTH_MEV` about it, and empty bins between.

``"ompmc"``: ompMC's shipped ``var_6MV.spectrum`` (the same published spectrum, untilted,
in 0.25 MeV bins): a softer beam, whose water depth dose lies 4-6 % below the commissioned
collapsed cone's at 200-250 mm relative to 100 mm (``docs/dose_algorithms.md``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = [
    "DEFAULT_MC_SPECTRUM",
    "LINE_HALF_WIDTH_MEV",
    "MC_SPECTRA",
    "commissioned_spectrum",
    "require_mc_spectrum",
    "spectrum_record",
    "write_spectrum_file",
]

#: The source spectra of the Monte Carlo check, the default first.
MC_SPECTRA = ("commissioned", "ompmc")
DEFAULT_MC_SPECTRUM = MC_SPECTRA[0]
#: Half-width (MeV) of the histogram bin of each line of the commissioned spectrum.
LINE_HALF_WIDTH_MEV = 0.01
#: ompMC's shipped spectrum file (in its ``spectra`` folder).
OMPMC_SPECTRUM_FILE = "var_6MV.spectrum"


def require_mc_spectrum(spectrum, what: str = "spectrum") -> str:
    """``spectrum`` if it names one of :data:`MC_SPECTRA`.

    Raises
    ------
    rtplan.errors.InputError
        Anything else (the message names ``what`` and the value).
    """
    if not isinstance(spectrum, str) or spectrum not in MC_SPECTRA:
        raise InputError(
            f"`{what}` must be one of {', '.join(repr(s) for s in MC_SPECTRA)}; got {spectrum!r}."
        )
    return spectrum


def commissioned_spectrum(model) -> tuple[np.ndarray, np.ndarray]:
    """Energies (MeV) and energy-fluence weights (sum 1), both (ne,), of the collapsed-cone
    commissioning of ``model`` (a ``dose_engine.BeamModel``).

    Raises
    ------
    rtplan.errors.InputError
        The model has no collapsed-cone commissioning (the message names the other choice).
    """
    comm = _commissioning(model)
    return np.asarray(comm.energies_mev, float), np.asarray(comm.weights, float)


def _commissioning(model):
    """The collapsed-cone commissioning of ``model``, or InputError naming the other
    spectrum."""
    from dose_engine._ccc_commission import load_ccc_commissioning
    from dose_engine.errors import BeamModelError

    try:
        return load_ccc_commissioning(model)
    except BeamModelError as exc:
        raise InputError(
            f"The Monte Carlo's commissioned spectrum: {exc} Or use ompMC's shipped spectrum "
            "(spectrum='ompmc', --mc-spectrum ompmc)."
        ) from exc


def spectrum_record(spectrum: str, model) -> dict:
    """JSON-ready description of the source spectrum ``spectrum`` (:data:`MC_SPECTRA`);
    for ``"commissioned"`` its ``energies_mev`` and ``energy_fluence_weights`` are
    :func:`commissioned_spectrum`'s."""
    if require_mc_spectrum(spectrum) == "ompmc":
        return {
            "name": "ompmc",
            "source": f"ompMC's {OMPMC_SPECTRUM_FILE} (Sheikh-Bagheri and Rogers 2002, "
            "Varian Clinac 2100 6 MV, 0.25 MeV bins)",
        }
    comm = _commissioning(model)
    return {
        "name": "commissioned",
        "source": "the collapsed-cone commissioning of the beam model (reference spectrum "
        "tilted by exp(t (E - 3 MeV)))",
        "tilt_per_mev": comm.provenance.get("tilt_per_mev"),
        "energies_mev": np.asarray(comm.energies_mev, float).tolist(),
        "energy_fluence_weights": np.asarray(comm.weights, float).tolist(),
    }


def write_spectrum_file(
    path: str | Path, energies_mev, weights, title: str = "rtplan commissioned spectrum"
) -> Path:
    """Write lines of energy-fluence ``weights`` at ``energies_mev`` as an EGSnrc spectrum
    file (ompMC's ``Spectrum.from_file``).

    Format: a title line; ``n_bins  e_min  0`` (mode 0: counts per bin); then each bin's
    upper edge (MeV) and its share of the particles. Line ``i`` is the bin
    ``energies_mev[i] ± LINE_HALF_WIDTH_MEV`` holding ``weights[i] / energies_mev[i]``
    (number fluence, normalised to sum 1), with an empty bin between lines: a bin's mean
    energy is its line's, so the file's energy-fluence weights are ``weights`` / their sum.

    Parameters
    ----------
    path : path-like
    energies_mev : (n,) array_like
        Line energies, MeV; finite, ascending, more than ``2 × LINE_HALF_WIDTH_MEV``
        apart and above ``LINE_HALF_WIDTH_MEV``.
    weights : (n,) array_like
        Energy-fluence weights; finite, non-negative, positive sum.
    title : str

    Returns
    -------
    Path

    Raises
    ------
    rtplan.errors.InputError
        ``energies_mev`` or ``weights`` is not as above (named, with the values).
    """
    e = np.asarray(energies_mev, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    h = LINE_HALF_WIDTH_MEV
    if (
        e.ndim != 1
        or e.size == 0
        or not np.all(np.isfinite(e))
        or e[0] <= h
        or np.any(np.diff(e) <= 2 * h)
    ):
        raise InputError(
            f"`energies_mev` must be finite, ascending, above {h:g} MeV and more than "
            f"{2 * h:g} MeV apart; got {e.tolist()!r}."
        )
    if w.shape != e.shape or not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
        raise InputError(
            f"`weights` must be {e.size} finite, non-negative values with a positive sum; "
            f"got {w.tolist()!r}."
        )
    number = (w / e) / np.sum(w / e)
    lines = []
    for i, (energy, n) in enumerate(zip(e, number, strict=True)):
        if i > 0:
            lines.append(f"{energy - h:.10e} {0.0:.10e}")
        lines.append(f"{energy + h:.10e} {n:.10e}")
    text = f"{title}\n{len(lines)} {e[0] - h:.10e} 0\n" + "\n".join(lines) + "\n"
    path = Path(path)
    path.write_text(text, encoding="ascii")
    return path
