"""End-to-end training on tiny folders: run folder, resume after SIGKILL, errors, evaluate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, make_image_folder
from typer.testing import CliRunner

pytestmark = pytest.mark.tf

TINY = "tests.test_train_tinymodel:build"


def _cli(*args: str, env: dict | None = None, check: bool = True):
    e = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    p = subprocess.run([sys.executable, "-m", "hmff_edge", *args], cwd=REPO, env=e,
                       capture_output=True, text=True, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\n{p.stdout}\n{p.stderr[-3000:]}")
    return p


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "imgs"
    return make_image_folder(root, classes=("cat", "dog", "frog"), per_class=10, size=16)


def _cfg(folder, out, **kw):
    from hmff_edge.train import TrainConfig

    base = dict(out=str(out), model=TINY, data=str(folder), img_size=16, epochs=2,
                batch_size=8, seed=1, bn_recalibrate=2)
    base.update(kw)
    return TrainConfig(**base)


def test_fit_writes_run_folder_and_evaluate_agrees(folder, tmp_path):
    from hmff_edge.train import evaluate, fit

    out = tmp_path / "run"
    r = fit(_cfg(folder, out), progress=False, echo=lambda s: None)
    for name in ("model.keras", "config.json", "labels.txt", "history.csv", "metrics.json",
                 "plots/loss.png", "plots/accuracy.png", "plots/confusion_matrix.png",
                 "checkpoints/state.json"):
        assert (out / name).is_file(), name
    cfg = json.loads((out / "config.json").read_text())
    for k in ("model", "img_size", "num_classes", "labels", "mean", "std", "data", "seed"):
        assert k in cfg
    assert cfg["labels"] == ["cat", "dog", "frog"] and cfg["num_classes"] == 3
    assert (out / "labels.txt").read_text().split() == ["cat", "dog", "frog"]
    assert [h["epoch"] for h in r.history] == [1, 2] and r.history[0]["lr"] == pytest.approx(1e-3)
    m = json.loads((out / "metrics.json").read_text())
    assert m["split"] == "validation" and m["num_samples"] == 3  # 10% of 10 per class
    assert set(m["per_class"]) == {"cat", "dog", "frog"}
    assert np.asarray(m["confusion_matrix"]).sum() == 3
    # evaluate recomputes the same numbers from the saved model (same split, same pixels)
    from hmff_edge.data import resolve_source, split_validation

    _, va = split_validation(resolve_source(folder).train, 0.1, 1)
    vdir = tmp_path / "val"
    for p, y in zip(va.paths, va.labels, strict=True):
        d = vdir / ["cat", "dog", "frog"][y]
        d.mkdir(parents=True, exist_ok=True)
        (d / Path(p).name).write_bytes(Path(p).read_bytes())
    e = evaluate(out, vdir)
    assert e["confusion_matrix"] == m["confusion_matrix"]
    assert r.optimizer_iterations == 2 * int(np.ceil(27 / 8))


def run_killed(cfg_kwargs: dict, kill_after: int) -> subprocess.CompletedProcess:
    """fit() in a child process that SIGKILLs itself after epoch ``kill_after``'s checkpoint."""
    e = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, str(REPO / "tests" / "_fit_kill.py"),
                           json.dumps(cfg_kwargs), str(kill_after)], cwd=REPO, env=e,
                          capture_output=True, text=True, timeout=300)


def test_resume_after_sigkill_matches_straight_run(folder, tmp_path):
    from dataclasses import asdict

    from hmff_edge.train import fit

    straight = fit(_cfg(folder, tmp_path / "a"), progress=False, echo=lambda s: None)

    out = tmp_path / "b"
    p = run_killed(asdict(_cfg(folder, out)), 1)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr[-2000:])
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["epochs_done"] == 1 and not (out / "metrics.json").exists()

    # a plain re-run is refused; --resume continues
    refused = _cli("train", "--model", TINY, "--data", str(folder), "--out", str(out), check=False)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = fit(_cfg(folder, out, epochs=2), resume=True, explicit={"epochs"},
                  progress=False, echo=lambda s: None)
    assert resumed.resumed_from == 1 and resumed.epochs_done == straight.epochs_done == 2
    assert resumed.optimizer_iterations == straight.optimizer_iterations
    assert [h["lr"] for h in resumed.history] == [h["lr"] for h in straight.history]
    # same data order, augmentation and restored optimizer: the second epoch matches
    assert resumed.history[1]["loss"] == pytest.approx(straight.history[1]["loss"], rel=1e-3)
    assert (out / "metrics.json").is_file()


def test_resume_refuses_changed_options(folder, tmp_path):
    from hmff_edge.errors import ConfigError
    from hmff_edge.train import fit

    out = tmp_path / "r"
    fit(_cfg(folder, out, epochs=1), progress=False, echo=lambda s: None)
    with pytest.raises(ConfigError, match="img_size"):
        fit(_cfg(folder, out, img_size=24), resume=True, explicit={"img_size"},
            progress=False, echo=lambda s: None)
    with pytest.raises(ConfigError, match="nothing to resume"):
        fit(_cfg(folder, tmp_path / "empty"), resume=True, progress=False, echo=lambda s: None)


def test_early_stopping(folder, tmp_path):
    from hmff_edge.train import fit

    r = fit(_cfg(folder, tmp_path / "es", model="tests.test_train_tinymodel:build_flat",
                 epochs=6, lr=1e-12, early_stopping=2, bn_recalibrate=0),
            progress=False, echo=lambda s: None)
    assert r.stopped_early and r.epochs_done == 3 and r.best_epoch == 1
    # model.keras is the best epoch's model (with its optimizer state), not the last one
    import keras

    best = keras.models.load_model(tmp_path / "es" / "model.keras")
    last = keras.models.load_model(tmp_path / "es" / "checkpoints" / "epoch-0003.keras")
    assert int(last.optimizer.iterations.numpy()) == 3 * int(best.optimizer.iterations.numpy()) > 0


def test_cli_errors_and_bad_files(tmp_path):
    from hmff_edge.cli import app

    runner = CliRunner()
    one = make_image_folder(tmp_path / "one", classes=("only",), per_class=2)
    res = runner.invoke(app, ["train", "--model", TINY, "--data", str(one), "--out",
                              str(tmp_path / "o1")])
    assert res.exit_code == 2 and "only one class" in res.output and str(one) in res.output
    assert not (tmp_path / "o1").exists()  # nothing half-written
    res = runner.invoke(app, ["train", "--data", str(tmp_path / "missing"), "--out",
                              str(tmp_path / "o2")])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "o3"), "--resume", "--overwrite"])
    assert res.exit_code == 2 and "exclude" in res.output
    res = runner.invoke(app, ["evaluate", str(tmp_path / "nope"), "--data", str(one)])
    assert res.exit_code == 2 and "does not exist" in res.output

    # a folder with a corrupt JPEG and a text file named .jpg trains; both are counted
    messy = make_image_folder(tmp_path / "messy", classes=("a", "b"), per_class=6, size=16)
    (messy / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 30)
    (messy / "b" / "text.jpg").write_text("hello")
    res = runner.invoke(app, ["train", "--model", TINY, "--data", str(messy), "--img-size", "16",
                              "--epochs", "1", "--batch-size", "4", "--out",
                              str(tmp_path / "o4"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["data"]["skipped"] == 2 and out["epochs_done"] == 1
    cfg = json.loads((tmp_path / "o4" / "config.json").read_text())
    assert cfg["skipped_files"] == 2


def test_streaming_mode_and_mirrored_strategy(tmp_path):
    """Data larger than the cache budget streams from disk (bad files still counted), and
    --strategy mirrored trains through tf.distribute (one CPU replica here)."""
    from hmff_edge.train import fit

    messy = make_image_folder(tmp_path / "messy", classes=("a", "b"), per_class=6, size=16)
    (messy / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 30)
    r = fit(_cfg(messy, tmp_path / "s", epochs=1, cache_gb=1e-9), progress=False,
            echo=lambda s: None)
    assert r.data["mode"] == "streaming" and r.data["skipped"] == 1
    assert r.metrics is not None and r.metrics["num_samples"] >= 1
    r2 = fit(_cfg(messy, tmp_path / "m", epochs=1, strategy="mirrored"), progress=False,
             echo=lambda s: None)
    assert r2.epochs_done == 1 and (tmp_path / "m" / "metrics.json").is_file()
