"""Time every exact graph form of the zoo's grouped 1x1 layers on this machine and store the
per-device table that ships in the package (hmff_edge/convert/form_tables/<device>.json).

    python bench/form_table.py [--variants hmff-mobilenet-16ch,...] [--img-size 224]
                               [--quant int8,fp32] [--rounds 7]

Each layer shape is converted to a one-layer .tflite per form and timed in LiteRT (XNNPACK,
1 thread, batch 1), the forms of one shape round-robin, median of --rounds. Rows already in
the table are kept unless --redo; the file is rewritten after every shape.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

VARIANTS = ["hmff-mobilenet-16ch", "hmff-mobilenet-32ch", "hmff-mobilenet-64ch",
            "hmff-mobilenet-128ch"]


def main() -> int:
    from hmff_edge.bench.runner import hardware_info
    from hmff_edge.convert import forms
    from hmff_edge.models import build_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--quant", default="int8,fp32")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default=None)
    ap.add_argument("--redo", action="store_true")
    a = ap.parse_args()
    device = forms.device_kind()
    out = Path(a.out) if a.out else forms.table_path(device)
    rows = {} if a.redo or not out.is_file() else dict(forms.load_table(path=out) or {})
    keys = set()
    for v in a.variants.split(","):
        model = build_model(v, img_size=a.img_size, num_classes=10)
        for q in a.quant.split(","):
            keys |= set(forms.grouped_layers(model, a.img_size, q).values())
    todo = sorted(k for k in keys if k.text() not in rows)
    print(f"{device}: {len(todo)} of {len(keys)} layer shapes to time", flush=True)
    hw = hardware_info()
    meta = {"cpu_model": hw.get("cpu_model"), "simd": forms.simd_flags(),
            "command": shlex.join(["python", "bench/form_table.py"] + sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "method": f"one-layer .tflite per form, LiteRT XNNPACK, 1 thread, batch 1, forms "
                      f"round-robin, median of {a.rounds} rounds x 10 invokes; ms"}
    timer = forms.LiteRTTimer(rounds=a.rounds)
    for k in todo:
        rows.update(forms.measure_table([k], timer, progress=lambda s: print(s, flush=True)))
        forms.write_table(out, device, rows, meta)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
