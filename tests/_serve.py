"""Helpers for the serve tests: plain HTTP requests and parsed Prometheus metrics."""

from __future__ import annotations

import http.client
import json

import numpy as np


def request(srv, method, path, body=None, headers=None, timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def v2_json(x, name="input", datatype="FP32", shape=None):
    return json.dumps({"inputs": [{"name": name, "datatype": datatype,
                                   "shape": list(x.shape) if shape is None else shape,
                                   "data": x.ravel().tolist()}]})


def v2_binary(x: np.ndarray, name: str = "input") -> tuple[bytes, dict]:
    """A V2 request with the binary tensor extension (as tritonclient sends it)."""
    raw = np.ascontiguousarray(x, np.float32).tobytes()
    header = json.dumps({"inputs": [{"name": name, "datatype": "FP32", "shape": list(x.shape),
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "outputs": [{"name": "probabilities",
                                      "parameters": {"binary_data": True}}]}).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header)),
                          "Content-Type": "application/octet-stream"}


def metrics(srv) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted label items): value}`` parsed with prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    status, _, body = request(srv, "GET", "/metrics")
    assert status == 200
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(m: dict, name: str, **labels) -> float:
    """One sample's value (0 when the series does not exist yet)."""
    return m.get((name, tuple(sorted(labels.items()))), 0.0)
