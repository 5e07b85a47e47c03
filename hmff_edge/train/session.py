"""The set-up of a training run: TensorFlow and the strategy, the model (checkpoint,
``--init-from`` weights, a given model or a fresh network), the run folder, the RunConfig."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hmff_edge.errors import ConfigError

from .classweights import format_weights, imbalance_warning, resolve_weights
from .config import EMA_MOMENTUM, TrainConfig
from .data_setup import PlannedSplits, PreparedData
from .distribute import StrategyInfo, make_strategy
from .modelfactory import build, register_custom_objects
from .optim import prepare_adam
from .plan import RunPlan
from .runconfig import InitOrigin, RunConfig
from .runfolder import RunFolder


@dataclass
class Session:
    """What the epochs share: TensorFlow, the strategy, the batch geometry."""

    keras: Any
    tf: Any
    sinfo: StrategyInfo
    show: bool
    echo: Callable[[str], None]
    batch: int = 0
    steps: int = 0
    drop: bool = False
    class_weight: dict[int, float] | None = None
    writer: Any = None

    @property
    def multi(self) -> bool:
        return self.sinfo.name == "multi-worker"


def open_session(cfg: TrainConfig, *, progress: bool, echo) -> Session:
    sinfo = make_strategy(cfg.strategy)  # before any other TF op
    from hmff_edge._lazy import keras as _keras

    keras = _keras()
    import tensorflow as tf

    if cfg.mixed_precision:
        if not tf.config.list_physical_devices("GPU"):
            raise ConfigError("--mixed-precision needs a GPU (float16 matmuls are slower than "
                              "float32 on CPUs); TensorFlow sees none on this machine")
        keras.mixed_precision.set_global_policy("mixed_float16")
    else:
        keras.mixed_precision.set_global_policy("float32")
    return Session(keras, tf, sinfo, progress and sinfo.is_chief, echo)


def announce_balance(s: Session, cfg: TrainConfig, splits: PlannedSplits) -> None:
    """The imbalance warning and the class weights in use, before any decoding."""
    warning = imbalance_warning(splits.train.labels, splits.labels)
    if warning and cfg.class_weight == "none":
        s.echo(warning)
    weights = resolve_weights(cfg.class_weight, splits.train.labels, splits.labels)
    if weights is not None:
        s.echo(format_weights(weights))
        s.class_weight = {i: weights[n] for i, n in enumerate(splits.labels)}


def compile_for_recipe(model, cfg: TrainConfig, keras, optimizer=None) -> None:
    from .losses import make_loss

    opt = optimizer or keras.optimizers.Adam(learning_rate=cfg.lr, use_ema=cfg.ema,
                                             ema_momentum=EMA_MOMENTUM)
    model.compile(optimizer=opt, loss=make_loss(cfg.label_smoothing), metrics=["accuracy"])


def restore_or_build(plan: RunPlan, s: Session, labels: list[str],
                      initial_model) -> tuple[Any, InitOrigin | None]:
    """The model to train: the last checkpoint (resume), ``initial_model``, the
    ``--init-from`` weights in a fresh network, or a fresh network; compiled, optimizer built."""
    cfg, keras = plan.cfg, s.keras
    keras.utils.set_random_seed(cfg.seed)
    register_custom_objects()
    origin = None
    with s.sinfo.strategy.scope():
        if plan.state is not None:
            model = keras.models.load_model(checkpoint_file(plan.run, plan.state))
            origin = RunConfig.load(plan.run.root).init
        else:
            model = initial_model if initial_model is not None else build(
                cfg.model, img_size=cfg.img_size, num_classes=len(labels), dropout=cfg.dropout)
            _check_model_shape(model, cfg, labels)
            if plan.init is not None:
                origin = _load_init_weights(plan, model, labels)
            compile_for_recipe(model, cfg, keras)
        prepare_adam(model)
        if cfg.ema:
            from .ema import keep_raw_weights_after_fit, load_raw

            keep_raw_weights_after_fit(model.optimizer)
            if plan.state is not None:
                load_raw(model.optimizer, checkpoint_file(plan.run, plan.state))
    return model, origin


def _check_model_shape(model, cfg: TrainConfig, labels: list[str]) -> None:
    want_in = (cfg.img_size, cfg.img_size, 3)
    if tuple(model.input_shape[1:]) != want_in or int(model.output_shape[-1]) != len(labels):
        raise ConfigError(f"the model to train takes {tuple(model.input_shape[1:])} and gives "
                          f"{model.output_shape[-1]} outputs; the run needs {want_in} and "
                          f"{len(labels)} classes")


def _load_init_weights(plan: RunPlan, model, labels: list[str]) -> InitOrigin:
    from hmff_edge.models import load_model

    from .initfrom import transfer_weights

    init = plan.init
    assert init is not None
    source = load_model(init.keras_path, compile=False)
    same = init.labels is not None and list(init.labels) == list(labels)
    copied = transfer_weights(source, model, same_classes=same)
    return init.origin(head="kept" if same else "new", copied_layers=copied)


def checkpoint_file(run: RunFolder, state: dict[str, Any]) -> Path:
    ckpt = Path(state["checkpoint"])
    return ckpt if ckpt.is_absolute() else run.root / ckpt


def open_run_folder(plan: RunPlan, s: Session,
                     created: list[RunFolder]) -> tuple[RunFolder, dict | None]:
    """Create the folder (new run) or reuse it; non-chief workers write to a scratch copy."""
    run, state = plan.run, plan.state
    if not s.sinfo.is_chief:
        scratch = RunFolder(tempfile.mkdtemp(prefix=f"hmff-worker{s.sinfo.worker_index}-"))
        scratch.ckpt_dir.mkdir(parents=True, exist_ok=True)
        if state is not None:  # read the chief's checkpoint (a shared file system)
            state = dict(state, checkpoint=str(checkpoint_file(run, state)))
        return scratch, state
    if not plan.resume:
        existed = run.root.exists()
        run.create(overwrite=plan.overwrite)
        if not existed or plan.overwrite:
            created.append(run)
    return run, state


def make_run_config(cfg: TrainConfig, data: PreparedData, origin: InitOrigin | None,
                s: Session) -> RunConfig:
    weights = None
    if s.class_weight is not None:
        weights = {data.labels[i]: w for i, w in s.class_weight.items()}
    return RunConfig(
        train=cfg, labels=list(data.labels), data_kind=data.source.kind, data_mode=data.mode,
        counts=data.counts, skipped_files=len(data.skipped),
        skipped_examples=[f"{p}: {r}" for p, r in data.skipped[:20]], class_weights=weights,
        init=origin, versions={"tensorflow": s.tf.__version__, "keras": s.keras.__version__})


def set_batch_geometry(s: Session, cfg: TrainConfig, data: PreparedData) -> None:
    s.batch = cfg.batch_size
    s.drop = s.multi  # equal step counts on every worker
    if s.drop:
        s.batch = max(s.sinfo.num_replicas, min(s.batch, data.train.n))
    s.steps = (data.train.n // s.batch) if s.drop else math.ceil(data.train.n / s.batch)
