"""Kill-and-resume helpers shared by the resume tests of every task.

``run_and_kill`` runs a pipeline in a child process that SIGKILLs itself at a chosen
optimizer step or feature-cache write; ``resume`` continues the run in-process; and
``assert_same_results`` checks it ended with the metrics of an uninterrupted run.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from tlengine import hookimpl
from tlengine.pipeline import Runner
from tlengine.plugins import PluginInfo, PluginManager, get_plugin_manager
from tlengine.validation import LoadedPipeline, validate


def records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def status(run: Path) -> dict[str, Any]:
    return json.loads((run / "status.json").read_text())


def run_in_process(config: dict[str, Any], out: Path, manager: PluginManager | None = None) -> dict[str, Any]:
    manager = manager or get_plugin_manager()
    loaded = LoadedPipeline(validate(config, manager.registries, out.parent), out.parent, "test")
    Runner(manager, echo=lambda s: None).run(loaded, output=out)
    return json.loads((out / "metrics.json").read_text())


class Epochs:
    """Records (stage, arm, epoch) of every epoch trained."""

    def __init__(self) -> None:
        self.trained: list[tuple[str, str, int]] = []

    @hookimpl
    def tlengine_on_epoch_end(self, run_dir: Path, arm: str, epoch: int, metrics: dict[str, Any]) -> None:
        self.trained.append((metrics["stage"], arm, epoch))


def resume(run: Path) -> tuple[dict[str, Any], list[str], list[tuple[str, str, int]]]:
    """Resume in-process: (metrics.json, progress lines, the epochs trained by the resume)."""
    said: list[str] = []
    epochs = Epochs()
    manager = PluginManager()
    manager.load_entry_points()
    manager.register(epochs, PluginInfo("epochs", "tests", "0", "tests"))
    Runner(manager, echo=said.append).resume(run)
    return json.loads((run / "metrics.json").read_text()), said, epochs.trained


def assert_same_results(
    resumed: dict[str, Any], reference: dict[str, Any], run: Path, ref_run: Path, *, tol: float = 1e-6
) -> None:
    """Every stage's every arm: the same test metrics (within ``tol``), per seed; the same
    epochs logged."""
    assert list(resumed["stages"]) == list(reference["stages"])
    for stage, entry in reference["stages"].items():
        assert list(resumed["stages"][stage]["arms"]) == list(entry["arms"])
        for name, arm in entry["arms"].items():
            got = resumed["stages"][stage]["arms"][name]
            for seed, metrics in arm["per_seed"].items():
                assert got["per_seed"][seed] == pytest.approx(metrics, abs=tol), (stage, name, seed)
            assert got["best_epoch"] == arm["best_epoch"] and got["epochs"] == arm["epochs"], (stage, name)
    lines, ref_lines = records(run), records(ref_run)
    key = ("stage", "arm", "seed", "epoch")
    assert [tuple(r[k] for k in key) for r in lines] == [tuple(r[k] for k in key) for r in ref_lines]
    for got, want in zip(lines, ref_lines):
        if "train_loss" not in want:  # an arm fitted in one call (zero-shot, TF-IDF) logs no steps
            assert "train_loss" not in got, tuple(got[k] for k in key)
            continue
        assert got["train_loss"] == pytest.approx(want["train_loss"], abs=tol), tuple(got[k] for k in key)
        assert got["lr"] == pytest.approx(want["lr"]), tuple(got[k] for k in key)
    assert status(run) == {"state": "complete"}
    assert not list(run.rglob("state.safetensors")) and not list(run.rglob("best.safetensors"))


# ----------------------------------------------------------------------------- a failure
KILLER = textwrap.dedent("""
    import json, os, signal, sys
    from pathlib import Path

    from tlengine import hookimpl
    from tlengine.cache.store import FeatureCache
    from tlengine.pipeline import Runner
    from tlengine.plugins import PluginInfo, get_plugin_manager
    from tlengine.strategies.base import Strategy
    from tlengine.validation import LoadedPipeline, validate

    config, out, where = json.loads(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
    steps = {"armed": False, "count": 0}

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if where["kind"] == "step":  # the n-th optimizer step after the end of (stage, arm, epoch)
        class Trigger:
            @hookimpl
            def tlengine_on_epoch_end(self, run_dir, arm, epoch, metrics):
                if [metrics["stage"], arm, epoch] == where["after"]:
                    steps["armed"] = True

        def counted(real):
            def training_step(self, step):
                if steps["armed"] and not steps.get("inside"):  # a super() call is the same step
                    steps["count"] += 1
                    if steps["count"] == where["n"]:
                        die()
                steps["inside"] = True
                try:
                    return real(self, step)
                finally:
                    steps["inside"] = False

            return training_step

        def subclasses(cls):
            for sub in cls.__subclasses__():
                yield sub
                yield from subclasses(sub)

        get_plugin_manager()  # import every plugin's strategies, then count whichever step runs
        for cls in [Strategy, *subclasses(Strategy)]:
            if "training_step" in cls.__dict__:
                cls.training_step = counted(cls.__dict__["training_step"])
        plugins = [Trigger()]
    else:  # the n-th write into the training split's feature cache
        real_write = FeatureCache.write

        def write(self, *args, **kwargs):
            if self.key.dataset_fingerprint.startswith("train:"):
                steps["count"] += 1
                if steps["count"] == where["n"]:
                    die()
            return real_write(self, *args, **kwargs)

        FeatureCache.write = write
        plugins = []

    manager = get_plugin_manager()
    for plugin in plugins:
        manager.register(plugin, PluginInfo("trigger", "tests", "0", "tests"))
    loaded = LoadedPipeline(validate(config, manager.registries, out.parent), out.parent, "killer")
    Runner(manager, echo=lambda s: None).run(loaded, output=out)
    sys.exit(3)  # never killed: the trigger did not fire
""")


def run_and_kill(config: dict[str, Any], out: Path, where: dict[str, Any]) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, json.dumps(config), str(out), json.dumps(where)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    assert status(out) == {"state": "running"}  # what SIGKILL leaves
    assert not (out / "metrics.json").exists()
