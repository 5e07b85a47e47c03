"""Export options, SOURCE resolution and CLI error cases: no TensorFlow needed (fast)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hmff_edge.cli import app
from hmff_edge.convert import ExportOptions, Target
from hmff_edge.convert.source import resolve_source
from hmff_edge.errors import ArtifactError, ConfigError

runner = CliRunner()


def labels(targets: list[Target]) -> list[str]:
    return [t.label for t in targets]


def test_all_formats_expand_to_every_supported_quantization():
    assert labels(ExportOptions(formats="all").targets()) == [
        "savedmodel", "tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8",
        "onnx-fp32", "onnx-int8"]


def test_one_format_defaults_to_float_and_lists_are_canonical():
    assert labels(ExportOptions(formats="tflite").targets()) == ["tflite-fp32"]
    assert labels(ExportOptions(formats="onnx,tflite", quantizations="int8,none").targets()) == [
        "tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8"]
    assert labels(ExportOptions(formats="all", quantizations="int8").targets()) == [
        "tflite-int8", "onnx-int8"]
    assert labels(ExportOptions(formats="tflite,onnx", quantizations="fp16,int8").targets()) == [
        "tflite-fp16", "tflite-int8", "onnx-int8"]
    with pytest.raises(ConfigError, match="no requested format has a 'fp16'"):
        ExportOptions(formats="savedmodel,onnx", quantizations="none,fp16").targets()


def test_artifact_names_are_unique_so_sidecars_never_collide():
    names = [t.stem for t in ExportOptions(formats="all").targets()]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("fmt,q", [("savedmodel", "int8"), ("onnx", "fp16"),
                                   ("onnx", "dynamic"), ("savedmodel", "fp16")])
def test_impossible_combinations_are_config_errors(fmt, q):
    with pytest.raises(ConfigError, match=f"format '{fmt}' has no '{q}'"):
        ExportOptions(formats=fmt, quantizations=q).targets()


@pytest.mark.parametrize("kwargs,match", [
    ({"formats": "coreml"}, "unknown format 'coreml'"),
    ({"quantizations": "int4"}, "unknown quantization 'int4'"),
    ({"formats": "tflite", "quantizations": "int8", "io_dtype": "int16"}, "unknown io dtype"),
    ({"formats": "onnx", "io_dtype": "uint8"}, "only applies to a full-integer TFLite"),
    ({"calib_samples": 0}, "calib_samples must be >= 1"),
    ({"calib_data": "/no/such/folder"}, "does not exist"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ExportOptions(**kwargs).validate()


def fake_keras(path: Path) -> Path:
    """A structurally valid .keras zip (enough for SOURCE resolution, not for loading)."""
    cfg = {"class_name": "Functional", "config": {"layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 32, 32, 3]}},
        {"class_name": "Dense", "config": {"units": 4}}]}}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", json.dumps(cfg))
    return path


def test_keras_file_source_reads_size_and_classes(tmp_path):
    src = resolve_source(fake_keras(tmp_path / "m.keras"))
    assert (src.kind, src.img_size, src.labels) == ("keras", 32, [f"class_{i}" for i in range(4)])


def test_run_folder_source_uses_config(tmp_path):
    fake_keras(tmp_path / "model.keras")
    (tmp_path / "config.json").write_text(json.dumps({
        "model": "hmff-mobilenet-32ch", "img_size": 48, "labels": ["a", "b"],
        "mean": [0.1, 0.2, 0.3], "std": [1, 2, 3], "data": "somewhere"}))
    src = resolve_source(tmp_path)
    assert (src.kind, src.model, src.img_size, src.labels, src.mean, src.data) == (
        "run", "hmff-mobilenet-32ch", 48, ["a", "b"], [0.1, 0.2, 0.3], "somewhere")


@pytest.mark.parametrize("make,match", [
    (lambda d: d / "missing.keras", "does not exist"),
    (lambda d: (d / "bad.keras").write_bytes(b"not a zip") and d / "bad.keras",
     "not a valid .keras file"),
    (lambda d: (d / "run").mkdir() or d / "run", "has no model.keras"),
    (lambda d: (d / "weights.h5").write_bytes(b"x") and d / "weights.h5", "is not a .keras file"),
])
def test_bad_sources(tmp_path, make, match):
    with pytest.raises(ArtifactError, match=match):
        resolve_source(make(tmp_path))


def cli(*args: str):
    return runner.invoke(app, ["export", *args])


def test_cli_missing_source_exits_2(tmp_path):
    res = cli(str(tmp_path / "nope.keras"), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2
    assert "does not exist" in res.output and "nope.keras" in res.output


def test_cli_corrupt_source_exits_2(tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"PK\x03\x04 truncated")
    res = cli(str(bad))
    assert res.exit_code == 2 and "not a valid .keras file" in res.output


def test_cli_impossible_combination_exits_2(tmp_path):
    res = cli(str(fake_keras(tmp_path / "m.keras")), "--format", "savedmodel", "--quantize", "int8")
    assert res.exit_code == 2
    assert "format 'savedmodel' has no 'int8' quantization" in res.output


def test_cli_unknown_option_exits_2(tmp_path):
    res = cli(str(fake_keras(tmp_path / "m.keras")), "--bogus")
    assert res.exit_code == 2 and "bogus" in res.output


def test_cli_int8_without_calibration_data_exits_2(tmp_path):
    res = cli(str(fake_keras(tmp_path / "m.keras")), "-f", "tflite", "-q", "int8",
              "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "needs calibration images" in res.output


def test_cli_empty_calibration_folder_exits_2(tmp_path):
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    res = cli(str(fake_keras(tmp_path / "m.keras")), "-f", "tflite", "-q", "int8",
              "--calib-data", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "no images" in res.output
    assert not any((tmp_path / "o").glob("*.tflite"))


def test_cli_unreadable_calibration_images_exit_2(tmp_path):
    d = tmp_path / "junk" / "cls"
    d.mkdir(parents=True)
    (d / "a.jpg").write_bytes(b"this is not a jpeg")
    res = cli(str(fake_keras(tmp_path / "m.keras")), "-f", "onnx", "-q", "int8",
              "--calib-data", str(tmp_path / "junk"))
    assert res.exit_code == 2 and "cannot decode image" in res.output and "a.jpg" in res.output


def test_importing_convert_and_cli_does_not_import_tensorflow():
    code = ("import sys, hmff_edge.convert, hmff_edge.cli.export; "
            "sys.exit(1 if 'tensorflow' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1]).returncode == 0


@pytest.mark.parametrize("recipe", sorted((Path(__file__).parents[1] / "convert" / "recipes")
                                          .glob("*.toml")), ids=lambda p: p.name)
def test_shipped_recipes_are_valid(recipe):
    from hmff_edge.convert.options import load_recipe

    settings = load_recipe(recipe)
    settings.pop("calib_data", None)  # data paths need ../shared; the rest must validate
    settings.pop("eval_data", None)
    assert ExportOptions(**settings).targets()


def test_recipe_with_unknown_key_is_rejected(tmp_path):
    from hmff_edge.convert.options import load_recipe

    bad = tmp_path / "r.toml"
    bad.write_text('[export]\nformats = "tflite"\ncalibration = 3\n')
    with pytest.raises(ConfigError, match=r"unknown keys \['calibration'\]"):
        load_recipe(bad)
    res = cli(str(fake_keras(tmp_path / "m.keras")), "--recipe", str(bad))
    assert res.exit_code == 2 and "calibration" in res.output


def test_cli_flag_beats_recipe(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[export]\nformats = "savedmodel"\nquantizations = "int8"\n')
    # the recipe alone is impossible (savedmodel+int8); --format tflite makes it valid, and
    # the run then stops at the missing calibration data: the flag won
    res = cli(str(fake_keras(tmp_path / "m.keras")), "--recipe", str(recipe), "-f", "tflite")
    assert res.exit_code == 2 and "needs calibration images" in res.output


def test_report_round_trips_and_marks_failures(tmp_path):
    import numpy as np

    from hmff_edge.convert import ArtifactResult, ExportReport
    from hmff_edge.convert.verify import compare

    ref = np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    ok = compare(ref, ref + 1e-6, np.array([0, 1]), "none")
    bad = compare(ref, ref[:, ::-1], np.array([0, 1]), "int8")
    assert ok.passed and not bad.passed and "top-1 agreement 0.00% < 97%" in bad.failures[0]
    rep = ExportReport(source="s", model="m", img_size=32, out_dir=str(tmp_path), artifacts=[
        ArtifactResult("tflite-fp32", "tflite", "none", "tflite_fp32.tflite", 2_000_000,
                       {"CONV_2D": 3}, verification=ok.to_dict(), published=True),
        ArtifactResult("tflite-int8", "tflite", "int8", "tflite_int8.tflite", 500_000,
                       {"CONV_2D": 3}, verification=bad.to_dict())])
    back = ExportReport.from_dict(json.loads(rep.write(tmp_path / "r.json").read_text()))
    assert not back.passed and back.rows() == rep.rows()
    assert "FAIL: top-1 agreement" in back.table()
    assert "| tflite-fp32 | - | 2.000 | 3 | - |" in back.markdown()
