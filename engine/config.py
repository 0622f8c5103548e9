"""Pipeline configs: YAML -> dotted ``key=value`` overrides -> validated pydantic models.

Every model forbids unknown keys. :func:`load_pipeline` collects *every* problem (YAML
syntax, unknown or mistyped fields, unknown task/backbone/dataset/strategy names,
dataset arguments, missing paths) and raises one :class:`ConfigError` listing them as
``config error: <dotted.field>: <reason>`` lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError, TLEngineError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Strict):
    """Which dataset, where it lives, and how it is split."""

    dataset: str = Field(description="registered dataset name, e.g. synthetic-shapes, image-folder, csv")
    root: str | None = Field(None, description="directory every data path is resolved in (relative to the pipeline file); paths may not leave it")
    args: dict[str, Any] = Field(default_factory=dict, description="dataset-specific arguments, validated by the dataset")
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.25, ge=0.0, lt=1.0)
    split_seed: int = 0
    augment: Literal["none", "light", "strong"] = "light"
    num_workers: int = Field(0, ge=0)


class ModelConfig(Strict):
    """The pretrained backbone and the head put on it."""

    backbone: str = Field(description="registered backbone, e.g. resnet18, timm/tf_efficientnet_lite0")
    weights: str | None = Field(None, description="named weights, torchvision enum, file or run dir; null = random init")
    input_size: int | None = Field(None, ge=8, description="square input side in pixels; default: the backbone's own")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    args: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments for the backbone factory")


class GradualUnfreezing(Strict):
    """Unfreeze one more backbone block (from the top) every ``every_epochs`` epochs."""

    every_epochs: int = Field(1, ge=1)
    start_epoch: int = Field(1, ge=0, description="epochs of head-only training before the first block thaws")


class CacheConfig(Strict):
    """Feature cache of strategies with a frozen backbone (feature-extraction): the backbone
    runs once per sample and view, later epochs train the head from the stored features."""

    enabled: bool = Field(True, description="false = run the frozen backbone every epoch (the naive loop)")
    storage: Literal["memory", "disk"] = Field("memory", description="memory (CPU/GPU tensor) or disk (memory-mapped, reused across runs)")
    dtype: Literal["float32", "float16", "bfloat16", "int8"] = Field("float32", description="storage dtype; int8 keeps a per-row scale")
    views: int = Field(1, ge=1, le=64, description="augmented views stored per training sample; each epoch draws one")
    kernels: Literal["auto", "fused", "torch"] = Field("auto", description="fused C++/CUDA ops (auto: when built) or the pure-PyTorch reference ops")
    root: str | None = Field(None, description="disk cache folder (default $TLENGINE_CACHE_DIR/features or ~/.cache/tlengine/features)")


class StrategyConfig(Strict):
    """One arm of the experiment: how the pretrained model is (or is not) used."""

    name: str = Field(description="feature-extraction, fine-tune, scratch, or a plugin's strategy")
    label: str | None = Field(None, description="arm name in tables and files (default: name)")
    unfreeze: Union[Literal["all"], int] = Field("all", description="fine-tune: top-k backbone blocks to train, or all")
    backbone_lr_mult: float = Field(0.1, gt=0.0, description="fine-tune: backbone lr = train.lr * this")
    gradual_unfreezing: GradualUnfreezing | None = None
    update_frozen_bn: bool = Field(False, description="let BatchNorm layers in frozen blocks update running stats")
    epochs: int | None = Field(None, ge=1, description="overrides train.epochs for this arm")
    lr: float | None = Field(None, gt=0.0, description="overrides train.lr for this arm")
    cache: CacheConfig = Field(default_factory=CacheConfig, description="feature-extraction: the feature cache")

    @field_validator("unfreeze")
    @classmethod
    def _positive(cls, v: Any) -> Any:
        if isinstance(v, int) and v < 0:
            raise ValueError("must be 'all' or a block count >= 0")
        return v

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
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    grad_clip: float | None = Field(None, gt=0.0)
    amp: Literal["auto", "on", "off"] = "auto"


class SourceConfig(Strict):
    """Sequential transfer: first train the backbone on a source task, then transfer it."""

    data: DataConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    weights: str | None = Field(None, description="init for the source model (default random)")


class PipelineConfig(Strict):
    """A whole pipeline file."""

    name: str
    description: str = ""
    task: str
    seed: int = 0
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda, cuda:N")
    output_dir: str = Field("runs", description="where run directories are created (relative to the working directory)")
    data: DataConfig
    model: ModelConfig
    source: SourceConfig | None = None
    strategy: StrategyConfig
    compare: list[StrategyConfig] = Field(default_factory=list, description="more arms trained on the same split")
    baseline: StrategyConfig | None = Field(None, description="usually {name: scratch}: the from-scratch arm")
    train: TrainConfig = Field(default_factory=TrainConfig)

    def arms(self) -> list[StrategyConfig]:
        """Every arm in run order: strategy, compare..., baseline."""
        return [self.strategy, *self.compare, *([self.baseline] if self.baseline else [])]


# --------------------------------------------------------------------------- loading
def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a pipeline file with ``yaml.safe_load``; errors name the file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TLEngineError(f"pipeline file {path} does not exist") from None
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
            msg = "unknown key (check the spelling; `tlengine validate --schema` lists every key)"
        elif err["type"] == "missing":
            msg = "required key is missing"
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
