"""The image-captioning task in-process: the model's parts and how the feature-extraction
strategy freezes them (the decoder's attached new part still trains), teacher forcing,
the feature cache (extracted once, equal to the live encoder, crops never mirrored),
tokenising the references, predict, and what a feature-extraction run costs the encoder.

Tiny everything: mobilenet_v2 (random init) at 64 px gives a 2x2 grid of 1280 channels;
the decoder is a 2-layer, 32-wide BERT folder written by caption_fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from caption_fixtures import (
    HIDDEN,
    SIZE,
    one_thread,  # noqa: F401  (autouse: one torch thread in this module)
    tiny_config,
    write_caption_bert,
    write_encoder_weights,
    write_png,
)
from PIL import Image
from resume_helpers import run_in_process
from safetensors.torch import load_file
from tlengine.config import CacheConfig, DataConfig, ModelConfig, StrategyConfig, TrainConfig
from tlengine.errors import DataError
from tlengine.plugins import get_plugin_manager
from tlengine.task import PredictInput
from tlengine.training.feature_cache import CachedFeatures
from tlengine_plugins.image_captioning import batches
from tlengine_plugins.image_captioning.datasets import CaptionItem, CaptionSamples
from tlengine_plugins.image_captioning.decoder import IGNORE_INDEX, caption_loss
from tlengine_plugins.image_captioning.encoders import GridTokens
from tlengine_plugins.image_captioning.metrics import normalise_caption
from tlengine_plugins.image_captioning.model import CaptionTarget, teacher_forcing_batch
from tlengine_plugins.image_captioning.task import ImageCaptioningTask, tokenize_references
from tlengine_plugins.image_classification.extraction import view_params
from tlengine_plugins.text_classification.encoders import load_tokenizer
from torchvision.transforms import v2

PRETRAINED = {"encoder": True, "decoder": True}


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The decoder's BERT folder; the encoder's weights are ``weights_of(bert)`` beside it."""
    folder = tmp_path_factory.mktemp("caption-task")
    write_encoder_weights(folder / "mnv2.pth")
    return write_caption_bert(folder / "bert")


def weights_of(bert: Path) -> Path:
    return bert.parent / "mnv2.pth"


@pytest.fixture(scope="module")
def task() -> ImageCaptioningTask:
    return ImageCaptioningTask(get_plugin_manager().registries, TrainConfig())


def model_config(bert: Path, **options) -> ModelConfig:
    return ModelConfig.model_validate({**tiny_config(bert, weights_of(bert))["model"], **options})


def data_config(bert: Path, **args) -> DataConfig:
    data = tiny_config(bert)["data"]
    data["args"].update(args)
    return DataConfig.model_validate(data)


def build(task, bert: Path, *, init=PRETRAINED, data: DataConfig | None = None, seed: int = 0, **options):
    mc = model_config(bert, **options)
    pre = task.preprocessing(mc, init=init, base_dir=bert.parent)
    built = task.build_data(data or data_config(bert), preprocessing=pre, base_dir=bert.parent, seed=seed)
    torch.manual_seed(seed)
    model = task.build_model(mc, built.info, init=init, base_dir=bert.parent)
    return model, built


def strategy(name: str = "feature-extraction", **fields):
    registries = get_plugin_manager().registries
    return registries.strategies.get(name)(StrategyConfig.model_validate({"name": name, **fields}))


def ids(module: torch.nn.Module) -> set[int]:
    return {id(p) for p in module.parameters()}


# ------------------------------------------------------------------ the model's parts
def test_parts_shapes_and_the_decoders_new_parameters(task, bert) -> None:
    model, data = build(task, bert)
    parts = model.parts
    assert list(parts) == ["encoder", "projection", "decoder", "decoder_new"]
    assert parts["encoder"].pretrained and parts["decoder"].pretrained
    assert not parts["projection"].pretrained and not parts["decoder_new"].pretrained
    assert parts["decoder_new"].attached and not parts["projection"].attached
    assert [b for b, _ in parts["decoder"].blocks] == ["embeddings", "layer.0", "layer.1"]
    assert [b for b, _ in parts["encoder"].blocks][0] == "features.0"
    # the decoder loaded the checkpoint; the attached part is exactly what the checkpoint lacks
    decoder = model.caption_decoder
    assert decoder.pretrained and decoder.new_parameter_names
    saved = load_file(str(bert / "model.safetensors"))
    loaded = dict(decoder.model.named_parameters())
    for key in ("embeddings.word_embeddings.weight", "encoder.layer.1.output.dense.weight"):
        assert torch.equal(loaded[f"bert.{key}"], saved[key]), key
    assert ids(parts["decoder_new"].module) == {id(p) for p in decoder.new_parameters()}
    assert ids(parts["decoder_new"].module) < ids(parts["decoder"].module)
    assert any(".crossattention." in n for n in decoder.new_parameter_names)
    assert not any(".crossattention." in n for n in decoder.loaded_parameter_names)
    # the state dict has no second copy of the attached part
    assert not any(k.startswith("decoder_new.") for k in model.state_dict())

    x, _ = task.collate([data.test[i] for i in range(3)])
    assert x.shape == (3, 3, SIZE, SIZE)
    model.eval()
    with torch.no_grad():
        tokens = model.forward_features(x)
        visual = model.run_part("projection", tokens)
    assert tokens.shape == (3, 4, 1280) and model.grid_shape == (2, 2, 1280)
    assert visual.shape == (3, 4, HIDDEN)
    assert data.info["preprocessing"]["grid"] == [2, 2, 1280]

    # an arm whose decoder starts random keeps the architecture: every parameter is new
    scratch, _ = build(task, bert, init={"encoder": True, "decoder": False})
    sd = scratch.caption_decoder
    assert not sd.pretrained and set(sd.new_parameter_names) == {n for n, _ in sd.model.named_parameters()}
    assert sd.model.get_input_embeddings().weight.shape == decoder.model.get_input_embeddings().weight.shape
    assert not torch.equal(sd.model.get_input_embeddings().weight, decoder.model.get_input_embeddings().weight)
    assert ids(scratch.parts["decoder_new"].module) < ids(scratch.parts["decoder"].module)


def test_feature_extraction_freezes_pretrained_blocks_and_trains_the_attached_part(task, bert) -> None:
    model, data = build(task, bert)
    fe = strategy()
    fe.prepare(model, data)
    assert fe.apply(model, 1) == []  # no pretrained block trains
    assert "encoder" in model.frozen_parts
    assert "decoder" not in model.frozen_parts  # it holds decoder_new, which trains: it needs a graph
    new = ids(model.parts["decoder_new"].module)
    for name, p in model.part("decoder").module.named_parameters():
        assert p.requires_grad == (id(p) in new), name
    assert not any(p.requires_grad for p in model.part("encoder").module.parameters())
    assert all(p.requires_grad for p in model.part("projection").module.parameters())

    # every parameter in exactly one group; the new parts first, at the full learning rate
    groups = fe.param_groups(model, lr=0.01)
    seen = [id(p) for g in groups for p in g["params"]]
    assert len(seen) == len(set(seen)) and set(seen) == ids(model)
    names = [g["name"] for g in groups]
    assert names[:2] == ["projection", "decoder_new"]
    assert {"decoder.embeddings", "decoder.layer.0", "decoder.layer.1", "encoder.features.0"} <= set(names)
    by_name = {g["name"]: g for g in groups}
    assert ids(model.parts["decoder_new"].module) == {id(p) for p in by_name["decoder_new"]["params"]}
    assert by_name["decoder_new"]["lr"] == by_name["projection"]["lr"] == 0.01
    cross = {id(p) for layer in model.parts["decoder_new"].module.cross_attention for p in layer.parameters()}
    assert cross and not cross & {id(p) for p in by_name["decoder.layer.0"]["params"]}

    # teacher forcing: a finite loss whose gradient reaches the cross-attention and the projection only
    fe.train_mode(model)
    x, y = task.collate([data.train[i] for i in range(4)])
    loss = model(x, y)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for name, p in model.named_parameters():
        if id(p) in cross or name.startswith("projection."):
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        elif not p.requires_grad:
            assert p.grad is None, name
    assert all(float(p.grad.abs().sum()) > 0 for p in model.part("projection").module.parameters())
    assert sum(float(model.get_parameter(n).grad.abs().sum()) > 0 for n in _cross_names(model)) >= len(cross) // 2
    assert all(p.grad is None for p in model.part("encoder").module.parameters())


def _cross_names(model) -> list[str]:
    return [n for n, _ in model.named_parameters() if ".crossattention." in n]


def test_the_image_reaches_the_logits_through_the_cross_attention(task, bert) -> None:
    model, data = build(task, bert)
    model.eval()
    x, y = task.collate([data.test[i] for i in range(2)])
    batch = teacher_forcing_batch(y[:1], model.caption_decoder.pad_token_id, torch.device("cpu"))
    ids_, mask = batch["input_ids"][:1], batch["attention_mask"][:1]

    def logits(image: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            visual = model.run_part("projection", model.forward_features(image[None]))
            return model.run_part("decoder", ids_, mask, visual).logits

    first = logits(x[0])
    assert torch.equal(first, logits(x[0]))  # deterministic in eval mode
    assert (first - logits(x[1])).abs().max() > 1e-4
    # the teacher-forced loss of the model is the decoder's on each caption's own image
    with torch.no_grad():
        loss = model(x, y)
        visual = model.run_part("projection", model.forward_features(x))
        full = teacher_forcing_batch(y, model.caption_decoder.pad_token_id, torch.device("cpu"))
        own = model.run_part("decoder", full["input_ids"], full["attention_mask"], visual[full["image"]]).logits
        swapped = model.run_part("decoder", full["input_ids"], full["attention_mask"], visual[1 - full["image"]])
    torch.testing.assert_close(loss, caption_loss(own, full["labels"]))
    assert not torch.allclose(loss, caption_loss(swapped.logits, full["labels"]), atol=1e-6, rtol=0)


# ------------------------------------------------------------------ teacher forcing
def test_teacher_forcing_batch_pads_masks_and_maps_captions_to_images() -> None:
    targets = [
        CaptionTarget(["a b", "c d e"], [[101, 7, 8, 102], [101, 9, 10, 11, 12, 102]]),
        CaptionTarget(["f"], [[101, 13, 102]]),
        CaptionTarget(["g h", "i", "j"], [[101, 14, 15, 102], [101, 16, 102], [101, 17, 18, 19, 102]]),
    ]
    batch = teacher_forcing_batch(targets, pad_id=0, device=torch.device("cpu"))
    assert batch["image"].tolist() == [0, 0, 1, 2, 2, 2]
    assert batch["input_ids"].tolist() == [
        [101, 7, 8, 102, 0, 0],
        [101, 9, 10, 11, 12, 102],
        [101, 13, 102, 0, 0, 0],
        [101, 14, 15, 102, 0, 0],
        [101, 16, 102, 0, 0, 0],
        [101, 17, 18, 19, 102, 0],
    ]
    assert batch["attention_mask"].tolist() == [[1 if t else 0 for t in row] for row in batch["input_ids"].tolist()]
    labels = batch["labels"]
    assert torch.equal(labels == IGNORE_INDEX, batch["attention_mask"] == 0)
    assert torch.equal(labels[batch["attention_mask"] == 1], batch["input_ids"][batch["attention_mask"] == 1])
    assert all(t.dtype == torch.long for t in batch.values())
    # a pad id that is also a real token id: the mask, not the value, decides the labels
    same = teacher_forcing_batch(
        [CaptionTarget(["x"], [[5, 5, 6]]), CaptionTarget(["y"], [[5]])], 5, torch.device("cpu")
    )
    assert same["labels"].tolist() == [[5, 5, 6], [5, IGNORE_INDEX, IGNORE_INDEX]]
    with pytest.raises(ValueError, match="no caption"):
        teacher_forcing_batch([CaptionTarget([], [])], 0, torch.device("cpu"))


# ------------------------------------------------------------------ tokenising the references
def test_tokenize_references_round_trips_and_cuts_keeping_sep(bert) -> None:
    tokenizer = load_tokenizer(str(bert))
    long = "a small red circle above a big blue square and a little green triangle left of the big blue square"
    captions = [["A Red  circle.", "there is a big yellow square at the top left"], [long], ["the triangle"]]
    samples = CaptionSamples([CaptionItem(Image.new("RGB", (8, 8)), c) for c in captions], "test captions")
    max_length = 12
    targets, cut = tokenize_references(tokenizer, samples, max_length)
    assert cut == 1
    assert [t.captions for t in targets] == captions
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    for target in targets:
        for caption, ids_ in zip(target.captions, target.token_ids):
            full = tokenizer(caption)["input_ids"]
            assert ids_[0] == cls and ids_[-1] == sep and len(ids_) <= max_length
            if len(full) <= max_length:
                assert ids_ == full
                decoded = tokenizer.decode(ids_, skip_special_tokens=True).strip()
                assert decoded == normalise_caption(caption)
            else:
                assert ids_ == full[: max_length - 1] + [sep]
                assert tokenizer.decode(ids_, skip_special_tokens=True) == " ".join(long.split()[: max_length - 2])


def test_build_data_tokenises_splits_and_warns_about_cut_captions(task, bert) -> None:
    model, data = build(task, bert, max_length=10)
    decoder = model.caption_decoder
    base = data.train.dataset
    tokenizer = decoder.tokenizer
    too_long = sum(len(tokenizer(c)["input_ids"]) > 10 for t in base.captions for c in t.captions)
    assert too_long > 0
    assert data.warnings == [f"{too_long} caption(s) are longer than model.max_length=10 tokens and were cut"]
    for target in base.captions:
        assert len(target.token_ids) == len(target.captions) == 2
        for caption, ids_ in zip(target.captions, target.token_ids):
            assert len(ids_) <= 10 and ids_[-1] == decoder.eos_token_id
            text = decoder.decode([ids_])[0]
            assert caption.startswith(text) and (text == caption) == (len(tokenizer(caption)["input_ids"]) <= 10)
    splits = {s: list(getattr(data, s).indices) for s in ("train", "val", "test")}
    assert sorted(sum(splits.values(), [])) == list(range(24))
    assert data.info["images"] == {s: len(v) for s, v in splits.items()}
    assert data.info["captions"] == {s: 2 * len(v) for s, v in splits.items()}
    assert len(task.report_items) == len(splits["test"])
    assert task.report_items[0][1] == base.captions[splits["test"][0]].captions
    # training images are crops (augment: light), evaluation images the whole picture
    assert isinstance(data.train.dataset.transform, v2.Compose)
    assert any(isinstance(t, v2.RandomCrop) for t in data.train.dataset.transform.transforms)
    assert not any(isinstance(t, v2.RandomCrop) for t in data.test.dataset.transform.transforms)


# ------------------------------------------------------------------ the feature cache
def _eval_images(dataset, indices, preprocessing) -> torch.Tensor:
    transform = batches.build_transform(preprocessing, augment="none", train=False)
    return torch.stack([transform(dataset.image(i)) for i in indices])


def _crops(dataset, indices, preprocessing, view: int, seed: int, mirrored: bool) -> torch.Tensor:
    """The training crops of ``view`` cut by hand for the images ``indices`` of ``dataset``
    (sample k of the split is ``indices[k]``): the image resized to train_base_size, the crop
    at view_params' offsets of sample k, optionally mirrored, normalised."""
    base = batches.train_base_size(SIZE)
    offsets, _ = view_params(torch.arange(len(indices)), view, seed, base, SIZE)
    mean = torch.tensor(preprocessing["mean"]).view(3, 1, 1)
    std = torch.tensor(preprocessing["std"]).view(3, 1, 1)
    out = []
    for (top, left), i in zip(offsets.tolist(), indices):
        image = dataset.image(i).resize((base, base), Image.BILINEAR, reducing_gap=None)
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(base, base, 3)
        crop = pixels.permute(2, 0, 1).float().div(255)[:, top : top + SIZE, left : left + SIZE]
        out.append(((crop.flip(-1) if mirrored else crop) - mean) / std)
    return torch.stack(out)


def test_cached_tokens_equal_the_live_encoder_and_crops_are_never_mirrored(task, bert) -> None:
    # 80 px scenes at input 64: the resize is not the identity
    model, data = build(task, bert, data=data_config(bert, size=80))
    model.frozen_parts = {"encoder"}
    model.eval()
    pre = data.info["preprocessing"]
    views = 3
    cached = CachedFeatures(
        task, model, data, CacheConfig(views=views, kernels="torch"), device=torch.device("cpu"), seed=5, batch_size=5
    )
    cached.prepare()
    try:
        assert cached.stats()["layout"]["layout"] == "sequence" and cached.sample_shape == (4, 1280)
        for split in ("val", "test"):
            dataset = getattr(data, split)
            feats, targets = next(iter(cached.eval_loader(split, batch_size=len(dataset))))
            with torch.no_grad():
                live = model.forward_features(torch.stack([dataset[i][0] for i in range(len(dataset))]))
            torch.testing.assert_close(feats.float(), live, atol=1e-3, rtol=1e-3)
            assert [t.captions for t in targets] == [t.captions for t in batches.targets(dataset)]
            # the head gives the same loss on cached and live tokens
            with torch.no_grad():
                torch.testing.assert_close(model.forward_head(feats, targets), model.forward_head(live, targets))

        base, idx = data.train.dataset, list(data.train.indices)
        rows = torch.arange(len(idx)) * views
        with torch.no_grad():
            live = model.forward_features(_eval_images(base, idx, pre))
            torch.testing.assert_close(cached.inputs("train", rows).float(), live, atol=1e-3, rtol=1e-3)
            positions = torch.arange(len(idx))
            for view in range(1, views):
                got = cached.inputs("train", rows + view).float()
                plain = model.forward_features(_crops(base, idx, pre, view, 5, mirrored=False))
                mirror = model.forward_features(_crops(base, idx, pre, view, 5, mirrored=True))
                torch.testing.assert_close(got, plain, atol=1e-3, rtol=1e-3)
                assert ((got - mirror).abs().amax(dim=(1, 2)) > 1e-3).all()
                assert not torch.allclose(got, live, atol=1e-3)
            # the crops move: views differ in position for some sample
            offsets = [view_params(positions, v, 5, batches.train_base_size(SIZE), SIZE)[0] for v in (1, 2)]
            assert not torch.equal(offsets[0], offsets[1])
        # the extraction batches themselves: view >= 1 is the unmirrored crop, pixel for pixel
        for view in (1, 2, 7):
            (images, samples), *_ = list(
                task.extraction_batches(
                    data.train,
                    indices=torch.arange(len(idx)),
                    view=view,
                    seed=5,
                    batch_size=len(idx),
                    preprocessing=pre,
                    kernels="torch",
                    train=True,
                )
            )
            assert samples.tolist() == list(range(len(idx)))
            want = _crops(base, idx, pre, view, 5, mirrored=False)
            torch.testing.assert_close(images, want, atol=1e-5, rtol=0)
    finally:
        cached.close()


@pytest.mark.slow
def test_the_encoder_runs_once_per_image_and_view_and_a_second_run_reuses_the_disk_cache(
    bert, tmp_path, monkeypatch
) -> None:
    """A 3-epoch feature-extraction run: the encoder sees every training image once per cached
    view and every val/test image once (plus the cache's probe), not once per epoch; a second
    run with the same disk cache runs the probe only, and ends with the same metrics."""
    calls: list[int] = []
    forward = GridTokens.forward

    def counted(self, x):
        calls.append(int(x.shape[0]))
        return forward(self, x)

    monkeypatch.setattr(GridTokens, "forward", counted)
    config = tiny_config(bert, weights_of(bert), baseline=None, extraction={"precision": "fp32", "compile": "off"})
    config["train"]["epochs"] = 3
    config["strategy"]["cache"] = {"views": 2, "storage": "disk", "root": str(tmp_path / "cache")}
    first = run_in_process(config, tmp_path / "first")
    splits = first["cache"]["feature-extraction"]["splits"]
    n_train, n_val, n_test = splits["train"]["rows"] // 2, splits["val"]["rows"], splits["test"]["rows"]
    assert (n_train, n_val, n_test) == (13, 5, 6) and splits["train"]["views"] == 2
    probe = min(8, n_train)  # the cache's first call: the output shape (and the precision check)
    assert sum(calls) == probe + 2 * n_train + n_val + n_test, calls
    assert first["stages"]["main"]["arms"]["feature-extraction"]["epochs"] == 3

    calls.clear()
    second = run_in_process(config, tmp_path / "second")
    assert sum(calls) == probe  # every row of every split came from disk
    splits = second["cache"]["feature-extraction"]["splits"]
    assert {s: (v["rows_reused"], v["rows_extracted"]) for s, v in splits.items()} == {
        "train": (2 * n_train, 0),
        "val": (n_val, 0),
        "test": (n_test, 0),
    }
    assert second["arms"]["feature-extraction"]["metrics"] == first["arms"]["feature-extraction"]["metrics"]


# ------------------------------------------------------------------ predict
def test_predict_captions_files_and_refuses_text(task, bert, tmp_path) -> None:
    model, data = build(task, bert)
    image = write_png(tmp_path / "red.png", (90, 70))
    (one,) = task.predict(model, [PredictInput(str(image))], data.info, options={})
    assert one["input"] == str(image) and isinstance(one["caption"], str)
    assert task.render_prediction(one) == f"{image}: {one['caption']}"
    # the caption is what the model decodes from the eval transform of the file
    transform = batches.build_transform(data.info["preprocessing"], augment="none", train=False)
    with torch.no_grad():
        want = model(transform(batches.load_image(image)).unsqueeze(0))[0]
    assert one["caption"] == want
    beams = task.predict(model, [PredictInput(str(image))], data.info, options={"num_beams": 3})
    assert isinstance(beams[0]["caption"], str)
    with pytest.raises(DataError, match="drop --text"):
        task.predict(model, [PredictInput("a red circle", "text")], data.info, options={})
    with pytest.raises(DataError, match="does not exist"):
        task.predict(model, [PredictInput(str(tmp_path / "missing.png"))], data.info, options={})


# ------------------------------------------------------------------ known bugs
def test_the_decoder_checkpoint_loads_when_the_encoder_has_no_weights(bert, tmp_path) -> None:
    from tlengine.pipeline import Runner
    from tlengine.validation import LoadedPipeline, validate

    manager = get_plugin_manager()
    config = tiny_config(bert)  # model.weights: null, model.decoder: the BERT folder
    loaded = LoadedPipeline(validate(config, manager.registries, tmp_path), tmp_path, "test")
    runner = Runner(manager, echo=lambda s: None)
    prepared = runner.prepare(loaded, output=tmp_path / "run")
    stage = prepared.stages[0]
    fe = runner.strategy(stage.plan.arms[0])
    assert fe.name == "feature-extraction" and fe.part_uses_pretrained("decoder")
    model = runner.build_model(stage, fe, 0, tmp_path)
    assert model.caption_decoder.pretrained


def test_the_summary_table_never_shows_cider_as_a_percentage() -> None:
    """CIDEr-D is on a 0-10 scale: the same metric reads the same way whatever its values
    (it was shown in % with gains in points whenever every arm scored <= 1)."""
    from tlengine.reporting.tables import summary_markdown, summary_rows

    def summary(fe: float, scratch: float) -> dict:
        return {
            "primary_metric": "cider",
            "metric_directions": ImageCaptioningTask.metric_directions,
            "baseline_arm": "scratch",
            "arms": {
                "feature-extraction": {"strategy": "feature-extraction", "metrics": {"cider": fe, "bleu_4": 0.2}},
                "scratch": {"strategy": "scratch", "metrics": {"cider": scratch, "bleu_4": 0.1}},
            },
        }

    for fe, scratch in ((1.6, 1.3), (0.62, 0.31)):
        table = summary_markdown(summary(fe, scratch))
        assert "| cider |" in table and "cider (%)" not in table and "bleu_4 (%)" in table
        assert summary_rows(summary(fe, scratch))[0]["gain_vs_baseline"] == pytest.approx(fe - scratch)


# ------------------------------------------------------------------ model.tokenizer: train
UNIQUE = "zebra yak walrus otter lynx heron ibis koala okapi tapir quokka gecko".split()


def test_a_tokenizer_trained_on_the_training_captions_only(task, bert, tmp_path) -> None:
    """``model.tokenizer: train``: the vocabulary comes from the training captions (a word only
    a test or validation caption has is not a token), the decoder's word embeddings are new
    (in the attached part, trained under feature extraction), every other BERT tensor loads,
    and the tokenizer travels in ``info`` so a rebuilt model decodes the same."""
    from tlengine_plugins.image_captioning.task import split_images

    folder = tmp_path / "data"
    rows = ["image,caption"]
    for i, word in enumerate(UNIQUE):
        write_png(folder / f"i{i}.png", (50, 40), (20 * i, 200 - 10 * i, 90))
        rows += [f"i{i}.png,a red {word} above the square", f"i{i}.png,the {word}"]
    (folder / "captions.csv").write_text("\n".join(rows) + "\n")
    data = DataConfig.model_validate(
        {"dataset": "caption-csv", "args": {"path": "captions.csv"}, "val_fraction": 0.2, "test_fraction": 0.25}
    )
    mc = model_config(bert, tokenizer="train", vocab_size=200)
    pre = task.preprocessing(mc, init=PRETRAINED, base_dir=folder)
    built = task.build_data(data, preprocessing=pre, base_dir=folder, seed=0)
    split = split_images(len(UNIQUE), 0.2, 0.25, 0)
    assert list(built.test.indices) == split["test"] and split["val"] and split["test"]
    assert "tokenizer_json" in built.info and built.info["vocabulary"] <= 200
    torch.manual_seed(0)
    model = task.build_model(mc, built.info, init=PRETRAINED, base_dir=folder)
    decoder = model.caption_decoder
    vocab = decoder.tokenizer.get_vocab()
    assert len(decoder.tokenizer) == built.info["vocabulary"] == decoder.vocab_size
    for i, word in enumerate(UNIQUE):
        assert (word in vocab) == (i in split["train"]), (word, i)
    # the training captions round-trip through the trained tokenizer
    for i in split["train"]:
        target = built.train.dataset.captions[i]
        assert decoder.decode(target.token_ids) == [c.lower() for c in target.captions]

    # every BERT tensor but the vocabulary's loaded; the word embeddings are in the new attached part
    saved = load_file(str(bert / "model.safetensors"))
    params = dict(decoder.model.named_parameters())
    for key in ("encoder.layer.0.attention.self.query.weight", "embeddings.position_embeddings.weight"):
        assert torch.equal(params[f"bert.{key}"], saved[key]), key
    embeddings = decoder.model.get_input_embeddings().weight
    assert embeddings.shape == (decoder.vocab_size, HIDDEN)
    assert id(embeddings) in ids(model.parts["decoder_new"].module)
    fe = strategy()
    fe.prepare(model, built)
    fe.apply(model, 1)
    assert embeddings.requires_grad and not params["bert.embeddings.position_embeddings.weight"].requires_grad
    groups = fe.param_groups(model, lr=0.01)
    seen = [id(p) for g in groups for p in g["params"]]
    assert len(seen) == len(set(seen)) and set(seen) == ids(model)
    fe.train_mode(model)
    x, y = task.collate([built.train[i] for i in range(3)])
    loss = model(x, y)
    loss.backward()
    assert torch.isfinite(loss) and embeddings.grad is not None and float(embeddings.grad.abs().sum()) > 0

    # a model rebuilt from info (what predict does) has the same tokenizer and decodes the same
    again = task.build_model(mc, built.info, init={"encoder": False, "decoder": False}, base_dir=folder)
    again.load_state_dict(model.state_dict())
    assert again.caption_decoder.tokenizer.get_vocab() == vocab
    model.eval()
    image = folder / f"i{split['test'][0]}.png"
    first = task.predict(model, [PredictInput(str(image))], built.info, options={"num_beams": 2})
    assert task.predict(again, [PredictInput(str(image))], built.info, options={"num_beams": 2}) == first


def test_the_trained_tokenizer_is_the_same_for_the_same_captions(task, bert) -> None:
    mc = model_config(bert, tokenizer="train")
    pre = task.preprocessing(mc, init=PRETRAINED, base_dir=bert.parent)
    vocabularies = []
    for _ in range(4):  # one draw can agree by chance; four in a row do not
        built = task.build_data(data_config(bert), preprocessing=pre, base_dir=bert.parent, seed=0)
        model = task.build_model(mc, built.info, init=PRETRAINED, base_dir=bert.parent)
        vocabularies.append(model.caption_decoder.tokenizer.get_vocab())
    assert all(v == vocabularies[0] for v in vocabularies[1:])


# ------------------------------------------------------------------ stages
@pytest.mark.slow
def test_an_image_classification_stage_starts_the_encoder_and_the_decoder_keeps_its_checkpoint(
    tmp_path: Path,
) -> None:
    """A backbone trained by this engine on a source vision task becomes the captioning
    encoder through ``init_from`` (the issue's third way to a VGG16 without ImageNet weights);
    the decoder still starts from ``model.decoder``'s checkpoint."""
    import copy

    from caption_fixtures import tiny_config, write_caption_bert, write_encoder_weights

    bert = write_caption_bert(tmp_path / "bert")
    weights = write_encoder_weights(tmp_path / "mnv2.pth")
    caption = tiny_config(bert, None)
    caption_stage = {
        "name": "main",
        "task": "image-captioning",
        "init_from": "source",
        "data": caption["data"],
        "model": caption["model"],
        "strategy": {"name": "feature-extraction"},
        "train": {"epochs": 1},
    }
    config = {
        "name": "cls-to-captions",
        "seed": 0,
        "extraction": {"precision": "fp32"},
        "train": copy.deepcopy(caption["train"]),
        "stages": [
            {
                "name": "source",
                "task": "image-classification",
                "data": {
                    "dataset": "synthetic-shapes",
                    "args": {"shapes": ["circle", "square"], "per_class": 8, "size": 64, "seed": 1},
                    "val_fraction": 0.0,
                    "test_fraction": 0.25,
                },
                "model": {"backbone": "mobilenet_v2", "weights": str(weights), "input_size": 64},
                "strategy": {"name": "fine-tune", "backbone_lr_mult": 1.0},
                "train": {"epochs": 1, "lr": 0.01},
            },
            caption_stage,
        ],
    }
    out = tmp_path / "run"
    run_in_process(config, out)
    source = load_file(str(out / "arms" / "source" / "fine-tune" / "seed0" / "model.safetensors"))
    main = load_file(str(out / "arms" / "main" / "feature-extraction" / "seed0" / "model.safetensors"))
    encoder = {k[len("encoder.") :]: v for k, v in main.items() if k.startswith("encoder.")}
    backbone = {k[len("backbone.") :]: v for k, v in source.items() if k.startswith("backbone.")}
    assert encoder and set(encoder) <= set(backbone)
    assert all(torch.equal(encoder[k], backbone[k]) for k in encoder)  # the frozen encoder is the source's backbone
    query = "decoder.model.bert.encoder.layer.0.attention.self.query.weight"
    bert_state = load_file(str(bert / "model.safetensors"))
    theirs = next(v for k, v in bert_state.items() if k.endswith("encoder.layer.0.attention.self.query.weight"))
    assert torch.equal(main[query], theirs)  # frozen and from the checkpoint, not random
