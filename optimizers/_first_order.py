"""First-order solver: the driver.

A bound-constrained quasi-Newton or accelerated-gradient method on ``x >= 0``
(:mod:`optimizers._line_search`) inside an augmented-Lagrangian loop for the hard
constraints (:mod:`optimizers._augmented_lagrangian`); each term is seen through its
first-order surrogate (:mod:`optimizers._surrogates`). This module runs the outer loop,
the work budgets and the stopping rules, and builds the :class:`OptimizationResult`.

The vector code is written against the array API standard: it takes its namespace from an
:class:`ArrayBackend` (``_array_backend.py``), which also holds the two matrix products, so
numpy + scipy CSR on the CPU and CuPy + cupyx CSR on a GPU run the same code (the tests run
it with array-api-strict). Each iteration costs one forward product ``A_u @ x`` and one
transpose product ``A_u^T g`` (nearly full rows as one dense block, the rest CSR): the dose at the
extrapolated point is a linear combination of stored doses, not a new product.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ._array_backend import ArrayBackend, array_backend
from ._augmented_lagrangian import AugmentedLagrangian, is_level_bound
from ._compiled import CompiledTerms
from ._feasibility import FeasibilityCertificate, certify_hard_constraints
from ._line_search import (
    InnerLoop,
    estimate_lipschitz,
    fista,
    jacobi_preconditioner,
    lbfgs,
    lbfgsb,
)
from ._problem import Problem, require_problem
from ._result import OptimizationResult, Status
from ._surrogates import first_order_surrogate
from .errors import InfeasibleError, InvalidProblemError

__all__ = ["solve_first_order"]

logger = logging.getLogger("rtplan.optimizers")


def solve_first_order(
    problem: Problem,
    *,
    x0: Any = None,
    max_iter: int = 5000,
    tol: float = 1e-8,
    constraint_tol: float = 1e-4,
    max_outer: int = 30,
    hard_extra_iter: int | None = None,
    certify: bool = True,
    time_limit_s: float | None = None,
    callback: Callable[[OptimizationResult], Any] | None = None,
    progress: bool = False,
    inner: str | None = None,
    memory: int = 10,
    backend: str | ArrayBackend = "numpy",
) -> OptimizationResult:
    """Solve ``problem`` with a bound-constrained first-order method + augmented Lagrangian.

    Parameters
    ----------
    problem : Problem
        Problem with smooth objective terms and hard constraints (max/min/mean dose, gEUD
        and lexicographic level bounds).
    x0 : (n_beamlets,) array, MU, optional
        Warm start (clipped to ``x >= 0``); its array namespace (numpy, CuPy) is used
        throughout. Default: a uniform fluence scaled to the targets' dose levels.
    max_iter : int, optional
        Total inner-iteration budget (default 5000).
    tol : float, optional
        Relative objective decrease below which an inner solve stops (three iterations
        in a row; default 1e-8).
    constraint_tol : float, optional
        Largest accepted relative constraint violation (default 1e-4): the violation over
        ``max(|bound|, 1 Gy)`` for dose constraints, over the bound for lexicographic level
        bounds (see :meth:`Problem.max_violation`).
    max_outer : int, optional
        Augmented-Lagrangian outer iterations (default 30).
    hard_extra_iter : int, optional
        Work budget for violated hard constraints: when ``max_iter`` or ``max_outer`` is
        spent while a hard constraint (other than a lexicographic level bound) is
        violated beyond ``constraint_tol`` and its violation still falls (by 10 % within
        two outer rounds), the solve continues, once, up to ``max_iter +
        hard_extra_iter`` inner iterations and ``2 * max_outer`` rounds, and stops early
        when the violation stops falling. Default ``3 * max_iter``; 0 disables it.
    certify : bool, optional
        When hard constraints are still violated at the end (and the time limit was not
        what stopped the solve), decide with
        :func:`certify_hard_constraints` (a reduced linear programme solved by CVXPY +
        Clarabel) whether they contradict each other (default True; off for a problem
        with a ``meterset_dose``, which that programme cannot take). Only a certificate
        makes the solve raise :class:`InfeasibleError`; otherwise the result has status
        ``iteration_limit`` (did not converge) and says so, with the residual. The
        certificate is also sought before the extra work budget is granted (more rounds
        cannot help against a proven contradiction).
    time_limit_s : float, optional
        Wall-time budget, s.
    callback : callable, optional
        Called after every outer iteration (and every 100 inner iterations) with an
        intermediate :class:`OptimizationResult`; raising ``StopIteration`` stops the run
        with status ``callback_stop``.
    progress : bool, optional
        Show a tqdm progress bar of inner iterations.
    inner : {"lbfgs", "lbfgsb", "fista"}, optional
        Inner solver of each augmented-Lagrangian round. ``"lbfgs"`` (default): projected
        limited-memory BFGS (two-metric projection: quasi-Newton step on the free beamlets,
        Armijo backtracking along the projection arc), written against the array API so it
        runs on numpy and CuPy; one forward and one transpose product per iteration.
        ``"lbfgsb"``: scipy's L-BFGS-B (numpy only; slow on a loaded multi-threaded BLAS).
        ``"fista"``: accelerated projected gradient with a Jacobi preconditioner,
        backtracking and adaptive restart (needs many more iterations on ill-conditioned
        fluence problems).
    memory : int, optional
        Number of correction pairs kept by ``"lbfgs"`` (default 10).
    backend : {"numpy", "cupy"} or ArrayBackend, optional
        Where the vectors live and the products run. ``"numpy"`` (default): scipy CSR
        products on the CPU. ``"cupy"``: the union matrix and its transpose are copied once
        to the GPU (cupyx.scipy.sparse CSR) and every vector lives there; ``x0`` may be a
        numpy or CuPy array. An :class:`ArrayBackend` supplies any array-API namespace with
        its own products. The result's ``x`` is always a numpy array.

    Returns
    -------
    OptimizationResult
        ``extras`` holds ``max_violation`` (relative), ``violations`` (per constraint),
        ``n_outer``, ``lipschitz``, ``n_restarts``, ``budget_iter`` (the inner-iteration
        budget in the end), ``extended`` (the hard-constraint budget was granted),
        ``stalled`` (the violation stopped falling) and, when hard constraints were left
        violated, ``certificate`` (:meth:`FeasibilityCertificate.as_dict`).

    Raises
    ------
    InvalidProblemError
        A bad ``x0`` or option; a term without a first-order surrogate (e.g. a
        :class:`CvxpyTerm`), named.
    SolverError
        ``backend="cupy"`` without an importable CuPy.
    InfeasibleError
        The hard constraints are proven contradictory (a certificate from
        :func:`certify_hard_constraints`, in the error's ``certificate``); the message
        names them. A solve that only failed to meet them returns ``iteration_limit``.

    Notes
    -----
    DVH goals (:class:`MaxDVH`, :class:`MinDVH`) use a softplus-smoothed CVaR (smoothing
    ``tau_gy`` = 0.05 Gy) that bounds the exact CVaR from the safe side, so hard DVH
    constraints still guarantee the exact DVH goal; objective values can differ from the
    CVXPY formulation's (exact CVaR) by a fraction of ``tau_gy``.
    """
    require_problem(problem)
    for term in Problem.flatten(problem.terms):  # refuse a term it cannot use, by name
        first_order_surrogate(term)
    t_start = time.perf_counter()
    n = problem.n_beamlets
    if inner is None:
        inner = "lbfgs"
    if inner not in ("lbfgs", "lbfgsb", "fista"):
        raise InvalidProblemError(
            f"Unknown `inner` {inner!r}; choose 'lbfgs', 'lbfgsb' or 'fista'."
        )
    backend = array_backend(problem, backend)
    if inner == "lbfgsb" and backend.name != "numpy":
        raise InvalidProblemError(
            "`inner='lbfgsb'` runs on numpy arrays only; use 'lbfgs' or 'fista' on a GPU."
        )
    xp = backend.xp
    x = backend.asarray(_default_start(problem) if x0 is None else x0)
    if x.ndim != 1 or x.shape[0] != n:
        raise InvalidProblemError(
            f"`x0` has shape {tuple(x.shape)}, expected ({n},) (one MU per beamlet)."
        )
    if not bool(xp.all(xp.isfinite(x))):
        raise InvalidProblemError("`x0` holds NaN or infinite values.")
    x = xp.clip(x, 0.0, None)
    comp = CompiledTerms(problem, backend)
    counts = {"dose": 0, "iter": 0, "restarts": 0}
    fwd, bwd = _counted_products(backend, counts)
    soft_w = sum(t.weight for t in comp.soft) or 1.0
    al = AugmentedLagrangian(comp, rho0=10.0 * soft_w) if comp.hard else None
    # the iterations carry d = A_u x (linear: directions and extrapolations stay exact);
    # the terms read A_u x + dose_offset (+ the meterset dose U κ∘M̃(x), from x itself)
    offset = None if problem.union_offset is None else backend.asarray(problem.union_offset)
    meterset = problem.meterset_dose
    if meterset is not None:
        certify = False  # the certificate's linear programme cannot take it
        u_mu = backend.asarray(problem.union_meterset_columns)

    def term_dose(d, v):
        if offset is not None:
            d = d + offset
        if meterset is not None:
            d = d + u_mu @ backend.asarray(meterset.meterset(backend.to_host(v)))
        return d

    def phi(d, v, want_grad=True):
        d = term_dose(d, v)
        f, g_u, g_x = comp.soft_value_grad(d, v, want_grad)
        if al is not None:
            fa, g_u, g_x = al.value_grad(d, v, g_u, g_x, want_grad)
            f += fa
        if meterset is not None and want_grad and g_u is not None:  # chain rule through M̃
            w = backend.to_host(u_mu.T @ g_u)
            g_mu = backend.asarray(meterset.meterset_vjp(backend.to_host(v), w))
            g_x = g_mu if g_x is None else g_x + g_mu
        return f, g_u, g_x

    def grad_x(g_u, g_x):
        g = bwd(g_u) if g_u is not None else xp.zeros_like(x)
        return g if g_x is None else g + g_x

    bar = None
    if progress:
        bar = tqdm(total=max_iter, desc="first-order", unit="it", leave=False)

    status = Status.ITERATION_LIMIT
    precond = lip = None
    if inner == "fista":
        precond = backend.asarray(jacobi_preconditioner(problem, comp, al))
        lip = estimate_lipschitz(backend, x, fwd, bwd, phi, precond)
    d = fwd(x)
    history: list[dict] = []

    def make_result(status_, message_, x_):
        xn = np.asarray(backend.to_host(x_), dtype=np.float64)
        du = problem.union_dose(xn)
        tv = problem.evaluate(xn, d_union=du)
        viol, per = problem.max_violation(xn, d_union=du)
        return OptimizationResult(
            x=xn,
            objective=problem.objective(xn, d_union=du),
            status=status_,
            message=message_,
            n_iter=counts["iter"],
            n_dose_evals=counts["dose"],
            solve_time_s=time.perf_counter() - t_start,
            term_values=tv,
            extras={
                "solver": "first_order",
                "max_violation": viol,
                "violations": per,
                "n_outer": len(history),
                "lipschitz": lip,
                "n_restarts": counts["restarts"],
                "history": tuple(history),
            },
        )

    loop = InnerLoop(phi, fwd, grad_x, counts, t_start, time_limit_s, bar, callback, make_result)
    extra_iter = 3 * max_iter if hard_extra_iter is None else int(hard_extra_iter)
    budget, outer_cap, extended, stalled = max_iter, max_outer, False, False
    try:
        outer = 0
        inner_tol = max(tol, 1e-6) if al is not None else tol
        while True:
            if inner == "fista":
                x, d, lip, inner_status = fista(
                    xp, x, d, loop, lip, precond, inner_tol, budget - counts["iter"]
                )
            elif inner == "lbfgs":
                x, d, inner_status = lbfgs(
                    xp, x, d, loop, inner_tol, budget - counts["iter"], memory=memory
                )
            else:
                x, d, inner_status = lbfgsb(x, loop, inner_tol, budget - counts["iter"])
            if al is None:
                status = inner_status
                break
            outer += 1
            viol = al.update(term_dose(d, x), x, constraint_tol)
            f_now = comp.soft_value_grad(term_dose(d, x), x, want_grad=False)[0]
            history.append(
                {
                    "outer": outer,
                    "objective": f_now,
                    "max_violation": viol,
                    "goal_violation": al.goal_violation(),
                    "iterations": counts["iter"],
                }
            )
            logger.debug("AL outer %d: objective %.6g, max rel. violation %.3g", outer, f_now, viol)
            if callback is not None:
                callback(make_result(Status.ITERATION_LIMIT, f"outer iteration {outer}", x))
            if inner_status == Status.TIME_LIMIT:
                status = inner_status
                break
            if (
                inner_status != Status.ITERATION_LIMIT
                and viol <= constraint_tol
                and inner_tol <= tol * 1.0001
            ):
                status = Status.OPTIMAL
                break
            # the extra work is for the goals' hard constraints, not for level bounds
            violated = al.goal_violation() > constraint_tol
            if extended and violated and not _improving(history):
                stalled = True
                status = Status.ITERATION_LIMIT
                break
            if inner_status == Status.ITERATION_LIMIT or outer >= outer_cap:
                if not (violated and not extended and extra_iter > 0 and _improving(history)):
                    status = Status.ITERATION_LIMIT
                    break
                if certify:  # more rounds cannot help against a proven contradiction
                    _certify_or_raise(problem, backend.to_host(x), constraint_tol)
                # the hard constraints still improve: grant the extra work budget once
                extended = True
                budget, outer_cap = max_iter + extra_iter, 2 * max_outer
                logger.info(
                    "hard constraints violated by %.3g after %d iterations and %d rounds; "
                    "continuing up to %d iterations and %d rounds",
                    viol,
                    counts["iter"],
                    outer,
                    budget,
                    outer_cap,
                )
            inner_tol = max(tol, inner_tol * 0.01)
    except StopIteration:
        status = Status.CALLBACK_STOP
    finally:
        if bar is not None:
            bar.close()

    result_status = status
    res = make_result(status, "", x)
    viol = res.extras["max_violation"]
    if al is not None and viol > constraint_tol and status == Status.OPTIMAL:
        result_status = Status.ITERATION_LIMIT
    extras = dict(res.extras, budget_iter=budget, extended=extended, stalled=stalled)
    detail = ""
    goals = {t.label for t in comp.hard if not is_level_bound(t)}
    bad = [k for k, v in res.extras["violations"].items() if v > constraint_tol and k in goals]
    if bad and status != Status.CALLBACK_STOP:
        cert = None
        if certify and status != Status.TIME_LIMIT:
            cert = _certify_or_raise(problem, res.x, constraint_tol)
            extras["certificate"] = cert.as_dict()
        worst = max(res.extras["violations"][b] for b in bad)
        detail = (
            " Hard constraint(s) "
            + " and ".join(f"`{b}`" for b in bad)
            + f" still violated (largest relative violation {worst:.3g}) after "
            f"{counts['iter']} inner iterations and {len(history)} augmented-Lagrangian "
            f"rounds (work budget {budget} iterations"
            + (", the violation stopped improving" if stalled else "")
            + "); not shown infeasible: "
            + (cert.message if cert is not None else "not checked")
            + "."
        )
    messages = {
        Status.OPTIMAL: "Converged: relative objective change below tolerance"
        + (" and constraints met." if al is not None else "."),
        Status.ITERATION_LIMIT: "Did not converge: stopped at the iteration limit.",
        Status.TIME_LIMIT: "Did not converge: stopped at the time limit.",
        Status.CALLBACK_STOP: "Stopped by the callback.",
    }
    return OptimizationResult(
        x=res.x,
        objective=res.objective,
        status=result_status,
        message=messages.get(result_status, str(result_status)) + detail,
        n_iter=res.n_iter,
        n_dose_evals=res.n_dose_evals,
        solve_time_s=time.perf_counter() - t_start,
        term_values=res.term_values,
        extras=extras,
    )


def _certify_or_raise(problem: Problem, x: Any, tol: float) -> FeasibilityCertificate:
    """:func:`certify_hard_constraints` at ``x``; raise :class:`InfeasibleError` with the
    certificate when it proves the hard constraints contradictory."""
    cert = certify_hard_constraints(problem, np.asarray(x, dtype=np.float64), tol=tol)
    if cert.infeasible:
        raise InfeasibleError(
            "The hard constraints contradict each other: "
            + cert.message
            + ". Relax one of them or make it a soft goal (hard=False).",
            certificate=cert,
        )
    return cert


#: During the extra work granted to violated hard constraints, the solve goes on while the
#: largest relative violation of an outer round is below this fraction of the best one
#: two or more rounds earlier (10 % progress in two rounds).
_HARD_PROGRESS = 0.9


def _improving(history: list[dict]) -> bool:
    """The goals' hard constraints' violation still falls (see :data:`_HARD_PROGRESS`)."""
    if len(history) < 3:
        return True
    earlier = min(h["goal_violation"] for h in history[:-2])
    return history[-1]["goal_violation"] < _HARD_PROGRESS * earlier


def _counted_products(backend: ArrayBackend, counts: dict) -> tuple[Callable, Callable]:
    """``fwd(x) = A_u x`` and ``bwd(g) = A_u^T g`` on float64 vectors, each call counted in
    ``counts["dose"]``; float32 matrices multiply float32 copies (bandwidth-bound products)."""
    xp, matvec, rmatvec = backend.xp, backend.matvec, backend.rmatvec

    if not backend.float32_products:

        def fwd(v):
            counts["dose"] += 1
            return matvec(v)

        def bwd(g):
            counts["dose"] += 1
            return rmatvec(g)

        return fwd, bwd

    def fwd32(v):
        counts["dose"] += 1
        return xp.astype(matvec(xp.astype(v, xp.float32)), xp.float64)

    def bwd32(g):
        counts["dose"] += 1
        return xp.astype(rmatvec(xp.astype(g, xp.float32)), xp.float64)

    return fwd32, bwd32


def _default_start(problem: Problem) -> np.ndarray:
    """Uniform fluence scaled so the mean dose of the targets (the structures of the terms
    that declare ``target_goal``: underdose, min-dose, squared deviation, DVH minimum)
    matches their level (with the problem's ``dose_offset``: the matrix's share is the
    level minus the offset's mean); 1 MU otherwise."""
    x = np.ones(problem.n_beamlets)
    d = problem.union_dose(x)
    offset = problem.union_offset
    if offset is not None:
        d = d - offset
    levels, means = [], []
    for t in Problem.flatten(problem.terms):
        if t.target_goal and t.dose_gy:
            off = 0.0 if offset is None else float(problem.term_dose(t, offset).mean())
            levels.append((t.dose_gy, off))
            means.append(float(problem.term_dose(t, d).mean()))
    if levels and max(means) > 0:
        level = float(np.mean([lv for lv, _ in levels]))
        aim = max(level - float(np.mean([off for _, off in levels])), 1e-3 * level)
        x *= aim / max(float(np.mean(means)), 1e-12)
    return x
