"""Make the published figures for this machine in one run.

    .venv/bin/python bench/publish.py [--runs 30] [--rounds 3] [--out bench/results/NAME]

Exports (random weights, 224x224, 10 classes; cached in bench/.cache) and measures, with the
bench's own child-process runner, LiteRT fp32 / ONNX Runtime fp32 / LiteRT int8 / ONNX
Runtime int8, 1 thread, batch 1, for mobilenet-v1, kmobilenet-{16,128}ch,
hmff-mobilenet-{16,32,64,128}ch and the -hs / -relu6 variants. Models are measured in
interleaved rounds (every model once per round) so that the noise of a shared machine hits
them alike; img/s = 1000 / median latency. Adds one core's fp32 peak (numpy sgemm, 1
thread), GFLOP/s = 2 x MACs x img/s, the fp32 and int8 ratios the issues target, a roofline
per LiteRT model (hmff_edge.bench.roofline), whether each ONNX int8 graph runs integer
kernels in ONNX Runtime (hmff_edge.bench.onnx_int8), and per-op profiles of fp32 and int8
graphs (hmff_edge.bench.opprofile). Results go to bench/results/<cpu kind>-litert-1thread-
<size>px/ (the CPU kind from hmff_edge.convert.forms.device_kind), and
bench/results/published.md indexes the newest table of every CPU kind with its date.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from hmff_edge.bench import runner
from hmff_edge.bench.models import INFO_NAME, drop_stale_export, export_variant, find_export
from hmff_edge.bench.report import write_outputs
from hmff_edge.tables import markdown_table

REPO = Path(__file__).resolve().parents[1]

VARIANTS = ["mobilenet-v1", "kmobilenet-16ch", "kmobilenet-128ch", "hmff-mobilenet-16ch",
            "hmff-mobilenet-32ch", "hmff-mobilenet-64ch", "hmff-mobilenet-128ch",
            "hmff-mobilenet-16ch-hs", "hmff-mobilenet-128ch-hs", "hmff-mobilenet-16ch-relu6",
            "hmff-mobilenet-128ch-relu6"]
FORMATS = [("litert", "fp32"), ("onnxruntime", "fp32"), ("litert", "int8"),
           ("onnxruntime", "int8")]
PROFILED = [("hmff-mobilenet-16ch", "fp32"), ("hmff-mobilenet-16ch", "int8"),
            ("hmff-mobilenet-128ch", "fp32"), ("hmff-mobilenet-128ch", "int8"),
            ("hmff-mobilenet-16ch-hs", "fp32"), ("hmff-mobilenet-16ch-hs", "int8"),
            ("mobilenet-v1", "fp32"), ("mobilenet-v1", "int8")]
# issue 15: int8 of every hmff variant >= 1.0x mobilenet-v1 int8 (16ch, 128ch), and its int8
# speed-up over its own fp32 >= 80% of mobilenet-v1's on the same CPU
INT8_VS_MOBILENET = ["hmff-mobilenet-16ch", "hmff-mobilenet-128ch"]
INT8_SPEEDUP_SHARE = 0.8
TARGETS = [("hmff-mobilenet-128ch", "mobilenet-v1", 1.25), ("hmff-mobilenet-16ch",
                                                            "mobilenet-v1", 2.2),
           ("hmff-mobilenet-128ch", "kmobilenet-128ch", 1.0),
           ("hmff-mobilenet-16ch", "kmobilenet-16ch", 1.0),
           ("hmff-mobilenet-128ch-hs", "mobilenet-v1", 1.4),
           ("hmff-mobilenet-16ch-hs", "mobilenet-v1", 3.0)]
SGEMM = ("import os, time, numpy as np\n"
         "n = 1024; a = np.random.rand(n, n).astype(np.float32); b = a.copy()\n"
         "a @ b; best = 1e9\n"
         "for _ in range(40):\n"
         "    t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)\n"
         "print(2 * n ** 3 / best / 1e9)\n")


def sgemm_peak() -> float:
    """One core's fp32 GFLOP/s from a 1024^3 numpy sgemm on 1 thread (best of 40)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", SGEMM], capture_output=True, text=True,
                         env=env, check=True)
    return float(out.stdout.strip())


def export_all(variants, cache: Path, img: int, jobs: int) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    def one(v):
        folder = cache / f"{v}-{img}px-10c"
        drop_stale_export(folder)
        missing = [f"{r}:{q}" for r, q in FORMATS if find_export(folder, r, q) is None]
        if not missing:
            return v, None
        try:
            export_variant(v, folder, img_size=img, classes=10, targets=missing)
            return v, None
        except Exception as exc:  # noqa: BLE001 - reported, the others go on
            return v, str(exc)[-800:]

    with ThreadPoolExecutor(jobs) as ex:
        return {v: err for v, err in ex.map(one, variants)}


def measure(entries, runs: int, rounds: int) -> dict:
    """Interleaved rounds of batch-1 trials; every trial in its own child process."""
    got: dict = {}
    for r in range(rounds):
        for key, path, runtime in entries:
            # As a dict: the rounds are merged into it and it is written as results.json.
            res = runner.sweep_model(runner.SweepSpec(model=path, runtime=runtime, threads=1,
                                                      batch_sizes=[1], max_batch=1, runs=runs,
                                                      warmup=5)).to_dict()
            print(f"round {r + 1}/{rounds} {key[0]:<24} {key[1]}-{key[2]}: "
                  f"{(res['latency'] or {}).get('p50', float('nan')):.2f} ms",
                  file=sys.stderr, flush=True)
            if key not in got:
                got[key] = res
                got[key]["rounds"] = []
            else:
                got[key]["samples_ms"] = (got[key]["samples_ms"] or []) + (
                    res["samples_ms"] or [])
            got[key]["rounds"].append((res["latency"] or {}).get("p50"))
    for res in got.values():
        samples = res.get("samples_ms") or []
        res["latency"] = runner.latency_stats([s / 1000 for s in samples])
        p50 = res["latency"].get("p50")
        ips = 1000.0 / p50 if p50 else None
        res["throughput"].update(batch1_images_per_s=ips, best_images_per_s=ips,
                                 best_batch=1 if ips else None)
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2, help="parallel exports")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--cache", default=str(REPO / "bench" / ".cache"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-profile", action="store_true")
    a = ap.parse_args()
    t0 = time.time()
    load0 = os.getloadavg()[0]
    variants = [v for v in a.variants.split(",") if v]
    from hmff_edge.convert.forms import device_kind, simd_flags

    out = Path(a.out or REPO / "bench" / "results"
               / f"{device_kind()}-litert-1thread-{a.img_size}px")
    command = shlex.join(["python", "bench/publish.py"] + sys.argv[1:])
    print("exporting (cached in bench/.cache)...", file=sys.stderr, flush=True)
    failures = {v: e for v, e in export_all(variants, Path(a.cache), a.img_size,
                                            a.jobs).items() if e}
    for v, e in failures.items():
        print(f"export of {v} failed: {e}", file=sys.stderr)
    peak = sgemm_peak()
    entries, infos = [], {}
    for v in variants:
        folder = Path(a.cache) / f"{v}-{a.img_size}px-10c"
        info_p = folder / INFO_NAME
        infos[v] = json.loads(info_p.read_text()) if info_p.is_file() else {}
        for rt, q in FORMATS:
            p = find_export(folder, rt, q)
            if p is not None:
                entries.append(((v, rt, q), str(p), rt))
    got = measure(entries, a.runs, a.rounds)
    results = []
    hw = runner.hardware_info()
    for (v, rt, q), res in got.items():
        info = infos.get(v, {})
        tp = res["throughput"]
        macs = info.get("macs")
        tp["batch1_gflops"] = tp["best_gflops"] = (
            2 * macs * tp["best_images_per_s"] / 1e9 if macs and tp["best_images_per_s"]
            else None)
        res.update(model={"name": v, "path": res["model_file"]["path"], "variant": v,
                          "format": "tflite" if rt == "litert" else "onnx",
                          "quantization": q, "img_size": a.img_size,
                          "params": info.get("params"), "macs": macs,
                          "exported_by": info.get("exporter")},
                   quantization=q, command=command,
                   device={"name": "cpu", "profile": "cpu", "emulation": False, "host": None,
                           "label": f"cpu: {hw['cpu_model']}, 1 thread"})
        results.append(res)
    from hmff_edge.bench import roofline

    machine = roofline.attach(results)
    profiles = {} if a.no_profile else op_profiles(variants, Path(a.cache), a.img_size)
    out.mkdir(parents=True, exist_ok=True)
    write_outputs(results, out, baseline="mobilenet-v1")
    summary = summarize(results, peak, profiles, failures)
    summary.update(command=command, hardware={**hw, "simd": simd_flags()},
                   date=time.strftime("%Y-%m-%d", time.gmtime()),
                   seconds=round(time.time() - t0, 1),
                   loadavg=f"{load0:.1f}/{os.getloadavg()[0]:.1f}",
                   versions=results[0]["versions"] if results else {},
                   machine=None if machine is None else machine.__dict__,
                   onnx_int8_kernels=onnx_integer_checks(variants, Path(a.cache), a.img_size))
    (out / "published.json").write_text(json.dumps(summary, indent=1))
    (out / "published.md").write_text(markdown(summary))
    bar_chart(summary, out / "throughput_by_variant.png")
    write_index(out.parent)
    print((out / "published.md").read_text())
    print(f"wrote {out} in {time.time() - t0:.0f} s", file=sys.stderr)
    return 0


def op_profiles(variants, cache: Path, img: int) -> dict:
    """Per-op profiles (hmff_edge.bench.opprofile) of the PROFILED graphs, each in a child."""
    profiles = {}
    for v, q in [(v, q) for v, q in PROFILED if v in variants]:
        p = find_export(cache / f"{v}-{img}px-10c", "litert", q)
        if p is None:
            continue
        proc = subprocess.run([sys.executable, "-m", "hmff_edge.bench.opprofile", str(p),
                               "--runs", "15"], capture_output=True, text=True, cwd=REPO)
        profiles[f"{v} {q}"] = (json.loads(proc.stdout) if proc.returncode == 0
                                else {"error": proc.stderr[-500:]})
    return profiles


def onnx_integer_checks(variants, cache: Path, img: int) -> dict:
    """Whether ONNX Runtime runs each ONNX int8 graph on integer kernels."""
    from hmff_edge.bench.onnx_int8 import check

    got = {}
    for v in variants:
        p = find_export(cache / f"{v}-{img}px-10c", "onnxruntime", "int8")
        if p is not None:
            c = check(p)
            got[v] = {"integer": c.integer, "integer_mac_nodes": c.integer_mac_nodes,
                      "float_mac_nodes": c.float_mac_nodes}
    return got


def write_index(results_dir: Path) -> None:
    """bench/results/published.md: the newest table of every CPU kind, with its date."""
    rows = []
    for pj in sorted(results_dir.glob("*/published.json")):
        s = json.loads(pj.read_text())
        hw = s.get("hardware", {})
        rows.append({"table": f"[{pj.parent.name}]({pj.parent.name}/published.md)",
                     "cpu": hw.get("cpu_model"),
                     "simd": ", ".join(hw.get("simd") or []) or "not recorded",
                     "date": s.get("date") or _git_date(pj), "command": f"`{s.get('command')}`"})
    columns = [("table", "table"), ("cpu", "CPU"), ("simd", "SIMD"), ("date", "measured"),
               ("command", "command")]
    (results_dir / "published.md").write_text(
        "# Published benchmark tables, one per CPU kind\n\n"
        "int8 speed depends on the CPU's SIMD features (VNNI or not), so each CPU kind keeps "
        "its own table from its newest measurement; compare models within one table.\n\n"
        + markdown_table(rows, columns) + "\n")


def _git_date(path: Path) -> str:
    proc = subprocess.run(["git", "log", "-1", "--format=%cs", "--", str(path)],
                          capture_output=True, text=True, cwd=REPO)
    return proc.stdout.strip() or "unknown"


def summarize(results, peak, profiles, failures) -> dict:
    table: dict = {}
    for r in results:
        key = f"{r['runtime']}-{r['quantization']}"
        m = r["model"]
        tp = r["throughput"]
        table.setdefault(m["name"], {"params": m.get("params"), "macs": m.get("macs")})[key] = {
            "p50_ms": r["latency"].get("p50"), "mean_ms": r["latency"].get("mean"),
            "p90_ms": r["latency"].get("p90"), "p99_ms": r["latency"].get("p99"),
            "min_ms": r["latency"].get("min"),
            "images_per_s": tp["best_images_per_s"], "gflops": tp["best_gflops"],
            "share_of_peak": tp["best_gflops"] / peak if tp["best_gflops"] else None,
            "round_p50s": r.get("rounds"), "roofline": r.get("roofline")}
    ratios = {}
    for key in ("litert-fp32", "onnxruntime-fp32", "litert-int8", "onnxruntime-int8"):
        base = (table.get("mobilenet-v1", {}).get(key) or {}).get("images_per_s")
        for name, row in table.items():
            ips = (row.get(key) or {}).get("images_per_s")
            if not ips:
                continue
            ch = name.split("-")[-1] if "ch" in name.split("-")[-1] else None
            k_ips = (table.get(f"kmobilenet-{ch}", {}).get(key) or {}).get("images_per_s") \
                if ch and name.startswith("hmff") else None
            bmin = (table.get("mobilenet-v1", {}).get(key) or {}).get("min_ms")
            mine = (row.get(key) or {}).get("min_ms")
            ratios.setdefault(name, {})[key] = {
                "vs_mobilenet_v1": ips / base if base else None,
                "vs_same_ch_kmobilenet": ips / k_ips if k_ips else None,
                # the same ratio from the fastest run of each: less sensitive to other jobs
                "vs_mobilenet_v1_from_min": bmin / mine if bmin and mine else None}
    targets = []
    for model, ref, need in TARGETS:
        a = table.get(model, {}).get("litert-fp32") or {}
        b = table.get(ref, {}).get("litert-fp32") or {}
        got = a["images_per_s"] / b["images_per_s"] if a.get("images_per_s") and \
            b.get("images_per_s") else None
        from_min = b["min_ms"] / a["min_ms"] if a.get("min_ms") and b.get("min_ms") else None
        targets.append({"model": model, "vs": ref, "target": need, "measured": got,
                        "measured_from_min": from_min,
                        "met": None if got is None else got >= need})
    return {"peak_gflops_1core_fp32": peak, "table": table, "ratios": ratios,
            "targets": targets, "int8_targets": int8_targets(table),
            "op_profiles": {k: _short(v) for k, v in profiles.items()},
            "export_failures": failures,
            "method": "LiteRT (XNNPACK) / onnxruntime CPU provider, 1 thread, batch 1, random "
                      "weights, img/s = 1000 / median latency over all rounds x runs; each "
                      "trial in its own process; models interleaved round by round"}


def int8_targets(table: dict) -> list[dict]:
    """Issue 15's int8 targets, as ratios within this run (median img/s)."""
    def ips(name, key):
        return ((table.get(name) or {}).get(key) or {}).get("images_per_s")

    def fast(name, key):  # images/s of the fastest run: less sensitive to other jobs
        ms = ((table.get(name) or {}).get(key) or {}).get("min_ms")
        return 1000.0 / ms if ms else None

    base_i8, base_f = ips("mobilenet-v1", "litert-int8"), ips("mobilenet-v1", "litert-fp32")
    if not (base_i8 and base_f):
        return []
    base_speedup = base_i8 / base_f
    fast_speedup = fast("mobilenet-v1", "litert-int8") / fast("mobilenet-v1", "litert-fp32")
    out = []
    for name in INT8_VS_MOBILENET:
        if ips(name, "litert-int8"):
            got = ips(name, "litert-int8") / base_i8
            out.append({"model": name, "what": "int8 vs mobilenet-v1 int8", "target": 1.0,
                        "measured": got, "met": got >= 1.0,
                        "from_min": fast(name, "litert-int8") / fast("mobilenet-v1", "litert-int8")})
    need = INT8_SPEEDUP_SHARE * base_speedup
    for name in table:
        if name.startswith("hmff-mobilenet") and ips(name, "litert-int8") and ips(name, "litert-fp32"):
            got = ips(name, "litert-int8") / ips(name, "litert-fp32")
            out.append({"model": name, "what": "int8 speed-up over own fp32 "
                        f"(mobilenet-v1: {base_speedup:.2f}x; from min {fast_speedup:.2f}x)",
                        "target": need, "measured": got, "met": got >= need,
                        "from_min": fast(name, "litert-int8") / fast(name, "litert-fp32")})
    return out


def bar_chart(s: dict, path: Path) -> None:
    """Images/s per variant, one bar per runtime/format."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(s["table"])
    keys = ["litert-fp32", "onnxruntime-fp32", "litert-int8", "onnxruntime-int8"]
    fig, ax = plt.subplots(figsize=(12, 4.5))
    w = 0.2
    for i, k in enumerate(keys):
        vals = [(s["table"][n].get(k) or {}).get("images_per_s") or 0 for n in names]
        ax.bar([j + (i - 1.5) * w for j in range(len(names))], vals, w, label=k)
    ax.set_xticks(range(len(names)), names, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("images / s (batch 1, 1 thread)")
    ax.set_title(f"{s['hardware']['cpu_model']}, 224x224, random weights", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _short(p: dict) -> dict:
    if "error" in p:
        return p
    return {k: p.get(k) for k in ("whole_model_ms", "sum_of_ops_ms", "op_count", "by_type",
                                  "elementwise_share", "method")}


def roofline_lines(s: dict) -> list[str]:
    """The roofline section: lower-bound time per LiteRT model and the share achieved."""
    from hmff_edge.bench.roofline import Machine, Roofline, table

    rows = []
    for row in s["table"].values():
        for key in ("litert-fp32", "litert-int8"):
            rl = (row.get(key) or {}).get("roofline")
            if rl:
                rows.append(Roofline(**{k: v for k, v in rl.items() if k != "machine"}))
    if not rows or not s.get("machine"):
        return []
    return ["", "## Roofline (hmff_edge.bench.roofline; measured = median latency of this run)",
            "", table(rows, Machine(**s["machine"]))]


# The per-model table: LiteRT fp32, ONNX fp32, LiteRT int8, ONNX int8 side by side.
MAIN_COLUMNS = [
    ("model", "model"), ("params", "params"), ("macs", "MACs"), ("lf_ms", "LiteRT fp32 ms"),
    ("lf_ips", "img/s"), ("lf_x_mn", "x MobileNet"), ("lf_x_km", "x same-Ch kMobileNet"),
    ("gflops", "GFLOP/s"), ("peak", "% peak"), ("of_ms", "ONNX fp32 ms"), ("of_ips", "img/s"),
    ("of_x_mn", "x MobileNet"), ("li_ms", "LiteRT int8 ms"), ("li_ips", "img/s"),
    ("li_x_mn", "int8 x MobileNet int8"), ("li_x_own", "int8 x own fp32"),
    ("oi_ms", "ONNX int8 ms"), ("kernels", "ONNX int8 integer kernels")]


def markdown(s: dict) -> str:
    def f(v, d=2):
        return "-" if v is None else f"{v:.{d}f}"

    hw = s["hardware"]
    lines = ["# Published figures: LiteRT / ONNX Runtime / int8, 1 thread, batch 1, 224x224",
             "", f"Hardware: {hw['cpu_model']}, {hw['cores']} cores, shared with other jobs while "
             f"measured (load average at start/end: {s.get('loadavg', 'not recorded')}); "
             "on a loaded machine single timings vary by up to 2x between runs, so compare "
             "within one run, and see the 'from min' ratios and the op profiles. "
             f"Versions: {json.dumps(s['versions'])}.", "",
             f"Command: `{s['command']}` ({s['seconds']:.0f} s).", "",
             f"One core's fp32 peak (numpy sgemm 1024^3, 1 thread, best of 40): "
             f"**{s['peak_gflops_1core_fp32']:.1f} GFLOP/s**.", "", s["method"] + ".", ""]
    kernels = s.get("onnx_int8_kernels") or {}
    table = []
    for name, row in s["table"].items():
        lf, of, li, oi = (row.get(k) or {} for k in ("litert-fp32", "onnxruntime-fp32",
                                                     "litert-int8", "onnxruntime-int8"))
        rl = s["ratios"].get(name, {}).get("litert-fp32", {})
        ro = s["ratios"].get(name, {}).get("onnxruntime-fp32", {})
        ri = s["ratios"].get(name, {}).get("litert-int8", {})
        own = (li["images_per_s"] / lf["images_per_s"]
               if li.get("images_per_s") and lf.get("images_per_s") else None)
        k = kernels.get(name)
        table.append({
            "model": name, "params": f"{f((row.get('params') or 0) / 1e6, 3)}M",
            "macs": f"{f((row.get('macs') or 0) / 1e6, 1)}M",
            "lf_ms": f(lf.get("p50_ms")), "lf_ips": f(lf.get("images_per_s"), 1),
            "lf_x_mn": f(rl.get("vs_mobilenet_v1")), "lf_x_km": f(rl.get("vs_same_ch_kmobilenet")),
            "gflops": f(lf.get("gflops")), "peak": f((lf.get("share_of_peak") or 0) * 100, 1),
            "of_ms": f(of.get("p50_ms")), "of_ips": f(of.get("images_per_s"), 1),
            "of_x_mn": f(ro.get("vs_mobilenet_v1")),
            "li_ms": f(li.get("p50_ms")), "li_ips": f(li.get("images_per_s"), 1),
            "li_x_mn": f(ri.get("vs_mobilenet_v1")), "li_x_own": f(own), "oi_ms": f(oi.get("p50_ms")),
            "kernels": "-" if not k else ("yes" if k["integer"] else
                                          f"NO ({k['float_mac_nodes']} float Conv/MatMul)")})
    lines.append(markdown_table(table, MAIN_COLUMNS))
    lines += ["", "## Targets (LiteRT fp32; measured = ratio of median img/s, from min = ratio "
              "of the fastest runs)", "",
              markdown_table([{**t, "target": f"{t['target']}x", "measured": f"{f(t['measured'])}x",
                              "from_min": f"{f(t['measured_from_min'])}x",
                              "met": "-" if t["met"] is None else ("yes" if t["met"] else "NO")}
                             for t in s["targets"]],
                             [("model", "model"), ("vs", "vs"), ("target", "target"),
                              ("measured", "measured"), ("from_min", "from min"), ("met", "met")])]
    if s.get("int8_targets"):
        lines += ["", "## int8 targets (issue 15; LiteRT, ratios of median img/s in this run)", "",
                  markdown_table([{**t, "target": f"{t['target']:.2f}x",
                                   "measured": f"{t['measured']:.2f}x",
                                   "from_min": f"{f(t.get('from_min'))}x",
                                   "met": "yes" if t["met"] else "NO"} for t in s["int8_targets"]],
                                 [("model", "model"), ("what", "what"), ("target", "target"),
                                  ("measured", "measured"), ("from_min", "from min"),
                                  ("met", "met")])]
    lines += roofline_lines(s)
    for name, p in s["op_profiles"].items():
        lines += ["", f"## Where the time goes: {name} (LiteRT, 1 thread)", ""]
        if "error" in p:
            lines.append(f"profile failed: {p['error']}")
            continue
        ew = p.get("elementwise_share")
        lines += [f"{p['method']}. Whole model {p['whole_model_ms']:.2f} ms; sum of the "
                  f"{p['op_count']} single-op pieces {p['sum_of_ops_ms']:.2f} ms"
                  + ("" if ew is None else f"; elementwise ops {100 * ew:.1f}% of the sum")
                  + ". Ops the delegate fuses in the whole graph (int8 LOGISTIC + MUL) are "
                  "timed apart here, so their share is an upper bound.", "",
                  markdown_table([{**t, "ms": f"{t['ms']:.3f}",
                                   "share": f"{(t['share'] or 0) * 100:.1f}%"} for t in p["by_type"]],
                                 [("op", "op"), ("count", "count"), ("ms", "ms"), ("share", "share")])]
    if s["export_failures"]:
        lines += ["", "## Export failures", ""]
        lines += [f"- {k}: {v}" for k, v in s["export_failures"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
