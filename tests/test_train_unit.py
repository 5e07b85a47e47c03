"""Recipe pieces without TensorFlow: LR schedule, metrics, config checks, run folder."""

from __future__ import annotations

import numpy as np
import pytest

from hmff_edge.errors import ConfigError
from hmff_edge.train import TrainConfig, compute_metrics, lr_at, metrics_from_confusion
from hmff_edge.train.runfolder import RunFolder


def test_lr_schedule_paper_points():
    assert lr_at(0) == pytest.approx(1e-3)
    assert lr_at(9) == pytest.approx(1e-3)
    assert lr_at(10) == pytest.approx(7.5e-4)
    assert lr_at(25) == pytest.approx(1e-3 * 0.75**2)
    assert lr_at(25, lr0=0.01, decay=0.5, step=5) == pytest.approx(0.01 * 0.5**5)


def test_metrics_from_known_confusion_matrix():
    # rows = true, cols = predicted
    cm = np.array([[5, 1, 0],
                   [2, 3, 1],
                   [0, 0, 4]])
    m = metrics_from_confusion(cm, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(12 / 16)
    assert m["precision_micro"] == pytest.approx(12 / 16)
    assert m["recall_micro"] == pytest.approx(12 / 16)
    a, b, c = (m["per_class"][k] for k in "abc")
    assert a["precision"] == pytest.approx(5 / 7) and a["recall"] == pytest.approx(5 / 6)
    assert b["precision"] == pytest.approx(3 / 4) and b["recall"] == pytest.approx(3 / 6)
    assert c["precision"] == pytest.approx(4 / 5) and c["recall"] == pytest.approx(1.0)
    assert a["f1"] == pytest.approx(2 * (5 / 7) * (5 / 6) / (5 / 7 + 5 / 6))
    assert m["confusion_matrix"] == cm.tolist() and m["labels"] == ["a", "b", "c"]
    # a class never predicted and never present: zeros, no division error
    m2 = compute_metrics([0, 0, 1], [0, 1, 1], ["x", "y", "z"])
    assert m2["per_class"]["z"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m2["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]


def test_config_defaults_and_validation():
    d = TrainConfig(out="x").resolved()
    assert (d.model, d.img_size, d.epochs) == ("hmff-mobilenet-16ch", 32, 8)
    p = TrainConfig(out="x", data="some/folder").resolved()
    assert (p.img_size, p.epochs, p.batch_size, p.lr) == (224, 50, 64, 1e-3)
    for bad, msg in [({"val_split": 1.0}, "val-split"), ({"epochs": 0}, "epochs"),
                     ({"strategy": "tpu"}, "strategy"), ({"lr": -1.0}, "lr"),
                     ({"early_stopping": 0}, "early-stopping")]:
        with pytest.raises(ConfigError, match=msg):
            TrainConfig(out="x", **bad).resolved()


def test_run_folder_refuses_non_empty(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("x")
    rf = RunFolder(tmp_path / "run")
    with pytest.raises(ConfigError, match="--resume.*--overwrite"):
        rf.check_new(overwrite=False)
    rf.create(overwrite=True)
    assert not (tmp_path / "run" / "keep.txt").exists() and rf.ckpt_dir.is_dir()
    rows = [{"epoch": 1, "loss": 1.5, "accuracy": 0.5, "val_loss": 1.6, "val_accuracy": 0.4,
             "lr": 1e-3}]
    rf.write_history(rows)
    assert rf.read_history() == rows
