"""tf.data pipelines for training and evaluation.

Two modes:

- **in memory** (the default when the decoded uint8 images fit ``cache_bytes``): images are
  decoded once in parallel (:func:`decode_split`) and held as one uint8 tensor; each epoch
  shuffles with a seed derived from ``(seed, epoch)``, so a resumed run sees the same order
  as an uninterrupted one.
- **streaming** (larger data, e.g. 224 px CIFAR on a small machine): file paths are
  shuffled, decoded by ``load_rgb`` in ``num_parallel_calls=AUTOTUNE`` workers, unreadable
  files filtered out (and counted), then batched.

Augmentation (the paper's random crop, horizontal flip, small rotation) is one batched
projective transform per batch with stateless random numbers keyed by (seed, epoch, step),
applied to the uint8 pixels before normalization; evaluation never augments.
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Sequence

import numpy as np

from hmff_edge.errors import DataError
from hmff_edge.preprocess import load_rgb

# Crop: shift by up to 1/8 of the side (4 px at 32, the classic CIFAR pad-4 crop), with the
# border reflected; rotation: up to +-10 degrees.
CROP_FRACTION = 0.125
MAX_ROTATION_DEG = 10.0


def _tf():
    from hmff_edge._lazy import keras

    keras()  # sets the quiet TF log level before TensorFlow is imported
    import tensorflow as tf

    return tf


def augment_batch(images, seed_pair, *, crop_fraction: float = CROP_FRACTION,
                  max_rotation_deg: float = MAX_ROTATION_DEG):
    """Random crop (shift), horizontal flip and rotation of a float32 NHWC batch.

    ``seed_pair`` is an int64 ``[2]`` tensor for the stateless generators, so the same
    (seed, epoch, step) gives the same augmentation.
    """
    # No import statement or keras() call here: AutoGraph traces this function inside
    # tf.data and warns about every builtin it cannot convert.
    tf = sys.modules.get("tensorflow") or _tf()
    shape = tf.shape(images)
    n = shape[0]
    h = tf.cast(shape[1], tf.float32)
    w = tf.cast(shape[2], tf.float32)
    seeds = tf.random.experimental.stateless_split(seed_pair, 4)
    angle = tf.random.stateless_uniform([n], seeds[0], -1.0, 1.0) * (max_rotation_deg * math.pi / 180)
    tx = tf.round(tf.random.stateless_uniform([n], seeds[1], -1.0, 1.0) * crop_fraction * w)
    ty = tf.round(tf.random.stateless_uniform([n], seeds[2], -1.0, 1.0) * crop_fraction * h)
    flip = tf.where(tf.random.stateless_uniform([n], seeds[3]) < 0.5, -1.0, 1.0)
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    # Output pixel (x, y) samples the input at R(angle) @ diag(flip, 1) @ (p - c) + c + t.
    a0, a1 = cos * flip, -sin
    b0, b1 = sin * flip, cos
    a2 = cx + tx - (a0 * cx + a1 * cy)
    b2 = cy + ty - (b0 * cx + b1 * cy)
    zeros = tf.zeros_like(a0)
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=shape[1:3],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")
    out.set_shape(images.shape)  # the op loses the static H, W the models need
    return out


def _normalizer(mean: Sequence[float], std: Sequence[float]):
    tf = _tf()
    m = tf.constant(np.asarray(mean, np.float32))
    s = tf.constant(np.asarray(std, np.float32))
    return lambda x: (x / 255.0 - m) / s


def _epoch_seed(seed: int, epoch: int) -> int:
    # Distinct, reproducible shuffle seed per epoch that fits in int64.
    return (int(seed) * 1_000_003 + int(epoch) * 7_919) % (2**31 - 1)


def distribute_options(ds):
    """Shard by data (not files) under multi-worker training: the sources are tensors."""
    tf = _tf()
    opt = tf.data.Options()
    opt.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(opt)


class InMemoryData:
    """A decoded split held as one uint8 tensor; builds per-epoch training datasets."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        tf = _tf()
        self.n = int(len(labels))
        self.images = images
        self.labels = labels
        self._base = tf.data.Dataset.from_tensor_slices(
            (tf.constant(images), tf.constant(labels.astype(np.int32))))

    def train_dataset(self, *, batch_size: int, epoch: int, seed: int, augment: bool,
                      mean, std, drop_remainder: bool = False):
        tf = _tf()
        norm = _normalizer(mean, std)
        ds = self._base.shuffle(self.n, seed=_epoch_seed(seed, epoch),
                                reshuffle_each_iteration=False)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        return _finish(ds, tf, norm, augment, seed, epoch)

    def eval_dataset(self, *, batch_size: int, mean, std):
        tf = _tf()
        norm = _normalizer(mean, std)
        ds = self._base.batch(batch_size)
        ds = ds.map(lambda x, y: (norm(tf.cast(x, tf.float32)), y),
                    num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)


class StreamingData:
    """File paths decoded on the fly in parallel; unreadable files skipped and counted."""

    def __init__(self, paths: list[str], labels: np.ndarray, img_size: int):
        self.paths = list(paths)
        self.labels = labels
        self.n = len(self.paths)
        self.img_size = int(img_size)
        self._lock = threading.Lock()
        self.skipped: dict[str, str] = {}

    def _decode_py(self, path):
        p = path.numpy().decode()
        try:
            return load_rgb(p, self.img_size), True
        except DataError as exc:
            with self._lock:
                self.skipped[p] = str(exc)
            return np.zeros((self.img_size, self.img_size, 3), np.uint8), False

    def _decoded(self, ds):
        tf = _tf()
        size = self.img_size

        def dec(path, label):
            img, ok = tf.py_function(self._decode_py, [path], [tf.uint8, tf.bool])
            img.set_shape([size, size, 3])
            return img, label, ok

        ds = ds.map(dec, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.filter(lambda x, y, ok: ok).map(lambda x, y, ok: (x, y))

    def _base(self):
        tf = _tf()
        return tf.data.Dataset.from_tensor_slices(
            (tf.constant(self.paths), tf.constant(self.labels.astype(np.int32))))

    def train_dataset(self, *, batch_size: int, epoch: int, seed: int, augment: bool,
                      mean, std, drop_remainder: bool = False):
        tf = _tf()
        ds = self._base().shuffle(self.n, seed=_epoch_seed(seed, epoch),
                                  reshuffle_each_iteration=False)
        ds = self._decoded(ds).batch(batch_size, drop_remainder=drop_remainder)
        return _finish(ds, tf, _normalizer(mean, std), augment, seed, epoch)

    def eval_dataset(self, *, batch_size: int, mean, std):
        tf = _tf()
        norm = _normalizer(mean, std)
        ds = self._decoded(self._base()).batch(batch_size)
        ds = ds.map(lambda x, y: (norm(tf.cast(x, tf.float32)), y),
                    num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)


def _finish(ds, tf, norm, augment: bool, seed: int, epoch: int):
    """Cast, augment (per batch, stateless) and normalize; prefetch."""
    base = tf.constant([int(seed) % (2**31 - 1), int(epoch)], tf.int64)

    def step(i, batch):
        x, y = batch
        x = tf.cast(x, tf.float32)
        if augment:
            x = augment_batch(x, base * tf.constant([1, 100_003], tf.int64) + tf.stack(
                [tf.constant(0, tf.int64), i]))
        return norm(x), y

    ds = ds.enumerate().map(step, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
