"""Per-layer int8 error of an export, as a table and a plot along the network's depth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hmff_edge.convert._child import run_in_child
from hmff_edge.convert.spec import ConversionSpec


def diagnose(spec: ConversionSpec, plot_path: Path | None = None) -> dict[str, Any]:
    """Run TensorFlow's quantization debugger on the spec (a child process) and summarize:
    every op's RMSE in quantization steps, the worst ones first, and optionally a PNG."""
    rows = run_in_child("hmff_edge.convert.to_tflite", "diagnose", spec,
                        what="int8 diagnosis")["layers"]
    scored = [r for r in rows if r["rmse_scale"] is not None]
    errs = sorted(r["rmse_scale"] for r in scored)
    out: dict[str, Any] = {
        "layers": len(rows),
        "median_rmse_scale": errs[len(errs) // 2] if errs else None,
        "worst": sorted(scored, key=lambda r: -r["rmse_scale"])[:20],
        "all": rows,
    }
    if plot_path is not None and scored and _plot(scored, plot_path):
        out["plot"] = plot_path.name
    return out


def _plot(rows: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot([r["index"] for r in rows], [r["rmse_scale"] for r in rows], ".-", lw=0.8)
    ax.axhline(0.289, color="grey", ls="--", lw=0.8, label="rounding noise (0.289)")
    for r in sorted(rows, key=lambda r: -r["rmse_scale"])[:3]:
        ax.annotate(r["op"], (r["index"], r["rmse_scale"]), fontsize=7)
    ax.set_xlabel("op index (input -> output)")
    ax.set_ylabel("RMSE / scale (steps)")
    ax.set_title("int8 error per op along the network")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
