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
