"""The runtime on TFLite artifacts (float and full-integer int8) and the TF-free TFLite
metadata reader. Building the artifacts needs TensorFlow; running them does not."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _artifacts import LABELS3, embed_tflite_metadata, make_metadata, tflite_classifier

from hmff_edge import runtime
from hmff_edge.errors import ArtifactError
from hmff_edge.preprocess import dequantize, quantize
from hmff_edge.runtime.tflite_metadata import read_tflite_metadata

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def float_model(tmp_path_factory):
    path = tflite_classifier(tmp_path_factory.mktemp("tfl") / "tiny.tflite")
    return path, tflite_classifier.last_keras_model


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory):
    return tflite_classifier(tmp_path_factory.mktemp("tfl8") / "tiny_int8.tflite", int8=True)


def test_float_tflite_matches_keras_for_changing_batch(float_model):
    path, keras_model = float_model
    p = runtime.load(path, threads=1)
    assert p.format == "tflite" and p.input_shape == (-1, 8, 8, 3) and p.labels == LABELS3
    rng = np.random.default_rng(0)
    for batch in (1, 4, 2, 4):  # resize up, down, and back
        x = rng.uniform(-1, 1, (batch, 8, 8, 3)).astype(np.float32)
        want = np.asarray(keras_model(x, training=False))
        np.testing.assert_allclose(p.predict(x), want, rtol=1e-5, atol=1e-6)


def test_int8_predict_quantizes_and_dequantizes(int8_model):
    import tensorflow as tf

    p = runtime.load(int8_model)
    assert p.input_dtype == np.int8 and p.output_dtype == np.int8
    (si, zi), (so, zo) = p.input_quant, p.output_quant
    x = np.random.default_rng(1).uniform(-1, 1, (3, 8, 8, 3)).astype(np.float32)
    # Reference: TensorFlow's own interpreter on the same file, quantized by hand.
    interp = tf.lite.Interpreter(model_path=str(int8_model))
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    assert inp["quantization"] == pytest.approx((si, zi))
    interp.resize_tensor_input(inp["index"], [3, 8, 8, 3])
    interp.allocate_tensors()
    q = quantize(x, si, zi, "int8")
    interp.set_tensor(inp["index"], q)
    interp.invoke()
    raw = interp.get_tensor(out["index"])
    np.testing.assert_array_equal(p.run(q), raw)
    np.testing.assert_allclose(p.predict(x), dequantize(raw, so, zo), rtol=0, atol=1e-7)
    assert p.predict(x).dtype == np.float32
    np.testing.assert_allclose(p.predict(x).sum(axis=1), 1.0, atol=0.05)


def test_metadata_reader_reads_back_what_tf_schema_wrote(float_model):
    path, _ = float_model
    entries = read_tflite_metadata(path)
    assert "hmff_edge" in entries
    assert json.loads(entries["hmff_edge"])["labels"] == LABELS3
    # Same answer from bytes, and other entries (written by the converter) are kept.
    assert read_tflite_metadata(path.read_bytes()) == entries
    assert "min_runtime_version" in entries


def test_embedded_metadata_is_used_without_sidecar(tmp_path):
    path = tflite_classifier(tmp_path / "embedded.tflite", sidecar=False, labels=["x", "y", "z"])
    assert not (tmp_path / "embedded.json").exists()
    assert runtime.load(path).labels == ["x", "y", "z"]


def test_reader_on_model_without_hmff_metadata_and_corrupt_files(float_model, tmp_path):
    path, _ = float_model
    data = path.read_bytes()
    extra = embed_tflite_metadata(data, "other", b"\x00\x01")
    assert read_tflite_metadata(extra)["other"] == b"\x00\x01"
    with pytest.raises(ArtifactError, match="TFL3"):
        read_tflite_metadata(b"\x00" * 64)
    with pytest.raises(ArtifactError):
        read_tflite_metadata(data[:200])  # truncated: offsets point past the end
    with pytest.raises(ArtifactError):
        read_tflite_metadata(tmp_path / "missing.tflite")
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(data)
    meta = make_metadata("tflite", 8)
    (tmp_path / "bare.json").write_text(meta.to_json())
    assert runtime.load(bare).labels == LABELS3


def test_exporter_artifacts_load_from_embedded_metadata(tmp_path):
    """The project's exporter output (real zoo model, 32 px) runs in the runtime with only the
    metadata embedded in each file, and both formats agree."""
    from hmff_edge.convert import export
    from hmff_edge.convert.options import ExportOptions

    out = tmp_path / "exp"
    export("hmff-mobilenet-16ch", ExportOptions(formats=["tflite", "onnx"], quantizations=["none"],
                                                out=out, img_size=32, verify=False))
    for side in out.glob("*_fp32.json"):
        side.unlink()  # force the embedded metadata path
    tfl = runtime.load(out / "tflite_fp32.tflite")
    onx = runtime.load(out / "onnx_fp32.onnx")
    assert tfl.metadata.model == onx.metadata.model == "hmff-mobilenet-16ch"
    assert tfl.sample_shape == onx.sample_shape == (32, 32, 3)
    x = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(tfl.predict(x), onx.predict(x), atol=1e-4)
