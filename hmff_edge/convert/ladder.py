"""The int8 ladder: post-training quantization first; where an int8 artifact misses the gate
and the run's training data is reachable, quantization-aware fine-tuning, then the same
conversion and verification again from the QAT model.

A QAT artifact is verified against the QAT Keras model it was converted from (the int8 file
must compute what that model computes) and, on labelled images, its accuracy must stay
within the gate's drop of the *float* model's: the user's cost of int8 is measured from the
model they trained. Its metadata and report row say ``quantization_path: qat``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hmff_edge.convert.images import ImageSet
from hmff_edge.convert.options import ExportOptions, Target
from hmff_edge.convert.report import ArtifactResult, ExportReport
from hmff_edge.convert.source import ResolvedSource
from hmff_edge.convert.spec import ConversionSpec
from hmff_edge.convert.verify import Verification, compare

QAT_RUN = "qat_run"


def needs_qat(result: ArtifactResult) -> bool:
    """An int8 artifact that converted cleanly but missed the accuracy gate."""
    v = result.verification
    return (result.quantization == "int8" and not result.problems and v is not None
            and not v["passed"])


def qat_unavailable(src: ResolvedSource, options: ExportOptions) -> str | None:
    """Why the QAT step cannot run for this export, or None when it can."""
    if src.qat:
        return "the source is a QAT run already (fine-tune it again with `hmff-edge qat`)"
    if not options.qat:
        return "QAT is off (--no-qat)"
    if src.kind != "run" or src.run_dir is None or not src.has_data:
        return "the source is not a run folder whose config.json names its training data"
    from hmff_edge.errors import ConfigError
    from hmff_edge.quant.finetune import check_data_reachable

    try:
        check_data_reachable(src.config, None)
    except ConfigError as exc:
        return str(exc)
    return None


def hint(result: ArtifactResult, why_no_qat: str | None) -> str | None:
    """What to do next for a failed artifact."""
    if result.passed:
        return None
    alt = ("--format tflite --quantize int16x8 (near float, reference kernels)"
           if result.format == "tflite" else "--calib-method entropy or percentile")
    if result.quantization == "int8" and result.extra.get("quantization_path") == "qat":
        return (f"QAT was not enough: try `hmff-edge qat RUN --epochs 5` and export that run, "
                f"or {alt}")
    if result.quantization == "int8":
        if why_no_qat:
            return (f"run with QAT (`hmff-edge qat RUN --out RUN_QAT`, then export RUN_QAT), or "
                    f"{alt}; the ladder skipped QAT: {why_no_qat}")
        return f"try {alt}, or check --diagnose"
    if result.quantization in ("dynamic", "int16x8"):
        return "use fp16, or int8 through QAT"
    return None


def fine_tune(src: ResolvedSource, options: ExportOptions, stage: Path) -> tuple[Path, dict]:
    """QAT fine-tune of the source run into ``stage/qat_run``; returns its folder and metrics."""
    from hmff_edge.quant.finetune import QATConfig, qat_finetune

    out = stage / QAT_RUN
    metrics = qat_finetune(src.run_dir, out, QATConfig(epochs=options.qat_epochs,
                                                       max_images=options.qat_images,
                                                       progress=options.progress))
    return out, metrics


def qat_reference(qat_dir: Path, x: np.ndarray) -> np.ndarray:
    """The QAT Keras model's probabilities on ``x`` (fake-quantized, in float64: see
    :func:`hmff_edge.quant.transform.float64_twin`)."""
    from hmff_edge.models import load_model
    from hmff_edge.quant.transform import reference_predictions

    return reference_predictions(load_model(qat_dir / "model.keras", compile=False), x)


def verify_qat(float_ref: np.ndarray, qat_ref: np.ndarray, got: np.ndarray,
               verify_set: ImageSet) -> Verification:
    """The gate for a QAT artifact: agreement with the QAT model, accuracy drop against the
    float model; the agreement with the float model is reported beside."""
    v = compare(qat_ref, got, verify_set.y, "int8")
    v.extra["float_top1_agreement"] = float((float_ref.argmax(1) == got.argmax(1)).mean())
    if verify_set.y is not None:
        float_acc = float((float_ref.argmax(1) == verify_set.y).mean())
        v.extra["float_accuracy"] = float_acc
        drop = 100 * (float_acc - (v.accuracy or 0.0))
        limit = v.tolerance["accuracy_drop_points"]
        if drop > limit:
            v.failures.append(f"accuracy drop against the float model {drop:.2f} points > "
                              f"{limit:g} ({float_acc:.2%} -> {v.accuracy:.2%})")
    return v


def qat_spec(base: ConversionSpec, target: Target, qat_dir: Path) -> ConversionSpec:
    """The child conversion spec of a target, from the QAT model (ONNX through the QAT
    model's full-integer TFLite, so that both files carry the trained ranges)."""
    return replace(base, keras=str(qat_dir / "model.keras"), fp32_tflite=None, fp32_onnx=None,
                   qat=base.qat or target.format == "onnx")


def summary(result: ArtifactResult) -> dict[str, Any]:
    """A short record of an earlier attempt, for the report's ``attempts``."""
    v = result.verification or {}
    return {"path": result.extra.get("quantization_path", "ptq"),
            "top1_agreement": v.get("top1_agreement"), "accuracy": v.get("accuracy"),
            "failures": list(result.problems) + list(v.get("failures") or [])}


def record_qat(report: ExportReport, metrics: dict[str, Any], epochs: int) -> None:
    report.qat = {"run": QAT_RUN, "epochs": epochs,
                  "seconds": metrics.get("seconds"), "accuracy": metrics.get("accuracy"),
                  "float_accuracy": metrics.get("float_accuracy"),
                  "accuracy_cost_points": metrics.get("accuracy_cost_points"),
                  "split": metrics.get("split")}


def record_source_qat(report: ExportReport, src: ResolvedSource) -> None:
    """``report.qat`` for a source that is a QAT run: what the artifacts' ranges came from."""
    q = src.qat or {}
    report.qat = {"run": str(src.run_dir or src.keras_path.parent), "epochs": q.get("epochs"),
                  "source_run": q.get("source_run"), "float_accuracy": q.get("float_accuracy")}
