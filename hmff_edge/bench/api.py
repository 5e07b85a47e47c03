"""``bench()``: measure models on a device and return one JSON-ready record per model.

The parent (this process) never imports a model runtime for timing: every trial runs in a
child (:mod:`hmff_edge.bench.runner`), locally or, with ``host``, on the device over ssh.
Inside, a measurement is a :class:`~hmff_edge.bench.runner.ModelRecord`; :func:`bench`
returns each as its JSON dict, the form that the reports, ``--json`` and saved
``results.json`` files (:func:`hmff_edge.bench.report.load_results`) share.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hmff_edge.bench import runner
from hmff_edge.bench.models import ModelRef, resolve
from hmff_edge.bench.profiles import DeviceProfile, profile_for
from hmff_edge.errors import ConfigError, UnavailableError


class NoGpuError(UnavailableError):
    """``--device gpu`` on a machine (or runtime) without a visible GPU."""


@dataclass
class BenchOptions:
    """Every ``hmff-edge bench`` option; ``None`` means "the device profile's default"."""

    device: str = "cpu"
    profile: str | None = None
    runtime: str | None = None
    threads: int | None = None
    batch_sizes: str = "auto"
    max_batch: int | None = None
    memory_limit: str | int | None = None
    runs: int = 50
    seconds: float = 0.0
    warmup: int = 5
    host: str | None = None
    ssh_key: str | None = None
    ssh_port: int | None = None
    ssh_options: tuple[str, ...] = ()
    remote_python: str | None = None
    quant: str = "fp32"
    img_size: int = 224
    classes: int = 10
    cache: str | None = None
    trial_timeout: float = 900.0


def check_gpu(runtime: str, names: list[str] | None = None,
              ort_providers: list[str] | None = None) -> list[str]:
    """The visible GPU names, or :class:`NoGpuError` saying what is missing."""
    if runtime == "litert":
        raise ConfigError("--device gpu supports --runtime onnxruntime (CUDA provider) or "
                          "--runtime tensorflow; the LiteRT pip package has no GPU delegate "
                          "on this platform")
    names = runner.gpu_names() if names is None else names
    if not names and not os.path.exists("/dev/nvidia0"):
        raise NoGpuError("--device gpu: no GPU is visible on this machine (nvidia-smi lists "
                         "none and /dev/nvidia0 does not exist); use --device cpu")
    if runtime == "onnxruntime":
        if ort_providers is None:
            try:
                import onnxruntime as ort
            except ImportError as exc:
                raise NoGpuError(f"--device gpu with onnxruntime: onnxruntime is not "
                                 f"installed ({exc})") from exc
            ort_providers = ort.get_available_providers()
        if "CUDAExecutionProvider" not in ort_providers:
            seen = ", ".join(names) or "/dev/nvidia0"
            raise NoGpuError(f"--device gpu: a GPU is visible ({seen}) but this onnxruntime "
                             f"has no "
                             f"CUDAExecutionProvider (providers: {ort_providers}); pip install "
                             f"onnxruntime-gpu, or use --runtime tensorflow")
    return names


@dataclass(frozen=True)
class _Settings:
    """The options after the profile filled in its defaults, validated."""

    memory_limit: int | None
    threads: int
    max_batch: int
    sizes: list[int]


def _settings(opts: BenchOptions, prof: DeviceProfile) -> _Settings:
    try:
        limit = runner.parse_size(opts.memory_limit)
    except ValueError as exc:
        raise ConfigError(f"--memory-limit: {exc}") from exc
    if limit is None:
        limit = prof.memory_limit
    if opts.device == "gpu" and opts.memory_limit:
        raise ConfigError("--memory-limit caps host address space (RLIMIT_AS), which CUDA "
                          "runtimes exceed at start-up; on GPU, out-of-memory is caught from "
                          "the runtime instead")
    if opts.device == "gpu":
        limit = None
    threads = opts.threads or prof.threads
    max_batch = opts.max_batch or prof.max_batch
    if threads < 1 or opts.runs < 1 or max_batch < 1 or opts.seconds < 0 or opts.warmup < 0:
        raise ConfigError(f"--threads, --runs and --max-batch must be >= 1 and --seconds, "
                          f"--warmup >= 0; got threads={threads} runs={opts.runs} "
                          f"max_batch={max_batch} seconds={opts.seconds} warmup={opts.warmup}")
    try:
        sizes = runner.batch_plan(opts.batch_sizes, max_batch)
    except ValueError as exc:
        raise ConfigError(f"--batch-sizes: {exc}") from exc
    return _Settings(memory_limit=limit, threads=threads, max_batch=max_batch, sizes=sizes)


def device_record(opts: BenchOptions, prof: DeviceProfile, hardware: dict, threads: int,
                  limit: int | None) -> dict[str, Any]:
    """What ran where, with the emulation label that every output repeats."""
    emulation = prof.kind == "rpi" and not opts.host
    cap = runner.format_size(limit) if limit else "no memory cap"
    emulator = hardware.get("emulation") if opts.host else None  # hmff-edge device emulate
    if emulator:
        emulation = True
        label = (f"{emulator.get('label')} - {prof.name} profile at {opts.host}, qemu-user on "
                 f"{emulator.get('host_cpu')}")
    elif emulation:
        label = (f"EMULATION of {prof.name} ({threads} threads, {cap}) on "
                 f"{hardware.get('cpu_model')} - not Raspberry Pi timings")
    elif opts.host:
        label = f"{prof.name} at {opts.host} (measured on the device)"
    elif prof.kind == "gpu":
        label = f"gpu: {', '.join(hardware.get('gpus') or []) or '?'}"
    else:
        label = f"cpu: {hardware.get('cpu_model')}, {threads} thread(s)"
    return {"name": opts.device, "profile": prof.name, "profile_file": prof.path,
            "emulation": emulation, "host": opts.host, "label": label,
            "description": prof.description}


def pick_runtime(spec: str, opts: BenchOptions, prof: DeviceProfile) -> str:
    """``--runtime``, else the file's format, else the profile's runtime."""
    p = Path(spec)
    implied = runner.default_runtime(spec) if p.exists() else None
    if opts.runtime and implied and implied != opts.runtime:
        raise ConfigError(f"--runtime {opts.runtime} cannot run {spec!r} (a {p.suffix or 'folder'}"
                          f" needs --runtime {implied})")
    runtime = opts.runtime or implied or prof.runtime
    if runtime not in runner.RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; choose one of {runner.RUNTIMES}")
    return runtime


def enrich(record: runner.ModelRecord, ref: ModelRef) -> runner.ModelRecord:
    """Add the model description and achieved GFLOP/s (2 x MACs x images/s)."""
    record.model = ref.to_dict()
    tp = record.throughput

    def gflops(ips: float | None) -> float | None:
        return 2 * ref.macs * ips / 1e9 if ref.macs and ips else None

    tp.batch1_gflops = gflops(tp.batch1_images_per_s)
    tp.best_gflops = gflops(tp.best_images_per_s)
    return record


def bench(models: list[str], opts: BenchOptions | None = None, *, progress: bool = True,
          command: str | None = None) -> list[dict]:
    """Benchmark each MODEL (file or variant name); one result dict per model
    (:meth:`runner.ModelRecord.to_dict`; ``ModelRecord.from_dict`` reads it back typed)."""
    opts = opts or BenchOptions()
    if not models:
        raise ConfigError("give at least one MODEL (an exported file or a variant name)")
    prof = profile_for(opts.device, opts.profile)
    if opts.host and prof.kind != "rpi":
        raise ConfigError(f"--host is for --device rpi (got --device {opts.device})")
    s = _settings(opts, prof)
    runtimes = [pick_runtime(m, opts, prof) for m in models]
    if opts.device == "gpu":
        for rt in sorted(set(runtimes)):
            check_gpu(rt)
    command = command or shlex.join(["hmff-edge"] + sys.argv[1:])
    hardware = runner.hardware_info()
    out = []
    for spec, runtime in zip(models, runtimes):
        ref = resolve(spec, runtime=runtime, quant=opts.quant, img_size=opts.img_size,
                      classes=opts.classes, cache=opts.cache)
        sweep_spec = runner.SweepSpec(
            model=ref.path, runtime=runtime, threads=s.threads, batch_sizes=s.sizes,
            max_batch=s.max_batch, runs=opts.runs, seconds=opts.seconds, warmup=opts.warmup,
            device="gpu" if opts.device == "gpu" else "cpu", memory_limit=s.memory_limit,
            trial_timeout=opts.trial_timeout)
        res = _measure(sweep_spec, opts, prof, f"{ref.name} [{runtime}]", progress)
        res.device = device_record(opts, prof, res.hardware if opts.host else hardware,
                                   s.threads, s.memory_limit)
        res.command = command
        res.quantization = ref.quantization
        out.append(enrich(res, ref).to_dict())
    return out


def _measure(spec: runner.SweepSpec, opts: BenchOptions, prof: DeviceProfile, desc: str,
             progress: bool) -> runner.ModelRecord:
    """The sweep of one file, here or on ``opts.host``, with a progress bar per batch size."""
    from tqdm import tqdm

    with tqdm(total=len(spec.batch_sizes), desc=desc, unit="batch", file=sys.stderr,
              leave=False, disable=not progress) as bar:
        if not opts.host:
            return runner.sweep_model(spec, on_trial=lambda t: bar.update(1))
        from hmff_edge.bench.ssh import RemoteTarget, remote_sweep

        target = RemoteTarget.parse(opts.host, identity=opts.ssh_key, port=opts.ssh_port,
                                    python=opts.remote_python or prof.remote_python,
                                    options=list(opts.ssh_options))
        res = remote_sweep(target, spec.model, runtime=spec.runtime, threads=spec.threads,
                           batch_sizes=",".join(map(str, spec.batch_sizes)),
                           max_batch=spec.max_batch, runs=spec.runs, seconds=spec.seconds,
                           warmup=spec.warmup, memory_limit=spec.memory_limit,
                           trial_timeout=spec.trial_timeout)
        bar.update(len(res.sweep.trials))
        return res
