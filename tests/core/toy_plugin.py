"""A toy non-image plugin for the core's contract tests (no torchvision anywhere).

Task ``toy-regression``: inputs are dicts ``{"x": float [N,8]}``, targets are plain Python
lists of floats, the primary metric ``mse`` is lower-is-better. The model has two
pretrained parts, ``encoder`` and ``decoder`` (two blocks each), and a new ``head``.
``model.weights`` is a safetensors file with ``encoder.*`` / ``decoder.*`` tensors.

Dataset ``toy-points``: y = sum(w * x) + shift, deterministic in ``seed``; ``shift``
moves the target domain; ``unlabelled: true`` gives targets of NaN (never to be used).

Strategies: ``toy-adapter`` (a residual adapter attached inside the encoder, everything
else frozen; saved alone), ``toy-two-domain`` (its own step: the task loss plus a
feature-matching loss on a batch of the stage's ``unlabelled`` extra dataset, weighted
by ``strategy.args.weight`` and ramped by training progress).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file
from tlengine import hookimpl
from tlengine.data import DatasetSpec
from tlengine.model import HiddenLayer, TransferModel
from tlengine.strategies import Strategy
from tlengine.strategies.base import StepContext
from tlengine.task import Evaluation, PredictInput, Task, TaskData
from torch import nn
from torch.utils.data import Dataset

DIM = 8


class Points(Dataset):
    def __init__(self, x: torch.Tensor, y: list[float]):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[dict[str, torch.Tensor], float]:
        return {"x": self.x[i]}, self.y[i]


class PointsArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(60, ge=4)
    seed: int = 0
    shift: float = 0.0
    unlabelled: bool = False


def build_points(args: PointsArgs, root: Path) -> Points:
    g = torch.Generator().manual_seed(args.seed)
    w = torch.linspace(-1, 1, DIM)
    x = torch.randn(args.n, DIM, generator=g) + args.shift
    y = (x @ w + 0.1 * torch.randn(args.n, generator=g)).tolist()
    if args.unlabelled:
        y = [math.nan] * args.n
    return Points(x, y)


class ToyModel(TransferModel):
    def forward_features(self, inputs: Any) -> torch.Tensor:
        return self.run_part("encoder", inputs["x"])

    def forward_head(self, features: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.run_part("decoder", features).squeeze(-1)

    def hidden_layers(self) -> list[HiddenLayer]:
        """Both encoder blocks and the decoder's first (16 units each): where LHUC and adapters attach."""
        encoder, decoder = self.part("encoder").module, self.part("decoder").module
        return [
            HiddenLayer("encoder", "encoder.0", encoder[0], 16),
            HiddenLayer("encoder", "encoder.1", encoder[1], 16),
            HiddenLayer("decoder", "decoder.0", decoder[0], 16),
        ]


def build_toy_model(weights: str | None, init: Mapping[str, bool], base_dir: Path) -> ToyModel:
    model = ToyModel()
    encoder = nn.Sequential(nn.Sequential(nn.Linear(DIM, 16), nn.Tanh()), nn.Sequential(nn.Linear(16, 16), nn.Tanh()))
    decoder = nn.Sequential(nn.Sequential(nn.Linear(16, 16), nn.Tanh()), nn.Linear(16, 1))
    model.add_part("encoder", encoder, blocks=[("0", encoder[0]), ("1", encoder[1])])
    model.add_part("decoder", decoder, blocks=[("0", decoder[0]), ("1", decoder[1])])
    model.arch = "toy"
    if weights is not None:
        state = load_file(str(Path(base_dir) / weights))
        for name in ("encoder", "decoder"):
            if init.get(name):
                sub = {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")}
                model.part(name).module.load_state_dict(sub)
    return model


def _collate(samples: Sequence[tuple[dict[str, torch.Tensor], float]]) -> tuple[dict[str, torch.Tensor], list[float]]:
    return {"x": torch.stack([s[0]["x"] for s in samples])}, [float(s[1]) for s in samples]


class ToyTask(Task):
    name = "toy-regression"
    primary_metric = "mse"
    metric_directions = {"mse": "min", "mae": "min"}
    pretrained_parts = ("encoder", "decoder")
    accepts_text = True

    def build_model(self, model: Any, info: dict[str, Any], *, init: Mapping[str, bool], base_dir: Path) -> ToyModel:
        return build_toy_model(model.weights, init, base_dir)

    def preprocessing(self, model: Any, *, init: Mapping[str, bool], base_dir: Path) -> dict[str, Any]:
        return {}

    def build_data(self, data: Any, *, preprocessing: dict[str, Any], base_dir: Path, seed: int) -> TaskData:
        spec = self.registries.datasets.get(data.dataset)
        points = spec.build(spec.args.model_validate(data.args), base_dir)
        n = len(points)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        n_test, n_val = int(n * data.test_fraction), int(n * data.val_fraction)
        test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
        sub = lambda idx: Points(points.x[idx], [points.y[i] for i in idx])  # noqa: E731
        return TaskData(sub(train), sub(val), sub(test), info={"dim": DIM})

    def collate(self, samples: Sequence[Any]) -> tuple[Any, Any]:
        return _collate(samples)

    def loss(self, outputs: torch.Tensor, targets: list[float]) -> torch.Tensor:
        return torch.nn.functional.mse_loss(outputs, torch.tensor(targets, device=outputs.device))

    def evaluate(self, model: Any, loader: Any, device: torch.device, info: dict[str, Any]) -> Evaluation:
        preds, trues = [], []
        for batch in loader:
            inputs, targets = self.move_to(batch, device)
            preds.append(model(inputs).float().cpu())
            trues += list(targets)
        p, t = torch.cat(preds), torch.tensor(trues)
        return Evaluation({"mse": float(((p - t) ** 2).mean()), "mae": float((p - t).abs().mean())})

    def predict(
        self,
        model: Any,
        inputs: Sequence[PredictInput],
        info: dict[str, Any],
        *,
        options: Mapping[str, Any],
        device: torch.device | None = None,
    ) -> list[dict[str, Any]]:
        out = []
        for item in inputs:
            x = torch.tensor([float(v) for v in item.value.split(",")]).reshape(1, DIM)
            with torch.no_grad():
                out.append({"input": item.value, "value": float(model({"x": x})[0])})
        return out

    def render_prediction(self, result: dict[str, Any]) -> str:
        return f"{result['input']} -> {result['value']:.3f}"


class AdapterArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bottleneck: int = Field(4, ge=1)


class ToyAdapter(Strategy):
    """A residual bottleneck adapter after encoder block 1 (a forward hook, so the base's
    state-dict keys stay as they are); every pretrained block frozen."""

    name = "toy-adapter"
    Args = AdapterArgs

    def trainable_blocks(self, num_blocks: int, epoch: int) -> int:
        return 0

    def prepare(self, model: TransferModel, data: TaskData | None) -> None:
        adapter = nn.Sequential(nn.Linear(16, self.args.bottleneck), nn.ReLU(), nn.Linear(self.args.bottleneck, 16))
        nn.init.zeros_(adapter[2].weight)  # starts as the identity
        nn.init.zeros_(adapter[2].bias)
        model.add_part("adapter", adapter, owner="strategy")
        model.part("encoder").module[1].register_forward_hook(lambda mod, args, out: out + adapter(out))


class TwoDomainArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weight: float = Field(0.5, ge=0.0)


class ToyTwoDomain(Strategy):
    """Task loss on labelled data + feature-mean matching on an unlabelled batch."""

    name = "toy-two-domain"
    Args = TwoDomainArgs
    extra_data = ("unlabelled",)
    unlabelled_batches: list[int] = []
    progress_seen: list[float] = []

    def trainable_blocks(self, num_blocks: int, epoch: int) -> int:
        return num_blocks

    def training_step(self, step: StepContext) -> dict[str, torch.Tensor]:
        model = step.full_model
        source_feats = model.forward_features(step.inputs)
        task_loss = step.task.loss(model.forward_head(source_feats), step.targets)
        unlabelled, targets = step.extra_batch("unlabelled")
        assert all(math.isnan(t) for t in targets)
        type(self).unlabelled_batches.append(len(targets))
        type(self).progress_seen.append(step.progress)
        target_feats = model.forward_features(unlabelled)
        match = (source_feats.mean(0) - target_feats.mean(0)).pow(2).sum()
        return {"task": task_loss, "match": self.args.weight * step.progress * match}


@hookimpl
def tlengine_register_tasks(tasks: Any) -> None:
    tasks.add(ToyTask.name, ToyTask)


@hookimpl
def tlengine_register_backbones(backbones: Any) -> None:
    backbones.add("toy-encdec", lambda **kw: None, description="encoder + decoder MLP of the toy task")


@hookimpl
def tlengine_register_datasets(datasets: Any) -> None:
    datasets.add("toy-points", DatasetSpec("toy-points", ToyTask.name, PointsArgs, build_points))


@hookimpl
def tlengine_register_strategies(strategies: Any) -> None:
    strategies.add(ToyAdapter.name, ToyAdapter)
    strategies.add(ToyTwoDomain.name, ToyTwoDomain)
