"""hmff-edge: HMFF-MobileNet from training to the device.

Importing this package is cheap on purpose: TensorFlow, onnxruntime and LiteRT are imported
only by the sub-modules that need them (see :mod:`hmff_edge._lazy`).
"""

__version__ = "0.1.0"

from hmff_edge.errors import HmffEdgeError  # noqa: E402

__all__ = ["HmffEdgeError", "__version__"]
