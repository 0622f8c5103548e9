"""What LHUC and adapters share: choosing hidden layers and changing their outputs in place.

A strategy that changes a layer's output without touching its weights registers a
forward hook on the layer (:class:`tlengine.model.HiddenLayer`); the hook replaces the
output ``h`` [..., D] with ``module(h)``. The base weights are never modified and their
state-dict names never change, so the pretrained file loads as it is and the strategy's
parameters are saved alone (``own.safetensors``).
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from ..errors import TLEngineError
from ..model import HiddenLayer, TransferModel


class LayerChoice(BaseModel):
    """Which hidden layers a strategy changes: the top ``layers`` of each part in ``parts``."""

    model_config = ConfigDict(extra="forbid")

    parts: list[str] | None = Field(None, description="model parts to change (default: every part with hidden layers)")
    layers: Union[Literal["all"], int] = Field("all", description="how many layers per part, from the top, or all")

    @field_validator("layers")
    @classmethod
    def _positive(cls, v: Any) -> Any:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be 'all' or a layer count >= 1")
        return v


def choose_layers(model: TransferModel, choice: LayerChoice, strategy: str) -> list[HiddenLayer]:
    """The hidden layers ``choice`` selects, input side first; raises naming what is missing."""
    layers = model.hidden_layers()
    if not layers:
        raise TLEngineError(
            f"strategy '{strategy}' changes hidden layers, and this task's model lists none (TransferModel.hidden_layers)"
        )
    available = list(dict.fromkeys(layer.part for layer in layers))
    parts = choice.parts or available
    unknown = [p for p in parts if p not in available]
    if unknown:
        raise TLEngineError(
            f"strategy '{strategy}': part(s) {', '.join(unknown)} have no hidden layers; "
            f"choose from {', '.join(available)}"
        )
    chosen = []
    for part in parts:
        own = [layer for layer in layers if layer.part == part]
        chosen += own if choice.layers == "all" else own[-choice.layers :]
    return chosen


class OutputHook:
    """A forward hook that passes a layer's output through ``module`` (tuples: the first item)."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __call__(self, layer: nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (self.module(output[0]), *output[1:])
        return self.module(output)


def hook_layers(model: TransferModel, layers: list[HiddenLayer], modules: nn.ModuleDict) -> None:
    """Register ``modules[key]`` on each layer (key: the layer's name with '.' -> '__', since
    module names may not hold dots). Hooks live as long as the model."""
    for layer in layers:
        layer.module.register_forward_hook(OutputHook(modules[module_key(layer)]))


def module_key(layer: HiddenLayer) -> str:
    return layer.name.replace(".", "__")
