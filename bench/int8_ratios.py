"""int8 vs fp32 ratios of LiteRT files measured side by side in ONE process, round-robin:
every file invoked in turn, round after round, so other jobs on a shared CPU hit them alike.

    python bench/int8_ratios.py NAME=FILE.tflite ... [--rounds 30] [--runs 5] --out OUT

Reports the median and the fastest invoke per file, the roofline of each (lower bound and
achieved share, hmff_edge.bench.roofline) and writes OUT.json / OUT.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from hmff_edge.tables import markdown_table

REPO = Path(__file__).resolve().parents[1]
COLUMNS = [("graph", "graph"), ("median_ms", "median ms"), ("min_ms", "fastest ms"),
           ("macs", "MACs"), ("lower_bound_ms", "lower bound ms"),
           ("median_share", "achieved (median)"), ("min_share", "achieved (fastest)")]


def table_rows(rows: dict[str, dict]) -> list[dict]:
    return [{"graph": n, "median_ms": f"{r['median_ms']:.3f}", "min_ms": f"{r['min_ms']:.3f}",
             "macs": f"{r['macs'] / 1e6:.1f}M", "lower_bound_ms": f"{r['lower_bound_ms']:.3f}",
             "median_share": f"{100 * r['achieved_share_median']:.1f}%",
             "min_share": f"{100 * r['achieved_share_min']:.1f}%"} for n, r in rows.items()]


def main() -> int:
    from hmff_edge.bench import roofline as R
    from hmff_edge.bench.runner import hardware_info, round_robin_ms
    from hmff_edge.convert.forms import simd_flags

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+", help="NAME=FILE.tflite")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    files = dict(item.partition("=")[::2] for item in a.files)
    # One warm-up invoke per file, as this record was always measured.
    samples = {n: [t for r in rounds for t in r]
               for n, rounds in round_robin_ms(files, a.rounds, a.runs, warmup=1).items()}
    machine = R.measure_machine()
    rows = {}
    for n, path in files.items():
        med, fast = statistics.median(samples[n]), min(samples[n])
        rl = R.roofline(R.graph_cost(path), machine, med, name=n)
        rows[n] = {"file": path, "median_ms": med, "min_ms": fast,
                   "lower_bound_ms": rl.lower_bound_ms, "achieved_share_median": rl.achieved_share,
                   "achieved_share_min": rl.lower_bound_ms / fast, "macs": rl.macs,
                   "bytes": rl.bytes}
    hw = hardware_info()
    rec = {"date": time.strftime("%Y-%m-%d", time.gmtime()), "cpu_model": hw["cpu_model"],
           "simd": simd_flags(), "command": "python bench/int8_ratios.py " + " ".join(sys.argv[1:]),
           "rounds": a.rounds, "runs": a.runs, "machine": machine.__dict__, "rows": rows}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rec, indent=1))
    lines = ["# LiteRT int8 / fp32, one process, round-robin (1 thread, batch 1, 224 px)", "",
             f"CPU: {rec['cpu_model']}, SIMD: {', '.join(rec['simd'])}. {rec['date']}. "
             f"{a.rounds} rounds x {a.runs} invokes per file. Command: `{rec['command']}`", "",
             markdown_table(table_rows(rows), COLUMNS)]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
