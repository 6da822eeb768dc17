"""PortPy's own IMRT pipeline on one patient folder; prints one JSON line (run by bench_peers).

Usage: ``PYTHON_WITH_PORTPY benches/_portpy_pipeline.py DATA_DIR PATIENT_ID SOLVER``

Runs in PortPy's interpreter (PortPy 1.2.0 imports on Python >= 3.12 only), so it imports
PortPy, CVXPY, numpy and the standard library, never rtplan. It calls PortPy's public API the way
its IMRT example does (protocol ``Lung_2Gy_30Fx``: optimisation structures, influence
matrix, CVXPY problem, solve, PTV D95) and times each stage. PortPy's licence is Apache-2.0
with the Commons Clause: this script runs it, it copies none of its code.
"""

import json
import resource
import sys
import time

import numpy as np
import portpy.photon as pp

PROTOCOL = "Lung_2Gy_30Fx"


def main(data_dir: str, patient_id: str, solver: str) -> dict:
    """Run the pipeline; return sizes, stage times (s), solver figures and peak RSS (MiB)."""
    times = {}
    t_start = t = time.perf_counter()
    data = pp.DataExplorer(data_dir=data_dir)
    data.patient_id = patient_id
    ct, structs, beams = pp.CT(data), pp.Structures(data), pp.Beams(data)
    criteria = pp.ClinicalCriteria(data, protocol_name=PROTOCOL)
    opt_params = data.load_config_opt_params(protocol_name=PROTOCOL)
    structs.create_opt_structures(opt_params=opt_params, clinical_criteria=criteria)
    times["load_s"] = time.perf_counter() - t

    t = time.perf_counter()
    inf = pp.InfluenceMatrix(ct=ct, structs=structs, beams=beams)
    times["influence_matrix_s"] = time.perf_counter() - t

    t = time.perf_counter()
    plan = pp.Plan(ct=ct, structs=structs, beams=beams, inf_matrix=inf, clinical_criteria=criteria)
    opt = pp.Optimization(plan, opt_params=opt_params, clinical_criteria=criteria)
    opt.create_cvxpy_problem()
    times["build_problem_s"] = time.perf_counter() - t

    t = time.perf_counter()
    sol, prob = opt.solve(return_cvxpy_prob=True, solver=solver, verbose=False)
    times["solve_s"] = time.perf_counter() - t
    times["end_to_end_s"] = time.perf_counter() - t_start

    sol["dose_1d"] = inf.A @ sol["optimal_intensity"] * plan.get_num_of_fractions()
    stats = prob.solver_stats
    return {
        "portpy": _version("portpy"),
        "cvxpy": _version("cvxpy"),
        "python": sys.version.split()[0],
        "solver": stats.solver_name,
        "status": prob.status,
        "n_voxels": int(inf.A.shape[0]),
        "n_beamlets": int(inf.A.shape[1]),
        "nnz": int(inf.A.nnz),
        # the beamlets PortPy optimises: positions in each beam's table (rtplan's reader
        # must pick the same ones)
        "opt_beamlets": {
            str(b["beam_id"]): [int(i) for i in np.asarray(b["opt_beamlets_ids"]).ravel()]
            for b in inf.beamlets_dict
        },
        "iterations": stats.num_iters,
        "solver_time_s": stats.solve_time,
        "objective": float(prob.value),
        "ptv_d95_gy": float(pp.Evaluation.get_dose(sol, struct="PTV", volume_per=95)),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **times,
    }


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
