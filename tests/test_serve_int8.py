"""A full-integer int8 TFLite model behind the server: FP32 inputs are quantized by the
server, INT8 inputs go straight to the engine, outputs are dequantized FP32 probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from _artifacts import ServerProcess, tflite_classifier

from hmff_edge import runtime

pytestmark = [pytest.mark.tf, pytest.mark.server]


def test_int8_model_served_with_fp32_and_int8_inputs(tmp_path):
    import tritonclient.http as th

    path = tflite_classifier(tmp_path / "q.tflite", int8=True)
    p = runtime.load(path)
    srv = ServerProcess(path)
    try:
        client = th.InferenceServerClient(url=f"127.0.0.1:{srv.port}")
        meta = client.get_model_metadata("q")
        assert meta["inputs"][0]["datatype"] == "INT8"
        # The engine calls its output "Identity"; served, it is "probabilities" as for ONNX.
        assert p.output_name != "probabilities"
        assert meta["outputs"][0]["name"] == "probabilities"
        x = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
        inp = th.InferInput(p.input_name, [2, 8, 8, 3], "FP32")
        inp.set_data_from_numpy(x)
        got = client.infer("q", [inp]).as_numpy("probabilities")
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, p.predict(x), atol=1e-7)
        q = p.to_native(x)
        assert q.dtype == np.int8
        inp = th.InferInput(p.input_name, [2, 8, 8, 3], "INT8")
        inp.set_data_from_numpy(q)
        got = client.infer("q", [inp]).as_numpy("probabilities")
        np.testing.assert_allclose(got, p.to_probabilities(p.run(q)), atol=1e-7)
        inp = th.InferInput(p.input_name, [2, 8, 8, 3], "UINT8")
        inp.set_data_from_numpy(q.view(np.uint8))
        with pytest.raises(th.InferenceServerException, match="send INT8 or FP32"):
            client.infer("q", [inp])
        client.close()
    finally:
        assert srv.stop() == 0
