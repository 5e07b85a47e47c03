"""Every format round-trips on a small model at 32 px and passes verification; the
artifacts carry their metadata (read back without TensorFlow); the TFLite batch resizes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _export_models import folder_arrays, plain_model
from conftest import make_image_folder

from hmff_edge.convert import REPORT_NAME, ExportOptions, export

pytestmark = pytest.mark.tf
REPO = Path(__file__).resolve().parents[1]
ALL = ["savedmodel", "tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8",
       "onnx-fp32", "onnx-int8"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    images = make_image_folder(root / "images", per_class=8, size=32)
    model = plain_model(root / "m.keras")
    report = export(model, ExportOptions(formats="all", out=root / "out", calib_data=images,
                                         calib_samples=24, progress=False))
    return report, root / "out", images, model


def test_every_format_is_written_and_verified(exported):
    report, out, _, _ = exported
    assert [a.label for a in report.artifacts] == ALL
    assert report.passed and report.verify_images == 24
    for a in report.artifacts:
        assert (out / a.path).exists(), a.path
        assert (out / Path(a.path).with_suffix(".json").name).is_file()
        v = a.verification
        assert v is not None and v["passed"], (a.label, v)
        if a.quantization == "none":
            assert v["max_abs_diff"] <= 1e-4 and v["top1_agreement"] == 1.0
        if a.quantization == "fp16":
            assert v["max_abs_diff"] <= 1e-2
    assert not list(out.glob(".export-*")), "staging folder left behind"
    saved = json.loads((out / REPORT_NAME).read_text())
    assert saved["passed"] and [a["label"] for a in saved["artifacts"]] == ALL
    assert all(a["ops"] for a in saved["artifacts"])  # an op histogram per export


def test_tflite_graphs_are_builtin_and_dilation_is_fused(exported):
    report, _, _, _ = exported
    for a in report.artifacts:
        if a.format != "tflite":
            continue
        ops = set(a.ops)
        assert "DEPTHWISE_CONV_2D" in ops and "CONV_2D" in ops
        assert not ops & {"SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND", "SHAPE", "STRIDED_SLICE"}
        assert not [o for o in ops if o.startswith(("FLEX", "CUSTOM"))]


def test_int8_tflite_is_full_integer_with_metadata_scale(exported):
    _, out, _, _ = exported
    from ai_edge_litert.interpreter import Interpreter

    meta = json.loads((out / "tflite_int8.json").read_text())
    it = Interpreter(model_path=str(out / "tflite_int8.tflite"))
    inp = it.get_input_details()[0]
    assert np.dtype(inp["dtype"]) == np.int8 and meta["input"]["dtype"] == "int8"
    assert meta["input"]["scale"] == pytest.approx(inp["quantization"][0])
    assert meta["input"]["zero_point"] == inp["quantization"][1]
    assert meta["quantization"] == "int8" and meta["extra"]["calibration"]["images"] == 24


def test_tflite_batch_resizes_at_run_time(exported):
    _, out, images, model = exported
    from ai_edge_litert.interpreter import Interpreter

    from hmff_edge.convert.trace import load_keras

    x = folder_arrays(images)[:5]
    ref = load_keras(model)(x, training=False).numpy()
    it = Interpreter(model_path=str(out / "tflite_fp32.tflite"))
    inp = it.get_input_details()[0]
    assert list(inp["shape"]) == [1, 32, 32, 3] and list(inp["shape_signature"])[0] == -1
    for n in (1, 5):
        it.resize_tensor_input(inp["index"], [n, 32, 32, 3])
        it.allocate_tensors()
        it.set_tensor(inp["index"], x[:n])
        it.invoke()
        got = it.get_tensor(it.get_output_details()[0]["index"])
        np.testing.assert_allclose(got, ref[:n], atol=1e-4)


def test_onnx_passes_checker_with_dynamic_batch(exported):
    _, out, images, _ = exported
    import onnx
    import onnxruntime as ort

    for name in ("onnx_fp32.onnx", "onnx_int8.onnx"):
        proto = onnx.load(str(out / name))
        onnx.checker.check_model(proto)
        assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
        s = ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
        assert s.run(None, {s.get_inputs()[0].name: folder_arrays(images)[:7]})[0].shape == (7, 3)
    ops = {n.op_type for n in onnx.load(str(out / "onnx_int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # static QDQ


def test_savedmodel_serves_any_batch_and_embeds_metadata(exported):
    _, out, images, _ = exported
    import tensorflow as tf

    fn = tf.saved_model.load(str(out / "savedmodel")).signatures["serving_default"]
    y = fn(input=tf.constant(folder_arrays(images)[:3]))["probabilities"]
    assert y.shape == (3, 3)
    assert json.loads((out / "savedmodel" / "assets" / "hmff_edge.json").read_text())["labels"]


def test_embedded_metadata_reads_back_without_tensorflow(exported):
    _, out, images, _ = exported
    code = f"""
import json, sys
from pathlib import Path
from hmff_edge.runtime import load, read_tflite_metadata
import onnx
out = Path({str(out)!r})
for name in ("tflite_fp32.tflite", "tflite_fp16.tflite", "tflite_dynamic.tflite",
             "tflite_int8.tflite"):
    meta = json.loads(read_tflite_metadata(out / name)["hmff_edge"])
    assert meta["labels"] == ["class_0", "class_1", "class_2"], meta
    assert meta["mean"] == [0.5, 0.5, 0.5] and meta["height"] == 32 and meta["format"] == "tflite"
for name in ("onnx_fp32.onnx", "onnx_int8.onnx"):
    props = {{p.key: p.value for p in onnx.load(str(out / name)).metadata_props}}
    assert json.loads(props["hmff_edge"])["quantization"] in ("none", "int8")
# the runtime works from the embedded metadata alone (sidecar moved away)
import shutil, tempfile
tmp = Path(tempfile.mkdtemp())
shutil.copy(out / "tflite_int8.tflite", tmp / "m.tflite")
p = load(tmp / "m.tflite")
assert p.labels == ["class_0", "class_1", "class_2"] and p.input_dtype.name == "int8"
assert "tensorflow" not in sys.modules, "TensorFlow was imported"
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-2000:]
