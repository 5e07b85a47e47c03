"""tf.data pipeline: deterministic per (seed, epoch), eval pixels = shared preprocessing."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.tf


def _data():
    from hmff_edge.data import InMemoryData

    rng = np.random.default_rng(0)
    return InMemoryData(rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8),
                        np.arange(10) % 2)


def _batches(d, epoch, augment, seed=0):
    ds = d.train_dataset(batch_size=4, epoch=epoch, seed=seed, augment=augment,
                         mean=[0.5] * 3, std=[0.5] * 3)
    return [(x.numpy(), y.numpy()) for x, y in ds]


def test_train_order_and_augmentation_depend_only_on_seed_and_epoch():
    d = _data()
    a, b, c = _batches(d, 3, True), _batches(d, 3, True), _batches(d, 4, True)
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0][0], c[0][0])
    assert a[0][0].shape == (4, 16, 16, 3)  # static shape kept (the models need it)
    assert sorted(np.concatenate([y for _, y in a]).tolist()) == sorted((np.arange(10) % 2).tolist())


def test_without_augmentation_pixels_are_normalized_originals():
    from hmff_edge.preprocess import normalize

    d = _data()
    plain = _batches(d, 0, False)
    x = np.concatenate([b[0] for b in plain])
    # every output row is one of the original images, normalized like the runtime does
    ref = normalize(d.images, [0.5] * 3, [0.5] * 3)
    for row in x:
        assert min(np.abs(ref - row).max(axis=(1, 2, 3))) < 1e-6
    ev = np.concatenate([b[0].numpy() for b in d.eval_dataset(batch_size=4, mean=[0.5] * 3,
                                                               std=[0.5] * 3)])
    np.testing.assert_allclose(ev, ref, atol=1e-6)  # eval keeps the stored order


def test_augmentation_is_a_small_geometric_change():
    import tensorflow as tf

    from hmff_edge.data import augment_batch

    img = np.zeros((1, 32, 32, 3), np.float32)
    img[:, 8:24, 8:24] = 255.0
    out = augment_batch(tf.constant(img), tf.constant([1, 2], tf.int64)).numpy()
    assert out.shape == img.shape
    # content moved/rotated by at most 1/8 of the side + 10 degrees: most of the square stays
    assert 0.4 < (out > 127).mean() / (img > 127).mean() < 2.0
