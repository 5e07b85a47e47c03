"""What a hostile or broken client finds, each against a real server on 127.0.0.1: stalled
bodies and heads, idle connections, non-finite numbers, disconnects, protocol details,
decompression and JSON floods against the memory budget, JSON decoding beside liveness."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest
from _artifacts import ServerProcess, onnx_classifier
from _serve import metrics, request, sample, v2_binary, v2_json

pytestmark = pytest.mark.server

BODY_TIMEOUT = 2
X = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return onnx_classifier(tmp_path_factory.mktemp("hostile") / "tiny.onnx")


@pytest.fixture(scope="module")
def server(model):
    srv = ServerProcess(model, "--max-body-mb", "1", "--max-buffered-mb", "4",
                        "--body-timeout", str(BODY_TIMEOUT), "--header-timeout", "1",
                        "--idle-timeout", "1", "--max-request-batch", "4")
    yield srv
    assert srv.stop() == 0
    log = srv.output()
    assert "Traceback" not in log and "internal error" not in log, log[-2000:]


def _strict(body: bytes):
    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name} in a response")

    return json.loads(body, parse_constant=refuse)


def assert_serves(srv):
    status, _, body = request(srv, "POST", "/v2/models/tiny/infer", v2_json(X), timeout=10)
    assert status == 200, body
    assert _strict(body)["outputs"][0]["name"] == "probabilities"


def _stall(port: int, head: bytes, first: bytes = b"") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=BODY_TIMEOUT + 15)
    s.sendall(head + first)
    return s


def _recv_all(s: socket.socket) -> bytes | None:
    """Everything the server sends until it closes; None when it never closes."""
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        return None
    return out


# -- 1. stalled bodies and heads, idle connections ---------------------------------------------
def test_stalled_uploads_neither_block_others_nor_stay_open(server):
    head = (b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 1000000\r\n\r\n")
    stalled = [_stall(server.port, head, b"{" * 100) for _ in range(4)]
    stalled.append(_stall(server.port, b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\n"
                                       b"Transfer-Encoding: chunked\r\n\r\n", b"10\r\n" + b"[" * 16))
    try:
        # Four declared 1 MB bodies fill the 4 MB budget if reserved up front: this would wait.
        assert_serves(server)
        assert request(server, "GET", "/v2/health/ready", timeout=10)[0] == 200
        for s in stalled:  # each answered 408 and closed by the body timeout
            reply = _recv_all(s)
            assert reply is not None and reply.startswith(b"HTTP/1.1 408"), reply
            assert b"body timeout" in reply
    finally:
        for s in stalled:
            s.close()
    assert_serves(server)


def test_idle_and_slow_head_connections_are_closed(server):
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    slow = _stall(server.port, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")  # head never ends
    try:
        assert _recv_all(idle) == b""  # closed by the server, nothing sent
        assert _recv_all(slow) == b""
    finally:
        idle.close()
        slow.close()
    assert_serves(server)


# -- 2. non-finite numbers ---------------------------------------------------------------------
def _json_with(token: str, dtype: str = "FP32") -> bytes:
    data = ["0.5"] * 192
    data[7] = token
    return (b'{"inputs": [{"name": "input", "datatype": "%s", "shape": [1, 8, 8, 3], "data": [%s]}]}'
            % (dtype.encode(), ",".join(data).encode()))


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400", "1e39"])
def test_non_finite_json_numbers_are_refused(server, token):
    status, _, body = request(server, "POST", "/v2/models/tiny/infer", _json_with(token))
    assert status == 400, body
    assert "finite" in _strict(body)["error"]
    status, _, body = request(server, "POST", "/v1/models/tiny:predict", _tf_body(token))
    assert status == 400, body
    assert "finite" in _strict(body)["error"]
    assert_serves(server)


def _tf_body(token: str) -> bytes:
    row = ",".join(["[" + ",".join(["0.5"] * 3) + "]"] * 8)
    first = "[" + ",".join(["[" + f"{token},0.5,0.5" + "]"] + ["[0.5,0.5,0.5]"] * 7) + "]"
    image = "[" + ",".join([first] + ["[" + row + "]"] * 7) + "]"
    return f'{{"instances": [{image}]}}'.encode()


def test_non_finite_binary_tensor_is_refused(server):
    x = X[:1].copy()
    x[0, 1, 2, 0] = np.nan
    body, headers = v2_binary(x)
    status, _, resp = request(server, "POST", "/v2/models/tiny/infer", body, headers)
    assert status == 400, resp
    assert "non-finite" in _strict(resp)["error"]
    assert_serves(server)


# -- 6. client disconnects -----------------------------------------------------------------------
def test_client_disconnect_is_counted_as_canceled_not_500(server):
    before = metrics(server)
    s = _stall(server.port, b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Length: 5000\r\n\r\n", b"{" * 10)
    time.sleep(0.2)  # the handler is reading the body when the client goes away
    s.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        m = metrics(server)
        if sample(m, "hmff_http_requests_total", route="v2_infer", code="499") > \
                sample(before, "hmff_http_requests_total", route="v2_infer", code="499"):
            break
        time.sleep(0.05)
    mv = {"model": "tiny", "version": "1"}
    assert sample(m, "hmff_inference_request_failure_total", reason="CANCELED", **mv) == \
        sample(before, "hmff_inference_request_failure_total", reason="CANCELED", **mv) + 1
    assert sample(m, "hmff_http_requests_total", route="v2_infer", code="500") == 0
    assert sample(m, "hmff_inference_request_failure_total", reason="BACKEND", **mv) == 0
    assert_serves(server)


# -- 7. protocol details ---------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/v2/models/tiny/infer", "/v1/models/tiny:predict",
                                  "/v1/models/tiny:classify"])
def test_wrong_method_is_405_with_allow(server, path):
    status, headers, body = request(server, "GET", path)
    assert status == 405, body
    assert headers.get("allow") == "POST"
    assert "method not allowed" in _strict(body)["error"]


def test_request_batch_is_capped(server):
    x = np.zeros((5, 8, 8, 3), np.float32)
    status, _, body = request(server, "POST", "/v2/models/tiny/infer", v2_json(x))
    assert status == 400 and "at most 4" in _strict(body)["error"]
    body, headers = v2_binary(x)
    assert request(server, "POST", "/v2/models/tiny/infer", body, headers)[0] == 400
    status, _, body = request(server, "POST", "/v1/models/tiny:predict",
                              json.dumps({"instances": x.tolist()}))
    assert status == 400 and "at most 4" in _strict(body)["error"]
    status, _, _ = request(server, "POST", "/v2/models/tiny/infer", v2_json(x[:4]))
    assert status == 200


def test_lowercase_bearer_scheme_is_accepted(model):
    srv = ServerProcess(model, "--api-key", "s3cret")
    try:
        for scheme in ("Bearer", "bearer", "BEARER"):
            status, _, body = request(srv, "GET", "/v2/models/tiny",
                                      headers={"Authorization": f"{scheme} s3cret"})
            assert status == 200, (scheme, body)
        for value in ("Basic s3cret", "bearer wrong", "s3cret"):
            assert request(srv, "GET", "/v2/models/tiny", headers={"Authorization": value})[0] == 401
        assert sample(metrics_with_key(srv), "hmff_http_requests_total", route="v2_model_metadata",
                      code="401") == 3
    finally:
        assert srv.stop() == 0


def metrics_with_key(srv):
    from prometheus_client.parser import text_string_to_metric_families

    _, _, body = request(srv, "GET", "/metrics", headers={"Authorization": "Bearer s3cret"})
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(body.decode()) for s in f.samples}


# -- 4. JSON decoding beside the event loop ------------------------------------------------------------
def test_large_json_parse_lets_other_threads_run():
    """The server parses large bodies on its decode pool; that only helps the event loop if
    the parse gives up the GIL (Python's C parser holds it for the whole text)."""
    from hmff_edge.serve.limits import parse_json

    x = np.random.default_rng(1).normal(size=(4, 224, 224, 3)).astype(np.float32)
    body = v2_json(x).encode()
    assert len(body) > 10e6
    worker = threading.Thread(target=parse_json, args=(body,))
    turns = 0
    worker.start()
    while worker.is_alive():  # this thread runs only when the parser lets it
        turns += 1
        time.sleep(0)
    worker.join()
    assert turns >= 10, turns


def test_large_json_is_decoded_on_the_pool_not_the_loop():
    import asyncio

    from hmff_edge.serve.budget import MemoryBudget
    from hmff_edge.serve.routes import INLINE_DECODE_BYTES, _decode

    pool_name = []

    async def main(size):
        srv = SimpleNamespace(pool=ThreadPoolExecutor(1, thread_name_prefix="decode"))
        res = MemoryBudget(1 << 30).reservation(time.monotonic() + 5)
        await _decode(srv, res, lambda: pool_name.append(threading.current_thread().name),
                      b"0," * size)
        srv.pool.shutdown()

    asyncio.run(main(INLINE_DECODE_BYTES))
    assert pool_name[-1].startswith("decode")
    asyncio.run(main(10))
    assert pool_name[-1] == threading.current_thread().name  # small bodies stay inline


# -- 5. memory bounded through decompression and JSON floods ----------------------------------------
def _peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_gzip_and_json_floods_stay_within_the_memory_budget(model):
    budget_mb = 24
    srv = ServerProcess(model, "--max-buffered-mb", str(budget_mb), "--max-body-mb", "8",
                        "--body-timeout", "5")
    bomb = gzip.compress(b'{"inputs": [' + b" " * (8 * 1024 * 1024 - 20) + b"]}")
    numbers = (b'{"instances": [' + b"0.5," * (2 * 1024 * 1024 - 8) + b"0.5]}")
    try:
        assert_serves(srv)
        base = _peak_rss(srv.proc.pid)
        codes: list[int] = []

        def flood(body, headers):
            try:
                codes.append(request(srv, "POST", "/v2/models/tiny/infer" if headers else
                                     "/v1/models/tiny:predict", body, headers, timeout=60)[0])
            except OSError:
                codes.append(-1)

        threads = [threading.Thread(target=flood, args=(bomb, {"Content-Encoding": "gzip"}))
                   for _ in range(40)]
        threads += [threading.Thread(target=flood, args=(numbers, {})) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        grown = _peak_rss(srv.proc.pid) - base
        # 40 bombs of 8 MB held at once would be 320 MB; the budget holds one or two.
        assert grown < (budget_mb + 64) * 1024 * 1024, grown / 2**20
        # -1: refused (413/503 with Connection: close) while the client was still sending, so
        # the client saw the connection reset instead of the answer.
        assert set(codes) <= {400, 413, 503, -1}, codes
        assert 400 in codes  # some bombs were decompressed (and found not to be a request)
        assert_serves(srv)
    finally:
        assert srv.stop() == 0
