"""SIGTERM with requests in flight: readiness false, no new connections, every in-flight
request answered, exit code 0."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
import urllib.request

import numpy as np
import pytest
from _artifacts import ServerProcess, onnx_classifier
from _serve import metrics, sample

pytestmark = pytest.mark.server


def _post(url: str, body: bytes, results: list, i: int) -> None:
    try:
        req = urllib.request.Request(url, data=body, method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            results[i] = (r.status, json.loads(r.read()))
    except Exception as exc:  # recorded, asserted below
        results[i] = (None, repr(exc))


def _queue_depth(srv) -> int:
    return int(sample(metrics(srv), "hmff_inference_pending_request_count", model="tiny",
                      version="1"))


def test_sigterm_drains_in_flight_requests_and_exits_zero(tmp_path):
    model = onnx_classifier(tmp_path / "tiny.onnx")
    # Requests wait up to 2 s for a batch of 64: they are reliably in flight at SIGTERM.
    srv = ServerProcess(model, "--max-delay-ms", "2000", "--max-batch", "64")
    x = np.zeros((1, 8, 8, 3), np.float32)
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 8, 8, 3],
                                   "data": x.ravel().tolist()}]}).encode()
    n = 8
    results: list = [None] * n
    threads = [threading.Thread(target=_post, args=(srv.url + "/v2/models/tiny/infer", body, results, i))
               for i in range(n)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while _queue_depth(srv) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _queue_depth(srv) == n, "requests never queued"
        srv.proc.send_signal(signal.SIGTERM)
        # No new connections once shutdown began (the listening socket is closed).
        refused = False
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", srv.port), timeout=0.5).close()
            except OSError:
                refused = True
                break
            time.sleep(0.01)
        assert refused, "server still accepting connections after SIGTERM"
        for t in threads:
            t.join(30)
        assert srv.proc.wait(30) == 0, srv.output()
    finally:
        srv.stop()
    assert all(r is not None and r[0] == 200 for r in results), results
    assert all(len(r[1]["outputs"][0]["data"]) == 3 for r in results)


def test_signal_handler_turns_readiness_false():
    from types import SimpleNamespace

    import uvicorn

    from hmff_edge.serve.server import _uvicorn_server_class

    state = SimpleNamespace(ready=True)
    server = _uvicorn_server_class()(uvicorn.Config(app=None), state)
    server._on_signal(signal.SIGTERM, None)
    assert state.ready is False and server.should_exit and not server.force_exit
    server._on_signal(signal.SIGINT, None)  # a second Ctrl-C forces exit
    assert server.force_exit
