"""Data sources and input pipelines.

Public API (used by training, ``evaluate`` and the export helper's calibration):

- :func:`resolve_source` (``--data`` value -> :class:`DataSource`), :func:`peek_class_names`
- :func:`split_validation` (deterministic stratified train/validation split)
- :func:`load_eval_arrays` (uint8 NHWC images + labels with the runtime's preprocessing)
- :func:`decode_split`, :class:`InMemoryData`, :class:`StreamingData` (tf.data pipelines)

Importing this package does not import TensorFlow; the pipelines import it when built.
"""

from hmff_edge.data.decode import Decoded, decode_split, load_eval_arrays, resize_rgb, select_split
from hmff_edge.data.pipeline import InMemoryData, StreamingData, augment_batch
from hmff_edge.data.sources import (
    CIFAR10_LABELS,
    DataSource,
    Split,
    peek_class_names,
    resolve_source,
    scan_class_folders,
    split_validation,
)

__all__ = [
    "CIFAR10_LABELS", "DataSource", "Decoded", "InMemoryData", "Split", "StreamingData",
    "augment_batch", "decode_split", "load_eval_arrays", "peek_class_names", "resize_rgb",
    "resolve_source",
    "scan_class_folders", "select_split", "split_validation",
]
