"""Run TFLite artifacts in the emulated arm64 runtime and compare with this host's run.

Both sides execute the same script (``_infer.py``) on the same raw input tensors, so the
only difference is the instruction set and LiteRT's kernels for it. Limits:

* integer outputs (int8/uint8 I/O): at most :data:`INT8_STEPS` quantization step apart;
* an int8 model with float I/O: at most ``INT8_STEPS / 256`` (the int8 softmax's step);
* float outputs otherwise (fp32, fp16, dynamic): ``|diff| <= 1e-5 + 1e-5 * |host|``
  (:data:`FLOAT_ATOL`, :data:`FLOAT_RTOL`; numpy's ``allclose`` rule): SIMD kernels of the
  two instruction sets sum in different orders, which moves a probability near 1 by ~1e-5.

XNNPACK must start on both sides; when it does not, :class:`XnnpackError` is raised (the
reference kernels answer differently, so any comparison would be meaningless).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hmff_edge.convert.verify import GateResult
from hmff_edge.device import xnnpack
from hmff_edge.device.emulator import INFER, session
from hmff_edge.device.errors import EmulatorError
from hmff_edge.device.layout import VENV
from hmff_edge.device.targets import get_target
from hmff_edge.errors import ConfigError

INT8_STEPS = 1
FLOAT_ATOL = 1e-5
FLOAT_RTOL = 1e-5
INT8_FLOAT_IO_STEP = 1 / 256
DEFAULT_BATCH = 8


@dataclass
class Comparison(GateResult):
    """How far the emulated arm64 outputs are from the host's for one artifact."""

    artifact: str
    target: str
    quantization: str
    images: int
    unit: str  # "steps" or "abs"
    tolerance: float
    max_diff: float
    mismatched_values: int
    top1_agreement: float
    qemu_cpu: str = ""
    failures: list[str] = field(default_factory=list)


def tolerance_for(dtype: np.dtype | str, quantization: str,
                  steps: int = INT8_STEPS) -> tuple[str, float]:
    """(unit, limit) for outputs of ``dtype`` from a ``quantization`` artifact."""
    if np.dtype(dtype).kind in "iu":
        return "steps", float(steps)
    if quantization == "int8":
        return "abs", steps * INT8_FLOAT_IO_STEP
    return "abs", FLOAT_ATOL


def compare_outputs(host: np.ndarray, emulated: np.ndarray, quantization: str, *,
                    artifact: str = "", target: str = "", steps: int = INT8_STEPS
                    ) -> Comparison:
    """Judge the emulated outputs against the host's under the limits above."""
    unit, tol = tolerance_for(host.dtype, quantization, steps)
    base = Comparison(artifact=artifact, target=target, quantization=quantization,
                      images=len(host), unit=unit, tolerance=tol, max_diff=float("inf"),
                      mismatched_values=-1, top1_agreement=0.0)
    if host.shape != emulated.shape or host.dtype != emulated.dtype:
        base.failures.append(f"output {emulated.dtype}{list(emulated.shape)} on {target} != "
                             f"{host.dtype}{list(host.shape)} on the host")
        return base
    ref = host.astype(np.float64)
    diff = np.abs(ref - emulated.astype(np.float64))
    limit = tol + (FLOAT_RTOL * np.abs(ref) if unit == "abs" and quantization != "int8" else 0)
    base.max_diff = float(diff.max()) if diff.size else 0.0
    base.mismatched_values = int((diff > limit).sum())
    flat_h, flat_e = host.reshape(len(host), -1), emulated.reshape(len(host), -1)
    base.top1_agreement = float((flat_h.argmax(1) == flat_e.argmax(1)).mean()) if len(host) \
        else 1.0
    if not np.isfinite(diff).all():
        base.failures.append("non-finite outputs")
    elif base.mismatched_values:
        what = "quantization steps" if unit == "steps" else ""
        base.failures.append(f"{base.mismatched_values} output value(s) differ by up to "
                             f"{base.max_diff:.3g} {what}".rstrip() + f" (limit {tol:g}"
                             + (" + 1e-5 relative" if unit == "abs" and quantization != "int8"
                                else "") + "); "
                             f"top-1 agreement {base.top1_agreement:.2%}")
    return base


def raw_inputs(model: str | Path, x: np.ndarray) -> np.ndarray:
    """``x`` (normalized float images) as the model's input tensor (quantized if integer)."""
    from ai_edge_litert.interpreter import Interpreter

    from hmff_edge.preprocess import quantize

    d = Interpreter(model_path=str(model)).get_input_details()[0]
    if np.dtype(d["dtype"]).kind in "iu":
        scale, zp = d["quantization"]
        return quantize(x, float(scale), int(zp), np.dtype(d["dtype"]).name)
    return x.astype(d["dtype"])


def _host_run(model: Path, inputs: Path, out: Path, batch: int) -> np.ndarray:
    script = Path(__file__).with_name("_infer.py")
    proc = subprocess.run([sys.executable, str(script), "run", "--model", str(model),
                           "--inputs", str(inputs), "--out", str(out), "--batch", str(batch)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise EmulatorError(f"the host run of {model.name} failed: {proc.stderr[-800:]}")
    xnnpack.require_started(proc.stderr, f"on this host for {model.name}")
    return np.load(out)


def verify_on(target: str, artifacts: list[tuple[str | Path, str]], x: np.ndarray, *,
              batch: int = DEFAULT_BATCH, steps: int = INT8_STEPS, log=None
              ) -> list[Comparison]:
    """Run each ``(path, quantization)`` TFLite artifact on ``x`` here and in the emulated
    ``target`` (rpi4 | rpi5; builds/mounts the root as needed) and compare the outputs."""
    board = get_target(target)
    for path, _ in artifacts:
        if not str(path).endswith(".tflite") or not Path(path).is_file():
            raise ConfigError(f"verification on {target} takes .tflite files; got {str(path)!r}")
    if len(x) == 0:
        raise ConfigError("verification on the emulated device needs at least one image")
    results = []
    with session(target, log=log) as runner:
        work = Path(tempfile.mkdtemp(prefix="hmff-verify-", dir=runner.layout.in_root("/tmp")))
        inside = "/" + str(work.relative_to(runner.layout.root))
        try:
            for i, (path, quant) in enumerate(artifacts):
                model = work / f"m{i}.tflite"
                shutil.copyfile(path, model)
                np.save(work / f"in{i}.npy", raw_inputs(model, x))
                host = _host_run(model, work / f"in{i}.npy", work / f"host{i}.npy", batch)
                proc = runner.run([f"{VENV}/bin/python3", INFER, "run", "--model",
                                   f"{inside}/m{i}.tflite", "--inputs", f"{inside}/in{i}.npy",
                                   "--out", f"{inside}/emu{i}.npy", "--batch", str(batch)])
                if proc.returncode != 0:
                    raise EmulatorError(f"{Path(path).name} failed in the emulated {target} "
                                        f"(exit {proc.returncode}): {proc.stderr[-800:]}")
                xnnpack.require_started(proc.stderr, f"in the emulated {target} for "
                                                     f"{Path(path).name}")
                cmp = compare_outputs(host, np.load(work / f"emu{i}.npy"), quant,
                                      artifact=str(path), target=target, steps=steps)
                cmp.qemu_cpu = board.qemu_cpu
                results.append(cmp)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return results


def check_export(target: str, report, produced, x: np.ndarray) -> None:
    """``export --verify-on``: verify the TFLite artifacts of an export report on ``target``;
    a mismatch becomes a problem of that artifact (so it is not published)."""
    items = [(a, final) for a, (final, _, _) in zip(report.artifacts, produced)
             if a.format == "tflite"]
    if not items:
        return
    found = verify_on(target, [(final, a.quantization) for a, final in items], x)
    for (a, _), cmp in zip(items, found):
        cmp.artifact = a.path  # the published name, not the staging path
        if a.verification is not None:
            a.verification["on_target"] = cmp.to_dict()
        if not cmp.passed:
            a.problems.append(f"on {target} (emulated arm64, {cmp.qemu_cpu}): "
                              + "; ".join(cmp.failures))
