"""A real `hmff-edge serve` process on 127.0.0.1: tritonclient (binary and JSON tensors),
TF Serving REST, image classification, metrics, and every bad-input class, each followed by
a valid request."""

from __future__ import annotations

import http.client
import io
import json
import socket
import struct
import zlib

import numpy as np
import pytest
from _artifacts import LABELS3, ServerProcess, onnx_classifier
from _serve import metrics, request, sample, v2_json
from PIL import Image

from hmff_edge import runtime

pytestmark = pytest.mark.server

MAX_BODY_MB = 1


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("served")
    onnx_classifier(d / "tiny.onnx")
    onnx_classifier(d / "other.onnx", seed=3, labels=["a", "b"])
    return d


@pytest.fixture(scope="module")
def server(model_dir):
    srv = ServerProcess(model_dir, "--max-body-mb", str(MAX_BODY_MB), "--max-delay-ms", "1")
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def predictor(model_dir):
    return runtime.load(model_dir / "tiny.onnx")


X = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)


def assert_still_serves(srv, predictor):
    status, _, body = request(srv, "POST", "/v2/models/tiny/infer", v2_json(X))
    assert status == 200, body
    out = json.loads(body)["outputs"][0]
    np.testing.assert_allclose(np.reshape(out["data"], out["shape"]), predictor.predict(X), atol=1e-6)


def assert_error(status, body, code, fragment=""):
    assert status == code, (status, body)
    err = json.loads(body)["error"]
    assert fragment.lower() in err.lower(), err


# -- the happy paths ---------------------------------------------------------------------------
def test_tritonclient_binary_and_json_tensors(server, predictor):
    import tritonclient.http as th

    client = th.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny")
    meta = client.get_model_metadata("tiny")
    assert meta["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, 8, 8, 3]}
    assert meta["parameters"]["labels"] == LABELS3
    want = predictor.predict(X)
    for binary in (True, False):
        inp = th.InferInput("input", list(X.shape), "FP32")
        inp.set_data_from_numpy(X, binary_data=binary)
        outputs = None if binary else [th.InferRequestedOutput("probabilities", binary_data=False)]
        res = client.infer("tiny", [inp], outputs=outputs)
        np.testing.assert_allclose(res.as_numpy("probabilities"), want, atol=1e-6)
    # gzip-compressed request body, as tritonclient can send
    inp = th.InferInput("input", list(X.shape), "FP32")
    inp.set_data_from_numpy(X)
    res = client.infer("tiny", [inp], request_compression_algorithm="gzip")
    np.testing.assert_allclose(res.as_numpy("probabilities"), want, atol=1e-6)
    client.close()


def test_v2_server_endpoints(server):
    status, _, body = request(server, "GET", "/v2")
    assert status == 200 and "binary_tensor_data" in json.loads(body)["extensions"]
    assert request(server, "GET", "/v2/health/live")[0] == 200
    assert request(server, "GET", "/v2/health/ready")[0] == 200
    assert request(server, "GET", "/v2/models/other/ready")[0] == 200
    status, _, body = request(server, "GET", "/v2/models/other")
    assert json.loads(body)["outputs"][0]["shape"] == [-1, 2]
    status, _, body = request(server, "GET", "/v2/models/tiny/infer")
    assert_error(status, body, 405, "method not allowed")
    status, _, body = request(server, "GET", "/v2/models/nope")
    assert_error(status, body, 404, "not found")


def test_tf_serving_instances_and_inputs(server, predictor):
    want = predictor.predict(X)
    status, _, body = request(server, "POST", "/v1/models/tiny:predict",
                              json.dumps({"instances": X.tolist()}))
    assert status == 200, body
    np.testing.assert_allclose(json.loads(body)["predictions"], want, atol=1e-6)
    named = {"instances": [{"input": x.tolist()} for x in X]}
    status, _, body = request(server, "POST", "/v1/models/tiny:predict", json.dumps(named))
    np.testing.assert_allclose(json.loads(body)["predictions"], want, atol=1e-6)
    status, _, body = request(server, "POST", "/v1/models/tiny:predict",
                              json.dumps({"inputs": {"input": X.tolist()}}))
    assert status == 200, body
    np.testing.assert_allclose(json.loads(body)["outputs"], want, atol=1e-6)
    status, _, body = request(server, "GET", "/v1/models/tiny")
    assert json.loads(body)["model_version_status"][0]["state"] == "AVAILABLE"


def _png(size=(20, 20), color=(200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def test_classify_raw_and_multipart(server, predictor):
    img = _png()
    want = predictor.classify(img, top_k=2)[0]
    status, _, body = request(server, "POST", "/v1/models/tiny:classify?top_k=2", img,
                              {"Content-Type": "image/png"})
    assert status == 200, body
    got = json.loads(body)["predictions"]
    assert [g["label"] for g in got] == [w["label"] for w in want]
    assert got[0]["probability"] == pytest.approx(want[0]["probability"], abs=1e-6)
    boundary = "xXxBOUNDARYxXx"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + img + f"\r\n--{boundary}--\r\n".encode()
    status, _, body = request(server, "POST", "/v1/models/tiny:classify", form,
                              {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200, body
    assert json.loads(body)["predictions"][0]["label"] == want[0]["label"]
    assert len(json.loads(body)["predictions"]) == 3  # default top 5, capped at 3 classes


def test_metrics_count_requests_batches_and_queue(server, predictor):
    before = metrics(server)
    assert_still_serves(server, predictor)
    request(server, "POST", "/v2/models/nope/infer", b"{}")
    status, headers, _ = request(server, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    m = metrics(server)

    def delta(name, **labels):
        return sample(m, name, **labels) - sample(before, name, **labels)

    assert delta("hmff_http_requests_total", route="v2_infer", code="200") == 1
    assert delta("hmff_http_requests_total", route="v2_infer", code="404") == 1
    assert delta("hmff_http_request_duration_seconds_count", route="v2_infer") == 2
    mv = {"model": "tiny", "version": "1"}
    assert delta("hmff_inference_request_success_total", **mv) == 1
    assert delta("hmff_inference_count_total", **mv) == 2  # one request of 2 samples
    assert delta("hmff_inference_exec_count_total", **mv) == 1
    assert delta("hmff_inference_compute_infer_duration_us_total", **mv) > 0
    assert delta("hmff_inference_queue_duration_seconds_count", **mv) == 1
    assert sample(m, "hmff_inference_pending_request_count", **mv) == 0
    assert sample(m, "hmff_model_state", state="READY", **mv) == 1
    assert sample(m, "hmff_model_load_duration_seconds", **mv) > 0
    assert sample(m, "process_resident_memory_bytes") > 10e6


# -- bad input: each a 4xx with {"error"}, then a valid request still succeeds ----------------
FLOATS = X[:1]
BAD_REQUESTS = [
    ("malformed json", "/v2/models/tiny/infer", b'{"inputs": [', {}, 400, "malformed"),
    ("deep nesting", "/v2/models/tiny/infer", b"[" * 50_000 + b"]" * 50_000, {}, 400, "nested"),
    ("deep object nesting", "/v1/models/tiny:predict", b'{"a":' * 5000 + b"1" + b"}" * 5000, {},
     400, "nested"),
    ("not an object", "/v2/models/tiny/infer", b"[1, 2]", {}, 400, "JSON object"),
    ("wrong datatype", "/v2/models/tiny/infer", v2_json(FLOATS, datatype="INT64"), {}, 400,
     "not accepted"),
    ("unknown datatype", "/v2/models/tiny/infer", v2_json(FLOATS, datatype="FLOAT"), {}, 400,
     "unknown datatype"),
    ("negative dim", "/v2/models/tiny/infer", v2_json(FLOATS, shape=[-1, 8, 8, 3]), {}, 400,
     "non-positive"),
    ("zero dim", "/v2/models/tiny/infer", v2_json(FLOATS, shape=[0, 8, 8, 3]), {}, 400,
     "non-positive"),
    ("overflowing dim", "/v2/models/tiny/infer", v2_json(FLOATS, shape=[2**64 + 1, 8, 8, 3]), {},
     400, "larger than"),
    ("huge batch", "/v2/models/tiny/infer", v2_json(FLOATS, shape=[2**31 - 1, 8, 8, 3]), {}, 400,
     "at most 64 per request"),
    ("wrong sample shape", "/v2/models/tiny/infer", v2_json(FLOATS, shape=[1, 8, 8, 4]), {}, 400,
     "does not match"),
    ("short data", "/v2/models/tiny/infer", v2_json(FLOATS, shape=[2, 8, 8, 3]), {}, 400,
     "has 192 values"),
    ("non-numeric data", "/v2/models/tiny/infer",
     json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 8, 8, 3],
                             "data": ["x"] * 192}]}).encode(), {}, 400, "numbers"),
    ("ragged data", "/v2/models/tiny/infer",
     json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 8, 8, 3],
                             "data": [[0.0] * 191, [0.0]]}]}).encode(), {}, 400, "regular"),
    ("wrong input name", "/v2/models/tiny/infer", v2_json(FLOATS, name="image"), {}, 400,
     "unknown input"),
    ("two inputs", "/v2/models/tiny/infer", b'{"inputs": [{}, {}]}', {}, 400, "exactly one"),
    ("unknown output", "/v2/models/tiny/infer",
     json.dumps({**json.loads(v2_json(FLOATS)), "outputs": [{"name": "logits"}]}).encode(), {}, 400,
     "unknown output"),
    ("bad parameters", "/v2/models/tiny/infer",
     json.dumps({"inputs": [{**json.loads(v2_json(FLOATS))["inputs"][0], "parameters": [1]}]}).encode(),
     {}, 400, "parameters"),
    ("unknown model", "/v2/models/nope/infer", v2_json(FLOATS), {}, 404, "not found"),
    ("path escape", "/v2/models/..%2F..%2Fetc%2Fpasswd/infer", v2_json(FLOATS), {}, 404, ""),
    ("unknown model tf", "/v1/models/..:predict", b"{}", {}, 404, "not found"),
    ("unknown route", "/v3/whatever", b"{}", {}, 404, "no such endpoint"),
    ("tf both keys", "/v1/models/tiny:predict", b'{"instances": [], "inputs": []}', {}, 400,
     "exactly one"),
    ("tf wrong shape", "/v1/models/tiny:predict", b'{"instances": [[[[0, 0, 0]]]]}', {}, 400,
     "expected [N, 8, 8, 3]"),
    ("binary header too long", "/v2/models/tiny/infer", b'{"inputs": []}',
     {"Inference-Header-Content-Length": "999"}, 400, "outside the body"),
    ("binary size mismatch", "/v2/models/tiny/infer",
     None, {"binary": 100}, 400, "binary_data_size"),
    ("binary bytes missing", "/v2/models/tiny/infer",
     None, {"binary": 768, "send": 700}, 400, "binary data is 700 bytes"),
    ("bad encoding", "/v2/models/tiny/infer", b"xx", {"Content-Encoding": "br"}, 415, "br"),
    ("gzip bomb", "/v2/models/tiny/infer", zlib.compress(b"[" * 5_000_000),
     {"Content-Encoding": "deflate"}, 413, "decompressed"),
    ("undecodable image", "/v1/models/tiny:classify", b"\x89PNG not really", {}, 400,
     "cannot decode"),
    ("empty image", "/v1/models/tiny:classify", b"", {}, 400, "no image"),
    ("bad top_k", "/v1/models/tiny:classify?top_k=0", _png(), {}, 400, "top_k"),
    ("multipart without file", "/v1/models/tiny:classify", b"--b\r\nContent-Disposition: form-data;"
     b" name=\"x\"\r\n\r\n1\r\n--b--\r\n", {"Content-Type": "multipart/form-data; boundary=b"}, 400,
     "no file part"),
]


def _binary_body(declared: int, send: int | None = None) -> tuple[bytes, dict]:
    header = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 8, 8, 3],
                                     "parameters": {"binary_data_size": declared}}]}).encode()
    raw = FLOATS.tobytes()[: declared if send is None else send]
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_request_then_valid_request(server, predictor, case):
    _, path, body, headers, code, fragment = case
    if body is None:
        body, headers = _binary_body(headers["binary"], headers.get("send"))
    status, _, resp = request(server, "POST", path, body, headers)
    assert_error(status, resp, code, fragment)
    assert_still_serves(server, predictor)


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (no pixel data needed to be refused)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [5000, 100_000])
def test_decompression_bomb_is_refused(server, predictor, side):
    status, _, body = request(server, "POST", "/v1/models/tiny:classify", _png_header(side, side))
    assert 400 <= status < 500
    assert "pixels" in json.loads(body)["error"] or "large" in json.loads(body)["error"]
    assert_still_serves(server, predictor)


def test_body_over_limit_refused_before_it_is_read(server, predictor):
    # Declared length over the limit: 413 without sending the body at all.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 10000000000\r\n\r\n")
        reply = b""
        while chunk := s.recv(65536):  # the server closes the connection after answering
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413"), reply[:100]
    assert b"exceeds the limit" in reply
    assert_still_serves(server, predictor)


def _count_413(srv) -> int:
    return int(sample(metrics(srv), "hmff_http_requests_total", route="v2_infer", code="413"))


def test_chunked_body_over_limit_refused_while_streaming(server, predictor):
    before = _count_413(server)
    chunk = b"[" + b"0," * 32_000 + b"0]"
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(2000):  # up to ~128 MB if the server never stopped us
                s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            reply = s.recv(65536)
        except ConnectionResetError:
            reply = b""
    assert sent < 64 * MAX_BODY_MB * 1024 * 1024  # stopped long before the client finished
    if reply:  # the 413 normally arrives before the reset
        assert reply.startswith(b"HTTP/1.1 413"), reply[:100]
    # Whether or not the reset beat the reply to the client, the server answered 413.
    assert _count_413(server) == before + 1
    assert_still_serves(server, predictor)


def test_body_under_limit_accepted_chunked(server, predictor):
    body = v2_json(X).encode()

    def gen():
        for i in range(0, len(body), 1000):
            yield body[i : i + 1000]

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/v2/models/tiny/infer", body=gen(), encode_chunked=True)
    r = conn.getresponse()
    assert r.status == 200, r.read()
    conn.close()


# -- API key -----------------------------------------------------------------------------------
def test_api_key_protects_everything_but_health(model_dir, predictor):
    srv = ServerProcess(model_dir / "tiny.onnx", "--api-key", "s3cret")
    try:
        assert request(srv, "GET", "/v2/health/live")[0] == 200
        assert request(srv, "GET", "/v2/health/ready")[0] == 200
        for method, path, body in [("GET", "/v2/models/tiny", None), ("GET", "/metrics", None),
                                   ("POST", "/v2/models/tiny/infer", v2_json(X)),
                                   ("GET", "/v2", None)]:
            status, headers, resp = request(srv, method, path, body)
            assert_error(status, resp, 401, "api key")
            assert headers.get("www-authenticate") == "Bearer"
            status, _, resp = request(srv, method, path, body, {"Authorization": "Bearer wrong"})
            assert status == 401
        good = {"Authorization": "Bearer s3cret"}
        assert request(srv, "GET", "/v2/models/tiny", None, good)[0] == 200
        status, _, resp = request(srv, "POST", "/v2/models/tiny/infer", v2_json(X), good)
        assert status == 200, resp
        import tritonclient.http as th

        client = th.InferenceServerClient(url=f"127.0.0.1:{srv.port}")
        inp = th.InferInput("input", list(X.shape), "FP32")
        inp.set_data_from_numpy(X)
        res = client.infer("tiny", [inp], headers=good)
        np.testing.assert_allclose(res.as_numpy("probabilities"), predictor.predict(X), atol=1e-6)
        client.close()
    finally:
        assert srv.stop() == 0
