"""The model zoo as data (TF-free): every variant, its stage table and the paper's figures.

Architectures are small tables expanded by one builder (:mod:`hmff_edge.models.builder`),
in the style of Keras' EfficientNet ``DEFAULT_BLOCKS_ARGS``. Importing this module does not
import TensorFlow, so ``hmff-edge models --help`` and the name checks stay instant.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hmff_edge.errors import ConfigError

# (filters, stride) of the 13 depthwise-separable blocks of MobileNetV1 / kMobileNet.
MOBILENET_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),
    (1024, 2), (1024, 1),
)
# Table 1 of the paper: five 512 blocks (one fewer than MobileNet), then 1024/2, then the
# HMFF module in place of MobileNet's last 1024 block.
HMFF_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1),
    (1024, 2),
)
STEM_FILTERS = 32
TOTAL_STRIDE = 32  # five stride-2 stages
MIN_IMG_SIZE = 32  # the smallest input that still leaves a 1x1 map before pooling
DEFAULT_DILATIONS = (1, 2, 4, 8)

ACTIVATIONS = {"swish": "", "hard_swish": "-hs", "relu6": "-relu6"}

# Table 2 (CIFAR-10, 224x224, 10 classes): params, "FLOPs" (multiply-accumulates), accuracy.
PAPER_TABLE2 = {
    "mobilenet-v1": (3.21e6, 0.567e9, 0.926),
    "kmobilenet-16ch": (0.244e6, 0.092e9, 0.885),
    "kmobilenet-32ch": (0.403e6, 0.153e9, 0.910),
    "kmobilenet-64ch": (0.718e6, 0.251e9, 0.920),
    "kmobilenet-128ch": (1.32e6, 0.370e9, 0.923),
    "hmff-mobilenet-16ch": (0.245e6, 0.090e9, 0.898),
    "hmff-mobilenet-32ch": (0.375e6, 0.148e9, 0.913),
    "hmff-mobilenet-64ch": (0.633e6, 0.238e9, 0.921),
    "hmff-mobilenet-128ch": (1.12e6, 0.341e9, 0.927),
}


@dataclass(frozen=True)
class Variant:
    """One named model: a family, its grouping width ``ch`` and its activation."""

    name: str
    family: str  # "mobilenet" | "kmobilenet" | "hmff"
    ch: int | None  # minimum input channels per group (None: plain pointwise)
    activation: str  # "relu6" | "swish" | "hard_swish"
    blocks: tuple[tuple[int, int], ...]
    paper_params: float | None = None
    paper_macs: float | None = None
    paper_accuracy: float | None = None
    description: str = ""

    @property
    def base_name(self) -> str:
        """The paper's name for the variant (without an activation suffix)."""
        suffix = ACTIVATIONS.get(self.activation, "")
        if self.family != "mobilenet" and suffix and self.name.endswith(suffix):
            return self.name[: -len(suffix)]
        return self.name


def _make_registry() -> dict[str, Variant]:
    reg: dict[str, Variant] = {}

    def add(v: Variant) -> None:
        reg[v.name] = v

    add(Variant("mobilenet-v1", "mobilenet", None, "relu6", MOBILENET_BLOCKS,
                *PAPER_TABLE2["mobilenet-v1"],
                description="MobileNetV1 alpha 1 (ReLU6), the paper's baseline"))
    for family, blocks, prefix, what in (
        ("kmobilenet", MOBILENET_BLOCKS, "kmobilenet", "kMobileNet, grouped pointwise"),
        ("hmff", HMFF_BLOCKS, "hmff-mobilenet", "HMFF-MobileNet (Table 1)"),
    ):
        for ch in (16, 32, 64, 128):
            base = f"{prefix}-{ch}ch"
            v = Variant(base, family, ch, "swish", blocks, *PAPER_TABLE2[base],
                        description=f"{what}, Ch={ch}, swish")
            add(v)
            # Opt-in deployment activations: the name says what the graph computes.
            for act, suffix in ACTIVATIONS.items():
                if suffix:
                    add(replace(v, name=base + suffix, activation=act,
                                paper_accuracy=None,
                                description=f"{what}, Ch={ch}, {act} (deployment variant)"))
    return reg


REGISTRY: dict[str, Variant] = _make_registry()


def list_models(include_activation_variants: bool = True) -> list[str]:
    """Registered variant names, the paper's nine first."""
    names = list(REGISTRY)
    if not include_activation_variants:
        names = [n for n in names if REGISTRY[n].activation in ("swish", "relu6")
                 and REGISTRY[n].base_name == n]
    return names


def get_variant(name: str) -> Variant:
    """Look a variant up by name; unknown names raise :class:`ConfigError` listing valid ones."""
    key = name.strip().lower()
    if key not in REGISTRY:
        raise ConfigError(
            f"unknown model {name!r}; valid names: {', '.join(list_models())}"
        )
    return REGISTRY[key]


def check_build_args(img_size: int, num_classes: int, dilations=DEFAULT_DILATIONS,
                     dropout: float = 0.0) -> None:
    """Validate the build options before any TensorFlow work (cheap, TF-free)."""
    if int(img_size) < MIN_IMG_SIZE:
        raise ConfigError(
            f"input size {img_size} is too small: the network downsamples by {TOTAL_STRIDE}, "
            f"the minimum is {MIN_IMG_SIZE}"
        )
    if int(num_classes) < 2:
        raise ConfigError(f"number of classes must be at least 2, got {num_classes}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
    dil = tuple(dilations)
    if len(dil) < 1 or any(int(d) < 1 for d in dil):
        raise ConfigError(f"dilation rates must be positive integers, got {list(dil)}")


def variants_as_json() -> str:
    """Every variant as JSON (the content of ``models/variants.json``)."""
    import json
    from dataclasses import asdict

    return json.dumps([asdict(v) for v in REGISTRY.values()], indent=1)


if __name__ == "__main__":
    print(variants_as_json())
