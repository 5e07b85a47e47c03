"""The export report: one record per artifact, a text table and ``export_report.json``."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hmff_edge.metadata import atomic_write_bytes
from hmff_edge.tables import markdown_table, text_table

TABLE_COLUMNS = [
    ("artifact", "format"), ("via", "via"), ("size_mb", "size MB"), ("op_count", "ops"),
    ("latency", "ms (b1)"), ("max_diff", "max diff"), ("agreement", "top-1 agree"),
    ("accuracy", "accuracy (drop)"), ("status", "status"),
]


@dataclass
class ArtifactResult:
    """One exported file (or SavedModel folder) and how it fared."""

    label: str  # tflite-int8, onnx-fp32, savedmodel
    format: str
    quantization: str
    path: str
    size_bytes: int = 0
    ops: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # graph-quality failures
    verification: dict[str, Any] | None = None
    seconds: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    published: bool = False  # moved to its final name (only artifacts that passed)
    extra: dict[str, Any] = field(default_factory=dict)  # quantization_path: ptq | qat
    attempts: list[dict[str, Any]] = field(default_factory=list)  # earlier ladder steps
    latency_ms: float | None = None  # batch 1, one thread, in the artifact's runtime
    diagnosis: dict[str, Any] | None = None  # per-layer int8 error (--diagnose, failures)
    hint: str | None = None  # what to do next when it failed

    @property
    def passed(self) -> bool:
        return not self.problems and (self.verification is None or self.verification["passed"])

    def row(self) -> dict[str, Any]:
        v = self.verification or {}
        acc = v.get("accuracy")
        ref = v.get("reference_accuracy")
        return {
            "artifact": self.label,
            "via": self.extra.get("quantization_path", "-"),
            "latency": "-" if self.latency_ms is None else f"{self.latency_ms:.2f}",
            "size_mb": f"{self.size_bytes / 1e6:.3f}",
            "op_count": sum(self.ops.values()),
            "max_diff": f"{v['max_abs_diff']:.2e}" if v else "-",
            "agreement": f"{100 * v['top1_agreement']:.2f}%" if v else "-",
            "accuracy": (f"{100 * acc:.2f}% ({100 * (acc - ref):+.2f})" if acc is not None
                         else "-"),
            "status": "ok" if self.passed else "FAIL: " + "; ".join(
                self.problems + (v.get("failures") or [])) + (f" -> {self.hint}" if self.hint
                                                              else ""),
        }


@dataclass
class ExportReport:
    """What ``export`` produced; ``passed`` is False when any artifact failed."""

    source: str
    model: str
    img_size: int
    out_dir: str
    artifacts: list[ArtifactResult] = field(default_factory=list)
    keras_accuracy: float | None = None
    verify_images: int = 0
    verify_source: str = ""
    calibration: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    qat: dict[str, Any] | None = None  # the ladder's QAT fine-tune, when it ran

    @property
    def passed(self) -> bool:
        return all(a.passed for a in self.artifacts)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        for a, ad in zip(self.artifacts, d["artifacts"]):
            ad["passed"] = a.passed
            ad["size_mb"] = round(a.size_bytes / 1e6, 4)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportReport:
        """Rebuild a report from ``export_report.json`` (derived keys are dropped)."""
        art_fields = set(ArtifactResult.__dataclass_fields__)
        arts = [ArtifactResult(**{k: v for k, v in a.items() if k in art_fields})
                for a in data.get("artifacts", [])]
        known = set(cls.__dataclass_fields__) - {"artifacts"}
        return cls(artifacts=arts, **{k: v for k, v in data.items() if k in known})

    def rows(self) -> list[dict[str, Any]]:
        return [a.row() for a in self.artifacts]

    def table(self) -> str:
        head = (f"{self.model} {self.img_size}x{self.img_size} from {self.source}; verified on "
                f"{self.verify_images} images ({self.verify_source})")
        if self.keras_accuracy is not None:
            head += f"; Keras accuracy {100 * self.keras_accuracy:.2f}%"
        if self.qat and self.qat.get("source_run"):  # the source is a QAT run
            fa = self.qat.get("float_accuracy")
            head += (f"\nQAT run fine-tuned from {self.qat['source_run']}"
                     + (f" (float accuracy {100 * fa:.2f}%)" if fa is not None else ""))
        elif self.qat:
            head += (f"\nQAT fine-tune ({self.qat['epochs']} epochs, {self.qat['seconds']:.0f} s): "
                     f"QAT Keras accuracy {100 * (self.qat['accuracy'] or 0):.2f}% on the "
                     f"{self.qat['split']} split (float {100 * (self.qat['float_accuracy'] or 0):.2f}%)")
        text = head + "\n" + text_table(self.rows(), TABLE_COLUMNS)
        for a in self.artifacts:
            if a.diagnosis:
                text += "\n\n" + diagnosis_table(a)
        return text

    def markdown(self) -> str:
        return markdown_table(self.rows(), TABLE_COLUMNS)

    def write(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        atomic_write_bytes(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode())
        return path


def path_size(path: str | os.PathLike) -> int:
    """Bytes of a file, or of every file below a folder."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def diagnosis_table(a: ArtifactResult, worst: int = 8) -> str:
    """The worst layers of an artifact's per-layer int8 error, as text."""
    d = a.diagnosis or {}
    if d.get("skipped"):
        return f"{a.label}: no per-layer table: {d['skipped']}"
    rows = [{"op": r["op"], "tensor": r["tensor"][-60:],
             "err": "-" if r["rmse_scale"] is None else f"{r['rmse_scale']:.3f}",
             "range": "[" + ", ".join("-" if v is None else f"{v:.3g}" for v in r["range"]) + "]"}
            for r in d.get("worst", [])[:worst]]
    head = (f"{a.label}: per-layer error of the float model's post-training int8 conversion, "
            f"{d.get('layers', 0)} ops (RMSE in quantization steps; 0.289 is pure rounding; "
            f"median {d.get('median_rmse_scale') or 0:.3f})"
            + (f", plot {d['plot']}" if d.get("plot") else ""))
    return head + "\n" + text_table(rows, [("op", "op"), ("tensor", "tensor"),
                                              ("err", "rmse/scale"), ("range", "range")])
