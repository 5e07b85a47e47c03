"""Exact alternative graph forms of the grouped 1x1 convolution, and a per-layer selector.

One set of weights of :class:`~hmff_edge.models.layers.GroupedPointwiseConv2D` (``G`` groups,
kernel ``(1, 1, Cin/G, F)``, optionally reading its input channel-interleaved with step
``G``) can be written several ways that compute the same outputs:

* ``grouped``: one grouped ``CONV_2D`` with ``G`` groups (after one ``TRANSPOSE`` for the
  interleave): the smallest file and the fewest MACs;
* ``regroup<G'>``: a grouped ``CONV_2D`` with ``G' < G`` larger groups whose kernels are
  block-diagonal (zeros between the original groups). More MACs, but XNNPACK's int8 kernels
  for 16-32 channels a group are memory-bound, and larger groups run closer to GEMM speed;
* ``dense``: the block-diagonal kernel as one ordinary ``CONV_2D`` (``G' = 1``); with the
  interleave, ``dense-fold`` permutes the kernel's rows instead of the activation (no
  ``TRANSPOSE``);
* ``split``: one ``CONV_2D`` per group between a ``SPLIT`` and a ``CONCATENATION``.

Zeros in a block-diagonal kernel add nothing to any accumulator and leave every output
channel's largest weight, hence its int8 per-channel scale, unchanged: fp32 outputs are equal
up to float summation order and int8 weights are bit-identical.

Which form is fastest depends on the CPU and the layer shape, so :func:`select` picks one per
layer from measured times: a stored per-device table that ships in the package
(``hmff_edge/convert/form_tables/*.json``, written by :func:`measure_table`) or timings in the
real runtime on this machine (:class:`LiteRTTimer`). The export path of the grouped layer asks
:func:`current_form` for its form at trace time (inside :func:`use_forms`).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hmff_edge.errors import ConfigError

OPTIMIZE_CHOICES = ("latency", "size")
TABLE_DIR = Path(__file__).with_name("form_tables")
TABLE_VERSION = 1
# split emits one CONV_2D per group between a SPLIT and a CONCATENATION; XNNPACK delegates a
# SPLIT into at most 4 outputs (a SPLIT into 8 stays out and splits the delegate).
SPLIT_MAX_GROUPS = 4


@dataclass(frozen=True, order=True)
class LayerKey:
    """What a grouped 1x1's speed depends on (batch 1): map size, channels, groups, whether
    it interleaves its input, and the numeric type of the artifact."""

    h: int
    w: int
    cin: int
    filters: int
    groups: int
    interleave: bool
    quant: str  # "fp32" | "int8" (fp16 / dynamic files run float kernels)

    def text(self) -> str:
        il = "i" if self.interleave else "n"
        return f"{self.h}x{self.w}x{self.cin}-{self.filters}-g{self.groups}-{il}-{self.quant}"

    @classmethod
    def parse(cls, s: str) -> LayerKey:
        try:
            hwc, f, g, il, q = s.split("-")
            h, w, c = (int(v) for v in hwc.split("x"))
            return cls(h, w, c, int(f), int(g[1:]), il == "i", q)
        except ValueError:
            raise ConfigError(f"not a layer key: {s!r} (expected e.g. 56x56x128-128-g8-i-int8)") from None


@dataclass(frozen=True)
class GroupedForm:
    """One exact graph form of a grouped 1x1 (see module doc)."""

    groups: int  # groups of the emitted CONV_2D(s): the layer's G, fewer, or 1 (dense)
    split: bool = False
    fold_interleave: bool = False  # only with groups == 1: kernel rows permuted

    @property
    def name(self) -> str:
        if self.split:
            return "split"
        if self.groups == 1:
            return "dense-fold" if self.fold_interleave else "dense"
        return f"regroup{self.groups}"

    @classmethod
    def parse(cls, name: str, layer_groups: int) -> GroupedForm:
        """Inverse of :attr:`name`; ``grouped`` is the layer's own group count."""
        if name == "grouped":
            return cls(layer_groups)
        if name == "split":
            return cls(layer_groups, split=True)
        if name in ("dense", "dense-fold"):
            return cls(1, fold_interleave=name == "dense-fold")
        if name.startswith("regroup") and name[7:].isdigit():
            g = int(name[7:])
            if g >= 1 and layer_groups % g == 0:
                return cls(g)
        known = ", ".join(f.label(layer_groups) for f in candidates_for(layer_groups, True))
        raise ConfigError(f"unknown graph form {name!r} for a {layer_groups}-group layer; "
                          f"known: {known}")

    def label(self, layer_groups: int) -> str:
        """:attr:`name`, but ``grouped`` for the layer's own form."""
        return "grouped" if (self.groups == layer_groups and not self.split) else self.name


def candidates_for(groups: int, interleave: bool, quant: str = "fp32") -> list[GroupedForm]:
    """Every form of a ``groups``-group layer: as trained first, then fewer larger groups
    (each divisor of ``groups``), dense, dense-fold (interleaving layers), split (float
    only, up to :data:`SPLIT_MAX_GROUPS` groups: in int8 every group's output gets its own
    scale and the CONCATENATION requantizes them, a different int8 function; on a
    random-weight hmff-mobilenet-16ch that alone took top-1 agreement with the grouped int8
    file to 75%)."""
    forms = [GroupedForm(groups)]
    forms += [GroupedForm(g) for g in range(groups - 1, 1, -1)
              if groups % g == 0 and g < groups]
    if groups > 1:
        forms.append(GroupedForm(1))
        if interleave:
            forms.append(GroupedForm(1, fold_interleave=True))
        if groups <= SPLIT_MAX_GROUPS and quant != "int8":
            forms.append(GroupedForm(groups, split=True))
    return forms


def candidates(key: LayerKey) -> list[GroupedForm]:
    return candidates_for(key.groups, key.interleave, key.quant)


# ------------------------------------------------------------------ emitting a form (TF)

_FORMS: contextvars.ContextVar[dict[str, GroupedForm] | None] = contextvars.ContextVar(
    "hmff_edge_grouped_forms", default=None)


@contextlib.contextmanager
def use_forms(plan: dict[str, GroupedForm] | None) -> Iterator[None]:
    """Trace inside this context to emit ``plan[layer.name]`` for each grouped layer (others,
    and every layer when ``plan`` is None, keep the grouped form)."""
    token = _FORMS.set(plan)
    try:
        yield
    finally:
        _FORMS.reset(token)


def current_form(layer_name: str | None, groups: int) -> GroupedForm:
    """The form the plan in effect gives layer ``layer_name`` (grouped without one)."""
    plan = _FORMS.get()
    return (plan or {}).get(layer_name or "") or GroupedForm(groups)


def emit(x: Any, kernel: Any, groups: int, interleave: bool, form: GroupedForm) -> Any:
    """The grouped 1x1 ``x -> y`` in ``form`` (TensorFlow ops; ``kernel`` may be any tensor
    of shape ``(1, 1, Cin/G, F)``, e.g. a fake-quantized one)."""
    import tensorflow as tf

    from hmff_edge.models.layers import interleave_channels

    if form.fold_interleave:
        if not interleave or form.groups != 1:
            raise ValueError("fold_interleave needs an interleaving layer and the dense form")
        return tf.nn.conv2d(x, block_diagonal(kernel, groups, 1, interleave=True),
                            strides=1, padding="VALID")
    if interleave:
        x = interleave_channels(x, groups)
    if form.split:
        fg = kernel.shape[-1] // groups
        xs = tf.split(x, groups, axis=-1)
        ys = [tf.nn.conv2d(xs[j], kernel[..., j * fg:(j + 1) * fg], strides=1, padding="VALID")
              for j in range(groups)]
        return tf.concat(ys, axis=-1)
    k = kernel if form.groups == groups else block_diagonal(kernel, groups, form.groups)
    return tf.nn.conv2d(x, k, strides=1, padding="VALID")


def block_diagonal(kernel: Any, groups: int, new_groups: int, interleave: bool = False) -> Any:
    """``(1, 1, Cin/G, F)`` -> ``(1, 1, Cin/G', F)``: each of the ``G'`` new groups holds
    ``m = G / G'`` original groups on its diagonal, zeros elsewhere. With ``interleave``
    (dense only) row ``c * G + j`` is channel ``c`` of group ``j``: the kernel reads the
    un-interleaved input."""
    import numpy as np
    import tensorflow as tf

    if groups % new_groups:
        raise ValueError(f"{groups} groups cannot be regrouped into {new_groups}")
    cin_g, filters = int(kernel.shape[2]), int(kernel.shape[3])
    m, fg = groups // new_groups, filters // groups
    k = tf.reshape(kernel, (cin_g, new_groups, m, fg))
    # bd[a, c, j', b, f] = k[c, j', a, f] * (a == b): rows (a, c), columns (j', b, f).
    # Transpose and broadcast multiply rather than einsum: the converter folds these into a
    # constant, while an einsum with an identity stayed a BATCH_MATMUL in the graph.
    k = tf.expand_dims(tf.transpose(k, (2, 0, 1, 3)), 3)  # (a, c, j', 1, f)
    # A literal identity: tf.eye becomes a MATRIX_DIAG the converter does not fold.
    eye = tf.constant(np.eye(m).reshape(m, 1, 1, m, 1), dtype=k.dtype)  # (a, ., ., b, .)
    bd = k * eye
    if interleave:
        if new_groups != 1:
            raise ValueError("an interleave folds only into the dense form")
        bd = tf.transpose(bd, (1, 0, 2, 3, 4))  # rows (c, a): input channel c * G + a
    return tf.reshape(bd, (1, 1, m * cin_g, filters))


# ------------------------------------------------------------------ choosing forms

Timer = Callable[[LayerKey, list[GroupedForm]], dict[GroupedForm, float]]


@dataclass
class FormChoice:
    """The form picked for one layer and the evidence behind it."""

    layer: str
    key: str
    form: str
    source: str  # "measured" | "table" | "default" | "size"
    times_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class FormPlan:
    """Forms for every grouped layer of one artifact, with how they were chosen."""

    optimize: str
    device: str
    choices: list[FormChoice] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def layer_forms(self) -> dict[str, GroupedForm]:
        """Layer name -> form, for :func:`use_forms`."""
        return {c.layer: GroupedForm.parse(c.form, LayerKey.parse(c.key).groups)
                for c in self.choices}

    def summary(self) -> str:
        counts = ", ".join(f"{n} x {f}" for f, n in sorted(self.counts().items()))
        return f"graph forms ({self.optimize}, {self.device}): {counts or 'no grouped layers'}"

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.choices:
            out[c.form] = out.get(c.form, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FormPlan:
        return cls(optimize=d["optimize"], device=d["device"],
                   choices=[FormChoice(**c) for c in d.get("choices", [])],
                   notes=list(d.get("notes", [])))


def check_optimize(value: str) -> str:
    if value not in OPTIMIZE_CHOICES:
        raise ConfigError(f"--optimize must be one of {', '.join(OPTIMIZE_CHOICES)}, "
                          f"got {value!r}")
    return value


def select(layers: dict[str, LayerKey], optimize: str, *, table: dict[str, dict] | None = None,
           timer: Timer | None = None, device: str | None = None) -> FormPlan:
    """One form per layer: ``size`` keeps the grouped form (fewest weights and MACs);
    ``latency`` takes the fastest candidate from ``table`` (key text -> {form: ms}), else
    from ``timer`` (shapes are timed once each), else the grouped form, saying so."""
    check_optimize(optimize)
    plan = FormPlan(optimize=optimize, device=device or device_kind())
    timed: dict[LayerKey, dict[str, float]] = {}
    missing = []
    for name, key in sorted(layers.items()):
        grouped = GroupedForm(key.groups).label(key.groups)
        if optimize == "size":
            plan.choices.append(FormChoice(name, key.text(), grouped, "size"))
            continue
        row = (table or {}).get(key.text())
        source = "table"
        if row is None and timer is not None:
            if key not in timed:
                got = timer(key, candidates(key))
                timed[key] = {f.label(key.groups): s * 1e3 for f, s in got.items()}
            row, source = timed[key], "measured"
        if not row:
            missing.append(key.text())
            plan.choices.append(FormChoice(name, key.text(), grouped, "default"))
            continue
        known = {f.label(key.groups) for f in candidates(key)}
        row = {k: v for k, v in row.items() if k in known}
        best = min(row, key=row.get)
        plan.choices.append(FormChoice(name, key.text(), best, source, dict(row)))
    if missing:
        plan.notes.append(
            f"{len(missing)} layer(s) kept the grouped form: no timing for "
            f"{', '.join(sorted(set(missing)))} in the table for {plan.device!r}"
            + ("" if timer else " and no runtime to time them on this machine"))
    return plan


# ------------------------------------------------------------------ per-device tables


def device_kind() -> str:
    """A short name for this CPU kind (see :func:`kind_of`)."""
    return kind_of(_cpu_model(), _cpu_flags())


def kind_of(cpu_model: str, flags: Iterable[str]) -> str:
    """``vendor-isa`` for a CPU: the best int8 level of its SIMD features, ``amx``,
    ``avx512_vnni-avx_vnni``, ``avx512_vnni``, ``avx2``, ``neon`` or ``generic``.

    AVX-512 VNNI alone does not fix int8 speed: two AMD EPYCs with it ran mobilenet-v1 int8
    at 4.04x and 2.77x their fp32 (int8 GEMM peaks 398 and 207 GMAC/s), and the faster one
    also reported AVX_VNNI, the flag that told them apart, so it is a kind of its own (forms
    tables and published tables are kept per kind)."""
    have = set(flags)
    model = cpu_model.lower()
    vendor = ("amd" if "amd" in model or "epyc" in model else
              "intel" if "intel" in model or "xeon" in model else platform.machine())
    if "amx_int8" in have:
        isa = "amx"
    elif "avx512_vnni" in have:
        isa = "avx512_vnni-avx_vnni" if "avx_vnni" in have else "avx512_vnni"
    elif "avx2" in have:
        isa = "avx2"
    elif have & {"asimd", "neon"}:
        isa = "neon"
    else:
        isa = "generic"
    return f"{vendor}-{isa}"


SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
              "amx_int8", "asimd", "asimddp", "i8mm", "sve")


def simd_flags() -> list[str]:
    """The SIMD features of this CPU that decide int8 / fp32 kernel speed."""
    have = _cpu_flags()
    return [f for f in SIMD_FLAGS if f in have]


def _cpu_flags() -> set[str]:
    """Every feature flag of this CPU (``/proc/cpuinfo``'s flags or Features line)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Hardware", "Model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def table_path(device: str) -> Path:
    return TABLE_DIR / f"{device}.json"


def load_table(device: str | None = None, path: str | Path | None = None) -> dict[str, dict] | None:
    """The stored ``{layer key: {form: ms}}`` for ``device`` (None when there is none);
    a file that is not a form table is a :class:`ConfigError`."""
    p = Path(path) if path else table_path(device or device_kind())
    if not p.is_file():
        if path:
            raise ConfigError(f"form table {str(p)!r} does not exist")
        return None
    try:
        data = json.loads(p.read_text())
        rows = data["layers"]
        if data.get("version") != TABLE_VERSION or not isinstance(rows, dict):
            raise KeyError("version")
        for k, row in rows.items():
            key = LayerKey.parse(k)
            known = {f.label(key.groups) for f in candidates(key)}
            bad = set(row) - known
            if bad:
                raise ConfigError(f"form table {str(p)!r}: layer {k} lists forms {sorted(bad)} "
                                  f"that do not fit a {key.groups}-group layer")
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{str(p)!r} is not a version-{TABLE_VERSION} form table "
                          f"({type(exc).__name__}: {exc})") from None
    return rows


def table_provenance(path: str | Path) -> str:
    """Which table a plan read, and where and when it was measured (a table from another
    CPU kind picks forms for that CPU, not this one)."""
    meta = json.loads(Path(path).read_text())
    return (f"forms table {Path(path).name}: measured {meta.get('date', 'on an unrecorded date')} "
            f"on {meta.get('cpu_model', 'an unrecorded CPU')} ({meta.get('device', '?')})")


def check_table_covers(table: dict[str, dict], layers: dict[str, LayerKey], path: str) -> None:
    """A table given explicitly must describe this model: every layer key present."""
    absent = sorted({k.text() for k in layers.values()} - set(table))
    if absent:
        raise ConfigError(f"form table {path!r} does not match this model: no entry for "
                          f"{len(absent)} layer shape(s), e.g. {absent[0]}")


def write_table(path: str | Path, device: str, rows: dict[str, dict], meta: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"version": TABLE_VERSION, "device": device, **meta,
                                      "layers": dict(sorted(rows.items()))}, indent=1) + "\n")


# ------------------------------------------------------------------ layers of a model


def is_grouped_pointwise(layer: Any) -> bool:
    """A :class:`~hmff_edge.models.layers.GroupedPointwiseConv2D`, or any layer (a QAT
    wrapper) that sets ``exports_grouped_forms = True`` and has ``filters``, ``groups`` and
    ``interleave_input`` and calls ``grouped_pointwise_conv(..., name=self.name)``."""
    from hmff_edge.models.layers import GroupedPointwiseConv2D

    return isinstance(layer, GroupedPointwiseConv2D) or bool(
        getattr(layer, "exports_grouped_forms", False))


def grouped_layers(model: Any, img_size: int, quant: str) -> dict[str, LayerKey]:
    """Layer name -> :class:`LayerKey` for every grouped 1x1 of a built Keras model."""
    out = {}
    for layer in model._flatten_layers():
        if is_grouped_pointwise(layer) and layer.groups > 1:
            shape = layer.input.shape
            out[layer.name] = LayerKey(int(shape[1]), int(shape[2]), int(shape[3]),
                                       layer.filters, layer.groups, layer.interleave_input,
                                       "int8" if quant == "int8" else "fp32")
    return out


# ------------------------------------------------------------------ timing in LiteRT


class LiteRTTimer:
    """Times each candidate form of one layer shape as a one-layer ``.tflite`` in LiteRT
    (XNNPACK, ``threads``, batch 1), round-robin over the forms, median of ``rounds``."""

    def __init__(self, threads: int = 1, rounds: int = 7, runs: int = 10):
        self.threads, self.rounds, self.runs = threads, rounds, runs

    def __call__(self, key: LayerKey, forms: list[GroupedForm]) -> dict[GroupedForm, float]:
        from ai_edge_litert.interpreter import Interpreter

        from hmff_edge.bench.runner import fill_random_input

        its = {}
        for f in forms:
            try:
                it = Interpreter(model_content=one_layer_tflite(key, f), num_threads=self.threads)
                it.allocate_tensors()
            except Exception:  # noqa: BLE001 - a form this converter/runtime cannot run
                continue
            fill_random_input(it)
            it.invoke()
            its[f] = it
        samples: dict[GroupedForm, list[float]] = {f: [] for f in forms}
        for _ in range(self.rounds):
            for f, it in its.items():
                t0 = time.perf_counter()
                for _ in range(self.runs):
                    it.invoke()
                samples[f].append((time.perf_counter() - t0) / self.runs)
        return {f: statistics.median(s) for f, s in samples.items()}


def one_layer_tflite(key: LayerKey, form: GroupedForm, seed: int = 0) -> bytes:
    """A ``.tflite`` holding just this layer in ``form`` (random weights; int8 with int8 I/O
    and per-channel weights, calibrated on random inputs)."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    kernel = tf.constant(rng.standard_normal((1, 1, key.cin // key.groups, key.filters))
                         .astype("float32") * 0.1)
    spec = tf.TensorSpec([1, key.h, key.w, key.cin], tf.float32)
    def layer(x):
        return emit(x, kernel, key.groups, key.interleave, form)

    fn = tf.function(layer, input_signature=[spec]).get_concrete_function()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn])
    if key.quant == "int8":
        def rep():
            for _ in range(4):
                yield [rng.standard_normal((1, key.h, key.w, key.cin)).astype("float32")]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


def measure_table(keys: Iterable[LayerKey], timer: Timer | None = None,
                  progress: Callable[[str], None] | None = None) -> dict[str, dict]:
    """``{key text: {form: ms}}`` for ``keys``, timed on this machine."""
    timer = timer or LiteRTTimer()
    rows = {}
    for key in sorted(set(keys)):
        got = timer(key, candidates(key))
        rows[key.text()] = {f.label(key.groups): round(s * 1e3, 4) for f, s in got.items()}
        if progress:
            progress(f"{key.text()}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[key.text()].items()))
    return rows


# ------------------------------------------------------------------ the export hook

TIMING_ENV = "HMFF_EDGE_FORM_TIMING"  # "0": never time candidates, table or default only


def default_optimize(quantization: str) -> str:
    """``latency`` for int8 (where the form matters most), ``size`` (the grouped form, as
    trained) for everything else."""
    return "latency" if quantization == "int8" else "size"


def runtime_timer() -> Timer | None:
    """A :class:`LiteRTTimer` when LiteRT can run here and timing is not switched off."""
    import os

    if os.environ.get(TIMING_ENV, "1") == "0":
        return None
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return None
    return LiteRTTimer()


def plan_for_model(model: Any, img_size: int, quantization: str, optimize: str | None = None,
                   table: str | Path | None = None, timer: Timer | None = None,
                   use_timer: bool = True) -> FormPlan:
    """The form of every grouped 1x1 of ``model`` for one artifact (see :func:`select`):
    the stored table for this device (or ``table``, which must cover the model), then timings
    on this machine for shapes the table lacks, then the grouped form."""
    optimize = check_optimize(optimize or default_optimize(quantization))
    quant = "int8" if quantization == "int8" else "fp32"
    layers = grouped_layers(model, img_size, quant)
    device = device_kind()
    rows = None
    if optimize == "latency":
        rows = load_table(path=table) if table else load_table(device)
        if table and rows is not None:
            check_table_covers(rows, layers, str(table))
    if timer is None and use_timer and optimize == "latency":
        timer = runtime_timer()
    plan = select(layers, optimize, table=rows, timer=timer, device=device)
    if optimize == "latency" and rows is not None:
        plan.notes.insert(0, table_provenance(table or table_path(device)))
    if optimize == "latency" and rows is None:
        plan.notes.insert(0, f"no stored form table for {device!r}"
                          + ("; candidates timed on this machine" if timer else ""))
    return plan
