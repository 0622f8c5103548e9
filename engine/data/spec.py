"""A registered dataset: its argument schema and the function that builds it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel


@dataclass
class DatasetSpec:
    """What ``tlengine_register_datasets`` adds.

    name: what pipelines write in ``data.dataset``.
    task: the task name whose ``build_data`` understands what ``build`` returns.
    tasks: other tasks whose ``build_data`` understands the same samples (e.g. speech
        recognition's utterances also serve speaker identification).
    args: pydantic model (``extra="forbid"``) that validates ``data.args``.
    build: ``build(args, root)`` -> the task's raw dataset (e.g. a list of samples and
        class names). ``root`` is the resolved ``data.root`` (or the pipeline's folder).
        Raises DataError for missing, empty or corrupt data.
    """

    name: str
    task: str
    args: type[BaseModel]
    build: Callable[[Any, Path], Any]
    description: str = ""
    tasks: tuple[str, ...] = ()
