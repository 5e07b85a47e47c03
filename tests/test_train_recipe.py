"""Recipe options without TensorFlow: schedules, class weights, imbalance, mistakes, the
run config, and bad input refused before any work (nothing written, TF never started)."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_folder
from typer.testing import CliRunner

from hmff_edge.errors import ConfigError
from hmff_edge.train import RunConfig, TrainConfig, epoch_lr
from hmff_edge.train.classweights import auto_weights, imbalance_warning, read_weight_file
from hmff_edge.train.metrics import compute_metrics
from hmff_edge.train.plots import worst_mistakes

TINY = "tests.test_train_tinymodel:build"


def _resolved(**kw) -> TrainConfig:
    return TrainConfig(out="x", data="digits", lr=1e-3, **kw).resolved()


def test_cosine_and_warmup_learning_rates_at_given_epochs():
    c = _resolved(epochs=10, schedule="cosine", warmup_epochs=2)
    assert epoch_lr(c, 0) == pytest.approx(1e-3 / 3)  # ramp: (e + 1) / (warmup + 1)
    assert epoch_lr(c, 1) == pytest.approx(2e-3 / 3)
    assert epoch_lr(c, 2) == pytest.approx(1e-3)  # cosine starts at full rate
    assert epoch_lr(c, 6) == pytest.approx(1e-3 * 0.5 * (1 + np.cos(np.pi * 4 / 8)))
    assert epoch_lr(c, 9) == pytest.approx(1e-3 * 0.5 * (1 + np.cos(np.pi * 7 / 8)))
    s = _resolved(epochs=30, warmup_epochs=1)  # the paper's steps after a warm-up
    assert epoch_lr(s, 0) == pytest.approx(5e-4)
    assert epoch_lr(s, 1) == pytest.approx(1e-3) and epoch_lr(s, 12) == pytest.approx(7.5e-4)
    plain = _resolved(epochs=30)
    assert [epoch_lr(plain, e) for e in (0, 9, 10, 20)] == pytest.approx(
        [1e-3, 1e-3, 7.5e-4, 1e-3 * 0.75**2])


def test_class_weights_on_a_known_imbalanced_fixture(tmp_path):
    labels = np.array([0] * 80 + [1] * 16 + [2] * 4)  # 100 images, 3 classes
    w = auto_weights(labels, ["a", "b", "c"])
    assert w == pytest.approx({"a": 100 / (3 * 80), "b": 100 / (3 * 16), "c": 100 / (3 * 4)})
    # weighted counts are equal per class and sum to the number of images
    assert 80 * w["a"] == pytest.approx(4 * w["c"]) and 80 * w["a"] * 3 == pytest.approx(100)
    msg = imbalance_warning(labels, ["a", "b", "c"])
    assert msg and "'a' has 80" in msg and "'c' 4" in msg and "--class-weight auto" in msg
    assert imbalance_warning(np.array([0] * 30 + [1] * 10), ["a", "b"]) is None  # exactly 3x
    f = tmp_path / "w.json"
    f.write_text(json.dumps({"c": 5}))
    assert read_weight_file(str(f), ["a", "b", "c"]) == {"a": 1.0, "b": 1.0, "c": 5.0}
    f.write_text(json.dumps({"cta": 2.0}))
    with pytest.raises(ConfigError, match=r"\['cta'\].*classes: \['a', 'b', 'c'\]"):
        read_weight_file(str(f), ["a", "b", "c"])


def test_worst_mistakes_lists_the_confident_wrong_images():
    y = np.array([0, 1, 2, 0, 1, 2])
    probs = np.array([[0.9, 0.1, 0.0],   # right
                      [0.6, 0.4, 0.0],   # wrong: 1 -> 0 at 0.6
                      [0.0, 0.05, 0.95],  # right
                      [0.1, 0.0, 0.9],   # wrong: 0 -> 2 at 0.9
                      [0.2, 0.7, 0.1],   # right
                      [0.0, 0.8, 0.2]])  # wrong: 2 -> 1 at 0.8
    got = worst_mistakes(y, probs, k=2)
    assert [(m["index"], m["true"], m["pred"]) for m in got] == [(3, 0, 2), (5, 2, 1)]
    assert got[0]["confidence"] == pytest.approx(0.9)
    assert [m["index"] for m in worst_mistakes(y, probs, k=10)] == [3, 5, 1]


def test_most_confused_pairs():
    m = compute_metrics([0, 0, 0, 1, 1, 2, 2, 2], [1, 1, 0, 1, 0, 1, 2, 2], ["a", "b", "c"])
    assert m["most_confused"][0] == {"true": "a", "predicted": "b", "count": 2,
                                     "share": pytest.approx(2 / 3)}
    assert {(p["true"], p["predicted"]) for p in m["most_confused"]} == {("a", "b"), ("b", "a"),
                                                                      ("c", "b")}


def test_run_config_round_trip(tmp_path):
    from hmff_edge.train.runconfig import InitOrigin

    rc = RunConfig(train=_resolved(epochs=3, ema=True, label_smoothing=0.1), labels=["x", "y"],
                   counts={"train": 9}, init=InitOrigin("m.keras", "run", "tiny", ["p", "q"],
                                                        "new", 3))
    rc.save(tmp_path)
    back = RunConfig.load(tmp_path)
    assert back == rc and back.img_size == 32 and back.num_classes == 2
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["ema"] is True and raw["img_size"] == 32 and raw["labels"] == ["x", "y"]
    assert "label smoothing 0.1" in raw["loss"] and raw["init"]["head"] == "new"


def _no_work(monkeypatch):
    """Fail the test if fit gets past its cheap checks (TensorFlow, data)."""
    import hmff_edge.train.loop as loop

    def boom(*a, **k):
        raise AssertionError("fit went past its checks")

    monkeypatch.setattr(loop, "open_session", boom)
    monkeypatch.setattr(loop, "prepare_data", boom)


def _fake_keras_file(path: Path, batch_shape=(None, 16, 16, 3)) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", json.dumps(
            {"config": {"layers": [{"config": {"batch_shape": list(batch_shape)}}]}}))
    return path


@pytest.fixture()
def imgs(tmp_path):
    return make_image_folder(tmp_path / "imgs", classes=("cat", "dog"), per_class=4, size=16)


def _source_run(root: Path, model: str, img_size: int) -> Path:
    root.mkdir()
    _fake_keras_file(root / "model.keras", (None, img_size, img_size, 3))
    RunConfig(train=TrainConfig(out=str(root), model=model, data="digits", img_size=img_size),
              labels=["a", "b"]).save(root)
    return root


@pytest.mark.parametrize("case, message", [
    ("not_a_run", "is not a run folder"),
    ("not_keras", "is not a Keras model file"),
    ("other_arch", "hmff-mobilenet-16ch run but --model is hmff-mobilenet-32ch"),
    ("other_size", "trained at 64 px but --img-size is 32"),
    ("freeze", "--freeze-epochs 5 is larger than --epochs 2"),
    ("weights", "names classes ['cta']"),
    ("typo", "unknown model 'hmff-mobilenet-32c'"),
    ("small", "input size 16 is too small"),
    ("test_data", "--test-data: data source"),
])
def test_bad_input_refused_before_any_work(case, message, imgs, tmp_path, monkeypatch):
    from hmff_edge.cli import app

    _no_work(monkeypatch)
    out = tmp_path / "out"
    args = ["train", "--data", str(imgs), "--out", str(out), "--epochs", "2"]
    if case == "not_a_run":
        (tmp_path / "folder").mkdir()
        args += ["--init-from", str(tmp_path / "folder")]
    elif case == "not_keras":
        (tmp_path / "m.keras").write_text("not a zip")
        args += ["--init-from", str(tmp_path / "m.keras")]
    elif case == "other_arch":
        args += ["--init-from", str(_source_run(tmp_path / "src", "hmff-mobilenet-16ch", 32)),
                 "--model", "hmff-mobilenet-32ch"]
    elif case == "other_size":
        args += ["--init-from", str(_source_run(tmp_path / "src", "hmff-mobilenet-16ch", 64)),
                 "--img-size", "32"]
    elif case == "freeze":
        args += ["--init-from", str(_source_run(tmp_path / "src", "hmff-mobilenet-16ch", 32)),
                 "--freeze-epochs", "5"]
    elif case == "weights":
        (tmp_path / "w.json").write_text('{"cta": 2}')
        args += ["--model", TINY, "--img-size", "16", "--class-weight", str(tmp_path / "w.json")]
    elif case == "typo":
        args += ["--model", "hmff-mobilenet-32c", "--img-size", "32"]
    elif case == "small":
        args += ["--model", "hmff-mobilenet-16ch", "--img-size", "16"]
    elif case == "test_data":
        args += ["--model", TINY, "--img-size", "16", "--test-data", str(tmp_path / "nope")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not out.exists()


@pytest.mark.tf
def test_mixed_precision_refused_without_gpu(imgs, tmp_path, monkeypatch):
    """On a machine without a GPU: a clear error, no folder (the check runs before data)."""
    import hmff_edge.train.loop as loop

    def no_data(*a, **k):
        raise AssertionError("data was read")

    monkeypatch.setattr(loop, "prepare_data", no_data)
    monkeypatch.setattr(loop, "plan_splits", no_data)
    from hmff_edge.cli import app

    if "tensorflow" not in sys.modules:
        pytest.importorskip("tensorflow")
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    out = tmp_path / "mp"
    res = CliRunner().invoke(app, ["train", "--model", TINY, "--data", str(imgs), "--img-size",
                                   "16", "--out", str(out), "--mixed-precision"])
    assert res.exit_code == 2 and "--mixed-precision needs a GPU" in res.output
    assert not out.exists()


def test_explicit_flags_reach_the_config(monkeypatch, tmp_path):
    """Flags typed on the command line are passed (and named as explicit); defaults are not."""
    import hmff_edge.train as train
    from hmff_edge.cli import app

    seen = {}

    def fake_fit(cfg, **kw):
        seen.update(cfg=cfg, explicit=kw["explicit"])
        raise ConfigError("stop here")

    monkeypatch.setattr(train, "fit", fake_fit)
    res = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "o"), "--data", "digits",
                                   "--ema", "--label-smoothing", "0.1", "--schedule", "cosine",
                                   "--seed", "3", "--no-augment"])
    assert res.exit_code == 2 and "stop here" in res.output
    c = seen["cfg"]
    assert (c.data, c.ema, c.label_smoothing, c.schedule, c.seed, c.augment) == (
        "digits", True, 0.1, "cosine", 3, False)
    assert seen["explicit"] == {"data", "ema", "label_smoothing", "schedule", "seed", "augment"}
