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
