"""PortPy's own IMRT pipeline on one patient folder; prints one JSON line (run by bench_peers).

Usage: ``PYTHON_WITH_PORTPY benches/_portpy_pipeline.py DATA_DIR PATIENT_ID SOLVER [NPZ]``

Runs in PortPy's interpreter (PortPy 1.2.0 imports on Python >= 3.12 only), so it imports
PortPy, CVXPY, numpy and the standard library, never rtplan. It calls PortPy's public API the way
its IMRT example does (protocol ``Lung_2Gy_30Fx``: optimisation structures, influence
matrix, CVXPY problem, solve, PTV D95) and times each stage. With ``NPZ`` it also writes
the problem PortPy solved, read from PortPy's objects after the timing (the optimisation
voxels of each term's structure, weights, dose levels per fraction, the smoothness
operators, the per-voxel maximum doses and the mean-dose limits, as PortPy's
``Optimization.create_cvxpy_problem`` poses them) and PortPy's optimal intensities, so that
rtplan poses the same objective and evaluates both solutions on it
(``benches/bench_peers.py``). PortPy's licence is Apache-2.0
with the Commons Clause: this script runs it, it copies none of its code.
"""

import json
import resource
import sys
import time

import numpy as np
import portpy.photon as pp

PROTOCOL = "Lung_2Gy_30Fx"


def main(data_dir: str, patient_id: str, solver: str, npz: str = "") -> dict:
    """Run the pipeline; return sizes, stage times (s), solver figures and peak RSS (MiB)."""
    times = {}
    t_start = t = time.perf_counter()
    cpu_start = time.process_time()
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

    t, cpu = time.perf_counter(), time.process_time()
    sol, prob = opt.solve(return_cvxpy_prob=True, solver=solver, verbose=False)
    times["solve_s"] = time.perf_counter() - t
    times["end_to_end_s"] = time.perf_counter() - t_start
    # CPU seconds (user + system, all threads): the figures to compare on a shared machine
    times["solve_cpu_s"] = time.process_time() - cpu
    times["end_to_end_cpu_s"] = time.process_time() - cpu_start

    sol["dose_1d"] = inf.A @ sol["optimal_intensity"] * plan.get_num_of_fractions()
    stats = prob.solver_stats
    usage = resource.getrusage(resource.RUSAGE_SELF)
    if npz:
        _write_problem(npz, plan, opt, inf, criteria, opt_params, sol["optimal_intensity"])
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
        "peak_rss_mib": usage.ru_maxrss / 1024,
        # user + system CPU seconds of the whole run (import, load, build, solve)
        "cpu_s": usage.ru_utime + usage.ru_stime,
        **times,
    }


def _write_problem(path, plan, opt, inf, criteria, opt_params, x) -> None:
    """Write PortPy's problem (doses per fraction, Gy) and its solution ``x`` to ``path``.

    Objective terms (``term{i}_*``): type, weight, level and the structure's optimisation
    voxels; ``smooth_{x,y}_{rows,cols,vals}``, ``smooth_num_rows``, ``smooth_num_cols`` and
    ``smooth_weight``; ``d_max`` (per voxel, inf where unbounded; the smallest limit of the
    voxel's structures, GTV and CTV left out); mean-dose limits ``mean{j}_*`` (voxels,
    volumes in cc, limit per fraction divided by the fraction of the structure in the
    calculation box)."""
    fx = criteria.get_num_of_fractions()
    names = plan.structures.get_structures()
    out = {"x": np.asarray(x, dtype=np.float64), "n_fractions": fx}
    k = 0
    for f in opt_params["objective_functions"]:
        kind = f["type"]
        if kind == "smoothness-quadratic":
            qx, qy, n_rows, n_cols = opt.get_smoothness_matrix(inf.beamlets_dict)
            for axis, q in (("x", qx), ("y", qy)):
                q = np.asarray(q.toarray() if hasattr(q, "toarray") else q)  # dense in 1.2.0
                rows, cols = np.nonzero(q)
                out[f"smooth_{axis}_rows"], out[f"smooth_{axis}_cols"] = rows, cols
                out[f"smooth_{axis}_vals"] = q[rows, cols].astype(np.float64)
                out[f"smooth_{axis}_shape"] = np.array(q.shape)
            out["smooth_num_rows"], out["smooth_num_cols"] = n_rows, n_cols
            out["smooth_weight"] = float(f["weight"])
            continue
        if kind not in ("quadratic-overdose", "quadratic-underdose", "quadratic"):
            continue  # PortPy's create_cvxpy_problem poses no other type
        name = f["structure_name"]
        if name not in names or len(inf.get_opt_voxels_idx(name)) == 0:
            continue
        level = 0.0
        if kind != "quadratic":
            key = opt.matching_keys(f, "dose")
            level = opt.dose_to_gy(key, f[key]) / fx
        out[f"term{k}_type"], out[f"term{k}_name"] = kind, name
        out[f"term{k}_weight"], out[f"term{k}_level"] = float(f["weight"]), float(level)
        out[f"term{k}_voxels"] = np.asarray(inf.get_opt_voxels_idx(name), dtype=np.int64)
        k += 1
    definitions = list(criteria.get_criteria())
    for c in opt_params.get("constraints", []):
        if c["parameters"]["structure_name"] in names:
            found, i = criteria.check_criterion_exists(c, return_ind=True)
            if found:
                definitions[i] = c
            else:
                definitions.append(c)
    d_max = np.full(inf.A.shape[0], np.inf)
    j = 0
    for c in definitions:
        key = opt.matching_keys(c["constraints"], "limit")
        org = c["parameters"]["structure_name"]
        if not key or org not in names or len(inf.get_opt_voxels_idx(org)) == 0:
            continue
        limit = opt.dose_to_gy(key, c["constraints"][key])
        vox = np.asarray(inf.get_opt_voxels_idx(org), dtype=np.int64)
        if c["type"] == "max_dose" and org not in ("GTV", "CTV"):
            d_max[vox] = np.minimum(d_max[vox], limit / fx)
        elif c["type"] == "mean_dose":
            frac = plan.structures.get_fraction_of_vol_in_calc_box(org)
            out[f"mean{j}_name"], out[f"mean{j}_voxels"] = org, vox
            out[f"mean{j}_cc"] = np.asarray(inf.get_opt_voxels_volume_cc(org), dtype=np.float64)
            out[f"mean{j}_limit"] = float(limit / frac / fx)
            j += 1
    out["d_max"] = d_max
    np.savez(path, **out)


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:5])))
