"""`hmff-edge export`: a thin layer over :func:`hmff_edge.convert.export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hmff_edge.cli._app import app
from hmff_edge.cli._common import command, print_json
from hmff_edge.cli._options import QUIET, Opt, given_fields, json_flag

# Rows with a field are ExportOptions fields; given flags win over the --recipe's values.
_OPTIONS = (
    Opt("--format -f", str, None, "savedmodel | tflite | onnx | all (comma-separated list allowed). Default "
        "all.", name="fmt", field="formats"),
    Opt("--quantize -q", str, None, "none | fp16 | dynamic | int8 | int16x8 (TFLite only) | all (comma "
        "list). Default: none for one format, every supported one with --format all.", field="quantizations"),
    Opt("--calib-data", Path, None, "Calibration image folder for int8 (default: the run's training data)."),
    Opt("--calib-samples", int, None, "Calibration images (default 300)."),
    Opt("--io-dtype", str, None, "Input/output of the int8 TFLite model: int8 (default) | uint8 | float32."),
    Opt("--eval-data", Path, None, "Labelled image folder to verify on (class subfolders; enables the "
        "accuracy check)."),
    Opt("--eval-samples", int, None, "Images from --eval-data (default 0 = all)."),
    Opt("--verify-samples", int, None, "Images to verify on when there is no --eval-data (default 200)."),
    Opt("--recipe", Path, None, "TOML with an [export] table of these options (convert/recipes/*.toml); "
        "flags given here win.", field=None),
    Opt("--out -o", Path, None, "Output folder (default: RUN/export, or exports/<model>)."),
    Opt("--no-verify", bool, False, "Skip the comparison with Keras (graph checks still run).", field=None),
    Opt("--img-size", int, None, "Input size for a variant-name SOURCE (default 224)."),
    Opt("--classes", int, None, "Classes for a variant-name SOURCE (default 10)."),
    Opt("--opset", int, None, "ONNX opset (default 17)."),
    Opt("--optimize", str, None, "Graph form of each grouped 1x1 in TFLite: latency (fastest measured form; "
        "default for int8) | size (the grouped form; default otherwise)."),
    Opt("--form-table", Path, None, "Per-device form timings (bench/form_table.py) to use instead of the "
        "shipped one."),
    Opt("--calib-method", str, None, "ONNX int8 calibration: minmax (default) | entropy | percentile."),
    Opt("--no-qat", bool, False, "Never fine-tune: int8 that misses the gate with post-training quantization "
        "fails.", field=None),
    Opt("--qat-epochs", int, None, "Epochs of the QAT fine-tune the int8 ladder runs when post-training int8 "
        "misses the gate (default 2; needs the run's training data)."),
    Opt("--qat-images", int, None, "Training images the QAT fine-tune uses, a fixed subset (default 5000; "
        "bounds its time on large data sets)."),
    Opt("--diagnose", bool, False, "Per-layer int8 error table and plot for every int8 TFLite (always for "
        "failed ones)."),
    Opt("--verify-on", str, None, "rpi4 | rpi5: also run each TFLite artifact in the emulated arm64 runtime "
        "(hmff-edge device; needs root) and compare with this host's outputs."),
    json_flag("Print the report as JSON."),
    QUIET,
)


@command(app, "export", _OPTIONS)
def export_cmd(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="Run folder (model.keras + config.json), a .keras "
                                          "file, or a variant name (random weights; see "
                                          "--img-size).")],
    recipe: Path | None, no_verify: bool, no_qat: bool, json_out: bool, quiet: bool,
    **_settings: object,
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

    settings = load_recipe(recipe) if recipe is not None else {}
    settings.update(given_fields(ctx, _OPTIONS))
    if no_qat:
        settings["qat"] = False
    export_options = ExportOptions(verify=not no_verify, progress=not (quiet or json_out),
                                   **settings)
    export_options.validate()  # option errors before TensorFlow is imported
    try:
        report = export(source, export_options)
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
