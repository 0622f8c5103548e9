"""The feature cache as a task contract: what a task caches per sample (a pooled vector,
a token sequence with its length, or a map) comes back exactly as the live frozen part
computes it, whatever the padding of the batch it was extracted in."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

import pytest
import torch
from tlengine.config import CacheConfig
from tlengine.kernels import extension_available
from tlengine.model import TransferModel
from tlengine.task import CacheSpec, Evaluation, Task, TaskData
from tlengine.training.feature_cache import CachedFeatures
from torch import nn
from torch.utils.data import Dataset

D = 6
KERNELS = ["torch"] + (["fused"] if extension_available() else [])


class Sequences(Dataset):
    """Variable-length token sequences [L_i, D] with a label."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.items = [torch.randn(int(torch.randint(2, 9, (1,), generator=g)), D, generator=g) for _ in range(n)]
        self.labels = [i % 2 for i in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.items[i], self.labels[i]


def pad(seqs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in seqs])
    x = torch.zeros(len(seqs), int(lengths.max()), D)
    for i, s in enumerate(seqs):
        x[i, : len(s)] = s
    return {"x": x, "lengths": lengths}


class SeqModel(TransferModel):
    def forward_features(self, inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self.run_part("encoder", inputs["x"]), inputs["lengths"]


class SeqTask(Task):
    name = "toy-sequences"
    pretrained_parts = ("encoder",)
    spec = CacheSpec()

    def build_model(self, model: Any, info: dict[str, Any], *, init: Mapping[str, bool], base_dir: Path) -> SeqModel:
        m = SeqModel()
        encoder = nn.Sequential(nn.Linear(D, D), nn.Tanh())
        m.add_part("encoder", encoder, blocks=[("0", encoder)])
        m.add_part("head", nn.Linear(D, 2))
        m.arch = "toy-seq"
        return m

    def preprocessing(self, model: Any, *, init: Mapping[str, bool], base_dir: Path) -> dict[str, Any]:
        return {}

    def build_data(self, data: Any, **kw: Any) -> TaskData:
        raise NotImplementedError

    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        return nn.functional.cross_entropy(outputs, targets)

    def evaluate(self, model: Any, loader: Any, device: torch.device, info: dict[str, Any]) -> Evaluation:
        return Evaluation({})

    def cache_spec(self, model: TransferModel) -> CacheSpec:
        return self.spec

    def targets(self, dataset: Dataset) -> torch.Tensor:
        return torch.tensor(dataset.labels)

    def dataset_fingerprint(self, dataset: Dataset) -> str:
        return str(sum(float(s.sum()) for s in dataset.items))

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
        input_format: Any = None,
        num_workers: int = 0,
    ) -> Iterator[tuple[Any, torch.Tensor]]:
        for chunk in indices.split(batch_size):
            yield pad([dataset.items[i] for i in chunk.tolist()]), chunk


def cached(spec: CacheSpec, kernels: str, batch_size: int = 3) -> tuple[CachedFeatures, TransferModel, TaskData]:
    task = SeqTask(registries=None)
    task.spec = spec
    torch.manual_seed(0)
    model = task.build_model(None, {}, init={}, base_dir=Path("."))
    data = TaskData(Sequences(10, 1), Sequences(4, 2), Sequences(5, 3))
    served = CachedFeatures(
        task, model, data, CacheConfig(kernels=kernels), device=torch.device("cpu"), seed=0, batch_size=batch_size
    )
    served.prepare()
    return served, model, data


def live(model: TransferModel, seq: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.part("encoder").module(seq)


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("pooling", ["avg", "max", "cls"])
def test_padded_sequences_pool_under_their_mask(kernels, pooling):
    served, model, data = cached(CacheSpec("vector", pooling), kernels)
    [(inputs, targets)] = list(served.eval_loader("test", batch_size=5))
    assert inputs.shape == (5, D) and targets.tolist() == data.test.labels
    for i, seq in enumerate(data.test.items):
        h = live(model, seq)
        expected = {"avg": h.mean(0), "max": h.max(0).values, "cls": h[0]}[pooling]
        torch.testing.assert_close(inputs[i], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize(
    "spec",
    [CacheSpec("vector", "avg"), CacheSpec("vector", "max"), CacheSpec("sequence", max_tokens=8)],
    ids=["avg", "max", "sequence"],
)
def test_padding_does_not_change_cached_features(kernels, spec):
    """The same sequences extracted in batches of 1 (no padding) and of 5 (padded) agree."""
    alone, _, _ = cached(spec, kernels, batch_size=1)
    padded, _, _ = cached(spec, kernels, batch_size=5)
    a = next(iter(alone.eval_loader("test", batch_size=5)))[0]
    b = next(iter(padded.eval_loader("test", batch_size=5)))[0]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernels", KERNELS)
def test_sequence_layout_keeps_tokens_and_lengths(kernels):
    served, model, data = cached(CacheSpec("sequence", max_tokens=8), kernels)
    [((feats, lengths), _)] = list(served.eval_loader("test", batch_size=5))
    assert feats.shape == (5, 8, D)
    assert lengths.tolist() == [len(s) for s in data.test.items]
    for i, seq in enumerate(data.test.items):
        torch.testing.assert_close(feats[i, : len(seq)], live(model, seq), rtol=1e-5, atol=1e-6)
        assert torch.count_nonzero(feats[i, len(seq) :]) == 0


def test_sequence_layout_needs_max_tokens():
    with pytest.raises(Exception, match="max_tokens"):
        cached(CacheSpec("sequence"), "torch")


class MapModel(TransferModel):
    def forward_features(self, inputs: Any) -> torch.Tensor:
        return self.run_part("encoder", inputs)


@pytest.mark.parametrize("kernels", KERNELS)
def test_map_layout_returns_whole_maps(kernels):
    class MapTask(SeqTask):
        def build_model(self, model: Any, info: dict[str, Any], *, init: Mapping[str, bool], base_dir: Path):
            m = MapModel()
            encoder = nn.Conv2d(3, 4, 3, padding=1)
            m.add_part("encoder", encoder, blocks=[("0", encoder)])
            m.add_part("head", nn.Linear(4, 2))
            return m

        def extraction_batches(
            self, dataset, *, indices, view, seed, batch_size, preprocessing, kernels, train, input_format, num_workers
        ):
            for chunk in indices.split(batch_size):
                yield torch.stack([dataset.images[i] for i in chunk.tolist()]), chunk

    class Images(Sequences):
        def __init__(self, n: int, seed: int):
            super().__init__(n, seed)
            self.images = torch.randn(n, 3, 5, 7, generator=torch.Generator().manual_seed(seed))

    task = MapTask(registries=None)
    task.spec = CacheSpec("map")
    model = task.build_model(None, {}, init={}, base_dir=Path("."))
    data = TaskData(Images(6, 1), Images(0, 2), Images(4, 3))
    served = CachedFeatures(
        task, model, data, CacheConfig(kernels=kernels), device=torch.device("cpu"), seed=0, batch_size=3
    )
    served.prepare()
    feats, _ = next(iter(served.eval_loader("test", batch_size=4)))
    with torch.no_grad():
        torch.testing.assert_close(feats, model.part("encoder").module(data.test.images), rtol=1e-5, atol=1e-6)
