"""Compare an artifact's probabilities with the Keras model's, under per-quantization limits.

Limits:
* fp32 (``none``): max |p_artifact - p_keras| <= 1e-4 and 100% top-1 agreement;
* fp16: max abs diff <= 1e-2;
* dynamic, int8 and int16x8: top-1 agreement >= 97% and, when the verification images carry labels
  (``--eval-data`` with class folders), an accuracy drop of at most 1.0 point.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

TOLERANCES: dict[str, dict[str, float]] = {
    "none": {"max_abs_diff": 1e-4, "top1_agreement": 1.0},
    "fp16": {"max_abs_diff": 1e-2},
    "dynamic": {"top1_agreement": 0.97, "accuracy_drop_points": 1.0},
    "int8": {"top1_agreement": 0.97, "accuracy_drop_points": 1.0},
    "int16x8": {"top1_agreement": 0.97, "accuracy_drop_points": 1.0},
}


class GateResult:
    """A check's record (a dataclass with a ``failures`` list): it passed when that list is
    empty; :meth:`to_dict` is the JSON-ready record with ``passed``."""

    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        return d


@dataclass
class Verification(GateResult):
    """The numbers behind a pass/fail decision."""

    images: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    accuracy: float | None
    reference_accuracy: float | None
    tolerance: dict[str, float]
    failures: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # figures beside the gate (QAT: float agreement)


def compare(reference: np.ndarray, got: np.ndarray, y: np.ndarray | None,
            quantization: str) -> Verification:
    """Judge ``got`` (artifact probabilities) against ``reference`` (Keras probabilities)."""
    if got.shape != reference.shape:
        tol = TOLERANCES[quantization]
        return Verification(len(reference), float("inf"), float("inf"), 0.0, None, None, tol,
                            [f"output shape {got.shape} != Keras {reference.shape}"])
    tol = TOLERANCES[quantization]
    diff = np.abs(got.astype(np.float64) - reference.astype(np.float64))
    top_ref, top_got = reference.argmax(1), got.argmax(1)
    agreement = float((top_ref == top_got).mean())
    acc = ref_acc = None
    if y is not None:
        acc, ref_acc = float((top_got == y).mean()), float((top_ref == y).mean())
    v = Verification(images=len(reference), max_abs_diff=float(diff.max()),
                     mean_abs_diff=float(diff.mean()), top1_agreement=agreement,
                     accuracy=acc, reference_accuracy=ref_acc, tolerance=dict(tol))
    if not np.isfinite(got).all():
        v.failures.append("non-finite probabilities")
    if "max_abs_diff" in tol and not v.max_abs_diff <= tol["max_abs_diff"]:
        v.failures.append(f"max abs diff {v.max_abs_diff:.3g} > {tol['max_abs_diff']:g}")
    if "top1_agreement" in tol and agreement < tol["top1_agreement"]:
        v.failures.append(f"top-1 agreement {agreement:.2%} < {tol['top1_agreement']:.0%}")
    if "accuracy_drop_points" in tol and acc is not None and ref_acc is not None:
        drop = 100 * (ref_acc - acc)
        if drop > tol["accuracy_drop_points"]:
            v.failures.append(f"accuracy drop {drop:.2f} points > {tol['accuracy_drop_points']:g}"
                              f" ({ref_acc:.2%} -> {acc:.2%})")
    return v


def predict_in_runtime(path, x: np.ndarray, batch: int) -> np.ndarray:
    """Probabilities for normalized float ``x`` through the device runtime
    (:func:`hmff_edge.runtime.load`, which reads the metadata embedded in the file), in
    batches of ``batch`` and a smaller last one: a check of the resizable batch too."""
    from hmff_edge.errors import HmffEdgeError, VerificationError
    from hmff_edge.runtime import load

    try:
        predictor = load(path, threads=1)
        out = []
        for start in range(0, len(x), batch):
            chunk = x[start : start + batch]
            y = predictor.predict(chunk)
            if y.shape[0] != len(chunk):
                raise VerificationError(f"{path}: a batch of {len(chunk)} gave {y.shape[0]} "
                                        "outputs (the graph hard-codes the batch)")
            out.append(np.asarray(y, np.float32))
        return np.concatenate(out)
    except HmffEdgeError:
        raise
    except Exception as exc:  # engine errors (resize, invoke) are verification failures
        raise VerificationError(f"{path}: {type(exc).__name__}: {str(exc)[:300]}") from exc


def batch1_latency_ms(path, x1: np.ndarray, *, warmup: int = 3, runs: int = 20) -> float:
    """Median batch-1 latency (ms, one thread) of an artifact in its runtime."""
    import time

    from hmff_edge.runtime import load

    predictor = load(path, threads=1)
    for _ in range(warmup):
        predictor.predict(x1)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        predictor.predict(x1)
        times.append(time.perf_counter() - t)
    return round(1000 * float(np.median(times)), 3)
