"""--strategy multi-worker: two worker processes on 127.0.0.1 train a few steps on CPU."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from conftest import REPO, make_image_folder

pytestmark = pytest.mark.tf


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_two_workers_train_together(tmp_path):
    data = make_image_folder(tmp_path / "imgs", classes=("a", "b"), per_class=10, size=16)
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for i in range(2):
        env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3",
                   TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                         "task": {"type": "worker", "index": i}}))
        cmd = [sys.executable, "-m", "hmff_edge", "train", "--model",
               "tests.test_train_tinymodel:build", "--data", str(data), "--img-size", "16",
               "--epochs", "2", "--batch-size", "8", "--strategy", "multi-worker",
               "--out", str(tmp_path / f"run{i}"), "--json"]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=240)
            assert p.returncode == 0, err[-3000:]
            outs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    chief = json.loads(outs[0])
    # 18 training images, global batch 8 split over 2 workers, remainder dropped: 2 steps/epoch
    assert chief["epochs_done"] == 2 and chief["optimizer_iterations"] == 4
    assert chief["metrics"] is not None
    assert (tmp_path / "run0" / "model.keras").is_file()
    assert (tmp_path / "run0" / "metrics.json").is_file()
    # the second worker trained in lock-step but wrote nothing into its --out
    other = json.loads(outs[1])
    assert other["optimizer_iterations"] == 4 and other["metrics"] is None
    assert not (tmp_path / "run1").exists()
