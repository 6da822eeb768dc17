"""Inner solvers of the first-order method: descent on ``x >= 0`` with a line search.

Each augmented-Lagrangian round minimises a smooth function ``phi`` of the fluence over
``x >= 0`` with one of: projected L-BFGS with an Armijo backtracking search along the
projection arc (:func:`lbfgs`, the default, array API), FISTA with backtracking, adaptive
restart and a Jacobi preconditioner (:func:`fista`, array API) or scipy's L-BFGS-B
(:func:`lbfgsb`, numpy only). :class:`InnerLoop` holds what they share: ``phi``, the
counted products, the limits, the progress bar and the user's callback.

References
----------
A. Beck, M. Teboulle, "A fast iterative shrinkage-thresholding algorithm for linear inverse
problems", SIAM J. Imaging Sci. 2 (2009) 183, doi:10.1137/080716542.
B. O'Donoghue, E. Candès, "Adaptive restart for accelerated gradient schemes", Found. Comput.
Math. 15 (2015) 715, doi:10.1007/s10208-013-9150-3.
D. P. Bertsekas, SIAM J. Control Optim. 20 (1982) 221, doi:10.1137/0320018.
"""

from __future__ import annotations

import math
import time

import numpy as np
import scipy.optimize
import scipy.sparse as sp

from ._array_backend import ArrayBackend
from ._problem import Problem
from ._result import Status

__all__ = [
    "InnerLoop",
    "estimate_lipschitz",
    "fista",
    "jacobi_preconditioner",
    "lbfgs",
    "lbfgsb",
]


def _dot(xp, a, b) -> float:
    return float(xp.sum(a * b))


class InnerLoop:
    """What every inner solver shares: the objective ``phi``, the products, the iteration
    and dose-evaluation counters, the limits, the progress bar and the user's callback."""

    def __init__(
        self, phi, fwd, grad_x, counts, t_start, time_limit_s, bar, callback, make_result
    ) -> None:
        self.phi = phi
        self.fwd = fwd
        self.grad_x = grad_x
        self.counts = counts
        self.t_start = t_start
        self.time_limit_s = time_limit_s
        self.bar = bar
        self.callback = callback
        self.make_result = make_result

    def timed_out(self) -> bool:
        return (
            self.time_limit_s is not None and time.perf_counter() - self.t_start > self.time_limit_s
        )

    def stop_status(self, it: int, budget: int) -> Status | None:
        """``ITERATION_LIMIT`` or ``TIME_LIMIT`` when the inner loop must stop, else None."""
        if it >= budget:
            return Status.ITERATION_LIMIT
        if self.timed_out():
            return Status.TIME_LIMIT
        return None

    def count_iteration(self) -> None:
        self.counts["iter"] += 1
        if self.bar is not None:
            self.bar.update(1)

    def report(self, it: int, x) -> None:
        """Every 100 inner iterations, show the callback an intermediate result."""
        if self.callback is not None and it % 100 == 0:
            self.callback(self.make_result(Status.ITERATION_LIMIT, f"inner iteration {it}", x))


#: Entries per block of rows in :func:`squared_transpose_product`.
SQUARED_BLOCK_NNZ = 4_000_000


def squared_transpose_product(a, h: np.ndarray) -> np.ndarray:
    """``(a ** 2).T @ h`` (element-wise square), (n_cols,) float64, for a dense array or a
    CSR matrix ``a`` of shape (n_rows, n_cols) and ``h`` of shape (n_rows,).

    A CSR matrix is squared one block of rows (about :data:`SQUARED_BLOCK_NNZ` entries)
    at a time, and only where ``h`` is non-zero: squaring it whole made a temporary copy as
    large as the matrix (1 GB for a thorax's rows).
    """
    if not sp.issparse(a):
        return np.asarray((np.asarray(a, dtype=np.float64) ** 2).T @ h)
    a = a.tocsr()
    out = np.zeros(a.shape[1])
    indptr = a.indptr
    cuts = np.searchsorted(indptr, np.arange(0, a.nnz, SQUARED_BLOCK_NNZ), side="right") - 1
    bounds = np.unique(np.r_[cuts, a.shape[0]])
    for r0, r1 in zip(bounds[:-1], bounds[1:], strict=True):
        if np.any(h[r0:r1]):
            out += a[r0:r1].power(2).T @ h[r0:r1]
    return out


def jacobi_preconditioner(problem, comp, al) -> np.ndarray:
    """Diagonal (Jacobi) preconditioner, (n_beamlets,) numpy array: ``diag(A^T H A)`` with
    ``H`` the curvature of the quadratic terms and of the augmented-Lagrangian penalties,
    normalised to its max and floored at 1e-3. Computed once on the host."""
    h = np.zeros(comp.n_u)
    for t in Problem.flatten(comp.soft + comp.hard):
        if t.acts_on != "dose":
            continue
        w = t.weight if not t.hard else 1.0
        if t.hard and al is not None:
            k = comp.hard.index(t) if t in comp.hard else None
            w = al.rho[k] if k is not None else w
        h[problem.local_index[t.structure]] += 2.0 * w * problem.p[t.structure]
    diag = squared_transpose_product(problem.a_union, h)
    if not diag.max(initial=0.0) > 0:
        return np.ones(problem.n_beamlets)
    return np.clip(diag / diag.max(), 1e-3, None)


def estimate_lipschitz(backend: ArrayBackend, x, fwd, bwd, phi, precond) -> float:
    """A few power iterations on the preconditioned curvature ``D^-1 A^T H A``."""
    xp = backend.xp
    rng = np.random.default_rng(0)
    v = backend.asarray(rng.random(x.shape[0]))
    d = fwd(x)
    _, g0, _ = phi(d, x)
    est = 1.0
    for _ in range(4):
        v = v / math.sqrt(_dot(xp, v, v))
        eps = 1e-3 * (math.sqrt(_dot(xp, x, x)) / math.sqrt(x.shape[0]) + 1e-3)
        dv = fwd(v)
        _, g1, _ = phi(d + eps * dv, x + eps * v)
        hv = bwd((g1 - g0) / eps) / precond
        est = math.sqrt(_dot(xp, hv, hv))
        v = hv if est > 0 else v
    return max(est, 1e-12)


def lbfgs(xp, x, d, loop: InnerLoop, tol, budget, memory: int = 10):
    """Projected L-BFGS on ``x >= 0`` (two-metric projection, Bertsekas 1982).

    Beamlets at zero whose gradient pushes them further down are held; the L-BFGS two-loop
    recursion gives the step on the others; an Armijo backtracking search runs along the
    projection arc. ``d = A_u x`` is kept in step with ``x``.

    References
    ----------
    D. P. Bertsekas, "Projected Newton methods for optimization problems with simple
    constraints", SIAM J. Control Optim. 20 (1982) 221, doi:10.1137/0320018.
    D. C. Liu, J. Nocedal, Math. Program. 45 (1989) 503, doi:10.1007/BF01589116.
    """
    phi, fwd, grad_x = loop.phi, loop.fwd, loop.grad_x
    f, g_u, g_x = phi(d, x)
    g = grad_x(g_u, g_x)
    pairs: list = []
    small = 0
    it = 0
    gamma = None
    while True:
        stop = loop.stop_status(it, budget)
        if stop is not None:
            return x, d, stop
        eps = 1e-12 + 1e-9 * float(xp.max(x)) if x.shape[0] else 0.0
        free = (x > eps) | (g < 0)
        q = xp.where(free, g, 0.0)
        alphas = []
        for s_k, y_k, rho_k in reversed(pairs):
            a = rho_k * _dot(xp, s_k, q)
            alphas.append(a)
            q = q - a * y_k
        if gamma is None:
            gmax = float(xp.max(xp.abs(q))) or 1.0
            scale = max(float(xp.mean(x)), 1e-12) if x.shape[0] else 1.0
            gamma = 0.1 * scale / gmax
        r = gamma * q
        for (s_k, y_k, rho_k), a in zip(pairs, reversed(alphas), strict=True):
            b = rho_k * _dot(xp, y_k, r)
            r = r + (a - b) * s_k
        p = -xp.where(free, r, 0.0)
        if not _dot(xp, p, g) < 0:  # not a descent direction: restart memory
            pairs.clear()
            p = -gamma * xp.where(free, g, 0.0)
        step = 1.0
        while True:
            x_new = xp.clip(x + step * p, 0.0, None)
            d_new = fwd(x_new)
            # dose-space gradient computed with the value (cheap); the transpose product
            # is done only for the accepted point
            f_new, g_u, g_x = phi(d_new, x_new)
            dec = _dot(xp, g, x_new - x)
            if f_new <= f + 1e-4 * dec or step < 1e-10:
                break
            step *= 0.5 if step > 0.1 else 0.1
        if step < 1e-10 and f_new > f:
            return x, d, Status.OPTIMAL  # no descent possible at float precision
        g_new = grad_x(g_u, g_x)
        s_k = x_new - x
        y_k = g_new - g
        sy = _dot(xp, s_k, y_k)
        if sy > 1e-12 * math.sqrt(_dot(xp, s_k, s_k) * _dot(xp, y_k, y_k)) and sy > 0:
            pairs.append((s_k, y_k, 1.0 / sy))
            if len(pairs) > memory:
                pairs.pop(0)
            gamma = sy / _dot(xp, y_k, y_k)
        it += 1
        loop.count_iteration()
        rel = (f - f_new) / max(abs(f_new), 1e-30)
        x, d, f, g = x_new, d_new, f_new, g_new
        small = small + 1 if rel < tol else 0
        if small >= 3:
            return x, d, Status.OPTIMAL
        loop.report(it, x)


def lbfgsb(x, loop: InnerLoop, tol, budget):
    """scipy L-BFGS-B on ``x >= 0``; one forward and one transpose product per evaluation."""
    phi, fwd, grad_x = loop.phi, loop.fwd, loop.grad_x

    if budget <= 0:
        return x, fwd(x), Status.ITERATION_LIMIT
    state = {"status": None, "it": 0}

    def fg(v):
        d = fwd(v)
        f, g_u, g_x = phi(d, v)
        return f, grad_x(g_u, g_x)

    def cb(intermediate_result):
        state["it"] += 1
        loop.count_iteration()
        if loop.timed_out():
            state["status"] = Status.TIME_LIMIT
            raise StopIteration
        try:
            loop.report(state["it"], intermediate_result.x)
        except StopIteration:
            state["status"] = Status.CALLBACK_STOP
            raise

    res = scipy.optimize.minimize(
        fg,
        x,
        jac=True,
        method="L-BFGS-B",
        bounds=scipy.optimize.Bounds(np.zeros(x.shape[0]), np.inf),
        callback=cb,
        options={
            "maxiter": budget,
            "maxfun": 2 * budget + 20,
            "ftol": tol,
            "gtol": 0.0,
            "maxcor": 10,
        },
    )
    x_new = np.clip(res.x, 0, None)
    if state["status"] == Status.CALLBACK_STOP:
        raise StopIteration
    if state["status"] is not None:
        return x_new, fwd(x_new), state["status"]
    status = Status.OPTIMAL if res.status == 0 else Status.ITERATION_LIMIT
    if res.status == 2:  # ABNORMAL: line search could not progress, at the float limit
        status = Status.OPTIMAL
    return x_new, fwd(x_new), status


def fista(xp, x, d, loop: InnerLoop, lip, precond, tol, budget):
    """FISTA with backtracking, a slowly shrinking step and gradient-based adaptive restart.

    Returns ``(x, d, lip, status)``; ``d = A_u x`` is kept in step with ``x``.
    """
    phi, fwd, grad_x = loop.phi, loop.fwd, loop.grad_x
    f_x, _, _ = phi(d, x, want_grad=False)
    y, dy = x, d
    t = 1.0
    small = 0
    it = 0
    while True:
        stop = loop.stop_status(it, budget)
        if stop is not None:
            return x, d, lip, stop
        f_y, g_u, g_x = phi(dy, y)
        g = grad_x(g_u, g_x)
        while True:
            x_new = xp.clip(y - g / (lip * precond), 0.0, None)
            d_new = fwd(x_new)
            f_new, _, _ = phi(d_new, x_new, want_grad=False)
            step = x_new - y
            ss = _dot(xp, step * precond, step)
            quad = f_y + _dot(xp, g, step) + 0.5 * lip * ss
            # float32 products: allow rounding noise in the sufficient-decrease test
            if f_new <= quad + 1e-10 * abs(f_y) or ss == 0.0 or not math.isfinite(lip):
                break
            lip *= 2.0
        it += 1
        loop.count_iteration()
        # adaptive restart (gradient scheme) and monotone safeguard
        if _dot(xp, (y - x_new) * precond, x_new - x) > 0 or f_new > f_x:
            t = 1.0
            loop.counts["restarts"] += 1
        t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        beta = (t - 1.0) / t_new
        rel = abs(f_x - f_new) / max(abs(f_new), 1e-30)
        y = x_new + beta * (x_new - x)
        dy = d_new + beta * (d_new - d)
        x, d, f_x, t = x_new, d_new, f_new, t_new
        lip *= 0.98
        small = small + 1 if rel < tol else 0
        if small >= 5:
            return x, d, lip, Status.OPTIMAL
        loop.report(it, x)
