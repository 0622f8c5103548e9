"""Pipeline configs: YAML -> dotted ``key=value`` overrides -> validated pydantic models.

Every model forbids unknown keys. :func:`load_pipeline` collects *every* problem (YAML
syntax, unknown or mistyped fields, unknown task/backbone/dataset/strategy names,
dataset arguments, missing paths) and raises one :class:`ConfigError` listing them as
``config error: <dotted.field>: <reason>`` lines.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError, TLEngineError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class WithTaskOptions(BaseModel):
    """A config section whose extra keys belong to the task (e.g. image ``data.augment``,
    ``model.input_size``): the core keeps them as they are and the task validates them
    (``Task.DataOptions`` / ``Task.ModelOptions``), so an unknown key is still an error."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    @property
    def task_options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _block_count(value: Any) -> Any:
    """``unfreeze``: ``"all"`` or a block count >= 0."""
    if isinstance(value, int) and value < 0:
        raise ValueError("must be 'all' or a block count >= 0")
    return value


def _on_off(value: Any) -> Any:
    """YAML 1.1 reads a bare ``on`` / ``off`` as true / false: take them back as written."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


def _file_name(value: str) -> str:
    """A name used as a path component: no separators, no '..', not empty."""
    if not _NAME_RE.match(value or "") or value in (".", ".."):
        raise ValueError(
            "must be a plain name of letters, digits, '.', '_' or '-' (it names a folder; no '/', no '..', not empty)"
        )
    return value


class DataConfig(WithTaskOptions):
    """Which dataset, where it lives, and how it is split. Other keys are the task's
    (image tasks: ``augment``)."""

    dataset: str = Field(description="registered dataset name, e.g. synthetic-shapes, image-folder, csv")
    root: str | None = Field(
        None,
        description="directory every data path is resolved in (relative to the pipeline file); paths may not leave it",
    )
    args: dict[str, Any] = Field(
        default_factory=dict, description="dataset-specific arguments, validated by the dataset"
    )
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.25, ge=0.0, lt=1.0)
    split_seed: int = 0
    num_workers: int = Field(0, ge=0)


class ModelConfig(WithTaskOptions):
    """The pretrained model and its init. Other keys are the task's (image tasks:
    ``input_size``, ``dropout``)."""

    backbone: str = Field(description="registered backbone, e.g. resnet18, timm/tf_efficientnet_lite0")
    weights: str | None = Field(
        None, description="named weights, torchvision enum, file or run dir; null = random init"
    )
    args: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments for the backbone factory")


class GradualUnfreezing(Strict):
    """Unfreeze one more block (from the top) every ``every_epochs`` epochs."""

    every_epochs: int = Field(1, ge=1)
    start_epoch: int = Field(1, ge=0, description="epochs of new-parts-only training before the first block thaws")


class PartPlan(Strict):
    """Per-part overrides of an arm (``strategy.parts.<part>``), e.g. a pretrained encoder
    and a randomly initialised decoder, each with its own LR and unfreezing."""

    init: Literal["pretrained", "random"] | None = Field(None, description="default: the strategy's (scratch: random)")
    unfreeze: Union[Literal["all"], int, None] = Field(None, description="top-k blocks of this part that train, or all")
    lr_mult: float | None = Field(None, gt=0.0, description="this part's lr = train.lr * lr_mult")
    layer_decay: float | None = Field(None, gt=0.0, le=1.0, description="layer-wise lr decay of this part's blocks")
    gradual_unfreezing: GradualUnfreezing | None = None

    @field_validator("unfreeze")
    @classmethod
    def _unfreeze(cls, v: Any) -> Any:
        return _block_count(v)


class CacheConfig(Strict):
    """Feature cache of strategies with a frozen backbone (feature-extraction): the backbone
    runs once per sample and view, later epochs train the head from the stored features."""

    enabled: bool = Field(True, description="false = run the frozen backbone every epoch (the naive loop)")
    storage: Literal["memory", "disk"] = Field(
        "memory", description="memory (CPU/GPU tensor) or disk (memory-mapped, reused across runs)"
    )
    dtype: Literal["float32", "float16", "bfloat16", "int8"] = Field(
        "float32", description="storage dtype; int8 keeps a per-row scale"
    )
    views: int = Field(1, ge=1, le=64, description="augmented views stored per training sample; each epoch draws one")
    kernels: Literal["auto", "fused", "torch"] = Field(
        "auto", description="fused C++/CUDA ops (auto: when built) or the pure-PyTorch reference ops"
    )
    root: str | None = Field(
        None, description="disk cache folder (default $TLENGINE_CACHE_DIR/features or ~/.cache/tlengine/features)"
    )


class ExtractionConfig(Strict):
    """How frozen parts run (feature extraction, the frozen blocks of a fine-tune,
    evaluation and predict): precision, memory layout, compilation. See
    :mod:`tlengine.execution`."""

    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="autocast dtype of frozen parts (auto: bf16 on CUDA and on CPUs with native bf16, else fp32); "
        "part of the feature cache's key",
    )
    tolerance: float = Field(
        0.99,
        gt=0.0,
        le=1.0,
        description="lowest cosine similarity, per sample, of reduced-precision features to fp32 on the first "
        "batch; below it the part runs in fp32",
    )
    channels_last: Literal["auto", "on", "off"] = Field(
        "auto", description="channels-last memory format (auto: for parts with 2-D convolutions), training too"
    )
    compile: Literal["auto", "on", "off"] = Field(
        "auto",
        description="torch.compile frozen parts (auto: when the samples to run make up for the compile time); "
        "inductor's cache persists under $TLENGINE_CACHE_DIR/inductor",
    )

    @field_validator("channels_last", "compile", mode="before")
    @classmethod
    def _switch(cls, v: Any) -> Any:
        return _on_off(v)


class StrategyConfig(Strict):
    """One arm of the experiment: how the pretrained model is (or is not) used."""

    name: str = Field(description="feature-extraction, fine-tune, scratch, or a plugin's strategy")
    label: str | None = Field(None, description="arm name in tables and files (default: name)")
    args: dict[str, Any] = Field(
        default_factory=dict, description="the strategy's own arguments, validated by the strategy"
    )
    unfreeze: Union[Literal["all"], int] = Field(
        "all", description="fine-tune: top-k blocks of each pretrained part to train, or all"
    )
    backbone_lr_mult: float = Field(0.1, gt=0.0, description="fine-tune: pretrained parts' lr = train.lr * this")
    gradual_unfreezing: GradualUnfreezing | None = None
    layer_decay: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="fine-tune: block i of n (0 = input side) trains at the part's lr * layer_decay**(n-1-i)",
    )
    update_frozen_bn: bool = Field(False, description="let BatchNorm layers in frozen blocks update running stats")
    parts: dict[str, PartPlan] = Field(default_factory=dict, description="per-part init / unfreeze / lr_mult overrides")
    epochs: int | None = Field(None, ge=1, description="overrides train.epochs for this arm")
    lr: float | None = Field(None, gt=0.0, description="overrides train.lr for this arm")
    cache: CacheConfig = Field(default_factory=CacheConfig, description="feature-extraction: the feature cache")

    @field_validator("unfreeze")
    @classmethod
    def _unfreeze(cls, v: Any) -> Any:
        return _block_count(v)

    @field_validator("label")
    @classmethod
    def _label(cls, v: str | None) -> str | None:
        return None if v is None else _file_name(v)

    @property
    def arm(self) -> str:
        return self.label or self.name


class TrainConfig(Strict):
    """Optimisation settings shared by every arm (an arm may override epochs and lr)."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    weight_decay: float = Field(1e-4, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    scheduler: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0.0)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="for tasks with a classification loss")
    grad_clip: float | None = Field(None, gt=0.0)
    sync_batchnorm: bool = Field(
        False, description="under torchrun on CUDA: BatchNorm statistics over the whole batch (SyncBatchNorm)"
    )
    amp: Literal["auto", "on", "off"] = Field(
        "auto", description="mixed precision of the trained parts: auto = CUDA only, on (CPU: bf16 autocast), off"
    )
    keep: Literal["best", "last"] = Field(
        "best", description="test and save the best-validation epoch's weights, or the last"
    )
    patience: int | None = Field(
        None, ge=1, description="stop an arm after this many epochs without a better validation score"
    )

    @field_validator("amp", mode="before")
    @classmethod
    def _amp(cls, v: Any) -> Any:
        return _on_off(v)


class SourceConfig(Strict):
    """Shorthand for a first stage: train the model on a source task, then transfer it."""

    data: DataConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    weights: str | None = Field(None, description="init for the source model (default random)")


class StageConfig(Strict):
    """One stage of a staged pipeline. Unset fields default to the pipeline's top level."""

    name: str = Field(description="names the stage in files and tables")
    task: str | None = Field(None, description="default: the pipeline's task")
    data: DataConfig | None = Field(None, description="default: the pipeline's data")
    extra_data: dict[str, DataConfig] = Field(
        default_factory=dict, description="more datasets a strategy may use (e.g. unlabelled target data)"
    )
    evaluate_on: list[str] = Field(
        default_factory=list,
        description="extra_data names whose test split every arm is also evaluated on (metrics '<name>.<metric>'; "
        "e.g. a domain-adaptation target, whose labels serve nothing else)",
    )
    model: ModelConfig | None = Field(None, description="default: the pipeline's model")
    init_from: str | None = Field(
        None, description="an earlier stage whose primary arm's pretrained parts start this stage's arms"
    )
    strategy: StrategyConfig | None = Field(None, description="the stage's primary arm (default: the pipeline's)")
    compare: list[StrategyConfig] | None = None
    baseline: StrategyConfig | None = None
    train: TrainConfig | None = Field(None, description="keys set here override the pipeline's train")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _file_name(v)


class PipelineConfig(Strict):
    """A whole pipeline file."""

    name: str
    description: str = ""
    task: str | None = None
    seed: int = 0
    seeds: list[int] | None = Field(
        None, min_length=1, description="train every arm under each seed; metrics report mean and std"
    )
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda, cuda:N")
    output_dir: str = Field("runs", description="where run directories are created (relative to the working directory)")
    data: DataConfig | None = None
    extra_data: dict[str, DataConfig] = Field(
        default_factory=dict, description="more datasets a strategy may use (e.g. unlabelled target data)"
    )
    evaluate_on: list[str] = Field(
        default_factory=list,
        description="extra_data names whose test split every arm is also evaluated on (metrics '<name>.<metric>')",
    )
    model: ModelConfig | None = None
    source: SourceConfig | None = None
    stages: list[StageConfig] | None = Field(
        None,
        min_length=1,
        description="staged pipeline: each stage trains its arms, later ones may init_from earlier ones",
    )
    strategy: StrategyConfig | None = None
    compare: list[StrategyConfig] = Field(default_factory=list, description="more arms trained on the same split")
    baseline: StrategyConfig | None = Field(None, description="usually {name: scratch}: the from-scratch arm")
    train: TrainConfig = Field(default_factory=TrainConfig)
    extraction: ExtractionConfig = Field(
        default_factory=ExtractionConfig, description="how frozen parts run: precision, channels-last, compile"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _file_name(v)

    @property
    def seed_list(self) -> list[int]:
        return list(self.seeds) if self.seeds else [self.seed]

    def arms(self) -> list[StrategyConfig]:
        """Every arm of the last stage in run order: strategy, compare..., baseline."""
        from .plan import plan_stages

        return plan_stages(self)[-1].arms


# --------------------------------------------------------------------------- loading
def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a pipeline file with ``yaml.safe_load``; errors name the file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TLEngineError(f"pipeline file {path} does not exist") from None
    except IsADirectoryError:
        raise TLEngineError(
            f"pipeline file {path} is a directory; give a YAML file "
            "(to continue a run directory use `tlengine run --resume DIR`)"
        ) from None
    except UnicodeDecodeError as exc:
        raise TLEngineError(
            f"pipeline file {path} is not UTF-8 text (undecodable byte at offset {exc.start})"
        ) from None
    except OSError as exc:
        raise TLEngineError(f"pipeline file {path} cannot be read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([(str(path), f"invalid YAML{where}: {problem}")]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([(str(path), "a pipeline file must be a mapping of keys to values")])
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML; list items by index)."""
    errors = []
    for item in overrides:
        if "=" not in item:
            errors.append((item, "an override must look like key=value, e.g. train.epochs=3"))
            continue
        key, raw = item.split("=", 1)
        if not key.strip() or any(not part for part in key.strip().split(".")):
            errors.append((item, "an override needs a dotted key before '=', e.g. train.epochs=3"))
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node: Any = data
        parts = key.strip().split(".")
        try:
            for part in parts[:-1]:
                if isinstance(node, list):
                    node = node[int(part)]
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
            last = parts[-1]
            if isinstance(node, list):
                node[int(last)] = value
            elif isinstance(node, dict):
                node[last] = value
            else:
                raise TypeError
        except (ValueError, IndexError, TypeError, AttributeError):
            errors.append((key, "cannot set this key (its parent is not a mapping or list index)"))
    if errors:
        raise ConfigError(errors)
    return data


def _loc(parts: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in parts) or "<root>"


def pydantic_errors(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for err in exc.errors():
        loc = _loc(tuple(p for p in err["loc"]))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `tlengine validate --schema` lists every key, a task's own under x-task-options)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")  # our own validators' sentences, as written
        out.append((f"{prefix}{loc}" if prefix else loc, msg))
    return out


def validate_data(data: dict[str, Any]) -> PipelineConfig:
    """Validate plain data against the schema (no registry checks)."""
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(pydantic_errors(exc)) from None


def dump_yaml(config: PipelineConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
