"""Where int8 time goes: summarize per-op profiles (hmff_edge.bench.opprofile JSON) of fp32 and
int8 graphs side by side, per op type and per layer, with the elementwise share.

    python -m hmff_edge.bench.opprofile MODEL.tflite [--in-graph] --runs 15 > PROFILE.json
    python bench/int8_profile.py NAME=PROFILE.json ... --out bench/results/int8/profile_<cpu>

NAME is "variant quant" (e.g. "hmff-mobilenet-16ch int8"). Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hmff_edge.tables import markdown_table

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    from hmff_edge.bench.runner import hardware_info
    from hmff_edge.convert.forms import simd_flags

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("profiles", nargs="+", help="NAME=PROFILE.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--top", type=int, default=8, help="slowest layers listed per graph")
    ap.add_argument("--note", default="")
    a = ap.parse_args()
    profs = {}
    for item in a.profiles:
        name, _, path = item.partition("=")
        profs[name] = json.loads(Path(path).read_text())
    hw = hardware_info()
    rec = {"date": time.strftime("%Y-%m-%d", time.gmtime()), "cpu_model": hw["cpu_model"],
           "simd": simd_flags(), "note": a.note,
           "command": f"python -m hmff_edge.bench.opprofile MODEL.tflite{_flag(profs)} --runs 15 "
                      "(each graph); python bench/int8_profile.py " + " ".join(sys.argv[1:]),
           "profiles": {k: {x: v.get(x) for x in ("model", "whole_model_ms", "sum_of_ops_ms",
                                                   "op_count", "by_type", "elementwise_share",
                                                   "method")} | {"ops": v["ops"]}
                        for k, v in profs.items()}}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rec, indent=1))
    out.with_suffix(".md").write_text(markdown(rec, a.top))
    print(out.with_suffix(".md").read_text())
    return 0


def markdown(rec: dict, top: int) -> str:
    lines = ["# Where int8 time goes (LiteRT 2.3, XNNPACK, 1 thread, 224 px, batch 1)", "",
             f"CPU: {rec['cpu_model']}, SIMD: {', '.join(rec['simd'])}. Measured {rec['date']}. "
             f"{rec['note']}", "", f"Command: `{rec['command']}`", "",
             IN_GRAPH_NOTE if _in_graph(rec["profiles"]) else SINGLE_OP_NOTE, "",
             markdown_table([_type_row(name, p) for name, p in rec["profiles"].items()],
                            TYPE_COLUMNS)]
    for name, p in rec["profiles"].items():
        slowest = sorted(p["ops"], key=lambda o: -(o["ms"] or 0))[:top]
        lines += ["", f"## {name}: slowest {top} ops", "",
                  markdown_table([{**o, "ms": f"{(o['ms'] or 0):.3f}",
                                   "input_shapes": o.get("input_shapes", "")} for o in slowest],
                                 OP_COLUMNS)]
    return "\n".join(lines) + "\n"


SINGLE_OP_NOTE = ("Each op is cut out into a single-op model and timed alone (fastest of 15), so "
                  "the per-op sum exceeds the whole model (per-invoke overhead) and ops the "
                  "delegate fuses in the whole graph are counted apart: read shares, not sums.")
IN_GRAPH_NOTE = ("Each op's in-graph cost is the time the graph's first k ops take minus the first "
                 "k-1 (prefix models timed round-robin, fastest round): costs sum to the whole "
                 "model, but each is a difference of two noisy times, so read sums over many ops "
                 "(per type), not single layers.")


def _in_graph(profs: dict) -> bool:
    kinds = {str(p.get("method", "")).startswith("in-graph") for p in profs.values()}
    if len(kinds) > 1:
        raise SystemExit("mixing single-op and --in-graph profiles in one record: their "
                         "figures do not compare")
    return kinds == {True}


def _flag(profs: dict) -> str:
    return " --in-graph" if _in_graph(profs) else ""


NAMED = ("CONV_2D", "DEPTHWISE_CONV_2D", "LOGISTIC", "MUL", "ADD", "TRANSPOSE")
TYPE_COLUMNS = [("graph", "graph"), ("whole", "whole model ms"), ("sum", "sum of ops ms"),
                *((k, "DEPTHWISE" if k == "DEPTHWISE_CONV_2D" else k) for k in NAMED),
                ("other", "other"), ("share", "elementwise share")]
OP_COLUMNS = [("index", "#"), ("op", "op"), ("ms", "ms"), ("input_shapes", "input shapes"),
              ("output_shape", "output")]


def _type_row(name: str, p: dict) -> dict:
    t = {r["op"]: r["ms"] for r in p["by_type"]}
    other = sum(v for k, v in t.items() if k not in NAMED)
    return {"graph": name, "whole": f"{p['whole_model_ms']:.2f}", "sum": f"{p['sum_of_ops_ms']:.2f}",
            **{k: f"{t.get(k, 0):.3f}" for k in NAMED}, "other": f"{other:.3f}",
            "share": f"{100 * (p['elementwise_share'] or 0):.1f}%"}


if __name__ == "__main__":
    sys.exit(main())
