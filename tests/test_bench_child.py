"""Real child processes: a trial that allocates past ``--memory-limit`` is reported as
out-of-memory while the parent carries on; signal exits and timeouts are classified."""

from __future__ import annotations

import json
import sys

import pytest
from _bench_models import tile_model, tiny_classifier

from hmff_edge.bench import runner
from hmff_edge.bench.runner import OK, OOM


def test_child_killed_by_signal_is_oom(tmp_path):
    res = runner.run_child(
        [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
        str(tmp_path / "r.json"), timeout=60)
    assert res["outcome"] == OOM and "SIGKILL" in res["error"]
    assert res["exit"]["returncode"] == -9


def test_child_memoryerror_under_cap_is_oom(tmp_path):
    code = "b = bytearray(512 * 2**20)"
    res = runner.run_child([sys.executable, "-c",
                            "import resource; resource.setrlimit(resource.RLIMIT_AS, "
                            f"({256 * 2**20}, {256 * 2**20})); {code}"],
                           str(tmp_path / "r.json"), timeout=60, memory_limit=256 * 2**20)
    assert res["outcome"] == OOM
    assert "MemoryError" in res.get("stderr_tail", "")


def test_child_timeout_is_an_error(tmp_path):
    res = runner.run_child([sys.executable, "-c", "import time; time.sleep(30)"],
                           str(tmp_path / "r.json"), timeout=1)
    assert res["outcome"] == "error" and "timed out" in res["error"]


def test_sweep_real_model_oom_under_memory_limit(tmp_path):
    """64 MiB per image under a 600 MiB cap: batch 1 and 2 fit, 16 cannot."""
    model = tile_model(tmp_path / "tile.onnx", mib_per_sample=64)
    res = runner.sweep_model(runner.SweepSpec(
        model=str(model), runtime="onnxruntime", threads=1, batch_sizes="auto", max_batch=64,
        runs=2, warmup=1, memory_limit=600 * 2**20))
    trials = res.sweep.trials
    outcomes = {t["batch_size"]: t["outcome"] for t in trials}
    assert outcomes[1] == OK and outcomes[2] == OK
    assert trials[-1]["outcome"] == OOM and trials[-1]["batch_size"] <= 16
    assert all(t["outcome"] == OK for t in trials[:-1])
    assert res.sweep.stopped["outcome"] == OOM
    assert res.throughput.largest_fit == trials[-2]["batch_size"]
    assert 64 not in outcomes  # the sweep stopped, the parent (this test) is alive
    # Peak RSS grows with the batch that fitted.
    assert trials[1]["peak_rss_bytes"] > trials[0]["peak_rss_bytes"] > 0


def test_trial_json_and_samples(tmp_path):
    model = tiny_classifier(tmp_path / "tiny.onnx")
    res = runner.sweep_model(runner.SweepSpec(model=str(model), batch_sizes="1,4", max_batch=8,
                                              runs=7, warmup=2))
    assert res.runtime == "onnxruntime"
    assert res.latency["count"] == 7 and len(res.samples_ms) == 7
    assert [t["batch_size"] for t in res.sweep.trials] == [1, 4]
    assert res.sweep.trials[1]["input"]["shape"] == [4, 8, 8, 3]
    assert "onnxruntime" in res.versions
    d = json.loads(json.dumps(res.to_dict()))  # JSON-ready
    assert runner.ModelRecord.from_dict(d) == res  # and read back field for field


def test_runner_script_runs_standalone(tmp_path):
    """``python runner.py sweep`` from a copy outside the package, as on a device."""
    import shutil
    import subprocess

    copy = tmp_path / "runner.py"
    shutil.copy(runner.__file__, copy)
    model = tiny_classifier(tmp_path / "tiny.onnx")
    proc = subprocess.run([sys.executable, "-I", str(copy), "sweep", "--model", str(model),
                           "--batch-sizes", "1,2", "--runs", "3"], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["schema"] == runner.SCHEMA and res["throughput"]["largest_fit"] == 2


@pytest.mark.parametrize("limit", ["600MiB"])
def test_cli_reports_oom_and_exits_zero(tmp_path, limit):
    from typer.testing import CliRunner

    from hmff_edge.cli import app

    model = tile_model(tmp_path / "tile.onnx", mib_per_sample=64)
    r = CliRunner().invoke(app, ["bench", str(model), "--memory-limit", limit, "--runs", "2",
                                 "--warmup", "0", "--max-batch", "32", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "out-of-memory" in r.output and "sweep stopped" in r.output


def test_remote_sweep_reads_the_device_json_into_a_record(tmp_path):
    """The ssh hop with a target that runs its commands here: the runner's stdout becomes a
    :class:`runner.ModelRecord` with the local model path and the command that ran."""
    import shutil
    import subprocess

    from hmff_edge.bench import ssh

    class LocalTarget(ssh.RemoteTarget):
        def ssh(self, command, timeout):
            return subprocess.run(command, shell=True, capture_output=True, text=True,
                                  timeout=timeout)

        def scp(self, files, remote_dir, timeout):
            for f in files:
                shutil.copy(f, remote_dir)

    model = tiny_classifier(tmp_path / "tiny.onnx")
    rec = ssh.remote_sweep(LocalTarget(host="here", python=sys.executable), str(model),
                           runtime="onnxruntime", threads=1, batch_sizes="1,2", max_batch=2,
                           runs=3, seconds=0.0, warmup=1, memory_limit=None)
    assert isinstance(rec, runner.ModelRecord)
    assert rec.model_file["path"] == str(model) and "runner.py sweep" in rec.remote_command
    assert rec.command and [t["outcome"] for t in rec.sweep.trials] == [OK, OK]
    assert rec.to_dict()["remote_command"] == rec.remote_command and not rec.extra


def _ballast(mib: int) -> bytearray:
    """``mib`` MiB resident in this (the parent) process."""
    b = bytearray(mib * 2**20)
    for i in range(0, len(b), 4096):
        b[i] = 1
    return b


def test_peak_rss_is_the_trials_own_not_the_parents(tmp_path):
    """Linux carries a parent's peak RSS into a child's ru_maxrss at exec (a 13 MB child of a
    600 MB parent reads 613 MB): a sweep from a process with TensorFlow loaded reported the
    parent's 871 MB for every batch. The trial's own peak is its address space's (VmHWM)."""
    import resource

    ballast = _ballast(800)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 >= 800 * 2**20
    model = tiny_classifier(tmp_path / "tiny.onnx")
    res = runner.sweep_model(runner.SweepSpec(model=str(model), batch_sizes="1", max_batch=1,
                                              runs=2, warmup=1))
    peak = res.sweep.trials[0]["peak_rss_bytes"]
    assert 0 < peak < 500 * 2**20, peak
    del ballast


def test_a_killed_childs_peak_is_unknown_when_the_parent_was_larger(tmp_path):
    ballast = _ballast(600)
    res = runner.run_child(
        [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
        str(tmp_path / "r.json"), timeout=60)
    assert res["outcome"] == OOM and res["peak_rss_bytes"] is None
    del ballast
