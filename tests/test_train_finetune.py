"""Fine-tuning, EMA and resume with every recipe option on, on tiny folders (TensorFlow)."""

from __future__ import annotations

import json
import signal
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_folder
from test_train_fit import run_killed

pytestmark = pytest.mark.tf

TINY = "tests.test_train_tinymodel:build"
QUIET = {"progress": False, "echo": lambda s: None}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    three = make_image_folder(root / "three", classes=("cat", "dog", "frog"), per_class=10, size=16)
    two = make_image_folder(root / "two", classes=("ant", "bee"), per_class=12, size=16, seed=3)
    return three, two


@pytest.fixture(scope="module")
def source_run(folders, tmp_path_factory):
    from hmff_edge.train import fit

    out = tmp_path_factory.mktemp("src") / "run"
    fit(_cfg(folders[0], out, epochs=1), **QUIET)
    return out


def _cfg(data, out, **kw):
    from hmff_edge.train import TrainConfig

    base = dict(out=str(out), model=TINY, data=str(data), img_size=16, epochs=2, batch_size=8,
                seed=1, bn_recalibrate=2)
    base.update(kw)
    return TrainConfig(**base)


def _load(path):
    from hmff_edge.train.modelfactory import register_custom_objects

    register_custom_objects()
    import keras

    return keras.models.load_model(path)


def _weighted(model):
    return [layer for layer in model.layers if layer.weights]


def test_transfer_copies_every_tensor_and_replaces_only_the_head(source_run):
    from hmff_edge.train.initfrom import transfer_weights
    from tests.test_train_tinymodel import build

    src = _load(source_run / "model.keras")
    same = build(img_size=16, num_classes=3)
    assert transfer_weights(src, same, same_classes=True) == 3
    for a, b in zip(_weighted(src), _weighted(same), strict=True):
        for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
            np.testing.assert_array_equal(x, y)
    other = build(img_size=16, num_classes=2)
    fresh_head = [w.copy() for w in _weighted(other)[-1].get_weights()]
    assert transfer_weights(src, other, same_classes=False) == 2
    for a, b in zip(_weighted(src)[:-1], _weighted(other)[:-1], strict=True):
        for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
            np.testing.assert_array_equal(x, y)
    for x, y in zip(fresh_head, _weighted(other)[-1].get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)  # the head kept its fresh initialization


def test_freeze_epochs_keep_the_body_then_train_it(folders, source_run, tmp_path):
    from hmff_edge.train import RunConfig, fit

    out = tmp_path / "ft"
    r = fit(_cfg(folders[1], out, epochs=2, init_from=str(source_run), freeze_epochs=1), **QUIET)
    src = _load(source_run / "model.keras")
    e1 = _load(out / "checkpoints" / "epoch-0001.keras")
    e2 = _load(out / "checkpoints" / "epoch-0002.keras")
    body = slice(0, -1)
    for a, b in zip(_weighted(src)[body], _weighted(e1)[body], strict=True):
        for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
            np.testing.assert_array_equal(x, y)  # frozen: bit-identical after the head epoch
    assert _weighted(e1)[-1].get_weights()[0].shape == (8, 2)
    conv_src, conv_e2 = _weighted(src)[0].get_weights()[0], _weighted(e2)[0].get_weights()[0]
    assert not np.allclose(conv_src, conv_e2)  # unfrozen afterwards: the body trains
    assert all(layer.trainable for layer in e1.layers)  # saved loadable with its optimizer
    rc = RunConfig.load(out)
    assert rc.init is not None and rc.init.head == "new" and rc.init.run == str(source_run)
    assert rc.init.labels == ["cat", "dog", "frog"] and r.config["init"]["copied_layers"] == 2
    card = (out / "MODEL_CARD.md").read_text()
    assert str(source_run) in card and "new classifier head" in card
    assert "frozen for the first 1 epochs" in card


def test_architecture_mismatch_from_a_keras_file_is_refused_before_data(folders, tmp_path,
                                                                        monkeypatch):
    import hmff_edge.train.loop as loop
    from hmff_edge.errors import ConfigError
    from hmff_edge.train import fit
    from tests.test_train_tinymodel import build

    m = build(img_size=16, num_classes=2)
    m.save(tmp_path / "tiny.keras")
    monkeypatch.setattr(loop, "prepare_data", lambda *a, **k: pytest.fail("data was read"))
    out = tmp_path / "o"
    with pytest.raises(ConfigError, match="different architectures"):
        fit(_cfg(folders[1], out, model="tests.test_train_tinymodel:build_flat",
                 init_from=str(tmp_path / "tiny.keras")), **QUIET)
    assert not out.exists()


def test_ema_weights_are_validated_checkpointed_and_exported(folders, tmp_path):
    from hmff_edge.train import fit

    out = tmp_path / "ema"
    r = fit(_cfg(folders[0], out, epochs=2, ema=True, lr=0.05), **QUIET)
    ckpt = out / "checkpoints" / "epoch-0002.keras"
    model = _load(ckpt)
    opt = model.optimizer
    averages = [np.asarray(a) for a in opt._model_variables_moving_average]
    weights = [np.asarray(v) for v in opt._trainable_variables]
    for w, a in zip(weights, averages, strict=True):
        np.testing.assert_allclose(w, a)  # the checkpoint's model weights are the average
    with np.load(ckpt.with_name("epoch-0002.raw.npz")) as z:
        raw = [z[f"arr_{i}"] for i in range(len(z.files))]
    assert any(not np.allclose(w, x) for w, x in zip(weights, raw, strict=True))
    best = _load(out / "model.keras")  # what export and evaluate read
    bckpt = _load(out / "checkpoints" / f"epoch-{r.best_epoch:04d}.keras")
    for a, b in zip(best.get_weights(), bckpt.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    rec = json.loads((out / "config.json").read_text())
    assert rec["ema"] is True and "EMA" in rec["optimizer"]


def test_resume_after_sigkill_with_every_option_on(folders, source_run, tmp_path):
    """Kill after the head-only epoch, resume across the unfreeze: same end as a straight run.
    (--mixed-precision stays off: it needs a GPU.)"""
    from hmff_edge.train import fit

    opts = dict(epochs=3, init_from=str(source_run), freeze_epochs=1, ema=True,
                label_smoothing=0.1, schedule="cosine", warmup_epochs=1, class_weight="auto",
                tensorboard=True)
    straight = fit(_cfg(folders[1], tmp_path / "a", **opts), **QUIET)
    out = tmp_path / "b"
    p = run_killed(asdict(_cfg(folders[1], out, **opts)), 1)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr[-2000:])
    resumed = fit(_cfg(folders[1], out), resume=True, explicit=set(), **QUIET)
    assert resumed.resumed_from == 1 and resumed.epochs_done == 3
    assert resumed.optimizer_iterations == straight.optimizer_iterations
    assert [h["lr"] for h in resumed.history] == pytest.approx([h["lr"] for h in straight.history])
    for a, b in zip(resumed.history, straight.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
    wa = _load(tmp_path / "a" / "checkpoints" / "epoch-0003.keras").get_weights()
    wb = _load(out / "checkpoints" / "epoch-0003.keras").get_weights()
    for x, y in zip(wa, wb, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
    assert any(Path(out / "tensorboard").iterdir())
    assert resumed.config["init"] == straight.config["init"]


def test_run_folder_has_the_mistake_plots_and_evaluate_json(folders, tmp_path):
    from typer.testing import CliRunner

    from hmff_edge.cli import app
    from hmff_edge.train import fit

    out = tmp_path / "p"
    fit(_cfg(folders[0], out, epochs=1), **QUIET)
    for name in ("misclassified.png", "per_class.png"):
        assert (out / "plots" / name).stat().st_size > 1000
    res = CliRunner().invoke(app, ["evaluate", str(out), "--data", str(folders[0]), "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout)
    assert set(m["per_class"]) == {"cat", "dog", "frog"}
    assert {"precision", "recall", "f1", "support"} <= set(m["per_class"]["cat"])
    assert isinstance(m["most_confused"], list)
    for pair in m["most_confused"]:
        assert pair["count"] == m["confusion_matrix"][m["labels"].index(pair["true"])][
            m["labels"].index(pair["predicted"])]


def test_fit_starts_from_a_given_model(folders, tmp_path):
    """``initial_model=`` (what quantization-aware training builds on) is the model trained."""
    from hmff_edge.errors import ConfigError
    from hmff_edge.train import fit
    from tests.test_train_tinymodel import build_flat

    given = build_flat(img_size=16, num_classes=3)
    given.layers[-1].set_weights([np.full((3, 3), 0.25, np.float32), np.zeros(3, np.float32)])
    fit(_cfg(folders[0], tmp_path / "g", model="tests.test_train_tinymodel:build_flat",
             epochs=1, lr=1e-12, bn_recalibrate=0), initial_model=given, **QUIET)
    saved = _load(tmp_path / "g" / "model.keras").layers[-1].get_weights()[0]
    np.testing.assert_allclose(saved, 0.25, atol=1e-6)
    with pytest.raises(ConfigError, match="2 outputs; the run needs"):
        fit(_cfg(folders[0], tmp_path / "bad", epochs=1),
            initial_model=build_flat(img_size=16, num_classes=2), **QUIET)
    assert not (tmp_path / "bad").exists()
