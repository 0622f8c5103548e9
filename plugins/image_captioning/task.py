"""The ``image-captioning`` task: an image in, a sentence out.

Model (:class:`.model.CaptioningModel`): a classification backbone's last conv grid as
visual tokens (``model.backbone``, VGG16 by default, its weights ``model.weights``), a new
projection to the decoder's width, and a BERT checkpoint (``model.decoder``, the offline
``minilm-l6`` by default) as a causal decoder with new cross-attention. Both the encoder
and the decoder are pretrained parts, each with its own init per arm
(``strategy.parts.decoder.init: random`` is "the same arm with a random BERT").

Data: any dataset of this task (COCO captions JSON, Flickr8k-style CSV, synthetic scenes),
split by image; every caption is tokenised once with the decoder's tokenizer. Training is
teacher forcing over every reference of each image (padding-aware loss,
``train.label_smoothing``); evaluation decodes with ``model.num_beams`` (greedy at 1) and
scores with sacrebleu's BLEU-1..4 and pycocoevalcap's CIDEr-D (:mod:`.metrics`), primary
metric ``cider``.

Feature cache: a frozen encoder's tokens ``[T,C]`` per image are cached (layout
``sequence``; ``cache.views`` adds random crops, never mirrors); feature-extraction then
trains the projection and the decoder's new parameters on cached rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tlengine.config import DataConfig, ModelConfig
from tlengine.errors import ConfigError, DataError, TLEngineError
from tlengine.execution import InputFormat
from tlengine.model import TransferModel
from tlengine.task import CacheSpec, Evaluation, PredictInput, Task, TaskData
from torch.utils.data import Dataset, Subset

from . import batches
from .datasets import CaptionSamples
from .model import CaptioningModel, CaptionTarget, Generation

#: test images whose captions the reports show beside the image
REPORT_IMAGES = 12


class CaptionDataOptions(BaseModel):
    """The captioning task's keys in the pipeline's ``data:`` section."""

    model_config = ConfigDict(extra="forbid")
    augment: Literal["none", "light"] = Field(
        "light",
        description="none | light (random crops of the image, never mirrored: captions say left and right); "
        "arms on the feature cache train on cache.views crops instead",
    )


class CaptionModelOptions(BaseModel):
    """The captioning task's keys in the pipeline's ``model:`` section."""

    model_config = ConfigDict(extra="forbid")
    input_size: int = Field(224, ge=32, le=1024, description="square input side in pixels (VGG16: 224 -> 7x7 grid)")
    decoder: str = Field(
        "minilm-l6",
        description="BERT checkpoint of the decoder and its tokenizer: named weights (minilm-l6), a folder, "
        "or hf:<id>; an arm whose decoder starts random keeps its architecture",
    )
    decoder_config: dict[str, Any] = Field(
        default_factory=dict,
        description="config fields of the decoder to change, e.g. {num_hidden_layers: 2} (random init only "
        "when they change shapes)",
    )
    tokenizer: Literal["checkpoint", "train"] = Field(
        "checkpoint",
        description="checkpoint: model.decoder's own tokenizer | train: a WordPiece tokenizer trained on the "
        "training captions (the decoder's word embeddings are then new)",
    )
    vocab_size: int = Field(1000, ge=32, le=100_000, description="most tokens of a trained tokenizer")
    max_length: int = Field(32, ge=4, le=510, description="longest caption in tokens, [CLS]/[SEP] included")
    num_beams: int = Field(3, ge=1, le=16, description="beam width of evaluation and predict (1 = greedy)")
    length_penalty: float = Field(1.0, ge=0.0, le=5.0, description="beam score = log-prob / length**penalty")
    no_repeat_ngram_size: int = Field(0, ge=0, le=10, description="forbid repeating n-grams of this size (0: off)")
    projection_dropout: float = Field(0.1, ge=0.0, lt=1.0)


class ImageCaptioningTask(Task):
    """Image captioning with a transferred grid encoder and a transferred BERT decoder."""

    name = "image-captioning"
    primary_metric = "cider"
    metric_directions = {f"bleu_{n}": "max" for n in (1, 2, 3, 4)} | {"cider": "max"}
    table_metrics = ("bleu_4", "cider", "bleu_1")
    pretrained_parts = ("encoder", "decoder")
    DataOptions = CaptionDataOptions
    ModelOptions = CaptionModelOptions
    cache_augmentation = batches.CACHE_AUGMENTATION

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        #: (image, references) of the first test images, for the reports (set by build_data)
        self.report_items: list[tuple[Any, list[str]]] = []

    # ------------------------------------------------------------------ model
    def check_config(self, model: ModelConfig, data: DataConfig, *, base_dir: Path) -> list[tuple[str, str]]:
        from tlengine_plugins.image_classification.backbones import check_model_args

        from .encoders import ENCODER_ALIASES

        backbone = ENCODER_ALIASES.get(model.backbone, model.backbone)
        problems = check_model_args(backbone, model.args, model.weights, self.registries, base_dir)
        try:
            options = self.model_options(model)
        except ValidationError:  # reported by the schema check already
            return problems
        if not problems:
            problems += _grid_problems(backbone, model.args, self.registries)
        problems += self._decoder_problems(options, base_dir)
        return problems

    def part_has_weights(self, model: ModelConfig, part: str) -> bool:
        """The encoder's weights are ``model.weights``; the decoder's come from its checkpoint
        (``model.decoder``), also when the encoder has none."""
        return True if part == "decoder" else model.weights is not None

    def _decoder_problems(self, options: CaptionModelOptions, base_dir: Path) -> list[tuple[str, str]]:
        from tlengine_plugins.text_classification.encoders import resolve_checkpoint

        try:
            checkpoint = resolve_checkpoint(
                options.decoder, weights_registry=self.registries.weights, base_dir=base_dir
            )
        except TLEngineError as exc:
            return [("model.decoder", str(exc))]
        if options.decoder_config:  # transformers' own checks (e.g. hidden size vs heads), before any run
            from tlengine_plugins.text_classification.encoders import _config_kwargs
            from transformers import AutoConfig

            config = {**checkpoint.config, **options.decoder_config}
            model_type = config.pop("model_type")
            try:
                built = AutoConfig.for_model(model_type, **_config_kwargs(config))
                if built.hidden_size % built.num_attention_heads:
                    raise ValueError(
                        f"hidden_size {built.hidden_size} is not a multiple of num_attention_heads "
                        f"{built.num_attention_heads}"
                    )
            except (ValueError, TypeError) as exc:
                return [("model.decoder_config", str(exc).strip().split("\n")[0])]
        return []

    def _encoder(self, model: ModelConfig, *, pretrained: bool, base_dir: Path) -> Any:
        from .encoders import build_grid_encoder

        options = self.model_options(model)
        return build_grid_encoder(
            model.backbone,
            weights=model.weights if pretrained else None,
            weights_registry=self.registries.weights,
            base_dir=base_dir,
            input_size=options.input_size,
            **model.args,
        )

    def _decoder(
        self, model: ModelConfig, *, pretrained: bool, base_dir: Path, tokenizer_json: str | None = None
    ) -> Any:
        from .decoder import build_caption_decoder
        from .tokenizer import tokenizer_from_json

        options = self.model_options(model)
        return build_caption_decoder(
            options.decoder if pretrained else None,
            weights_registry=self.registries.weights,
            base_dir=base_dir,
            config_overrides=options.decoder_config,
            architecture=options.decoder,
            tokenizer=tokenizer_from_json(tokenizer_json) if tokenizer_json else None,
        )

    def preprocessing(self, model: ModelConfig, *, init: Mapping[str, bool], base_dir: Path) -> dict[str, Any]:
        """Builds both halves (so weights that do not fit fail before a run starts)."""
        encoder = self._encoder(model, pretrained=bool(init.get("encoder")), base_dir=base_dir)
        decoder = self._decoder(model, pretrained=bool(init.get("decoder")), base_dir=base_dir)
        options = self.model_options(model)
        if options.max_length > decoder.max_positions:
            raise ConfigError(
                [("model.max_length", f"the decoder has {decoder.max_positions} positions, got {options.max_length}")]
            )
        pp = encoder.preprocessing
        return {
            "input_size": int(pp["input_size"]),
            "mean": [float(v) for v in pp.get("mean", (0.485, 0.456, 0.406))],
            "std": [float(v) for v in pp.get("std", (0.229, 0.224, 0.225))],
            "grid": list(encoder.grid_shape),
            "tokenizer": decoder.checkpoint.directory if options.tokenizer == "checkpoint" else "train",
            "vocab_size": options.vocab_size,
            "max_length": options.max_length,
        }

    def build_model(
        self, model: ModelConfig, info: dict[str, Any], *, init: Mapping[str, bool], base_dir: Path
    ) -> TransferModel:
        options = self.model_options(model)
        encoder = self._encoder(model, pretrained=bool(init.get("encoder")), base_dir=base_dir)
        decoder = self._decoder(
            model, pretrained=bool(init.get("decoder")), base_dir=base_dir, tokenizer_json=info.get("tokenizer_json")
        )
        captioner = CaptioningModel(
            encoder,
            decoder,
            projection_dropout=options.projection_dropout,
            generation=Generation(
                max_length=options.max_length - 1,  # [CLS] is given, not generated
                num_beams=options.num_beams,
                length_penalty=options.length_penalty,
                no_repeat_ngram_size=options.no_repeat_ngram_size,
            ),
            label_smoothing=self.train_config.label_smoothing,
        )
        captioner.preprocessing = {**captioner.preprocessing, **info.get("preprocessing", {})}
        return captioner

    def init_from_state(
        self, model: TransferModel, state: Mapping[str, torch.Tensor], parts: Sequence[str], *, source: str
    ) -> None:
        """``init_from`` an earlier stage. A captioning stage gives every part by name. An
        image-classification stage (a VGG16 trained on a source vision task) gives its
        ``backbone``, which is this encoder with the same keys, less the layers the grid never
        runs (VGG's ``classifier``); the decoder then starts from its own checkpoint
        (``model.decoder``), as it would without ``init_from``."""
        from tlengine.model import load_parts

        given = [p for p in parts if any(k.startswith(p + ".") for k in state)]
        load_parts(model, state, given, source=source)
        if "encoder" in parts and "encoder" not in given:
            dropped = tuple(f"backbone.{name}." for name in model.part("encoder").module.dropped)
            backbone = {
                "encoder." + k[len("backbone.") :]: v
                for k, v in state.items()
                if k.startswith("backbone.") and not (dropped and k.startswith(dropped))
            }
            if not backbone:
                raise TLEngineError(
                    f"{source} has neither an 'encoder' nor a 'backbone' part to start the encoder from"
                )
            load_parts(model, backbone, ["encoder"], source=source)
        if "decoder" in parts and "decoder" not in given:
            from .decoder import load_decoder_checkpoint

            load_decoder_checkpoint(model.part("decoder").module)

    # ------------------------------------------------------------------ data
    def build_data(self, data: DataConfig, *, preprocessing: dict[str, Any], base_dir: Path, seed: int) -> TaskData:
        from tlengine_plugins.text_classification.encoders import load_tokenizer

        spec = self.registries.datasets.get(data.dataset)
        samples: CaptionSamples = spec.build(spec.args.model_validate(data.args), base_dir)
        if not samples.items:
            raise DataError(f"dataset '{data.dataset}' ({samples.source}) has no images")
        split = split_images(len(samples.items), data.val_fraction, data.test_fraction, seed)
        tokenizer_json = None
        if preprocessing["tokenizer"] == "train":  # on the training captions only: nothing leaks from val/test
            from .tokenizer import tokenizer_from_json, train_caption_tokenizer

            captions = (c for i in split["train"] for c in samples.items[i].captions)
            tokenizer_json = train_caption_tokenizer(captions, vocab_size=int(preprocessing["vocab_size"]))
            tokenizer = tokenizer_from_json(tokenizer_json)
        else:
            tokenizer = load_tokenizer(preprocessing["tokenizer"])
        max_length = int(preprocessing["max_length"])
        targets, cut = tokenize_references(tokenizer, samples, max_length)
        options = self.data_options(data)
        images = [item.image for item in samples.items]

        def subset(indices: list[int], train: bool) -> Subset:
            transform = batches.build_transform(preprocessing, augment=options.augment, train=train)
            return Subset(batches.CaptionDataset(images, targets, transform), indices)

        train, val, test = subset(split["train"], True), subset(split["val"], False), subset(split["test"], False)
        if not len(train) or not len(test):
            raise DataError(
                f"dataset '{data.dataset}' ({samples.source}) leaves {len(train)} training and {len(test)} test "
                "images after the split; both need at least one"
            )
        warnings = []
        if cut:
            warnings.append(f"{cut} caption(s) are longer than model.max_length={max_length} tokens and were cut")
        if samples.skipped:
            skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(samples.skipped.items()))
            warnings.append(f"skipped while reading {samples.source}: {skipped}")
        self.report_items = [(samples.items[i].image, samples.items[i].captions) for i in split["test"][:REPORT_IMAGES]]
        info = {
            "source": samples.source,
            "preprocessing": dict(preprocessing),
            "skipped": dict(samples.skipped),
            "images": {k: len(v) for k, v in split.items()},
            "captions": {k: sum(len(samples.items[i].captions) for i in v) for k, v in split.items()},
        }
        if tokenizer_json is not None:
            info["tokenizer_json"] = tokenizer_json
            info["vocabulary"] = len(tokenizer)
        return TaskData(train, val, test, info=info, warnings=warnings)

    def collate(self, samples: Sequence[Any]) -> tuple[Any, Any]:
        return batches.collate(samples)

    # ------------------------------------------------------------------ training
    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        """The model computes its teacher-forcing loss itself: ``outputs`` is that loss."""
        return outputs

    def training_loss(self, model: Any, inputs: Any, targets: Any) -> torch.Tensor:
        return model(inputs, targets)

    def evaluation_batch(self, model: Any, batch: Any, device: torch.device) -> dict[str, list[Any]]:
        inputs, targets = self.move_to(batch, device)
        return {"predictions": list(model(inputs)), "references": [list(t.captions) for t in targets]}

    def score(self, outcomes: list[dict[str, list[Any]]], info: dict[str, Any]) -> Evaluation:
        from .metrics import score_captions

        predictions = [p for o in outcomes for p in o["predictions"]]
        references = [r for o in outcomes for r in o["references"]]
        scores = score_captions(predictions, references)
        samples = [
            {"prediction": p, "references": r, **{k: round(v, 4) for k, v in s.items()}}
            for p, r, s in zip(predictions[:REPORT_IMAGES], references, scores.samples)
        ]
        return Evaluation(scores.metrics, details={"samples": samples, "predictions": predictions})

    # ------------------------------------------------------------------ reports
    def write_reports(self, run_dir: Path, arms: dict[str, Evaluation], info: dict[str, Any]) -> list[Path]:
        from .reports import write_caption_reports

        return write_caption_reports(run_dir, arms, info, self.report_items)

    # ------------------------------------------------------------------ feature cache
    def cache_spec(self, model: TransferModel) -> CacheSpec:
        return CacheSpec(layout="sequence")

    def targets(self, dataset: Dataset) -> list[CaptionTarget]:
        return batches.targets(dataset)

    def dataset_fingerprint(self, dataset: Dataset) -> str:
        return batches.fingerprint(dataset)

    def extraction_batches(
        self,
        dataset: Dataset,
        *,
        indices: torch.Tensor,
        view: int,
        seed: int,
        batch_size: int,
        preprocessing: dict[str, Any],
        kernels: str,
        train: bool,
        input_format: InputFormat | None = None,
        num_workers: int = 0,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return batches.extraction_batches(
            dataset,
            indices=indices,
            view=view,
            seed=seed,
            batch_size=batch_size,
            preprocessing=preprocessing,
            kernels=kernels,
            train=train,
            input_format=input_format,
            num_workers=num_workers,
        )

    # ------------------------------------------------------------------ inference
    def predict(
        self,
        model: TransferModel,
        inputs: Sequence[PredictInput],
        info: dict[str, Any],
        *,
        options: Mapping[str, Any],
        device: torch.device | None = None,
    ) -> list[dict[str, Any]]:
        """One caption per image file; ``options["num_beams"]`` overrides the run's beam width."""
        transform = batches.build_transform(info["preprocessing"], augment="none", train=False)
        device = device or torch.device("cpu")
        beams = options.get("num_beams")
        results = []
        model.eval()
        for item in inputs:
            if item.kind != "file":
                raise DataError("image-captioning captions image files, not text; drop --text")
            image = batches.load_image(Path(item.value))
            with torch.no_grad():
                caption = model(transform(image).unsqueeze(0).to(device), num_beams=beams)[0]
            results.append({"input": item.value, "caption": caption})
        return results

    def render_prediction(self, result: dict[str, Any]) -> str:
        return f"{result['input']}: {result['caption']}"


def tokenize_references(tokenizer: Any, samples: CaptionSamples, max_length: int) -> tuple[list[CaptionTarget], int]:
    """Every image's captions as :class:`CaptionTarget` (``[CLS] .. [SEP]`` ids cut to
    ``max_length``); also how many captions were cut. DataError for a caption that has no
    token at all (e.g. only characters the tokenizer drops)."""
    flat = [c for item in samples.items for c in item.captions]
    encoded = tokenizer(flat, add_special_tokens=True, truncation=False, return_attention_mask=False)["input_ids"]
    targets, pos, cut = [], 0, 0
    for index, item in enumerate(samples.items):
        ids = []
        for caption in item.captions:
            tokens = list(encoded[pos])
            pos += 1
            if len(tokens) <= 2:
                raise DataError(
                    f"{samples.source}: image {index} has a caption with no token the decoder's tokenizer knows: "
                    f"'{caption}'"
                )
            if len(tokens) > max_length:
                cut += 1
                tokens = tokens[: max_length - 1] + tokens[-1:]  # keep [SEP]: the decoder learns to stop
            ids.append(tokens)
        targets.append(CaptionTarget(list(item.captions), ids))
    return targets, cut


def split_images(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[int]]:
    """Image indices per split: the engine's split rule (``tlengine.data.split_indices``) over
    one class, i.e. a seeded shuffle cut by the fractions, with at least one test and one
    validation image from 3 images on."""
    from tlengine.data import split_indices

    train, val, test = split_indices([0] * n, val_fraction, test_fraction, seed)
    return {"train": train, "val": val, "test": test}


def _grid_problems(backbone: str, args: dict[str, Any], registries: Any) -> list[tuple[str, str]]:
    """Whether the encoder's conv grid can be found, from the architecture alone (built on the
    meta device: no memory, no weights)."""
    from tlengine_plugins.image_classification.backbones import build_backbone

    from .encoders import grid_steps

    try:
        with torch.device("meta"):
            built = build_backbone(
                backbone, weights=None, weights_registry=registries.weights, base_dir=Path("."), **args
            )
        grid_steps(built.module, built.arch)
    except ConfigError as exc:
        return list(exc.errors)
    except Exception:  # noqa: BLE001 - the run builds it for real and reports what fails
        return []
    return []
