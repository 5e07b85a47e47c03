"""SavedModel export: a ``serving_default`` signature with a dynamic batch.

TensorFlow Serving and ``tf.saved_model.load`` run any batch, so this graph keeps the
batch dynamic (a dilated depthwise runs through SPACE_TO_BATCH there, which TF handles).
It is traced in export mode like the others. The metadata JSON is embedded as
``assets/hmff_edge.json`` inside the folder.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from hmff_edge.convert.spec import ConversionSpec
from hmff_edge.metadata import METADATA_KEY, TensorSpec, atomic_write_bytes

SIGNATURE = "serving_default"


def convert(spec: ConversionSpec) -> dict:
    """Child process: Keras file -> SavedModel folder ``spec.out``."""
    from hmff_edge._lazy import require
    from hmff_edge.convert.trace import load_keras, serving_function

    tf = require("tensorflow")
    model = load_keras(spec.keras)
    fn = serving_function(model, spec.img_size, batch=None)
    module = tf.Module()
    module.model = model  # tracks the variables
    module.serve = fn
    tf.saved_model.save(module, spec.out, signatures={SIGNATURE: fn})
    return {"path": spec.out}


_LOADED: dict[tuple[str, float], object] = {}


def _signature(path: str | Path):
    """The serving signature, loaded once per folder version (loading is slow)."""
    import tensorflow as tf

    key = (str(Path(path).resolve()), (Path(path) / "saved_model.pb").stat().st_mtime)
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = tf.saved_model.load(str(path))
    return _LOADED[key].signatures[SIGNATURE]


def op_histogram(path: str | Path) -> Counter:
    """TF op types of the serving graph and its function library (Const/NoOp left out)."""
    fn = _signature(path)
    gdef = fn.graph.as_graph_def()
    nodes = list(gdef.node) + [n for f in gdef.library.function for n in f.node_def]
    skip = {"Const", "NoOp", "Identity", "Placeholder", "ReadVariableOp", "VarHandleOp",
            "StatefulPartitionedCall", "PartitionedCall"}
    return Counter(n.op for n in nodes if n.op not in skip)


def embed_metadata(src: str | Path, dst: str | Path, meta_json: str) -> None:
    """Write the JSON into the folder (``src`` is already the folder to publish)."""
    atomic_write_bytes(Path(src) / "assets" / f"{METADATA_KEY}.json", meta_json.encode())
    if Path(dst) != Path(src):
        Path(src).rename(dst)


def io_specs(path: str | Path, labels: int) -> tuple[TensorSpec, TensorSpec]:
    fn = _signature(path)
    (iname, ispec), = fn.structured_input_signature[1].items()
    (oname, ospec), = fn.structured_outputs.items()
    return (TensorSpec(name=iname, dtype="float32", shape=[-1, *ispec.shape[1:]]),
            TensorSpec(name=oname, dtype="float32", shape=[-1, *ospec.shape[1:]]))


def predict(path: str | Path, x: np.ndarray, batch: int = 64) -> np.ndarray:
    import tensorflow as tf

    fn = _signature(path)
    (iname, _), = fn.structured_input_signature[1].items()
    out = []
    for start in range(0, len(x), batch):
        res = fn(**{iname: tf.constant(x[start : start + batch])})
        out.append(next(iter(res.values())).numpy().astype(np.float32))
    return np.concatenate(out)
