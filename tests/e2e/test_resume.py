"""Resume, as the README promises it: after a failure (status.json says failed, with the
error and the resume command) and after SIGKILL at any point — during feature extraction
into a disk cache, during the source stage, during the scratch arm — the resumed run
ends with the metrics of an uninterrupted run.

The SIGKILLs are deterministic: a child process runs the pipeline with a hook that arms
a trigger, and kills itself at a chosen optimizer step or cache write, so the kill lands
mid-epoch (or mid-extraction) on every machine, however fast.
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
import yaml
from conftest import TINY
from tlengine import hookimpl
from tlengine.pipeline import Runner
from tlengine.plugins import PluginInfo, PluginManager, get_plugin_manager
from tlengine.validation import LoadedPipeline, validate

pytestmark = pytest.mark.slow


def tiny(**train: Any) -> dict[str, Any]:
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["train"].update({"epochs": 3, **train})
    return config


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


def assert_same_results(resumed: dict[str, Any], reference: dict[str, Any], run: Path, ref_run: Path) -> None:
    """Every stage's every arm: the same test metrics, per seed; the same epochs logged."""
    assert list(resumed["stages"]) == list(reference["stages"])
    for stage, entry in reference["stages"].items():
        assert list(resumed["stages"][stage]["arms"]) == list(entry["arms"])
        for name, arm in entry["arms"].items():
            got = resumed["stages"][stage]["arms"][name]
            for seed, metrics in arm["per_seed"].items():
                assert got["per_seed"][seed] == pytest.approx(metrics, abs=1e-6), (stage, name, seed)
            assert got["best_epoch"] == arm["best_epoch"] and got["epochs"] == arm["epochs"], (stage, name)
    lines, ref_lines = records(run), records(ref_run)
    key = ("stage", "arm", "seed", "epoch")
    assert [tuple(r[k] for k in key) for r in lines] == [tuple(r[k] for k in key) for r in ref_lines]
    for got, want in zip(lines, ref_lines):
        assert got["train_loss"] == pytest.approx(want["train_loss"], abs=1e-6), tuple(got[k] for k in key)
        assert got["lr"] == pytest.approx(want["lr"]), tuple(got[k] for k in key)
    assert status(run) == {"state": "complete"}
    assert not list(run.rglob("state.safetensors")) and not list(run.rglob("best.safetensors"))


# ----------------------------------------------------------------------------- a failure
class FailAt:
    """A plugin hook that raises (a bug, a full disk...) after ``epoch`` of ``arm``."""

    def __init__(self, arm: str, epoch: int):
        self.where = (arm, epoch)

    @hookimpl
    def tlengine_on_epoch_end(self, run_dir: Path, arm: str, epoch: int, metrics: dict[str, Any]) -> None:
        if (arm, epoch) == self.where:
            raise RuntimeError("disk quota exceeded in the exporter")


def test_failed_run_says_so_in_status_json_and_resumes_to_completion(tmp_path):
    config = tiny()
    reference = run_in_process(config, tmp_path / "reference")
    manager = PluginManager()
    manager.load_entry_points()
    manager.register(FailAt("scratch", 2), PluginInfo("fail", "tests", "0", "tests"))
    run = tmp_path / "failed"
    with pytest.raises(RuntimeError, match="disk quota"):
        run_in_process(config, run, manager)
    assert status(run) == {
        "state": "failed",
        "error": "RuntimeError: disk quota exceeded in the exporter",
        "resume": f"tlengine run --resume {run}",
    }
    assert not (run / "metrics.json").exists() and not (run / "checkpoint.safetensors").exists()
    assert (run / "arms" / "main" / "fine-tune" / "seed0" / "result.json").is_file()
    assert (run / "arms" / "main" / "scratch" / "seed0" / "state.safetensors").is_file()

    resumed, said, trained = resume(run)
    assert "[fine-tune] already finished; skipping" in said
    assert trained == [("main", "scratch", 3)]  # continues after the last saved epoch
    assert_same_results(resumed, reference, run, tmp_path / "reference")


# ----------------------------------------------------------------------------- SIGKILL
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

        real_step = Strategy.training_step

        def training_step(self, step):
            if steps["armed"]:
                steps["count"] += 1
                if steps["count"] == where["n"]:
                    die()
            return real_step(self, step)

        Strategy.training_step = training_step
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


def test_kill_during_the_scratch_arm(tmp_path):
    config = tiny()
    reference = run_in_process(config, tmp_path / "reference")
    run = tmp_path / "killed"
    run_and_kill(config, run, {"kind": "step", "after": ["main", "scratch", 1], "n": 2})  # 2nd step of epoch 2
    assert (run / "arms" / "main" / "fine-tune" / "seed0" / "result.json").is_file()
    assert (run / "arms" / "main" / "scratch" / "seed0" / "state.safetensors").is_file()
    assert not (run / "arms" / "main" / "scratch" / "seed0" / "result.json").exists()
    assert [(r["arm"], r["epoch"]) for r in records(run)] == [
        ("fine-tune", 1),
        ("fine-tune", 2),
        ("fine-tune", 3),
        ("scratch", 1),
    ]

    resumed, said, trained = resume(run)
    assert "[fine-tune] already finished; skipping" in said
    assert trained == [("main", "scratch", 2), ("main", "scratch", 3)]  # epoch 2 again, from epoch 1's state
    assert_same_results(resumed, reference, run, tmp_path / "reference")


def test_kill_during_the_source_stage(tmp_path):
    config = tiny()
    config["source"] = {
        "data": {
            "dataset": "synthetic-shapes",
            "args": {"shapes": ["star", "cross", "hexagon", "ring"], "per_class": 12, "size": 32, "seed": 5},
            "val_fraction": 0.2,
            "test_fraction": 0.2,
            "augment": "none",
        },
        "train": {"epochs": 3, "batch_size": 8, "lr": 0.01},
    }
    config["compare"] = [{"name": "feature-extraction", "lr": 0.01}]
    config["train"]["epochs"] = 2
    reference = run_in_process(config, tmp_path / "reference")
    run = tmp_path / "killed"
    run_and_kill(config, run, {"kind": "step", "after": ["source", "source", 1], "n": 2})  # mid source epoch 2
    assert (run / "arms" / "source" / "source" / "seed0" / "state.safetensors").is_file()
    assert not (run / "arms" / "source" / "source" / "seed0" / "model.safetensors").exists()
    assert not list((run / "arms").glob("main/*/seed0/result.json"))
    assert [(r["stage"], r["epoch"]) for r in records(run)] == [("source", 1)]

    resumed, _, trained = resume(run)
    assert trained[:2] == [("source", "source", 2), ("source", "source", 3)]
    assert [t for t in trained if t[0] == "main"] == [
        ("main", arm, e) for arm in ("fine-tune", "feature-extraction", "scratch") for e in (1, 2)
    ]
    assert resumed["source"]["epochs"] == 3
    assert_same_results(resumed, reference, run, tmp_path / "reference")
    meta = json.loads((run / "arms" / "main" / "fine-tune" / "seed0" / "model.json").read_text())
    assert meta["init_from"] == "source" and meta["pretrained"] is True


def test_kill_during_feature_extraction_into_a_disk_cache(tmp_path):
    def config_with(root: Path) -> dict[str, Any]:
        config = tiny(batch_size=2, epochs=2)
        config["data"]["args"]["per_class"] = 80  # 120 training images: 60 writes of 2 rows
        config["strategy"] = {
            "name": "feature-extraction",
            "lr": 0.01,
            "cache": {"storage": "disk", "root": str(root), "kernels": "torch"},
        }
        return config

    reference = run_in_process(config_with(tmp_path / "cache-ref"), tmp_path / "reference")
    train_rows = reference["cache"]["feature-extraction"]["splits"]["train"]["rows"]
    assert train_rows == 120

    run, root = tmp_path / "killed", tmp_path / "cache-killed"
    run_and_kill(config_with(root), run, {"kind": "write", "n": 40})
    # every split's cache is opened before extraction starts (what is missing tells
    # compile: auto how much is left); the kill came while the train split was written
    opened = {
        json.loads((p / "meta.json").read_text())["key"]["dataset_fingerprint"].split(":")[0]: p
        for p in root.iterdir()
        if (p / "meta.json").is_file()
    }
    assert set(opened) == {"train", "val", "test"}
    cache_dir = opened["train"]
    meta = json.loads((cache_dir / "meta.json").read_text())
    assert not meta["complete"]
    assert not any(json.loads((opened[s] / "meta.json").read_text())["complete"] for s in ("val", "test"))
    committed = sum((cache_dir / "filled.bin").read_bytes())
    assert 0 < committed < train_rows, committed  # the cache folder has rows, not all of them
    assert not (run / "metrics.jsonl").read_text()  # killed before the first epoch

    resumed, _, trained = resume(run)
    assert trained == [("main", arm, e) for arm in ("feature-extraction", "scratch") for e in (1, 2)]
    train = resumed["cache"]["feature-extraction"]["splits"]["train"]
    assert train["rows_reused"] == committed and train["rows_extracted"] == train_rows - committed
    assert_same_results(resumed, reference, run, tmp_path / "reference")
    caches = [json.loads(m.read_text()) for m in root.glob("*/meta.json")]
    assert len(caches) == 3 and all(c["complete"] for c in caches)  # train, val, test
