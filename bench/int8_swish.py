"""Does LiteRT's int8 path run swish (LOGISTIC + MUL) as one pass? And hard_swish?

    python bench/int8_swish.py [--size 56] [--channels 128] [--rounds 15]

Two 1x1 CONV_2Ds (HxWxC -> C) with each spelling of the activation between them,
full-integer int8 (int8 I/O), XNNPACK, 1 thread; all files timed round-robin, median of
--rounds x 20 invokes. The cost of an activation is its file's time minus that of the two bare
convolutions: when LOGISTIC + MUL costs what LOGISTIC alone costs, the MUL is folded into the
same pass. A spelling that computes a multiple of the activation has the factor taken out of
the second convolution's weights, as the int8 export does. Each file's XNNPACK partitions are
counted: an op the delegate does not take runs in the reference kernel between two
partitions. Writes bench/results/int8/swish_<cpu kind>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from hmff_edge.tables import markdown_table

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def spellings(tf):
    """name -> (activation, factor it multiplies the activation by)."""
    one = {
        "convs alone": lambda y: y,
        "LOGISTIC only": tf.sigmoid,
        "swish: tf.nn.silu (LOGISTIC + MUL)": tf.nn.silu,
        "swish: x * sigmoid(x)": lambda y: y * tf.sigmoid(y),
        "relu6 (fused into the conv)": tf.nn.relu6,
        "hard_swish: x * relu6(x + 3) / 6 (-> HARD_SWISH op)":
            lambda y: y * tf.nn.relu6(y + 3.0) * (1 / 6),
        "hard_swish: x * clip(x / 6 + 1/2, 0, 1)":
            lambda y: y * tf.minimum(tf.maximum(y * (1 / 6) + 0.5, 0.0), 1.0),
        "hard_swish: (x / 6) * relu6(x + 3) (the int8 export's unfolded spelling)":
            lambda y: (y * (1 / 6)) * tf.nn.relu6(y + 3.0),
    }
    out = {n: (f, 1.0) for n, f in one.items()}
    out["6 x hard_swish: x * relu6(x + 3) (the int8 export's spelling, 1/6 in the next "
        "conv's weights)"] = (lambda y: y * tf.nn.relu6(y + 3.0), 6.0)
    return out


def delegate_partitions(it) -> int:
    return sum(o["op_name"] == "DELEGATE" for o in it._get_ops_details())


COLUMNS = [("spelling", "spelling"), ("ops", "ops in the file"),
           ("delegate_partitions", "partitions"), ("ms", "ms"), ("over", "over convs ms")]


def table_rows(rows: list[dict]) -> list[dict]:
    return [{**r, "ops": ", ".join(f"{k} x{v}" for k, v in sorted(r["ops"].items())),
             "ms": f"{r['ms']:.4f}", "over": f"{r['over_convs_ms']:+.4f}"} for r in rows]


def main() -> int:
    import numpy as np
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from hmff_edge.bench.runner import hardware_info
    from hmff_edge.convert.forms import device_kind, simd_flags
    from hmff_edge.convert.to_tflite import op_histogram

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=56)
    ap.add_argument("--channels", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=15)
    a = ap.parse_args()
    h, c = a.size, a.channels
    rng = np.random.default_rng(0)
    k = tf.constant(rng.standard_normal((1, 1, c, c)).astype("float32") * 0.1)
    k2 = tf.constant(rng.standard_normal((1, 1, c, c)).astype("float32") * 0.1)
    its, hists, parts = {}, {}, {}
    tmp = Path(tempfile.mkdtemp(prefix="hmff-swish-"))
    for i, (name, (act, factor)) in enumerate(spellings(tf).items()):
        def f(x, act=act, factor=factor):
            return tf.nn.conv2d(act(tf.nn.conv2d(x, k, 1, "VALID")), k2 * (1 / factor), 1,
                                "VALID")

        fn = tf.function(f, input_signature=[tf.TensorSpec([1, h, h, c], tf.float32)])
        conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: (
            [rng.standard_normal((1, h, h, c)).astype("float32")] for _ in range(4))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = tf.int8
        path = tmp / f"{i}.tflite"
        path.write_bytes(conv.convert())
        it = Interpreter(model_path=str(path), num_threads=1)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], rng.integers(-128, 128, d["shape"]).astype(np.int8))
        it.invoke()
        its[name], hists[name] = it, dict(op_histogram(path))
        parts[name] = delegate_partitions(it)
    samples = {n: [] for n in its}
    for _ in range(a.rounds):
        for n, it in its.items():
            t0 = time.perf_counter()
            for _ in range(20):
                it.invoke()
            samples[n].append((time.perf_counter() - t0) / 20 * 1e3)
    med = {n: statistics.median(v) for n, v in samples.items()}
    base = med["convs alone"]
    hw = hardware_info()
    rec = {"date": time.strftime("%Y-%m-%d", time.gmtime()), "cpu_model": hw["cpu_model"],
           "simd": simd_flags(), "command": "python bench/int8_swish.py " + " ".join(sys.argv[1:]),
           "shape": [1, h, h, c], "rounds": a.rounds,
           "rows": [{"spelling": n, "ms": med[n], "over_convs_ms": med[n] - base,
                     "ops": hists[n], "delegate_partitions": parts[n]} for n in its]}
    out = REPO / "bench" / "results" / "int8" / f"swish_{device_kind()}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rec, indent=1))
    lines = [f"# int8 activations between two 1x1 convs ({h}x{h}x{c}), LiteRT XNNPACK, 1 thread",
             "",
             f"CPU: {rec['cpu_model']}, SIMD: {', '.join(rec['simd'])}. {rec['date']}. "
             f"Command: `{rec['command']}`. Median of {a.rounds} round-robin rounds x 20 "
             "invokes; 'over convs' = the file's time minus that of the two bare convolutions; "
             "partitions = "
             "XNNPACK delegate partitions (1 = every op in the delegate).", "",
             markdown_table(table_rows(rec["rows"]), COLUMNS)]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
