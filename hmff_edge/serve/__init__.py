"""TF-free HTTP serving of exported classifiers.

Open Inference Protocol V2 (JSON and binary tensors, ``tritonclient[http]`` compatible, per
version, with the model-repository extension), TensorFlow Serving REST, image
classification, Prometheus metrics named after Triton's, a versioned model repository with
hot reload, dynamic batching with a bounded queue, one memory budget, connection and body
timeouts, API key, graceful shutdown. See docs/serving.md and ``hmff-edge serve --help``.
"""

from hmff_edge.serve.app import create_app
from hmff_edge.serve.config import ServeConfig
from hmff_edge.serve.metrics import Metrics
from hmff_edge.serve.models import ModelManager
from hmff_edge.serve.repository import VersionPolicy, scan
from hmff_edge.serve.server import serve

__all__ = ["Metrics", "ModelManager", "ServeConfig", "VersionPolicy", "create_app", "scan", "serve"]
