"""TF-free inference runtime: load an exported ``.tflite`` / ``.onnx`` classifier and run it.

    from hmff_edge import runtime
    p = runtime.load("exports/model.tflite", threads=2)
    p.classify(["cat.jpg"], top_k=3)

Imports only numpy, Pillow and the engine (ai-edge-litert / tflite-runtime or onnxruntime),
never TensorFlow: this is what runs on a device with only ``hmff-edge[runtime]`` installed.
"""

from hmff_edge.runtime.predictor import Predictor, load, load_metadata
from hmff_edge.runtime.tflite_metadata import read_tflite_metadata

MODEL_SUFFIXES = (".tflite", ".onnx")

__all__ = ["MODEL_SUFFIXES", "Predictor", "load", "load_metadata", "read_tflite_metadata"]
