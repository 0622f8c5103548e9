"""From a pipeline config to the plan the runner follows: stages of arms, under seeds.

A pipeline either lists ``stages:`` or uses the one-stage shorthand at its top level
(``task``/``data``/``model``/``strategy``/``compare``/``baseline``/``train``), optionally
with ``source:`` — itself shorthand for a first stage named ``source`` that trains one
arm, followed by the main stage with ``init_from: source``. :func:`plan_stages` turns
either form into the same list of :class:`StagePlan`, every default filled in, so the
runner never looks at the shorthand.

Every arm of every stage is trained once per seed of ``seeds`` (or ``seed``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import DataConfig, ExtractionConfig, ModelConfig, PipelineConfig, StrategyConfig, TrainConfig
from .errors import ConfigError

SOURCE_STAGE = "source"
MAIN_STAGE = "main"


@dataclass
class StagePlan:
    """One stage with every default resolved. ``arms[0]`` is the primary arm;
    ``baseline`` is the label of the baseline arm (or None). ``loc`` is where the stage
    sits in the config (``stages.1`` or the top level, ``""``), for error messages."""

    name: str
    task: str
    data: DataConfig
    model: ModelConfig
    arms: list[StrategyConfig]
    train: TrainConfig
    init_from: str | None = None
    baseline: str | None = None
    extra_data: dict[str, DataConfig] = field(default_factory=dict)
    loc: str = ""
    #: extra_data names whose test split every arm is also evaluated on
    evaluate_on: list[str] = field(default_factory=list)
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)

    def where(self, key: str) -> str:
        return f"{self.loc}.{key}" if self.loc else key

    def arm_train(self, arm: StrategyConfig) -> TrainConfig:
        """The stage's train settings with the arm's own ``epochs`` / ``lr`` applied."""
        update = {k: v for k, v in (("epochs", arm.epochs), ("lr", arm.lr)) if v is not None}
        return self.train.model_copy(update=update)


def _merge_train(base: TrainConfig, override: TrainConfig | None) -> TrainConfig:
    if override is None:
        return base
    return base.model_copy(update={k: getattr(override, k) for k in override.model_fields_set})


def plan_stages(config: PipelineConfig) -> list[StagePlan]:
    """The stages of ``config`` in run order; ConfigError lists whatever is missing."""
    errors: list[tuple[str, str]] = []
    if config.stages:
        for key in ("source", "strategy", "baseline"):
            if getattr(config, key) is not None:
                errors.append((key, "cannot be used together with stages: put it inside a stage"))
        if config.compare:
            errors.append(("compare", "cannot be used together with stages: put it inside a stage"))
        stages = []
        for i, st in enumerate(config.stages):
            loc = f"stages.{i}"
            task = st.task or config.task
            data = st.data or config.data
            model = st.model or config.model
            primary = st.strategy
            for key, value in (("task", task), ("data", data), ("model", model), ("strategy", primary)):
                if value is None:
                    errors.append(
                        (
                            f"{loc}.{key}",
                            "required key is missing (and the pipeline has no top-level default)"
                            if key != "strategy"
                            else "required key is missing: the stage's primary arm",
                        )
                    )
            if errors:
                continue
            arms = [primary, *(st.compare or []), *([st.baseline] if st.baseline else [])]
            stages.append(
                StagePlan(
                    st.name,
                    task,
                    data,
                    model,
                    arms,
                    _merge_train(config.train, st.train),
                    st.init_from,
                    st.baseline.arm if st.baseline else None,
                    dict(st.extra_data if "extra_data" in st.model_fields_set else config.extra_data),
                    loc,
                    evaluate_on=list(st.evaluate_on if "evaluate_on" in st.model_fields_set else config.evaluate_on),
                )
            )
        if errors:
            raise ConfigError(errors)
        for stage in stages:
            stage.extraction = config.extraction
        return stages

    for key in ("task", "data", "model", "strategy"):
        if getattr(config, key) is None:
            errors.append((key, "required key is missing"))
    if errors:
        raise ConfigError(errors)
    arms = [config.strategy, *config.compare, *([config.baseline] if config.baseline else [])]
    main = StagePlan(
        MAIN_STAGE,
        config.task,
        config.data,
        config.model,
        arms,
        config.train,
        baseline=config.baseline.arm if config.baseline else None,
        extra_data=dict(config.extra_data),
        evaluate_on=list(config.evaluate_on),
    )
    main.extraction = config.extraction
    if config.source is None:
        return [main]
    src = config.source
    source_arm = StrategyConfig(
        name="fine-tune" if src.weights else "scratch", label=SOURCE_STAGE, backbone_lr_mult=1.0
    )
    source = StagePlan(
        SOURCE_STAGE,
        config.task,
        src.data,
        config.model.model_copy(update={"weights": src.weights}),
        [source_arm],
        src.train,
        loc="source",
    )
    main.init_from = SOURCE_STAGE
    source.extraction = main.extraction = config.extraction
    return [source, main]
