"""The conversion spec a child process receives: a strict JSON round trip (TF-free)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from hmff_edge.convert.spec import ConversionSpec


def _full_spec() -> ConversionSpec:
    """A spec with every field away from its default, so a dropped field shows."""
    return ConversionSpec(keras="/r/model.keras", img_size=48, quantization="int8",
                          out="/s/raw_tflite_int8.tflite", calib="/w/calib.npy",
                          io_dtype="uint8", opset=18, calib_method="entropy",
                          fp32_tflite="/s/raw_tflite_fp32.tflite", fp32_onnx="/s/raw.onnx",
                          optimize="latency", form_table="/t/forms.json", qat=True)


def test_round_trip_through_json_keeps_every_field():
    spec = _full_spec()
    defaults = {f.name: f.default for f in dataclasses.fields(ConversionSpec)}
    assert all(getattr(spec, k) != v for k, v in defaults.items())  # the test covers them all
    back = ConversionSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert back == spec
    assert set(spec.to_dict()) == set(defaults)


def test_unknown_key_is_refused_by_name():
    data = {**_full_spec().to_dict(), "calib_methd": "entropy"}
    with pytest.raises(ValueError, match="'calib_methd'"):
        ConversionSpec.from_dict(data)


def test_missing_required_key_is_refused_by_name():
    data = _full_spec().to_dict()
    del data["out"]
    with pytest.raises(ValueError, match="'out'"):
        ConversionSpec.from_dict(data)


def test_paths_become_strings_and_variants_keep_the_rest(tmp_path):
    spec = ConversionSpec(keras=tmp_path / "m.keras", img_size=32, quantization="none",
                          out=tmp_path / "o.tflite", form_table=Path("t.json"))
    assert spec.keras == str(tmp_path / "m.keras") and spec.form_table == "t.json"
    json.dumps(spec.to_dict())  # plain JSON
    variant = dataclasses.replace(spec, quantization="int8", out=tmp_path / "q.tflite")
    assert variant.out == str(tmp_path / "q.tflite") and variant.keras == spec.keras
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.out = "elsewhere"  # type: ignore[misc]


def test_child_reports_a_bad_spec_as_an_error_result(tmp_path):
    """The child side of the hop: a typo comes back as the job's error, naming the key,
    before any conversion module is imported."""
    from hmff_edge.convert import _child

    spec_path, result_path = tmp_path / "spec.json", tmp_path / "result.json"
    spec_path.write_text(json.dumps({**_full_spec().to_dict(), "img_sise": 32}))
    assert _child._main(["hmff_edge.convert.to_tflite", "convert", str(spec_path),
                         str(result_path)]) == 0
    result = json.loads(result_path.read_text())
    assert "'img_sise'" in result["error"] and result["error_class"] == "ArtifactError"
