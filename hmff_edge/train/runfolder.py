"""The run folder: layout, crash-safe writes, per-epoch state for ``--resume``.

Layout::

    RUN/model.keras          best model so far (by validation accuracy)
    RUN/config.json          the run's RunConfig (options + labels, counts, origin, versions)
    RUN/MODEL_CARD.md        what was trained, how, from which weights, how well
    RUN/labels.txt           one class name per line
    RUN/history.csv          epoch, loss, accuracy, val_loss, val_accuracy, lr
    RUN/metrics.json         final metrics on the test split (or validation split)
    RUN/plots/*.png
    RUN/checkpoints/epoch-NNNN.keras   model + optimizer after each completed epoch
    RUN/checkpoints/epoch-NNNN.raw.npz with --ema: the raw weights (the .keras holds the average)
    RUN/tensorboard/                   with --tensorboard: per-epoch scalars
    RUN/checkpoints/state.json         which epoch completed last, best so far, patience

Every file is written to a temporary name and renamed, and ``state.json`` is written after
the checkpoint it points to, so a SIGKILL at any moment leaves the last completed epoch
resumable.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

from hmff_edge.errors import ArtifactError, ConfigError
from hmff_edge.metadata import atomic_write_bytes

HISTORY_FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr")
KEEP_CHECKPOINTS = 2


class RunFolder:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.ckpt_dir = self.root / "checkpoints"
        self.plots_dir = self.root / "plots"
        self.model_path = self.root / "model.keras"
        self.config_path = self.root / "config.json"
        self.state_path = self.ckpt_dir / "state.json"
        self.history_path = self.root / "history.csv"
        self.metrics_path = self.root / "metrics.json"
        self.labels_path = self.root / "labels.txt"

    # -- creation -------------------------------------------------------------------
    def check_new(self, *, overwrite: bool) -> None:
        """Refuse an existing non-empty folder unless ``overwrite`` (checked before any
        work so that nothing is deleted when the data turns out to be bad)."""
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"--out {str(self.root)!r} exists and is not a folder")
        if self.root.is_dir() and any(self.root.iterdir()) and not overwrite:
            raise ConfigError(f"--out {str(self.root)!r} exists and is not empty; pass --resume "
                              "to continue its training or --overwrite to start again")

    def create(self, *, overwrite: bool) -> None:
        self.check_new(overwrite=overwrite)
        if overwrite and self.root.is_dir():
            shutil.rmtree(self.root)
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)

    # -- small files ----------------------------------------------------------------
    def write_json(self, path: Path, obj: Any) -> None:
        atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())

    def read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"cannot read {str(path)!r}: {exc}") from exc

    def write_labels(self, labels: list[str]) -> None:
        atomic_write_bytes(self.labels_path, ("\n".join(labels) + "\n").encode())

    def write_history(self, rows: list[dict[str, Any]]) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
        atomic_write_bytes(self.history_path, buf.getvalue().encode())

    def read_history(self) -> list[dict[str, Any]]:
        if not self.history_path.is_file():
            return []
        with open(self.history_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in r.items()} for r in rows]

    # -- checkpoints ----------------------------------------------------------------
    def checkpoint_path(self, epochs_done: int) -> Path:
        return self.ckpt_dir / f"epoch-{epochs_done:04d}.keras"

    def save_keras(self, model, path: Path) -> None:
        """``model.save`` to a temporary name, then an atomic rename."""
        _write_then_rename(path, model.save)

    def copy_file(self, src: Path, dst: Path) -> None:
        """Copy to a temporary name, then an atomic rename (a kill never leaves half a file)."""
        _write_then_rename(dst, lambda tmp: shutil.copyfile(src, tmp))

    def write_state(self, state: dict[str, Any]) -> None:
        self.write_json(self.state_path, state)

    def read_state(self) -> dict[str, Any] | None:
        if not self.state_path.is_file():
            return None
        state = self.read_json(self.state_path)
        ckpt = self.root / state["checkpoint"]
        if not ckpt.is_file():
            raise ArtifactError(f"checkpoint {str(ckpt)!r} named in {str(self.state_path)!r} "
                                "is missing; cannot resume")
        return state

    def prune_checkpoints(self, keep: int = KEEP_CHECKPOINTS) -> None:
        ckpts = sorted(self.ckpt_dir.glob("epoch-*.keras"))
        for p in ckpts[:-keep]:
            p.unlink(missing_ok=True)
            p.with_name(p.stem + ".raw.npz").unlink(missing_ok=True)  # --ema's raw weights
        for p in self.ckpt_dir.glob(".*.tmp*"):  # leftovers of a killed save
            p.unlink(missing_ok=True)


def _write_then_rename(path: Path, write) -> None:
    """``write(tmp)`` beside ``path`` under a hidden ``.<stem>.tmp<pid><suffix>`` name (what
    :meth:`RunFolder.prune_checkpoints` sweeps after a kill), then an atomic rename."""
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    write(tmp)
    os.replace(tmp, path)
