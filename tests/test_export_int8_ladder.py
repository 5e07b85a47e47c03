"""The int8 export ladder (PTQ -> QAT -> verify), its options, and verification on held-out
images only."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_image_folder

from hmff_edge.convert.options import ExportOptions
from hmff_edge.errors import ConfigError


@pytest.mark.parametrize("epochs", [0, -3, 1000])
def test_qat_epochs_out_of_range_refused(epochs):
    with pytest.raises(ConfigError, match="--qat-epochs"):
        ExportOptions(formats="tflite", quantizations="int8", qat_epochs=epochs).validate()


def test_unknown_calibration_method_refused():
    with pytest.raises(ConfigError, match="calibration method 'median'"):
        ExportOptions(formats="onnx", quantizations="int8", calib_method="median").validate()


def test_int16x8_is_a_tflite_format_of_its_own():
    targets = ExportOptions(formats="tflite", quantizations="int8,int16x8").validate()
    assert [t.label for t in targets] == ["tflite-int8", "tflite-int16x8"]
    assert targets[1].filename == "tflite_int16x8.tflite"
    with pytest.raises(ConfigError, match="int16x8"):
        ExportOptions(formats="onnx", quantizations="int16x8").validate()


def test_held_out_split_never_overlaps_training(tmp_path):
    """A run without a test split verifies on the validation share training held out (the
    split metrics.json was computed on), not on a re-drawn split that includes training
    images."""
    from hmff_edge import data
    from hmff_edge.convert.images import run_split

    folder = make_image_folder(tmp_path / "imgs", per_class=10, size=8)
    config = {"data": str(folder), "val_split": 0.2, "seed": 3}
    _, _, train_ids = run_split(config, "train")
    _, _, held = run_split(config, "held_out")
    assert held and not set(held) & set(train_ids)
    assert len(held) + len(train_ids) == 30
    _, val = data.split_validation(data.resolve_source(str(folder)).train, 0.2, 3)
    assert sorted(held) == sorted(val.paths)  # exactly training's validation rows


def test_held_out_rows_of_an_in_memory_source():
    pytest.importorskip("sklearn")
    from hmff_edge.convert.images import run_split

    _, _, train_ids = run_split({"data": "digits", "val_split": 0.1, "seed": 0}, "train")
    _, _, held = run_split({"data": "digits", "val_split": 0.1, "seed": 0}, "held_out")
    assert len(held) == 179 and not set(held) & set(train_ids)


def test_onnx_float_compute_between_qdq_is_found():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from hmff_edge.convert.to_onnx import float_compute_nodes

    s = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    z = numpy_helper.from_array(np.array(0, np.int8), "z")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "b")

    def graph(last_quantized: bool):
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
                 helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
                 helper.make_node("Sigmoid", ["xd"], ["sig"]),
                 helper.make_node("Add", ["sig", "b"], ["y0"])]
        if last_quantized:
            nodes += [helper.make_node("QuantizeLinear", ["y0", "s", "z"], ["yq"]),
                      helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["y"])]
        else:
            nodes += [helper.make_node("Relu", ["y0"], ["r"]),
                      helper.make_node("QuantizeLinear", ["r", "s", "z"], ["yq"]),
                      helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["y"])]
        return onnx.helper.make_model(helper.make_graph(
            nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
            initializer=[s, z, b]))

    assert float_compute_nodes(graph(True)) == []  # sigmoid + bias add, then requantized
    assert [n.split()[0] for n in float_compute_nodes(graph(False))] == ["Sigmoid", "Add"]


@pytest.mark.tf
@pytest.mark.slow
def test_ladder_takes_qat_after_a_failed_ptq_and_records_it(tmp_path):
    """A deliberately bad calibration set (flat grey images) breaks post-training int8; the
    ladder fine-tunes with QAT on the run's data, converts again and says so in the report
    and the artifact's metadata."""
    from _qat import flat_grey, make_run

    from hmff_edge.convert import export
    from hmff_edge.errors import VerificationError

    run = make_run(tmp_path, grey=True, epochs=40)
    bad = flat_grey(tmp_path / "bad_calib")
    opts = ExportOptions(formats="tflite", quantizations="int8", calib_data=bad, qat_epochs=2,
                         out=tmp_path / "export", progress=False, latency=False)
    try:
        report = export(run, opts)
    except VerificationError as exc:
        report = exc.report
    (art,) = report.artifacts
    assert art.extra["quantization_path"] == "qat"
    assert art.attempts and art.attempts[0]["path"] == "ptq" and art.attempts[0]["failures"]
    assert art.passed, art.row()["status"]
    assert report.qat and report.qat["epochs"] == 2
    assert "float_top1_agreement" in art.verification["extra"]
    meta = json.loads((tmp_path / "export" / "tflite_int8.json").read_text())
    assert meta["extra"]["quantization_path"] == "qat" and meta["extra"]["qat"]["epochs"] == 2
    assert (tmp_path / "export" / "qat_run" / "model.keras").is_file()


@pytest.mark.tf
def test_no_qat_reports_the_failure_with_a_next_step(tmp_path):
    from _qat import flat_grey, make_run

    from hmff_edge.convert import export
    from hmff_edge.errors import VerificationError

    run = make_run(tmp_path, grey=True, epochs=40)
    bad = flat_grey(tmp_path / "bad_calib")
    opts = ExportOptions(formats="tflite", quantizations="int8", calib_data=bad, qat=False,
                         out=tmp_path / "export", progress=False, latency=False)
    with pytest.raises(VerificationError) as info:
        export(run, opts)
    (art,) = info.value.report.artifacts
    assert not art.passed and art.extra["quantization_path"] == "ptq"
    assert "QAT" in art.hint and "--no-qat" in art.hint
    assert art.diagnosis and art.diagnosis["worst"]  # the per-layer table of a failure
    assert not (tmp_path / "export").exists()  # nothing half-written
