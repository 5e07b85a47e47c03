"""bench --host against an emulated device labels every output (table, JSON, CSV, Markdown,
plots) "emulated arm64 (...), not device timing" and records the CPU the runner saw. The ssh
hop is replaced by a local run that returns what an emulated root reports (no root needed)."""

from __future__ import annotations

import csv
import json

import pytest
from _bench_models import tiny_classifier
from typer.testing import CliRunner

from hmff_edge.bench import runner as bench_runner
from hmff_edge.bench import ssh
from hmff_edge.cli import app
from hmff_edge.device.emulator import emulation_label

LABEL = "emulated arm64 (cortex-a72), not device timing"
MARKER = {"emulated": True, "target": "rpi4", "qemu_cpu": "cortex-a72",
          "label": emulation_label("cortex-a72"), "host_cpu": "Test EPYC",
          "runner_cpu": "qemu-user cortex-a72 (emulating Raspberry Pi 4 Model B)"}


@pytest.fixture(scope="module")
def emulated_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("emu")
    model = tiny_classifier(d / "tiny.onnx")
    seen = {}

    def fake_remote_sweep(target, model, **kw):
        seen["target"] = target
        res = bench_runner.sweep_model(bench_runner.SweepSpec(
            model, kw["runtime"], kw["threads"], kw["batch_sizes"], kw["max_batch"], kw["runs"],
            kw["seconds"], kw["warmup"]))
        res.hardware["cpu_model"] = MARKER["runner_cpu"]
        res.hardware["emulation"] = MARKER
        return res

    mp = pytest.MonkeyPatch()
    mp.setattr(ssh, "remote_sweep", fake_remote_sweep)
    try:
        r = CliRunner().invoke(app, ["bench", str(model), "--device", "rpi", "--host",
                                     "root@127.0.0.1:40022", "--batch-sizes", "1,2",
                                     "--runs", "3", "--out", str(d / "out"), "--no-progress"])
    finally:
        mp.undo()
    assert r.exit_code == 0, r.output
    return r.output, d / "out", seen


def test_table_and_files_say_emulated(emulated_run):
    table, out, _ = emulated_run
    assert table.startswith(f"Device: {LABEL}")
    res = json.loads((out / "results.json").read_text())["results"][0]
    assert res["device"]["label"].startswith(LABEL) and res["device"]["emulation"] is True
    assert "qemu-user on Test EPYC" in res["device"]["label"]
    assert res["hardware"]["cpu_model"].startswith("qemu-user cortex-a72")
    assert res["hardware"]["emulation"]["qemu_cpu"] == "cortex-a72"
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert rows and all(r["device"].startswith(LABEL) and r["emulation"] == "True" for r in rows)
    assert LABEL in (out / "results.md").read_text()
    assert LABEL in (out / "compare.md").read_text()


def test_plot_titles_carry_the_label(emulated_run, monkeypatch):
    pytest.importorskip("matplotlib")  # the runtime-only install writes no plots
    from hmff_edge.bench import plots

    _, out, _ = emulated_run
    for png in ("throughput_vs_batch.png", "latency_distribution.png"):
        assert (out / png).stat().st_size > 0
    results = json.loads((out / "results.json").read_text())["results"]
    titles = []
    real = plots._plt

    def spy():
        plt = real()
        orig = plt.subplots

        def subplots(*a, **k):
            fig, ax = orig(*a, **k)
            set_title = ax.set_title
            ax.set_title = lambda t, **kw: (titles.append(t), set_title(t, **kw))[1]
            return fig, ax
        monkeypatch.setattr(plt, "subplots", subplots)
        return plt

    monkeypatch.setattr(plots, "_plt", spy)
    plots.throughput_vs_batch(results, out / "t.png")
    plots.latency_distribution(results, out / "l.png")
    assert {t.split("\n")[0] for t in titles} == {"Throughput vs batch size",
                                                  "Batch-1 latency distribution"}
    assert all(LABEL in t for t in titles)
