"""Loading a clinical-size CT + RT-STRUCT: 512 x 512 x 150 slices, 10 ROIs.

The data set is written once per session with the phantom writer (head-and-neck TG-119
phantom at 0.75 mm pixels, 2.5 mm slices, plus five ring/shell ROIs with holes so that
every slice has several contours).  Measured:

- wall time of ``rtplan.read_patient`` (read + checks + HU conversion + contour parsing);
- wall time of rasterising every ROI onto the CT grid (``Structure.occupancy_block``);
- peak memory of a fresh process doing both (``VmHWM`` from ``/proc/self/status``, falling
  back to ``resource.getrusage`` ``ru_maxrss``, which on Linux would carry the parent's peak
  across ``exec``) and the peak traced by ``tracemalloc`` (Python + numpy allocations).

Run: ``python -m pytest benches/bench_load.py -q -s -p no:cacheprovider``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import rtplan
from rtplan import Structure
from rtplan.io import write_patient
from rtplan.phantoms import make_phantom
from rtplan.phantoms._geometry import ellipse

NX = NY = 512
NZ = 150


def _ring_rois(z_axis, first_number):
    """Five extra ROIs: elliptic shells (outer + inner contour = a hole) on every slice."""
    rois = []
    for k in range(5):
        a_out, b_out = 60.0 + 15 * k, 45.0 + 10 * k
        contours = []
        for z in z_axis:
            for a, b in ((a_out, b_out), (a_out - 8.0, b_out - 8.0)):
                poly = ellipse(0.0, 5.0, a, b)
                contours.append(np.column_stack([poly, np.full(len(poly), z)]))
        rois.append(
            Structure(f"Shell{k + 1}", first_number + k, "ORGAN", (200, 200, 40 * k), contours)
        )
    return rois


@pytest.fixture(scope="session")
def big_dicom(tmp_path_factory):
    p = make_phantom(
        "head_neck", pixel_spacing_mm=0.75, slice_spacing_mm=2.5, matrix_size=NX, n_slices=NZ
    )
    structures = dict(p.structures)
    for s in _ring_rois(p.ct.grid.zyx_axes_mm()[0], len(structures) + 1):
        structures[s.name] = s
    import dataclasses

    p = dataclasses.replace(p, structures=structures)
    return write_patient(p, tmp_path_factory.mktemp("bench") / "hn512", body_part_examined="NECK")


def _load_and_rasterise(ct_dir, rs):
    patient = rtplan.read_patient(ct_dir, rs)
    for s in patient.structures.values():
        s.occupancy_block(patient.ct.grid)
    return patient


_CHILD = textwrap.dedent("""
    import json, resource, sys, time, tracemalloc
    import rtplan
    ct_dir, rs, trace = sys.argv[1], sys.argv[2], sys.argv[3] == "1"

    def peak_rss_mib():
        # VmHWM restarts at exec; ru_maxrss would carry over the (large) parent's peak.
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    p = rtplan.read_patient(ct_dir, rs)
    t1 = time.perf_counter()
    vols = {n: s.volume_cc(p.ct.grid) for n, s in p.structures.items()}
    t2 = time.perf_counter()
    out = {"load_s": t1 - t0, "rasterise_s": t2 - t1, "n_rois": len(vols),
           "shape": list(p.ct.grid.shape),
           "peak_rss_mib": peak_rss_mib()}
    if trace:
        out["tracemalloc_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
    print(json.dumps(out))
""")


def _child(ct_dir, rs, trace):
    argv = [sys.executable, "-c", _CHILD, str(ct_dir), str(rs), "1" if trace else "0"]
    proc = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_load_512x512x150_with_10_rois(benchmark, big_dicom):
    patient = benchmark.pedantic(
        _load_and_rasterise,
        args=(big_dicom.ct_dir, big_dicom.rtstruct_path),
        rounds=3,
        iterations=1,
        warmup_rounds=0,
    )
    assert patient.ct.grid.shape == (NZ, NY, NX)
    assert len(patient.structures) == 10
    plain = _child(big_dicom.ct_dir, big_dicom.rtstruct_path, trace=False)
    traced = _child(big_dicom.ct_dir, big_dicom.rtstruct_path, trace=True)
    ct_mib = NZ * NY * NX * 4 / 2**20
    benchmark.extra_info.update(plain)
    benchmark.extra_info["tracemalloc_peak_mib"] = traced["tracemalloc_peak_mib"]
    print(
        f"\nbench_load: {NX}x{NY}x{NZ} CT + {plain['n_rois']} ROIs: load {plain['load_s']:.2f} s, "
        f"rasterise all ROIs {plain['rasterise_s']:.2f} s (fresh process); "
        f"best in-process load+rasterise {benchmark.stats.stats.min:.2f} s; "
        f"peak RSS {plain['peak_rss_mib']:.0f} MiB, tracemalloc peak "
        f"{traced['tracemalloc_peak_mib']:.0f} MiB (HU array alone {ct_mib:.0f} MiB)"
    )
