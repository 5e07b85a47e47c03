"""How far int8 can go in each graph on this CPU: every variant's fp32 and int8 LiteRT file, and
the same files with their depthwise convolutions, their activations, or both taken out
(hmff_edge.bench.ablation), all timed round-robin in one process.

    python bench/int8_headroom.py [--variants mobilenet-v1,hmff-mobilenet-16ch,...]
                                  [--rounds 40] [--runs 5] [--out bench/results/int8/headroom_<cpu>]

The target column is issue 15's: a variant's int8 speed-up over its own fp32 at least 80% of
the baseline's (mobilenet-v1) in the same run. "int8 ms needed" is the int8 time that meets it;
the ablated columns show whether it is within reach even if those ops cost nothing. Exports
(random weights, 224 px, 10 classes) are cached in bench/.cache like bench/publish.py's.
Writes OUT.json and OUT.md.
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
BASELINE = "mobilenet-v1"
VARIANTS = ("mobilenet-v1", "hmff-mobilenet-16ch", "hmff-mobilenet-128ch",
            "hmff-mobilenet-16ch-hs", "hmff-mobilenet-128ch-hs", "hmff-mobilenet-16ch-relu6")
SHARE = 0.8  # of the baseline's int8 speed-up


def files(variants, cache: Path, img: int) -> dict[tuple[str, str], str]:
    from hmff_edge.bench.models import export_variant, find_export

    out = {}
    for v in variants:
        folder = cache / f"{v}-{img}px-10c"
        missing = [f"litert:{q}" for q in ("fp32", "int8") if find_export(folder, "litert", q) is None]
        if missing:
            print(f"exporting {v} ({', '.join(missing)})...", file=sys.stderr, flush=True)
            export_variant(v, folder, img_size=img, classes=10, targets=missing)
        for q in ("fp32", "int8"):
            out[(v, q)] = str(find_export(folder, "litert", q))
    return out


def graphs(paths: dict[tuple[str, str], str]) -> tuple[dict[str, bytes], dict[str, dict]]:
    """The files and their ablations, keyed "variant quant[ -set]"; what each one dropped."""
    from hmff_edge.bench.ablation import OP_SETS, ablate

    contents, dropped = {}, {}
    for (v, q), path in paths.items():
        contents[f"{v} {q}"] = Path(path).read_bytes()
        for name, ops in OP_SETS.items():
            ab = ablate(path, ops)
            if sum(ab.dropped.values()):
                contents[f"{v} {q} -{name}"] = ab.content
                dropped[f"{v} {q} -{name}"] = dict(ab.dropped)
    return contents, dropped


def rows(paths, med: dict[str, float], dropped: dict[str, dict]) -> tuple[list, list]:
    """Per graph: its time and its ablations' times. Per int8 variant: the target, and the
    time split into what the ablation takes out (depthwise + activations) and the rest, each
    with its int8 gain over fp32."""
    from hmff_edge.bench.ablation import OP_SETS

    per_graph, target = [], []
    both = "depthwise+activations"
    base = _split(med, BASELINE)
    for v, q in paths:
        key = f"{v} {q}"
        r = {"graph": key, "ms": med[key]}
        for name in OP_SETS:
            k = f"{key} -{name}"
            r[name] = med.get(k)
            r[f"{name}_dropped"] = sum(dropped.get(k, {}).values())
        per_graph.append(r)
        if q != "int8" or v == BASELINE:
            continue
        s = _split(med, v)
        need = s["fp32"] / (SHARE * base["gain"])
        # The best int8 time if the rest ran int8 as well as the baseline's rest (its dense
        # convolutions) and the taken-out ops kept their measured int8 cost.
        best = s["out8"] + s["rest32"] / base["rest_gain"]
        target.append({"variant": v, "fp32_ms": s["fp32"], "int8_ms": s["int8"],
                       "gain": s["gain"], "target_gain": SHARE * base["gain"], "need_ms": need,
                       "met": s["int8"] <= need, "out32": s["out32"], "out8": s["out8"],
                       "out_gain": s["out32"] / s["out8"] if s["out8"] > 0 else None,
                       "rest32": s["rest32"], "rest8": s["rest8"],
                       "rest_gain": s["rest_gain"],
                       "rest_gain_needed": (s["rest32"] / (need - s["out8"])
                                            if need > s["out8"] else None),
                       "base_rest_gain": base["rest_gain"], "best_ms": best,
                       "best_gain": s["fp32"] / best, "both_free_int8_ms": med.get(f"{key} -{both}")})
    return per_graph, target


def _split(med: dict[str, float], v: str) -> dict[str, float]:
    """fp32 / int8 time of ``v`` split into the ops taken out (out) and the rest."""
    both = "depthwise+activations"
    fp32, int8 = med[f"{v} fp32"], med[f"{v} int8"]
    rest32 = med.get(f"{v} fp32 -{both}", fp32)
    rest8 = med.get(f"{v} int8 -{both}", int8)
    return {"fp32": fp32, "int8": int8, "gain": fp32 / int8, "rest32": rest32, "rest8": rest8,
            "rest_gain": rest32 / rest8, "out32": fp32 - rest32, "out8": int8 - rest8}


GRAPH_COLUMNS = [("graph", "graph"), ("ms", "ms"), ("depthwise", "depthwise free ms"),
                 ("activations", "activations free ms"),
                 ("depthwise+activations", "both free ms"), ("dropped", "ops taken out (dw / act)")]
TARGET_COLUMNS = [("variant", "variant"), ("fp32_ms", "fp32 ms"), ("int8_ms", "int8 ms"),
                  ("gain", "int8 vs own fp32"), ("target_gain", "target"),
                  ("need_ms", "int8 ms needed"), ("met", "met")]
SPLIT_COLUMNS = [("variant", "variant"), ("out", "dw + act: fp32 -> int8 ms"),
                 ("out_gain", "their gain"), ("rest", "rest: fp32 -> int8 ms"),
                 ("rest_gain", "rest gain"), ("rest_gain_needed", "rest gain the target needs"),
                 ("base_rest_gain", "baseline's rest gain"),
                 ("best_ms", "int8 ms at the baseline's rest gain"), ("best_gain", "vs fp32 then")]


def _f(x, fmt="{:.3f}"):
    return "-" if x is None else fmt.format(x)


def markdown(rec: dict) -> str:
    x = "{:.2f}x"
    g = [{**r, "ms": _f(r["ms"]), **{k: _f(r[k]) for k in ("depthwise", "activations",
                                                           "depthwise+activations")},
          "dropped": f"{r['depthwise_dropped']} / {r['activations_dropped']}"}
         for r in rec["graphs"]]
    t = [{**r, **{k: _f(r[k]) for k in ("fp32_ms", "int8_ms", "need_ms")},
          **{k: _f(r[k], x) for k in ("gain", "target_gain")},
          "met": "yes" if r["met"] else "no"} for r in rec["target"]]
    sp = [{"variant": r["variant"], "out": f"{r['out32']:.3f} -> {r['out8']:.3f}",
           "rest": f"{r['rest32']:.3f} -> {r['rest8']:.3f}", "best_ms": _f(r["best_ms"]),
           **{k: _f(r[k], x) for k in ("out_gain", "rest_gain", "rest_gain_needed",
                                       "base_rest_gain", "best_gain")}} for r in rec["target"]]
    return "\n".join([
        "# int8 headroom: each graph with its depthwise convolutions and activations taken out "
        "(LiteRT XNNPACK, 1 thread, batch 1, 224 px)", "",
        f"CPU: {rec['cpu_model']}, SIMD: {', '.join(rec['simd'])}. {rec['date']}. "
        f"{rec['rounds']} round-robin rounds x {rec['runs']} invokes per graph, one process; "
        f"medians. Versions: {rec['versions']}. Command: `{rec['command']}`", "",
        "'free' = the same file with those ops removed and their readers rewired to their "
        "input (hmff_edge.bench.ablation): the graph's time if they cost nothing. Only "
        "shape-preserving ops can go (stride-1 depthwise, activations), so stride-2 and "
        "shared-input depthwise layers stay in.", "",
        markdown_table(g, GRAPH_COLUMNS), "",
        f"## Target: int8 vs own fp32 at least {SHARE:.0%} of {BASELINE}'s "
        f"({rec['baseline_gain']:.2f}x in this run)", "",
        markdown_table(t, TARGET_COLUMNS), "",
        "## Where the gain is lost", "",
        "Each graph's time split into the ops the 'both free' ablation takes out (dw + act: "
        "the graph minus its ablation) and the rest (convolutions, stride-2 and shared-input "
        "depthwise, adds, transposes, pooling). 'rest gain the target needs' assumes dw + act "
        f"keep their int8 cost; '-' = they alone exceed the time the target allows. The "
        f"baseline's rest gain is {BASELINE}'s (its dense pointwise convolutions).", "",
        markdown_table(sp, SPLIT_COLUMNS), ""] + _k_section(rec.get("k_scan") or []))


def _k_section(scan: list[dict]) -> list[str]:
    if not scan:
        return []
    rows_ = [{**r, "layer": f"56x56x{r['cin']} -> 128, {r['groups']} group(s)",
              **{k: _f(r[k], "{:.4f}") for k in ("fp32_ms", "int8_ms")},
              "gain": _f(r["gain"], "{:.2f}x"), "int8_ns_per_output": _f(r["int8_ns_per_output"]),
              "int8_gmacs": _f(r["int8_gmacs"], "{:.1f}")} for r in scan]
    return ["## What a group's width leaves of int8's gain", "",
            "One 1x1 convolution (56x56, 128 outputs, one-layer files from "
            "hmff_edge.convert.forms.one_layer_tflite, same rounds): every int8 output pays a "
            "requantization whatever K is, so with few inputs per output int8 buys less.", "",
            markdown_table(rows_, K_COLUMNS), ""]


def medians(models: dict[str, bytes], rounds: int, runs: int) -> dict[str, float]:
    """Median invoke time (ms) of each model, all timed round-robin in one process."""
    from hmff_edge.bench.runner import round_robin_ms

    return {k: statistics.median(t for r in v for t in r)
            for k, v in round_robin_ms(models, rounds, runs).items()}


K_SCAN = ((128, 8), (128, 4), (128, 2), (128, 1), (256, 1), (512, 1))  # (Cin, groups), 128 out


def k_scan(rounds: int, runs: int) -> list[dict]:
    """fp32 and int8 time of one 56x56 1x1 convolution to 128 channels as K (input channels
    per output: per group) grows, timed round-robin: what a grouped layer's K leaves of
    int8's gain."""
    from hmff_edge.convert.forms import GroupedForm, LayerKey, one_layer_tflite

    contents = {(q, cin, g): one_layer_tflite(LayerKey(56, 56, cin, 128, g, False, q),
                                              GroupedForm(g))
                for q in ("fp32", "int8") for cin, g in K_SCAN}
    med = medians({f"{q} {c} {g}": b for (q, c, g), b in contents.items()}, rounds, runs)
    outputs = 56 * 56 * 128
    out = []
    for cin, g in K_SCAN:
        fp32, int8 = med[f"fp32 {cin} {g}"], med[f"int8 {cin} {g}"]
        out.append({"k": cin // g, "cin": cin, "groups": g, "fp32_ms": fp32, "int8_ms": int8,
                    "gain": fp32 / int8, "int8_ns_per_output": int8 * 1e6 / outputs,
                    "int8_gmacs": outputs * (cin // g) / int8 / 1e6})
    return out


K_COLUMNS = [("k", "K (inputs per output)"), ("layer", "layer"), ("fp32_ms", "fp32 ms"),
             ("int8_ms", "int8 ms"), ("gain", "int8 vs fp32"),
             ("int8_ns_per_output", "int8 ns per output"), ("int8_gmacs", "int8 GMAC/s")]


def main() -> int:
    from hmff_edge.bench.runner import hardware_info
    from hmff_edge.convert.forms import device_kind, simd_flags

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--cache", default=str(REPO / "bench" / ".cache"))
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-k-scan", action="store_true", help="skip the 1x1 K scan (needs TF)")
    ap.add_argument("--out", default=None, help="default: bench/results/int8/headroom_<cpu kind>")
    a = ap.parse_args()
    variants = [v for v in a.variants.split(",") if v]
    if BASELINE not in variants:
        ap.error(f"--variants must include the baseline {BASELINE}")
    paths = files(variants, Path(a.cache), a.img_size)
    contents, dropped = graphs(paths)
    print(f"timing {len(contents)} graphs x {a.rounds} rounds...", file=sys.stderr, flush=True)
    med = medians(contents, a.rounds, a.runs)
    per_graph, target = rows(paths, med, dropped)
    scan = [] if a.no_k_scan else k_scan(a.rounds, a.runs)
    hw = hardware_info()
    rec = {"date": time.strftime("%Y-%m-%d", time.gmtime()), "cpu_model": hw["cpu_model"],
           "simd": simd_flags(), "versions": _versions(), "rounds": a.rounds, "runs": a.runs,
           "command": "python bench/int8_headroom.py " + " ".join(sys.argv[1:]),
           "baseline_gain": med[f"{BASELINE} fp32"] / med[f"{BASELINE} int8"],
           "dropped": dropped, "graphs": per_graph, "target": target, "k_scan": scan,
           "files": {f"{v} {q}": p for (v, q), p in paths.items()}}
    out = Path(a.out) if a.out else REPO / "bench" / "results" / "int8" / f"headroom_{device_kind()}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rec, indent=1))
    out.with_suffix(".md").write_text(markdown(rec))
    print(out.with_suffix(".md").read_text())
    return 0


def _versions() -> str:
    from importlib.metadata import version

    return f"ai-edge-litert {version('ai-edge-litert')}"


if __name__ == "__main__":
    sys.exit(main())
