"""Model zoo: counts against the paper's Table 2, the MAC counter, shapes, save/load,
training on CPU, and the two graph forms of the grouped pointwise convolution."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hmff_edge.errors import ConfigError
from hmff_edge.models import get_variant, list_models
from hmff_edge.models.registry import PAPER_TABLE2

pytestmark = pytest.mark.tf

PAPER = list(PAPER_TABLE2)
# Tolerances against Table 2. The paper's profiler counted some element-wise work, so its MACs
# run 1-2% above pure convolution MACs.
PARAMS_TOL = {"mobilenet": 0.5, "kmobilenet": 0.5, "hmff": 3.0}
MACS_TOL = {"mobilenet": 2.5, "kmobilenet": 2.5, "hmff": 3.0}
# The one documented miss (models/hmff-mobilenet.md): no reconstruction built from the text
# reaches the paper's 0.090B MACs at 16Ch without exceeding its 0.245M parameters, because
# every HMFF convolution runs at 7x7, where MACs are exactly 49x the weights.
MACS_TOL_EXCEPTIONS = {"hmff-mobilenet-16ch": 3.7}

# Exact counts: kMobileNet's as the K-CAI library builds it; MobileNetV1's from Keras.
EXACT = {
    "mobilenet-v1": (3_217_226, 567_726_592),
    "kmobilenet-16ch": (244_298, 90_051_072),
    "kmobilenet-32ch": (403_018, 151_867_904),
    "kmobilenet-64ch": (718_154, 249_811_456),
    "kmobilenet-128ch": (1_323_850, 368_628_224),
}


@pytest.fixture(scope="module")
def table():
    from hmff_edge.models.table import summarize

    return {r["name"]: r for r in summarize(PAPER)}


@pytest.mark.parametrize("name", PAPER)
def test_counts_match_table2(table, name):
    row, v = table[name], get_variant(name)
    assert abs(row["params_dev_pct"]) <= PARAMS_TOL[v.family], row
    assert abs(row["macs_dev_pct"]) <= MACS_TOL_EXCEPTIONS.get(name, MACS_TOL[v.family]), row
    if name in EXACT:
        assert (row["params"], row["macs"]) == EXACT[name]


def test_hmff_is_lighter_than_kmobilenet_above_16ch(table):
    # Table 2's ordering: the HMFF variant has fewer parameters and MACs than the same-Ch
    # kMobileNet from 32Ch up (at 16Ch the paper has it 0.4% heavier in params).
    for ch in (32, 64, 128):
        h, k = table[f"hmff-mobilenet-{ch}ch"], table[f"kmobilenet-{ch}ch"]
        assert h["params"] < k["params"] and h["macs"] < k["macs"]


def _single_layer_model(layer, shape):
    import keras

    inp = keras.Input(shape)
    return keras.Model(inp, layer(inp))


def test_mac_counter_by_hand():
    import keras

    from hmff_edge.models.counting import count_macs, count_params
    from hmff_edge.models.layers import GroupedPointwiseConv2D

    # grouped 1x1: 8x8 map, 16 -> 32 channels in 4 groups: 64 px * 32 out * 4 in/group
    m = _single_layer_model(GroupedPointwiseConv2D(32, 4), (8, 8, 16))
    assert count_macs(m) == 8 * 8 * 32 * 4 == 8192
    assert count_params(m) == 4 * 32
    # Keras grouped 3x3 conv, stride 2, same padding: 5x5 out, 9 taps, 6/3 = 2 in/group
    m = _single_layer_model(keras.layers.Conv2D(12, 3, strides=2, padding="same", groups=3,
                                                use_bias=False), (10, 10, 6))
    assert count_macs(m) == 5 * 5 * 12 * 9 * 2 == 5400
    # depthwise 3x3 dilated by 2: 7x7 out, 9 taps per channel, 5 channels
    m = _single_layer_model(keras.layers.DepthwiseConv2D(3, dilation_rate=2, padding="same",
                                                         use_bias=False), (7, 7, 5))
    assert count_macs(m) == 7 * 7 * 5 * 9 == 2205
    # dense 20 -> 3
    m = _single_layer_model(keras.layers.Dense(3), (20,))
    assert count_macs(m) == 60 and count_params(m) == 63


def test_grouped_pointwise_rules():
    """Plain 1x1 when too narrow, one grouped path when expanding, two when not."""
    import keras

    from hmff_edge.models.builder import grouped_pointwise

    def kinds(cin, filters, ch):
        inp = keras.Input((4, 4, cin))
        out = grouped_pointwise(inp, filters, ch, "swish", "t")
        m = keras.Model(inp, out)
        return sorted(type(layer).__name__ for layer in m.layers
                      if type(layer).__name__ in ("Conv2D", "GroupedPointwiseConv2D",
                                                  "ChannelInterleave", "Add"))

    def interleaving(cin, filters, ch):
        inp = keras.Input((4, 4, cin))
        m = keras.Model(inp, grouped_pointwise(inp, filters, ch, "swish", "t"))
        return [layer.name for layer in m.layers if getattr(layer, "interleave_input", False)]

    assert kinds(32, 32, 16) == ["Conv2D"]  # 32 <= 2*16: plain
    assert kinds(32, 64, 16) == ["GroupedPointwiseConv2D"]  # expanding: layer 1 only
    assert kinds(16, 64, 16) == ["Conv2D"]  # expanding but 16 <= 16: plain
    assert kinds(64, 64, 16) == ["Add", "GroupedPointwiseConv2D", "GroupedPointwiseConv2D"]
    assert interleaving(64, 64, 16) == ["t_pw2"]  # the second path reads interleaved channels
    assert interleaving(32, 64, 16) == []


def test_interleave_order():
    from hmff_edge.models.layers import ChannelInterleave

    x = np.arange(12, dtype="float32").reshape(1, 1, 1, 12)
    y = np.asarray(ChannelInterleave(3)(x)).ravel().tolist()
    # every 3rd channel starting at 0, then at 1, then at 2
    assert y == [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11]


@pytest.mark.parametrize("name", ["mobilenet-v1", "kmobilenet-16ch", "hmff-mobilenet-32ch"])
@pytest.mark.parametrize("size", [32, 64])
def test_forward_shapes(name, size):
    from hmff_edge.models import build_model

    m = build_model(name, img_size=size, num_classes=7)
    y = np.asarray(m(np.zeros((2, size, size, 3), "float32")))
    assert y.shape == (2, 7)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)


def test_forward_shape_224():
    from hmff_edge.models import build_model

    m = build_model("hmff-mobilenet-16ch", img_size=224)
    assert np.asarray(m(np.zeros((1, 224, 224, 3), "float32"))).shape == (1, 10)
    # the HMFF module runs on the 7x7 map with 1024 channels
    assert tuple(m.get_layer("hmff_residual").output.shape[1:]) == (7, 7, 1024)


def test_export_form_equals_training_form():
    import tensorflow as tf

    from hmff_edge.models import build_model
    from hmff_edge.models.layers import export_mode

    m = build_model("hmff-mobilenet-16ch", img_size=32)
    x = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype("float32")
    a = np.asarray(m(x, training=False))
    with export_mode():
        fn = tf.function(lambda t: m(t, training=False))
        graph_ops = {op.type for op in fn.get_concrete_function(
            tf.TensorSpec([None, 32, 32, 3])).graph.get_operations()}
        b = fn(x).numpy()
    assert "Einsum" not in graph_ops and "Conv2D" in graph_ops
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_save_load_round_trip(tmp_path):
    from hmff_edge.models import build_model, load_model

    m = build_model("hmff-mobilenet-16ch", img_size=32, num_classes=4)
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype("float32")
    path = tmp_path / "m.keras"
    m.save(path)
    m2 = load_model(path)
    np.testing.assert_array_equal(np.asarray(m(x)), np.asarray(m2(x)))
    assert [w.name for w in m.weights] == [w.name for w in m2.weights]


def test_one_step_updates_every_trainable_layer():
    import keras

    from hmff_edge.models import build_model

    m = build_model("hmff-mobilenet-16ch", img_size=32, num_classes=3)
    m.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", jit_compile=False)
    before = [np.array(w) for w in m.trainable_weights]
    rng = np.random.default_rng(2)
    m.train_on_batch(rng.normal(size=(8, 32, 32, 3)).astype("float32"),
                     rng.integers(0, 3, 8))
    unchanged = [w.path for w, b in zip(m.trainable_weights, before) if np.array_equal(w, b)]
    assert unchanged == []
    kinds = {type(layer).__name__ for layer in m.layers if layer.trainable_weights}
    assert {"GroupedPointwiseConv2D", "DepthwiseConv2D", "Conv2D", "Dense"} <= kinds


def test_hmff_uses_requested_dilations():
    from hmff_edge.models import build_model

    m = build_model("hmff-mobilenet-16ch", img_size=64, dilations=(1, 3))
    rates = [tuple(m.get_layer(f"hmff_b{i}_dw").dilation_rate) for i in (1, 2)]
    assert rates == [(1, 1), (3, 3)]
    with pytest.raises(ValueError):
        m.get_layer("hmff_b3_dw")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"img_size": 31}, "minimum is 32"),
        ({"num_classes": 1}, "at least 2"),
        ({"dilations": (1, 0)}, "positive integers"),
        ({"dropout": 1.5}, "dropout"),
    ],
)
def test_bad_build_options(kwargs, message):
    from hmff_edge.models import build_model

    with pytest.raises(ConfigError, match=message):
        build_model("hmff-mobilenet-16ch", **kwargs)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError) as e:
        get_variant("hmff-mobilenet-8ch")
    assert "hmff-mobilenet-16ch" in str(e.value) and "mobilenet-v1" in str(e.value)


def test_activation_variants_registered():
    names = list_models()
    assert "hmff-mobilenet-16ch-hs" in names and "kmobilenet-128ch-relu6" in names
    v = get_variant("hmff-mobilenet-16ch-hs")
    assert v.activation == "hard_swish" and v.base_name == "hmff-mobilenet-16ch"
    assert math.isclose(v.paper_params, 0.245e6)


def _grouped_reference(x, k, groups, interleave):
    """The grouped 1x1 convolution defined group by group in numpy (group j's channel c is
    input channel c * groups + j when interleaved)."""
    cin, f = x.shape[-1], k.shape[-1]
    cin_g, fg = cin // groups, f // groups
    xs = x[..., [c * groups + j for j in range(groups) for c in range(cin_g)]] if interleave else x
    return np.concatenate(
        [xs[..., j * cin_g:(j + 1) * cin_g] @ k[:, j * fg:(j + 1) * fg] for j in range(groups)],
        axis=-1,
    )


@pytest.mark.parametrize("form", ["native", "fallback"])
@pytest.mark.parametrize("interleave", [False, True])
@pytest.mark.parametrize("groups", [2, 4, 8])
def test_grouped_pointwise_forms_match_numpy(groups, interleave, form, monkeypatch):
    """Every graph form (grouped conv, and the fallback's dense block-diagonal / batched
    matmul) computes the grouped 1x1 convolution defined in numpy, forward and gradient,
    with and without the folded channel interleave; export mode is the grouped conv."""
    import tensorflow as tf

    from hmff_edge.models import layers as L

    if form == "fallback":
        monkeypatch.setenv("HMFF_EDGE_NATIVE_GROUPED_CONV", "0")
    elif not L.native_grouped_training():
        pytest.skip("this TensorFlow build has no grouped-convolution gradient")
    rng = np.random.default_rng(groups)
    x = rng.normal(size=(2, 3, 3, 16)).astype("float32")
    layer = L.GroupedPointwiseConv2D(24, groups, interleave_input=interleave)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt)
        loss = tf.reduce_sum(y * y)
    gx, gk = tape.gradient(loss, [xt, layer.kernel])
    with L.export_mode():
        export_out = np.asarray(layer(x))
    k = np.asarray(layer.kernel)[0, 0]  # (16/g, 24)
    ref = _grouped_reference(x, k, groups, interleave)
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(export_out, ref, rtol=1e-5, atol=1e-5)
    # d(sum y^2)/dk and /dx from the same reference: each group's 1x1 is a matmul.
    dy = 2 * ref
    cin_g, fg = 16 // groups, 24 // groups
    order = [c * groups + j for j in range(groups) for c in range(cin_g)] if interleave else \
        list(range(16))
    xs = x[..., order].reshape(-1, 16)
    dyf = dy.reshape(-1, 24)
    gk_ref = np.concatenate([xs[:, j * cin_g:(j + 1) * cin_g].T @ dyf[:, j * fg:(j + 1) * fg]
                             for j in range(groups)], axis=-1)
    gxs = np.concatenate([dyf[:, j * fg:(j + 1) * fg] @ k[:, j * fg:(j + 1) * fg].T
                          for j in range(groups)], axis=-1)
    gx_ref = np.empty_like(gxs)
    gx_ref[:, order] = gxs
    np.testing.assert_allclose(np.asarray(gk)[0, 0], gk_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(gx).reshape(-1, 16), gx_ref, rtol=1e-4, atol=1e-4)


def test_grouped_training_form_follows_the_probe(monkeypatch):
    """The probe answers what TensorFlow can do here (a grouped conv2d gradient inside a
    tf.function), is cached, works while a function is being traced, and the switch forces
    the fallback; the traced training graph then holds a grouped Conv2D or no Conv2D."""
    import tensorflow as tf

    from hmff_edge.models import layers as L

    x = tf.ones((1, 2, 2, 8))
    k = tf.ones((1, 1, 4, 8))

    @tf.function
    def grad():
        with tf.GradientTape() as tape:
            tape.watch([x, k])
            y = tf.nn.conv2d(x, k, strides=1, padding="VALID")
        return tape.gradient(y, [x, k])

    try:
        grad()
        truth = True
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
        truth = False
    L.grouped_conv_has_gradient.cache_clear()
    layer = L.GroupedPointwiseConv2D(16, 8)  # more groups than the dense fallback takes

    def traced_ops():
        fn = tf.function(lambda v: layer(v))
        graph = fn.get_concrete_function(tf.ones((1, 2, 2, 16))).graph
        return {op.type for op in graph.get_operations()}

    ops = traced_ops()
    # probed once, during the trace
    assert L.grouped_conv_has_gradient.cache_info().currsize == 1
    assert L.grouped_conv_has_gradient() is truth
    assert ("Conv2D" in ops, "BatchMatMulV2" in ops) == (truth, not truth), ops
    monkeypatch.setenv("HMFF_EDGE_NATIVE_GROUPED_CONV", "0")
    assert L.native_grouped_training() is False
    ops = traced_ops()
    assert "BatchMatMulV2" in ops and "Conv2D" not in ops, ops


def test_atomic_write_gives_normal_permissions(tmp_path):
    import os

    from hmff_edge.metadata import atomic_write_bytes

    p = tmp_path / "x.json"
    atomic_write_bytes(p, b"{}")
    umask = os.umask(0)
    os.umask(umask)
    assert p.read_bytes() == b"{}"
    assert (p.stat().st_mode & 0o777) == (0o666 & ~umask)
    assert [f.name for f in tmp_path.iterdir()] == ["x.json"]  # no temporary left behind


@pytest.mark.parametrize("name", ["mobilenet-v1", "hmff-mobilenet-16ch"])
def test_train_stages_cuts_follow_the_block_order(name):
    """bench/train_stages.py cuts each network after the last layer of blocks 2, 3, 5, 11 and
    before pooling: every later cut holds strictly more weights, and the first and last cuts
    are the layers they name."""
    import importlib.util
    from pathlib import Path

    import keras

    from hmff_edge.models import build_model

    path = Path(__file__).resolve().parents[1] / "bench" / "train_stages.py"
    spec = importlib.util.spec_from_file_location("train_stages", path)
    stages = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stages)
    model = build_model(name, img_size=32)
    outs = [stages._cut_layer(model, cut) for cut in stages.CUTS]
    sizes = [keras.Model(model.input, o).count_params() for o in outs]
    assert sizes == sorted(set(sizes)), sizes
    assert outs[-1] is model.get_layer("pool").input
    last_block2 = [layer for layer in model.layers if layer.name.startswith("block2_")][-1]
    assert outs[0] is last_block2.output
    assert len(stages.CUTS) == len(stages.STAGES)
