"""The zoo summary behind ``hmff-edge models``: counts beside the paper's Table 2."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hmff_edge.models.registry import DEFAULT_DILATIONS, check_build_args, get_variant, list_models


def _dev(ours: float, paper: float | None) -> float | None:
    return None if not paper else round((ours - paper) / paper * 100.0, 2)


def summarize(
    names: Sequence[str] | None = None,
    *,
    img_size: int = 224,
    num_classes: int = 10,
    dilations: Sequence[int] = DEFAULT_DILATIONS,
) -> list[dict[str, Any]]:
    """Build each variant and count it: one flat record per variant.

    Keys: ``name, family, ch, activation, params, macs, paper_params, paper_macs,
    paper_accuracy, params_dev_pct, macs_dev_pct``. Paper figures are Table 2's (224x224,
    10 classes) and are only compared at that configuration.
    """
    check_build_args(img_size, num_classes, dilations)
    names = list(names) if names else list_models(include_activation_variants=False)
    variants = [get_variant(n) for n in names]  # all names checked before any build

    from hmff_edge.models.builder import build_model
    from hmff_edge.models.counting import count_macs, count_params

    paper_config = img_size == 224 and num_classes == 10 and tuple(dilations) == DEFAULT_DILATIONS
    rows = []
    for v in variants:
        model = build_model(v.name, img_size=img_size, num_classes=num_classes,
                            dilations=dilations)
        params, macs = count_params(model), count_macs(model)
        pp = v.paper_params if paper_config else None
        pm = v.paper_macs if paper_config else None
        rows.append({
            "name": v.name, "family": v.family, "ch": v.ch, "activation": v.activation,
            "img_size": img_size, "num_classes": num_classes,
            "params": params, "macs": macs,
            "paper_params": pp, "paper_macs": pm,
            "paper_accuracy": v.paper_accuracy if paper_config else None,
            "params_dev_pct": _dev(params, pp), "macs_dev_pct": _dev(macs, pm),
        })
        del model
    return rows
