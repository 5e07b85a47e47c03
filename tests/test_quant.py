"""Quantization-aware training: fake-quant numerics, BN folding, the QAT rebuild of every zoo
layer, the int8 export of a QAT model against the QAT Keras model, and bad input."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from _qat import SIZE, convert_tflite, make_run, normalized, tflite_predict, tiny_model

from hmff_edge.convert.spec import ConversionSpec

pytestmark = pytest.mark.tf


def _np_fake_quant(x, lo, hi):
    """TensorFlow's nudged 8-bit fake quantization, written out in numpy."""
    scale = (hi - lo) / 255.0
    zp = np.clip(np.round(-lo / scale), 0, 255)
    nlo, nhi = -zp * scale, (255 - zp) * scale
    return np.floor((np.clip(x, nlo, nhi) - nlo) / scale + 0.5) * scale + nlo


def test_activation_fake_quant_matches_numpy():
    from hmff_edge.quant.fakequant import FakeQuant

    layer = FakeQuant(name="q")
    x = np.linspace(-3.0, 5.0, 997, dtype=np.float32).reshape(1, -1)
    layer.build(x.shape)
    layer.range_min.assign(-2.0)
    layer.range_max.assign(4.0)
    layer.observed.assign(1.0)
    got = np.asarray(layer(x, training=False))
    np.testing.assert_allclose(got, _np_fake_quant(x, -2.0, 4.0), atol=1e-6)
    scale, zp = layer.scale_zero_point()
    assert scale == pytest.approx(6.0 / 255) and zp == round(-128 + 2.0 / scale)


def test_float64_fake_quant_matches_numpy_and_the_float32_op():
    """The float64 path (the QAT model's exact reference) is TensorFlow's nudged grid."""
    from hmff_edge.quant.fakequant import FakeQuant

    layer = FakeQuant(name="q", dtype="float64")
    x = np.random.default_rng(0).uniform(-3.0, 5.0, (1, 997))  # no exact rounding ties
    layer.build(x.shape)
    layer.range_min.assign(-2.0)
    layer.range_max.assign(4.0)
    layer.observed.assign(1.0)
    got = np.asarray(layer(x, training=False))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, _np_fake_quant(x, -2.0, 4.0), atol=1e-6)
    f32 = FakeQuant(name="q32")
    f32.build(x.shape)
    f32.set_weights(layer.get_weights())
    np.testing.assert_allclose(got, np.asarray(f32(x.astype(np.float32))), atol=1e-6)


def test_moving_average_range_in_training_only():
    from hmff_edge.quant.fakequant import FakeQuant

    layer = FakeQuant(momentum=0.5, name="q")
    layer.build((1, 4))
    layer(np.array([[-1.0, 0.0, 1.0, 2.0]], np.float32), training=True)  # first: taken as is
    assert float(layer.range_max.numpy()) == pytest.approx(2.0)
    layer(np.array([[0.0, 4.0]], np.float32), training=True)
    assert float(layer.range_max.numpy()) == pytest.approx(3.0)  # 0.5 * 2 + 0.5 * 4
    layer(np.array([[0.0, 100.0]], np.float32), training=False)  # inference: frozen
    assert float(layer.range_max.numpy()) == pytest.approx(3.0)


def test_weights_per_channel_symmetric_int8():
    from hmff_edge.quant.fakequant import quantize_weights

    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 4, 6)).astype(np.float32) * np.arange(1, 7, dtype=np.float32)
    got = np.asarray(quantize_weights(w))
    scale = np.abs(w).max(axis=(0, 1, 2)) / 127.0
    np.testing.assert_allclose(got, np.round(w / scale) * scale, rtol=1e-5, atol=1e-6)
    assert np.abs(got / scale).max() <= 127.0 + 1e-3  # narrow range: -127..127


def test_input_range_keeps_pixels_off_rounding_ties():
    from hmff_edge.quant.fakequant import input_range

    lo, hi = input_range([0.5] * 3, [0.5] * 3)
    assert lo < -1.0 and hi > 1.0
    scale = (hi - lo) / 255.0
    x = (np.arange(256) / 255.0 - 0.5) / 0.5
    frac = np.abs(((x / scale) % 1.0) - 0.5)
    assert frac.min() > 1e-3  # no pixel sits on a .5 tie of the grid


@pytest.mark.parametrize("name", ["hmff-mobilenet-16ch", "hmff-mobilenet-16ch-hs",
                                  "hmff-mobilenet-16ch-relu6", "mobilenet-v1"])
def test_folded_qat_model_equals_float_model(name):
    """With fake quantization off, the rebuilt model (BN folded into every conv, the
    padding-aware and grouped/interleaved layers) computes the float model."""
    import keras

    from hmff_edge.models import build_model
    from hmff_edge.models.bn_stats import calibrate_random_model
    from hmff_edge.quant.fakequant import float_mode
    from hmff_edge.quant.layers import QuantConvBN
    from hmff_edge.quant.transform import quantize_model

    keras.utils.set_random_seed(0)
    model = build_model(name, img_size=32, num_classes=5)
    calibrate_random_model(model)
    qmodel = quantize_model(model)
    x = np.random.default_rng(1).normal(size=(4, 32, 32, 3)).astype(np.float32)
    with float_mode():
        got = np.asarray(qmodel(x))
    # Folding reorders float32 products (w * gamma / sqrt(var) before the conv): ~1e-5.
    np.testing.assert_allclose(got, np.asarray(model(x)), atol=1e-4)
    bns = sum(1 for layer in model.layers if "BatchNormalization" in type(layer).__name__)
    folded = [layer for layer in qmodel.layers if isinstance(layer, QuantConvBN) and layer.use_bn]
    assert len(folded) == bns  # every BN folded somewhere (HMFF's concat BN as a 1x1 dw)


def test_unsupported_layer_is_named():
    import keras

    from hmff_edge.quant.transform import UnsupportedLayerError, quantize_model

    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="c")(inp)
    x = keras.layers.LayerNormalization(name="ln")(x)
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    with pytest.raises(UnsupportedLayerError, match=r"ln \(LayerNormalization\)"):
        quantize_model(keras.Model(inp, out))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("qat"))


@pytest.fixture(scope="module")
def qat_run(tiny_run, tmp_path_factory):
    from hmff_edge.quant.finetune import QATConfig, qat_finetune

    out = tmp_path_factory.mktemp("qat_out") / "qat"
    metrics = qat_finetune(tiny_run, out, QATConfig(epochs=2, lr=5e-4, progress=False))
    return out, metrics


def test_qat_run_exports_int8_with_its_trained_ranges(tiny_run, qat_run, tmp_path):
    """QAT fine-tune -> a run folder that loads; its full-integer TFLite uses the trained
    input range and agrees with the QAT Keras model on the run's images."""
    from hmff_edge.convert import to_tflite
    from hmff_edge.models import load_model
    from hmff_edge.quant.fakequant import FakeQuant

    out, metrics = qat_run
    assert (out / "model.keras").is_file() and (out / "history.csv").is_file()
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # a normal folder, not mkdtemp's 0700
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["qat"]["epochs"] == 2 and cfg["qat"]["source_run"].endswith("run")
    assert metrics["accuracy"] >= metrics["float_accuracy"] - 0.05
    qmodel = load_model(out / "model.keras", compile=False)
    x, _ = normalized(tiny_run.parent / "data")
    tfl = convert_tflite(out, x, tmp_path / "q.tflite")
    assert not to_tflite.float_tensors(tfl)  # full integer
    from ai_edge_litert.interpreter import Interpreter

    scale, zp = Interpreter(model_path=str(tfl)).get_input_details()[0]["quantization"]
    fq = next(layer for layer in qmodel.layers if isinstance(layer, FakeQuant))
    assert scale == pytest.approx(fq.scale_zero_point()[0], rel=1e-5)
    ref = np.asarray(qmodel(x, training=False))
    got = tflite_predict(tfl, x)
    assert (ref.argmax(1) == got.argmax(1)).mean() >= 0.97
    assert np.abs(ref - got).max() < 0.1


def test_qat_onnx_int8_carries_the_trained_ranges(tiny_run, qat_run, tmp_path):
    """ONNX int8 of a QAT model comes from its full-integer TFLite: a QDQ graph whose input
    scale is the trained one, full-integer, agreeing with the QAT Keras model."""
    import onnx
    import onnxruntime as ort

    from hmff_edge.convert import to_onnx
    from hmff_edge.models import load_model
    from hmff_edge.quant.fakequant import FakeQuant

    out, _ = qat_run
    x, _ = normalized(tiny_run.parent / "data")
    np.save(tmp_path / "calib.npy", x[:32])
    path = tmp_path / "q.onnx"
    to_onnx.convert(ConversionSpec(keras=str(out / "model.keras"), img_size=SIZE,
                                   quantization="int8", qat=True, out=str(path),
                                   calib=str(tmp_path / "calib.npy"), io_dtype="int8",
                                   opset=17))
    assert to_onnx.check_graph(path, full_integer=True) == []
    proto = onnx.load(str(path))
    first_q = next(n for n in proto.graph.node if n.op_type == "QuantizeLinear")
    init = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    qmodel = load_model(out / "model.keras", compile=False)
    fq = next(layer for layer in qmodel.layers if isinstance(layer, FakeQuant))
    assert float(init[first_q.input[1]]) == pytest.approx(fq.scale_zero_point()[0], rel=1e-5)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    ref = np.asarray(qmodel(x, training=False))
    assert (ref.argmax(1) == got.argmax(1)).mean() >= 0.97


def test_export_of_a_qat_run_converts_its_ranges_and_never_fine_tunes_again(qat_run,
                                                                            tmp_path):
    """`hmff-edge export RUN_QAT -q int8 --diagnose`: both int8 files say qat, the report
    names the float run, the per-layer table is the float run's, and no second QAT runs
    (rebuilding a fake-quantized model would be refused)."""
    from hmff_edge.convert import ExportOptions, export
    from hmff_edge.convert.ladder import qat_unavailable
    from hmff_edge.convert.source import resolve_source
    from hmff_edge.errors import ConfigError

    out, metrics = qat_run
    src = resolve_source(out)
    assert src.qat and src.qat["source_run"].endswith("run")
    assert "QAT run already" in qat_unavailable(src, ExportOptions())
    opts = ExportOptions(formats="tflite,onnx", quantizations="int8", diagnose=True,
                         out=tmp_path / "export", progress=False, latency=False)
    report = export(out, opts)
    arts = {a.label: a for a in report.artifacts}
    assert set(arts) == {"tflite-int8", "onnx-int8"}
    for a in arts.values():
        assert a.passed and a.extra["quantization_path"] == "qat", a.row()["status"]
        assert a.verification["top1_agreement"] >= 0.97
    assert report.qat["source_run"] == src.qat["source_run"]
    assert f"QAT run fine-tuned from {src.qat['source_run']}" in report.table()
    assert arts["tflite-int8"].diagnosis["worst"]  # the float run's PTQ, layer by layer
    meta = json.loads((tmp_path / "export" / "tflite_int8.json").read_text())
    assert meta["extra"]["quantization_path"] == "qat"
    assert meta["extra"]["qat"]["float_accuracy"] == pytest.approx(metrics["float_accuracy"])
    assert not (tmp_path / "export" / "qat_run").exists()
    with pytest.raises(ConfigError, match=r"QAT run: it exports int8 only .* not tflite-fp32"):
        export(out, ExportOptions(formats="tflite", quantizations="none,int8",
                                  out=tmp_path / "fp32", progress=False))
    assert not (tmp_path / "fp32").exists()


def test_hard_swish_qat_model_exports_as_one_xnnpack_partition(tmp_path):
    """A -hs QAT model's int8 file runs every hard_swish inside XNNPACK (no MINIMUM or
    HARD_SWISH, which it does not take in int8: one partition, SOFTMAX left after it) and
    computes what the QAT model's float64 twin computes."""
    from _export_models import delegate_partitions

    from hmff_edge.convert import to_tflite
    from hmff_edge.models import load_model
    from hmff_edge.quant.finetune import QATConfig, qat_finetune
    from hmff_edge.quant.transform import reference_predictions

    run = make_run(tmp_path / "hs", activation="hard_swish", epochs=15)
    out = tmp_path / "hs_qat"
    qat_finetune(run, out, QATConfig(epochs=1, lr=5e-4, progress=False))
    x, _ = normalized(run.parent / "data")
    tfl = convert_tflite(out, x, tmp_path / "hs.tflite")
    ops = to_tflite.op_histogram(tfl)
    assert not {"MINIMUM", "MAXIMUM", "HARD_SWISH"} & set(ops) and ops["MUL"] >= 8
    assert delegate_partitions(tfl) == 1
    ref = reference_predictions(load_model(out / "model.keras", compile=False), x)
    got = tflite_predict(tfl, x)
    assert (ref.argmax(1) == got.argmax(1)).mean() >= 0.99


def test_int16x8_export_has_int16_activations_and_agrees(tiny_run, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from hmff_edge.models import load_model

    x, _ = normalized(tiny_run.parent / "data")
    tfl = convert_tflite(tiny_run, x, tmp_path / "a16.tflite", "int16x8")
    kinds = {np.dtype(d["dtype"]).name for d in Interpreter(model_path=str(tfl)).get_tensor_details()}
    assert "int16" in kinds
    ref = np.asarray(load_model(tiny_run / "model.keras", compile=False)(x))
    got = tflite_predict(tfl, x)
    assert (ref.argmax(1) == got.argmax(1)).mean() >= 0.97 and np.abs(ref - got).max() < 0.05


def test_dynamic_range_file_is_not_full_integer(tiny_run, tmp_path):
    from hmff_edge.convert import to_tflite

    tfl = tmp_path / "dyn.tflite"
    to_tflite.convert(ConversionSpec(keras=str(tiny_run / "model.keras"), img_size=SIZE,
                                     quantization="dynamic", out=str(tfl), calib=None,
                                     io_dtype="int8"))
    floats = to_tflite.float_tensors(tfl)
    assert floats
    problems = to_tflite.check_graph(to_tflite.op_histogram(tfl), max_transposes=None,
                                     path=tfl, full_integer=True)
    assert any("not full-integer" in p for p in problems)


def test_qat_refuses_bad_input_before_work(tiny_run, tmp_path):
    from hmff_edge.errors import ConfigError
    from hmff_edge.quant.finetune import QATConfig, qat_finetune

    for epochs in (0, -1, 1000):
        with pytest.raises(ConfigError, match="qat-epochs"):
            qat_finetune(tiny_run, tmp_path / "a", QATConfig(epochs=epochs))
    moved = tmp_path / "moved"
    moved.mkdir()
    cfg = json.loads((tiny_run / "config.json").read_text())
    (moved / "config.json").write_text(json.dumps({**cfg, "data": str(tmp_path / "gone")}))
    (moved / "model.keras").write_bytes((tiny_run / "model.keras").read_bytes())
    with pytest.raises(ConfigError, match=r"gone.*--data"):
        qat_finetune(moved, tmp_path / "b", QATConfig())
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_qat_cli_errors_exit_2_and_write_nothing(tiny_run, tmp_path):
    from typer.testing import CliRunner

    from hmff_edge.cli import app

    r = CliRunner().invoke(app, ["qat", str(tiny_run), "--out", str(tmp_path / "o"),
                                 "--epochs", "0"])
    assert r.exit_code == 2 and "--qat-epochs" in r.output
    r = CliRunner().invoke(app, ["qat", str(tmp_path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "not a run folder" in r.output
    assert not (tmp_path / "o").exists()


def test_tiny_model_census():
    """The fixture model has every layer kind the rebuild folds (keeps the tests honest)."""
    from hmff_edge.quant.transform import unsupported_layers

    names = {type(layer).__name__ for layer in tiny_model().layers}
    assert {"Conv2D", "DepthwiseConv2D", "GroupedPointwiseConv2D", "Add"} <= names
    assert unsupported_layers(tiny_model()) == []


def test_train_qat_epochs_checked_before_training(image_folder, tmp_path):
    from typer.testing import CliRunner

    from hmff_edge.cli import app

    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "--data", str(image_folder), "--img-size", "32",
                                 "--epochs", "1", "--qat", "--qat-epochs", "0", "--out", str(out)])
    assert r.exit_code == 2 and "--qat-epochs" in r.output
    assert not out.exists()


@pytest.mark.slow
def test_train_with_qat_writes_a_qat_run(image_folder, tmp_path):
    from typer.testing import CliRunner

    from hmff_edge.cli import app

    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "--data", str(image_folder), "--model",
                                 "hmff-mobilenet-16ch", "--img-size", "32", "--epochs", "1",
                                 "--qat", "--qat-epochs", "1", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["qat"]["accuracy"] is not None
    cfg = json.loads((out / "qat" / "config.json").read_text())
    assert cfg["qat"]["epochs"] == 1 and (out / "qat" / "model.keras").is_file()


@pytest.mark.parametrize("kind,groups,interleave", [("conv", 1, False), ("grouped", 8, False),
                                                    ("grouped", 8, True), ("depthwise", 1, False)])
def test_one_qat_layer_matches_its_int8_tflite_within_a_step(kind, groups, interleave):
    """Layer by layer the int8 file computes what the QAT layer simulates: every output within
    one quantization step, and, with the biases on their int32 grid, all but float32
    round-off exact (whole networks amplify any one-step difference)."""
    import keras
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    from hmff_edge.models.layers import export_mode
    from hmff_edge.quant.fakequant import FakeQuant, observe_ranges
    from hmff_edge.quant.layers import QuantConvBN
    from hmff_edge.quant.transform import float64_twin, snap_biases

    rng = np.random.default_rng(0)
    c = 64
    shape = {"conv": (1, 1, c, c), "grouped": (1, 1, c // groups, c),
             "depthwise": (3, 3, c, 1)}[kind]
    inp = keras.Input((8, 8, c))
    x = FakeQuant(value_range=(-3.0, 3.0), name="in_q")(inp)
    layer = QuantConvBN(kind, shape, groups=groups, interleave_input=interleave, name="q")
    model = keras.Model(inp, FakeQuant(name="out_q")(layer(x)))
    layer.set_weights([rng.normal(size=shape).astype(np.float32) * 0.3,
                       rng.uniform(0.5, 1.5, c).astype(np.float32),
                       rng.normal(size=c).astype(np.float32) * 0.1,
                       rng.normal(size=c).astype(np.float32) * 0.1,
                       rng.uniform(0.5, 2.0, c).astype(np.float32)])
    # Inputs on the input grid: LiteRT's float32 QUANTIZE and TensorFlow's fake quant may
    # round a value at a tie apart, which is the input's business, not the layer's.
    xs = (np.clip(np.rint(rng.normal(size=(32, 8, 8, c)) * 40), -127, 127)
          * (6.0 / 255)).astype(np.float32)
    observe_ranges(model, [xs])
    snap_biases(model)

    @tf.function(input_signature=[tf.TensorSpec([2, 8, 8, c], tf.float32)])
    def serve(v):
        return {"out": model(v, training=False)}

    with export_mode():
        frozen = convert_variables_to_constants_v2(serve.get_concrete_function())
    conv = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([xs[i:i + 2]] for i in range(0, 8, 2))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=conv.convert())
    inp_d, out_d = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(inp_d["index"], list(xs.shape))
    it.allocate_tensors()
    it.set_tensor(inp_d["index"], xs)
    it.invoke()
    got = it.get_tensor(it.get_output_details()[0]["index"])
    assert out_d["dtype"] == np.float32
    step = model.get_layer("out_q").scale_zero_point()[0]
    steps = np.abs(got - np.asarray(model(xs))) / step
    assert steps.max() <= 1.0 + 1e-3
    assert (steps > 0.5).mean() < 1e-4
    # The float64 twin sums exactly, as the int8 file does; what still differs is an output
    # within float32 round-off of a rounding tie (LiteRT requantizes in float32).
    twin = float64_twin(model)
    x64 = xs.astype(np.float64)
    exact = np.abs(got - np.asarray(twin(x64))) / step
    pre = np.asarray(keras.Model(twin.inputs, twin.get_layer("q").output)(x64)) / step
    assert (exact > 0.5).sum() <= (steps > 0.5).sum()
    assert np.all(np.abs(pre[exact > 0.5] % 1 - 0.5) < 1e-5)
