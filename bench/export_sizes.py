"""Benchmark: the size of every zoo variant in every export format, and int8/fp32 ratios.

    python bench/export_sizes.py [--img-size 32] [--variants a,b] [--calib-data DIR]
        [--out bench/results/export_sizes]

(with hmff-edge installed, e.g. ``pip install -e '.[all]'``).

Each variant is built with random weights and exported through ``hmff_edge.convert.export``
(each conversion in a child process) without the Keras comparison (random weights give
uniform probabilities; sizes do not depend on the values). Graph checks still run. The
weights, hence the sizes, do not depend on the input size, so a 32 px graph is used by
default for speed. int8 is calibrated on ``--calib-data`` (default: 32 images of the
real CIFAR-10 test set when present, else synthetic images). Writes ``<out>.json`` and
``<out>.md`` with the command and the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from hmff_edge.convert import ExportOptions, export
from hmff_edge.errors import VerificationError
from hmff_edge.metadata import atomic_write_bytes
from hmff_edge.tables import markdown_table

REPO = Path(__file__).resolve().parents[1]

LABELS = ["savedmodel", "tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8",
          "onnx-fp32", "onnx-int8"]


def _calibration_folder(arg: str | None, tmp: Path) -> str:
    if arg:
        return arg
    cifar = REPO.parent / "shared" / "data" / "cifar10" / "test"
    if cifar.is_dir():
        return str(cifar)
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    d = tmp / "calib" / "x"
    d.mkdir(parents=True)
    for i in range(32):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return str(d.parent)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--variants", default="", help="comma list (default: every zoo variant "
                    "with the paper's activation; -hs/-relu6 twins have the same weights)")
    ap.add_argument("--calib-data", default=None)
    ap.add_argument("--calib-samples", type=int, default=32)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "export_sizes"))
    args = ap.parse_args(argv)

    from hmff_edge import models

    variants = [v for v in args.variants.split(",") if v] or [
        v for v in models.list_models() if not v.endswith(("-hs", "-relu6"))]
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        calib = _calibration_folder(args.calib_data, Path(tmp))
        for name in variants:
            t1 = time.perf_counter()
            model = models.build_model(name, img_size=args.img_size, num_classes=10)
            params = models.count_params(model)
            del model
            try:
                report = export(name, ExportOptions(
                    formats="all", out=Path(tmp) / name, img_size=args.img_size, classes=10,
                    calib_data=calib, calib_samples=args.calib_samples, verify=False,
                    progress=False))
            except VerificationError as exc:  # graph-check failures: sizes still measured
                report = exc.report
            sizes = {a.label: a.size_bytes for a in report.artifacts}
            ops = {a.label: sum(a.ops.values()) for a in report.artifacts}
            problems = {a.label: a.problems for a in report.artifacts if a.problems}
            row = {"variant": name, "params": params, "bytes": sizes, "ops": ops,
                   "graph_problems": problems,
                   "ratios": {
                       "tflite_int8/fp32": sizes["tflite-int8"] / sizes["tflite-fp32"],
                       "tflite_fp16/fp32": sizes["tflite-fp16"] / sizes["tflite-fp32"],
                       "tflite_dynamic/fp32": sizes["tflite-dynamic"] / sizes["tflite-fp32"],
                       "onnx_int8/fp32": sizes["onnx-int8"] / sizes["onnx-fp32"],
                   },
                   "seconds": round(time.perf_counter() - t1, 1)}
            rows.append(row)
            print(f"{name}: " + ", ".join(f"{k} {v / 1e6:.3f} MB" for k, v in sizes.items()),
                  file=sys.stderr)
    result = {
        "command": "python bench/export_sizes.py " + " ".join(argv if argv is not None
                                                              else sys.argv[1:]),
        "img_size": args.img_size, "calib_data": calib if args.calib_data else "default",
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "python": platform.python_version()},
        "versions": _versions(), "seconds": round(time.perf_counter() - t0, 1),
        "rows": rows,
    }
    out = Path(args.out)
    atomic_write_bytes(out.with_suffix(".json"), (json.dumps(result, indent=2) + "\n").encode())
    atomic_write_bytes(out.with_suffix(".md"), markdown(result).encode())
    print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    columns = [("variant", "variant"), ("params", "params"),
               *[(label, f"{label} MB") for label in LABELS],
               ("tflite_ratio", "tflite int8/fp32"), ("onnx_ratio", "onnx int8/fp32")]
    rows = [{"variant": r["variant"], "params": f"{r['params']:,}",
             **{label: f"{r['bytes'][label] / 1e6:.3f}" for label in LABELS},
             "tflite_ratio": f"{r['ratios']['tflite_int8/fp32']:.3f}",
             "onnx_ratio": f"{r['ratios']['onnx_int8/fp32']:.3f}"} for r in result["rows"]]
    lines = [f"# Export sizes ({result['img_size']} px graphs, 10 classes)", "",
             f"Command: `{result['command']}`  ", f"Machine: {result['machine']['platform']}, "
             f"{', '.join(f'{k} {v}' for k, v in result['versions'].items())}", "",
             markdown_table(rows, columns)]
    for r in result["rows"]:
        for label, probs in r.get("graph_problems", {}).items():
            lines.append(f"\n- graph check failed for {r['variant']} {label}: {'; '.join(probs)}")
    lines += ["", "SavedModel is the folder's total size. ONNX int8 is static QDQ (weights int8, "
              "plus Quantize/Dequantize nodes and per-channel scales)."]
    return "\n".join(lines) + "\n"


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("tensorflow-cpu", "keras", "ai-edge-litert", "onnx", "onnxruntime", "tf2onnx"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


if __name__ == "__main__":
    sys.exit(main())
