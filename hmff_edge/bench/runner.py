"""Self-contained benchmark runner: one trial per child process, and the batch sweep.

This file is copied as-is to a device (``hmff-edge bench --device rpi --host ...``) and run
there with ``python3 runner.py sweep ...``. It therefore imports nothing from ``hmff_edge``
and needs only the standard library, numpy and the runtime being measured (ai-edge-litert,
or tflite-runtime, or onnxruntime; TensorFlow only for ``--runtime tensorflow``).

Why a child per trial: on CPU an out-of-memory is a SIGKILL from the kernel (or, under
``RLIMIT_AS``, a failed allocation that may abort the process), not an exception. The
parent starts ``runner.py trial`` for each batch size, reads its JSON result file, and turns
a signal exit or an allocation failure into ``outcome = "out-of-memory"``; it never dies
with the child. Peak memory is the child's peak RSS from ``wait4`` (valid even when it was
killed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields, replace

SCHEMA = "hmff-edge-bench/1"
OK, OOM, ERROR = "ok", "out-of-memory", "error"
RUNTIMES = ("litert", "onnxruntime", "tensorflow")


@dataclass(frozen=True)
class TrialSpec:
    """One trial: a model file at one batch size, in one child process."""

    model: str
    runtime: str
    threads: int = 1
    batch: int = 1
    runs: int = 50
    seconds: float = 0.0
    warmup: int = 5
    device: str = "cpu"  # cpu | gpu (an rpi profile runs as cpu)
    memory_limit: int | None = None  # bytes of address space (RLIMIT_AS)
    keep_samples: bool = False

    def argv(self) -> list[str]:
        """The ``runner.py trial`` arguments that rebuild this spec in the child."""
        args = ["--model", self.model, "--runtime", self.runtime, "--threads", str(self.threads),
                "--batch", str(self.batch), "--runs", str(self.runs), "--seconds",
                str(self.seconds), "--warmup", str(self.warmup), "--device", self.device]
        if self.memory_limit:
            args += ["--memory-limit", str(self.memory_limit)]
        if self.keep_samples:
            args.append("--keep-samples")
        return args


@dataclass(frozen=True)
class SweepSpec:
    """The batch sweep of one model file: a :class:`TrialSpec` per batch size."""

    model: str
    runtime: str | None = None  # None: the file format's runtime
    threads: int = 1
    batch_sizes: str | tuple[int, ...] | list[int] | None = "auto"
    max_batch: int = 64
    runs: int = 50
    seconds: float = 0.0
    warmup: int = 5
    device: str = "cpu"
    memory_limit: int | None = None
    trial_timeout: float = 900.0

    def trial(self, batch: int) -> TrialSpec:
        """The spec of the trial at ``batch``: fewer runs and warm-ups past batch 1."""
        return TrialSpec(model=self.model, runtime=self.runtime or default_runtime(self.model),
                         threads=self.threads, batch=batch, runs=runs_for_batch(batch, self.runs),
                         seconds=self.seconds,
                         warmup=self.warmup if batch == 1 else min(self.warmup, 2),
                         device=self.device, memory_limit=self.memory_limit,
                         keep_samples=batch == 1)


@dataclass
class TrialResult:
    """What one trial reports (the child writes it as JSON; the parent adds exit and RSS)."""

    batch_size: int
    outcome: str = "ok"  # ok | out-of-memory | error
    error: str | None = None
    runs: int | None = None
    load_s: float | None = None
    first_inference_s: float | None = None
    warmup_runs: int | None = None
    warmup_ms: float | None = None
    latency_ms: dict | None = None
    images_per_s: float | None = None
    input: dict | None = None
    versions: dict | None = None
    peak_device_memory_bytes: int | None = None
    samples_ms: list[float] | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["samples_ms"] is None:
            del d["samples_ms"]
        return d


def _pick(cls, d: dict) -> dict:
    """The entries of ``d`` that name fields of dataclass ``cls`` (absent ones stay out)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


@dataclass
class Throughput:
    """``throughput`` of a :class:`ModelRecord`. The GFLOP/s pair needs the model's MACs,
    which this file does not know: :func:`hmff_edge.bench.api.enrich` fills it in."""

    batch1_images_per_s: float | None = None
    best_batch: int | None = None
    best_images_per_s: float | None = None
    largest_fit: int | None = None
    batch1_gflops: float | None = None
    best_gflops: float | None = None

    def to_dict(self, gflops: bool = True) -> dict:
        """The JSON object; without ``gflops`` the two GFLOP/s keys are left out."""
        d = asdict(self)
        if not gflops:
            del d["batch1_gflops"], d["best_gflops"]
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> Throughput:
        """Read :meth:`to_dict` output; keys this class does not name are dropped."""
        return cls(**_pick(cls, d or {}))


@dataclass
class SweepLog:
    """``sweep`` of a :class:`ModelRecord`: every trial as the parent recorded it (a
    :class:`TrialResult` dict plus ``exit``, ``peak_rss_bytes``, ``wall_s``,
    ``stderr_tail``) and why the sweep stopped."""

    trials: list[dict] = field(default_factory=list)
    stopped: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict | None) -> SweepLog:
        d = d or {}
        return cls(trials=list(d.get("trials") or []), stopped=dict(d.get("stopped") or {}))


# Keys that only some producers write: left out of the JSON while None, so a record keeps
# the key set its producer gave it (the runner alone writes none of them but ``command``).
_OPTIONAL_KEYS = ("command", "remote_command", "quantization", "model")


@dataclass
class ModelRecord:
    """The measurement of one model file (schema :data:`SCHEMA`): what :func:`sweep_model`
    returns, ``runner.py sweep`` prints and ``bench()`` completes with the device, command,
    quantization and model description.

    :meth:`to_dict` gives the JSON object and :meth:`from_dict` reads one back. Reading is
    lenient so that saved results stay loadable: a missing key reads as None (or empty),
    and a top-level key this class does not name is kept in :attr:`extra` and written back
    by :meth:`to_dict` after the named ones (``roofline`` from ``bench --roofline``, for
    one). Unknown keys inside ``throughput`` are dropped.
    """

    schema: str = SCHEMA
    runtime: str | None = None
    threads: int | None = None
    device: str | dict | None = None  # "cpu"/"gpu" from the runner; bench() puts its record
    memory_limit_bytes: int | None = None
    model_file: dict = field(default_factory=dict)  # path, name, size_bytes
    settings: dict = field(default_factory=dict)  # runs, seconds, warmup, batch_sizes, ...
    hardware: dict = field(default_factory=dict)  # hardware_info()
    versions: dict = field(default_factory=dict)
    load_s: float | None = None
    first_inference_s: float | None = None
    warmup_ms: float | None = None
    latency: dict | None = None  # latency_stats() of batch 1
    samples_ms: list[float] | None = None
    throughput: Throughput = field(default_factory=Throughput)
    sweep: SweepLog = field(default_factory=SweepLog)
    created: str | None = None
    command: str | None = None
    remote_command: str | None = None
    quantization: str | None = None
    model: dict | None = None  # ModelRef.to_dict()
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The JSON object (a deep copy: changing it leaves the record alone)."""
        d = asdict(self)
        extra = d.pop("extra")
        tp = self.throughput
        # The GFLOP/s keys appear once bench() has looked at the model, even when unknown.
        d["throughput"] = tp.to_dict(gflops=self.model is not None or tp.batch1_gflops
                                     is not None or tp.best_gflops is not None)
        for key in _OPTIONAL_KEYS:
            if d[key] is None:
                del d[key]
        d.update((k, v) for k, v in extra.items() if k not in d)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelRecord:
        """A record from its JSON object; ValueError when it is not a :data:`SCHEMA` one."""
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            got = d.get("schema") if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"not a bench record of schema {SCHEMA!r} (got {got!r})")
        names = {f.name for f in fields(cls)} - {"extra"}
        kw = {k: v for k, v in d.items() if k in names}
        kw["throughput"] = Throughput.from_dict(d.get("throughput"))
        kw["sweep"] = SweepLog.from_dict(d.get("sweep"))
        for key in ("model_file", "settings", "hardware", "versions"):
            kw[key] = kw.get(key) or {}
        return cls(**kw, extra={k: v for k, v in d.items() if k not in names})

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}
# Messages of allocation failures from numpy, onnxruntime, LiteRT, TensorFlow and libc.
_OOM_PATTERNS = re.compile(
    r"MemoryError|bad_alloc|out of memory|Cannot allocate memory|Failed to allocate|"
    r"ResourceExhausted|OOM when allocating|CUDA_ERROR_OUT_OF_MEMORY|cudaErrorMemoryAllocation|"
    r"unable to allocate|std::length_error|mmap failed|Insufficient memory",
    re.IGNORECASE)


# --------------------------------------------------------------------------- sizes, stats
def parse_size(text: str | int | None) -> int | None:
    """``"512MiB"`` -> 536870912, ``"2GiB"``, ``"1.5G"``, ``"4096"`` (bytes). None/"" -> None."""
    if text is None or text == "":
        return None
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS:
        raise ValueError(f"cannot read size {text!r}: use a number with a unit such as "
                         f"512MiB, 2GiB, 1.5GB or plain bytes")
    value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ValueError(f"size must be positive, got {text!r}")
    return value


def format_size(n: float | None) -> str:
    """Bytes as a short binary-unit string (``1.5 GiB``)."""
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def latency_stats(seconds: list[float]) -> dict:
    """Latency statistics in milliseconds under the names the JSON promises."""
    import numpy as np

    if not seconds:
        return {"count": 0}
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p90, p95, p99 = (float(v) for v in np.percentile(ms, [50, 90, 95, 99]))
    return {"count": int(ms.size), "mean": float(ms.mean()),
            "std": float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
            "min": float(ms.min()), "max": float(ms.max()),
            "p50": p50, "p90": p90, "p95": p95, "p99": p99}


# --------------------------------------------------------------------------- hardware
def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def gpu_names() -> list[str]:
    """Names of the NVIDIA GPUs ``nvidia-smi`` sees ([] without a driver or GPU)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [ln.strip() for ln in out.stdout.splitlines() if ln.strip()] if out.returncode == 0 else []


def hardware_info() -> dict:
    """CPU model, cores, memory, GPU names and OS of the machine this runs on."""
    cpuinfo = _read("/proc/cpuinfo")
    model = None
    for key in ("model name", "Model", "Hardware", "Processor"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
        if m:
            model = m.group(1).strip()
            break
    board = _read("/proc/device-tree/model").strip("\x00\n ") or None
    mem = re.search(r"^MemTotal:\s+(\d+) kB", _read("/proc/meminfo"), re.MULTILINE)
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        affinity = os.cpu_count()
    return {"cpu_model": model or platform.processor() or platform.machine(),
            "board": board, "machine": platform.machine(), "cores": os.cpu_count(),
            "cores_usable": affinity,
            "memory_bytes": int(mem.group(1)) * 1024 if mem else None,
            "gpus": gpu_names(), "os": platform.platform(), "python": platform.python_version(),
            "hostname": platform.node()}


# --------------------------------------------------------------------------- backends
def make_input(dtype, shape, seed=0):
    """A random input of ``dtype``: the full integer range, or standard normal floats."""
    import numpy as np

    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, int(info.max) + 1, size=shape, dtype=dtype)
    return rng.standard_normal(shape).astype(dtype)


def fill_random_input(interpreter, seed=0) -> None:
    """Set each input of a LiteRT interpreter to :func:`make_input` of its dtype and shape
    (input ``i`` with seed ``seed + i``, so two inputs of one op differ)."""
    for i, d in enumerate(interpreter.get_input_details()):
        interpreter.set_tensor(d["index"], make_input(d["dtype"], d["shape"], seed + i))


def invoke_seconds(interpreter, runs: int, warmup: int) -> list[float]:
    """Seconds of each of ``runs`` timed ``invoke`` calls of a LiteRT interpreter whose
    inputs are set, after ``warmup`` untimed ones (the first calls pay for XNNPACK's weight
    packing and the caches)."""
    for _ in range(warmup):
        interpreter.invoke()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        interpreter.invoke()
        samples.append(time.perf_counter() - t0)
    return samples


def round_robin_ms(models: dict[str, str | bytes], rounds: int, runs: int, threads: int = 1,
                   warmup: int = 2) -> dict[str, list[list[float]]]:
    """Invoke times (ms) of LiteRT models (``.tflite`` paths or bytes) in one process,
    round-robin: each round invokes every model ``runs`` times in turn, so drift on a shared
    CPU hits them alike. Per model, one list of ``runs`` times per round; each model gets
    :func:`fill_random_input` and ``warmup`` untimed invokes first."""
    from ai_edge_litert.interpreter import Interpreter

    its = {}
    for name, model in models.items():
        it = (Interpreter(model_content=model, num_threads=threads) if isinstance(model, bytes)
              else Interpreter(model_path=str(model), num_threads=threads))
        it.allocate_tensors()
        fill_random_input(it)
        invoke_seconds(it, 0, warmup=warmup)
        its[name] = it
    out: dict[str, list[list[float]]] = {n: [] for n in its}
    for _ in range(rounds):
        for n, it in its.items():
            out[n].append([s * 1e3 for s in invoke_seconds(it, runs, warmup=0)])
    return out


class LiteRTBackend:
    """ai-edge-litert (or the older tflite-runtime) Interpreter, XNNPACK on by default."""

    name = "litert"

    def __init__(self, path: str, threads: int, device: str = "cpu"):
        if device == "gpu":
            raise RuntimeError("the litert runtime has no GPU path in this tool; use "
                               "--runtime onnxruntime or --runtime tensorflow with --device gpu")
        try:
            from ai_edge_litert.interpreter import Interpreter
            self.version = _version("ai_edge_litert", "ai-edge-litert")
        except ImportError:
            from tflite_runtime.interpreter import Interpreter
            self.version = _version("tflite_runtime", "tflite-runtime")
        self.interp = Interpreter(model_path=path, num_threads=threads)
        self.interp.allocate_tensors()
        self._in = self.interp.get_input_details()[0]
        self._out = self.interp.get_output_details()[0]
        self.input_dtype = self._in["dtype"]
        self.input_shape = [int(d) for d in self._in["shape"]]

    def resize(self, batch: int) -> None:
        if self.input_shape[0] == batch:
            return
        shape = [batch] + self.input_shape[1:]
        self.interp.resize_tensor_input(self._in["index"], shape, strict=False)
        self.interp.allocate_tensors()
        self.input_shape = shape

    def run(self, x):
        self.interp.set_tensor(self._in["index"], x)
        self.interp.invoke()
        return self.interp.get_tensor(self._out["index"])


class OrtBackend:
    """onnxruntime InferenceSession: CPU provider with explicit threads, or CUDA on ``gpu``."""

    name = "onnxruntime"

    def __init__(self, path: str, threads: int, device: str = "cpu"):
        import onnxruntime as ort

        self.version = ort.__version__
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ort_providers(device, ort.get_available_providers())
        self.sess = ort.InferenceSession(path, sess_options=opts, providers=providers)
        if device == "gpu" and self.sess.get_providers()[0] != "CUDAExecutionProvider":
            raise RuntimeError(f"onnxruntime did not enable CUDA (active providers: "
                               f"{self.sess.get_providers()})")
        inp = self.sess.get_inputs()[0]
        self._in_name = inp.name
        self.input_dtype = _ORT_TYPES.get(inp.type, "float32")
        self.input_shape = [d if isinstance(d, int) else 1 for d in inp.shape]

    def resize(self, batch: int) -> None:
        self.input_shape = [batch] + self.input_shape[1:]

    def run(self, x):
        return self.sess.run(None, {self._in_name: x})[0]


_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16",
              "tensor(int8)": "int8", "tensor(uint8)": "uint8"}


def ort_providers(device: str, available: list[str]) -> list[str]:
    """Providers for a session: CPU only, or CUDA first on ``gpu`` (error when absent)."""
    if device != "gpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        raise RuntimeError(f"--device gpu: onnxruntime has no CUDAExecutionProvider here "
                           f"(available: {available}); install onnxruntime-gpu with a "
                           f"matching CUDA, or use --device cpu")
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


class TFBackend:
    """TensorFlow SavedModel (serving signature) or ``.keras`` file; GPU memory growth on."""

    name = "tensorflow"

    def __init__(self, path: str, threads: int, device: str = "cpu"):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if device != "gpu":
            os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
        import tensorflow as tf

        self.tf = tf
        self.version = tf.__version__
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        gpus = tf.config.list_physical_devices("GPU")
        if device == "gpu":
            if not gpus:
                raise RuntimeError("--device gpu: TensorFlow sees no GPU")
            for g in gpus:  # allocate as needed, so a too-large batch fails alone
                tf.config.experimental.set_memory_growth(g, True)
        self.device = device
        if path.endswith(".keras"):
            import contextlib

            # custom layers register themselves; optional off the training machine
            with contextlib.suppress(ImportError):
                import hmff_edge.models  # noqa: F401
            import keras

            model = keras.models.load_model(path, compile=False)
            self.fn = tf.function(lambda x: model(x, training=False))
            shape = list(model.inputs[0].shape)
        else:
            loaded = tf.saved_model.load(path)
            self._keep = loaded
            sig = loaded.signatures["serving_default"]
            spec = list(sig.structured_input_signature[1].values())[0]
            name = list(sig.structured_input_signature[1])[0]
            self.fn = lambda x: list(sig(**{name: x}).values())[0]
            shape = list(spec.shape)
        self.input_dtype = "float32"
        self.input_shape = [int(d) if d is not None else 1 for d in shape]

    def resize(self, batch: int) -> None:
        self.input_shape = [batch] + self.input_shape[1:]

    def run(self, x):
        return self.fn(self.tf.constant(x)).numpy()

    def peak_device_memory(self):
        if self.device != "gpu":
            return None
        return int(self.tf.config.experimental.get_memory_info("GPU:0")["peak"])


def _version(module: str, dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # noqa: BLE001 - a version string is informative only
        return getattr(sys.modules.get(module), "__version__", "unknown")


def default_runtime(path: str) -> str:
    """The runtime a file format implies: .tflite -> litert, .onnx -> onnxruntime, else TF."""
    if path.endswith(".tflite"):
        return "litert"
    if path.endswith(".onnx"):
        return "onnxruntime"
    return "tensorflow"


def open_backend(path: str, runtime: str, threads: int, device: str = "cpu"):
    cls = {"litert": LiteRTBackend, "onnxruntime": OrtBackend, "tensorflow": TFBackend}[runtime]
    return cls(path, threads, device)


def gpu_process_memory(pid: int, smi_output: str | None = None) -> int | None:
    """Device memory a process holds, from ``nvidia-smi --query-compute-apps`` (bytes)."""
    if smi_output is None:
        try:
            smi_output = subprocess.run(
                ["nvidia-smi", "--query-compute-apps=pid,used_memory",
                 "--format=csv,noheader,nounits"], capture_output=True, text=True,
                timeout=20).stdout
        except (OSError, subprocess.TimeoutExpired):
            return None
    total = None
    for line in smi_output.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(pid) and parts[1].isdigit():
            total = (total or 0) + int(parts[1]) * 2**20  # MiB
    return total


# --------------------------------------------------------------------------- one trial (child)
def run_trial(spec: TrialSpec) -> TrialResult:
    """Load, first inference, warm-up and timed runs at one batch size, in this process."""
    t0 = time.perf_counter()
    backend = open_backend(spec.model, spec.runtime, spec.threads, spec.device)
    backend.resize(spec.batch)
    load_s = time.perf_counter() - t0
    x = make_input(backend.input_dtype, backend.input_shape)
    t0 = time.perf_counter()
    backend.run(x)
    first_s = time.perf_counter() - t0
    warm = []
    for _ in range(spec.warmup):
        t0 = time.perf_counter()
        backend.run(x)
        warm.append(time.perf_counter() - t0)
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < spec.runs or time.perf_counter() - start < spec.seconds:
        t0 = time.perf_counter()
        backend.run(x)
        samples.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    out = TrialResult(
        batch_size=spec.batch, runs=len(samples), load_s=load_s, first_inference_s=first_s,
        warmup_runs=spec.warmup, warmup_ms=(sum(warm) / len(warm) * 1000) if warm else None,
        latency_ms=latency_stats(samples),
        images_per_s=spec.batch * len(samples) / total if total > 0 else None,
        input={"dtype": str(_np_dtype_name(backend.input_dtype)), "shape": backend.input_shape},
        versions={spec.runtime: backend.version, "numpy": _np_version()})
    if spec.device == "gpu":
        peak = backend.peak_device_memory() if hasattr(backend, "peak_device_memory") else None
        out.peak_device_memory_bytes = peak if peak is not None else gpu_process_memory(
            os.getpid())
    if spec.keep_samples:
        out.samples_ms = [s * 1000.0 for s in samples]
    return out


def _np_dtype_name(d) -> str:
    import numpy as np

    return np.dtype(d).name


def _np_version() -> str:
    import numpy as np

    return np.__version__


def apply_memory_limit(limit: int | None) -> None:
    """Cap this process's address space (``RLIMIT_AS``); allocations past it fail."""
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def trial_main(spec: TrialSpec, result_path: str) -> int:
    """Entry of the child: run one trial and write its JSON to ``result_path``."""
    try:
        apply_memory_limit(spec.memory_limit)
        res = run_trial(spec).to_dict()
    except MemoryError as exc:
        res = {"batch_size": spec.batch, "outcome": OOM, "error": f"MemoryError: {exc}"}
    except Exception as exc:  # noqa: BLE001 - everything is reported to the parent
        msg = f"{type(exc).__name__}: {exc}"
        outcome = OOM if _OOM_PATTERNS.search(msg) else ERROR
        res = {"batch_size": spec.batch, "outcome": outcome, "error": msg[:2000]}
    res["peak_rss_bytes"] = own_peak_rss()
    with open(result_path + ".tmp", "w") as f:
        json.dump(res, f)
    os.replace(result_path + ".tmp", result_path)
    return 0


def _rss_bytes(ru_maxrss: int) -> int:
    """``ru_maxrss`` in bytes (kilobytes on Linux, bytes on macOS)."""
    return ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _maxrss() -> int:
    return _rss_bytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def own_peak_rss() -> int:
    """This process's peak RSS in bytes. On Linux ``VmHWM`` (the high-water mark of this
    address space): ``ru_maxrss`` also counts the parent's peak, which Linux carries into a
    child at exec."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return _maxrss()


def child_peak_rss(rusage, parent_peak: int) -> int | None:
    """A waited-for child's peak RSS from ``wait4``, or None when it cannot be told from the
    parent's (``ru_maxrss`` starts at the parent's peak, see :func:`own_peak_rss`)."""
    peak = _rss_bytes(rusage.ru_maxrss)
    return peak if peak > parent_peak else None


# --------------------------------------------------------------------------- child control
def classify_exit(returncode: int, stderr: str, memory_limit: int | None) -> tuple[str, str]:
    """(outcome, reason) for a child that left no result file."""
    tail = stderr.strip().splitlines()[-3:]
    detail = (": " + " | ".join(tail)) if tail else ""
    if returncode < 0:
        sig = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(
            -returncode)
        if -returncode == signal.SIGKILL:
            return OOM, f"killed by {sig} (the kernel's out-of-memory killer or a memory cap)"
        if memory_limit or _OOM_PATTERNS.search(stderr):
            return OOM, f"killed by {sig} after an allocation failure{detail}"
        return ERROR, f"killed by {sig}{detail}"
    if _OOM_PATTERNS.search(stderr):
        return OOM, f"exit status {returncode} after an allocation failure{detail}"
    return ERROR, f"exit status {returncode}{detail}"


def run_child(cmd: list[str], result_path: str, timeout: float,
              memory_limit: int | None = None) -> dict:
    """Run a trial command, wait with ``wait4`` for its peak RSS, never raise on its failure."""
    with tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        parent_peak = _maxrss()
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err,
                                    start_new_session=True)
        except OSError as exc:
            return {"outcome": ERROR, "error": f"cannot start {cmd[0]!r}: {exc}"}
        status = rusage = None
        deadline = t0 + timeout
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                _, status, rusage = os.wait4(proc.pid, 0)
                proc.returncode = -9
                err.seek(0)
                return {"outcome": ERROR, "error": f"timed out after {timeout:.0f} s",
                        "peak_rss_bytes": child_peak_rss(rusage, parent_peak),
                        "wall_s": time.perf_counter() - t0}
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        err.seek(0)
        stderr = err.read()[-20000:]
    res = None
    if proc.returncode == 0 and os.path.exists(result_path):
        with open(result_path) as f:
            res = json.load(f)
        os.unlink(result_path)
    if res is None:
        outcome, reason = classify_exit(proc.returncode, stderr, memory_limit)
        res = {"outcome": outcome, "error": reason}
    res["exit"] = {"returncode": proc.returncode}
    # The child's own figure when it wrote one; wait4's only for a child that died.
    if not res.get("peak_rss_bytes"):
        res["peak_rss_bytes"] = child_peak_rss(rusage, parent_peak)
    res["wall_s"] = wall
    if res["outcome"] != OK and stderr.strip():
        res["stderr_tail"] = stderr.strip()[-1000:]
    return res


def trial_command(spec: TrialSpec, result: str, python: str | None = None) -> list[str]:
    """The child's command line: this file's ``trial`` sub-command for ``spec``."""
    return [python or sys.executable, os.path.abspath(__file__), "trial", *spec.argv(),
            "--result", result]


# --------------------------------------------------------------------------- sweep
def batch_plan(spec: str | list[int] | None, max_batch: int) -> list[int]:
    """``auto`` -> 1, 2, 4, ... up to ``max_batch``; ``"1,3,8"`` -> [1, 3, 8] (capped too)."""
    if max_batch < 1:
        raise ValueError(f"max batch must be >= 1, got {max_batch}")
    if spec in (None, "", "auto"):
        out, b = [], 1
        while b <= max_batch:
            out.append(b)
            b *= 2
        return out
    if isinstance(spec, str):
        try:
            sizes = [int(s) for s in spec.split(",") if s.strip()]
        except ValueError:
            raise ValueError(
                f"batch sizes must be 'auto' or integers like 1,2,4; got {spec!r}") from None
    else:
        sizes = list(spec)
    if not sizes or any(s < 1 for s in sizes):
        raise ValueError(f"batch sizes must be positive integers, got {spec!r}")
    sizes = sorted(set(s for s in sizes if s <= max_batch))
    if not sizes:
        raise ValueError(f"no batch size in {spec!r} is within --max-batch {max_batch}")
    return sizes


def runs_for_batch(batch: int, runs: int, min_runs: int = 3) -> int:
    """Timed runs at a batch size: ``runs`` at batch 1, about the same images beyond."""
    return runs if batch == 1 else max(min_runs, math.ceil(runs / batch))


def sweep(trial_fn, batch_sizes: list[int], on_trial=None) -> dict:
    """Run ``trial_fn(batch) -> dict`` for each size until one does not come back ``ok``."""
    trials, stopped = [], None
    for b in batch_sizes:
        t = dict(trial_fn(b))
        t["batch_size"] = b
        t.setdefault("outcome", ERROR)
        trials.append(t)
        if on_trial:
            on_trial(t)
        if t["outcome"] != OK:
            stopped = {"batch_size": b, "outcome": t["outcome"],
                       "reason": f"{t['outcome']} at batch {b}: {t.get('error') or '?'}"}
            break
    if stopped is None:
        stopped = {"batch_size": None, "outcome": OK,
                   "reason": f"all batch sizes ran (largest {batch_sizes[-1]})"}
    ok = [t for t in trials if t["outcome"] == OK and t.get("images_per_s")]
    best = max(ok, key=lambda t: t["images_per_s"]) if ok else None
    return {"trials": trials, "stopped": stopped,
            "best_batch": best["batch_size"] if best else None,
            "best_images_per_s": best["images_per_s"] if best else None,
            "largest_fit": max((t["batch_size"] for t in ok), default=None)}


def sweep_model(spec: SweepSpec, on_trial=None, python: str | None = None) -> ModelRecord:
    """The full measurement of one model file: a child per batch size, then the summary."""
    runtime = spec.runtime or default_runtime(spec.model)
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {RUNTIMES}")
    spec = replace(spec, runtime=runtime)
    sizes = batch_plan(spec.batch_sizes, spec.max_batch)
    tmp = tempfile.mkdtemp(prefix="hmff-bench-")

    def one(b: int) -> dict:
        path = os.path.join(tmp, f"trial_{b}.json")
        cmd = trial_command(spec.trial(b), path, python=python)
        return run_child(cmd, path, spec.trial_timeout, spec.memory_limit)

    try:
        result = sweep(one, sizes, on_trial)
    finally:
        for name in os.listdir(tmp):
            os.unlink(os.path.join(tmp, name))
        os.rmdir(tmp)
    model = spec.model
    first = result["trials"][0]
    ok1 = first["outcome"] == OK and first["batch_size"] == 1
    return ModelRecord(
        runtime=runtime, threads=spec.threads, device=spec.device,
        memory_limit_bytes=spec.memory_limit,
        model_file={"path": model, "name": os.path.basename(model),
                    "size_bytes": _file_size(model)},
        settings={"runs": spec.runs, "seconds": spec.seconds, "warmup": spec.warmup,
                  "batch_sizes": sizes, "max_batch": spec.max_batch},
        hardware=hardware_info(), versions=dict(first.get("versions") or {},
                                                python=platform.python_version()),
        load_s=first.get("load_s") if ok1 else None,
        first_inference_s=first.get("first_inference_s") if ok1 else None,
        warmup_ms=first.get("warmup_ms") if ok1 else None,
        latency=first.get("latency_ms") if ok1 else None,
        samples_ms=first.pop("samples_ms", None),
        throughput=Throughput(batch1_images_per_s=first.get("images_per_s") if ok1 else None,
                              best_batch=result["best_batch"],
                              best_images_per_s=result["best_images_per_s"],
                              largest_fit=result["largest_fit"]),
        sweep=SweepLog(trials=result["trials"], stopped=result["stopped"]),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


def _file_size(path: str) -> int | None:
    if os.path.isfile(path):
        return os.path.getsize(path)
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    return None


# --------------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="runner.py", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", required=True)
    common.add_argument("--runtime", choices=RUNTIMES)
    common.add_argument("--threads", type=int, default=1)
    common.add_argument("--runs", type=int, default=50)
    common.add_argument("--seconds", type=float, default=0.0)
    common.add_argument("--warmup", type=int, default=5)
    common.add_argument("--device", default="cpu", choices=("cpu", "gpu", "rpi"))
    common.add_argument("--memory-limit", type=parse_size, default=None)
    t = sub.add_parser("trial", parents=[common], help="one trial in this process")
    t.add_argument("--batch", type=int, default=1)
    t.add_argument("--result", required=True)
    t.add_argument("--keep-samples", action="store_true")
    s = sub.add_parser("sweep", parents=[common], help="a child per batch size; JSON to stdout")
    s.add_argument("--batch-sizes", default="auto")
    s.add_argument("--max-batch", type=int, default=64)
    s.add_argument("--trial-timeout", type=float, default=900.0)
    sub.add_parser("info", help="hardware JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "info":
        print(json.dumps(hardware_info(), indent=2))
        return 0
    device = "cpu" if args.device == "rpi" else args.device
    if args.cmd == "trial":
        spec = TrialSpec(model=args.model, runtime=args.runtime or default_runtime(args.model),
                         threads=args.threads, batch=args.batch, runs=args.runs,
                         seconds=args.seconds, warmup=args.warmup, device=device,
                         memory_limit=args.memory_limit, keep_samples=args.keep_samples)
        return trial_main(spec, args.result)
    spec = SweepSpec(model=args.model, runtime=args.runtime, threads=args.threads,
                     batch_sizes=args.batch_sizes, max_batch=args.max_batch, runs=args.runs,
                     seconds=args.seconds, warmup=args.warmup, device=device,
                     memory_limit=args.memory_limit, trial_timeout=args.trial_timeout)
    res = sweep_model(spec, on_trial=lambda t: print(f"batch {t['batch_size']}: {t['outcome']}",
                                                     file=sys.stderr, flush=True))
    res.command = shlex.join([os.path.basename(sys.executable)] + sys.argv)
    print(json.dumps(res.to_dict(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
