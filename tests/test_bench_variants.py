"""A variant name exported on the fly (TensorFlow in a child), benchmarked, then profiled
op by op. 32x32 input to stay small."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

pytestmark = pytest.mark.tf


def test_variant_name_is_exported_benchmarked_and_profiled(tmp_path):
    from hmff_edge.cli import app

    cache = tmp_path / "cache"
    r = CliRunner().invoke(app, ["bench", "kmobilenet-16ch", "--img-size", "32",
                                 "--batch-sizes", "1,2", "--runs", "3", "--cache", str(cache),
                                 "--json"])
    assert r.exit_code == 0, r.output
    (res,) = json.loads(r.stdout)["results"]
    assert res["runtime"] == "litert" and res["model"]["variant"] == "kmobilenet-16ch"
    assert res["model"]["params"] == 244298 and res["model"]["macs"] > 0
    assert [t["outcome"] for t in res["sweep"]["trials"]] == ["ok", "ok"]
    assert res["throughput"]["batch1_gflops"] > 0
    tflite = res["model"]["path"]
    assert tflite.endswith(".tflite")

    proc = subprocess.run([sys.executable, "-m", "hmff_edge.bench.opprofile", tflite,
                           "--runs", "3"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    prof = json.loads(proc.stdout)
    types = {t["op"] for t in prof["by_type"]}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D"} <= types
    assert prof["op_count"] == len(prof["ops"]) and prof["whole_model_ms"] > 0
    assert sum(t["share"] for t in prof["by_type"]) == pytest.approx(1.0)
