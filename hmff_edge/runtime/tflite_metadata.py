"""A tiny TF-free reader for the model-level metadata of a ``.tflite`` flatbuffer.

The TFLite schema (``tensorflow/compiler/mlir/lite/schema/schema.fbs``) stores, on the root
``Model`` table, a vector ``metadata: [Metadata]`` of ``{name: string, buffer: uint}`` and a
vector ``buffers: [Buffer]`` of ``{data: [ubyte], offset: ulong, size: ulong}`` (models over
2 GB keep the data outside the flatbuffer, at ``offset`` from the file start). Reading those
two vectors needs only a handful of flatbuffer primitives, so this module parses the bytes
with :mod:`struct` instead of depending on TensorFlow's generated schema. Every offset is
bounds-checked: a corrupt or truncated file raises :class:`ArtifactError`, never IndexError.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

from hmff_edge.errors import ArtifactError

# Field slots (declaration order in schema.fbs) of the tables we read.
_MODEL_BUFFERS = 4
_MODEL_METADATA = 6
_METADATA_NAME = 0
_METADATA_BUFFER = 1
_BUFFER_DATA = 0
_BUFFER_OFFSET = 1
_BUFFER_SIZE = 2


class _Reader:
    def __init__(self, buf: bytes | memoryview | mmap.mmap, label: str) -> None:
        self.buf = buf
        self.n = len(buf)
        self.label = label

    def _fail(self, what: str) -> ArtifactError:
        return ArtifactError(f"{self.label} is not a valid TFLite flatbuffer ({what})")

    def _unpack(self, fmt: str, pos: int) -> int:
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > self.n:
            raise self._fail(f"offset {pos} out of range")
        return struct.unpack_from(fmt, self.buf, pos)[0]

    def u32(self, pos: int) -> int:
        return self._unpack("<I", pos)

    def i32(self, pos: int) -> int:
        return self._unpack("<i", pos)

    def u16(self, pos: int) -> int:
        return self._unpack("<H", pos)

    def u64(self, pos: int) -> int:
        return self._unpack("<Q", pos)

    def field(self, table: int, slot: int) -> int | None:
        """Absolute position of a table field, or None when absent (default value)."""
        vtable = table - self.i32(table)
        vsize = self.u16(vtable)
        entry = 4 + 2 * slot
        if entry + 2 > vsize:
            return None
        off = self.u16(vtable + entry)
        return table + off if off else None

    def indirect(self, pos: int) -> int:
        return pos + self.u32(pos)

    def vector(self, pos: int) -> tuple[int, int]:
        """(start of elements, length) of the vector referenced at ``pos``."""
        vec = self.indirect(pos)
        length = self.u32(vec)
        return vec + 4, length

    def bytes_at(self, start: int, length: int) -> bytes:
        if start < 0 or length < 0 or start + length > self.n:
            raise self._fail(f"{length} bytes at {start} run past the end ({self.n} bytes)")
        return bytes(self.buf[start : start + length])


def read_tflite_metadata(source: str | os.PathLike | bytes | bytearray | memoryview) -> dict[str, bytes]:
    """Return the model-level metadata entries of a TFLite model as ``{name: buffer bytes}``.

    ``source`` is a path or the model's bytes. Entries whose buffer is empty map to ``b""``.
    Raises :class:`ArtifactError` when the file cannot be read or is not a TFLite flatbuffer.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        return _parse(memoryview(source), "<bytes>")
    path = Path(source)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 8:
                raise ArtifactError(f"{str(path)!r} is not a valid TFLite flatbuffer ({size} bytes)")
            # mmap: large models are not copied into memory just to read a few hundred bytes.
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return _parse(mm, repr(str(path)))
    except OSError as exc:
        raise ArtifactError(f"cannot read {str(path)!r}: {exc}") from exc


def _parse(buf: bytes | memoryview | mmap.mmap, label: str) -> dict[str, bytes]:
    r = _Reader(buf, label)
    if r.n < 8:
        raise r._fail(f"only {r.n} bytes")
    if bytes(buf[4:8]) != b"TFL3":
        raise r._fail(f"file identifier is {bytes(buf[4:8])!r}, expected b'TFL3'")
    root = r.u32(0)
    meta_pos = r.field(root, _MODEL_METADATA)
    if meta_pos is None:
        return {}
    buffers_pos = r.field(root, _MODEL_BUFFERS)
    if buffers_pos is None:
        raise r._fail("metadata present but no buffers")
    buf_start, buf_count = r.vector(buffers_pos)
    m_start, m_count = r.vector(meta_pos)
    out: dict[str, bytes] = {}
    for i in range(m_count):
        entry = r.indirect(m_start + 4 * i)
        name_pos = r.field(entry, _METADATA_NAME)
        if name_pos is None:
            continue
        s_start, s_len = r.vector(name_pos)
        name = r.bytes_at(s_start, s_len).decode("utf-8", errors="replace")
        b_field = r.field(entry, _METADATA_BUFFER)
        index = r.u32(b_field) if b_field is not None else 0
        if index >= buf_count:
            raise r._fail(f"metadata {name!r} points at buffer {index} of {buf_count}")
        out[name] = _buffer_bytes(r, r.indirect(buf_start + 4 * index))
    return out


def _buffer_bytes(r: _Reader, table: int) -> bytes:
    data_pos = r.field(table, _BUFFER_DATA)
    if data_pos is not None:
        start, length = r.vector(data_pos)
        return r.bytes_at(start, length)
    off_pos = r.field(table, _BUFFER_OFFSET)
    size_pos = r.field(table, _BUFFER_SIZE)
    if off_pos is not None and size_pos is not None:
        offset, size = r.u64(off_pos), r.u64(size_pos)
        if offset > 1:  # 0/1 are sentinels for "no data"
            return r.bytes_at(offset, size)
    return b""
