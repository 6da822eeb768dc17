"""The optimisation's influence matrices from the collapsed cone (``[dose] influence_algorithm``).

- The protocol key and ``with_overrides`` accept ``pencil_beam`` (default) and ``ccc`` and
  refuse anything else, naming the file and the key.
- ``ccc`` with a beam model that has no collapsed-cone commissioning is refused before
  any work.
- A coarse thorax planned on the collapsed-cone final dose: with collapsed-cone
  influence matrices the final-dose correction loop's correction in the targets (the
  influence model's error against the final collapsed-cone dose of the delivered
  segments, ``target_mean_abs_correction_gy``) is less than half of what it is with
  pencil-beam matrices, which miss the lung's electron disequilibrium (issue 16).
"""

from __future__ import annotations

import json

import pytest
from _tiny_protocol import tiny_cshape_protocol

from dose_engine import BeamModelError, load_beam_model
from rtplan.errors import ProtocolError
from rtplan.phantoms import make_phantom
from rtplan.planning import PlanOptions, plan_patient
from rtplan.protocols import load_protocol


@pytest.mark.parametrize("value", ['"monte_carlo"', "3", '"CCC"', '""'])
def test_protocol_key_is_validated(tmp_path, value):
    path = tmp_path / "p.toml"
    path.write_text(tiny_cshape_protocol(ring=False) + f"\n[dose]\ninfluence_algorithm = {value}\n")
    with pytest.raises(ProtocolError, match=r"\[dose\] influence_algorithm") as info:
        load_protocol(path)
    assert str(path) in str(info.value) and "pencil_beam, ccc" in str(info.value)


def test_protocol_key_and_override_reach_the_protocol(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(tiny_cshape_protocol(ring=False) + '\n[dose]\ninfluence_algorithm = "ccc"\n')
    assert load_protocol(path).influence_algorithm == "ccc"
    shipped = load_protocol("tg119_cshape")
    assert shipped.influence_algorithm == "pencil_beam"
    assert shipped.with_overrides(influence_algorithm="ccc").influence_algorithm == "ccc"
    with pytest.raises(ProtocolError, match="influence_algorithm"):
        shipped.with_overrides(influence_algorithm="mc")


def test_uncommissioned_model_is_refused_before_any_work(tmp_path):
    params = dict(load_beam_model().parameters, name="clinic 10 MV")
    model_file = tmp_path / "clinic10.json"
    model_file.write_text(json.dumps(params))
    patient = make_phantom("cshape", pixel_spacing_mm=8.0, slice_spacing_mm=8.0, n_slices=9)
    protocol = load_protocol("tg119_cshape").with_overrides(
        influence_algorithm="ccc", final_algorithm="pencil_beam"
    )
    options = PlanOptions(beam_model=model_file)
    with pytest.raises(BeamModelError, match="clinic 10 MV.*collapsed-cone"):
        plan_patient(patient, protocol, progress=False, options=options)


@pytest.fixture(scope="module")
def thorax_corrections():
    """Loop-1 correction records of a coarse thorax planned on the collapsed-cone final
    dose, with pencil-beam and with collapsed-cone influence matrices."""
    patient = make_phantom("thorax", pixel_spacing_mm=8.0, slice_spacing_mm=8.0, n_slices=13)
    out = {}
    for algorithm in ("pencil_beam", "ccc"):
        protocol = load_protocol("lung_60gy_30fx").with_overrides(
            dose_grid_mm=8.0,
            n_beams=5,
            max_iterations=60,
            final_dose_corrections=1,
            influence_algorithm=algorithm,
        )
        result = plan_patient(
            patient, protocol, progress=False, options=PlanOptions(final_dose="ccc")
        )
        assert result.plan_summary()["influence_algorithm"] == algorithm
        out[algorithm] = result.corrections[1]
    return out


@pytest.mark.slow  # two plans, one with collapsed-cone matrices: minutes of CPU
def test_ccc_matrices_need_less_correction_in_lung(thorax_corrections):
    pb = thorax_corrections["pencil_beam"]["target_mean_abs_correction_gy"]
    cc = thorax_corrections["ccc"]["target_mean_abs_correction_gy"]
    assert cc < 0.5 * pb, (cc, pb)
