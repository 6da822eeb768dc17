"""Deliverability of the plans ``rtplan plan`` writes: plan.json, report.html, the CLI.

The tiny C-shape protocol (3 beams, 8 mm dose grid) is planned through the CLI and the
numbers written are checked against what is independent of the planner:

- the written RT-PLAN re-read with :func:`rtplan.io.read_rtplan_delivery` and checked by
  :func:`rtplan.delivery.check_deliverability` (and by ``rtplan check``): same MU, MCS,
  delivery time and areas;
- the delivery time and MU recomputed by hand with pydicom from the RT-PLAN's control
  points: beam-on time at 600 MU/min plus the largest leaf travel between segments at
  25 mm/s (``varian_millennium120.toml``);
- a machine whose minimum MU per control point (1000 MU) no segment reaches: one
  violation per segment, a ``deliverability`` warning in the same words in the CLI
  output, plan.json and report.html, and ``rtplan check`` exits 1 with the same list.
"""

from __future__ import annotations

import contextlib
import html
import io
import json
import re
import types
from importlib import resources

import numpy as np
import pydicom
import pytest
from _tiny_protocol import tiny_cshape_protocol

from rtplan.cli import main
from rtplan.delivery import check_deliverability, load_machine
from rtplan.io import read_rtplan_delivery
from rtplan.phantoms import write_phantom

VARIAN = load_machine("VarianMLC120")


def _plan(phantom, root, protocol_text):
    """``rtplan plan`` with ``protocol_text``: exit status, stdout and what it wrote."""
    (root / "p.toml").write_text(protocol_text)
    out = root / "plan"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(
            [
                "plan",
                str(phantom.ct_dir),
                str(phantom.rtstruct_path),
                "--protocol",
                str(root / "p.toml"),
                "--out",
                str(out),
                "--no-progress",
            ]
        )
    return types.SimpleNamespace(
        out=out,
        status=status,
        stdout=stdout.getvalue(),
        record=json.loads((out / "plan.json").read_text()),
        report=(out / "report.html").read_text(encoding="utf-8"),
    )


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom") / "cshape"
    return write_phantom("cshape", out, pixel_spacing_mm=5.0, slice_spacing_mm=5.0)


@pytest.fixture(scope="module")
def plan_run(phantom, tmp_path_factory):
    return _plan(phantom, tmp_path_factory.mktemp("plan"), tiny_cshape_protocol(ring=False))


def _hand_timed(path, *, dose_rate_mu_per_min: float, leaf_speed_mm_per_s: float):
    """MU per fraction and delivery time (s) of each beam of a step-and-shoot RT-PLAN,
    from its control points with pydicom: meterset at the dose rate with the leaves
    still, leaf travel at the leaf speed with the beam off."""
    ds = pydicom.dcmread(path)
    meterset = {
        int(r.ReferencedBeamNumber): float(r.BeamMeterset)
        for r in ds.FractionGroupSequence[0].ReferencedBeamSequence
    }
    out = {}
    for beam in ds.BeamSequence:
        mu = meterset[int(beam.BeamNumber)]
        weights, leaves = [], []
        for cp in beam.ControlPointSequence:
            weights.append(float(cp.CumulativeMetersetWeight))
            for item in cp.get("BeamLimitingDevicePositionSequence", []):
                if item.RTBeamLimitingDeviceType == "MLCX":
                    leaves.append(np.array([float(v) for v in item.LeafJawPositions]))
        time_s = 0.0
        for k in range(len(weights) - 1):
            dmu = (weights[k + 1] - weights[k]) * mu
            travel = float(np.max(np.abs(leaves[k + 1] - leaves[k])))
            assert dmu < 1e-9 or travel == 0.0  # step-and-shoot: no leaf moves with beam on
            time_s += dmu * 60.0 / dose_rate_mu_per_min if dmu > 1e-9 else 0.0
            time_s += travel / leaf_speed_mm_per_s
        out[int(beam.BeamNumber)] = (mu, time_s, len(weights) // 2)
    return out


def test_plan_json_deliverability_is_that_of_the_written_rtplan(plan_run):
    d = plan_run.record["deliverability"]
    rtplan_path = plan_run.out / "RTPLAN.dcm"
    again = check_deliverability(read_rtplan_delivery(rtplan_path))
    assert d["fractions"] == again.fractions == 25
    assert d["total_mu_per_fraction"] == pytest.approx(again.total_mu, abs=0.01)
    assert d["mcs"] == pytest.approx(again.mcs, rel=1e-6)
    assert d["delivery_time_s"] == pytest.approx(again.delivery_time_s, rel=1e-6)
    assert d["ok"] and d["violations"] == [] and again.ok
    assert [b["number"] for b in d["beams"]] == [b.number for b in again.beams]
    for b, a in zip(d["beams"], again.beams, strict=True):
        assert b["mu_per_fraction"] == pytest.approx(a.mu, abs=0.01)
        assert b["mcs"] == pytest.approx(a.mcs, rel=1e-6)
        assert b["mean_aperture_area_cm2"] == pytest.approx(a.mean_aperture_area_cm2, rel=1e-6)
        assert 0.0 < b["mcs"] < 1.0  # modulated: below an open field's 1
    # by hand from the RT-PLAN: 600 MU/min beam on, 25 mm/s leaf travel beam off
    arc = VARIAN.arc
    hand = _hand_timed(
        rtplan_path,
        dose_rate_mu_per_min=arc.max_dose_rate_mu_per_min,
        leaf_speed_mm_per_s=arc.leaf_speed_mm_per_s,
    )
    for b in d["beams"]:
        mu, time_s, n_segments = hand[b["number"]]
        assert b["mu_per_fraction"] == pytest.approx(mu, abs=0.01)
        assert b["delivery_time_s"] == pytest.approx(time_s, rel=1e-6)
        assert b["n_control_points"] == 2 * n_segments
    assert d["total_mu_per_fraction"] == pytest.approx(
        plan_run.record["plan"]["total_mu_per_fraction"], abs=0.01
    )
    # the summary printed by the CLI carries the same totals
    assert (
        f"deliverability: {d['total_mu_per_fraction']:.1f} MU per fraction, delivery "
        f"~{d['delivery_time_s']:.0f} s" in plan_run.stdout
    )
    assert f"MCS {d['mcs']:.3f}; every machine limit holds" in plan_run.stdout


def test_report_shows_the_deliverability_table(plan_run):
    d = plan_run.record["deliverability"]
    m = re.search(
        r"<h2>Deliverability</h2>(<table class='beams deliverability'>.*?</table>)",
        plan_run.report,
        flags=re.S,
    )
    assert m, "no deliverability table in report.html"
    rows = re.findall(r"<tr(?: class='total')?>(.*?)</tr>", m.group(1), flags=re.S)
    cells = [re.findall(r"<td>(.*?)</td>", r) for r in rows[1:]]  # rows[0]: header
    assert len(cells) == len(d["beams"]) + 1
    for row, b in zip(cells, d["beams"], strict=False):
        assert row == [
            b["name"],
            str(b["number"]),
            "fixed",
            str(b["n_control_points"]),
            f"{b['mu_per_fraction']:.2f}",
            f"{b['delivery_time_s']:.1f}",
            f"{b['max_leaf_speed_mm_per_s']:.1f}",
            f"{b['mcs']:.3f}",
            f"{b['mean_aperture_area_cm2']:.1f}",
        ]
    total = cells[-1]
    assert total[4] == f"<b>{d['total_mu_per_fraction']:.2f}</b>"
    assert total[5] == f"<b>{d['delivery_time_s']:.1f}</b>"
    assert total[7] == f"<b>{d['mcs']:.3f}</b>"
    assert "Every limit of the machine holds." in plan_run.report


def test_rtplan_check_on_the_written_plan_gives_the_same_totals(plan_run, capsys):
    d = plan_run.record["deliverability"]
    assert main(["check", str(plan_run.out / "RTPLAN.dcm"), "--json"]) == 0
    checked = json.loads(capsys.readouterr().out)
    assert checked["ok"]
    assert checked["total_mu_per_fraction"] == pytest.approx(d["total_mu_per_fraction"], abs=0.01)
    assert checked["mcs"] == pytest.approx(d["mcs"], rel=1e-6)
    assert checked["delivery_time_s"] == pytest.approx(d["delivery_time_s"], rel=1e-6)


def test_a_violated_machine_limit_is_a_safety_warning_everywhere(phantom, tmp_path, capsys):
    """No segment reaches 1000 MU per fraction: every segment breaks the machine's
    minimum MU per control point; the plan is written with exit 1 and the warning."""
    shipped = resources.files("rtplan").joinpath("data", "machines", "varian_millennium120.toml")
    text = shipped.read_text()
    text = text.replace('name = "VarianMLC120"', 'name = "Tight120"')
    text = re.sub(r"min_mu_per_control_point = [\d.]+", "min_mu_per_control_point = 1000.0", text)
    machine = tmp_path / "tight.toml"
    machine.write_text(text)
    protocol = tiny_cshape_protocol(ring=False).replace(
        "[beams]\n", f'[beams]\nmachine = "{machine.as_posix()}"\n'
    )
    run = _plan(phantom, tmp_path, protocol)
    assert run.status == 1
    d = run.record["deliverability"]
    hand = _hand_timed(run.out / "RTPLAN.dcm", dose_rate_mu_per_min=600.0, leaf_speed_mm_per_s=25.0)
    n_segments = sum(n for _, _, n in hand.values())
    assert max(b["mu_per_fraction"] for b in d["beams"]) < 1000.0
    assert not d["ok"] and len(d["violations"]) == n_segments  # one per segment
    assert {v["limit"] for v in d["violations"]} == {"arc.min_mu_per_control_point"}
    (warning,) = [w for w in run.record["warnings"] if w["code"] == "deliverability"]
    assert warning["message"].startswith(
        f"MACHINE LIMIT VIOLATED: {n_segments} violation(s) of the machine's limits: beam "
    )
    assert f"WARNING: {warning['message']}" in run.stdout
    assert html.escape(warning["message"]) in run.report
    assert f"{n_segments} violation(s) of the machine" in run.report
    assert main(["check", str(run.out / "RTPLAN.dcm"), "--machine", str(machine), "--json"]) == 1
    checked = json.loads(capsys.readouterr().out)
    assert checked["violations"] == d["violations"]
