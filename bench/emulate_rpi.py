#!/usr/bin/env python
"""The emulated Raspberry Pi: setup time, and emulated vs host latency of TFLite exports.

    sudo .venv/bin/python bench/emulate_rpi.py [--target rpi4] [--fresh]
        [--models hmff-mobilenet-16ch mobilenet-v1] [--img-size 32] [--runs 10]

1. ``hmff-edge device emulate TARGET`` timed: with ``--fresh`` in an empty cache folder
   (debootstrap + wheels + venv: the first-time cost), else reusing the cached root.
2. For each model (random weights) as fp32 and int8 TFLite: batch-1 median latency, 1 thread,
   on this host and in the emulated root over ssh, and their ratio (emulated / host);
   host first, then emulated, same runner, same settings.
3. ``verify_on``: the outputs on random images in both runtimes, max difference.

Writes bench/results/emulate_TARGET.json and .md (emulate_TARGET_fresh with --fresh):
command, date, CPU with flags, versions, load average.
Emulated latency is an emulator's, never a Pi's: the ratio says how much slower qemu-user
runs the Arm kernels on this CPU, nothing about a board.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from hmff_edge.tables import markdown_table

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", default="rpi4", choices=("rpi4", "rpi5"))
    p.add_argument("--fresh", action="store_true", help="build the root in an empty cache")
    p.add_argument("--models", nargs="+", default=["hmff-mobilenet-16ch", "mobilenet-v1"])
    p.add_argument("--quants", nargs="+", default=["fp32", "int8"])
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--images", type=int, default=16, help="verification images")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    return p.parse_args()


def _latency(path: str, runs: int, host: str | None, target: str) -> dict:
    from hmff_edge.bench import BenchOptions, bench

    opts = BenchOptions(device="rpi" if host else "cpu", profile=target if host else None,
                        threads=1, batch_sizes="1", runs=runs, warmup=2, host=host)
    (res,) = bench([path], opts, progress=False, command="bench/emulate_rpi.py")
    return {"mean_ms": res["latency"]["mean"], "p50_ms": res["latency"]["p50"],
            "min_ms": res["latency"]["min"],
            "load_s": res["load_s"], "label": res["device"]["label"],
            "cpu_model": res["hardware"]["cpu_model"]}


def main() -> int:
    args = _args()
    from hmff_edge.bench.models import resolve
    from hmff_edge.device import emulate, status, stop
    from hmff_edge.device.emulator import host_cpu
    from hmff_edge.device.verify import verify_on

    fresh_dir = None
    if args.fresh:
        fresh_dir = tempfile.mkdtemp(prefix="hmff-emulate-bench-", dir="/var/tmp")
        os.environ["XDG_CACHE_HOME"] = fresh_dir
    was_running = status().running
    t0 = time.monotonic()
    info = emulate(args.target)
    setup = {"fresh_cache": args.fresh, "reused_running": was_running,
             "wall_s": round(time.monotonic() - t0, 1), **info.setup_s}
    rows = []
    try:
        import numpy as np

        rng = np.random.default_rng(0)
        x = rng.standard_normal((args.images, args.img_size, args.img_size, 3)).astype("float32")
        for model in args.models:
            for quant in args.quants:
                ref = resolve(model, runtime="litert", quant=quant, img_size=args.img_size)
                host = _latency(ref.path, args.runs, None, args.target)
                emu = _latency(ref.path, args.runs, info.host, args.target)
                (cmp,) = verify_on(args.target, [(ref.path, "int8" if quant == "int8"
                                                  else "none")], x)
                rows.append({"model": model, "quant": quant, "img_size": args.img_size,
                             "host_p50_ms": host["p50_ms"], "emulated_p50_ms": emu["p50_ms"],
                             "host_mean_ms": host["mean_ms"], "emulated_mean_ms": emu["mean_ms"],
                             "ratio": emu["p50_ms"] / host["p50_ms"],
                             "emulated_label": emu["label"],
                             "runner_cpu": emu["cpu_model"],
                             "verify": {"max_diff": cmp.max_diff, "unit": cmp.unit,
                                        "passed": cmp.passed, "images": cmp.images}})
                print(f"{model} {quant}: host {host['p50_ms']:.2f} ms, emulated "
                      f"{emu['p50_ms']:.1f} ms ({rows[-1]['ratio']:.0f}x), max diff "
                      f"{cmp.max_diff:g} {cmp.unit}", file=sys.stderr, flush=True)
    finally:
        if not was_running:
            stop()
        if fresh_dir:
            shutil.rmtree(fresh_dir, ignore_errors=True)
    model, flags = host_cpu()
    record = {
        "command": shlex.join(["bench/emulate_rpi.py"] + sys.argv[1:]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "hardware": {"cpu_model": model, "cpu_flags": flags, "cores": os.cpu_count()},
        "versions": info.pins, "target": args.target, "qemu_cpu": info.cpu,
        "label": info.label, "threads": 1, "runs": args.runs, "setup": setup, "rows": rows,
        "load_average": [round(v, 1) for v in os.getloadavg()],
    }
    out = args.out / f"emulate_{args.target}{'_fresh' if args.fresh else ''}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    out.with_suffix(".md").write_text(_markdown(record))
    print(f"wrote {out}.json and .md", file=sys.stderr)
    return 0


TABLE_COLUMNS = [("model", "model"), ("quant", "quant"), ("img_size", "px"),
                 ("host", "host p50 ms"), ("emulated", "emulated p50 ms"), ("ratio", "emulated / host"),
                 ("verify", "verify max diff")]


def _table_row(row: dict) -> dict:
    v = row["verify"]
    return {"model": row["model"], "quant": row["quant"], "img_size": row["img_size"],
            "host": f"{row['host_p50_ms']:.3f}", "emulated": f"{row['emulated_p50_ms']:.1f}",
            "ratio": f"{row['ratio']:.0f}x",
            "verify": f"{v['max_diff']:g} {v['unit']} ({'pass' if v['passed'] else 'FAIL'})"}


def _markdown(r: dict) -> str:
    s = r["setup"]
    lines = [f"# Emulated {r['target']} ({r['label']})", "",
             f"Command: `{r['command']}` ({r['date']})", "",
             f"Host CPU: {r['hardware']['cpu_model']} ({r['hardware']['cores']} cores; "
             f"flags {' '.join(r['hardware']['cpu_flags'])}); emulated CPU: qemu-user "
             f"{r['qemu_cpu']}; runtime pins: "
             + ", ".join(f"{k} {v}" for k, v in r["versions"].items()), "",
             f"Setup: {s['wall_s']} s wall ({'empty cache' if s['fresh_cache'] else 'cached root'}"
             f"; parts: " + ", ".join(f"{k} {v} s" for k, v in s.items()
                                      if k not in ("wall_s", "fresh_cache", "reused_running"))
             + ")", "",
             markdown_table([_table_row(row) for row in r["rows"]], TABLE_COLUMNS)]
    lines += ["", f"Batch-1 median latency, {r['threads']} thread, {r['runs']} runs; load "
              f"average {r['load_average']} at the end (shared machine). Emulated "
              "figures are qemu-user's, not device timing.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
