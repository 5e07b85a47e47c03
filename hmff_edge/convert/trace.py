"""Load the Keras model and trace the graph every exporter converts (TensorFlow side).

The export graph is a ``tf.function`` with a FIXED batch (:data:`TRACE_BATCH`), traced inside
``hmff_edge.models.layers.export_mode()``:

* export mode makes every grouped 1x1 convolution of the zoo one grouped ``tf.nn.conv2d``
  (TFLite CONV_2D with a grouped filter, ONNX ``Conv(group=g)``), also where training used
  the batched-matmul fallback (a TensorFlow build without a grouped-conv gradient);
* a fixed batch lets the converter fuse a dilated depthwise convolution into one native
  dilated DEPTHWISE_CONV_2D; with a dynamic batch it becomes SPACE_TO_BATCH_ND +
  DEPTHWISE_CONV_2D + BATCH_TO_SPACE_ND. The batch stays resizable at run time because the
  graph's reshapes use ``-1`` for the batch (checked by verification, which runs batches > 1).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from hmff_edge._lazy import keras as _keras
from hmff_edge._lazy import require

# The batch the TFLite graph is traced with. Any fixed batch lets the converter fuse a
# dilated depthwise convolution; 2 rather than 1 because at batch 1 a feature map of 1x1
# (a 32 px input at the end of the network) makes every tensor [1, 1, 1, C] and the
# converter then rewrites ADD into RESHAPE(to [C]) + broadcast ADD, a reshape that pins the
# batch to 1. The converted file is re-declared as batch 1 (resizable) afterwards.
TRACE_BATCH = 2
INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"


def load_keras(path: str | Path) -> Any:
    """Load a ``.keras`` file for conversion (no optimizer state), zoo layers registered."""
    from hmff_edge.models import load_model

    return load_model(path, compile=False)


def export_context() -> contextlib.AbstractContextManager:
    """The zoo's ``export_mode()``, or a no-op for a model without zoo layers."""
    try:
        from hmff_edge.models.layers import export_mode
    except ImportError:
        return contextlib.nullcontext()
    return export_mode()


def serving_function(model: Any, img_size: int, batch: int | None = 1) -> Any:
    """Concrete function ``input -> {"probabilities": ...}`` traced in export mode."""
    tf = require("tensorflow")
    spec = tf.TensorSpec([batch, img_size, img_size, 3], tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def serve(x):
        return {OUTPUT_NAME: model(x, training=False)}

    with export_context():
        return serve.get_concrete_function()


def frozen_function(model: Any, img_size: int, batch: int = TRACE_BATCH) -> Any:
    """The fixed-batch serving function with its variables folded into constants."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    return convert_variables_to_constants_v2(serving_function(model, img_size, batch=batch))


def _hard_swish_int8(x):
    """``x * relu6(x + 3) / 6`` as ``x * clip(x / 6 + 1/2, 0, 1)``: the converter does not
    fuse this spelling back into HARD_SWISH (it does fuse ``x * relu6(x + 3) * (1/6)`` in
    any order), and its gate has the fixed range [0, 1], so int8 keeps it at 1/255 steps."""
    tf = require("tensorflow")
    return x * tf.minimum(tf.maximum(x * (1.0 / 6.0) + 0.5, 0.0), 1.0)


def decompose_for_int8(model: Any) -> int:
    """Rewrite what full-integer TFLite runs slowly; returns how many layers were changed.

    LiteRT's XNNPACK delegate takes float HARD_SWISH but not its int8 form, which falls back
    to the reference kernel: in an int8 hmff-mobilenet-16ch-hs, 43 HARD_SWISH ops were 20 of
    27 ms at 224 px, 1 thread. The same function as four int8 elementwise ops runs in the
    delegate (a 112x112x64 conv + hard_swish: 3.1 ms -> 0.8 ms). Top-1 agreement with Keras
    on 1,000 CIFAR-10 test images of a weak (34%) hmff-mobilenet-32ch-hs: 75.4% against
    77.0% for HARD_SWISH. Float exports keep the single HARD_SWISH, faster there.
    """
    keras = _keras()
    changed = 0
    for layer in model._flatten_layers():
        if (isinstance(layer, keras.layers.Activation)
                and getattr(layer.activation, "__name__", "") in ("hard_swish", "hard_silu")):
            layer.activation = _hard_swish_int8
            changed += 1
    return changed
