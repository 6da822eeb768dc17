"""Test-run settings shared by every test package.

The README's test command runs the suite on every core with pytest-xdist (``-n auto``).
Each test file goes whole to one worker (xdist's ``loadfile`` scheduling) so that a
module-scoped fixture, such as a planned phantom, is built once, not once per worker.
Another ``--dist`` mode given on the command line is honoured.
"""

from __future__ import annotations

import pytest


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Keep each test file on one worker when xdist distributes the run with its default
    mode (``load``); another ``--dist`` given on the command line is left as asked."""
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadFileScheduling

    return LoadFileScheduling(config, log)


@pytest.fixture
def traced_beams(monkeypatch):
    """The beams the pencil-beam engine ray-traces while the test runs, in call order
    (``dose_engine._field_dose.prepare_beam_points`` wrapped to record its ``beam``)."""
    from dose_engine import _field_dose

    traced = []
    prepare = _field_dose.prepare_beam_points

    def recording(density, ct_grid, dose_grid, beam, *args, **kwargs):
        traced.append(beam)
        return prepare(density, ct_grid, dose_grid, beam, *args, **kwargs)

    monkeypatch.setattr(_field_dose, "prepare_beam_points", recording)
    return traced
