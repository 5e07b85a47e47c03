"""Export options and the plan of (format, quantization) targets they ask for.

TF-free: the CLI validates a command line (unknown formats, impossible combinations,
missing calibration folders) before anything heavy is imported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from hmff_edge.errors import ConfigError

FORMATS = ("savedmodel", "tflite", "onnx")
QUANTIZATIONS = ("none", "fp16", "dynamic", "int8", "int16x8")
IO_DTYPES = ("float32", "int8", "uint8")
CALIB_METHODS = ("minmax", "entropy", "percentile")
# Quantizations that "all" leaves out: asked for by name only (int16x8 runs outside XNNPACK).
OPT_IN = ("int16x8",)  # onnxruntime's static calibration
MAX_QAT_EPOCHS = 100

# Which quantizations each format supports, in the order they are exported.
SUPPORTED: dict[str, tuple[str, ...]] = {
    "savedmodel": ("none",),
    # int16x8: int16 activations, int8 weights. Near float accuracy for swish networks, but
    # LiteRT runs it on reference kernels (no XNNPACK), so it is never published as int8.
    "tflite": ("none", "fp16", "dynamic", "int8", "int16x8"),
    "onnx": ("none", "int8"),
}

# File stems: tflite_fp32.tflite, onnx_int8.onnx, savedmodel/ ...
_TAG = {"none": "fp32", "fp16": "fp16", "dynamic": "dynamic", "int8": "int8",
        "int16x8": "int16x8"}


@dataclass(frozen=True)
class Target:
    """One artifact to produce."""

    format: str
    quantization: str

    @property
    def stem(self) -> str:
        """``tflite_int8``, ``onnx_fp32``, ``savedmodel``: unique per artifact, so that each
        sidecar ``<stem>.json`` belongs to exactly one file."""
        if self.format == "savedmodel":
            return "savedmodel"
        return f"{self.format}_{_TAG[self.quantization]}"

    @property
    def filename(self) -> str:
        return {"savedmodel": self.stem, "tflite": f"{self.stem}.tflite",
                "onnx": f"{self.stem}.onnx"}[self.format]

    @property
    def label(self) -> str:
        """Short name for tables: ``tflite-int8``, ``onnx-fp32``, ``savedmodel``."""
        if self.format == "savedmodel":
            return "savedmodel"
        return f"{self.format}-{_TAG[self.quantization]}"


@dataclass
class ExportOptions:
    """What to export and how. Every field has a CLI flag of the same name.

    ``formats``/``quantizations`` take names from :data:`FORMATS`/:data:`QUANTIZATIONS` or
    ``"all"``. With ``all`` on either side, combinations that do not exist are skipped;
    asking for one explicitly (``savedmodel`` + ``int8``) is a :class:`ConfigError`.
    ``quantizations=None`` means ``none`` for one format and ``all`` for ``formats="all"``.
    """

    formats: list[str] | str = "all"
    quantizations: list[str] | str | None = None
    out: str | os.PathLike | None = None
    calib_data: str | os.PathLike | None = None
    calib_samples: int = 300
    io_dtype: str = "int8"  # input/output of full-integer TFLite
    eval_data: str | os.PathLike | None = None
    eval_samples: int = 0  # 0 = every image under eval_data
    verify: bool = True
    verify_samples: int = 200  # images used for verification when there is no eval_data
    img_size: int | None = None  # variant-name sources (and overrides nothing else)
    classes: int | None = None
    opset: int = 17
    calib_method: str = "minmax"  # ONNX int8 (onnxruntime quantize_static)
    qat: bool = True  # int8 ladder: fine-tune with QAT when post-training int8 misses the gate
    qat_epochs: int = 2
    qat_images: int | None = 5000  # training images the ladder's QAT fine-tune uses (bounded time)
    diagnose: bool = False  # per-layer int8 error table for every int8 artifact
    latency: bool = True  # batch-1 latency of each artifact in its runtime
    verify_on: str | None = None  # rpi4 | rpi5: also compare TFLite outputs in emulated arm64
    progress: bool = True
    # Graph form of each grouped 1x1 (hmff_edge.convert.forms): latency | size; None =
    # latency for int8, size for the rest. form_table: a per-device table to use instead.
    optimize: str | None = None
    form_table: str | os.PathLike | None = None
    extra: dict = field(default_factory=dict)

    def targets(self) -> list[Target]:
        """The artifacts these options ask for, validated."""
        fmts = _names(self.formats, FORMATS, "format")
        quants_given = self.quantizations
        if quants_given is None:
            quants_given = "all" if fmts == list(FORMATS) and _is_all(self.formats) else "none"
        quants = _names(quants_given, QUANTIZATIONS, "quantization")
        lenient = _is_all(self.formats) or _is_all(quants_given)
        out = [Target(f, q) for f in fmts for q in quants if q in SUPPORTED[f]]
        if not lenient:
            # Lists combine as far as they exist (tflite,onnx x fp16,int8 -> tflite-fp16,
            # tflite-int8, onnx-int8); a format or quantization left with nothing is an error.
            for f in fmts:
                if not any(t.format == f for t in out):
                    raise ConfigError(f"format {f!r} has no {'/'.join(repr(q) for q in quants)} "
                                      f"quantization; {f} supports {', '.join(SUPPORTED[f])}")
            for q in quants:
                if not any(t.quantization == q for t in out):
                    raise ConfigError(f"no requested format has a {q!r} quantization "
                                      f"({'; '.join(f'{f}: ' + ', '.join(SUPPORTED[f]) for f in fmts)})")
        if not out:
            raise ConfigError(
                f"no artifact to export for formats={self.formats!r} "
                f"quantizations={quants_given!r}; supported: "
                + "; ".join(f"{f}: {', '.join(q)}" for f, q in SUPPORTED.items())
            )
        return out

    def validate(self) -> list[Target]:
        """Check every option that can be checked without TensorFlow; return the targets."""
        targets = self.targets()
        if self.io_dtype not in IO_DTYPES:
            raise ConfigError(f"unknown io dtype {self.io_dtype!r}; choose from {', '.join(IO_DTYPES)}")
        if self.io_dtype != "int8" and not any(
            t.quantization == "int8" and t.format == "tflite" for t in targets
        ):
            raise ConfigError(
                f"--io-dtype {self.io_dtype} only applies to a full-integer TFLite export "
                "(--format tflite --quantize int8)"
            )
        if self.calib_method not in CALIB_METHODS:
            raise ConfigError(f"unknown calibration method {self.calib_method!r}; choose from "
                              f"{', '.join(CALIB_METHODS)}")
        if not isinstance(self.qat_epochs, int) or not 1 <= self.qat_epochs <= MAX_QAT_EPOCHS:
            raise ConfigError(f"--qat-epochs must be an integer from 1 to {MAX_QAT_EPOCHS}, got "
                              f"{self.qat_epochs!r} (--no-qat turns the QAT step off)")
        if self.qat_images is not None and self.qat_images < 1:
            raise ConfigError(f"--qat-images must be at least 1, got {self.qat_images!r}")
        if self.calib_samples < 1:
            raise ConfigError(f"calib_samples must be >= 1, got {self.calib_samples}")
        if self.eval_samples < 0:
            raise ConfigError(f"eval_samples must be >= 0, got {self.eval_samples}")
        if self.verify_samples < 1:
            raise ConfigError(f"verify_samples must be >= 1, got {self.verify_samples}")
        if self.img_size is not None and self.img_size < 1:
            raise ConfigError(f"img_size must be positive, got {self.img_size}")
        if self.verify_on is not None:
            from hmff_edge.device.targets import get_target

            get_target(self.verify_on)  # ConfigError naming rpi4, rpi5
            if not self.verify or not any(t.format == "tflite" for t in targets):
                raise ConfigError("--verify-on compares TFLite artifacts on the verification "
                                  "images: it needs a tflite format and no --no-verify")
        if self.classes is not None and self.classes < 2:
            raise ConfigError(f"classes must be >= 2, got {self.classes}")
        if self.optimize is not None:
            from hmff_edge.convert.forms import check_optimize

            check_optimize(self.optimize)
        for name in ("calib_data", "eval_data", "form_table"):
            p = getattr(self, name)
            if p is not None and not Path(p).exists():
                raise ConfigError(f"--{name.replace('_', '-')} {str(p)!r} does not exist")
        return targets

    @property
    def needs_calibration(self) -> bool:
        return any(t.quantization in CALIBRATED for t in self.targets())


# Quantizations whose conversion needs calibration images.
CALIBRATED = ("int8", "int16x8")


def _is_all(v: list[str] | str | None) -> bool:
    if v is None:
        return False
    if isinstance(v, str):
        v = [v]
    return any(s.strip().lower() == "all" for s in v)


def _names(value: list[str] | str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [value] if isinstance(value, str) else list(value)
    names: list[str] = []
    for item in items:
        for s in str(item).split(","):
            s = s.strip().lower()
            if not s:
                continue
            if s == "all":
                names.extend(n for n in allowed if n not in OPT_IN)
            elif s in allowed:
                names.append(s)
            else:
                raise ConfigError(f"unknown {what} {s!r}; choose from {', '.join(allowed)} or all")
    if not names:
        raise ConfigError(f"no {what} given; choose from {', '.join(allowed)} or all")
    return [n for n in allowed if n in names]  # canonical order, no duplicates


RECIPE_KEYS = ("formats", "quantizations", "calib_data", "calib_samples", "io_dtype",
               "eval_data", "eval_samples", "verify_samples", "opset", "calib_method", "qat",
               "qat_epochs", "qat_images", "diagnose")


def load_recipe(path: str | os.PathLike) -> dict:
    """The ``[export]`` table of a recipe TOML (see ``convert/recipes/``), validated keys.

    Relative data paths stay relative to the working directory (recipes are written to be
    used from the repository root), matching what the CLI flags would mean.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"recipe {str(path)!r} does not exist")
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError as exc:
            raise ConfigError("reading a recipe on Python 3.10 needs `pip install tomli`") from exc
    try:
        data = tomllib.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"recipe {str(path)!r} is not valid TOML: {exc}") from exc
    table = data.get("export")
    if not isinstance(table, dict):
        raise ConfigError(f"recipe {str(path)!r} has no [export] table")
    unknown = sorted(set(table) - set(RECIPE_KEYS))
    if unknown:
        raise ConfigError(f"recipe {str(path)!r} has unknown keys {unknown}; known: "
                          f"{', '.join(RECIPE_KEYS)}")
    return dict(table)
