"""Benchmark of arc sequencing: fidelity of the delivered fluence and CPU time.

Run: ``python -m pytest benches/bench_arc_sequencing.py -q -p no:cacheprovider -s
--benchmark-json=bench_arc_sequencing.json``.  For each shipped machine, 20° sectors at
the machine's 2° control-point spacing: the largest error of the delivered fluence
(:func:`rtplan.sequencing.control_point_fluence`) as a fraction of each map's maximum, and
the mean absolute error over the mean, for analytic maps (uniform, ramp, two-level), a
spiky random map and the weighted least-squares fluence of the synthetic C-shape
(``tests/rtplan/_cshape_synth.py``, first six beams 20° apart): the figures of
``docs/vmat.md`` ("Accuracy").  Then the CPU time of a full arc of 18 sectors.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

from dose_engine import Beam
from rtplan import DeliverablePlan, load_machine
from rtplan.delivery import check_deliverability
from rtplan.sequencing import arc_sectors, beam_map_edges_mm, control_point_fluence, sequence_arc

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "rtplan"))
from _cshape_synth import optimal_fluence, synthetic_cshape  # noqa: E402

XE, YE = np.arange(-40.0, 40.1, 5.0), np.arange(-20.0, 20.1, 5.0)


def _map_sets():
    uniform = np.full((8, 16), 40.0)
    ramp = np.tile(4.0 * np.arange(1, 17), (8, 1))
    two = np.full((8, 16), 20.0)
    two[:, 4:10] = 60.0
    two[2:5] *= 0.5
    rng = np.random.default_rng(7)
    spiky = rng.uniform(0.0, 30.0, (8, 16)) * (rng.uniform(size=(8, 16)) > 0.3)
    _, _, bl, D, structs = synthetic_cshape(n_beams=18, spacing_mm=5.0, n_slices=3)
    maps = bl.to_fluence_maps(optimal_fluence(D, structs))
    scale = 30.0 / max(m.max() for m in maps)
    xe, ye = beam_map_edges_mm(bl, 0)
    return {
        "analytic": ([uniform, ramp, two], XE, YE),
        "spiky": ([spiky, spiky[:, ::-1], spiky[::-1]], XE, YE),
        "cshape": ([m * scale for m in maps[:6]], xe, ye),
    }


@pytest.mark.parametrize("machine_name", ["AgilityMLC160", "VarianMLC120"])
@pytest.mark.parametrize("fractions", [1, 2])
def test_bench_arc_sequencing_fidelity(benchmark, machine_name, fractions):
    machine = load_machine(machine_name)
    sets = _map_sets()
    info = {}

    def run():
        for name, (maps, xe, ye) in sets.items():
            r = sequence_arc(
                maps,
                machine,
                Beam(350.0),
                x_edges_mm=xe,
                y_edges_mm=ye,
                sector_deg=20.0,
                rotation_direction="CW",
                fractions=fractions,
            )
            per = control_point_fluence(
                r.arc.control_points, r.arc.meterset_mu, machine.mlc.leaf_boundaries_mm, xe, ye
            )
            got = [per[i:j].sum(axis=0) for i, j in r.sector_control_points]
            info[name] = {
                "max_error_of_max": [
                    float(np.abs(g - m).max() / m.max()) for g, m in zip(got, maps, strict=True)
                ],
                "mean_error_of_mean": [
                    float(np.abs(g - m).mean() / m.mean()) for g, m in zip(got, maps, strict=True)
                ],
                "limits_ok": check_deliverability(
                    DeliverablePlan([r.arc], fractions, 2.0, "PTV")
                ).ok,
            }

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(info)
    for name, v in info.items():
        print(
            f"\n{machine_name} {fractions} fx {name}: max error "
            f"{min(v['max_error_of_max']):.3f}-{max(v['max_error_of_max']):.3f} of the maximum, "
            f"mean error {min(v['mean_error_of_mean']):.3f}-{max(v['mean_error_of_mean']):.3f} "
            f"of the mean, limits ok {v['limits_ok']}"
        )


@pytest.mark.parametrize("machine_name", ["AgilityMLC160", "VarianMLC120"])
def test_bench_full_arc_cpu(benchmark, machine_name):
    machine = load_machine(machine_name)
    centres, width = arc_sectors(181.0, 179.0, "CW", sector_deg=20.0)
    rng = np.random.default_rng(1)
    xe, ye = np.arange(-70.0, 70.1, 5.0), np.arange(-60.0, 60.1, 5.0)
    maps = [60.0 * rng.uniform(size=(ye.size - 1, xe.size - 1)) for _ in centres]

    def run():
        t0 = time.process_time()
        r = sequence_arc(
            maps,
            machine,
            Beam(181.0),
            x_edges_mm=xe,
            y_edges_mm=ye,
            sector_deg=width,
            rotation_direction="CW",
            fractions=30,
        )
        return r, time.process_time() - t0

    r, cpu_s = benchmark.pedantic(run, rounds=3, iterations=1)
    benchmark.extra_info.update({"cpu_s": cpu_s, "n_control_points": len(r.arc.control_points)})
    print(f"\n{machine_name}: {r!r}, {cpu_s:.3f} CPU s")
