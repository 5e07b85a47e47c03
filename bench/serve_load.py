"""Load benchmark of `hmff-edge serve` (a script, not a test).

    .venv/bin/python bench/serve_load.py                      # make the model, run everything
    .venv/bin/python bench/serve_load.py --duration 5 --concurrency 1,4,16,64

What it does, each part in its own process so they do not share an interpreter:
1. the model: ``hmff-mobilenet-16ch`` at 224x224, random weights, exported to float TFLite
   by ``hmff_edge.convert.export`` in a child process that imports TensorFlow. Skipped with
   --model.
2. the raw runtime's best throughput: ``Predictor.run`` on batches 1/2/4/8, same thread count
   as the server, in a child process.
3. the server: ``python -m hmff_edge serve`` started as a subprocess; time from process start
   to a 200 on /v2/health/ready, and its resident memory (psutil).
4. the load generator: a separate process (this script with ``--loadgen``) running N
   keep-alive asyncio clients back to back for a fixed duration, for each request kind
   (V2 binary tensors, V2 JSON tensors, JPEG upload to :classify) and concurrency.
Also measured: the server-side decode cost of one request of each kind (JSON parse vs binary).

Results go to bench/results/serve_load.json and .md with the command and machine.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hmff_edge.tables import markdown_table

REPO = Path(__file__).resolve().parents[1]
# Made on first use (TensorFlow, ~15 s) and cached outside the repository.
DEFAULT_MODEL = (Path(tempfile.gettempdir()) / "hmff-edge-bench" / "hmff-mobilenet-16ch-224"
                 / "tflite_fp32.tflite")
PY = sys.executable


# -- 1. the model ---------------------------------------------------------------------------
def make_model(path: Path, size: int = 224) -> None:
    """Runs in a child process: the only place TensorFlow is imported. The project's
    exporter (``hmff_edge.convert``: verified against Keras, metadata embedded) writes the
    float TFLite model of ``hmff-mobilenet-16ch`` with random weights into ``path.parent``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from hmff_edge.convert import ExportOptions, export

    export("hmff-mobilenet-16ch", ExportOptions(formats=["tflite"], quantizations=["none"],
                                                out=path.parent, img_size=size,
                                                verify_samples=8))
    if not path.is_file():
        found = sorted(p.name for p in path.parent.glob("*.tflite"))
        raise SystemExit(f"the exporter wrote {found} into {path.parent}, not {path.name}")


# -- 2. raw runtime ---------------------------------------------------------------------------
def raw_throughput(model: Path, threads: int, seconds: float, batches=(1, 2, 4, 8)) -> dict:
    from hmff_edge.runtime import load

    p = load(model, threads=threads)
    out: dict = {"img_per_s": {}, "cpu_ms_per_img": {}}
    for batch in batches:
        x = np.random.default_rng(0).normal(size=(batch, *p.sample_shape)).astype(np.float32)
        p.run(x)
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < seconds:
            p.run(x)
            n += batch
        out["img_per_s"][batch] = n / (time.perf_counter() - t0)
        # CPU time is what contention on a shared machine does not distort much.
        out["cpu_ms_per_img"][batch] = (time.process_time() - c0) / n * 1e3
    return out


# -- 4. load generator ------------------------------------------------------------------------
class _Window:
    """The measured window. It opens once every client has completed one request and the
    warm-up time has passed (steady state even when one request takes seconds, as 3 MB JSON
    bodies at 64 clients do), and closes ``duration`` seconds later. Requests count by
    completion time: throughput is what completes inside the window."""

    def __init__(self, concurrency: int, duration: float, warmup: float) -> None:
        self.t_start = time.perf_counter()
        self.concurrency, self.duration, self.warmup = concurrency, duration, warmup
        self.warm = 0
        self.open_at = float("inf")
        self.close_at = float("inf")
        self.give_up_at = self.t_start + 120.0

    def first_done(self, now: float) -> None:
        self.warm += 1
        if self.warm == self.concurrency:
            self.open_at = max(now, self.t_start + self.warmup)
            self.close_at = self.open_at + self.duration

    def running(self, now: float) -> bool:
        return now < self.close_at and now < self.give_up_at

    def inside(self, now: float) -> bool:
        return self.open_at <= now <= self.close_at


async def _client(port: int, request: bytes, win: _Window, lat: list, errors: dict,
                  done: list) -> None:
    reader = writer = None
    first = True
    while win.running(time.perf_counter()):
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            t0 = time.perf_counter()
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            close = False
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                k = k.strip().lower()
                if k == b"content-length":
                    length = int(v)
                elif k == b"connection" and v.strip().lower() == b"close":
                    close = True
            await reader.readexactly(length)
            t1 = time.perf_counter()
            if status == 200:
                done[0] += 1
            if win.inside(t1):
                if status == 200:
                    lat.append(t1 - t0)
                else:
                    errors[str(status)] = errors.get(str(status), 0) + 1
            if first:
                first = False
                win.first_done(t1)
            if close:
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            if win.inside(time.perf_counter()):
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            if first:
                first = False
                win.first_done(time.perf_counter())
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


def loadgen(port: int, request_file: str, concurrency: int, duration: float, warmup: float) -> dict:
    request = Path(request_file).read_bytes()
    lat: list[float] = []
    errors: dict[str, int] = {}
    win = _Window(concurrency, duration, warmup)
    done = [0]  # every 200 answer, in the window or not (for CPU per request)

    async def main() -> None:
        await asyncio.gather(*(_client(port, request, win, lat, errors, done)
                               for _ in range(concurrency)))

    asyncio.run(main())
    if win.close_at == float("inf"):
        raise RuntimeError(f"never reached steady state: {win.warm}/{concurrency} clients "
                           "completed a first request within 120 s")
    a = np.array(lat) if lat else np.array([np.nan])
    return {"requests": len(lat), "completed_total": done[0],
            "errors": sum(errors.values()), "error_kinds": errors,
            "throughput": len(lat) / duration, "p50_ms": float(np.percentile(a, 50) * 1e3),
            "p99_ms": float(np.percentile(a, 99) * 1e3)}


# -- request bodies -----------------------------------------------------------------------------
def http_request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + body


def make_requests(model_name: str, input_name: str, size: int, tmp: Path) -> dict[str, Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, size, size, 3)).astype(np.float32)
    header = json.dumps({"inputs": [{"name": input_name, "datatype": "FP32", "shape": list(x.shape),
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    binary = http_request(f"/v2/models/{model_name}/infer", header + x.tobytes(),
                          {"Inference-Header-Content-Length": str(len(header))})
    js = json.dumps({"inputs": [{"name": input_name, "datatype": "FP32", "shape": list(x.shape),
                                 "data": x.ravel().tolist()}]}).encode()
    json_req = http_request(f"/v2/models/{model_name}/infer", js, {"Content-Type": "application/json"})
    # A smooth photo-like 224x224 JPEG (random noise would compress unrealistically badly).
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.stack([(xx * 255 / size), (yy * 255 / size), ((xx + yy) * 127 / size)], -1)
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90)
    image_req = http_request(f"/v1/models/{model_name}:classify", buf.getvalue(),
                             {"Content-Type": "image/jpeg"})
    out = {}
    for kind, data in (("v2_binary", binary), ("v2_json", json_req), ("classify_jpeg", image_req)):
        (tmp / kind).write_bytes(data)
        out[kind] = tmp / kind
    out["_sizes"] = {"v2_binary": len(binary), "v2_json": len(json_req),  # type: ignore[assignment]
                     "classify_jpeg": len(image_req)}
    return out


def decode_costs(model: Path, requests: dict) -> dict:
    """Server-side cost of turning one request body into the input tensor (median of 20)."""
    from hmff_edge.runtime import load
    from hmff_edge.serve.protocol import decode_v2

    p = load(model, threads=1)
    out = {}
    for kind in ("v2_binary", "v2_json", "classify_jpeg"):
        raw = Path(requests[kind]).read_bytes()
        head, _, body = raw.partition(b"\r\n\r\n")
        hl = None
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"inference-header-content-length"):
                hl = line.split(b":")[1].strip().decode()
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            if kind == "classify_jpeg":
                p.preprocess([body])
            else:
                decode_v2(body, hl, p, max_batch=1 << 30)
            times.append(time.perf_counter() - t0)
        out[kind] = float(np.median(times) * 1e3)
    t0 = time.perf_counter()
    x = np.zeros((1, *p.sample_shape), np.float32)
    for _ in range(10):
        p.run(x)
    out["inference_batch1"] = (time.perf_counter() - t0) / 10 * 1e3
    return out


# -- orchestration ----------------------------------------------------------------------------
def _child(args: list[str]) -> dict:
    out = subprocess.run([PY, __file__, *args], capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, port: int, threads: int, max_batch: int, max_delay_ms: float):
    import urllib.request

    t0 = time.perf_counter()
    proc = subprocess.Popen([PY, "-m", "hmff_edge", "serve", str(model), "--port", str(port),
                             "--threads", str(threads), "--max-batch", str(max_batch),
                             "--max-delay-ms", str(max_delay_ms), "--max-queue", "256"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server died: {proc.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    return proc, time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.005)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds measured per point")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--concurrency", default="1,4,16,64")
    ap.add_argument("--kinds", default="v2_binary,v2_json,classify_jpeg")
    ap.add_argument("--threads", type=int, default=1, help="engine threads (server and raw)")
    ap.add_argument("--max-batch", type=int, default=1)
    ap.add_argument("--max-delay-ms", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs per point; the best is reported, errors summed over all")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "serve_load")
    # internal child-process entry points
    ap.add_argument("--make-model", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--raw-batches", default="1,2,4,8", help=argparse.SUPPRESS)
    ap.add_argument("--decode", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--loadgen", nargs=5, metavar=("PORT", "REQ", "CONC", "DUR", "WARM"),
                    help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.make_model:
        make_model(a.make_model)
        print(json.dumps({"ok": True}))
        return
    if a.raw:
        batches = tuple(int(b) for b in a.raw_batches.split(","))
        print(json.dumps(raw_throughput(a.model, a.threads, a.duration, batches)))
        return
    if a.decode:
        print(json.dumps(decode_costs(a.model, json.loads(a.decode.read_text()))))
        return
    if a.loadgen:
        port, req, conc, dur, warm = a.loadgen
        print(json.dumps(loadgen(int(port), req, int(conc), float(dur), float(warm))))
        return

    import psutil

    if not a.model.is_file():
        print(f"making {a.model} (TensorFlow, child process) ...", file=sys.stderr)
        _child(["--make-model", str(a.model)])
    from hmff_edge.runtime import load

    probe = load(a.model, threads=1)
    name, size, input_name = a.model.stem, probe.metadata.height, probe.input_name
    made_by = probe.metadata.extra.get("exported_by") or probe.metadata.extra.get("made_by", "?")
    del probe
    concs = [int(c) for c in a.concurrency.split(",")]
    kinds = a.kinds.split(",")
    results: dict = {"command": " ".join([Path(PY).name, *sys.argv]), "model": str(a.model),
                     "model_made_by": made_by,
                     "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                 "python": platform.python_version(),
                                 "load_avg_at_start": os.getloadavg()},
                     "settings": {"threads": a.threads, "max_batch": a.max_batch, "repeats": a.repeats,
                                  "max_delay_ms": a.max_delay_ms, "duration_s": a.duration}}
    print("raw runtime ...", file=sys.stderr)
    raw_all = _child(["--raw", "--model", str(a.model), "--threads", str(a.threads),
                      "--duration", str(min(a.duration, 3.0))])
    raw = raw_all["img_per_s"]
    results["raw_img_per_s"] = raw
    results["raw_cpu_ms_per_img"] = raw_all["cpu_ms_per_img"]
    best_raw = max(raw.values())
    best_batch = max(raw, key=raw.get)
    with tempfile.TemporaryDirectory() as td:
        reqs = make_requests(name, input_name, size, Path(td))
        results["request_bytes"] = reqs.pop("_sizes")
        spec = Path(td) / "reqs.json"
        spec.write_text(json.dumps({k: str(v) for k, v in reqs.items()}))
        results["decode_ms"] = _child(["--decode", str(spec), "--model", str(a.model)])
        port = _free_port()
        proc, ready_s = start_server(a.model, port, a.threads, a.max_batch, a.max_delay_ms)
        ps = psutil.Process(proc.pid)
        results["start_to_ready_s"] = ready_s
        results["rss_idle_mb"] = ps.memory_info().rss / 2**20
        peak = results["rss_idle_mb"]
        runs = []
        try:
            for kind in kinds:
                for c in concs:
                    # The machine is shared: the raw runtime measured right before each point
                    # (best batch of the first sweep, server idle) shows what the CPU gave then.
                    # With --repeats N each point runs N times and the best run is kept (the
                    # raw side is a best-of too), every run's throughput recorded.
                    tries = []
                    for _ in range(a.repeats):
                        adj = _child(["--raw", "--model", str(a.model), "--threads",
                                      str(a.threads), "--duration", "2", "--raw-batches",
                                      str(best_batch)])
                        cpu0 = ps.cpu_times()
                        t = _child(["--loadgen", str(port), str(reqs[kind]), str(c),
                                    str(a.duration), str(a.warmup)])
                        cpu1 = ps.cpu_times()
                        cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
                        t["server_cpu_ms_per_req"] = cpu / max(t["completed_total"], 1) * 1e3
                        t["raw_adjacent"] = max(adj["img_per_s"].values())
                        tries.append(t)
                    r = max(tries, key=lambda t: t["throughput"])
                    r["throughput_all"] = [t["throughput"] for t in tries]
                    r["errors"] = sum(t["errors"] for t in tries)
                    r["ratio_to_adjacent_raw"] = r["throughput"] / r["raw_adjacent"]
                    r["server_rss_mb"] = ps.memory_info().rss / 2**20
                    peak = max(peak, r["server_rss_mb"])
                    r.update(kind=kind, concurrency=c, ratio_to_raw=r["throughput"] / best_raw)
                    runs.append(r)
                    print(f"{kind:14s} c={c:3d} {r['throughput']:7.1f} req/s  p50 {r['p50_ms']:7.1f} ms"
                          f"  p99 {r['p99_ms']:7.1f} ms  errors {r['errors']}  "
                          f"ratio {r['ratio_to_raw']:.2f} (adjacent raw {r['raw_adjacent']:.1f}: "
                          f"{r['ratio_to_adjacent_raw']:.2f})", file=sys.stderr)
        finally:
            proc.terminate()
            results["server_exit_code"] = proc.wait(60)
        results["rss_peak_mb"] = peak
    # The CPU is shared with whatever else runs on the machine: measure the raw runtime again
    # after the server runs and compare against the better of the two (the conservative ratio).
    print("raw runtime again ...", file=sys.stderr)
    raw_after = _child(["--raw", "--model", str(a.model), "--threads", str(a.threads),
                        "--duration", str(min(a.duration, 3.0))])["img_per_s"]
    results["raw_img_per_s_after"] = raw_after
    best_raw = max(best_raw, *raw_after.values())
    results["raw_best_img_per_s"] = best_raw
    for r in runs:
        r["ratio_to_raw"] = r["throughput"] / best_raw
    results["runs"] = runs
    write_results(a.out, results)


def _best(r: dict) -> str:
    """The batch size (a JSON key) of the raw runtime's best throughput."""
    return max(r["raw_img_per_s"], key=r["raw_img_per_s"].get)


TABLE_COLUMNS = [
    ("kind", "kind"), ("concurrency", "clients"), ("throughput", "req/s (best run)"),
    ("each", "each run"), ("p50", "p50 ms"), ("p99", "p99 ms"), ("errors", "errors"),
    ("ratio", "ratio to raw best"), ("adjacent", "adjacent raw img/s"),
    ("ratio_adjacent", "ratio to adjacent raw"), ("cpu", "server CPU ms/req"),
    ("efficiency", "CPU efficiency"), ("rss", "server RSS after, MB")]


def _table_row(r: dict, x: dict) -> dict:
    """One load run as the cells of the Markdown table."""
    return {"kind": x["kind"], "concurrency": x["concurrency"],
            "throughput": f"{x['throughput']:.1f}",
            "each": ", ".join(f"{t:.1f}" for t in x.get("throughput_all", [x["throughput"]])),
            "p50": f"{x['p50_ms']:.1f}", "p99": f"{x['p99_ms']:.1f}", "errors": x["errors"],
            "ratio": f"{x['ratio_to_raw']:.2f}", "adjacent": f"{x['raw_adjacent']:.1f}",
            "ratio_adjacent": f"{x['ratio_to_adjacent_raw']:.2f}",
            "cpu": f"{x['server_cpu_ms_per_req']:.2f}",
            "efficiency": f"{r['raw_cpu_ms_per_img'][_best(r)] / x['server_cpu_ms_per_req']:.2f}",
            "rss": f"{x.get('server_rss_mb', float('nan')):.0f}"}


def write_results(out: Path, r: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(r, indent=2) + "\n")
    lines = [
        "# `hmff-edge serve` under load",
        "",
        f"Command: `{r['command']}`  ",
        f"Model: `{r['model']}` (hmff-mobilenet-16ch, 224x224x3 float32 TFLite, random weights, "
        f"made by {r['model_made_by']})  ",
        f"Machine: {r['machine']['cpus']} CPUs, {r['machine']['platform']}, Python "
        f"{r['machine']['python']}; server, load generator and (during the raw run) nothing else "
        "of ours share the CPUs; other work on the machine was not controlled "
        f"(load average at start {', '.join(f'{x:.2f}' for x in r['machine']['load_avg_at_start'])}).  ",
        f"Server settings: {r['settings']}",
        "",
        f"- raw runtime (Predictor.run, {r['settings']['threads']} thread(s)), images/s by batch, "
        "before the server runs: "
        + ", ".join(f"b{k}: {v:.1f}" for k, v in r["raw_img_per_s"].items())
        + "; after: " + ", ".join(f"b{k}: {v:.1f}" for k, v in r["raw_img_per_s_after"].items())
        + f"; best {r['raw_best_img_per_s']:.1f} (the denominator of the ratios)",
        f"- process start to ready: {r['start_to_ready_s']:.2f} s",
        f"- server RSS with the model loaded: idle {r['rss_idle_mb']:.0f} MB, peak during the "
        f"runs {r['rss_peak_mb']:.0f} MB",
        f"- CPU per image: raw runtime {r['raw_cpu_ms_per_img'][_best(r)]:.2f} ms (batch "
        f"{_best(r)}); the server's CPU per answered request is in the table (its process only, "
        "the load generator excluded): the ratio raw/server is the server's CPU efficiency, "
        "a figure the machine's other load distorts far less than throughput",
        "- server-side decode of one request (ms): "
        + ", ".join(f"{k} {v:.2f}" for k, v in r["decode_ms"].items()),
        f"- request sizes (bytes): {r['request_bytes']}",
        f"- server exit code after SIGTERM: {r['server_exit_code']}",
        "",
        "Ratios: server throughput (1 image per request) over the raw runtime's best images/s "
        "of the run (strict), and over a 2 s raw run made right before the point (adjacent; the "
        "CPU share the machine gave at that moment). Requests are counted by completion inside "
        "a window that opens once every client has completed one request.",
        "",
        markdown_table([_table_row(r, x) for x in r["runs"]], TABLE_COLUMNS,
                       right=[k for k, _ in TABLE_COLUMNS if k not in ("kind", "each")]),
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
