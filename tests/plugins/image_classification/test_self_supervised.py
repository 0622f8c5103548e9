"""Self-supervised pretext strategies of the image plugin: ``rotation`` and ``simclr``."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tlengine.config import ModelConfig, StrategyConfig
from tlengine.errors import ConfigError, TLEngineError
from tlengine.plugins import get_plugin_manager
from tlengine.predict import load_run_model
from tlengine.strategies import StepContext
from tlengine.training.checkpoint import load_tensors
from tlengine.validation import validate
from tlengine_plugins.image_classification import self_supervised as ssl
from tlengine_plugins.image_classification.self_supervised import (
    PROJECTION_HEAD,
    ROTATION_HEAD,
    Rotation,
    SimCLR,
    nt_xent,
    rotate_batch,
    simclr_augmentation,
    two_views,
)
from tlengine_plugins.image_classification.task import ImageClassificationTask

MEAN, STD = torch.full((3,), 0.5), torch.full((3,), 0.25)  # tiny-cnn's normalisation


class Untouchable:
    """Stands in for a batch's labels: any use raises."""

    def __getattribute__(self, name):
        raise AssertionError(f"the labels were read (.{name})")

    def __len__(self):
        raise AssertionError("the labels were read (len)")

    def __iter__(self):
        raise AssertionError("the labels were read (iter)")


def image_model(size: int = 16):
    task = ImageClassificationTask(get_plugin_manager().registries)
    model = task.build_model(
        ModelConfig(backbone="tiny-cnn", weights=None, input_size=size),
        {"classes": ["a", "b", "c"]},
        init={"backbone": False},
        base_dir=Path("."),
    )
    return task, model


def step_for(task, model, inputs) -> StepContext:
    return StepContext(task, model, model, inputs, Untouchable(), 1, 0, 1, torch.device("cpu"))


def normalised_batch(n: int = 4, size: int = 16) -> torch.Tensor:
    torch.manual_seed(0)
    return (torch.rand(n, 3, size, size) - MEAN.view(1, 3, 1, 1)) / STD.view(1, 3, 1, 1)


# ---------------------------------------------------------------------- nt_xent
def test_nt_xent_matches_a_hand_computed_value():
    # Two samples, identical views, orthogonal: each row's partner has cosine 1, the two
    # other rows cosine 0, so every row's loss is -log(e / (e + 1 + 1)).
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert float(nt_xent(z, z.clone(), temperature=1.0)) == pytest.approx(math.log(1 + 2 / math.e), rel=1e-6)

    # Unnormalised, non-orthogonal views at temperature 0.5, written out row by row.
    z1 = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    z2 = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    rows = [(3 / 5, 4 / 5), (1.0, 0.0), (0.0, 1.0), (1 / math.sqrt(2), 1 / math.sqrt(2))]
    partner = [2, 3, 0, 1]
    t = 0.5
    total = 0.0
    for k, a in enumerate(rows):
        sims = {j: (a[0] * b[0] + a[1] * b[1]) / t for j, b in enumerate(rows) if j != k}
        total += -(sims[partner[k]] - math.log(sum(math.exp(s) for s in sims.values())))
    assert float(nt_xent(z1, z2, temperature=t)) == pytest.approx(total / 4, rel=1e-6)


def test_nt_xent_is_lower_for_matching_pairs_than_for_shuffled_ones():
    torch.manual_seed(0)
    z1 = torch.randn(16, 8)
    z2 = z1 + 0.1 * torch.randn(16, 8)
    shuffled = z2[torch.roll(torch.arange(16), 1)]
    assert float(nt_xent(z1, z2)) < float(nt_xent(z1, shuffled)) - 1.0
    assert float(nt_xent(z1[:1], z2[:1])) == 0.0  # one sample: no negatives
    with pytest.raises(ValueError, match="two \\[N,D\\] tensors"):
        nt_xent(z1, z2[:4])
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(z1, z2, temperature=0.0)


# ---------------------------------------------------------------------- rotation
def test_rotate_batch_labels_are_the_rotations():
    x = normalised_batch(3)
    rotated, labels = rotate_batch(x)
    assert rotated.shape == (12, 3, 16, 16)
    assert labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    for row, k in enumerate(labels.tolist()):
        assert torch.equal(rotated[row], torch.rot90(x[row % 3], k, dims=(1, 2)))

    torch.manual_seed(1)
    rotated, labels = rotate_batch(normalised_batch(32), all_rotations=False)
    x = normalised_batch(32)
    assert rotated.shape == x.shape and set(labels.tolist()) == {0, 1, 2, 3}
    for i, k in enumerate(labels.tolist()):
        assert torch.equal(rotated[i], torch.rot90(x[i], k, dims=(1, 2)))
    with pytest.raises(TLEngineError, match="square"):
        rotate_batch(torch.zeros(2, 3, 8, 10))


@pytest.mark.parametrize("all_rotations", [True, False])
def test_rotation_step_never_reads_targets_and_learns_the_rotation_labels(monkeypatch, all_rotations):
    task, model = image_model()
    strategy = Rotation(StrategyConfig(name="rotation", args={"all_rotations": all_rotations}))
    strategy.prepare(model, None)
    part = model.part(ROTATION_HEAD)
    assert part.owner == "strategy" and not part.pretrained
    assert (part.module.in_features, part.module.out_features) == (model.feature_dim, 4)

    built = []
    monkeypatch.setattr(ssl, "rotate_batch", lambda *a, **k: built.append(rotate_batch(*a, **k)) or built[-1])
    x = normalised_batch(4)
    torch.manual_seed(0)
    losses = strategy.training_step(step_for(task, model, x))  # the labels object raises on any use
    [(rotated, labels)] = built
    assert set(losses) == {"rotation"}
    if all_rotations:
        assert labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    else:
        assert len(labels) == 4 and set(labels.tolist()) <= {0, 1, 2, 3}
    for row, k in enumerate(labels.tolist()):
        assert torch.equal(rotated[row], torch.rot90(x[row % 4], k, dims=(1, 2)))
    expected = F.cross_entropy(part.module(model.forward_features(rotated)), labels)
    assert float(losses["rotation"].detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    losses["rotation"].backward()  # the backbone and the rotation head get gradients, the classifier none
    assert part.module.weight.grad is not None
    assert all(p.grad is not None for p in model.part("backbone").module.parameters())
    assert all(p.grad is None for p in model.part("head").module.parameters())


def test_pretext_strategies_train_every_block_at_full_rate_whatever_backbone_lr_mult_defaults_to():
    _, model = image_model()
    strategy = Rotation(StrategyConfig(name="rotation"))  # backbone_lr_mult defaults to 0.1
    strategy.prepare(model, None)
    groups = strategy.param_groups(model, 0.01)
    assert {g["name"]: g["lr"] for g in groups} == pytest.approx({g["name"]: 0.01 for g in groups})
    assert len(strategy.apply(model, 1)) == len(model.blocks)
    assert strategy.uses_pretrained  # starts from the stage's init: weights or init_from


# ---------------------------------------------------------------------- simclr
def test_simclr_views_differ_and_keep_the_inputs_shape():
    x = normalised_batch(6)
    torch.manual_seed(0)
    v1, v2 = two_views(x, MEAN, STD, simclr_augmentation((16, 16)))
    assert v1.shape == v2.shape == x.shape and v1.dtype == x.dtype
    assert not torch.allclose(v1, v2) and not torch.allclose(v1, x)
    # Each view is back in the inputs' normalisation: pixels in 0..1 before normalising.
    for v in (v1, v2):
        pixels = v * STD.view(1, 3, 1, 1) + MEAN.view(1, 3, 1, 1)
        assert float(pixels.min()) >= -1e-5 and float(pixels.max()) <= 1 + 1e-5
    # Un-normalise -> augment -> normalise is the identity when the augmentation is.
    same, _ = two_views(x, MEAN, STD, lambda image: image)
    assert torch.allclose(same, x, atol=1e-5)


def test_simclr_step_never_reads_targets_and_adds_a_projection_head():
    task, model = image_model()
    strategy = SimCLR(StrategyConfig(name="simclr", args={"hidden": 32, "out": 8, "temperature": 0.2}))
    strategy.prepare(model, None)  # no data: the normalisation comes from the model (as for predict)
    part = model.part(PROJECTION_HEAD)
    assert part.owner == "strategy" and part.module[0].in_features == model.feature_dim
    assert part.module[-1].out_features == 8
    torch.manual_seed(0)
    losses = strategy.training_step(step_for(task, model, normalised_batch(8)))
    assert set(losses) == {"nt_xent"} and math.isfinite(float(losses["nt_xent"].detach()))
    assert 0 < float(losses["nt_xent"].detach()) < 2 * math.log(15)


def test_simclr_args_are_validated(tmp_path):
    config = {
        "name": "x",
        "task": "image-classification",
        "data": {"dataset": "synthetic-shapes"},
        "model": {"backbone": "tiny-cnn"},
        "strategy": {"name": "simclr", "args": {"temperature": 0, "projection": 3}},
    }
    with pytest.raises(ConfigError) as err:
        validate(config, get_plugin_manager().registries, tmp_path)
    assert "temperature" in str(err.value) and "projection" in str(err.value)


# ---------------------------------------------------------------------- in a staged run
def test_the_next_stage_starts_from_exactly_the_pretext_backbone(tmp_path, tiny_config, monkeypatch):
    """rotation and simclr stages, then a target stage init_from the rotation stage: its
    fine-tune arm starts from the rotation stage's backbone tensors, its scratch arm does
    not; the pretext heads are saved in own.safetensors and are not carried over."""
    import tlengine.pipeline as pipeline
    from resume_helpers import run_in_process

    starts = {}
    train_arm = pipeline.train_arm

    def recording(task, arm, **kwargs):
        starts[(arm.stage, arm.name)] = {k: v.detach().clone() for k, v in arm.model.state_dict().items()}
        return train_arm(task, arm, **kwargs)

    monkeypatch.setattr(pipeline, "train_arm", recording)
    config = copy.deepcopy(tiny_config)
    data = config.pop("data")
    config.pop("strategy"), config.pop("baseline")
    config["train"]["epochs"] = 1
    pretext = {"epochs": 1, "keep": "last"}
    config["stages"] = [
        {"name": "rotation", "data": data, "strategy": {"name": "rotation"}, "train": pretext},
        {
            "name": "simclr",
            "data": data,
            "strategy": {"name": "simclr", "args": {"hidden": 16, "out": 8}},
            "train": pretext,
        },
        {
            "name": "target",
            "data": data,
            "init_from": "rotation",
            "strategy": {"name": "fine-tune", "backbone_lr_mult": 1.0},
            "baseline": {"name": "scratch"},
        },
    ]
    run = tmp_path / "run"
    summary = run_in_process(config, run)
    assert set(summary["stages"]) == {"rotation", "simclr", "target"}

    arms = run / "arms"
    pretext_model, _ = load_tensors(arms / "rotation/rotation/seed0/model.safetensors")
    for stage, head in (("rotation", ROTATION_HEAD), ("simclr", PROJECTION_HEAD)):
        own, meta = load_tensors(arms / f"{stage}/{stage}/seed0/own.safetensors")
        assert own and all(k.startswith(head + ".") for k in own), sorted(own)
        assert meta["parts"][head]["owner"] == "strategy"
        # the saved pretext model loads back: the strategy re-adds its head
        _, model, _ = load_run_model(get_plugin_manager().registries, run, stage=stage, arm=stage)
        assert head in model.parts
        state = model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in own.items())

    backbone = {k: v for k, v in pretext_model.items() if k.startswith("backbone.")}
    assert backbone and any(k.startswith(ROTATION_HEAD + ".") for k in pretext_model)
    fine_tune, scratch = starts[("target", "fine-tune")], starts[("target", "scratch")]
    for key, tensor in backbone.items():
        assert torch.equal(fine_tune[key], tensor), key
    weights = [k for k in backbone if k.endswith(".weight")]
    assert not any(torch.equal(scratch[k], backbone[k]) for k in weights)
    # the target's models hold the task's parts only: no pretext head was carried over
    assert not any(k.startswith((ROTATION_HEAD, PROJECTION_HEAD)) for k in fine_tune)
    assert not (arms / "target/fine-tune/seed0/own.safetensors").exists()


# ---------------------------------------------------------------------- registration
def test_the_image_plugin_registers_both_strategies_and_the_pipeline(tmp_path):
    registries = get_plugin_manager().registries
    for name, cls in (("rotation", Rotation), ("simclr", SimCLR)):
        entry = registries.strategies.entry(name)
        assert entry.obj is cls and entry.plugin == "image_classification" and entry.description
    entry = registries.pipelines.entry("ssl-shapes")
    assert entry.plugin == "image_classification" and Path(entry.obj).is_file()
    from tlengine.config import read_yaml

    config = validate(read_yaml(Path(entry.obj)), registries, Path(entry.obj).parent)
    stages = {s.name: s for s in config.stages}
    assert stages["target-simclr"].init_from == "simclr" and stages["target-rotation"].init_from == "rotation"
    assert all(stages[s].train.keep == "last" for s in ("rotation", "simclr"))
