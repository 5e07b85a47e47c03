"""Everything ``fit`` checks before it imports TensorFlow, reads an image or creates a folder.

:func:`plan_run` resolves the options (or merges them into a run being resumed), checks the
model name, the input size against the network's minimum, the class count, the
``--init-from`` source and a class-weight file, and returns a :class:`RunPlan`. A typo in
any of them fails here, with nothing written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from hmff_edge.data import peek_class_names
from hmff_edge.errors import ConfigError, DataError

from .classweights import read_weight_file
from .config import IDENTITY_FIELDS, TrainConfig
from .initfrom import InitSource, check_compatible, inspect_init_source
from .runconfig import RunConfig
from .runfolder import RunFolder

# What a --resume may change: how long to train, the stop rule, where it runs, logging.
RESUMABLE_FIELDS = ("epochs", "early_stopping", "strategy", "cache_gb", "bn_recalibrate",
                    "tensorboard")


@dataclass
class RunPlan:
    """A checked run: resolved options, the folder, and the resume state if any."""

    cfg: TrainConfig
    run: RunFolder
    class_names: list[str]
    resume: bool = False
    overwrite: bool = False
    state: dict[str, Any] | None = None
    init: InitSource | None = None


def merge_for_resume(run: RunFolder, cfg: TrainConfig, explicit: set[str]) -> TrainConfig:
    """The run's stored options with the explicitly given resumable ones applied; refuses
    an explicit change of an option that defines what is trained."""
    if not run.config_path.is_file():
        raise ConfigError(f"nothing to resume in {str(run.root)!r}: it has no config.json")
    saved = RunConfig.load(run.root).train
    given = cfg.resolved()  # same path normalization as the saved config
    clash = [f"{k} (run: {getattr(saved, k)!r}, given: {getattr(given, k)!r})"
             for k in IDENTITY_FIELDS if k in explicit and getattr(given, k) != getattr(saved, k)]
    if clash:
        raise ConfigError("--resume cannot change " + "; ".join(clash)
                          + ". Start a new run with --overwrite or another --out")
    for k in RESUMABLE_FIELDS:
        if k in explicit:
            setattr(saved, k, getattr(cfg, k))
    saved.out = str(run.root)
    saved.validate()
    return saved


def check_model(cfg: TrainConfig, num_classes: int) -> None:
    """Zoo name, input size and class count (TF-free); ``module:function`` builders are
    checked when imported."""
    if ":" in str(cfg.model):
        return
    from hmff_edge.models import check_build_args, get_variant

    get_variant(str(cfg.model))
    check_build_args(int(cfg.img_size), num_classes, dropout=cfg.dropout)


def _with_init_defaults(cfg: TrainConfig, src: InitSource) -> TrainConfig:
    # The source's variant and input size are the only ones that can work: default to them.
    return replace(cfg, model=cfg.model or src.model, img_size=cfg.img_size or src.img_size,
                   init_from=os.path.abspath(str(cfg.init_from)))


def plan_run(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False,
             explicit: set[str] | None = None) -> RunPlan:
    """Check ``cfg`` cheaply; raises :class:`ConfigError` / :class:`DataError` on bad input."""
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    explicit = set(explicit if explicit is not None else cfg.to_dict())
    run = RunFolder(cfg.out)
    init = None
    if resume:
        cfg = merge_for_resume(run, cfg, explicit)
        state = run.read_state()
        if state is None:
            raise ConfigError(f"nothing to resume in {str(run.root)!r}: no epoch completed "
                              "yet; start again with --overwrite")
    else:
        state = None
        cfg.validate()
        if cfg.init_from:
            init = inspect_init_source(cfg.init_from)
            cfg = _with_init_defaults(cfg, init)
        cfg = cfg.resolved()
        run.check_new(overwrite=overwrite)
    names = peek_class_names(cfg.data)
    if cfg.test_data:
        try:  # a missing --test-data fails here, not after decoding the training images
            peek_class_names(cfg.test_data)
        except DataError as exc:
            raise DataError(f"--test-data: {exc}") from exc
    check_model(cfg, len(names))
    if init is not None:
        check_compatible(init, model=str(cfg.model), img_size=int(cfg.img_size))
    if cfg.class_weight not in ("auto", "none"):
        read_weight_file(cfg.class_weight, names)
    return RunPlan(cfg, run, names, resume, overwrite, state, init)
