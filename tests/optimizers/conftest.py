"""Fixtures shared by the optimizers tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def compile_calls(monkeypatch):
    """One entry per CVXPY compilation (``SolvingChain.apply``) made during the test."""
    from cvxpy.reductions.solvers.solving_chain import SolvingChain

    calls = []
    original = SolvingChain.apply

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SolvingChain, "apply", counting)
    return calls


@pytest.fixture
def compiled_tensors(monkeypatch):
    """Shape of each compiled parameter tensor that CVXPY re-orders for the conic solver
    (``ConicSolver.format_constraints``: its index arrays grow with rows x columns)."""
    from cvxpy.reductions.solvers.conic_solvers.conic_solver import ConicSolver

    shapes = []
    original = ConicSolver.format_constraints.__func__  # a classmethod

    def recording(cls, problem, exp_cone_order):
        shapes.append((int(problem.x.size), int(problem.total_param_size)))
        return original(cls, problem, exp_cone_order)

    monkeypatch.setattr(ConicSolver, "format_constraints", classmethod(recording))
    return shapes
