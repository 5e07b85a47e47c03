"""The JSON result schema, CSV/Markdown/PNG outputs, the emulation label, the gpu device's
clear error without a GPU, and bad-input errors."""

from __future__ import annotations

import csv
import json

import pytest
from _bench_models import tiny_classifier
from typer.testing import CliRunner

from hmff_edge.bench import BenchOptions, NoGpuError, bench, check_gpu
from hmff_edge.bench.report import compare_rows, load_results
from hmff_edge.bench.runner import SCHEMA
from hmff_edge.cli import app
from hmff_edge.errors import ExitCode

TRIAL_KEYS = {"batch_size", "outcome", "images_per_s", "peak_rss_bytes", "latency_ms",
              "load_s", "first_inference_s", "runs", "error"}
TOP_KEYS = {"schema", "model", "runtime", "threads", "device", "hardware", "versions",
            "command", "latency", "throughput", "sweep", "load_s", "first_inference_s",
            "warmup_ms", "memory_limit_bytes", "settings", "samples_ms", "quantization"}


@pytest.fixture(scope="module")
def cli_json(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    model = tiny_classifier(d / "tiny.onnx")
    r = CliRunner().invoke(app, ["bench", str(model), "--batch-sizes", "1,2,4", "--runs", "5",
                                 "--json", "--out", str(d / "out"), "--device", "rpi",
                                 "--memory-limit", "2GiB"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout), d / "out"


def test_json_schema(cli_json):
    data, _ = cli_json
    assert data["schema"] == SCHEMA
    (res,) = data["results"]
    assert set(res) >= TOP_KEYS, TOP_KEYS - set(res)
    for k in ("mean", "std", "min", "p50", "p90", "p99"):
        assert isinstance(res["latency"][k], float)
    assert res["latency"]["min"] <= res["latency"]["p50"] <= res["latency"]["p90"] \
        <= res["latency"]["p99"]
    trials = res["sweep"]["trials"]
    assert [t["batch_size"] for t in trials] == [1, 2, 4]
    for t in trials:
        assert set(t) >= TRIAL_KEYS, TRIAL_KEYS - set(t)
        assert t["outcome"] == "ok" and t["images_per_s"] > 0 and t["peak_rss_bytes"] > 0
    tp = res["throughput"]
    assert tp["largest_fit"] == 4 and tp["best_batch"] in (1, 2, 4)
    assert res["memory_limit_bytes"] == 2 * 2**30 and res["threads"] == 4
    hw = res["hardware"]
    assert hw["cpu_model"] and hw["cores"] >= 1 and "gpus" in hw
    assert res["versions"]["onnxruntime"] and res["command"].startswith("hmff-edge")


def test_emulation_label_everywhere(cli_json):
    data, out = cli_json
    (res,) = data["results"]
    assert res["device"]["emulation"] is True and res["device"]["profile"] == "rpi4"
    assert "EMULATION of rpi4" in res["device"]["label"]
    assert "not Raspberry Pi timings" in res["device"]["label"]
    assert "EMULATION" in (out / "results.md").read_text()
    assert "EMULATION" in (out / "compare.md").read_text()
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 3 and all("EMULATION" in r["device"] for r in rows)
    assert rows[0]["emulation"] == "True"


def test_files_written(cli_json):
    _, out = cli_json
    for name in ("results.json", "trials.csv", "results.md", "compare.md"):
        assert (out / name).stat().st_size > 0, name
    assert len(load_results(out / "results.json")) == 1


def test_plots_written_with_matplotlib(cli_json):
    pytest.importorskip("matplotlib")
    _, out = cli_json
    for name in ("throughput_vs_batch.png", "latency_distribution.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name


def test_compare_from_saved_results(cli_json):
    _, out = cli_json
    r = CliRunner().invoke(app, ["bench", "compare", str(out / "results.json"),
                                 str(out / "results.json")])
    assert r.exit_code == 0, r.output
    assert "Latency (s)" in r.output and "Throughput (img/s)" in r.output
    assert "1.00x" in r.output and "EMULATION" in r.output


def test_compare_gflops_and_ratio():
    def fake(name, ips, macs):
        return {"model": {"name": name, "params": 1_000_000, "macs": macs},
                "latency": {"mean": 10.0},
                "throughput": {"best_images_per_s": ips, "best_batch": 1,
                               "best_gflops": 2 * macs * ips / 1e9}}
    rows = compare_rows([fake("a", 50.0, 500_000_000), fake("b", 125.0, 100_000_000)], "a")
    assert rows[1]["ratio"] == "2.50x" and rows[0]["ratio"] == "1.00x"
    assert rows[0]["gflops"] == "50.00" and rows[1]["latency_s"] == "0.0100"
    # int8 rows are compared with the baseline's int8 run, not its fp32 run
    a8, b8 = fake("a", 100.0, 1), fake("b", 150.0, 1)
    for r in (a8, b8):
        r["quantization"] = "int8"
    rows = compare_rows([fake("a", 50.0, 1), fake("b", 125.0, 1), a8, b8], "a")
    assert [r["ratio"] for r in rows] == ["1.00x", "2.50x", "1.00x", "1.50x"]
    assert rows[3]["model"].endswith("int8]")


def test_gpu_device_clear_error_without_gpu(tmp_path):
    model = tiny_classifier(tmp_path / "tiny.onnx")
    r = CliRunner().invoke(app, ["bench", str(model), "--device", "gpu"])
    assert r.exit_code == ExitCode.UNAVAILABLE
    assert "no GPU is visible" in r.output
    with pytest.raises(NoGpuError, match="no GPU is visible"):
        check_gpu("onnxruntime", names=[], ort_providers=["CPUExecutionProvider"])


def test_gpu_visible_but_cpu_only_onnxruntime():
    with pytest.raises(NoGpuError, match="no CUDAExecutionProvider"):
        check_gpu("onnxruntime", names=["NVIDIA A4000"], ort_providers=["CPUExecutionProvider"])
    assert check_gpu("onnxruntime", names=["NVIDIA A4000"],
                     ort_providers=["CUDAExecutionProvider"]) == ["NVIDIA A4000"]


@pytest.mark.parametrize("args,needle", [
    (["--memory-limit", "lots"], "cannot read size 'lots'"),
    (["--batch-sizes", "1,x"], "'1,x'"),
    (["--runtime", "litert"], "--runtime litert cannot run"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--host", "pi@pi.local"], "--host is for --device rpi"),
])
def test_bad_options_are_clear_errors(tmp_path, args, needle):
    model = tiny_classifier(tmp_path / "tiny.onnx")
    r = CliRunner().invoke(app, ["bench", str(model), *args])
    assert r.exit_code == 2, r.output
    assert needle in r.output


def test_gpu_with_litert_is_refused_before_exporting():
    r = CliRunner().invoke(app, ["bench", "mobilenet-v1", "--device", "gpu", "--runtime",
                                 "litert"])
    assert r.exit_code == 2 and "LiteRT" in r.output


def test_unknown_model_names_valid_variants():
    r = CliRunner().invoke(app, ["bench", "no-such-model"])
    assert r.exit_code == 2
    assert "neither an existing file nor a variant name" in r.output
    assert "hmff-mobilenet-16ch" in r.output


def test_library_call_returns_records(tmp_path):
    """``bench()`` measures: three timed batch-1 runs, their statistics and the device label."""
    model = tiny_classifier(tmp_path / "tiny.onnx")
    (res,) = bench([str(model)], BenchOptions(runs=3, batch_sizes="1"), progress=False,
                   command="x")
    assert res["device"]["emulation"] is False and res["command"] == "x"
    assert res["device"]["label"].startswith("cpu: ")
    lat = res["latency"]
    assert lat["count"] == 3 and len(res["samples_ms"]) == 3
    assert 0 < lat["min"] <= lat["p50"] <= lat["max"]
    assert lat["mean"] == pytest.approx(sum(res["samples_ms"]) / 3)
    (trial,) = res["sweep"]["trials"]
    assert trial["outcome"] == "ok" and trial["runs"] == 3
    assert res["throughput"]["batch1_images_per_s"] > 0
    assert res["model_file"]["name"] == "tiny.onnx" and res["runtime"] == "onnxruntime"


def test_compare_rejects_a_file_that_is_not_a_result(tmp_path):
    bogus = tmp_path / "x.json"
    bogus.write_text("{}")
    r = CliRunner().invoke(app, ["bench", "compare", str(bogus)])
    assert r.exit_code == ExitCode.BAD_INPUT and "is not a bench result" in r.output


def test_outputs_without_matplotlib_note_the_missing_plots(cli_json, tmp_path, monkeypatch):
    from hmff_edge.bench import plots
    from hmff_edge.bench.report import write_outputs

    data, _ = cli_json
    monkeypatch.setattr(plots, "available", lambda: False)
    written = write_outputs(data["results"], tmp_path / "o")
    assert sorted(p.name for p in written) == ["compare.md", "results.json", "results.md",
                                               "trials.csv"]
