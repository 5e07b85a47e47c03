"""Read the model-level metadata of a ``.tflite`` flatbuffer without TensorFlow.

The root ``Model`` table of the TFLite schema has ``metadata: [Metadata]`` entries of
``{name, buffer}`` pointing into ``buffers: [Buffer]`` (``data``, or ``offset``/``size`` from
the file start for models over 2 GB). They are read with the generated schema module that the
``ai-edge-litert`` wheel ships (``ai_edge_litert.schema_py_generated``), over an ``mmap`` so a
large model is not copied into memory to read a few hundred bytes. The generated accessors do
not bounds-check, so every failure of a corrupt or truncated file becomes
:class:`ArtifactError`.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path
from typing import Any

from hmff_edge.errors import ArtifactError

_CORRUPT = (struct.error, IndexError, ValueError, TypeError, UnicodeDecodeError)


def _schema() -> Any:
    from hmff_edge._lazy import require

    return require("ai_edge_litert.schema_py_generated")


def read_tflite_metadata(source: str | os.PathLike | bytes | bytearray | memoryview) -> dict[str, bytes]:
    """Return the model-level metadata entries of a TFLite model as ``{name: buffer bytes}``.

    ``source`` is a path or the model's bytes. Entries whose buffer is empty map to ``b""``.
    Raises :class:`ArtifactError` when the file cannot be read or is not a TFLite flatbuffer.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        return _parse(bytes(source), "<bytes>")
    path = Path(source)
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size < 8:
                raise ArtifactError(f"{str(path)!r} is not a valid TFLite flatbuffer (too short)")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return _parse(mm, repr(str(path)))
    except OSError as exc:
        raise ArtifactError(f"cannot read {str(path)!r}: {exc}") from exc


def _parse(buf: bytes | mmap.mmap, label: str) -> dict[str, bytes]:
    schema = _schema()
    if len(buf) < 8 or bytes(buf[4:8]) != b"TFL3":
        raise ArtifactError(f"{label} is not a valid TFLite flatbuffer (file identifier is "
                            f"{bytes(buf[4:8])!r}, expected b'TFL3')")
    try:
        model = schema.Model.GetRootAs(buf, 0)
        out: dict[str, bytes] = {}
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if entry.Name() is None:
                continue
            name = entry.Name().decode("utf-8", errors="replace")
            index = entry.Buffer()
            if index >= model.BuffersLength():
                raise ValueError(f"metadata {name!r} points at buffer {index} of "
                                 f"{model.BuffersLength()}")
            out[name] = _buffer_bytes(model.Buffers(index), buf)
        return out
    except _CORRUPT as exc:
        raise ArtifactError(f"{label} is not a valid TFLite flatbuffer ({exc})") from exc


def _buffer_bytes(buffer: Any, whole: bytes | mmap.mmap) -> bytes:
    if buffer.DataLength():
        return buffer.DataAsNumpy().tobytes()
    offset, size = buffer.Offset(), buffer.Size()
    if offset > 1:  # 0 and 1 mean "no data"
        if offset + size > len(whole):
            raise ValueError(f"buffer of {size} bytes at {offset} runs past the end")
        return bytes(whole[offset:offset + size])
    return b""
