"""How frozen parts run (tlengine.execution): precision with its fp32 check, grad mode,
channels-last, compilation with fixed batches, and the compile: auto decision."""

from __future__ import annotations

import os

import pytest
import torch
from tlengine.config import ExtractionConfig, TrainConfig
from tlengine.execution import (
    Execution,
    _CompileRecords,
    _fixed_batch,
    configure_execution,
    min_cosine,
    native_reduced_dtype,
    resolve_precision,
)
from tlengine.model import Backbone, TransferModel
from torch import nn

CPU = torch.device("cpu")


def conv_model(seed: int = 0) -> TransferModel:
    torch.manual_seed(seed)
    body = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    model = TransferModel(Backbone(body, 16, [("stem", body[:3]), ("rest", body[3:])], {}, "toy"), nn.Linear(16, 4))
    return model.eval()


def frozen(model: TransferModel) -> TransferModel:
    model.frozen_parts = {"backbone"}
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    return model


def test_resolve_precision() -> None:
    assert resolve_precision("fp32", CPU) is None
    assert resolve_precision("bf16", CPU) is torch.bfloat16
    assert resolve_precision("fp16", CPU) is torch.float16
    assert resolve_precision("auto", CPU) is native_reduced_dtype(CPU)
    assert resolve_precision("bf16", CPU, task_allows=False) is None


def test_min_cosine_per_sample_and_zero_rows() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    assert min_cosine(a, a.clone()) == pytest.approx(1.0)
    b = torch.tensor([[0.0, 1.0], [0.0, 0.0], [1.0, 1.0]])  # first row orthogonal
    assert min_cosine(a, b) == pytest.approx(0.0, abs=1e-6)
    assert min_cosine((a, torch.tensor([3, 1, 2])), (a, None)) == pytest.approx(1.0)


def test_bf16_frozen_part_checked_against_fp32_and_outputs_float32() -> None:
    model = frozen(conv_model())
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        expected = model.backbone(x)
    execution = configure_execution(model, ExtractionConfig(precision="bf16", tolerance=0.99), device=CPU)
    with torch.no_grad():
        feats = model.forward_features(x)
        again = model.forward_features(x)
    assert feats.dtype == torch.float32 and again.dtype == torch.float32
    stats = execution.stats()["backbone"]
    assert stats["precision"] == "bf16" and stats["channels_last"] is True
    assert 0.99 <= stats["min_cosine_to_fp32"] < 1.0 + 1e-6
    assert min_cosine(expected, again) >= 0.99
    assert not torch.equal(again, expected)  # really ran in bf16
    assert model.backbone[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert execution.input_format().dtype == torch.bfloat16 and execution.input_format().channels_last


def test_reduced_precision_below_tolerance_falls_back_to_fp32_with_one_line() -> None:
    model = frozen(conv_model())
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        expected = model.backbone(x)
    lines: list[str] = []
    execution = configure_execution(
        model, ExtractionConfig(precision="bf16", tolerance=1.0, channels_last="off"), device=CPU, echo=lines.append
    )
    with torch.no_grad():
        first = model.forward_features(x)
        second = model.forward_features(x)
    assert len(lines) == 1 and "runs in fp32" in lines[0] and "backbone" in lines[0]
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(second, expected)
    assert execution.stats()["backbone"]["precision"] == "fp32"
    assert execution.stats()["backbone"]["fell_back_to_fp32"] is True


def test_task_that_forbids_reduced_precision_runs_fp32() -> None:
    model = frozen(conv_model())
    execution = configure_execution(model, ExtractionConfig(precision="bf16"), device=CPU, task_allows_reduced=False)
    with torch.no_grad():
        model(torch.randn(2, 3, 8, 8))
    assert execution.stats()["backbone"]["precision"] == "fp32"


def test_grad_mode_inference_when_evaluating_no_grad_when_training_a_head() -> None:
    model = frozen(conv_model())
    configure_execution(model, ExtractionConfig(precision="fp32"), device=CPU)
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        assert model.forward_features(x).is_inference()
    model.head.train()
    out = model(x)  # grad on: the frozen part under no_grad, the head trains
    assert not model.forward_features(x).is_inference()
    out.sum().backward()
    assert model.head.weight.grad is not None
    assert all(p.grad is None for p in model.backbone.parameters())


def test_channels_last_applies_to_trainable_conv_parts_and_training_works() -> None:
    model = conv_model()  # nothing frozen: fine-tuning
    execution = configure_execution(model, ExtractionConfig(channels_last="auto"), device=CPU)
    assert execution.parts["backbone"].channels_last and not execution.parts["head"].channels_last
    assert model.backbone[0].weight.is_contiguous(memory_format=torch.channels_last)
    model.train()
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    assert model.backbone[0].weight.grad is not None
    off = conv_model()
    configure_execution(off, ExtractionConfig(channels_last="off"), device=CPU)
    assert off.backbone[0].weight.is_contiguous()


def test_fixed_batch_pads_small_batches_and_chunks_large_ones() -> None:
    seen: list[int] = []

    def fn(x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append(x.shape[0])
        return x * 2, lengths + 1

    x = torch.arange(10.0).reshape(5, 2)
    lengths = torch.arange(5)
    out, lens = _fixed_batch(fn, (x, lengths), {}, 4)
    torch.testing.assert_close(out, x * 2)
    torch.testing.assert_close(lens, lengths + 1)
    assert seen == [4, 4]  # 5 = 4 + 1 padded to 4
    seen.clear()
    out, _ = _fixed_batch(fn, (x[:3], lengths[:3]), {}, 4)
    assert seen == [4] and out.shape[0] == 3


def test_compile_auto_decides_from_measured_time_and_records(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TLENGINE_CACHE_DIR", str(tmp_path))
    compiled: list[nn.Module] = []

    def fake_compile(module: nn.Module, **kwargs: object) -> nn.Module:
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    x = torch.randn(4, 3, 8, 8)

    def run(expected: int) -> Execution:
        model = frozen(conv_model())
        execution = configure_execution(model, ExtractionConfig(precision="fp32", compile="auto"), device=CPU)
        execution.expect(expected)
        with torch.no_grad():
            for _ in range(8):
                model.forward_features(x)
        return execution

    run(expected=40)  # a few samples: compiling (~30 s assumed) never pays
    assert compiled == []
    model = frozen(conv_model())
    execution = configure_execution(model, ExtractionConfig(precision="fp32", compile="auto"), device=CPU)
    signature = execution._signature(execution.parts["backbone"], model.backbone)
    _CompileRecords.put(signature, {"compile_seconds": 1e-9, "speedup": 2.0})
    assert _CompileRecords.get(signature)["speedup"] == 2.0
    run(expected=10_000)  # a warm compile cache costs nothing: it pays
    assert len(compiled) == 1
    records = _CompileRecords._all()
    assert records[signature]["compile_seconds"] is not None  # measured and written back


@pytest.mark.slow
def test_compiled_frozen_part_matches_eager_and_never_recompiles_per_batch(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TLENGINE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/tmp/not-this-one")  # as torch sets it after a compile
    monkeypatch.setattr("tlengine.execution._USER_INDUCTOR_DIR", None)
    torch._dynamo.reset()
    from torch._dynamo.utils import counters

    counters.clear()
    model = frozen(conv_model())
    x = torch.randn(6, 3, 16, 16)
    with torch.no_grad():
        expected = model.backbone(x)
    execution = configure_execution(model, ExtractionConfig(precision="fp32", compile="on"), device=CPU)
    with torch.no_grad():
        outs = [model.forward_features(x), model.forward_features(x), model.forward_features(x[:4])]
        outs.append(model.forward_features(x))
    assert execution.stats()["backbone"]["compiled"] is True
    for out in (outs[0], outs[1], outs[3]):
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outs[2], expected[:4], rtol=1e-4, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == 1  # the batch of 4 was padded, not recompiled
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")  # persists in tlengine's cache


def test_bare_on_off_in_yaml_mean_on_off() -> None:
    config = ExtractionConfig.model_validate({"channels_last": True, "compile": False})
    assert (config.channels_last, config.compile) == ("on", "off")
    assert TrainConfig.model_validate({"amp": True}).amp == "on"


# ---------------------------------------------------------------------- frozen blocks of a fine-tune
def block_model(seed: int = 0) -> TransferModel:
    """Three real blocks (each one a submodule the forward calls), BatchNorm in the top one."""
    torch.manual_seed(seed)
    body = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
        nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()),
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
    )
    blocks = [("b0", body[0]), ("b1", body[1]), ("b2", body[2])]
    return TransferModel(Backbone(body, 16, blocks, {}, "toy-blocks"), nn.Linear(16, 4))


def fine_tune(**kwargs):
    from tlengine.config import StrategyConfig
    from tlengine.strategies.fine_tune import FineTune

    return FineTune(StrategyConfig(name="fine-tune", **kwargs))


def test_frozen_blocks_of_a_fine_tune_run_bf16_checked_and_the_top_trains() -> None:
    model = block_model()
    x = torch.randn(4, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        fp32 = model.forward_features(x)
    execution = configure_execution(model, ExtractionConfig(precision="bf16", tolerance=0.99), device=CPU)
    strategy = fine_tune(unfreeze=1)
    strategy.apply(model, 1)
    assert "forward" in model.backbone[0].__dict__ and "forward" in model.backbone[1].__dict__
    assert "forward" not in model.backbone[2].__dict__  # the trained block stays plain fp32
    with torch.no_grad():
        reduced = model.forward_features(x)
    assert reduced.dtype == torch.float32
    assert not torch.equal(reduced, fp32) and min_cosine(fp32, reduced) >= 0.99
    execution.release()
    assert all("forward" not in m.__dict__ for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), fp32)

    model = block_model()
    execution = configure_execution(model, ExtractionConfig(precision="bf16", tolerance=0.99), device=CPU)
    strategy.apply(model, 1)
    strategy.train_mode(model)
    out = model(x)  # the first training call: the check runs first, in eval mode
    assert int(model.backbone[2][1].num_batches_tracked) == 1  # one training forward moved BatchNorm
    out.sum().backward()
    assert model.backbone[2][0].weight.grad is not None and model.head.weight.grad is not None
    assert all(p.grad is None for p in model.backbone[0].parameters())
    stats = execution.stats()["backbone"]["frozen_blocks"]
    assert stats["count"] == 2 and stats["precision"] == "bf16" and stats["modules_reduced"] == 2
    assert 0.99 <= stats["min_cosine_to_fp32"] <= 1.0


def test_frozen_blocks_beyond_tolerance_fall_back_to_fp32_with_one_line() -> None:
    model = block_model()
    x = torch.randn(4, 3, 16, 16)
    lines: list[str] = []
    execution = configure_execution(
        model, ExtractionConfig(precision="bf16", tolerance=1.0), device=CPU, echo=lines.append
    )
    strategy = fine_tune(unfreeze=1)
    strategy.apply(model, 1)
    model.eval()
    with torch.enable_grad():
        out = model.forward_features(x)
    execution.release()
    with torch.no_grad():
        torch.testing.assert_close(out.detach(), model.forward_features(x))
    assert len(lines) == 1 and "frozen blocks of part 'backbone'" in lines[0] and "fp32" in lines[0]
    stats = execution.stats()["backbone"]["frozen_blocks"]
    assert stats["precision"] == "fp32" and stats["fell_back_to_fp32"] is True
    strategy.apply(model, 2)  # a fallen-back part stays fp32 in later epochs
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_gradual_unfreezing_shrinks_the_reduced_blocks_and_whole_frozen_parts_keep_their_own_path() -> None:
    from tlengine.config import GradualUnfreezing

    model = block_model()
    execution = configure_execution(model, ExtractionConfig(precision="bf16"), device=CPU)
    strategy = fine_tune(gradual_unfreezing=GradualUnfreezing(start_epoch=1, every_epochs=1))
    wrapped = lambda: [i for i in range(3) if "forward" in model.backbone[i].__dict__]  # noqa: E731
    strategy.apply(model, 1)
    assert wrapped() == [0, 1, 2]  # nothing thawed yet: every block frozen
    strategy.apply(model, 2)
    assert wrapped() == [0, 1]
    strategy.apply(model, 4)
    assert wrapped() == []
    fe = frozen_strategy()
    fe.apply(model, 1)  # feature extraction: the whole part is frozen and runs through Execution.run
    assert model.frozen_parts == {"backbone"} and wrapped() == []
    assert execution.parts["backbone"].most_frozen_blocks == 3


def frozen_strategy():
    from tlengine.config import StrategyConfig
    from tlengine.strategies.feature_extraction import FeatureExtraction

    return FeatureExtraction(StrategyConfig(name="feature-extraction"))


def test_a_frozen_block_holding_a_trained_adapter_stays_fp32() -> None:
    model = block_model()
    adapter = nn.Conv2d(8, 8, 1)
    model.backbone[0].append(adapter)
    model.add_part("adapter", adapter, owner="strategy", attached=True)
    configure_execution(model, ExtractionConfig(precision="bf16"), device=CPU)
    fine_tune(unfreeze=1).apply(model, 1)
    assert "forward" not in model.backbone[0].__dict__ and "forward" in model.backbone[1].__dict__


class _HiddenStates(nn.Module):
    """A frozen encoder that answers like a transformers model: a ``ModelOutput``."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> object:
        from transformers.modeling_outputs import BaseModelOutput

        return BaseModelOutput(last_hidden_state=self.proj(x))


def test_a_frozen_part_answering_a_model_output_keeps_its_type() -> None:
    """The plugins read ``.last_hidden_state``; a plain dict in its place would break them."""
    model = frozen(conv_model())
    execution = configure_execution(model, ExtractionConfig(precision="fp32"), device=CPU)
    encoder = _HiddenStates().eval().requires_grad_(False)
    x = torch.randn(2, 3, 4)
    for _ in range(2):  # the first (checked) call and the plain ones after it
        out = execution.run("backbone", encoder, True, (x,), {})
        assert type(out).__name__ == "BaseModelOutput"
        assert torch.equal(out.last_hidden_state, encoder.proj(x)) and out.last_hidden_state.dtype == torch.float32
