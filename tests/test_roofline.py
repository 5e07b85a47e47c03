"""Roofline (hmff_edge.bench.roofline): MACs and bytes of a graph, the bound that follows
from a machine's peaks, and the bench-results hook. TF-free (LiteRT's flatbuffer reader)."""

from __future__ import annotations

import pytest

from hmff_edge.bench import roofline as R

MACS = 56 * 56 * 256 * 256  # the shipped probe: 1x1 conv 56x56x256 -> 256
FAKE = R.Machine(gemm_gmacs_fp32=100.0, gemm_gmacs_int8=400.0, bandwidth_gbs_cache=50.0,
                 bandwidth_gbs_dram=10.0)


@pytest.mark.parametrize("q,width", [("fp32", 4), ("int8", 1)])
def test_probe_costs(q, width):
    cost = R.graph_cost(R.PROBES / f"gemm_{q}.tflite")
    assert cost.dtype == q
    assert cost.macs == MACS
    conv = [o for o in cost.ops if o.op == "CONV_2D"]
    assert len(conv) == 1 and conv[0].macs == MACS
    act = 56 * 56 * 256 * width
    weights = 256 * 256 * width
    # input + output + weights (+ a bias of 256 floats / int32s)
    assert conv[0].bytes == 2 * act + weights + 256 * 4
    assert cost.weight_bytes >= weights


def test_bound_is_the_slower_of_compute_and_memory_per_op():
    cost = R.GraphCost("m.tflite", "int8", macs=0, bytes=0, weight_bytes=0, ops=[
        R.OpCost(0, "CONV_2D", macs=400_000_000, bytes=1_000_000),  # 1 ms compute, 0.02 ms mem
        R.OpCost(1, "MUL", macs=0, bytes=100_000_000)])  # 2 ms at 50 GB/s
    cost.macs, cost.bytes = 400_000_000, 101_000_000
    r = R.roofline(cost, FAKE, measured_ms=6.0)
    assert r.compute_bound_ms == pytest.approx(1.0)
    assert r.lower_bound_ms == pytest.approx(3.0)
    assert r.memory_bound_ops_share == pytest.approx(2 / 3)
    assert r.achieved_share == pytest.approx(0.5)
    fp32 = R.roofline(R.GraphCost("m", "fp32", 400_000_000, 0, 0,
                                  [R.OpCost(0, "CONV_2D", 400_000_000, 0)]), FAKE)
    assert fp32.lower_bound_ms == pytest.approx(4.0)  # the fp32 peak, not int8's


def test_attach_adds_a_roofline_to_tflite_results_only(tmp_path):
    probe = str(R.PROBES / "gemm_int8.tflite")
    results = [{"model_file": {"path": probe}, "latency": {"p50": 2.0}, "model": {"name": "p"}},
               {"model_file": {"path": str(tmp_path / "m.onnx")}, "latency": {"p50": 1.0}}]
    R.attach(results, FAKE)
    rl = results[0]["roofline"]
    assert rl["macs"] == MACS and rl["measured_ms"] == 2.0 and rl["model"] == "p"
    assert rl["achieved_share"] == pytest.approx(rl["lower_bound_ms"] / 2.0)
    assert "roofline" not in results[1]
    text = R.results_table(results)
    assert "| p | int8 | 205.5M |" in text and "400.0 GMAC/s" in text
    assert "no LiteRT" in R.results_table([results[1]])


def test_bench_cli_roofline_flag(tmp_path, monkeypatch):
    """``bench compare results.json --roofline``: the table comes out under the comparison."""
    import json

    monkeypatch.setattr(R, "measure_machine", lambda: FAKE)

    from typer.testing import CliRunner

    from hmff_edge.bench.runner import SCHEMA
    from hmff_edge.cli import app

    probe = str(R.PROBES / "gemm_int8.tflite")
    res = tmp_path / "results.json"
    res.write_text(json.dumps({"schema": SCHEMA, "results": [
        {"model": {"name": "probe"}, "model_file": {"path": probe}, "runtime": "litert",
         "quantization": "int8", "latency": {"p50": 1.0},
         "throughput": {"batch1_images_per_s": 1000.0, "best_images_per_s": 1000.0}}]}))
    out = CliRunner().invoke(app, ["bench", "compare", str(res), "--roofline"])
    assert out.exit_code == 0, out.output
    assert "| probe | int8 | 205.5M |" in out.output and "GEMM peak" in out.output
