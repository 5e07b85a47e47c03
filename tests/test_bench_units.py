"""Pure logic of the bench: sizes, statistics, batch plans, the sweep against a fake runner,
exit classification. No model runtime, no TensorFlow."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from hmff_edge.bench import runner
from hmff_edge.bench.runner import OK, OOM, batch_plan, latency_stats, parse_size, sweep


@pytest.mark.parametrize("text,expected", [
    ("512MiB", 512 * 2**20), ("2GiB", 2 * 2**30), ("1.5GB", 1_500_000_000),
    ("4096", 4096), ("64 kib", 65536), ("3G", 3 * 10**9), (None, None), ("", None),
])
def test_parse_size_units(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["lots", "12 parsecs", "-1MiB", "0", "MiB"])
def test_parse_size_rejects_and_quotes(bad):
    with pytest.raises(ValueError, match="cannot read size|positive"):
        parse_size(bad)


def test_latency_stats_names_and_values():
    s = latency_stats([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert s["count"] == 100
    assert s["min"] == pytest.approx(1.0) and s["max"] == pytest.approx(100.0)
    assert s["mean"] == pytest.approx(50.5)
    assert s["p50"] == pytest.approx(50.5)
    assert s["p90"] == pytest.approx(90.1)
    assert s["p99"] == pytest.approx(99.01)
    assert s["std"] == pytest.approx(29.011, abs=1e-3)  # sample std of 1..100
    assert latency_stats([]) == {"count": 0}


def test_batch_plan():
    assert batch_plan("auto", 64) == [1, 2, 4, 8, 16, 32, 64]
    assert batch_plan("auto", 50) == [1, 2, 4, 8, 16, 32]
    assert batch_plan("8,1,3,3", 64) == [1, 3, 8]
    assert batch_plan("1,2,128", 64) == [1, 2]
    with pytest.raises(ValueError, match="'x,2'"):
        batch_plan("x,2", 8)
    with pytest.raises(ValueError):
        batch_plan("0,2", 8)
    with pytest.raises(ValueError, match="within --max-batch"):
        batch_plan("128", 64)


def test_runs_scale_with_batch():
    assert runner.runs_for_batch(1, 50) == 50
    assert runner.runs_for_batch(4, 50) == 13
    assert runner.runs_for_batch(64, 50) == 3


class FakeRunner:
    """Throughput rises to batch 8 then falls; allocating batch >= ``oom_at`` fails."""

    def __init__(self, oom_at: int | None = 32, error_at: int | None = None):
        self.oom_at, self.error_at, self.calls = oom_at, error_at, []

    def __call__(self, batch: int) -> dict:
        self.calls.append(batch)
        if self.oom_at is not None and batch >= self.oom_at:
            return {"outcome": OOM, "error": "killed by SIGKILL"}
        if self.error_at is not None and batch >= self.error_at:
            return {"outcome": "error", "error": "boom"}
        ips = 100 * batch if batch <= 8 else 800 - 10 * batch
        return {"outcome": OK, "images_per_s": ips, "peak_rss_bytes": batch * 2**20}


def test_sweep_stops_at_first_oom_and_reports_it():
    fake = FakeRunner(oom_at=32)
    res = sweep(fake, batch_plan("auto", 256))
    assert fake.calls == [1, 2, 4, 8, 16, 32]  # nothing after the out-of-memory
    assert [t["outcome"] for t in res["trials"]] == [OK] * 5 + [OOM]
    assert res["largest_fit"] == 16
    assert res["best_batch"] == 8 and res["best_images_per_s"] == 800
    assert res["stopped"]["batch_size"] == 32 and res["stopped"]["outcome"] == OOM
    assert "out-of-memory at batch 32" in res["stopped"]["reason"]


def test_sweep_error_and_max_batch_and_oom_at_one():
    res = sweep(FakeRunner(oom_at=None, error_at=4), [1, 2, 4, 8])
    assert res["stopped"]["outcome"] == "error" and res["largest_fit"] == 2
    res = sweep(FakeRunner(oom_at=None), [1, 2, 4])
    assert res["stopped"]["outcome"] == OK and "all batch sizes ran" in res["stopped"]["reason"]
    assert res["largest_fit"] == 4
    res = sweep(FakeRunner(oom_at=1), [1, 2])
    assert res["best_batch"] is None and res["largest_fit"] is None
    assert len(res["trials"]) == 1


def test_sweep_calls_progress_callback():
    seen = []
    sweep(FakeRunner(oom_at=4), [1, 2, 4, 8], on_trial=lambda t: seen.append(t["batch_size"]))
    assert seen == [1, 2, 4]


def test_classify_exit():
    assert runner.classify_exit(-signal.SIGKILL, "", None)[0] == OOM
    assert runner.classify_exit(-signal.SIGABRT, "std::bad_alloc", None)[0] == OOM
    assert runner.classify_exit(-signal.SIGABRT, "", 2**30)[0] == OOM
    assert runner.classify_exit(-signal.SIGSEGV, "", None)[0] == "error"
    assert runner.classify_exit(1, "MemoryError: Unable to allocate", None)[0] == OOM
    outcome, reason = runner.classify_exit(1, "ValueError: bad model", None)
    assert outcome == "error" and "bad model" in reason


def test_gpu_process_memory_parsing():
    smi = "1234, 500\n999, 10\n1234, 12\n"
    assert runner.gpu_process_memory(1234, smi) == 512 * 2**20
    assert runner.gpu_process_memory(42, smi) is None


def test_ort_providers_for_gpu():
    assert runner.ort_providers("cpu", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert runner.ort_providers("gpu", ["CUDAExecutionProvider", "CPUExecutionProvider"])[0] \
        == "CUDAExecutionProvider"
    with pytest.raises(RuntimeError, match="no CUDAExecutionProvider"):
        runner.ort_providers("gpu", ["CPUExecutionProvider"])


def test_runner_imports_nothing_from_hmff_edge():
    """The runner is scp'd alone to devices: it must stand on the standard library + numpy."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(runner.__file__).read_text())
    top = set()
    for node in tree.body:  # module-level imports only; runtimes are imported lazily
        if isinstance(node, ast.Import):
            top |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            top.add((node.module or "").split(".")[0])
    assert "hmff_edge" not in top and "numpy" not in top
    assert top <= {"__future__", "argparse", "dataclasses", "json", "math", "os", "platform", "re",
                   "resource", "shlex", "signal", "subprocess", "sys", "tempfile", "time"}


def test_sweep_spec_derives_trials_and_their_command():
    spec = runner.SweepSpec(model="m.onnx", threads=2, runs=40, warmup=5, memory_limit=2**30)
    one, eight = spec.trial(1), spec.trial(8)
    assert one.runtime == "onnxruntime" and one.keep_samples and one.runs == 40
    assert one.warmup == 5 and eight.warmup == 2 and eight.runs == 5 and not eight.keep_samples
    cmd = runner.trial_command(eight, "/tmp/r.json", python="py")
    assert cmd[0] == "py" and cmd[2] == "trial"
    args = runner._parser().parse_args(cmd[2:])
    assert (args.batch, args.runs, args.threads, args.memory_limit, args.result) == (
        8, 5, 2, 2**30, "/tmp/r.json")


def test_profiles_ship_in_the_package_and_an_extra_folder_comes_first(tmp_path, monkeypatch):
    import json

    from hmff_edge.bench import profiles

    assert profiles.load_profile("rpi4").path.endswith("device_profiles/rpi4.json")
    assert {"cpu", "gpu", "rpi4", "rpi5"} <= set(profiles.list_profiles())
    (tmp_path / "rpi4.json").write_text(json.dumps({"kind": "rpi", "threads": 2}))
    monkeypatch.setenv("HMFF_BENCH_PROFILES", str(tmp_path))
    assert profiles.load_profile("rpi4").threads == 2
    with pytest.raises(profiles.ConfigError, match="known profiles: cpu, gpu, rpi4, rpi5"):
        profiles.load_profile("rpi9")


def test_variant_exports_cache_in_the_user_cache_folder(tmp_path, monkeypatch):
    from hmff_edge.bench.models import cache_dir

    monkeypatch.delenv("HMFF_EDGE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "hmff-edge" / "bench"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "hmff-edge" / "bench"
    monkeypatch.setenv("HMFF_EDGE_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" / "bench"


class _FakeInterpreter:
    """What the timing helpers use of a LiteRT interpreter: its inputs and ``invoke``."""

    def __init__(self, inputs):
        self.inputs, self.tensors, self.invokes = inputs, {}, 0

    def get_input_details(self):
        return self.inputs

    def set_tensor(self, index, x):
        self.tensors[index] = x

    def invoke(self):
        self.invokes += 1


def test_invoke_seconds_times_only_the_runs_after_the_warmups():
    it = _FakeInterpreter([])
    samples = runner.invoke_seconds(it, runs=4, warmup=2)
    assert len(samples) == 4 and it.invokes == 6 and all(s >= 0 for s in samples)


def test_fill_random_input_sets_every_input_in_its_dtype_and_shape():
    import numpy as np

    it = _FakeInterpreter([{"index": 3, "dtype": np.int8, "shape": (1, 4)},
                           {"index": 5, "dtype": np.int8, "shape": (1, 4)},
                           {"index": 7, "dtype": np.float32, "shape": (2,)}])
    runner.fill_random_input(it)
    assert sorted(it.tensors) == [3, 5, 7]
    assert (it.tensors[3].dtype, it.tensors[3].shape, it.tensors[7].dtype) == (np.int8, (1, 4),
                                                                              np.float32)
    assert not np.array_equal(it.tensors[3], it.tensors[5])  # two inputs of one op differ


# --------------------------------------------------------------------------- the record
RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


def _saved_records() -> list[dict]:
    files = sorted(RESULTS.glob("*/results.json"))
    assert files, f"no saved results.json under {RESULTS}"
    return [r for f in files for r in json.loads(f.read_text())["results"]]


def test_record_round_trip_keeps_every_field_of_saved_results():
    records = _saved_records()
    for d in records:
        rec = runner.ModelRecord.from_dict(d)
        assert rec.to_dict() == d, d.get("model_file")
        assert rec.throughput.best_images_per_s == d["throughput"]["best_images_per_s"]
        assert rec.sweep.trials == d["sweep"]["trials"]
        assert rec.device == d["device"] and rec.model == d["model"]
    # publish.py's per-round p50s are not a field: they ride in ``extra`` and come back
    assert any("rounds" in runner.ModelRecord.from_dict(d).extra for d in records)


def _runner_record() -> dict:
    """What ``runner.py sweep`` prints (keys and nesting), with made-up numbers."""
    trial = {"batch_size": 1, "outcome": OK, "images_per_s": 100.0, "peak_rss_bytes": 1,
             "exit": {"returncode": 0}, "wall_s": 0.5}
    return {"schema": runner.SCHEMA, "runtime": "litert", "threads": 1, "device": "cpu",
            "memory_limit_bytes": None,
            "model_file": {"path": "m.tflite", "name": "m.tflite", "size_bytes": 10},
            "settings": {"runs": 5, "seconds": 0.0, "warmup": 5, "batch_sizes": [1],
                         "max_batch": 1},
            "hardware": {"cpu_model": "x"}, "versions": {"python": "3"}, "load_s": 0.1,
            "first_inference_s": 0.01, "warmup_ms": 9.0, "latency": {"count": 5, "p50": 10.0},
            "samples_ms": [10.0] * 5,
            "throughput": {"batch1_images_per_s": 100.0, "best_batch": 1,
                           "best_images_per_s": 100.0, "largest_fit": 1},
            "sweep": {"trials": [trial], "stopped": {"batch_size": None, "outcome": OK,
                                                     "reason": "all batch sizes ran"}},
            "created": "2026-01-01T00:00:00+0000", "command": "python3 runner.py sweep"}


def test_record_keeps_the_runner_key_set_in_order():
    d = _runner_record()
    out = runner.ModelRecord.from_dict(d).to_dict()
    assert out == d and list(out) == list(d)
    assert list(out["throughput"]) == list(d["throughput"])  # no GFLOP/s before enrich()


def test_old_record_with_an_unknown_key_loads_and_writes_it_back():
    d = _runner_record()
    d["gpu_clock_mhz"] = 1410  # a key this version does not name
    del d["warmup_ms"]  # and one it does, absent from an older record
    rec = runner.ModelRecord.from_dict(d)
    assert rec.extra == {"gpu_clock_mhz": 1410} and rec.warmup_ms is None
    out = rec.to_dict()
    assert out["gpu_clock_mhz"] == 1410 and out["warmup_ms"] is None
    assert runner.ModelRecord.from_dict(out) == rec


def test_record_from_dict_refuses_another_schema():
    with pytest.raises(ValueError, match="hmff-edge-bench/1"):
        runner.ModelRecord.from_dict({**_runner_record(), "schema": "other/2"})
    with pytest.raises(ValueError):
        runner.ModelRecord.from_dict([_runner_record()])


def test_enrich_adds_model_and_gflops_keys_even_when_unknown():
    from hmff_edge.bench.api import enrich
    from hmff_edge.bench.models import ModelRef

    rec = runner.ModelRecord.from_dict(_runner_record())
    out = enrich(rec, ModelRef(path="m.tflite", name="m", format="tflite")).to_dict()
    assert out["throughput"]["batch1_gflops"] is None and out["throughput"]["best_gflops"] is None
    assert out["model"]["name"] == "m"
    rec = enrich(runner.ModelRecord.from_dict(_runner_record()),
                 ModelRef(path="m.tflite", name="m", format="tflite", macs=10**9))
    assert rec.throughput.best_gflops == pytest.approx(200.0)  # 2 x 1 GMAC x 100 img/s
