"""int8 that deploys: train the three reference models, then run the export's int8 ladder
(post-training quantization, QAT fine-tune when it misses the gate, verification) on each,
and record accuracy, agreement and time per artifact.

    python bench/int8_ladder.py                      # all three cases
    python bench/int8_ladder.py --cases digits       # the README's first command only
    python bench/int8_ladder.py --reuse              # keep runs that already exist

Cases (the commands users run; each run folder under runs/int8-ladder/):
* ``digits``: ``hmff-edge train --out RUN`` (the README's first command);
* ``cifar16``: hmff-mobilenet-16ch, 32 px, 5,000 CIFAR-10 training images, 10 epochs;
* ``cifar32``: ``bench/reproduce_cifar10.sh``'s setting (hmff-mobilenet-32ch, 32 px,
  25,000 images, 8 epochs).
Each export: ``hmff-edge export RUN --format tflite,onnx --quantize int8 --json`` (CIFAR:
``--eval-data DATA/test``, all 5,000 held-out test images). Results go to
``bench/results/int8_ladder.{json,md}`` with the command, date, CPU and versions.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from hmff_edge.bench.runner import hardware_info
from hmff_edge.tables import markdown_table

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HMFF_CIFAR10", REPO.parent / "shared" / "data" / "cifar10"))
RESULTS = REPO / "bench" / "results"

CASES = {
    "digits": {"train": []},
    "cifar16": {"train": ["--model", "hmff-mobilenet-16ch", "--data", "{data}", "--img-size",
                          "32", "--epochs", "10", "--train-limit", "5000"], "cifar": True},
    "cifar32": {"train": ["--model", "hmff-mobilenet-32ch", "--data", "{data}", "--img-size",
                          "32", "--epochs", "8", "--train-limit", "25000"], "cifar": True},
}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hmff_edge", *args], capture_output=True,
                          text=True, cwd=REPO)


def _cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines()
                  if ln.startswith("flags")), [])
    return sorted(f for f in flags if f.startswith(("avx", "amx", "fma")))


def run_case(name: str, root: Path, reuse: bool) -> dict:
    case = CASES[name]
    run = root / name
    train_args = [a.format(data=DATA) for a in case["train"]]
    t0 = time.perf_counter()
    reused = reuse and (run / "model.keras").is_file()
    if not reused:
        p = _cli("train", *train_args, "--out", str(run), "--overwrite", "--json")
        if p.returncode != 0:
            raise SystemExit(f"{name}: training failed ({p.returncode}): {p.stderr[-2000:]}")
    train_s = time.perf_counter() - t0
    export_args = ["export", str(run), "--format", "tflite,onnx", "--quantize", "int8",
                   "--out", str(run / "export-int8"), "--json", "--quiet"]
    if case.get("cifar"):
        export_args += ["--eval-data", str(DATA / "test")]
    t1 = time.perf_counter()
    p = _cli(*export_args)
    export_s = time.perf_counter() - t1
    try:
        report = json.loads(p.stdout)
    except ValueError:
        raise SystemExit(f"{name}: export printed no report ({p.returncode}): "
                         f"{p.stderr[-2000:]}") from None
    metrics = json.loads((run / "metrics.json").read_text())
    return {"case": name, "train_command": " ".join(["hmff-edge", "train", *train_args,
                                                      "--out", "RUN"]),
            "export_command": " ".join(["hmff-edge", *export_args]).replace(str(run), "RUN"),
            "train_seconds": None if reused else round(train_s, 1),
            "export_seconds": round(export_s, 1),
            "float_test_accuracy": metrics.get("accuracy"), "exit_code": p.returncode,
            "report": report}


def rows(result: dict) -> list[dict]:
    out = []
    rep = result["report"]
    keras_acc = rep.get("keras_accuracy")
    for a in rep["artifacts"]:
        v = a.get("verification") or {}
        ptq = (a.get("attempts") or [{}])[0] if a.get("attempts") else None
        out.append({
            "case": result["case"], "artifact": a["label"],
            "via": a.get("extra", {}).get("quantization_path"),
            "images": rep.get("verify_images"),
            "float_acc": _pct(keras_acc), "int8_acc": _pct(v.get("accuracy")),
            "drop": (None if v.get("accuracy") is None or keras_acc is None
                     else f"{100 * (keras_acc - v['accuracy']):+.2f}"),
            "agree": _pct(v.get("top1_agreement")),
            "agree_float": _pct((v.get("extra") or {}).get("float_top1_agreement")),
            "ptq_agree": _pct(ptq.get("top1_agreement")) if ptq else None,
            "passed": a.get("passed"), "export_s": result["export_seconds"],
        })
    return out


def _pct(v) -> str | None:
    return None if v is None else f"{100 * v:.2f}%"


COLUMNS = [("case", "case"), ("artifact", "artifact"), ("via", "via"), ("images", "images"),
           ("float_acc", "float acc"), ("int8_acc", "int8 acc"), ("drop", "drop (pt)"),
           ("agree", "agree (source model)"), ("agree_float", "agree (float run)"),
           ("ptq_agree", "PTQ agree"), ("passed", "gate"), ("export_s", "export s")]


def markdown(record: dict) -> str:
    hw = record["hardware"]
    lines = ["# int8 ladder on the three reference models", "",
             f"Command: `{record['command']}`  ", f"Date: {record['date']}  ",
             f"Hardware: {hw['cpu_model']}, {hw['cores']} cores ({', '.join(record['cpu_flags'])}); "
             f"load average {record['load_before']} before, {record['load_after']} after "
             "(the machine was shared with other jobs)  ",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in record["versions"].items()), "",
             "`agree (source model)`: top-1 agreement with the Keras model the file was "
             "converted from (the float run for PTQ, the QAT run for QAT): the gate, >= 97%. "
             "`drop`: float run accuracy minus int8 accuracy on the same held-out images, "
             "gate <= 1.0 point. `export s`: the whole ladder (PTQ, QAT fine-tune, verify, "
             "latency).", "",
             markdown_table([r for res in record["results"] for r in rows(res)], COLUMNS), ""]
    for res in record["results"]:
        q = res["report"].get("qat")
        took = ("run folder reused" if not res.get("train_seconds")
                else f"{res['train_seconds']:.0f} s")
        lines.append(f"- {res['case']}: train `{res['train_command']}` "
                     f"({took}), export `{res['export_command']}`"
                     + (f"; QAT {q['epochs']} epochs in {q['seconds']:.0f} s, QAT Keras "
                        f"accuracy {100 * q['accuracy']:.2f}% vs float "
                        f"{100 * q['float_accuracy']:.2f}% on the {q['split']} split"
                        if q else ""))
    return "\n".join(lines) + "\n"


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("tensorflow-cpu", "keras", "ai-edge-litert", "onnxruntime", "tf2onnx"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def rewrite_markdown(json_path: Path) -> None:
    """Re-render a record's Markdown from its JSON (after a change of this script's table)."""
    record = json.loads(json_path.read_text())
    json_path.with_suffix(".md").write_text(markdown(record))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument("--root", type=Path, default=REPO / "runs" / "int8-ladder")
    ap.add_argument("--reuse", action="store_true", help="keep existing run folders")
    ap.add_argument("--name", default="int8_ladder", help="result file stem")
    ap.add_argument("--render", type=Path, help="only re-render this record's Markdown")
    args = ap.parse_args(argv)
    if args.render:
        rewrite_markdown(args.render)
        return 0
    if any(CASES[c].get("cifar") for c in args.cases) and not (DATA / "test").is_dir():
        ap.error(f"CIFAR-10 not found at {DATA} (set HMFF_CIFAR10)")
    load_before = os.getloadavg()[0]
    results = []
    for c in args.cases:
        results.append(run_case(c, args.root, args.reuse))
        print(markdown_table(rows(results[-1]), COLUMNS), flush=True)
    record = {"command": "python bench/int8_ladder.py " + " ".join(argv or sys.argv[1:]),
              "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "hardware": hardware_info(), "cpu_flags": _cpu_flags(), "versions": _versions(),
              "load_before": round(load_before, 1), "load_after": round(os.getloadavg()[0], 1),
              "results": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(record, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(record))
    print(markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
