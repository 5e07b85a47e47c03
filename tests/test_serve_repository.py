"""The versioned model repository: layout and policies, per-version V2 and TF Serving
endpoints, the repository extension, hot reload under concurrent load with a real client,
and a broken new version that never replaces the working one."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _artifacts import ServerProcess, free_port, onnx_classifier
from _serve import metrics, request, sample, v2_binary, v2_json

from hmff_edge.errors import ConfigError
from hmff_edge.serve.repository import VersionPolicy, scan, scan_or_raise

X = np.random.default_rng(0).normal(size=(1, 8, 8, 3)).astype(np.float32)


def publish(repo: Path, model: str, version: int, seed: int = 0, corrupt: bool = False) -> Path:
    """Write a version next to the others, then rename it into place (what a publisher does)."""
    tmp = repo / model / f".tmp-{version}"
    onnx_classifier(tmp / "model.onnx", seed=seed)
    if corrupt:
        (tmp / "model.onnx").write_bytes(b"not an onnx model")
    final = repo / model / str(version)
    os.rename(tmp, final)
    return final


# -- layout and policies ----------------------------------------------------------------------
def test_policies_select_versions(tmp_path):
    for v in (1, 2, 5):
        publish(tmp_path, "m", v)
    (tmp_path / "m" / ".tmp-9").mkdir()  # hidden: ignored
    assert sorted(scan(tmp_path).models["m"]) == [5]
    assert sorted(scan(tmp_path, VersionPolicy.parse("latest:2")).models["m"]) == [2, 5]
    assert sorted(scan(tmp_path, VersionPolicy.parse("all")).models["m"]) == [1, 2, 5]
    assert sorted(scan(tmp_path, VersionPolicy.parse("specific:1,5,7")).models["m"]) == [1, 5]
    assert scan(tmp_path).models["m"][5].name == "model.onnx"
    for bad in ("latest:0", "newest", "specific:", "specific:a", "all:2"):
        with pytest.raises(ConfigError, match="version policy"):
            VersionPolicy.parse(bad)


def test_bad_folders_are_named_in_the_error(tmp_path):
    publish(tmp_path, "good", 1)
    (tmp_path / "novers" / "latest").mkdir(parents=True)
    (tmp_path / "empty" / "3").mkdir(parents=True)
    publish(tmp_path, "two", 1)
    onnx_classifier(tmp_path / "two" / "1" / "other.onnx")
    with pytest.raises(ConfigError) as e:
        scan_or_raise(tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "novers" / "latest") in msg and "positive integers" in msg
    assert str(tmp_path / "empty" / "3") in msg and "no .tflite or .onnx" in msg
    assert str(tmp_path / "two" / "1") in msg and "2 model files" in msg
    assert "good" not in msg
    with pytest.raises(ConfigError, match="no version matches the policy specific:4"):
        scan_or_raise(tmp_path / "good" / "..", VersionPolicy.parse("specific:4"))


def test_flat_folder_and_single_file_are_version_1(tmp_path):
    onnx_classifier(tmp_path / "a.onnx")
    assert scan(tmp_path).models == {"a": {1: tmp_path / "a.onnx"}}
    assert scan(tmp_path / "a.onnx").models == {"a": {1: tmp_path / "a.onnx"}}


# -- per-version endpoints and the repository extension ----------------------------------------
@pytest.fixture
def repo(tmp_path):
    publish(tmp_path, "m", 1, seed=1)
    publish(tmp_path, "m", 2, seed=2)
    return tmp_path


def _infer(srv, path="/v2/models/m/infer"):
    status, _, body = request(srv, "POST", path, v2_json(X))
    return status, json.loads(body)


@pytest.mark.server
def test_versions_endpoints_and_repository_extension(repo):
    srv = ServerProcess(repo, "--versions", "all")
    try:
        import tritonclient.http as th

        client = th.InferenceServerClient(url=f"127.0.0.1:{srv.port}")
        assert client.is_model_ready("m", "1") and client.is_model_ready("m", "2")
        assert client.get_model_metadata("m")["versions"] == ["1", "2"]
        outs = {}
        for v in ("1", "2"):
            inp = th.InferInput("input", list(X.shape), "FP32")
            inp.set_data_from_numpy(X)
            res = client.infer("m", [inp], model_version=v)
            assert res.get_response()["model_version"] == v
            outs[v] = res.as_numpy("probabilities")
        assert not np.allclose(outs["1"], outs["2"])  # two different models
        assert _infer(srv)[1]["model_version"] == "2"  # no version named: the highest READY
        assert request(srv, "GET", "/v2/models/m/versions/7/ready")[0] == 404
        status, _, body = request(srv, "GET", "/v1/models/m")
        assert [(s["version"], s["state"]) for s in json.loads(body)["model_version_status"]] == \
            [("2", "AVAILABLE"), ("1", "AVAILABLE")]
        status, _, body = request(srv, "POST", "/v1/models/m/versions/1:predict",
                                  json.dumps({"instances": X.tolist()}))
        np.testing.assert_allclose(json.loads(body)["predictions"], outs["1"], atol=1e-6)
        index = client.get_model_repository_index()
        assert [(e["name"], e["version"], e["state"]) for e in index] == \
            [("m", "1", "READY"), ("m", "2", "READY")]
        client.unload_model("m")
        _wait(lambda: request(srv, "GET", "/v2/models/m/ready")[0] == 404)
        assert client.get_model_repository_index() == [
            {"name": "m", "state": "UNAVAILABLE", "reason": "unloaded"}]
        client.load_model("m")
        assert client.is_model_ready("m", "2")
        with pytest.raises(th.InferenceServerException, match="could not be loaded"):
            client.load_model("nope")
        client.close()
    finally:
        assert srv.stop() == 0


def _wait(cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def _index(srv) -> list[dict]:
    return json.loads(request(srv, "POST", "/v2/repository/index", b"{}")[2])


# -- hot reload --------------------------------------------------------------------------------
class Load:
    """Clients sending V2 binary requests back to back through tritonclient, recording each
    answer's status and version."""

    def __init__(self, port: int, clients: int = 4) -> None:
        self.port = port
        self.stop = threading.Event()
        self.results: list[tuple[int, str]] = []
        self.threads = [threading.Thread(target=self._run) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        import tritonclient.http as th

        client = th.InferenceServerClient(url=f"127.0.0.1:{self.port}")
        inp = th.InferInput("input", list(X.shape), "FP32")
        inp.set_data_from_numpy(X)
        while not self.stop.is_set():
            try:
                res = client.infer("m", [inp])
                self.results.append((200, res.get_response()["model_version"]))
            except Exception as exc:  # recorded, asserted by the test
                self.results.append((-1, repr(exc)))
        client.close()

    def finish(self) -> list[tuple[int, str]]:
        self.stop.set()
        for t in self.threads:
            t.join(30)
        return self.results


@pytest.mark.server
def test_hot_reload_under_load_and_a_broken_version_never_replaces_the_working_one(tmp_path):
    publish(tmp_path, "m", 1, seed=1)
    srv = ServerProcess(tmp_path, "--poll", "0.2")
    load = Load(srv.port)
    try:
        _wait(lambda: len(load.results) > 20)
        publish(tmp_path, "m", 2, seed=2)  # new version: loaded, verified, swapped in
        _wait(lambda: load.results and load.results[-1][1] == "2")
        _wait(lambda: [e["version"] for e in _index(srv)] == ["2"])  # v1 out of the policy: drained
        publish(tmp_path, "m", 3, corrupt=True)  # broken: must not replace version 2
        _wait(lambda: any(e["version"] == "3" and e["state"] == "UNAVAILABLE" for e in _index(srv)))
        n = len(load.results)
        _wait(lambda: len(load.results) > n + 20)
        status, _, body = request(srv, "GET", "/v2/models/m/versions/3/ready")
        assert status == 503 and "UNAVAILABLE" in json.loads(body)["state"]
        assert "cannot load ONNX model" in json.loads(body)["reason"]
        assert request(srv, "GET", "/v2/health/ready")[0] == 200
        shutil.rmtree(tmp_path / "m" / "3")
        publish(tmp_path, "m", 4, seed=4)
        _wait(lambda: load.results[-1][1] == "4")
        shutil.rmtree(tmp_path / "m" / "2")  # removed from disk: drained, then unloaded
        _wait(lambda: [e["version"] for e in _index(srv)] == ["4"])
        results = load.finish()
        failures = [r for r in results if r[0] != 200]
        assert not failures, failures[:5]
        seen = [v for _, v in results]
        assert set(seen) == {"1", "2", "4"}
        # Versions only move forward: each answer comes from a version no older than the last.
        assert all(int(a) <= int(b) for a, b in zip(seen, seen[1:])) or _per_client_monotonic(seen)
        m = metrics(srv)
        assert sample(m, "hmff_inference_request_success_total", model="m", version="4") > 0
        assert sample(m, "hmff_model_state", model="m", version="3", state="UNAVAILABLE") == 0
    finally:
        load.stop.set()
        assert srv.stop() == 0
    log = srv.output()
    assert "version 3 failed to load" in log


def _per_client_monotonic(seen: list[str]) -> bool:
    # Four clients interleave: a request that started just before a swap may finish after a
    # request that started just after it. Allow only neighbouring versions to interleave.
    order = sorted(set(seen), key=int)
    return all(order.index(b) >= order.index(a) - 1 for a, b in zip(seen, seen[1:]))


# -- the command line ------------------------------------------------------------------------
def test_port_in_use_is_unavailable_checked_before_models_load(tmp_path):
    from typer.testing import CliRunner

    from hmff_edge.cli import app

    bare = onnx_classifier(tmp_path / "m.onnx", sidecar=False, embed=False)  # would fail to load
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        res = CliRunner().invoke(app, ["serve", str(bare), "--port", str(port)])
    assert res.exit_code == 5, res.output
    assert f"port {port}" in res.output and "already in use" in res.output
    assert "metadata" not in res.output


def test_serve_cli_refuses_a_bad_policy_and_a_bad_layout(tmp_path):
    from typer.testing import CliRunner

    from hmff_edge.cli import app

    (tmp_path / "m" / "v1").mkdir(parents=True)
    runner = CliRunner()
    res = runner.invoke(app, ["serve", str(tmp_path), "--versions", "newest"])
    assert res.exit_code == 2 and "version policy" in res.output
    res = runner.invoke(app, ["serve", str(tmp_path), "--port", str(free_port())])
    assert res.exit_code == 2 and "v1: version folders must be positive integers" in res.output


def test_binary_helper_matches_tritonclient_layout():
    body, headers = v2_binary(X)
    n = int(headers["Inference-Header-Content-Length"])
    assert len(body) - n == X.nbytes
