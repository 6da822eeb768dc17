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
