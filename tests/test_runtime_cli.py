"""`hmff-edge predict` through Typer's CliRunner."""

from __future__ import annotations

import json

from _artifacts import LABELS3, onnx_classifier
from typer.testing import CliRunner

from hmff_edge.cli import app

runner = CliRunner()


def test_predict_prints_top_k_table_and_json(tmp_path, image_folder):
    model = onnx_classifier(tmp_path / "tiny.onnx")
    img = sorted(image_folder.rglob("*.png"))[0]
    res = runner.invoke(app, ["predict", str(model), str(img), "--top-k", "2"])
    assert res.exit_code == 0, res.output
    assert str(img) in res.output
    assert sum(label in res.output for label in LABELS3) >= 2

    res = runner.invoke(app, ["predict", str(model), str(image_folder), "--top-k", "3", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert len(data["results"]) == 18  # the whole folder: 3 classes x 6 images
    for r in data["results"]:
        probs = [t["probability"] for t in r["top_k"]]
        assert probs == sorted(probs, reverse=True)
        assert abs(sum(probs) - 1.0) < 1e-4


def test_predict_bad_inputs_exit_nonzero_with_message(tmp_path):
    model = onnx_classifier(tmp_path / "tiny.onnx")
    res = runner.invoke(app, ["predict", str(model), str(tmp_path / "nope.png")])
    assert res.exit_code == 2 and "does not exist" in res.output
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    res = runner.invoke(app, ["predict", str(model), str(bad)])
    assert res.exit_code == 2 and "cannot decode" in res.output
    res = runner.invoke(app, ["predict", str(tmp_path / "missing.onnx"), str(bad)])
    assert res.exit_code == 2 and "does not exist" in res.output
