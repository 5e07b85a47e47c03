"""Real CIFAR-10 (../shared/data/cifar10): the data layer on the real image folder.
Skipped cleanly on a fresh clone without ../shared (the ``cifar10_dir`` fixture)."""

from __future__ import annotations

import numpy as np
import pytest

from hmff_edge.data import CIFAR10_LABELS, load_eval_arrays, resolve_source
from hmff_edge.preprocess import load_rgb

pytestmark = pytest.mark.realdata


def test_cifar10_folder_is_read_as_train_and_test_splits(cifar10_dir):
    src = resolve_source(str(cifar10_dir))
    assert src.class_names == list(CIFAR10_LABELS)
    assert len(src.train) == 50_000 and len(src.test) == 5_000
    assert np.bincount(src.test.labels, minlength=10).tolist() == [500] * 10


def test_eval_arrays_are_the_runtime_preprocessing(cifar10_dir):
    """Calibration/verification pixels equal the device runtime's load_rgb, label for label."""
    images, labels = load_eval_arrays(str(cifar10_dir), 48, limit=24, split="test", seed=3)
    src = resolve_source(str(cifar10_dir))
    idx = np.sort(np.random.default_rng(3).permutation(len(src.test))[:24])
    expected = np.stack([load_rgb(src.test.paths[i], 48) for i in idx])
    assert images.shape == (24, 48, 48, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, expected)
    np.testing.assert_array_equal(labels, src.test.labels[idx])
    assert images.std() > 10  # real photographs, not blank decodes
