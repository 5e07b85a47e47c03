"""``export(source, options)``: convert, check, verify, then publish every artifact.

Order of work, all inside a hidden staging folder in the output folder:

1. resolve SOURCE; load calibration images (int8) and verification images;
2. for each target, convert in a child process, embed the metadata, read the op histogram
   and check the graph, run the artifact in its real runtime and compare with Keras;
3. move the artifacts that passed to their final names (``os.replace``) with their sidecar
   JSON, and write ``export_report.json`` (every row, failed ones marked unpublished).

A failed artifact is never written under its final name; when any failed, ``export`` raises
:class:`VerificationError` (exit 3) with ``.report`` attached. When none passed, the output
folder is left as it was (and removed if this call created it). A conversion error stops
the export before anything is published.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hmff_edge import __version__
from hmff_edge.convert._child import run_in_child
from hmff_edge.convert.diagnose import diagnose
from hmff_edge.convert.images import ImageSet, load_images, load_run_images
from hmff_edge.convert.options import CALIBRATED, ExportOptions, Target
from hmff_edge.convert.registry import get_exporter
from hmff_edge.convert.report import ArtifactResult, ExportReport, path_size
from hmff_edge.convert.source import ResolvedSource, resolve_source
from hmff_edge.convert.spec import ConversionSpec
from hmff_edge.convert.verify import batch1_latency_ms, compare
from hmff_edge.errors import ArtifactError, ConfigError, VerificationError
from hmff_edge.metadata import ArtifactMetadata, write_sidecar

REPORT_NAME = "export_report.json"


def export(source: str | os.PathLike, options: ExportOptions | None = None) -> ExportReport:
    """Export SOURCE (run folder, ``.keras`` file or variant name) as ``options`` asks.

    Returns the :class:`ExportReport` of published, verified artifacts. Raises
    :class:`VerificationError` (with ``.report``) when a check fails, :class:`ArtifactError`
    for a bad SOURCE, :class:`ConfigError` / :class:`DataError` for bad options or data.
    """
    options = options or ExportOptions()
    targets = options.validate()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hmff-export-") as work:
        src = resolve_source(source, img_size=options.img_size, classes=options.classes,
                             workdir=Path(work))
        _check_qat_targets(src, targets)
        out = Path(options.out) if options.out else _default_out(src)
        calib = (_calibration(src, options)
                 if any(t.quantization in CALIBRATED for t in targets) else None)
        verify_set = _verification_set(src, options, calib) if options.verify else None
        calib_npy = None
        if calib is not None:
            calib_npy = Path(work) / "calib.npy"
            np.save(calib_npy, calib.x)
        report = ExportReport(
            source=str(source), model=src.model, img_size=src.img_size, out_dir=str(out),
            calibration=None if calib is None else {"source": calib.source, "images": len(calib)},
            options=_options_dict(options),
        )
        reference = None
        if verify_set is not None:
            reference = _keras_predict(src, verify_set.x)
            report.verify_images, report.verify_source = len(verify_set), verify_set.source
            if verify_set.y is not None:
                report.keras_accuracy = float((reference.argmax(1) == verify_set.y).mean())
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
        published = False
        try:
            produced = _convert_all(src, options, targets, stage, calib_npy, verify_set,
                                    reference, report)
            if options.verify_on and verify_set is not None:
                from hmff_edge.device.verify import check_export

                check_export(options.verify_on, report, produced, verify_set.x)
            report.seconds = round(time.perf_counter() - t0, 2)
            good = [item for item, a in zip(produced, report.artifacts) if a.passed]
            for a in report.artifacts:
                a.published = a.passed
            if good:
                _publish(good, out, report, stage)
                published = True
            if not report.passed:
                failed = [f"{a.label}: " + "; ".join(
                    a.problems + ((a.verification or {}).get("failures") or []))
                    for a in report.artifacts if not a.passed]
                where = (f"published the {len(good)} verified artifact(s) to {str(out)!r}, not "
                         "the failed ones" if good else f"nothing written to {str(out)!r}")
                err = VerificationError(f"export failed ({where}): " + " | ".join(failed))
                err.report = report  # type: ignore[attr-defined]
                raise err
        finally:
            shutil.rmtree(stage, ignore_errors=True)
            if created and not published:  # leave no trace of a failed export
                with contextlib.suppress(OSError):
                    out.rmdir()
    return report


def _check_qat_targets(src: ResolvedSource, targets: list[Target]) -> None:
    """A QAT run's model simulates int8 rounding in float: its float formats would be files
    that round like int8 and match no runtime's float kernels, so they are refused."""
    floats = [t.label for t in targets if t.quantization != "int8"]
    if src.qat and floats:
        run = src.qat.get("source_run") or "the float run it was fine-tuned from"
        raise ConfigError(f"{src.origin!r} is a QAT run: it exports int8 only (tflite-int8, "
                          f"onnx-int8), not {', '.join(floats)}; export {run} for float formats")


def _convert_all(src: ResolvedSource, options: ExportOptions, targets: list[Target],
                 stage: Path, calib_npy: Path | None, verify_set: ImageSet | None,
                 reference: np.ndarray | None, report: ExportReport,
                 ) -> list[tuple[Path, Path, ArtifactMetadata]]:
    from tqdm import tqdm

    from hmff_edge.convert import ladder

    produced = []
    raw_paths: dict[str, Path] = {}  # label -> converted file before metadata (dependencies)
    if src.qat:
        ladder.record_source_qat(report, src)
    bar = tqdm(targets, desc="export", unit="artifact", disable=not options.progress)
    for target in bar:
        bar.set_postfix_str(target.label)
        spec, path = _spec(src, options, target, stage, calib_npy, raw_paths), "ptq"
        if src.qat:  # a QAT run (int8 targets only, _check_qat_targets): its trained ranges
            spec, path = ladder.qat_spec(spec, target, src.keras_path.parent), "qat"
        item, result = _convert_one(src, options, target, spec, stage, verify_set, reference,
                                    report, path=path)
        raw_paths[target.label] = Path(spec.out)
        report.artifacts.append(result)
        produced.append(item)
    _int8_ladder(src, options, targets, stage, calib_npy, verify_set, reference, report,
                 produced)
    return produced


def _spec(src: ResolvedSource, options: ExportOptions, target: Target, stage: Path,
          calib_npy: Path | None, raw_paths: dict[str, Path], tag: str = "") -> ConversionSpec:
    return ConversionSpec(
        keras=str(src.keras_path), img_size=src.img_size,
        quantization=target.quantization, out=str(stage / f"raw{tag}_{target.filename}"),
        calib=str(calib_npy) if calib_npy else None, io_dtype=options.io_dtype,
        opset=options.opset, calib_method=options.calib_method,
        fp32_tflite=str(raw_paths["tflite-fp32"]) if "tflite-fp32" in raw_paths else None,
        fp32_onnx=str(raw_paths["onnx-fp32"]) if "onnx-fp32" in raw_paths else None,
        optimize=options.optimize,
        form_table=str(options.form_table) if options.form_table else None,
    )


def _convert_one(src: ResolvedSource, options: ExportOptions, target: Target,
                 spec: ConversionSpec, stage: Path, verify_set: ImageSet | None,
                 reference: np.ndarray | None, report: ExportReport, *, path: str = "ptq",
                 judge=None) -> tuple[tuple[Path, Path, ArtifactMetadata], ArtifactResult]:
    """Convert one target (child process), embed metadata, check and verify it.

    ``judge(got) -> Verification`` replaces the plain comparison with ``reference``
    (the QAT step's gate)."""
    t1 = time.perf_counter()
    exporter = get_exporter(target.format)
    raw = Path(spec.out)
    final = stage / (target.filename if path == "ptq" else f"{path}_{target.filename}")
    child = run_in_child(exporter.module, "convert", spec, what=f"{target.label} conversion")
    ins, outs = exporter.io_specs(raw, src.num_classes)
    meta = _metadata(src, target, ins, outs, report, path)
    if child.get("graph_forms"):  # hmff_edge.convert.forms: which form each grouped 1x1 took
        meta.extra["graph_forms"] = child["graph_forms"]
    if child.get("int8_activations"):  # hmff_edge.convert.int8_activations: hard_swish spelling
        meta.extra["int8_activations"] = child["int8_activations"]
    if exporter.is_dir:  # SavedModel: embed in place, then the folder is the artifact
        exporter.embed_metadata(raw, raw, meta.to_json())
        final = raw
    else:
        exporter.embed_metadata(raw, final, meta.to_json())
    hist = exporter.op_histogram(final)
    result = ArtifactResult(label=target.label, format=target.format,
                            quantization=target.quantization, path=target.filename,
                            size_bytes=path_size(final), ops=dict(sorted(hist.items())),
                            metadata=meta.to_dict())
    if target.quantization in ("int8", "int16x8"):
        result.extra["quantization_path"] = path
    result.problems = _graph_problems(target, final, hist, src)
    if verify_set is not None and reference is not None:
        try:
            got = exporter.predict(final, verify_set.x)
            v = judge(got) if judge else compare(reference, got, verify_set.y,
                                                 target.quantization)
            result.verification = v.to_dict()
        except (VerificationError, ArtifactError) as exc:  # cannot run: a failed check
            result.problems.append(str(exc))
    if options.latency and not exporter.is_dir and verify_set is not None:
        result.latency_ms = batch1_latency_ms(final, verify_set.x[:1])
    result.seconds = round(time.perf_counter() - t1, 2)
    return (final, Path(target.filename), meta), result


def _int8_ladder(src: ResolvedSource, options: ExportOptions, targets: list[Target],
                 stage: Path, calib_npy: Path | None, verify_set: ImageSet | None,
                 reference: np.ndarray | None, report: ExportReport, produced: list) -> None:
    """Post-training int8 that missed the gate -> QAT fine-tune -> convert and verify again
    (see :mod:`hmff_edge.convert.ladder`); per-layer diagnosis of int8 that still fails."""
    from hmff_edge.convert import ladder

    failed = [i for i, a in enumerate(report.artifacts) if ladder.needs_qat(a)]
    why_not = ladder.qat_unavailable(src, options) if failed else None
    if failed and why_not is None and verify_set is not None and reference is not None:
        qat_dir, metrics = ladder.fine_tune(src, options, stage)
        ladder.record_qat(report, metrics, options.qat_epochs)
        qat_ref = ladder.qat_reference(qat_dir, verify_set.x)
        for i in failed:
            target = targets[i]
            spec = ladder.qat_spec(_spec(src, options, target, stage, calib_npy, {}, "_qat"),
                                   target, qat_dir)
            item, result = _convert_one(
                src, options, target, spec, stage, verify_set, qat_ref, report, path="qat",
                judge=lambda got: ladder.verify_qat(reference, qat_ref, got, verify_set))
            result.attempts = [ladder.summary(report.artifacts[i])]
            report.artifacts[i], produced[i] = result, item
    for i, a in enumerate(report.artifacts):
        if a.quantization == "int8" and a.format == "tflite" and (options.diagnose
                                                                   or not a.passed):
            spec = _spec(src, options, targets[i], stage, calib_npy, {}, "_diag")
            a.diagnosis = _diagnose(src, spec, stage / f"diagnosis_{a.label}.png")
        a.hint = ladder.hint(a, why_not)


def _diagnose(src: ResolvedSource, spec: ConversionSpec, plot: Path) -> dict[str, Any]:
    """The per-layer table of the float model's post-training int8 (for a QAT run, of the
    float run it was fine-tuned from); a failure to diagnose is reported, not raised: the
    export's own result stands without it."""
    if src.qat:
        float_model = Path(str(src.qat.get("source_run") or "")) / "model.keras"
        if not float_model.is_file():
            return {"skipped": "a QAT run is diagnosed through its float run, and "
                               f"{str(float_model)!r} is gone"}
        spec = replace(spec, keras=str(float_model))
    try:
        return diagnose(spec, plot)
    except (ArtifactError, VerificationError, ConfigError) as exc:
        return {"skipped": f"the diagnosis failed: {exc}"}


def _graph_problems(target: Target, path: Path, hist, src: ResolvedSource) -> list[str]:
    full_integer = target.quantization == "int8"
    if target.format == "tflite":
        from hmff_edge.convert import to_tflite

        return to_tflite.check_graph(hist, max_transposes=_interleave_count(src), path=path,
                                     full_integer=full_integer)
    if target.format == "onnx":
        from hmff_edge.convert import to_onnx

        return to_onnx.check_graph(path, full_integer=full_integer)
    return []


def _interleave_count(src: ResolvedSource) -> int:
    """How many channel interleaves the model has (each may cost one TRANSPOSE)."""
    if src.interleaves is None:
        model = _parent_model(src)
        src.interleaves = sum(1 for layer in _walk(model)
                              if "interleave" in type(layer).__name__.lower()
                              or "shuffle" in type(layer).__name__.lower()
                              or getattr(layer, "interleave_input", False))
    return src.interleaves


def _parent_model(src: ResolvedSource):
    """The Keras model in this process, loaded once (reference outputs, layer census)."""
    if src.keras_model is None:
        from hmff_edge.convert.trace import load_keras

        src.keras_model = load_keras(src.keras_path)
    return src.keras_model


def _walk(layer):
    seen = set()
    stack = [layer]
    while stack:
        cur = stack.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        stack.extend(getattr(cur, "_flatten_layers", lambda **k: [])(include_self=False,
                                                                      recursive=False))


def _metadata(src: ResolvedSource, target: Target, ins, outs, report: ExportReport,
              path: str = "ptq") -> ArtifactMetadata:
    extra: dict[str, Any] = {"source": src.origin, "hmff_edge_version": __version__,
                             "exported_by": "hmff-edge export"}
    if report.calibration and target.quantization in CALIBRATED:
        extra["calibration"] = report.calibration
        extra["quantization_path"] = path
        if path == "qat" and report.qat:
            extra["qat"] = dict(report.qat)
    return ArtifactMetadata(
        model=src.model, labels=list(src.labels), height=src.img_size, width=src.img_size,
        channels=3, layout="NHWC", mean=list(src.mean), std=list(src.std),
        format=target.format, quantization=target.quantization, input=ins, output=outs,
        extra=extra,
    )


def _publish(produced, out: Path, report: ExportReport, stage: Path) -> None:
    """Move verified artifacts from the staging folder to their final names, with the QAT
    run they came from and the diagnosis plots."""
    from hmff_edge.convert.ladder import QAT_RUN

    extras = sorted(stage.glob("diagnosis_*.png"))
    if (stage / QAT_RUN).is_dir() and any(a.published and a.extra.get("quantization_path")
                                          == "qat" for a in report.artifacts):
        extras.append(stage / QAT_RUN)
    for p in extras:
        dst = out / p.name
        if dst.is_dir():
            shutil.rmtree(dst)
        os.replace(p, dst)
    for staged, name, meta in produced:
        dst = out / name
        if staged.is_dir():
            if dst.exists():  # replace an older SavedModel folder: swap, then delete
                old = staged.parent / f"old_{name}"
                os.replace(dst, old)
            os.replace(staged, dst)
        else:
            os.replace(staged, dst)
            os.chmod(dst, 0o644)  # mkstemp made it 0600; artifacts are meant to be shared
        os.chmod(write_sidecar(dst, meta), 0o644)
    os.chmod(report.write(out / REPORT_NAME), 0o644)


def _keras_predict(src: ResolvedSource, x: np.ndarray) -> np.ndarray:
    from hmff_edge.quant.transform import reference_predictions

    return reference_predictions(_parent_model(src), x)


def _calibration(src: ResolvedSource, options: ExportOptions) -> ImageSet:
    common = {"img_size": src.img_size, "mean": src.mean, "std": src.std, "labels": src.labels,
              "limit": options.calib_samples, "seed": 0}
    if options.calib_data is not None:
        return load_images(options.calib_data, prefer=("train",), progress=options.progress,
                           **common)
    if src.has_data:
        return load_run_images(src.config, "train", **common)
    raise ConfigError(
        f"int8 quantization needs calibration images: pass --calib-data (SOURCE "
        f"{src.origin!r} is not a run folder whose config.json names its training data)"
    )


def _verification_set(src: ResolvedSource, options: ExportOptions,
                      calib: ImageSet | None) -> ImageSet:
    """``--eval-data``; else the run's held-out split (never its training images); else the
    calibration folder's test split (or the folder); else random pixels."""
    common = {"img_size": src.img_size, "mean": src.mean, "std": src.std, "labels": src.labels}
    if options.eval_data is not None:
        return load_images(options.eval_data, limit=options.eval_samples, seed=1,
                           progress=options.progress, **common)
    if src.has_data:
        return load_run_images(src.config, "held_out", limit=options.verify_samples, seed=1,
                               **common)
    if options.calib_data is not None:
        return load_images(options.calib_data, limit=options.verify_samples, seed=1,
                           progress=options.progress, **common)
    # A variant with random weights and no data at all: random pixels still compare the
    # runtimes with Keras (reported as such, never as accuracy).
    from hmff_edge.preprocess import normalize

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (options.verify_samples, src.img_size, src.img_size, 3),
                          dtype=np.uint8)
    return ImageSet(x=normalize(pixels, src.mean, src.std), y=None, source="random pixels")


def _default_out(src: ResolvedSource) -> Path:
    if src.kind == "run" and src.run_dir is not None:
        return src.run_dir / "export"
    return Path("exports") / src.model


def _options_dict(options: ExportOptions) -> dict[str, Any]:
    d = {k: v for k, v in vars(options).items() if k not in ("progress", "extra")}
    return {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in d.items()}
