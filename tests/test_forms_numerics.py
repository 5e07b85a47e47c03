"""Every graph form of the grouped 1x1 equals the grouped form: float exactly (up to
summation order), int8 through the export gate, and each form's TFLite graph passes the op
checks (builtins only, no SPACE_TO_BATCH_ND / BATCH_MATMUL, one XNNPACK partition)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from _export_models import delegate_partitions, folder_arrays, zoo_model
from conftest import make_image_folder

from hmff_edge.convert import ExportOptions, export
from hmff_edge.convert import forms as F

pytestmark = pytest.mark.tf

GROUPS = [2, 4, 8, 64]


def graph_problems(path) -> list[str]:
    from hmff_edge.convert.to_tflite import check_graph, op_histogram

    hist = op_histogram(path)
    extra = [op for op in ("MATRIX_DIAG", "GATHER", "EINSUM") if hist.get(op)]
    return check_graph(hist, max_transposes=1) + extra


@pytest.mark.parametrize("interleave", [False, True], ids=["plain", "interleaved"])
@pytest.mark.parametrize("groups", GROUPS)
def test_every_form_equals_grouped_in_float(groups, interleave):
    import tensorflow as tf

    from hmff_edge.models.layers import interleave_channels

    rng = np.random.default_rng(groups)
    cin, filters = 2 * groups, 3 * groups
    x = tf.constant(rng.standard_normal((2, 3, 5, cin)).astype("float32"))
    k = tf.constant(rng.standard_normal((1, 1, cin // groups, filters)).astype("float32"))
    # numpy reference of the grouped layer: group j reads its slice of the (interleaved) input
    xi = (interleave_channels(x, groups) if interleave else x).numpy()
    cg, fg = cin // groups, filters // groups
    ref = np.concatenate([xi[..., j * cg:(j + 1) * cg] @ k.numpy()[0, 0][:, j * fg:(j + 1) * fg]
                          for j in range(groups)], axis=-1)
    forms = F.candidates_for(groups, interleave)
    assert len(forms) >= 3
    for form in forms:
        y = F.emit(x, k, groups, interleave, form).numpy()
        np.testing.assert_allclose(y, ref, rtol=0, atol=1e-5, err_msg=form.label(groups))


def _run_int8(path, x):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]).astype(np.int32)


@pytest.mark.slow
@pytest.mark.parametrize("interleave", [False, True], ids=["plain", "interleaved"])
@pytest.mark.parametrize("groups", GROUPS)
def test_every_form_equals_grouped_in_int8_with_clean_graphs(tmp_path, groups, interleave):
    key = F.LayerKey(4, 4, 2 * groups, 2 * groups, groups, interleave, "int8")
    float_key = F.LayerKey(4, 4, 2 * groups, 2 * groups, groups, interleave, "fp32")
    for form in F.candidates(float_key):  # the float graphs pass the same op checks
        path = tmp_path / f"{form.label(groups)}_fp32.tflite"
        path.write_bytes(F.one_layer_tflite(float_key, form))
        assert graph_problems(path) == [] and delegate_partitions(path, whole=True) == 1, \
            form.label(groups)
    x = np.random.default_rng(1).integers(-128, 128, (1, 4, 4, key.cin)).astype(np.int8)
    ref = None
    for form in F.candidates(key):
        path = tmp_path / f"{form.label(groups)}.tflite"
        path.write_bytes(F.one_layer_tflite(key, form))
        assert graph_problems(path) == [], form.label(groups)
        assert delegate_partitions(path, whole=True) == 1, form.label(groups)
        y = _run_int8(path, x)
        if ref is None:
            ref = y  # the grouped form comes first
            continue
        # Same int8 weights and scales: at most one rounding step apart, nearly all equal.
        assert np.abs(y - ref).max() <= 1, form.label(groups)
        assert (y == ref).mean() >= 0.97, form.label(groups)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("forms_zoo")
    images = make_image_folder(root / "images", per_class=8, size=32)
    model = zoo_model(root / "hmff16.keras", folder_arrays(images))
    return root, images, model


def _forced_table(model_path, quant: str, pick) -> dict:
    """A form table for the zoo model that makes ``pick(key)`` the fastest form."""
    from hmff_edge.convert.trace import load_keras

    rows = {}
    for key in F.grouped_layers(load_keras(model_path), 32, quant).values():
        names = [f.label(key.groups) for f in F.candidates(key)]
        best = pick(key, names)
        rows[key.text()] = {n: (0.5 if n == best else 1.0) for n in names}
    return rows


def _most_changed(key, names):
    return ("dense-fold" if "dense-fold" in names else "split" if "split" in names
            else names[1])


@pytest.mark.slow
def test_zoo_export_with_forced_forms_passes_the_gate_and_records_them(zoo, tmp_path):
    """fp32 in the forced forms within the fp32 gate of Keras; int8 in the forced forms
    through the int8 gate of the grouped-form int8 file (this random-weight zoo model misses
    the Keras int8 gate in the grouped form too: it measures the network, not the forms)."""
    from hmff_edge.convert.to_tflite import op_histogram, predict
    from hmff_edge.convert.verify import compare

    root, images, model = zoo
    table = tmp_path / "table.json"
    rows = {**_forced_table(model, "fp32", _most_changed),
            **_forced_table(model, "int8", _most_changed)}
    F.write_table(table, "test", rows, {})
    out, grouped = tmp_path / "out", tmp_path / "grouped"
    report = export(model, ExportOptions(formats="tflite", quantizations="none,int8", out=out,
                                         calib_data=images, progress=False, optimize="latency",
                                         form_table=table, verify=False))
    export(model, ExportOptions(formats="tflite", quantizations="int8", out=grouped,
                                calib_data=images, progress=False, optimize="size", verify=False))
    x = folder_arrays(images)
    from hmff_edge.convert.trace import load_keras

    keras_p = load_keras(model).predict(x, verbose=0)
    fp32 = compare(keras_p, predict(out / "tflite_fp32.tflite", x), None, "none")
    assert fp32.passed, fp32
    int8 = compare(predict(grouped / "tflite_int8.tflite", x),
                   predict(out / "tflite_int8.tflite", x), None, "int8")
    assert int8.passed, int8
    for a in report.artifacts:
        plan = F.FormPlan.from_dict(a.metadata["extra"]["graph_forms"])
        assert plan.optimize == "latency" and plan.choices
        assert all(c.source == "table" for c in plan.choices)
        assert plan.notes[0].startswith("forms table table.json: measured")
        assert {c.form for c in plan.choices} >= (
            {"dense-fold", "split"} if a.quantization == "none" else {"dense-fold", "dense"})
        path = out / a.path
        meta = json.loads(path.with_suffix(".json").read_text())
        assert meta["extra"]["graph_forms"]["choices"] == a.metadata["extra"]["graph_forms"]["choices"]
        assert a.problems == [] and delegate_partitions(path) == 1
        hist = Counter(op_histogram(path))
        n_fold = sum(c.form == "dense-fold" for c in plan.choices)
        assert n_fold >= 1
        # each folded interleave removed its TRANSPOSE
        assert hist.get("TRANSPOSE", 0) <= 10 - n_fold, hist


@pytest.mark.slow
def test_size_keeps_the_grouped_form(zoo, tmp_path):
    root, images, model = zoo
    report = export(model, ExportOptions(formats="tflite", quantizations="int8", out=tmp_path,
                                         calib_data=images, progress=False, verify=False,
                                         optimize="size"))
    plan = report.artifacts[0].metadata["extra"]["graph_forms"]
    assert {c["form"] for c in plan["choices"]} == {"grouped"}
