"""`hmff-edge export`: a thin layer over :func:`hmff_edge.convert.export`."""

from __future__ import annotations

from pathlib import Path

import typer

from hmff_edge.cli._app import app
from hmff_edge.cli._common import handle_errors, print_json


@app.command("export")
@handle_errors
def export_cmd(
    source: str = typer.Argument(..., help="Run folder (model.keras + config.json), a .keras "
                                 "file, or a variant name (random weights; see --img-size)."),
    fmt: str = typer.Option(None, "--format", "-f", help="savedmodel | tflite | onnx | all "
                            "(comma-separated list allowed). Default all."),
    quantize: str = typer.Option(None, "--quantize", "-q", help="none | fp16 | dynamic | int8 "
                                 "| int16x8 (TFLite only) | all (comma list). Default: none for "
                                 "one format, every supported one with --format all."),
    calib_data: Path = typer.Option(None, "--calib-data", help="Calibration image folder for "
                                    "int8 (default: the run's training data)."),
    calib_samples: int = typer.Option(None, "--calib-samples", help="Calibration images "
                                      "(default 300)."),
    io_dtype: str = typer.Option(None, "--io-dtype", help="Input/output of the int8 TFLite "
                                 "model: int8 (default) | uint8 | float32."),
    eval_data: Path = typer.Option(None, "--eval-data", help="Labelled image folder to verify "
                                   "on (class subfolders; enables the accuracy check)."),
    eval_samples: int = typer.Option(None, "--eval-samples", help="Images from --eval-data "
                                     "(default 0 = all)."),
    verify_samples: int = typer.Option(None, "--verify-samples", help="Images to verify on "
                                       "when there is no --eval-data (default 200)."),
    recipe: Path = typer.Option(None, "--recipe", help="TOML with an [export] table of these "
                                "options (convert/recipes/*.toml); flags given here win."),
    out: Path = typer.Option(None, "--out", "-o", help="Output folder (default: RUN/export, "
                             "or exports/<model>)."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the comparison with Keras "
                                   "(graph checks still run)."),
    img_size: int = typer.Option(None, "--img-size", help="Input size for a variant-name "
                                 "SOURCE (default 224)."),
    classes: int = typer.Option(None, "--classes", help="Classes for a variant-name SOURCE "
                                "(default 10)."),
    opset: int = typer.Option(None, "--opset", help="ONNX opset (default 17)."),
    optimize: str = typer.Option(None, "--optimize", help="Graph form of each grouped 1x1 in "
                                 "TFLite: latency (fastest measured form; default for int8) | "
                                 "size (the grouped form; default otherwise)."),
    form_table: Path = typer.Option(None, "--form-table", help="Per-device form timings "
                                    "(bench/form_table.py) to use instead of the shipped one."),
    calib_method: str = typer.Option(None, "--calib-method", help="ONNX int8 calibration: "
                                     "minmax (default) | entropy | percentile."),
    no_qat: bool = typer.Option(False, "--no-qat", help="Never fine-tune: int8 that misses the "
                                "gate with post-training quantization fails."),
    qat_epochs: int = typer.Option(None, "--qat-epochs", help="Epochs of the QAT fine-tune the "
                                   "int8 ladder runs when post-training int8 misses the gate "
                                   "(default 2; needs the run's training data)."),
    qat_images: int = typer.Option(None, "--qat-images", help="Training images the QAT "
                                   "fine-tune uses, a fixed subset (default 5000; bounds its "
                                   "time on large data sets)."),
    diagnose: bool = typer.Option(False, "--diagnose", help="Per-layer int8 error table and "
                                  "plot for every int8 TFLite (always for failed ones)."),
    verify_on: str = typer.Option(None, "--verify-on", help="rpi4 | rpi5: also run each "
                                  "TFLite artifact in the emulated arm64 runtime (hmff-edge "
                                  "device; needs root) and compare with this host's outputs."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Export to SavedModel / TFLite / ONNX, verify each artifact against Keras in its own
    runtime, and write the artifacts with metadata plus export_report.json.

    int8 is a ladder: post-training quantization first; if it misses the gate (97% top-1
    agreement, at most 1.0 point accuracy drop) and SOURCE is a run whose training data is
    reachable, a short quantization-aware fine-tune (--qat-epochs) and a second try. The
    table ends with size, accuracy, drop and batch-1 latency per artifact."""
    from hmff_edge.convert import ExportOptions, export
    from hmff_edge.convert.options import load_recipe
    from hmff_edge.errors import VerificationError

    given = {"formats": fmt, "quantizations": quantize, "calib_data": calib_data,
             "calib_samples": calib_samples, "io_dtype": io_dtype, "eval_data": eval_data,
             "eval_samples": eval_samples, "verify_samples": verify_samples, "opset": opset,
             "optimize": optimize, "form_table": form_table,
             "calib_method": calib_method, "qat_epochs": qat_epochs, "qat_images": qat_images}
    settings = load_recipe(recipe) if recipe is not None else {}
    settings.update({k: v for k, v in given.items() if v is not None})
    if no_qat:
        settings["qat"] = False
    if diagnose:
        settings["diagnose"] = True
    options = ExportOptions(out=out, verify=not no_verify, img_size=img_size, classes=classes,
                            progress=not (quiet or json_out), verify_on=verify_on, **settings)
    options.validate()  # option errors before TensorFlow is imported
    try:
        report = export(source, options)
    except VerificationError as exc:
        report = getattr(exc, "report", None)
        if report is not None:
            if json_out:
                print_json(report.to_dict())
            else:
                typer.echo(report.table(), err=True)
        raise
    if json_out:
        print_json(report.to_dict())
        return
    typer.echo(report.table())
    for a in report.artifacts:  # which graph form each grouped 1x1 took, and why
        plan = a.metadata.get("extra", {}).get("graph_forms")
        if plan:
            from hmff_edge.convert.forms import FormPlan

            fp = FormPlan.from_dict(plan)
            typer.echo(f"{a.label}: {fp.summary()}" + "".join(f"\n  note: {n}" for n in fp.notes))
    typer.echo(f"\nwrote {sum(a.published for a in report.artifacts)} artifact(s) + "
               f"export_report.json to {report.out_dir}")
