"""A clinic's CT calibration file (CSV, TOML) read by dose_engine.load_hu_table.

Independent checks: the densities interpolated by hu_to_density at the table's own rows
and half-way between them (analytic, piecewise linear); every malformed table refused with
the file and the line (CSV) or row (TOML).
"""

from __future__ import annotations

import numpy as np
import pytest

from dose_engine import BeamModelError, hu_to_density, load_hu_table

CSV = """\
# Scanner X 120 kVp, CIRS 062M, 2026-01-12
hu, relative_electron_density
-1000, 0.001
-100;  0.93
0	1.02
1200, 1.70   # dense bone insert
"""


def test_csv_table_read_and_applied(tmp_path):
    f = tmp_path / "ct.csv"
    f.write_text(CSV)
    t = load_hu_table(f)
    np.testing.assert_array_equal(t.hu, [-1000, -100, 0, 1200])
    np.testing.assert_array_equal(t.density, [0.001, 0.93, 1.02, 1.70])
    assert t.source.startswith("Scanner X") and t.path == str(f)
    assert t.quantity == "relative_electron_density"
    rho = hu_to_density(np.array([-100.0, -50.0, 0.0, 600.0, 5000.0]), t)
    np.testing.assert_allclose(rho, [0.93, 0.975, 1.02, 1.36, 1.70], rtol=1e-6)
    # a denser calibration than the shipped one for soft tissue (1.02 against 1.00)
    assert float(hu_to_density(np.array([0.0]), t)[0]) > float(hu_to_density(np.array([0.0]))[0])


def test_toml_table_with_mass_density(tmp_path):
    f = tmp_path / "ct.toml"
    f.write_text(
        'source = "phantom"\nquantity = "mass_density"\n'
        "table = [[-1000, 0.0012], [0, 1.0], [1000, 1.55]]\n"
    )
    t = load_hu_table(f)
    assert (t.quantity, t.source) == ("mass_density", "phantom")
    assert float(hu_to_density(np.array([500.0]), t)[0]) == pytest.approx(1.275)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("-1000, 0.001\n0, 1.0\n-100, 0.9\n", r"line 3: HU -100 after 0; the HU column must"),
        ("-1000, 0.5\n0, 1.0\n100, 0.9\n", r"line 3: density 0.9 below the previous"),
        ("-1000, 0.001\n0, 1.0, 7\n", r"line 2: 3 values; expected two numbers"),
        ("# c\n-1000, 0.001\n0, one\n", r"line 3: 'one' is not a number"),
        ("-1000, 0.001\n0, nan\n", r"line 2: 'nan' is not finite"),
        ("hu, density\n-1000, 0.001\n0, 1\n", r"line 1: header 'hu, density'; expected two"),
        ("-1000, 0.1\n0, 1.3\n", r"water \(0 HU\) gets density 1.3; expected 0.85-1.15"),
        ("-1000, 0.1\n0, 100\n", r"line 2: density 100 is outside \(0, 25\]"),
        ("-1000, 0\n0, 1\n", r"line 1: density 0 is outside"),
        ("0, 1\n", r"at least 2 rows"),
    ],
)
def test_bad_csv_refused_with_the_line(tmp_path, text, match):
    f = tmp_path / "bad.csv"
    f.write_text(text)
    with pytest.raises(BeamModelError, match=match) as info:
        load_hu_table(f)
    assert str(f) in str(info.value)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("table = [[-1000, 0.001], [0, 1.0, 3]]", r"row 2 of `table`: \[0, 1.0, 3\]; expected"),
        ("table = [[0, 1.0], [-10, 0.9]]", r"row 2 of `table`: HU -10 after 0"),
        ("tabel = [[0, 1.0]]", r"unknown keys \['tabel'\]"),
        ('quantity = "hu"\ntable = [[0, 1.0], [1, 1.0]]', r"quantity = 'hu'; expected one of"),
        ("table = [[0, 1.0]", r"is not valid TOML"),
    ],
)
def test_bad_toml_refused_with_the_row(tmp_path, text, match):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(BeamModelError, match=match):
        load_hu_table(f)
