"""Tables from bench results: terminal, CSV (every trial), Markdown, and the Table 5 shape.

Every output repeats the device label, so an emulated Pi run can never pass for Pi timings.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from hmff_edge.bench.runner import SCHEMA, format_size
from hmff_edge.errors import ArtifactError
from hmff_edge.metadata import atomic_write_bytes
from hmff_edge.tables import markdown_table, text_table

SUMMARY_COLUMNS = [
    ("model", "model"), ("runtime", "runtime"), ("quant", "quant"), ("threads", "thr"),
    ("load_s", "load s"), ("first_ms", "first ms"), ("mean", "mean ms"), ("std", "std"),
    ("p50", "p50 ms"), ("p90", "p90 ms"), ("p99", "p99 ms"), ("b1_ips", "b1 img/s"),
    ("best_batch", "best bs"), ("best_ips", "best img/s"), ("largest_fit", "max fit"),
    ("peak_mem", "peak mem"), ("stopped", "sweep stopped"),
]
TRIAL_FIELDS = ["model", "runtime", "quantization", "device", "emulation", "threads",
                "batch_size", "outcome", "images_per_s", "latency_mean_ms", "latency_p50_ms",
                "latency_p90_ms", "latency_p99_ms", "peak_rss_bytes", "peak_device_memory_bytes",
                "load_s", "first_inference_s", "runs", "error"]
COMPARE_COLUMNS = [
    ("model", "Model"), ("latency_s", "Latency (s)"), ("throughput", "Throughput (img/s)"),
    ("best_batch", "best batch"), ("b1_ips", "batch-1 img/s"), ("params", "Params"),
    ("macs", "MACs"), ("gflops", "GFLOP/s"), ("ratio", "x baseline"),
]


def _f(v: Any, digits: int = 2) -> str | None:
    return None if v is None else f"{v:.{digits}f}"


def _label(r: dict) -> str:
    return r.get("model", {}).get("name") or r.get("model_file", {}).get("name", "?")


def tag(r: dict) -> str:
    """``[litert]``, ``[litert int8]``: how a row was run."""
    q = r.get("quantization")
    return f"[{r.get('runtime')}{'' if q in (None, 'fp32') else ' ' + q}]"


def summary_rows(results: list[dict]) -> list[dict]:
    rows = []
    for r in results:
        lat = r.get("latency") or {}
        tp = r.get("throughput") or {}
        trials = r.get("sweep", {}).get("trials", [])
        best = next((t for t in trials if t["batch_size"] == tp.get("best_batch")), {})
        stop = r.get("sweep", {}).get("stopped", {})
        rows.append({
            "model": _label(r), "runtime": r.get("runtime"), "quant": r.get("quantization"),
            "threads": r.get("threads"), "load_s": _f(r.get("load_s"), 3),
            "first_ms": _f((r.get("first_inference_s") or 0) * 1000 or None),
            "mean": _f(lat.get("mean")), "std": _f(lat.get("std")), "p50": _f(lat.get("p50")),
            "p90": _f(lat.get("p90")), "p99": _f(lat.get("p99")),
            "b1_ips": _f(tp.get("batch1_images_per_s"), 1), "best_batch": tp.get("best_batch"),
            "best_ips": _f(tp.get("best_images_per_s"), 1), "largest_fit": tp.get("largest_fit"),
            "peak_mem": format_size(best.get("peak_device_memory_bytes")
                                    or best.get("peak_rss_bytes")) if best else None,
            "stopped": "max batch" if stop.get("outcome") == "ok" else
            f"{stop.get('outcome')} @ {stop.get('batch_size')}",
        })
    return rows


def device_labels(results: list[dict]) -> list[str]:
    return list(dict.fromkeys(r.get("device", {}).get("label", "?") for r in results))


def terminal_table(results: list[dict]) -> str:
    lines = [f"Device: {lab}" for lab in device_labels(results)]
    lines.append(text_table(summary_rows(results), SUMMARY_COLUMNS))
    for r in results:
        stop = r.get("sweep", {}).get("stopped", {})
        if stop.get("outcome") != "ok":
            lines.append(f"{_label(r)}: sweep stopped - {stop.get('reason', '')[:300]}")
    return "\n".join(lines)


def trial_rows(results: list[dict]) -> list[dict]:
    rows = []
    for r in results:
        for t in r.get("sweep", {}).get("trials", []):
            lat = t.get("latency_ms") or {}
            rows.append({
                "model": _label(r), "runtime": r.get("runtime"),
                "quantization": r.get("quantization"), "device": r.get("device", {}).get("label"),
                "emulation": r.get("device", {}).get("emulation"), "threads": r.get("threads"),
                "batch_size": t["batch_size"], "outcome": t["outcome"],
                "images_per_s": t.get("images_per_s"), "latency_mean_ms": lat.get("mean"),
                "latency_p50_ms": lat.get("p50"), "latency_p90_ms": lat.get("p90"),
                "latency_p99_ms": lat.get("p99"), "peak_rss_bytes": t.get("peak_rss_bytes"),
                "peak_device_memory_bytes": t.get("peak_device_memory_bytes"),
                "load_s": t.get("load_s"), "first_inference_s": t.get("first_inference_s"),
                "runs": t.get("runs"), "error": t.get("error")})
    return rows


def to_csv(results: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=TRIAL_FIELDS)
    w.writeheader()
    w.writerows(trial_rows(results))
    return buf.getvalue()


def to_markdown(results: list[dict], title: str = "hmff-edge bench") -> str:
    first = results[0] if results else {}
    hw = first.get("hardware", {})
    lines = [f"# {title}", ""]
    lines += [f"**Device:** {lab}" for lab in device_labels(results)]
    lines += ["", f"Hardware: {hw.get('cpu_model')}, {hw.get('cores')} cores, "
              f"GPU: {', '.join(hw.get('gpus') or []) or 'none'}; versions: "
              f"{json.dumps(first.get('versions', {}))}",
              f"Command: `{first.get('command', '')}`", "",
              markdown_table(summary_rows(results), SUMMARY_COLUMNS), "",
              "Latency at batch 1 in ms; img/s = images per second; every trial in its own "
              "process.", ""]
    return "\n".join(lines)


def compare_rows(results: list[dict], baseline: str | None = None) -> list[dict]:
    """The paper's Table 5 (model, latency s, throughput) plus params, MACs, GFLOP/s."""
    def ips_of(r):
        return (r.get("throughput") or {}).get("best_images_per_s")

    name = baseline or (_label(results[0]) if results else None)
    # Each row is compared with the baseline model run the same way (runtime, quantization).
    bases = {}
    for r in results:
        if _label(r) == name:
            bases.setdefault((r.get("runtime"), r.get("quantization")), ips_of(r))
    rows = []
    for r in results:
        base = bases.get((r.get("runtime"), r.get("quantization")))
        tp = r.get("throughput") or {}
        lat = r.get("latency") or {}
        m = r.get("model") or {}
        ips = tp.get("best_images_per_s")
        rows.append({
            "model": f"{_label(r)} {tag(r)}", "latency_s": _f(lat["mean"] / 1000, 4) if lat.get("mean")
            else None, "throughput": _f(ips, 1), "best_batch": tp.get("best_batch"),
            "b1_ips": _f(tp.get("batch1_images_per_s"), 1),
            "params": f"{m['params'] / 1e6:.3f}M" if m.get("params") else None,
            "macs": f"{m['macs'] / 1e9:.3f}G" if m.get("macs") else None,
            "gflops": _f(tp.get("best_gflops"), 2),
            "ratio": f"{ips / base:.2f}x" if ips and base else None})
    return rows


def compare_table(results: list[dict], baseline: str | None = None, markdown: bool = False
                  ) -> str:
    rows = compare_rows(results, baseline)
    head = [f"Device: {lab}" for lab in device_labels(results)]
    body = markdown_table(rows, COMPARE_COLUMNS) if markdown else text_table(rows, COMPARE_COLUMNS)
    sep = "\n\n" if markdown else "\n"
    return sep.join(head) + sep + body


def write_outputs(results: list[dict], out: str | os.PathLike, *, plots: bool = True,
                  baseline: str | None = None) -> list[Path]:
    """``results.json``, ``trials.csv``, ``results.md``, ``compare.md`` and the PNG plots."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("results.json", json.dumps({"schema": SCHEMA, "results": results},
                                                   indent=1)),
                       ("trials.csv", to_csv(results)), ("results.md", to_markdown(results)),
                       ("compare.md", compare_table(results, baseline, markdown=True) + "\n")):
        atomic_write_bytes(out / name, text.encode())
        written.append(out / name)
    if plots:
        from hmff_edge.bench import plots as png

        if png.available():
            written.append(png.throughput_vs_batch(results, out / "throughput_vs_batch.png"))
            written.append(png.latency_distribution(results, out / "latency_distribution.png"))
        else:
            print("note: matplotlib is not installed, so no PNG plots were written "
                  "(pip install matplotlib)", file=sys.stderr)
    return written


def load_results(path: str | os.PathLike) -> list[dict]:
    """Results from a ``results.json`` written by :func:`write_outputs` (or ``--json``)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read bench results {str(path)!r}: {exc}") from exc
    if isinstance(data, dict) and data.get("schema") == SCHEMA:
        return data["results"]
    if isinstance(data, list) and all(isinstance(r, dict) and r.get("schema") == SCHEMA
                                      for r in data):
        return data
    raise ArtifactError(f"{str(path)!r} is not a bench result (schema {SCHEMA!r})")
