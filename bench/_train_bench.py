"""Shared by the training benchmarks: run ``hmff-edge train``, describe the machine, write
the JSON + Markdown record. Imported by scripts in this folder (``python bench/x.py`` puts
bench/ on ``sys.path``)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CIFAR10 = REPO.parent / "shared" / "data" / "cifar10"


def cpu() -> dict:
    """lscpu's model name and the flags that matter for TF's CPU kernels."""
    info = {"machine": platform.machine(), "cpus": os.cpu_count()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            key, _, val = line.partition(":")
            if key.strip() == "Model name":
                info["model_name"] = val.strip()
            if key.strip() == "Flags":
                flags = set(val.split())
                info["flags"] = sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx512_bf16",
                                                "amx_tile", "fma", "avx_vnni"})
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def versions() -> dict:
    import keras
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__}


def train(args: list[str], out: Path) -> dict:
    """``hmff-edge train ARGS --out OUT --overwrite --json --quiet``; the JSON result plus
    wall seconds. Raises with the tail of stderr when the run fails."""
    cmd = [sys.executable, "-m", "hmff_edge", "train", *args, "--out", str(out), "--overwrite",
           "--json"]
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    r = json.loads(p.stdout)
    r["wall_seconds"] = round(time.perf_counter() - t0, 1)
    r["command"] = "hmff-edge train " + " ".join(args + ["--out", str(out)])
    return r


def summary(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values),
            "stdev": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def write_record(name: str, record: dict, markdown: str) -> Path:
    """bench/results/NAME.json and NAME.md (command, date, CPU, versions in both)."""
    record = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu(),
              "versions": versions(), **record}
    res = REPO / "bench" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    c = record["cpu"]
    head = (f"Date {record['date']}; CPU {c.get('model_name', '?')} ({c.get('cpus')} cores, "
            f"flags {', '.join(c.get('flags', [])) or 'none of avx2/avx512'}), shared with other "
            f"jobs; TensorFlow {record['versions']['tensorflow']}, Keras "
            f"{record['versions']['keras']}.\n\n")
    (res / f"{name}.md").write_text(markdown.replace("{HEAD}", head))
    return res / f"{name}.json"
