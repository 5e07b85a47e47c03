"""Full-integer TFLite of a hard_swish model: the activation leaves as int8-native elementwise
ops (LiteRT's XNNPACK delegate has no int8 HARD_SWISH; the reference kernel was 78% of an
int8 hmff-mobilenet-16ch-hs), while the float export keeps the single HARD_SWISH."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from _export_models import folder_arrays, tflite_ops, zoo_model
from conftest import make_image_folder

from hmff_edge.convert import ExportOptions, export

pytestmark = pytest.mark.tf


def test_int8_hard_swish_spelling_is_the_same_function():
    import keras

    from hmff_edge.convert.trace import _hard_swish_int8

    x = np.linspace(-8, 8, 4001, dtype="float32")
    np.testing.assert_allclose(np.asarray(_hard_swish_int8(x)),
                               np.asarray(keras.activations.hard_swish(x)), atol=1e-6)


def test_int8_export_has_no_hard_swish_op(tmp_path):
    images = make_image_folder(tmp_path / "images", per_class=8, size=32)
    model = zoo_model(tmp_path / "hs.keras", folder_arrays(images), name="hmff-mobilenet-16ch-hs")
    out = tmp_path / "out"
    report = export(model, ExportOptions(formats="tflite", quantizations="none,int8", out=out,
                                         calib_data=images, progress=False, verify=False))
    assert [a.label for a in report.artifacts] == ["tflite-fp32", "tflite-int8"]
    fp32 = Counter(o["op"] for o in tflite_ops(out / "tflite_fp32.tflite"))
    int8 = Counter(o["op"] for o in tflite_ops(out / "tflite_int8.tflite"))
    n_act = fp32["HARD_SWISH"]
    assert n_act >= 30, fp32  # every activation of the -hs variant
    assert int8["HARD_SWISH"] == 0, int8
    assert int8["MINIMUM"] == n_act, int8  # one clip per activation
