"""Server building blocks in isolation: limits, JSON depth, shapes, batching, metrics, names."""

from __future__ import annotations

import asyncio
import gzip
import os
import threading

import numpy as np
import pytest
from _artifacts import onnx_classifier

from hmff_edge.serve.batching import Batcher, QueueFull
from hmff_edge.serve.limits import (
    MAX_DIM,
    HTTPError,
    check_shape,
    decompress,
    json_depth,
    num_elements,
    parse_json,
)
from hmff_edge.serve.metrics import Metrics
from hmff_edge.serve.repository import scan


def test_json_depth_ignores_brackets_in_strings():
    assert json_depth(b'{"a": [1, [2, [3]]]}') == 4
    assert json_depth(b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\"[[[["}') == 1
    assert json_depth(b"1") == 0


def test_parse_json_refuses_deep_nesting_and_garbage():
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(HTTPError, match="nested 100000 levels") as e:
        parse_json(deep)
    assert e.value.status == 400
    for bad in (b"{", b"", b"\xff\xfe", b'{"a": nan'):
        with pytest.raises(HTTPError) as e:
            parse_json(bad)
        assert e.value.status == 400
    assert parse_json(b'{"inputs": [{"data": [[[[1]]]]}]}')["inputs"][0]["data"] == [[[[1]]]]


@pytest.mark.parametrize("shape,msg", [
    ([-1, 8, 8, 3], "non-positive"),
    ([0, 8, 8, 3], "non-positive"),
    ([2**70, 8, 8, 3], "larger than"),
    ([1, 8, 8], "does not match"),
    ([1, 8, 8, 4], "does not match"),
    ([1.0, 8, 8, 3], "list of integers"),
    ([True, 8, 8, 3], "list of integers"),
    ("1,8,8,3", "list of integers"),
])
def test_check_shape_refuses(shape, msg):
    with pytest.raises(HTTPError, match=msg):
        check_shape(shape, (8, 8, 3))


def test_shape_product_is_exact_beyond_int64():
    assert check_shape([MAX_DIM, 8, 8, 3], (8, 8, 3)) == (MAX_DIM, 8, 8, 3)
    assert num_elements([MAX_DIM] * 4) == MAX_DIM**4  # would overflow int64


def test_decompress_is_bounded():
    body = gzip.compress(b"\0" * 10_000_000)
    assert len(body) < 20_000
    with pytest.raises(HTTPError) as e:
        asyncio.run(decompress(body, "gzip", 1_000_000))
    assert e.value.status == 413
    assert asyncio.run(decompress(gzip.compress(b"abc"), "gzip", 10)) == b"abc"
    with pytest.raises(HTTPError) as e:
        asyncio.run(decompress(b"abc", "br", 10))
    assert e.value.status == 415


def test_batcher_coalesces_concurrent_requests():
    batches = []

    def fn(x):
        batches.append(len(x))
        return x * 2

    async def main():
        b = Batcher("m", fn, max_batch=4, max_delay_s=1.0, max_queue=16)
        b.start()
        xs = [np.full((1, 2), i, np.float32) for i in range(4)]
        outs = await asyncio.gather(*(b.infer(x) for x in xs))
        # a request bigger than max_batch runs alone, still answered in full
        big = await b.infer(np.ones((6, 2), np.float32))
        await b.stop()
        return outs, big

    outs, big = asyncio.run(main())
    assert batches == [4, 6]  # 4 requests, one inference; then the oversize one
    for i, o in enumerate(outs):
        np.testing.assert_array_equal(o, np.full((1, 2), 2 * i))
    assert big.shape == (6, 2)


def test_batcher_bounded_queue_refuses_at_once_and_recovers():
    release = threading.Event()

    def fn(x):
        release.wait(10)
        return x

    async def main():
        b = Batcher("m", fn, max_batch=1, max_delay_s=0.0, max_queue=2)
        b.start()
        first = asyncio.ensure_future(b.infer(np.zeros((1, 1))))
        await asyncio.sleep(0.05)  # the worker now holds `first`
        queued = [asyncio.ensure_future(b.infer(np.zeros((1, 1)))) for _ in range(2)]
        await asyncio.sleep(0)
        assert b.depth == 2
        with pytest.raises(QueueFull, match="max-queue 2"):
            await b.infer(np.zeros((1, 1)))
        release.set()
        await asyncio.gather(first, *queued)
        out = await b.infer(np.ones((1, 1)))  # serving again
        await b.stop()
        return out

    assert asyncio.run(main())[0, 0] == 1


def test_batcher_engine_error_reaches_every_request_of_the_batch():
    def fn(x):
        raise RuntimeError("engine broke")

    async def main():
        b = Batcher("m", fn, max_batch=2, max_delay_s=0.5, max_queue=4)
        b.start()
        res = await asyncio.gather(b.infer(np.zeros((1, 1))), b.infer(np.zeros((1, 1))),
                                   return_exceptions=True)
        await b.stop()
        return res

    res = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in res)


def test_metrics_exposition_parses_with_prometheus_client():
    from prometheus_client.parser import text_string_to_metric_families

    m = Metrics()
    m.observe_http("v2_infer", 200, 0.003)
    m.observe_http("v2_infer", 400, 0.0005)
    m.on_batch("tiny", 2)(3, 0.002, [0.001, 0.0005])
    m.request_done("tiny", 2, 0.004)
    m.request_failed("tiny", 2, "BAD_REQUEST")
    fams = {f.name: f for f in text_string_to_metric_families(m.render().decode())}
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for f in fams.values() for s in f.samples}
    mv = (("model", "tiny"), ("version", "2"))
    assert values[("hmff_http_requests_total", (("code", "200"), ("route", "v2_infer")))] == 1
    assert values[("hmff_inference_count_total", mv)] == 3
    assert values[("hmff_inference_exec_count_total", mv)] == 1
    assert values[("hmff_inference_queue_duration_us_total", mv)] == pytest.approx(1500)
    assert values[("hmff_inference_compute_infer_duration_us_total", mv)] == pytest.approx(2000)
    failed = (("model", "tiny"), ("reason", "BAD_REQUEST"), ("version", "2"))
    assert values[("hmff_inference_request_failure_total", failed)] == 1
    assert values[("hmff_inference_batch_size_bucket", (("le", "4.0"), *mv))] == 1
    assert fams["hmff_inference_queue_duration_seconds"].type == "histogram"


def test_model_names_never_leave_the_served_directory(tmp_path):
    served = tmp_path / "served"
    outside = tmp_path / "outside"
    onnx_classifier(served / "a.onnx")
    onnx_classifier(served / "a.tflite.onnx")
    onnx_classifier(outside / "secret.onnx")
    os.symlink(outside / "secret.onnx", served / "escape.onnx")
    (served / "notes.txt").write_text("x")
    names = scan(served).models
    assert sorted(names) == ["a", "a.tflite"]
    assert all(v[1].resolve().parent == served.resolve() for v in names.values())


def test_serve_cli_refuses_bad_arguments_cleanly(tmp_path):
    from typer.testing import CliRunner

    from hmff_edge.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["serve", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "does not exist" in res.output
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["serve", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "no .tflite or .onnx model" in res.output
    bare = onnx_classifier(tmp_path / "bare" / "m.onnx", sidecar=False, embed=False)
    res = runner.invoke(app, ["serve", str(bare.parent)])
    assert res.exit_code == 2 and "could be loaded" in res.output and "m.onnx" in res.output


def test_memory_budget_makes_requests_wait_then_refuses_at_the_deadline():
    import time

    from hmff_edge.serve.budget import MemoryBudget

    async def main():
        b = MemoryBudget(100)
        far = time.monotonic() + 10
        r1, r2 = b.reservation(far), b.reservation(far)
        await r1.grow(60)
        await r2.grow(30)
        waiter = asyncio.ensure_future(r2.grow(30))
        await asyncio.sleep(0.01)
        assert not waiter.done() and b.used == 90  # waits instead of over-committing
        await r1.shrink(60)
        await asyncio.wait_for(waiter, 1)
        assert b.used == 60 and r2.held == 60
        with pytest.raises(HTTPError) as e:  # more than the whole budget: refused at once
            await b.reservation(far).grow(101)
        assert e.value.status == 413
        late = b.reservation(time.monotonic() + 0.05)
        with pytest.raises(HTTPError) as e:  # cannot fit before its deadline: 503, retry
            await late.grow(50)
        assert e.value.status == 503 and e.value.headers["Retry-After"] == "1"
        async with r2:
            pass
        assert b.used == 0

    asyncio.run(main())


def test_memory_budget_refuses_the_youngest_when_all_holders_wait():
    import time

    from hmff_edge.serve.budget import MemoryBudget

    async def main():
        b = MemoryBudget(100)
        far = time.monotonic() + 10
        old, young = b.reservation(far), b.reservation(far)
        await old.grow(50)
        await young.grow(50)

        async def young_request():
            async with young:
                await young.grow(30)

        older = asyncio.ensure_future(old.grow(30))
        await asyncio.sleep(0.01)
        assert not older.done()  # waits: the young one still holds its 50
        with pytest.raises(HTTPError) as e:  # both wait for each other: the young one goes
            await young_request()
        assert e.value.status == 503
        await asyncio.wait_for(older, 1)
        assert old.held == 80 and b.used == 80

    asyncio.run(main())
