"""Run a TFLite model on saved inputs; copied into the emulated root and run there.

Also run on the host with the host's Python, so both sides execute the same code. Needs
only the standard library, numpy and ai-edge-litert (or tflite-runtime). Whether XNNPACK
started is read by the caller from this process's stderr (LiteRT logs it there).

    python3 _infer.py probe MODEL
    python3 _infer.py run --model M --inputs IN.npy --out OUT.npy [--batch 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys


def _interpreter(path: str, threads: int):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - a device with the older package
        from tflite_runtime.interpreter import Interpreter
    return Interpreter(model_path=path, num_threads=threads)


def run(model: str, x, batch: int, threads: int):
    """Raw output tensors (the model's own dtype) for raw inputs ``x``, ``batch`` at a time."""
    import numpy as np

    it = _interpreter(model, threads)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    results, current = [], None
    for start in range(0, len(x), batch):
        chunk = np.ascontiguousarray(x[start:start + batch])
        if current != len(chunk):
            it.resize_tensor_input(inp["index"], [len(chunk), *chunk.shape[1:]], strict=False)
            it.allocate_tensors()
            current = len(chunk)
        it.set_tensor(inp["index"], chunk)
        it.invoke()
        results.append(it.get_tensor(out["index"]).copy())
    return np.concatenate(results)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="_infer.py")
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("probe")
    pr.add_argument("model")
    r = sub.add_parser("run")
    r.add_argument("--model", required=True)
    r.add_argument("--inputs", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--batch", type=int, default=8)
    r.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import numpy as np

    if args.cmd == "probe":
        it = _interpreter(args.model, 1)
        it.allocate_tensors()
        it.invoke()
    else:
        y = run(args.model, np.load(args.inputs), args.batch, args.threads)
        np.save(args.out, y)
    try:
        from importlib.metadata import version

        litert = version("ai-edge-litert")
    except Exception:  # noqa: BLE001 - informative only
        litert = None
    print(json.dumps({"ok": True, "machine": platform.machine(),
                      "qemu_cpu": os.environ.get("QEMU_CPU"), "litert": litert,
                      "numpy": np.__version__, "python": platform.python_version()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
