"""The TF-free runtime on ONNX artifacts built with onnx.helper (no TensorFlow needed)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from _artifacts import LABELS3, onnx_classifier

from hmff_edge import runtime
from hmff_edge.errors import ArtifactError, DataError
from hmff_edge.preprocess import load_rgb, normalize

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory) -> Path:
    return onnx_classifier(tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def _reference(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x.astype(np.float32)})[0]


def test_load_reads_sidecar_and_shapes(onnx_path):
    p = runtime.load(onnx_path, threads=1)
    assert p.format == "onnx"
    assert p.labels == LABELS3
    assert p.input_dtype == np.float32
    assert p.input_shape == (-1, 8, 8, 3)
    assert p.sample_shape == (8, 8, 3)
    assert p.threads == 1
    assert p.describe()["input"]["name"] == "input"


@pytest.mark.parametrize("batch", [1, 3, 7])
def test_predict_matches_onnxruntime_for_any_batch(onnx_path, batch):
    p = runtime.load(onnx_path)
    x = np.random.default_rng(batch).normal(size=(batch, 8, 8, 3)).astype(np.float32)
    probs = p.predict(x)
    assert probs.shape == (batch, 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, _reference(onnx_path, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # run() is the raw path: same numbers, no conversion.
    np.testing.assert_array_equal(p.run(x), probs)


def test_embedded_metadata_used_when_no_sidecar(tmp_path):
    path = onnx_classifier(tmp_path / "embedded.onnx", sidecar=False, labels=["a", "b"])
    assert not (tmp_path / "embedded.json").exists()
    p = runtime.load(path)
    assert p.labels == ["a", "b"]
    assert p.metadata.format == "onnx"


def test_no_metadata_anywhere_is_a_clear_error(tmp_path):
    path = onnx_classifier(tmp_path / "bare.onnx", sidecar=False, embed=False)
    with pytest.raises(ArtifactError, match="no hmff_edge metadata"):
        runtime.load(path)


def test_bad_files_raise_artifact_error(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        runtime.load(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match="cannot load ONNX"):
        runtime.load(junk)
    other = tmp_path / "model.pb"
    other.write_bytes(b"x")
    with pytest.raises(ArtifactError, match="unsupported model file"):
        runtime.load(other)


def test_metadata_inconsistent_with_model_is_refused(tmp_path):
    path = onnx_classifier(tmp_path / "m.onnx")
    meta = json.loads((tmp_path / "m.json").read_text())
    meta["labels"] = ["only", "two"]
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="3 outputs but its metadata lists 2 labels"):
        runtime.load(path)
    meta["labels"], meta["height"], meta["width"] = LABELS3, 16, 16
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="does not match its metadata"):
        runtime.load(path)


def test_preprocess_is_the_shared_preprocessing(onnx_path, image_folder):
    p = runtime.load(onnx_path)
    files = sorted(str(f) for f in image_folder.rglob("*.png"))[:4]
    x = p.preprocess(files)
    want = np.stack([normalize(load_rgb(f, 8), p.metadata.mean, p.metadata.std) for f in files])
    np.testing.assert_array_equal(x, want)
    # bytes and paths give the same tensor
    np.testing.assert_array_equal(p.preprocess(Path(files[0]).read_bytes()), want[:1])


def test_classify_top_k_sorted_with_labels(onnx_path, image_folder):
    p = runtime.load(onnx_path)
    files = sorted(str(f) for f in image_folder.rglob("*.png"))[:3]
    out = p.classify(files, top_k=2)
    probs = p.predict(p.preprocess(files))
    assert len(out) == 3
    for row, pr in zip(out, probs):
        assert [r["index"] for r in row] == list(np.argsort(-pr)[:2])
        assert row[0]["probability"] >= row[1]["probability"]
        assert all(r["label"] == LABELS3[r["index"]] for r in row)
        assert row[0]["probability"] == pytest.approx(float(pr.max()))
    assert len(p.classify(files[0], top_k=10)[0]) == 3  # capped at the number of classes
    with pytest.raises(DataError):
        p.classify(files[0], top_k=0)


def test_undecodable_image_and_wrong_shape_raise_data_error(onnx_path):
    p = runtime.load(onnx_path)
    with pytest.raises(DataError, match="cannot decode"):
        p.classify(b"definitely not an image")
    with pytest.raises(DataError, match="expected"):
        p.predict(np.zeros((1, 9, 9, 3), np.float32))


def test_concurrent_use_from_threads_gives_the_same_results(onnx_path):
    p = runtime.load(onnx_path, threads=1)
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(n, 8, 8, 3)).astype(np.float32) for n in (1, 2, 3, 4) * 4]
    want = [p.predict(x) for x in xs]
    got: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        for _ in range(5):
            got[i] = p.predict(xs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, w in enumerate(want):
        np.testing.assert_array_equal(got[i], w)


def test_runtime_and_server_never_import_tensorflow():
    code = (
        "import sys, hmff_edge.runtime, hmff_edge.serve, hmff_edge.serve.app, "
        "hmff_edge.serve.server, hmff_edge.runtime.backends\n"
        "import hmff_edge.cli.predict, hmff_edge.cli.serve\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "", f"TensorFlow/Keras imported: {out.stdout.strip()}"
