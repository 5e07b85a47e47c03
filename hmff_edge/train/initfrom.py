"""``--init-from``: start a run from the weights of another run or ``.keras`` file.

:func:`inspect_init_source` reads only small files (the run's config.json, the Keras zip's
config) so that a wrong source is refused before any image is read. :func:`transfer_weights`
copies the source's weights into a freshly built network of the same architecture, layer by
layer in order; the classifier head (the last layer with weights) is copied only when the
class lists are equal, otherwise it keeps its fresh initialization.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from hmff_edge.errors import ArtifactError, ConfigError

from .runconfig import InitOrigin, RunConfig


@dataclass
class InitSource:
    """A checked ``--init-from`` value."""

    keras_path: Path
    run_dir: Path | None
    model: str | None  # variant name from the run's config.json
    img_size: int | None
    labels: list[str] | None

    def origin(self, *, head: str, copied_layers: int) -> InitOrigin:
        return InitOrigin(source=str(self.keras_path),
                          run=str(self.run_dir) if self.run_dir else None, model=self.model,
                          labels=self.labels, head=head, copied_layers=copied_layers)


def _keras_zip_config(path: Path) -> dict:
    try:
        with zipfile.ZipFile(path) as zf:
            return json.loads(zf.read("config.json"))
    except (zipfile.BadZipFile, OSError, KeyError, ValueError) as exc:
        raise ConfigError(f"--init-from {str(path)!r} is not a Keras model file (.keras zip "
                          f"with a config.json inside): {exc}") from exc


def _input_size(keras_cfg: dict) -> int | None:
    try:
        layers = keras_cfg["config"]["layers"]
        return int(layers[0]["config"]["batch_shape"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def inspect_init_source(spec: str | os.PathLike) -> InitSource:
    """Check that ``spec`` is a run folder (with model.keras + config.json) or a ``.keras``
    file; read its variant name, input size and labels. No TensorFlow, no images."""
    p = Path(spec)
    if p.is_dir():
        model, cfg_path = p / "model.keras", p / "config.json"
        if not model.is_file() or not cfg_path.is_file():
            found = ", ".join(sorted(x.name for x in p.iterdir())[:8]) or "nothing"
            raise ConfigError(f"--init-from {str(p)!r} is not a run folder: it needs "
                              f"model.keras and config.json (found: {found})")
        try:
            rc = RunConfig.load(p)
        except ArtifactError as exc:
            raise ConfigError(f"--init-from {str(p)!r}: {exc}") from exc
        _keras_zip_config(model)
        return InitSource(model.resolve(), p.resolve(), rc.model, rc.img_size or None,
                          rc.labels or None)
    if not p.is_file():
        raise ConfigError(f"--init-from {str(p)!r} does not exist (expected a run folder or a "
                          ".keras file)")
    kcfg = _keras_zip_config(p)
    labels = None
    beside = p.parent / "config.json"
    if beside.is_file() and p.name == "model.keras":
        try:
            labels = RunConfig.load(p.parent).labels or None
        except ArtifactError:
            labels = None
    return InitSource(p.resolve(), None, None, _input_size(kcfg), labels)


def check_compatible(src: InitSource, *, model: str, img_size: int) -> None:
    """Refuse a different variant or input size (cheap: from the source's metadata)."""
    if src.model and src.model != model:
        raise ConfigError(f"--init-from {str(src.run_dir or src.keras_path)!r} is a {src.model} "
                          f"run but --model is {model}; fine-tuning needs the same architecture")
    if src.img_size and src.img_size != img_size:
        raise ConfigError(f"--init-from {str(src.run_dir or src.keras_path)!r} was trained at "
                          f"{src.img_size} px but --img-size is {img_size}; fine-tuning needs the "
                          "same input size")


def _weighted_layers(model) -> list:
    return [layer for layer in model.layers if layer.weights]


def _signature(layer) -> tuple:
    return (type(layer).__name__, tuple(tuple(w.shape) for w in layer.weights))


def transfer_weights(source, target, *, same_classes: bool) -> int:
    """Copy ``source``'s weights into ``target`` (same architecture); returns the number of
    layers copied. The head (last weighted layer) is copied only when ``same_classes``.

    Raises :class:`ConfigError` naming the first layer that differs.
    """
    if tuple(source.input_shape[1:]) != tuple(target.input_shape[1:]):
        raise ConfigError(f"--init-from input shape {tuple(source.input_shape[1:])} differs "
                          f"from the network's {tuple(target.input_shape[1:])}")
    src, dst = _weighted_layers(source), _weighted_layers(target)
    if len(src) != len(dst):
        raise ConfigError(f"--init-from network has {len(src)} layers with weights, the "
                          f"network to train ({target.name}) has {len(dst)}: different "
                          "architectures")
    n_body = len(dst) - 1
    for i, (a, b) in enumerate(zip(src[:n_body], dst[:n_body], strict=True)):
        if _signature(a) != _signature(b):
            raise ConfigError(f"--init-from architecture differs at weighted layer {i} "
                              f"({a.name}): source {_signature(a)} vs {_signature(b)}")
    for a, b in zip(src[:n_body], dst[:n_body], strict=True):
        b.set_weights(a.get_weights())
    if same_classes:
        if _signature(src[-1]) != _signature(dst[-1]):
            raise ConfigError(f"--init-from head {src[-1].name} {_signature(src[-1])} does not "
                              f"match {_signature(dst[-1])}")
        dst[-1].set_weights(src[-1].get_weights())
        return len(dst)
    return n_body


def head_layer(model):
    """The classifier head: the last layer that has weights."""
    return _weighted_layers(model)[-1]


def set_frozen(model, frozen: bool) -> bool:
    """Make every layer but the head untrainable (``frozen``) or all trainable; returns
    whether anything changed (then the model must be compiled again)."""
    head = head_layer(model)
    changed = False
    for layer in model.layers:
        want = not frozen or layer is head
        if layer.weights and layer.trainable != want:
            layer.trainable = want
            changed = True
    return changed
