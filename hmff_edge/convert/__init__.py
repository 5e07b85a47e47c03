"""Export a trained model to SavedModel, TFLite (fp32/fp16/dynamic/int8) and ONNX (fp32/int8),
each converted in a child process, checked for graph quality, verified against the Keras
model in its real runtime, and published with embedded + sidecar metadata.

    from hmff_edge.convert import ExportOptions, export
    report = export("runs/cifar10-hmff32", ExportOptions(formats="all"))
    print(report.table())

Importing this package is TF-free; TensorFlow is imported when ``export`` runs.
"""

from hmff_edge.convert.options import FORMATS, IO_DTYPES, QUANTIZATIONS, SUPPORTED, ExportOptions, Target
from hmff_edge.convert.pipeline import REPORT_NAME, export
from hmff_edge.convert.report import ArtifactResult, ExportReport
from hmff_edge.convert.verify import TOLERANCES, Verification

__all__ = [
    "FORMATS", "IO_DTYPES", "QUANTIZATIONS", "REPORT_NAME", "SUPPORTED", "TOLERANCES",
    "ArtifactResult", "ExportOptions", "ExportReport", "Target", "Verification", "export",
]
