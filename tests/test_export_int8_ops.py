"""Full-integer TFLite of a hard_swish model: every activation leaves as int8 ops that
LiteRT's XNNPACK delegate takes (it has no int8 HARD_SWISH and no int8 MINIMUM), as
``x * relu6(x + 3)`` with the 1/6 folded into the next weights, and the rewritten model
computes Keras' function; the float export keeps the single HARD_SWISH."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from _export_models import delegate_partitions, folder_arrays, plain_model, tflite_ops, zoo_model
from conftest import make_image_folder

from hmff_edge.convert import ExportOptions, export

pytestmark = pytest.mark.tf

# hard_swish's kinks at -3 and 3 and their neighbours, and a wide range around them.
X = np.concatenate([np.linspace(-8, 8, 4001), [-3, 3, -3.0001, 2.9999, 0.0]]).astype("float32")


@pytest.mark.parametrize("in_scale", [1.0, 6.0, 36.0])
@pytest.mark.parametrize("folded", [True, False], ids=["folded", "unfolded"])
def test_int8_spellings_are_keras_hard_silu(in_scale, folded):
    import keras

    from hmff_edge.convert.int8_activations import _spelling

    ref = np.asarray(keras.activations.hard_silu(X))
    got = np.asarray(_spelling(in_scale, folded)(X * in_scale))
    # folded: the output carries 6 * in_scale, which the next layer's weights take back
    out_scale = 6.0 * in_scale if folded else 1.0
    np.testing.assert_allclose(got / out_scale, ref, rtol=1e-6, atol=1e-6)


def _stats(model, seed=0):
    """BN statistics away from identity, so folding a scale into them is exercised."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if hasattr(layer, "moving_mean"):
            layer.moving_mean.assign(rng.normal(0, 1, layer.moving_mean.shape).astype("float32"))
            layer.moving_variance.assign(
                rng.uniform(0.5, 2, layer.moving_variance.shape).astype("float32"))
    return model


def test_folded_zoo_model_is_the_same_function_in_float():
    """Every hard_swish of the -hs zoo model folds (the model's linear layers, concat, adds
    and pooling pass the scale on; convolutions, BN and the classifier take it back) and the
    export-mode model equals Keras' in float."""
    import keras

    from hmff_edge.convert.int8_activations import rewrite_hard_swish
    from hmff_edge.models import build_model
    from hmff_edge.models.layers import export_mode

    model = _stats(build_model("hmff-mobilenet-16ch-hs", img_size=64, num_classes=5))
    x = np.random.default_rng(1).normal(0, 1, (3, 64, 64, 3)).astype("float32")
    ref = model.predict(x, verbose=0)
    logits_ref = keras.Model(model.input, model.get_layer("pool").output).predict(x, verbose=0)
    rec = rewrite_hard_swish(model)["hard_swish"]
    n_act = sum(getattr(la.activation, "__name__", "").startswith("hard_swish_int8")
                for la in model.layers if isinstance(la, keras.layers.Activation))
    assert rec["folded"] == n_act >= 30 and rec["unfolded"] == 0
    assert rec["scales_absorbed_by"]["classifier"] == 36.0  # hmff_out reads a scaled sum
    assert rec["scales_absorbed_by"]["hmff_concat_bn"] == 6.0  # a BN right after the concat
    with export_mode():
        got = model(x, training=False).numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6)
    # the pooled features carry the folded scale: the fold really happened
    feats = keras.Model(model.input, model.get_layer("pool").output).predict(x, verbose=0)
    np.testing.assert_allclose(feats / 36.0, logits_ref, rtol=1e-4, atol=1e-5)


def test_unfoldable_consumers_keep_the_true_value():
    """A hard_swish read by a layer that cannot take a scale (Multiply, a model output) or
    joined with an unscaled tensor stays unfolded; the others fold; the function is kept."""
    import keras

    from hmff_edge.convert.int8_activations import rewrite_hard_swish

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    c = keras.layers.Conv2D(4, 3, padding="same", name="c")(inp)
    a = keras.layers.Activation("hard_swish", name="a_folds")(c)
    d = keras.layers.DepthwiseConv2D(3, padding="same", name="d")(a)
    b = keras.layers.Activation("hard_swish", name="b_joins_unscaled")(d)
    s = keras.layers.Add(name="add")([b, d])  # d carries no scale: b must not fold
    m = keras.layers.Multiply(name="mul")([s, s])
    e = keras.layers.Activation("hard_swish", name="e_is_output")(m)
    f = keras.layers.Conv2D(2, 1, name="f")(keras.layers.Activation("hard_swish", name="g")(m))
    model = keras.Model(inp, [e, f])
    x = np.random.default_rng(0).normal(0, 2, (2, 8, 8, 3)).astype("float32")
    ref = [np.asarray(r) for r in model(x)]
    rec = rewrite_hard_swish(model)["hard_swish"]
    assert rec["unfolded_layers"] == ["b_joins_unscaled", "e_is_output"]
    assert rec["folded"] == 2 and rec["scales_absorbed_by"] == {"d": 6.0, "f": 6.0}
    for r, g in zip(ref, model(x)):
        np.testing.assert_allclose(np.asarray(g), r, rtol=1e-5, atol=1e-5)


def test_int8_export_runs_hard_swish_in_one_delegate_partition(tmp_path):
    images = make_image_folder(tmp_path / "images", per_class=8, size=32)
    model = zoo_model(tmp_path / "hs.keras", folder_arrays(images), name="hmff-mobilenet-16ch-hs")
    out = tmp_path / "out"
    report = export(model, ExportOptions(formats="tflite", quantizations="none,int8", out=out,
                                         calib_data=images, progress=False, verify=False))
    assert [a.label for a in report.artifacts] == ["tflite-fp32", "tflite-int8"]
    fp32 = Counter(o["op"] for o in tflite_ops(out / "tflite_fp32.tflite"))
    int8 = Counter(o["op"] for o in tflite_ops(out / "tflite_int8.tflite"))
    n_act = fp32["HARD_SWISH"]
    assert n_act >= 30, fp32  # every activation of the -hs variant
    # No op XNNPACK leaves to the reference kernel; per activation one ADD (relu6 fused)
    # and one MUL, plus the MUL that divides hmff_out's scaled input back.
    assert int8["HARD_SWISH"] == 0 and int8["MINIMUM"] == 0 and int8["MAXIMUM"] == 0, int8
    assert int8["MUL"] <= n_act + 2, int8
    assert int8["ADD"] - fp32["ADD"] == n_act, (int8, fp32)
    assert all(a.problems == [] for a in report.artifacts)
    # One partition (x * clip(x / 6 + 1/2, 0, 1) makes 35 of a 224 px -hs model: every int8
    # MINIMUM splits it); the int8 SOFTMAX at the end stays outside XNNPACK in every int8
    # file, so not "whole".
    assert delegate_partitions(out / "tflite_int8.tflite") == 1
    assert delegate_partitions(out / "tflite_fp32.tflite", whole=True) == 1
    meta = json.loads((out / "tflite_int8.json").read_text())["extra"]["int8_activations"]
    assert meta["hard_swish"]["folded"] == n_act and meta["hard_swish"]["unfolded"] == 0
    assert "int8_activations" not in json.loads((out / "tflite_fp32.json").read_text())["extra"]


def test_folded_int8_passes_the_verification_gate(tmp_path):
    """Through the export's own int8 gate against Keras (the random-weight zoo model misses
    it in any spelling, so a small model that int8 can represent)."""
    images = make_image_folder(tmp_path / "images", per_class=8, size=32)
    model = plain_model(tmp_path / "m.keras", activation="hard_swish")
    report = export(model, ExportOptions(formats="tflite", quantizations="int8",
                                         out=tmp_path / "out", calib_data=images,
                                         calib_samples=24, progress=False))
    (a,) = report.artifacts
    assert a.verification["passed"], a.verification
    assert a.metadata["extra"]["int8_activations"]["hard_swish"]["folded"] == 1
    assert "HARD_SWISH" not in a.ops and "MINIMUM" not in a.ops, a.ops


def test_onnx_int8_of_a_hard_swish_model_is_full_integer(tmp_path):
    """onnxruntime's pre-processing turns HardSwish into ops its quantizer takes; skipped (it
    needs sympy), the last hard_swish before the pooling stays float and the exporter
    rightly refuses the file as mixed precision."""
    from hmff_edge.convert import to_onnx

    calib = make_image_folder(tmp_path / "calib", per_class=4, size=32)
    report = export("hmff-mobilenet-16ch-hs", ExportOptions(
        img_size=32, classes=3, formats="onnx", quantizations="int8", calib_data=calib,
        verify=False, out=tmp_path / "out", progress=False, latency=False))
    (art,) = report.artifacts
    assert art.passed and not art.problems, art.problems
    assert to_onnx.check_graph(tmp_path / "out" / "onnx_int8.onnx", full_integer=True) == []
