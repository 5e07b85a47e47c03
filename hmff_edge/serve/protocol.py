"""Request decoding and response encoding for the Open Inference Protocol (KServe V2, with
Triton's binary tensor extension) and the TensorFlow Serving REST API.

Decoding validates everything a client controls (input name, datatype, shape, data length)
before allocating anything proportional to what the client declared: the declared element
count is checked against the bytes actually received first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from hmff_edge.serve.limits import (
    HTTPError,
    _short,
    check_finite,
    check_shape,
    num_elements,
    parse_json,
)

# The one output every served model has: float32 class probabilities (dequantized for
# integer models), named the same whatever the engine calls its tensor.
OUTPUT_NAME = "probabilities"

V2_DATATYPES: dict[str, np.dtype] = {
    "FP32": np.dtype(np.float32), "FP16": np.dtype(np.float16), "FP64": np.dtype(np.float64),
    "INT8": np.dtype(np.int8), "UINT8": np.dtype(np.uint8), "INT16": np.dtype(np.int16),
    "UINT16": np.dtype(np.uint16), "INT32": np.dtype(np.int32), "UINT32": np.dtype(np.uint32),
    "INT64": np.dtype(np.int64), "UINT64": np.dtype(np.uint64), "BOOL": np.dtype(np.bool_),
}
DTYPE_TO_V2 = {v: k for k, v in V2_DATATYPES.items()}


def v2_datatype(dtype: np.dtype) -> str:
    return DTYPE_TO_V2.get(np.dtype(dtype), str(dtype).upper())


@dataclass
class V2Request:
    x: np.ndarray  # the model's native dtype, batch first
    is_float: bool  # True when the client sent FP32 for an integer model (quantize first)
    binary_output: bool
    request_id: str | None


def check_batch(n: int, max_batch: int) -> None:
    if n > max_batch:
        raise HTTPError(400, f"the request carries {n} samples; at most {max_batch} per request "
                             "(--max-request-batch)")


def decode_v2(body: bytes, header_length: str | None, model: Any, max_batch: int) -> V2Request:
    """Decode a V2 infer request (JSON tensors, or the binary extension when the
    ``Inference-Header-Content-Length`` header is present). Refuses more than ``max_batch``
    samples and non-finite floats."""
    binary = b""
    header = body
    if header_length is not None:
        try:
            hl = int(header_length)
        except ValueError:
            raise HTTPError(400, f"invalid Inference-Header-Content-Length {header_length!r}") from None
        if hl <= 0 or hl > len(body):
            raise HTTPError(400, f"Inference-Header-Content-Length {hl} is outside the body of "
                                 f"{len(body)} bytes")
        view = memoryview(body)
        header, binary = view[:hl], view[hl:]
    req = parse_json(header)
    if not isinstance(req, dict):
        raise HTTPError(400, f"request must be a JSON object, got {type(req).__name__}")
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise HTTPError(400, f"'inputs' must be a list of exactly one tensor named "
                             f"{model.input_name!r}, got {_short(inputs)}")
    tensor = inputs[0]
    name = tensor.get("name")
    if name != model.input_name:
        raise HTTPError(400, f"unknown input {name!r}; the model's input is {model.input_name!r}")
    dtype, is_float = _accepted_dtype(tensor.get("datatype"), model)
    shape = check_shape(tensor.get("shape"), model.sample_shape)
    check_batch(shape[0], max_batch)
    count = num_elements(shape)
    params = tensor.get("parameters") or {}
    if not isinstance(params, dict):
        raise HTTPError(400, f"input 'parameters' must be an object, got {_short(params)}")
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise HTTPError(400, f"binary_data_size must be a non-negative integer, got {_short(size)}")
        need = count * dtype.itemsize
        if size != need:
            raise HTTPError(400, f"binary_data_size {size} does not match shape {list(shape)} "
                                 f"of {tensor['datatype']} ({need} bytes)")
        if len(binary) != size:
            raise HTTPError(400, f"binary data is {len(binary)} bytes, binary_data_size says {size}")
        x = np.frombuffer(binary, dtype=dtype, count=count).reshape(shape)
    else:
        if len(binary):
            raise HTTPError(400, f"{len(binary)} bytes of binary data but no input declares "
                                 "binary_data_size")
        if "data" not in tensor:
            raise HTTPError(400, f"input {name!r} has neither 'data' nor binary_data_size")
        x = to_array(tensor["data"], dtype, shape, count, len(header))
    check_finite(x, f"input {name!r}")
    binary_output = _wants_binary(req, model)
    rid = req.get("id")
    return V2Request(x=x, is_float=is_float, binary_output=binary_output,
                     request_id=rid if isinstance(rid, str) else None)


def _accepted_dtype(datatype: Any, model: Any) -> tuple[np.dtype, bool]:
    native = np.dtype(model.input_dtype)
    if not isinstance(datatype, str) or datatype not in V2_DATATYPES:
        raise HTTPError(400, f"unknown datatype {_short(datatype)}; expected {v2_datatype(native)}")
    dtype = V2_DATATYPES[datatype]
    if dtype == native:
        return dtype, False
    if dtype == np.float32 and native.kind in "iu":
        return dtype, True  # normalized floats, quantized by the server
    accepted = [v2_datatype(native)] + (["FP32"] if native.kind in "iu" else [])
    raise HTTPError(400, f"datatype {datatype} not accepted by this model; send {' or '.join(accepted)}")


def to_array(data: Any, dtype: np.dtype, shape: tuple[int, ...], count: int, body_len: int) -> np.ndarray:
    """JSON numbers (flat or nested) -> array of ``shape``, refusing non-numbers and length
    mismatches."""
    if count > body_len:  # every JSON number takes at least one byte
        raise HTTPError(400, f"shape {list(shape)} needs {count} values but the body has only "
                             f"{body_len} bytes")
    if not isinstance(data, list):
        raise HTTPError(400, f"'data' must be a list of numbers, got {type(data).__name__}")
    try:
        arr = np.asarray(data)
    except ValueError as exc:  # ragged nesting
        raise HTTPError(400, f"'data' is not a regular array of numbers: {exc}") from None
    if arr.dtype.kind not in "iuf":
        raise HTTPError(400, f"'data' must hold only numbers, got {arr.dtype.kind!r}-kind values "
                             f"(e.g. {_short(arr.flat[0] if arr.size else None)})")
    if arr.size != count:
        raise HTTPError(400, f"'data' has {arr.size} values but shape {list(shape)} needs {count}")
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise HTTPError(400, f"'data' values out of range for {dtype.name}")
    return arr.reshape(shape).astype(dtype, copy=False)


def _wants_binary(req: dict, model: Any) -> bool:
    params = req.get("parameters") or {}
    binary = bool(isinstance(params, dict) and params.get("binary_data_output"))
    outputs = req.get("outputs")
    if outputs is None:
        return binary
    if not isinstance(outputs, list):
        raise HTTPError(400, f"'outputs' must be a list, got {_short(outputs)}")
    for out in outputs:
        if not isinstance(out, dict) or out.get("name") != OUTPUT_NAME:
            name = out.get("name") if isinstance(out, dict) else out
            raise HTTPError(400, f"unknown output {_short(name)}; the model's output is "
                                 f"{OUTPUT_NAME!r}")
        p = out.get("parameters") or {}
        if isinstance(p, dict) and "binary_data" in p:
            binary = bool(p["binary_data"])
    return binary


def check_output(probs: np.ndarray) -> np.ndarray:
    """float32 probabilities, or a 500 when the model produced a non-finite value (never
    written as bare ``NaN``, which no strict JSON parser reads)."""
    probs = np.ascontiguousarray(probs, dtype=np.float32)
    if not np.isfinite(probs).all():
        raise HTTPError(500, "the model produced a non-finite output for this input")
    return probs


def dumps(obj: Any) -> bytes:
    """Compact, strict JSON (``allow_nan=False``: a non-finite number is a bug, not output)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def encode_v2(model_name: str, version: int, probs: np.ndarray, binary: bool,
              request_id: str | None) -> tuple[bytes, dict[str, str]]:
    """V2 response body and headers; binary outputs follow the JSON header."""
    probs = check_output(probs)
    out: dict[str, Any] = {"name": OUTPUT_NAME, "datatype": "FP32", "shape": list(probs.shape)}
    resp: dict[str, Any] = {"model_name": model_name, "model_version": str(version),
                            "outputs": [out]}
    if request_id is not None:
        resp["id"] = request_id
    if binary:
        raw = probs.tobytes()
        out["parameters"] = {"binary_data_size": len(raw)}
        head = dumps(resp)
        return head + raw, {"Inference-Header-Content-Length": str(len(head)),
                            "Content-Type": "application/octet-stream"}
    out["data"] = probs.ravel().tolist()
    return dumps(resp), {"Content-Type": "application/json"}


def decode_tfserving(body: bytes, model: Any, max_batch: int) -> tuple[np.ndarray, str]:
    """``{"instances": [...]}`` (row format) or ``{"inputs": ...}`` (columnar format) ->
    (normalized float batch, response key: "predictions" or "outputs")."""
    req = parse_json(body)
    if not isinstance(req, dict):
        raise HTTPError(400, f"request must be a JSON object, got {type(req).__name__}")
    has_inst, has_inp = "instances" in req, "inputs" in req
    if has_inst == has_inp:
        raise HTTPError(400, "request must have exactly one of 'instances' or 'inputs', got keys "
                             f"{sorted(req)}")
    if has_inst:
        inst = req["instances"]
        if not isinstance(inst, list) or not inst:
            raise HTTPError(400, "'instances' must be a non-empty list")
        if all(isinstance(i, dict) for i in inst):
            inst = [_named(i, model) for i in inst]
        data, key = inst, "predictions"
    else:
        data = req["inputs"]
        if isinstance(data, dict):
            data = _named(data, model)
        key = "outputs"
    if not isinstance(data, list):
        raise HTTPError(400, f"the input tensor must be a nested list of numbers, got {_short(data)}")
    try:
        arr = np.asarray(data)
    except ValueError as exc:
        raise HTTPError(400, f"the input is not a regular array of numbers: {exc}") from None
    if arr.dtype.kind not in "iuf":
        raise HTTPError(400, f"the input must hold only numbers, got {arr.dtype.kind!r}-kind values")
    sample = tuple(model.sample_shape)
    if arr.ndim == len(sample) and key == "outputs":
        arr = arr[None]
    if arr.ndim != len(sample) + 1 or tuple(arr.shape[1:]) != sample or arr.shape[0] < 1:
        raise HTTPError(400, f"input has shape {list(arr.shape)}, expected [N, "
                             f"{', '.join(map(str, sample))}]")
    check_batch(arr.shape[0], max_batch)
    x = arr.astype(np.float32, copy=False)
    check_finite(x)
    return x, key


def _named(obj: dict, model: Any) -> Any:
    if set(obj) != {model.input_name}:
        raise HTTPError(400, f"unknown input(s) {sorted(obj)}; the model's input is {model.input_name!r}")
    return obj[model.input_name]
