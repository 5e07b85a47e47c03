"""The zoo's speed-motivated layers compute exactly what the Keras layers they replace do:
the padding-aware depthwise convolution, the fused-kernel batch normalization and the
activation with a fused XLA gradient."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.tf


def _forward_and_grads(layer, x, training=False):
    import tensorflow as tf

    xv = tf.Variable(x)
    with tf.GradientTape() as tape:
        y = layer(xv, training=training)
        loss = tf.reduce_sum(y ** 3)  # non-linear, so every gradient path is exercised
    grads = tape.gradient(loss, [xv] + [w.value for w in layer.trainable_weights])
    return np.asarray(y), [np.asarray(g) for g in grads]


def _assert_same(a, b, rtol=2e-5):
    ya, ga = a
    yb, gb = b
    np.testing.assert_allclose(ya, yb, rtol=rtol, atol=1e-5)
    for p, q in zip(ga, gb, strict=True):
        scale = max(1.0, float(np.max(np.abs(q))))
        np.testing.assert_allclose(p / scale, q / scale, atol=rtol)


@pytest.mark.parametrize(
    "hw, dilation, centre_only",
    [(1, 1, True), (7, 8, True), (2, 2, True), (7, 4, False), (7, 1, False), (5, 3, False)],
)
def test_padding_aware_depthwise_equals_keras(hw, dilation, centre_only):
    import keras

    from hmff_edge.models.layers import PaddingAwareDepthwiseConv2D, export_mode

    x = np.random.default_rng(hw * 10 + dilation).normal(size=(3, hw, hw, 6)).astype("float32")
    ours = PaddingAwareDepthwiseConv2D(3, dilation_rate=dilation, padding="same", use_bias=False)
    ref = keras.layers.DepthwiseConv2D(3, dilation_rate=dilation, padding="same", use_bias=False)
    ours.build(x.shape)
    ref.build(x.shape)
    ref.set_weights(ours.get_weights())
    assert ours.centre_tap_only(x.shape) is centre_only
    _assert_same(_forward_and_grads(ours, x), _forward_and_grads(ref, x))
    with export_mode():  # the export form (a 1x1 depthwise) computes the same
        np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(ref(x)), rtol=2e-5, atol=1e-5)


def test_padding_aware_depthwise_with_bias_and_multiplier():
    import keras

    from hmff_edge.models.layers import PaddingAwareDepthwiseConv2D, export_mode

    x = np.random.default_rng(0).normal(size=(2, 1, 1, 4)).astype("float32")
    kw = {"depth_multiplier": 2, "padding": "same", "bias_initializer": "random_normal"}
    ours, ref = PaddingAwareDepthwiseConv2D(3, **kw), keras.layers.DepthwiseConv2D(3, **kw)
    ours.build(x.shape)
    ref.build(x.shape)
    ref.set_weights(ours.get_weights())
    assert ours.centre_tap_only(x.shape)
    _assert_same(_forward_and_grads(ours, x), _forward_and_grads(ref, x))
    with export_mode():
        np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(ref(x)), rtol=2e-5, atol=1e-5)


def test_padding_aware_depthwise_leaves_other_layouts_and_strides_to_keras():
    from hmff_edge.models.layers import PaddingAwareDepthwiseConv2D

    assert not PaddingAwareDepthwiseConv2D(3, strides=2, padding="same").centre_tap_only(
        (1, 1, 1, 4))
    assert not PaddingAwareDepthwiseConv2D(3, padding="valid").centre_tap_only((1, 1, 1, 4))
    assert not PaddingAwareDepthwiseConv2D(3, padding="same", data_format="channels_first"
                                           ).centre_tap_only((1, 4, 1, 1))
    assert not PaddingAwareDepthwiseConv2D(3, padding="same").centre_tap_only((None, None, None, 4))


def test_hmff_branches_take_the_centre_tap_path_where_exact():
    """At 224 px the module runs at 7x7: only the dilation-8 branch sees nothing but padding
    off-centre; at 32 px (1x1 maps) every branch does."""
    from hmff_edge.models import build_model

    def centre(size):
        m = build_model("hmff-mobilenet-16ch", img_size=size)
        return [m.get_layer(f"hmff_b{i}_dw").centre_tap_only(m.get_layer(f"hmff_b{i}_dw").input.shape)
                for i in (1, 2, 3, 4)]

    assert centre(224) == [False, False, False, True]
    assert centre(32) == [True, True, True, True]


@pytest.mark.parametrize("shape", [(16, 8, 8, 12), (8, 1, 1, 5), (2, 7, 7, 3)])
def test_fused_batch_norm_equals_keras(shape):
    import keras

    from hmff_edge.models.layers import FusedBatchNormalization

    rng = np.random.default_rng(sum(shape))
    x = (rng.normal(size=shape) * 3 + 1).astype("float32")
    ours = FusedBatchNormalization(momentum=0.9, epsilon=1e-3)
    ref = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3)
    ours.build(x.shape)
    ref.build(x.shape)
    weights = [rng.uniform(0.5, 1.5, shape[-1]).astype("float32") for _ in range(4)]
    ours.set_weights(weights)
    ref.set_weights(weights)
    # training: same output and gradients, and the same moving-statistics update (the fused
    # kernel's Bessel-corrected variance scaled back to Keras' biased one)
    _assert_same(_forward_and_grads(ours, x, True), _forward_and_grads(ref, x, True))
    for a, b in zip(ours.get_weights(), ref.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(ours.get_weights()[3], weights[3])  # the update happened
    # inference: Keras' own path
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(ref(x)), rtol=1e-5, atol=1e-5)


def test_fused_batch_norm_falls_back_for_what_the_kernel_does_not_cover():
    from hmff_edge.models.layers import FusedBatchNormalization

    x = np.zeros((2, 3, 3, 4), "float32")
    assert FusedBatchNormalization()._fusable(x, None)
    assert not FusedBatchNormalization(axis=1)._fusable(x, None)
    assert not FusedBatchNormalization(center=False)._fusable(x, None)
    assert not FusedBatchNormalization()._fusable(np.zeros((2, 4), "float32"), None)


def _activation_input():
    # Normal values plus hard_swish's kinks (-3, 3) and their neighbours, and swish's
    # saturated tails, where a wrong gradient formula shows first.
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 6, 6, 8)).astype("float32") * 3.0
    special = np.array([-3.0, 3.0, -2.999, 2.999, -3.001, 3.001, 0.0, -20.0, 20.0], "float32")
    x.reshape(-1)[: special.size] = special
    return x


@pytest.mark.parametrize("activation", ["swish", "hard_swish"])
def test_fused_activation_equals_keras_forward_and_gradient(activation):
    import keras

    from hmff_edge.models.layers import FusedActivation

    x = _activation_input()
    fused = _forward_and_grads(FusedActivation(activation), x, training=True)
    plain = _forward_and_grads(keras.layers.Activation(activation), x, training=True)
    # swish keeps TensorFlow's forward op: the same values bit for bit. XLA's hard_swish
    # forward and both gradients agree to float32 rounding.
    if activation == "swish":
        np.testing.assert_array_equal(fused[0], plain[0])
    _assert_same(fused, plain, rtol=1e-6)


def _xla_nodes(fn) -> list[str]:
    """Nodes of a concrete function and its library functions that XLA must compile."""
    graph = fn.graph.as_graph_def()
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    funcs = {f.signature.name for f in graph.library.function
             if f.attr.get("_XlaMustCompile") and f.attr["_XlaMustCompile"].b}
    return [n.name for n in nodes
            if (n.attr.get("_XlaMustCompile") and n.attr["_XlaMustCompile"].b)
            or (n.attr.get("f") and n.attr["f"].func.name in funcs)]


def test_fused_activation_uses_xla_for_training_and_plain_ops_for_export(monkeypatch):
    import tensorflow as tf

    from hmff_edge.models.layers import FusedActivation, export_mode

    layer = FusedActivation("hard_swish")
    spec = tf.TensorSpec([1, 4, 4, 2], tf.float32)

    def traced(training):
        return tf.function(lambda x: layer(x, training=training)).get_concrete_function(spec)

    assert _xla_nodes(traced(True))
    # Inference graphs (predict, a user's own SavedModel or TFLite conversion) and the
    # exporters' export mode see Keras' own ops: TFLite's HARD_SWISH / LOGISTIC + MUL.
    assert _xla_nodes(traced(False)) == []
    with export_mode():
        assert _xla_nodes(traced(True)) == []
    monkeypatch.setenv("HMFF_EDGE_XLA_ACTIVATIONS", "0")
    assert _xla_nodes(traced(True)) == []


def test_fused_activation_leaves_other_activations_to_keras():
    from hmff_edge.models.layers import _FUSED, FusedActivation

    layer = FusedActivation("relu")
    assert layer.activation not in _FUSED
    np.testing.assert_array_equal(np.asarray(layer(np.array([-1.0, 2.0], "float32"))), [0, 2])


def test_zoo_layers_survive_save_and_load(tmp_path):
    import keras

    from hmff_edge.models import build_model

    m = build_model("hmff-mobilenet-16ch", img_size=32, num_classes=3)
    kinds = {type(layer).__name__ for layer in m.layers}
    assert {"FusedBatchNormalization", "PaddingAwareDepthwiseConv2D", "FusedActivation"} <= kinds
    m.save(tmp_path / "m.keras")
    back = keras.models.load_model(tmp_path / "m.keras")
    assert {type(layer).__name__ for layer in back.layers} == kinds


def test_random_model_bn_calibration_keeps_activations_unit_scale():
    """A random-init network's activations collapse toward zero through the blocks (Keras'
    BN start statistics do not match them); after calibration the deepest BN outputs are
    unit-scale, as in a trained network (what the bench measures must look like one)."""
    import keras

    from hmff_edge.models import build_model
    from hmff_edge.models.bn_stats import calibrate_random_model

    keras.utils.set_random_seed(3)
    m = build_model("kmobilenet-16ch", img_size=64)
    probe = keras.Model(m.input, m.get_layer("block13_pw1_bn").output)
    x = np.random.default_rng(5).standard_normal((4, 64, 64, 3)).astype("float32")
    before = float(np.std(np.asarray(probe(x))))
    assert calibrate_random_model(m) == 4
    after = float(np.std(np.asarray(probe(x))))
    # Order of magnitude is the point (1e-30 activations are what slowed onnxruntime): at
    # this layer's 2x2 map a few 8-image batches estimate the statistics only roughly.
    assert before < 1e-3, before
    assert 0.1 < after < 10.0, after


@pytest.mark.parametrize("fused", [True, False])
def test_precise_bn_averages_batch_statistics_in_one_trace(fused):
    """average_bn_statistics leaves each BN layer with the mean of the per-batch means and
    of the per-batch (biased) variances, for the zoo's fused BN and for Keras' own; the
    traced forward pass is reused by later calls; momentum comes back unchanged."""
    import keras

    from hmff_edge.models import bn_stats
    from hmff_edge.models.layers import FusedBatchNormalization

    bn_cls = FusedBatchNormalization if fused else keras.layers.BatchNormalization
    inp = keras.Input((4, 4, 3))
    out = bn_cls(momentum=0.9, name="bn")(keras.layers.Conv2D(3, 1, name="c")(inp))
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(5, 4, 4, 3)) * (k + 1) + k).astype("float32") for k in range(3)]
    conv = keras.Model(inp, model.get_layer("c").output)
    pre = [np.asarray(conv(b)).reshape(-1, 3) for b in batches]
    assert bn_stats.average_bn_statistics(model, batches) == 3
    bn = model.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), np.mean([p.mean(0) for p in pre], 0),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), np.mean([p.var(0) for p in pre], 0),
                               rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.9
    step = bn_stats._STEPS[model]
    bn_stats.average_bn_statistics(model, batches[:2])
    assert bn_stats._STEPS[model] is step and step.experimental_get_tracing_count() == 1


def test_precise_bn_interrupted_keeps_the_previous_statistics():
    import keras

    from hmff_edge.models.bn_stats import average_bn_statistics

    inp = keras.Input((2, 2, 2))
    model = keras.Model(inp, keras.layers.BatchNormalization(name="bn")(inp))
    bn = model.get_layer("bn")
    bn.moving_mean.assign([0.5, -0.5])

    def batches():
        yield np.full((2, 2, 2, 2), 7.0, "float32")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        average_bn_statistics(model, batches())
    np.testing.assert_array_equal(bn.moving_mean.numpy(), [0.5, -0.5])
    np.testing.assert_array_equal(bn.moving_variance.numpy(), [1.0, 1.0])
    assert bn.momentum == 0.99
