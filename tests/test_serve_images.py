"""EXIF orientation and high-bit-depth images: one decoding for serving, training decode,
evaluation and calibration (all through ``hmff_edge.preprocess.load_rgb``)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from _artifacts import ServerProcess, onnx_classifier
from _serve import request
from PIL import Image

from hmff_edge.data.decode import decode_split
from hmff_edge.data.sources import Split
from hmff_edge.preprocess import load_rgb

# EXIF tag 0x0112: 6 = "rotate 90 clockwise to display" (a phone held upright).
ORIENTATION = 0x0112


def _asymmetric(h=24, w=16) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 3, :, 0] = 255  # red band on top
    img[:, : w // 4, 2] = 255  # blue band on the left
    return img


def _exif_jpeg(pixels: np.ndarray, orientation: int) -> bytes:
    """What a camera writes: the sensor's pixels plus a tag saying how to turn them."""
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=95, exif=exif)
    return buf.getvalue()


def _png16(value: int, size=8) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size), value, np.uint16)).save(buf, "PNG")
    return buf.getvalue()


def _png8(value: int, size=8) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_exif_orientation_is_applied():
    upright = _asymmetric()
    sensor = np.rot90(upright, k=1)  # stored turned left; orientation 6 turns it back
    got = load_rgb(_exif_jpeg(np.ascontiguousarray(sensor), 6))
    assert got.shape == upright.shape
    # JPEG is lossy: compare the bands, not exact pixels.
    assert got[:4, 8, 0].min() > 200 and got[20:, 8, 0].max() < 60  # red on top
    assert got[12, :2, 2].min() > 200 and got[12, 12:, 2].max() < 60  # blue on the left


@pytest.mark.parametrize("value,want", [(0, 0), (32768, 128), (65535, 255), (257 * 77, 77)])
def test_16_bit_grey_is_rescaled_not_clipped(value, want):
    got = load_rgb(_png16(value))
    assert got.dtype == np.uint8 and got.shape == (8, 8, 3)
    assert np.all(got == want), (value, got[0, 0])


def test_training_decode_sees_the_pixels_serving_sees(tmp_path):
    sensor = np.ascontiguousarray(np.rot90(_asymmetric(), k=1))
    files = {"rotated.jpg": _exif_jpeg(sensor, 6), "grey16.png": _png16(32768)}
    paths = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    dec = decode_split(Split(labels=np.array([0, 1]), paths=paths), 16)
    for i, name in enumerate(files):
        np.testing.assert_array_equal(dec.images[i], load_rgb(files[name], 16))
    assert np.all(dec.images[1] == 128)


@pytest.mark.server
def test_server_classifies_16_bit_grey_like_8_bit_grey(tmp_path):
    srv = ServerProcess(onnx_classifier(tmp_path / "tiny.onnx"))
    try:
        def probs(img: bytes) -> list[float]:
            status, _, body = request(srv, "POST", "/v1/models/tiny:classify?top_k=3", img)
            assert status == 200, body
            return [p["probability"] for p in
                    sorted(json.loads(body)["predictions"], key=lambda p: p["label"])]

        mid16, mid8, white = probs(_png16(32768)), probs(_png8(128)), probs(_png8(255))
        assert mid16 == pytest.approx(mid8)
        assert mid16 != pytest.approx(white)
        upright = _asymmetric(16, 16)
        rotated = _exif_jpeg(np.ascontiguousarray(np.rot90(upright, k=1)), 6)
        plain = io.BytesIO()
        Image.fromarray(upright).save(plain, "JPEG", quality=95)
        assert probs(rotated) == pytest.approx(probs(plain.getvalue()), abs=0.02)
    finally:
        assert srv.stop() == 0
