"""TF-free HTTP serving of exported classifiers.

Open Inference Protocol V2 (JSON and binary tensors, ``tritonclient[http]`` compatible),
TensorFlow Serving REST, image classification, Prometheus metrics, dynamic batching with a
bounded queue, input limits, API key, graceful shutdown. See ``hmff-edge serve --help``.
"""

from hmff_edge.serve.app import ServeConfig, ServerState, create_app
from hmff_edge.serve.registry import load_models, model_files
from hmff_edge.serve.server import serve

__all__ = ["ServeConfig", "ServerState", "create_app", "load_models", "model_files", "serve"]
