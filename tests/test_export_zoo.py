"""A real zoo variant (HMFF-MobileNet-16Ch, 32 px) exports to clean graphs: grouped 1x1 as
grouped CONV_2D / Conv(group=g), one TRANSPOSE per channel interleave, no SPACE_TO_BATCH_ND,
a resizable batch; dilated depthwise convolutions export fused, or as a per-channel scale
where the map is too small for any off-centre tap; and a deliberately broken calibration
makes the int8 verification fail with a non-zero exit and no artifact left behind."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from _export_models import folder_arrays, tflite_ops, zoo_model
from conftest import make_image_folder
from typer.testing import CliRunner

from hmff_edge.convert import ExportOptions, export

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    images = make_image_folder(root / "images", per_class=8, size=32)
    model = zoo_model(root / "hmff16.keras", folder_arrays(images))
    return root, images, model


@pytest.fixture(scope="module")
def zoo_export(zoo):
    root, images, model = zoo
    report = export(model, ExportOptions(formats="tflite,onnx", out=root / "out",
                                         calib_data=images, progress=False))
    return report, root / "out", model


def model_layers(model_path: Path) -> list:
    from hmff_edge.convert.trace import load_keras

    return list(load_keras(model_path)._flatten_layers())


def test_zoo_export_verifies(zoo_export):
    report, out, _ = zoo_export
    assert report.passed and [a.label for a in report.artifacts] == ["tflite-fp32", "onnx-fp32"]
    for a in report.artifacts:
        assert a.verification["max_abs_diff"] <= 1e-4 and a.verification["top1_agreement"] == 1


def test_tflite_ops_grouped_conv_interleave_and_dilation(zoo_export):
    report, out, model = zoo_export
    ops = tflite_ops(out / "tflite_fp32.tflite")
    hist = Counter(o["op"] for o in ops)
    all_layers = model_layers(model)
    layers = Counter(type(la).__name__ for la in all_layers)
    # grouped convolutions that interleave their input (kMobileNet's second paths)
    interleaves = sum(1 for la in all_layers if getattr(la, "interleave_input", False))
    assert interleaves > 0
    assert hist["TRANSPOSE"] == interleaves  # one TRANSPOSE per interleave
    for bad in ("SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND", "SHAPE", "STRIDED_SLICE",
                "BATCH_MATMUL", "CUSTOM", "PACK", "SPLIT"):
        assert hist[bad] == 0, (bad, hist)
    grouped = [o for o in ops if o["op"] == "CONV_2D" and o["filter_in_ch"] < o["in_ch"]]
    assert len(grouped) >= layers["GroupedPointwiseConv2D"] // 2, hist
    # At 32 px the HMFF module runs at 1x1: its four depthwise convolutions are centre taps
    # (PaddingAwareDepthwiseConv2D), exported as 1x1 depthwise ops (BN folded, per-channel
    # int8), so no op is dilated and no MUL stands in for them.
    dw = [o for o in ops if o["op"] == "DEPTHWISE_CONV_2D"]
    assert len(dw) == 11 + 4 and all(o["dilation"] == 1 for o in dw)
    # swish's MULs and the concat BN's scale (no convolution to fold into) only
    assert hist["MUL"] == hist["LOGISTIC"] + 1, hist


@pytest.fixture(scope="module")
def dilated_export(zoo, tmp_path_factory):
    """A small model with a dilation-2 depthwise at 8x8 (real taps) and a dilation-8 one at
    4x4 (centre tap only), exported and verified against Keras like any model."""
    import keras

    from hmff_edge.models.layers import FusedBatchNormalization, PaddingAwareDepthwiseConv2D

    root = tmp_path_factory.mktemp("dilated")
    _, images, _ = zoo
    keras.utils.set_random_seed(1)
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=4, padding="same")(inp)  # 8x8
    x = PaddingAwareDepthwiseConv2D(3, dilation_rate=2, padding="same", name="d2")(x)
    x = FusedBatchNormalization()(x)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)  # 4x4
    x = PaddingAwareDepthwiseConv2D(3, dilation_rate=8, padding="same", name="d8")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    m = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))
    m.save(root / "dilated.keras")
    report = export(root / "dilated.keras", ExportOptions(
        formats="tflite,onnx", out=root / "out", calib_data=images, progress=False))
    return report, root / "out"


def test_dilated_depthwise_exports_fused_or_as_centre_tap(dilated_export):
    import onnx
    from onnx import helper

    report, out = dilated_export
    assert report.passed
    for a in report.artifacts:
        assert a.verification["max_abs_diff"] <= 1e-4
    ops = tflite_ops(out / "tflite_fp32.tflite")
    hist = Counter(o["op"] for o in ops)
    assert hist["SPACE_TO_BATCH_ND"] == hist["BATCH_TO_SPACE_ND"] == 0, hist
    assert [o["dilation"] for o in ops if o["op"] == "DEPTHWISE_CONV_2D"] == [2, 1], hist
    assert hist["MUL"] == 0, hist
    proto = onnx.load(str(out / "onnx_fp32.onnx"))
    convs = [{a.name: helper.get_attribute_value(a) for a in n.attribute}
             for n in proto.graph.node if n.op_type == "Conv"]
    assert sorted(max(c.get("dilations", [1])) for c in convs) == [1, 1, 1, 2]


def test_onnx_has_grouped_conv_and_dynamic_batch(zoo_export):
    import onnx
    from onnx import helper

    _, out, _ = zoo_export
    proto = onnx.load(str(out / "onnx_fp32.onnx"))
    onnx.checker.check_model(proto)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    convs = [{a.name: helper.get_attribute_value(a) for a in n.attribute}
             for n in proto.graph.node if n.op_type == "Conv"]
    assert any(c.get("group", 1) > 1 and c.get("kernel_shape") == [1, 1] for c in convs)
    assert not {n.op_type for n in proto.graph.node} & {"StatefulPartitionedCall", "Einsum"}


def test_broken_calibration_fails_int8_and_leaves_nothing(zoo, tmp_path):
    """Constant calibration images collapse every activation range: int8 top-1 agreement
    drops far below 97%, the command exits 3, and no int8 file (nor its sidecar, nor a
    staging folder) remains; the fp32 model exported beside it passed and is published."""
    import numpy as np
    from PIL import Image

    from hmff_edge.cli import app

    root, images, model = zoo
    const = tmp_path / "constant" / "x"
    const.mkdir(parents=True)
    for i in range(8):
        Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(const / f"{i}.png")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["export", str(model), "-f", "tflite", "-q", "none,int8",
                                   "--calib-data", str(const.parent), "--eval-data",
                                   str(images), "--out", str(out), "--quiet"])
    assert res.exit_code == 3, res.output
    assert "tflite-int8: top-1 agreement" in res.output
    files = sorted(p.name for p in out.rglob("*"))
    # The failed int8 file's per-layer error plot is published with the report, the file not.
    assert files == ["diagnosis_tflite-int8.png", "export_report.json", "tflite_fp32.json",
                     "tflite_fp32.tflite"], files
    rows = {a["label"]: a for a in json.loads((out / "export_report.json").read_text())["artifacts"]}
    assert rows["tflite-fp32"]["published"] and not rows["tflite-int8"]["published"]
    assert rows["tflite-int8"]["verification"]["top1_agreement"] < 0.97


def test_json_output_and_report(zoo, tmp_path):
    """`--json` prints the report (and only the report) on stdout."""
    from hmff_edge.cli import app

    _, images, model = zoo
    res = CliRunner().invoke(app, ["export", str(model), "-f", "tflite",
                                   "--json", "--calib-data", str(images),
                                   "--verify-samples", "8", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["passed"] and data["artifacts"][0]["label"] == "tflite-fp32"
    assert data["artifacts"][0]["verification"]["max_abs_diff"] <= 1e-4
    assert json.loads((tmp_path / "o" / "export_report.json").read_text())["passed"]


@pytest.mark.slow
def test_zoo_every_format(zoo, tmp_path):
    """All seven artifacts of a zoo model (SavedModel in export mode included) verify.
    int8 agreement is not asserted here: this model's weights are random."""
    _, images, model = zoo
    from hmff_edge.errors import VerificationError

    try:
        report = export(model, ExportOptions(formats="all", out=tmp_path / "o",
                                             calib_data=images, progress=False))
    except VerificationError as exc:
        report = exc.report
    by = {a.label: a for a in report.artifacts}
    assert len(by) == 7 and all(not a.problems for a in report.artifacts), report.table()
    for label in ("savedmodel", "tflite-fp32", "onnx-fp32"):
        assert by[label].verification["passed"], report.table()
