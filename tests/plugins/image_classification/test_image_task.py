"""The image task's own options and loss: what the core hands to the task."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from tlengine.config import DataConfig, ModelConfig, TrainConfig
from tlengine.plugins import get_plugin_manager
from tlengine_plugins.image_classification.task import ImageClassificationTask


def task(**train: object) -> ImageClassificationTask:
    return ImageClassificationTask(get_plugin_manager().registries, TrainConfig(**train))


def test_label_smoothing_is_applied_to_the_training_loss_only():
    torch.manual_seed(0)
    logits, targets = torch.randn(8, 5), torch.randint(0, 5, (8,))
    smooth = task(label_smoothing=0.2)
    loss = smooth.training_loss(lambda x: x, logits, targets)
    assert loss == pytest.approx(float(F.cross_entropy(logits, targets, label_smoothing=0.2)))
    assert loss != pytest.approx(float(F.cross_entropy(logits, targets)))
    # Validation loss (``loss``) stays the plain cross-entropy, comparable across arms.
    assert smooth.loss(logits, targets) == pytest.approx(float(F.cross_entropy(logits, targets)))


def test_task_options_live_in_data_and_model_and_are_validated_by_the_task():
    t = task()
    data = DataConfig(dataset="synthetic-shapes", augment="strong")
    model = ModelConfig(backbone="tiny-cnn", input_size=48, dropout=0.3)
    assert t.data_options(data).augment == "strong"
    assert (t.model_options(model).input_size, t.model_options(model).dropout) == (48, 0.3)
    assert t.data_options(DataConfig(dataset="x")).augment == "light"
    with pytest.raises(ValidationError, match="augmnet"):
        t.data_options(DataConfig(dataset="x", augmnet="none"))
    with pytest.raises(ValidationError, match="dropout"):
        t.model_options(ModelConfig(backbone="tiny-cnn", dropout=1.5))


def test_dropout_option_puts_dropout_before_the_head():
    model = task().build_model(
        ModelConfig(backbone="tiny-cnn", dropout=0.5, input_size=32),
        {"classes": ["a", "b"]},
        init={"backbone": False},
        base_dir=".",
    )
    assert isinstance(model.head[0], torch.nn.Dropout) and model.head[0].p == 0.5
    plain = task().build_model(
        ModelConfig(backbone="tiny-cnn", input_size=32), {"classes": ["a", "b"]}, init={"backbone": False}, base_dir="."
    )
    assert not any(isinstance(m, torch.nn.Dropout) for m in plain.head.modules())
