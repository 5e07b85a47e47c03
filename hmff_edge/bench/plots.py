"""PNG plots of bench results: throughput against batch size, batch-1 latency distribution.

matplotlib is optional: it is not in the ``runtime`` extra (a Raspberry Pi image stays
small), so :func:`available` is checked first and the tables are written without plots.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from hmff_edge.bench.report import _label, device_labels, tag


def available() -> bool:
    """Whether matplotlib can be imported here."""
    return importlib.util.find_spec("matplotlib") is not None


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def throughput_vs_batch(results: list[dict], path: str | Path) -> Path:
    """Images/s per batch size, one line per model; out-of-memory points marked with x."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        trials = r.get("sweep", {}).get("trials", [])
        ok = [t for t in trials if t["outcome"] == "ok" and t.get("images_per_s")]
        line, = ax.plot([t["batch_size"] for t in ok], [t["images_per_s"] for t in ok],
                        marker="o", label=f"{_label(r)} {tag(r)}")
        for t in trials:
            if t["outcome"] != "ok":
                y = ok[-1]["images_per_s"] if ok else 0
                ax.plot([t["batch_size"]], [y], marker="x", color=line.get_color(), ms=10)
                ax.annotate(t["outcome"], (t["batch_size"], y), fontsize=7)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s")
    ax.set_title("Throughput vs batch size\n" + "; ".join(device_labels(results)), fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def latency_distribution(results: list[dict], path: str | Path) -> Path:
    """Box plot of the batch-1 latency samples of each model."""
    plt = _plt()
    data = [(f"{_label(r)}\n{tag(r)}", r.get("samples_ms")) for r in results
            if r.get("samples_ms")]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(data) + 2), 4.5))
    if data:
        ax.boxplot([d for _, d in data], showfliers=True)
        ax.set_xticks(range(1, len(data) + 1), [n for n, _ in data], fontsize=7, rotation=20)
    ax.set_ylabel("latency at batch 1 (ms)")
    ax.set_title("Batch-1 latency distribution\n" + "; ".join(device_labels(results)),
                 fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
