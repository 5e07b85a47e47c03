"""Shared fixtures and the test groups.

Groups (pytest markers, declared in pyproject.toml): ``tf`` (needs TensorFlow), ``slow``
(skipped unless ``--runslow``), ``realdata`` (needs ../shared/data/cifar10, skipped when
absent), ``server`` (starts a real server on 127.0.0.1), ``ssh`` (local OpenSSH server).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from hmff_edge._lazy import tensorflow_env_defaults

REPO = Path(__file__).resolve().parents[1]
CIFAR10 = Path(os.environ.get("HMFF_CIFAR10", REPO.parent / "shared" / "data" / "cifar10"))

# The TensorFlow settings the product uses (oneDNN on for Linux x86-64 unless set), applied
# before any test imports TensorFlow directly.
tensorflow_env_defaults()
# int8 exports of the tests' 32 px models would time every grouped layer's graph forms
# (hmff_edge.convert.forms; the shipped table holds 224 px shapes): keep the grouped form.
os.environ.setdefault("HMFF_EDGE_FORM_TIMING", "0")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cifar10_dir() -> Path:
    """The real CIFAR-10 image folder, or a clean skip on a fresh clone without ../shared."""
    if not (CIFAR10 / "train").is_dir() or not (CIFAR10 / "test").is_dir():
        pytest.skip(f"real CIFAR-10 not found at {CIFAR10}")
    return CIFAR10


def make_image_folder(root: Path, classes=("cat", "dog", "frog"), per_class=6, size=20,
                      seed=0) -> Path:
    """A small image folder with per-class colour statistics so a model can learn it."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for ci, name in enumerate(classes):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = np.zeros((size, size, 3), np.float32)
            base[..., ci % 3] = 200
            img = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"{i:03d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "images")
