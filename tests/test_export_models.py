"""The export tests' plain model does what they rely on: its dominant input colour decides
the class, so fp32/fp16/int8 exports can be checked for agreement on real predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _export_models import folder_arrays, plain_model

from hmff_edge.preprocess import list_images


@pytest.mark.tf
def test_plain_model_predictions_follow_the_colour(tmp_path, image_folder):
    from hmff_edge.convert.trace import load_keras

    # make_image_folder paints class i in colour channel i (cat red, dog green, frog blue);
    # labels are the sorted class folder names, as every data source orders them.
    files = [Path(p) for p in list_images(image_folder)]
    classes = sorted({f.parent.name for f in files})
    expected = np.array([classes.index(f.parent.name) for f in files])
    p = load_keras(plain_model(tmp_path / "m.keras"))(folder_arrays(image_folder),
                                                      training=False).numpy()
    assert (p.argmax(1) == expected).all(), (p.argmax(1), expected)
