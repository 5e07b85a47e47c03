"""The three production targets of `hmff-edge serve`, measured against a real server process
(a script, not a test; figures go to bench/results/serve_targets.{json,md}).

    python bench/serve_targets.py                 # all three, 60 s reload runs
    python bench/serve_targets.py --duration 10 --only reload

1. reload: 32 keep-alive clients send V2 binary requests for --duration seconds, without and
   with a new version published every 10 s (written beside the others, renamed into place)
   and the oldest removed, server polling every 0.5 s; --pairs such runs alternated. Reported:
   failed requests, responses from a version not yet published when the request started, the
   p99 of each run and the median ratio.
2. stalled: 8 uploads that declare 16 MB and stall, and 100 idle connections, opened while 4
   clients measure p99 for 10 s, alternated with unloaded runs. Reported: the ratios, and when
   the stalled uploads and idle connections were closed against --body-timeout / --idle-timeout.
3. flood: 60 gzip bodies of ~16 KB that expand to 16 MB and 8 V2 JSON bodies of ~12 MB at
   once; the server's peak RSS (VmHWM) against its RSS after warm-up + --max-buffered-mb +
   100 MB.

The model is bench/serve_load.py's (``hmff-mobilenet-16ch`` 224x224 float TFLite, made by the
library's exporter on first use), or --model. Linux only (/proc for RSS).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from hmff_edge.tables import markdown_table

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = (Path(tempfile.gettempdir()) / "hmff-edge-bench" / "hmff-mobilenet-16ch-224"
                 / "tflite_fp32.tflite")
PY = sys.executable


# -- the server --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, path: Path, *args: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([PY, "-m", "hmff_edge", "serve", str(path), "--port",
                                      str(self.port), *args], cwd=REPO,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited: {self.proc.stderr.read()}")
            try:
                if http("127.0.0.1", self.port, "GET", "/v2/health/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit("server not ready in 120 s")

    def rss(self, field: str = "VmRSS") -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise SystemExit(f"no {field}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def http(host: str, port: int, method: str, path: str, body: bytes = b"",
         headers: dict | None = None, timeout: float = 60) -> tuple[int, bytes]:
    import http.client

    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


# -- the load generator (asyncio, keep-alive, raw HTTP/1.1) -------------------------------------------
def v2_binary_request(model: str, x: np.ndarray) -> bytes:
    raw = x.astype(np.float32).tobytes()
    head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                                   "parameters": {"binary_data_size": len(raw)}}],
                       "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]
                       }).encode()
    body = head + raw
    return (f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: x\r\n"
            f"Inference-Header-Content-Length: {len(head)}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    body = await reader.readexactly(int(headers.get("content-length", 0)))
    return status, headers, body


async def _client(port: int, request: bytes, stop_at: float, out: list) -> None:
    reader = writer = None
    while time.monotonic() < stop_at:
        t0 = time.monotonic()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            status, headers, body = await _read_response(reader)
            version = None
            if status == 200:
                n = int(headers["inference-header-content-length"])
                version = json.loads(body[:n])["model_version"]
            out.append((t0, time.monotonic() - t0, status, version))
            if headers.get("connection") == "close":
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError) as exc:
            out.append((t0, time.monotonic() - t0, -1, repr(exc)))
            writer = None
    if writer is not None:
        writer.close()


def run_clients(port: int, request: bytes, clients: int, seconds: float) -> list:
    out: list = []

    async def main():
        stop_at = time.monotonic() + seconds
        await asyncio.gather(*(_client(port, request, stop_at, out) for _ in range(clients)))

    asyncio.run(main())
    return out


def p99(results: list, skip_s: float = 1.0) -> float:
    t_start = min(r[0] for r in results)
    lat = [r[1] for r in results if r[2] == 200 and r[0] >= t_start + skip_s]
    return float(np.percentile(lat, 99) * 1e3)


# -- 1. reload under load ---------------------------------------------------------------------------
def publish(repo: Path, model: Path, version: int) -> None:
    tmp = repo / "m" / f".tmp-{version}"
    tmp.mkdir(parents=True)
    shutil.copy(model, tmp / "model.tflite")
    side = model.with_suffix(".json")
    if side.is_file():
        shutil.copy(side, tmp / "model.json")
    os.rename(tmp, repo / "m" / str(version))


def reload_target(model: Path, seconds: float, clients: int, threads: int, size: int,
                  pairs: int) -> dict:
    x = np.random.default_rng(0).normal(size=(1, size, size, 3)).astype(np.float32)
    req = v2_binary_request("m", x)
    published = {"1": 0.0}
    baselines, reloads = [], []
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        publish(repo, model, 1)
        srv = Server(repo, "--poll", "0.5", "--versions", "latest:1", "--threads", str(threads))
        try:
            run_clients(srv.port, req, clients, 2)  # warm-up
            for _ in range(pairs):  # alternated, so both see the same background load
                baselines.append(run_clients(srv.port, req, clients, seconds))
                stop = threading.Event()

                def publisher(stop: threading.Event = stop) -> None:
                    while not stop.wait(10):
                        v = max(map(int, published)) + 1
                        published[str(v)] = time.monotonic()
                        publish(repo, model, v)
                        old = repo / "m" / str(v - 2)
                        if old.is_dir():  # the one before the previous: never the serving one
                            shutil.rmtree(old)

                t = threading.Thread(target=publisher)
                t.start()
                reloads.append(run_clients(srv.port, req, clients, seconds))
                stop.set()
                t.join()
        finally:
            srv.stop()
    reloading = [r for run in reloads for r in run]
    failed = [r for r in reloading if r[2] != 200]
    early = [r for r in reloading if r[2] == 200 and published.get(r[3], 1e18) > r[0]]
    versions = sorted({r[3] for r in reloading if r[2] == 200}, key=int)
    ratios = [p99(r_) / p99(b_) for b_, r_ in zip(baselines, reloads)]
    return {"clients": clients, "seconds_per_run": seconds, "pairs": pairs,
            "requests_baseline": sum(map(len, baselines)), "requests_reloading": len(reloading),
            "failed": len(failed), "failed_examples": [str(r[3]) for r in failed[:3]],
            "answered_by_unpublished_version": len(early), "versions_seen": versions,
            "p99_ms_baseline": [round(p99(b_), 1) for b_ in baselines],
            "p99_ms_reloading": [round(p99(r_), 1) for r_ in reloads],
            "p99_ratio_per_pair": [round(r, 3) for r in ratios],
            "p99_ratio_median": round(float(np.median(ratios)), 3),
            "target": "0 failed, 0 from unpublished versions, p99 ratio <= 1.5"}


# -- 2. stalled uploads and idle connections ---------------------------------------------------------------
def stalled_target(model: Path, threads: int, size: int, seconds: float, pairs: int) -> dict:
    # Timeouts longer than the measured window: everything stays open while it is measured.
    body_timeout, idle_timeout = seconds + 5, seconds + 8
    x = np.random.default_rng(0).normal(size=(1, size, size, 3)).astype(np.float32)
    req = v2_binary_request(model.stem, x)
    srv = Server(model, "--threads", str(threads), "--body-timeout", str(body_timeout),
                 "--idle-timeout", str(idle_timeout))
    base, under, closed_stalled, closed_idle, failed = [], [], [], [], 0
    try:
        run_clients(srv.port, req, 4, 2)
        for _ in range(pairs):  # alternated, so both see the same background load
            base.append(p99(run_clients(srv.port, req, 4, seconds)))
            result = _with_stalled(srv.port, model.stem, req, seconds)
            under.append(p99(result["loaded"], skip_s=0))
            failed += sum(r[2] != 200 for r in result["loaded"])
            closed_stalled.append(max(result["stalled"]))
            closed_idle.append(max(result["idle"]))
    finally:
        srv.stop()
    ratios = [u / b for u, b in zip(under, base)]
    return {"stalled_uploads": 8, "idle_connections": 100, "seconds_per_run": seconds,
            "pairs": pairs, "body_timeout_s": body_timeout, "idle_timeout_s": idle_timeout,
            "p99_ms_unloaded": [round(b, 1) for b in base],
            "p99_ms_with_stalled": [round(u, 1) for u in under],
            "p99_ratio_per_pair": [round(r, 3) for r in ratios],
            "p99_ratio_median": round(float(np.median(ratios)), 3),
            "failed_with_stalled": failed,
            "stalled_closed_after_s_max": round(max(closed_stalled), 2),
            "idle_closed_after_s_max": round(max(closed_idle), 2),
            "target": "p99 ratio < 2, stalled closed within the body timeout"}


def _with_stalled(port: int, name: str, req: bytes, seconds: float) -> dict:
    """Open 8 stalled uploads and 100 idle connections, measure, then wait for the server
    to close them all; seconds from opening to each close."""
    opened = time.monotonic()
    stalled, idle = [], []
    for _ in range(8):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(f"POST /v2/models/{name}/infer HTTP/1.1\r\nHost: x\r\n"
                  f"Content-Length: {16 * 1024 * 1024}\r\n\r\n".encode() + b"{" * 1024)
        stalled.append(s)
    for _ in range(100):
        idle.append(socket.create_connection(("127.0.0.1", port)))
    out: dict[str, list] = {"stalled": [], "idle": []}

    def watch(kind, socks):
        for s in socks:
            s.settimeout(90)
            try:
                while s.recv(65536):
                    pass
            except OSError:
                pass
            out[kind].append(time.monotonic() - opened)

    watchers = [threading.Thread(target=watch, args=("stalled", stalled)),
                threading.Thread(target=watch, args=("idle", idle))]
    for w in watchers:
        w.start()
    out["loaded"] = run_clients(port, req, 4, seconds)
    for w in watchers:
        w.join(120)
    for s in stalled + idle:
        s.close()
    return out


# -- 3. memory through floods --------------------------------------------------------------------------------
def flood_target(model: Path, threads: int, size: int) -> dict:
    budget_mb = 64
    srv = Server(model, "--threads", str(threads), "--max-buffered-mb", str(budget_mb))
    name = model.stem
    try:
        x = np.random.default_rng(0).normal(size=(1, size, size, 3)).astype(np.float32)
        for _ in range(5):  # warm-up: the models' own footprint
            http("127.0.0.1", srv.port, "POST", f"/v2/models/{name}/infer",
                 json.dumps({"inputs": [{"name": "input", "datatype": "FP32",
                                         "shape": list(x.shape), "data": x.ravel().tolist()}]}
                            ).encode())
        warm = srv.rss()
        bomb = gzip.compress(b'{"inputs": [' + b" " * (16 * 1024 * 1024 - 64) + b"]}", 9)
        xj = np.random.default_rng(1).normal(size=(4, size, size, 3)).astype(np.float32)
        big = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(xj.shape),
                                      "data": xj.ravel().tolist()}]}).encode()
        codes: list[int] = []
        peak = [warm]
        done = threading.Event()

        def sample():
            while not done.wait(0.02):
                peak.append(srv.rss())

        def send(body, headers):
            try:
                codes.append(http("127.0.0.1", srv.port, "POST", f"/v2/models/{name}/infer", body,
                                  headers, timeout=120)[0])
            except OSError:
                codes.append(-1)

        sampler = threading.Thread(target=sample)
        sampler.start()
        jobs = [threading.Thread(target=send, args=(bomb, {"Content-Encoding": "gzip"}))
                for _ in range(60)]
        jobs += [threading.Thread(target=send, args=(big, {})) for _ in range(8)]
        for j in jobs:
            j.start()
        for j in jobs:
            j.join(300)
        done.set()
        sampler.join()
        after = srv.rss()
        hwm = srv.rss("VmHWM")
    finally:
        srv.stop()
    limit = warm + (budget_mb + 100) * 1024 * 1024
    mib = 1024 * 1024
    return {"gzip_bodies": 60, "gzip_body_bytes": len(bomb), "gzip_expands_to": 16 * mib,
            "json_bodies": 8, "json_body_bytes": len(big), "max_buffered_mb": budget_mb,
            "rss_warm_mb": round(warm / mib, 1), "rss_peak_mb": round(max(hwm, *peak) / mib, 1),
            "rss_after_mb": round(after / mib, 1), "limit_mb": round(limit / mib, 1),
            "within_limit": max(hwm, *peak) < limit,
            "codes": {str(c): codes.count(c) for c in sorted(set(codes))},
            "target": "peak RSS < warm RSS + max-buffered-mb + 100 MB"}


# -- records ------------------------------------------------------------------------------------
def machine() -> dict:
    cpu, flags = platform.processor(), ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("Flags:"):
                have = set(line.split(":", 1)[1].split())
                flags = " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile")
                                 if f in have)
    except OSError:
        pass
    from importlib.metadata import version

    def v(pkg):
        try:
            return version(pkg)
        except Exception:  # noqa: BLE001 - not installed
            return None

    return {"cpu": cpu, "cpu_flags": flags, "cores": os.cpu_count(), "python": platform.python_version(),
            "versions": {p: v(p) for p in ("hmff-edge", "ai-edge-litert", "onnxruntime", "uvicorn",
                                           "starlette", "prometheus-client", "numpy")}}


def write(out: Path, record: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    lines = ["# `hmff-edge serve` production targets", "",
             f"Command: `{record['command']}`  ", f"Date: {record['date']}  ",
             f"CPU: {record['machine']['cpu']} ({record['machine']['cores']} cores; "
             f"{record['machine']['cpu_flags'] or 'no AVX-512/VNNI'})  ",
             f"Versions: {', '.join(f'{k} {v}' for k, v in record['machine']['versions'].items() if v)}",
             f"  \nModel: {record['model']}  ",
             f"Load average (1 min) before/after: {record['load_average_1m_before_after']}", ""]
    for name, res in record["results"].items():
        metrics = [{"metric": k, "value": json.dumps(v) if isinstance(v, (dict, list)) else v}
                   for k, v in res.items()]
        lines += [f"## {name}", "", markdown_table(metrics, [("metric", "metric"),
                                                             ("value", "value")]), ""]
    out.with_suffix(".md").write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per reload run")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--pairs", type=int, default=2,
                    help="baseline/treatment runs alternated (median ratio reported)")
    ap.add_argument("--threads", type=int, default=1, help="engine threads per version")
    ap.add_argument("--only", choices=["reload", "stalled", "flood"], action="append")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "serve_targets")
    a = ap.parse_args()
    if not a.model.is_file():
        print(f"making {a.model} (TensorFlow, child process) ...", file=sys.stderr)
        subprocess.run([PY, str(REPO / "bench" / "serve_load.py"), "--make-model", str(a.model)],
                       check=True, cwd=REPO)
    from hmff_edge.runtime import load

    size = load(a.model, threads=1).sample_shape[0]
    todo = a.only or ["reload", "stalled", "flood"]
    load_before = os.getloadavg()
    results = {}
    if "reload" in todo:
        results["reload"] = reload_target(a.model, a.duration, a.clients, a.threads, size,
                                          a.pairs)
        print(json.dumps(results["reload"]), file=sys.stderr)
    if "stalled" in todo:
        results["stalled"] = stalled_target(a.model, a.threads, size, 10.0, a.pairs + 1)
        print(json.dumps(results["stalled"]), file=sys.stderr)
    if "flood" in todo:
        results["flood"] = flood_target(a.model, a.threads, size)
        print(json.dumps(results["flood"]), file=sys.stderr)
    record = {"command": "python " + " ".join([os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]]),
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": machine(), "model": str(a.model.name), "results": results,
              # Other work on the machine shows here; separate runs are only comparable when
              # it stayed level (hence the alternated pairs).
              "load_average_1m_before_after": [round(load_before[0], 2),
                                               round(os.getloadavg()[0], 2)]}
    write(a.out, record)
    print(f"wrote {a.out.with_suffix('.md')}", file=sys.stderr)


if __name__ == "__main__":
    main()
