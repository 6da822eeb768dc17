"""``PlanOptions``: one record of planning options, checked once; the keywords it replaces
still work for one release, with a warning naming it."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import numpy as np
import pytest

from dose_engine import hu_to_density
from rtplan.dose import resolve_density_table
from rtplan.errors import InputError
from rtplan.planning import PlanOptions, plan_and_write, plan_batch, plan_patient, run_demo
from rtplan.protocols import load_protocol


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"backend": "torch"}, r"`backend` must be one of \('numpy', 'cupy'\); got 'torch'"),
        ({"solver": "gurobi"}, r"`solver` must be one of .*got 'gurobi'"),
        ({"dose_grid_mm": 0.0}, r"`dose_grid_mm` must be a finite spacing > 0 mm; got 0\.0"),
        ({"dose_grid_mm": math.nan}, r"`dose_grid_mm` must be a finite spacing > 0 mm; got nan"),
        ({"n_beams": 0}, r"`n_beams` must be at least 1; got 0"),
        ({"max_iterations": -3}, r"`max_iterations` must be at least 1; got -3"),
    ],
)
def test_out_of_range_options_are_refused_by_name(changes, message):
    with pytest.raises(InputError, match=message):
        PlanOptions(**changes)
    with pytest.raises(InputError, match=message):  # a copy is checked like a new record
        PlanOptions().with_changes(**changes)


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"n_beams": "5"}, "n_beams"),
        ({"n_beams": True}, "n_beams"),
        ({"cache_dir": 5}, "cache_dir"),
        ({"dose_grid_mm": "3"}, "dose_grid_mm"),
        ({"beam_model": 6.0}, "beam_model"),
        ({"density_table": 1.0}, "density_table"),
    ],
)
def test_options_of_the_wrong_type_are_a_type_error_naming_them(changes, name):
    with pytest.raises(TypeError, match=f"`{name}` must be"):
        PlanOptions(**changes)


def test_apply_to_gives_the_protocols_own_overrides():
    options = PlanOptions(solver="cvxpy", dose_grid_mm=5.0, n_beams=7, max_iterations=30)
    protocol = options.apply_to("tg119_cshape")
    assert protocol.dose_grid_mm == (5.0, 5.0, 5.0)
    assert protocol.beams.gantry_angles_deg == pytest.approx([k * 360 / 7 for k in range(7)])
    assert protocol.optimization.solver == "cvxpy"
    assert protocol.optimization.max_iterations == 30
    shipped = load_protocol("tg119_cshape")
    assert PlanOptions().apply_to(shipped) == shipped  # no override: the protocol unchanged


def test_density_table_option_wins_over_the_protocols(tmp_path):
    """The record's table, else the protocol's ``[dose] density_table``, else the shipped
    one; a file is read (and a bad one refused, naming file and line) by ``with_files_read``."""
    scanner = tmp_path / "scanner.csv"
    scanner.write_text("-1000, 0.001\n0, 1.05\n1000, 1.6\n")
    other = tmp_path / "other.csv"
    other.write_text("-1000, 0.001\n0, 0.95\n1000, 1.5\n")
    shipped = load_protocol("tg119_cshape")
    with_table = replace(shipped, density_table=str(scanner))

    def water(table) -> float:  # relative density the table gives 0 HU
        return float(hu_to_density(np.zeros(1, np.float32), table)[0])

    assert water(PlanOptions().density_table_for(shipped)) == water(resolve_density_table(None))
    assert water(PlanOptions().density_table_for(with_table)) == pytest.approx(1.05)
    read = PlanOptions(density_table=other).with_files_read()
    assert water(read.density_table_for(with_table)) == pytest.approx(0.95)
    bad = tmp_path / "bad.csv"
    bad.write_text("-1000, 0.001\n0, 1.0\n-100, 0.9\n")
    with pytest.raises(ValueError, match=f"HU table {re.escape(str(bad))}, line 3"):
        PlanOptions(density_table=bad).with_files_read()


def test_deprecated_keywords_warn_and_reach_the_record(tmp_path):
    # the keyword becomes the record, whose check refuses the value before any work
    with pytest.warns(DeprecationWarning, match=r"plan_patient\(backend=\.\.\.\) is deprecated"):
        with pytest.raises(InputError, match="`backend` must be one of"):
            plan_patient(None, "tg119_cshape", backend="torch")
    with pytest.warns(DeprecationWarning, match=r"PlanOptions\(n_beams=\.\.\.\)"):
        with pytest.raises(InputError, match="`n_beams` must be at least 1; got 0"):
            plan_and_write("ct", "rs.dcm", "tg119_cshape", tmp_path / "out", n_beams=0)
    with pytest.warns(DeprecationWarning, match=r"run_demo\(dose_grid_mm=\.\.\.\)"):
        with pytest.raises(InputError, match="`dose_grid_mm` must be a finite spacing"):
            run_demo(tmp_path / "demo", dose_grid_mm=-1.0)
    with pytest.warns(DeprecationWarning, match=r"plan_batch\(max_iterations=\.\.\.\)"):
        with pytest.raises(InputError, match="`max_iterations` must be at least 1"):
            plan_batch([], max_iterations=0)
    assert not (tmp_path / "out").exists() and not (tmp_path / "demo").exists()


def test_options_and_a_deprecated_keyword_together_are_refused():
    with pytest.raises(TypeError, match=r"got `options` and the keyword\(s\) solver"):
        plan_patient(None, "tg119_cshape", options=PlanOptions(), solver="cvxpy")
    with pytest.raises(TypeError, match="`options` must be an rtplan.planning.PlanOptions"):
        plan_patient(None, "tg119_cshape", options={"solver": "cvxpy"})
