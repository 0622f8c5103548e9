"""Shared fixtures: a tiny pipeline every end-to-end test can run in seconds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# Tests must never reach for the network.
os.environ.setdefault("TLENGINE_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY = {
    "name": "tiny",
    "task": "image-classification",
    "seed": 0,
    "data": {
        "dataset": "synthetic-shapes",
        "args": {"shapes": ["circle", "square", "triangle"], "per_class": 10, "size": 32, "seed": 3},
        "val_fraction": 0.2,
        "test_fraction": 0.3,
    },
    "model": {"backbone": "tiny-cnn", "weights": None, "input_size": 32},
    "strategy": {"name": "fine-tune", "backbone_lr_mult": 0.5},
    "baseline": {"name": "scratch"},
    "train": {"epochs": 2, "batch_size": 8, "lr": 0.01},
}


@pytest.fixture
def tiny_config() -> dict:
    """A fresh deep copy of the tiny pipeline as plain data."""
    return yaml.safe_load(yaml.safe_dump(TINY))


@pytest.fixture
def write_pipeline(tmp_path: Path):
    """write_pipeline(data, name='p.yaml') -> path of a YAML file in tmp_path."""

    def write(data: dict, name: str = "pipeline.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


def run_cli(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run ``tlengine ARGS`` in a subprocess (as a user would), capturing output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "tlengine", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_cli
