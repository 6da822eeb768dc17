"""Photon dose engine: grids, IEC 61217 beams, ray tracing, pencil-beam kernels, a
collapsed-cone convolution/superposition engine and sparse dose-influence matrices on numpy
(CPU) or CuPy (GPU).

Physics only: this package never imports :mod:`rtplan` or pydicom.
"""

from ._backend import BACKEND_NAMES, Backend, backend_of, get_backend, to_numpy
from ._beam import PATIENT_POSITIONS, Beam, equispaced_coplanar_beams, isocenter_at_centroid
from ._beamlets import Beamlets, beamlets_for_target
from ._cache import cached_influence_matrix, load_influence_matrix, save_influence_matrix
from ._ccc import collapsed_cone_dose
from ._ccc_influence import compute_ccc_influence_matrix
from ._density import HUTable, hu_to_density, load_hu_table
from ._field_dose import field_dose
from ._fit import fit_beam_model
from ._grid import Grid
from ._head_scatter import collimator_scatter_scale
from ._influence import InfluenceMatrix, compute_influence_matrix
from ._measured import MeasuredData, MeasuredScan, read_mcc, read_measured_data
from ._mlc_fluence import MLCParameters, aperture_fluence, aperture_fluence_edges
from ._model import FLUENCE_MODES, BeamModel, load_beam_model, rectangle_dose
from ._omnipro_ascii import read_omnipro_ascii
from ._output_factor_table import read_output_factor_table
from ._raytrace import radiological_depth_at_points, trace_rays
from ._scan_files import read_scan_file
from ._validation import ValidationReport, compare_to_measured
from ._w2cad import read_w2cad
from .errors import (
    BackendError,
    BeamModelError,
    DoseEngineError,
    DoseEngineWarning,
    InvalidGeometryError,
    ResourceLimitError,
)

__all__ = [
    "BACKEND_NAMES",
    "FLUENCE_MODES",
    "Backend",
    "BackendError",
    "Beam",
    "BeamModel",
    "BeamModelError",
    "Beamlets",
    "aperture_fluence",
    "aperture_fluence_edges",
    "HUTable",
    "InfluenceMatrix",
    "MLCParameters",
    "MeasuredData",
    "MeasuredScan",
    "PATIENT_POSITIONS",
    "ValidationReport",
    "beamlets_for_target",
    "cached_influence_matrix",
    "collapsed_cone_dose",
    "collimator_scatter_scale",
    "compare_to_measured",
    "compute_ccc_influence_matrix",
    "compute_influence_matrix",
    "equispaced_coplanar_beams",
    "field_dose",
    "fit_beam_model",
    "hu_to_density",
    "isocenter_at_centroid",
    "load_beam_model",
    "load_hu_table",
    "load_influence_matrix",
    "radiological_depth_at_points",
    "read_mcc",
    "read_measured_data",
    "read_omnipro_ascii",
    "read_output_factor_table",
    "read_scan_file",
    "read_w2cad",
    "rectangle_dose",
    "save_influence_matrix",
    "trace_rays",
    "DoseEngineError",
    "ResourceLimitError",
    "DoseEngineWarning",
    "Grid",
    "InvalidGeometryError",
    "backend_of",
    "get_backend",
    "to_numpy",
]
