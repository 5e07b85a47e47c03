"""Ablation (hmff_edge.bench.ablation), the in-graph profile (opprofile.profile_in_graph) and
the int8 headroom record's arithmetic (bench/int8_headroom.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _ops(content: bytes) -> list[str]:
    from ai_edge_litert.tools import flatbuffer_utils as fu

    m = fu.convert_bytearray_to_object(bytearray(content))
    return [fu.opcode_to_name(m, op.opcodeIndex) for op in m.subgraphs[0].operators]


def _run(content: bytes, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content, num_threads=1)
    it.allocate_tensors()
    (d,) = it.get_input_details()
    if d["dtype"] == np.int8:
        s, z = d["quantization"]
        x = np.clip(np.round(x / s + z), -128, 127).astype(np.int8)
    it.set_tensor(d["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


def _keras(swish: bool, seed: int = 0):
    """conv1 -> [swish] -> identity 3x3 depthwise -> conv2 -> add(conv2, dw): with ``swish``
    off and the depthwise an identity, the net is what the ablations should leave."""
    import keras

    rng = np.random.default_rng(seed)
    x = keras.Input((8, 8, 8), batch_size=1)
    y = keras.layers.Conv2D(8, 1, name="conv1")(x)
    if swish:
        y = keras.layers.Multiply()([y, keras.layers.Activation("sigmoid")(y)])
    dw = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")
    d = dw(y)
    z = keras.layers.Conv2D(8, 1, name="conv2")(d)
    model = keras.Model(x, keras.layers.Add()([z, d]))
    ident = np.zeros((3, 3, 8, 1), np.float32)
    ident[1, 1] = 1.0
    dw.set_weights([ident])
    for name in ("conv1", "conv2"):
        layer = model.get_layer(name)
        layer.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.5
                           for w in layer.get_weights()])
    return model


def _tflite(model, int8: bool = False) -> bytes:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        rng = np.random.default_rng(1)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([rng.random((1, 8, 8, 8), np.float32)]
                                               for _ in range(8))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = tf.int8
    return conv.convert()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    pytest.importorskip("tensorflow")
    d = tmp_path_factory.mktemp("ablation")
    with_swish, plain = _keras(True), _keras(False)
    plain.get_layer("conv1").set_weights(with_swish.get_layer("conv1").get_weights())
    plain.get_layer("conv2").set_weights(with_swish.get_layer("conv2").get_weights())
    out = {}
    for name, model, int8 in (("swish", with_swish, False), ("plain", plain, False),
                              ("swish_int8", with_swish, True)):
        out[name] = d / f"{name}.tflite"
        out[name].write_bytes(_tflite(model, int8))
    return out


@pytest.mark.tf
def test_dropping_an_identity_depthwise_leaves_the_outputs(files):
    from hmff_edge.bench.ablation import ablate, op_set

    ab = ablate(str(files["swish"]), op_set("depthwise"))
    assert dict(ab.dropped) == {"DEPTHWISE_CONV_2D": 1}
    assert "DEPTHWISE_CONV_2D" not in _ops(ab.content)
    x = np.random.default_rng(2).random((1, 8, 8, 8), np.float32)
    np.testing.assert_allclose(_run(ab.content, x), _run(files["swish"].read_bytes(), x),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.tf
def test_dropping_activations_keeps_the_residual_add(files):
    """LOGISTIC and x * sigmoid(x) go; the ADD of two branches is not an activation."""
    from hmff_edge.bench.ablation import ablate, op_set

    ab = ablate(str(files["swish"]), op_set("activations"))
    assert dict(ab.dropped) == {"LOGISTIC": 1, "MUL": 1}
    assert _ops(ab.content).count("ADD") == 1
    x = np.random.default_rng(3).random((1, 8, 8, 8), np.float32)
    np.testing.assert_allclose(_run(ab.content, x), _run(files["plain"].read_bytes(), x),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.tf
def test_an_input_read_by_an_op_that_stays_is_not_rewired(files):
    """conv1's output feeds the LOGISTIC and the MUL: dropping only the MUL would hand conv1's
    output the MUL's int8 grid under the LOGISTIC, so neither goes."""
    from hmff_edge.bench.ablation import ablate

    ab = ablate(str(files["swish_int8"]), {"MUL"})
    assert sum(ab.dropped.values()) == 0
    assert _ops(ab.content) == _ops(files["swish_int8"].read_bytes())


@pytest.mark.tf
def test_int8_ablation_runs_under_xnnpack_with_the_removed_outputs_grid(files):
    from ai_edge_litert.tools import flatbuffer_utils as fu

    from hmff_edge.bench.ablation import ablate, op_set

    ab = ablate(str(files["swish_int8"]), op_set("depthwise+activations"))
    assert dict(ab.dropped) == {"LOGISTIC": 1, "MUL": 1, "DEPTHWISE_CONV_2D": 1}
    m = fu.convert_bytearray_to_object(bytearray(ab.content))
    sg = m.subgraphs[0]
    (conv1, conv2, add) = sg.operators
    # conv1's output took the depthwise output's grid: it now reads straight into conv2 / ADD.
    assert conv2.inputs[0] == conv1.outputs[0] and conv1.outputs[0] in add.inputs
    x = np.random.default_rng(4).random((1, 8, 8, 8), np.float32)
    assert _run(ab.content, x).shape == (1, 8, 8, 8)


def test_unknown_op_set_names_the_known_ones():
    from hmff_edge.bench.ablation import op_set

    with pytest.raises(ValueError, match="unknown op set 'relu'.*depthwise, activations"):
        op_set("relu")


@pytest.mark.tf
def test_prefix_models_end_at_each_op_and_sum_to_the_whole(files):
    from hmff_edge.bench.opprofile import prefix_models, profile_in_graph

    path = str(files["swish"])
    pieces = prefix_models(path)
    assert [n for n, _ in pieces] == _ops(files["swish"].read_bytes())
    x = np.random.default_rng(5).random((1, 8, 8, 8), np.float32)
    np.testing.assert_allclose(_run(pieces[-1][1], x), _run(files["swish"].read_bytes(), x),
                               rtol=1e-6)
    import keras

    full = _keras(True)
    conv1 = keras.Model(full.input, full.get_layer("conv1").output)
    np.testing.assert_allclose(_run(pieces[0][1], x), conv1(x).numpy(), rtol=1e-4, atol=1e-5)
    prof = profile_in_graph(path, runs=3)
    assert prof["op_count"] == len(pieces) == len(prof["ops"])
    assert sum(o["ms"] for o in prof["ops"]) == pytest.approx(prof["whole_model_ms"])
    assert prof["ops"][-1]["prefix_ms"] == pytest.approx(prof["whole_model_ms"])
    assert prof["method"].startswith("in-graph")


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_headroom_target_and_split():
    """Baseline 12 -> 4 ms (3.0x; target 2.4x); its rest 10 -> 2.5 (4.0x). A variant at
    6 -> 4 ms (1.5x) with 2 ms fp32 / 1.5 ms int8 of depthwise + activations: it needs
    2.5 ms; the rest (4 -> 2.5) would need 4 / (2.5 - 1.5) = 4.0x; at the baseline's rest gain
    it would take 1.5 + 1.0 = 2.5 ms (2.4x)."""
    h = _script("int8_headroom")
    both = "depthwise+activations"
    med = {"mobilenet-v1 fp32": 12.0, "mobilenet-v1 int8": 4.0,
           f"mobilenet-v1 fp32 -{both}": 10.0, f"mobilenet-v1 int8 -{both}": 2.5,
           "v fp32": 6.0, "v int8": 4.0, f"v fp32 -{both}": 4.0, f"v int8 -{both}": 2.5}
    paths = {("mobilenet-v1", "fp32"): "a", ("mobilenet-v1", "int8"): "b",
             ("v", "fp32"): "c", ("v", "int8"): "d"}
    graphs, (t,) = h.rows(paths, med, {f"v int8 -{both}": {"MUL": 3}})
    assert len(graphs) == 4 and graphs[3][f"{both}_dropped"] == 3
    assert t["target_gain"] == pytest.approx(2.4) and t["need_ms"] == pytest.approx(2.5)
    assert not t["met"] and t["gain"] == pytest.approx(1.5)
    assert (t["out32"], t["out8"]) == (pytest.approx(2.0), pytest.approx(1.5))
    assert t["rest_gain"] == pytest.approx(1.6) and t["rest_gain_needed"] == pytest.approx(4.0)
    assert t["base_rest_gain"] == pytest.approx(4.0)
    assert t["best_ms"] == pytest.approx(2.5) and t["best_gain"] == pytest.approx(2.4)
    text = h.markdown({"cpu_model": "c", "simd": ["avx2"], "date": "d", "rounds": 1, "runs": 1,
                       "versions": "x", "command": "cmd", "baseline_gain": 3.0,
                       "graphs": graphs, "target": [t]})
    assert "| v | 6.000 | 4.000 | 1.50x | 2.40x | 2.500 | no |" in text
    assert "| v | 2.000 -> 1.500 | 1.33x | 4.000 -> 2.500 | 1.60x | 4.00x | 4.00x | 2.500 | 2.40x |" in text
    assert "group's width" not in text  # no K scan in this record
    scan = [{"k": 16, "cin": 128, "groups": 8, "fp32_ms": 0.4, "int8_ms": 0.2, "gain": 2.0,
             "int8_ns_per_output": 0.5, "int8_gmacs": 40.0}]
    assert "| 16 | 56x56x128 -> 128, 8 group(s) | 0.4000 | 0.2000 | 2.00x | 0.500 | 40.0 |" in \
        "\n".join(h._k_section(scan))



@pytest.mark.parametrize("record", ["profile_amd-avx512_vnni-avx_vnni", "profile_hs_amd-avx512_vnni"])
def test_stored_single_op_profiles_render_as_recorded(record):
    import json

    p = _script("int8_profile")
    base = REPO / "bench" / "results" / "int8" / record
    rec = json.loads(base.with_suffix(".json").read_text())
    assert p.markdown(rec, 8) == base.with_suffix(".md").read_text()


def test_profile_record_names_the_in_graph_method_and_refuses_a_mix():
    p = _script("int8_profile")
    one = {"method": "in-graph: prefix k ...", "whole_model_ms": 1.0, "sum_of_ops_ms": 1.0,
           "by_type": [{"op": "CONV_2D", "ms": 1.0}], "elementwise_share": 0.0, "ops": []}
    rec = {"cpu_model": "c", "simd": [], "date": "d", "note": "", "command": "x",
           "profiles": {"a int8": one}}
    assert "first k ops" in p.markdown(rec, 8) and "cut out" not in p.markdown(rec, 8)
    rec["profiles"]["a fp32"] = {**one, "method": "each op cut out ..."}
    with pytest.raises(SystemExit, match="mixing single-op and --in-graph"):
        p.markdown(rec, 8)
