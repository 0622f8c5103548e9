"""Runs on two processes (torchrun, gloo on the CPU) against runs on one.

Tolerances, as the README states them: an arm that trains a head on a frozen backbone (cached
features, or the backbone run on every batch) gets the one-process results to 1e-5 (the same global batches, the same averaged gradients); arms whose
BatchNorm layers train normalise over each rank's part of a batch, so their runs drift apart
(on these 33 images: the first epoch's loss within 20 %, test accuracy within 20 points). Cached features are byte-identical.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import TINY
from resume_helpers import assert_same_results, records, status

pytestmark = pytest.mark.slow


def tlengine(*args: str, nproc: int = 1, timeout: int = 600) -> subprocess.CompletedProcess:
    extra = ["--nproc", str(nproc)] if nproc > 1 else []
    return subprocess.run(
        [sys.executable, "-m", "tlengine", "run", *extra, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # the same threads per process in both runs
    )


def write(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def config(cache_root: Path, **changes: Any) -> dict[str, Any]:
    """The tiny pipeline with a cached feature-extraction arm (on disk), a fine-tune and a
    scratch arm; batches of 10 over 33 training images, so the last batch is uneven."""
    c = yaml.safe_load(yaml.safe_dump(TINY))
    c["data"]["args"].update(per_class=16)
    c["data"]["augment"] = "none"
    c["strategy"] = {"name": "feature-extraction", "lr": 0.01, "cache": {"storage": "disk", "root": str(cache_root)}}
    c["compare"] = [
        # the frozen backbone runs on every batch: the task's own loader, split across the ranks
        {"name": "feature-extraction", "label": "live-head", "lr": 0.01, "cache": {"enabled": False}},
        {"name": "fine-tune", "backbone_lr_mult": 0.5},
    ]
    c["train"].update(epochs=3, batch_size=10)
    c["extraction"] = {"precision": "fp32"}
    c.update(changes)
    return c


def summary(run: Path) -> dict[str, Any]:
    return json.loads((run / "metrics.json").read_text())


def arm_result(run: Path, arm: str) -> dict[str, Any]:
    return json.loads((run / "arms" / "main" / arm / "seed0" / "result.json").read_text())


def test_two_processes_give_the_one_process_results(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = tlengine(str(write(tmp_path / "p1.yaml", config(tmp_path / "c1"))), "-o", str(one))
    r2 = tlengine(str(write(tmp_path / "p2.yaml", config(tmp_path / "c2"))), "-o", str(two), nproc=2)
    assert r1.returncode == 0, r1.stderr
    assert r2.returncode == 0, r2.stderr
    assert "(2 processes)" in r2.stderr and r2.stdout.count("vs baseline") == 1  # rank 0 alone prints
    # rank 0 alone writes: one line per arm and epoch, as one process writes
    lines1, lines2 = records(one), records(two)
    assert [(r["arm"], r["epoch"]) for r in lines2] == [(r["arm"], r["epoch"]) for r in lines1]
    for a, b in zip(lines1, lines2):
        if a["arm"] in ("feature-extraction", "live-head"):  # a head on frozen features: the same steps
            for k in ("train_loss", "val_loss", "val_accuracy"):
                assert b[k] == pytest.approx(a[k], abs=1e-5), (a["arm"], a["epoch"], k)
    s1, s2 = summary(one), summary(two)
    for arm in ("feature-extraction", "live-head"):
        assert s2["arms"][arm]["per_seed"]["0"] == pytest.approx(s1["arms"][arm]["per_seed"]["0"], abs=1e-5), arm
    for arm in ("fine-tune", "scratch"):  # BatchNorm over each rank's half of a batch: the runs drift apart
        first1, first2 = (next(r for r in lines if r["arm"] == arm) for lines in (lines1, lines2))
        assert first2["train_loss"] == pytest.approx(first1["train_loss"], rel=0.2), arm
        acc1, acc2 = (s["arms"][arm]["per_seed"]["0"]["accuracy"] for s in (s1, s2))
        assert abs(acc1 - acc2) <= 0.2, arm
    # the cache: extracted half by each rank, every row once, identical to one process's
    cache = arm_result(two, "feature-extraction")["cache"]
    by_rank = cache["rows_extracted_by_rank"]
    assert len(by_rank) == 2
    for split, stats in cache["splits"].items():
        assert sum(r[split] for r in by_rank) == stats["rows"] and min(r[split] for r in by_rank) > 0, split
    names = sorted(p.name for p in (tmp_path / "c1").iterdir() if p.name != ".locks")
    assert names == sorted(p.name for p in (tmp_path / "c2").iterdir() if p.name != ".locks")  # no shard left
    for name in names:
        assert (tmp_path / "c1" / name / "data.bin").read_bytes() == (tmp_path / "c2" / name / "data.bin").read_bytes()
        assert json.loads((tmp_path / "c2" / name / "meta.json").read_text())["complete"]
    # what rank 0 saved is a whole model: predict loads it
    assert (two / "checkpoint.safetensors").is_file()


def _rank_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    """The pid of the torchrun worker of ``rank`` started by ``launcher`` (Linux /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if parent == launcher.pid and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


def _kill_rank_when(launcher: subprocess.Popen, ready: Any, rank: int = 1, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert launcher.poll() is None, "the run ended before the moment to kill it"
        assert time.monotonic() < deadline, "timed out waiting for the moment to kill a rank"
        time.sleep(0.02)
    pid = _rank_pid(launcher, rank)
    assert pid is not None, f"no worker of rank {rank}"
    os.kill(pid, signal.SIGKILL)
    launcher.wait(timeout=120)


def _start(pipeline: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tlengine", "run", "--nproc", "2", str(pipeline), "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_kill_of_one_rank_mid_training_then_resume(tmp_path):
    """kill -9 of rank 1 during epoch 2: torchrun stops rank 0, the run is left resumable, and
    `--resume` on two processes ends with the metrics of a run that was never stopped."""
    # gradual unfreezing: what trains changes every epoch, so the DDP wrapper is rebuilt, resumed ones too
    strategy = {
        "name": "fine-tune",
        "backbone_lr_mult": 0.5,
        "gradual_unfreezing": {"start_epoch": 1, "every_epochs": 1},
    }
    c = config(tmp_path / "c", strategy=strategy, compare=[])
    c["data"]["args"].update(per_class=60, size=64)
    c["model"].update(backbone="resnet18", input_size=64)
    c["train"].update(epochs=3, batch_size=16)
    pipeline = write(tmp_path / "p.yaml", c)
    reference = tmp_path / "reference"
    done = tlengine(str(pipeline), "-o", str(reference), nproc=2)
    assert done.returncode == 0, done.stderr

    run = tmp_path / "run"
    launcher = _start(pipeline, run)
    _kill_rank_when(launcher, lambda: (run / "metrics.jsonl").is_file() and records(run))
    assert launcher.returncode != 0
    stderr = launcher.stderr.read() if launcher.stderr else ""
    assert "stopped with exit code" in stderr.strip().splitlines()[-1]
    assert status(run)["state"] != "complete" and not (run / "metrics.json").exists()
    assert len(records(run)) < 3  # it stopped before the last epoch

    resumed = tlengine("--resume", str(run), nproc=2)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_results(summary(run), summary(reference), run, reference, tol=1e-4)


def test_kill_of_one_rank_during_extraction_then_resume(tmp_path):
    """kill -9 of rank 1 while it extracts its share into its shard cache: the resumed run
    takes the rows that share committed, extracts only the rest, and trains to the results of
    one process that extracted everything itself."""
    c = config(tmp_path / "c", compare=[])
    c["data"]["args"].update(per_class=200, size=64)
    c["model"].update(backbone="resnet18", input_size=64)
    c["strategy"]["cache"]["views"] = 8
    c["train"].update(epochs=1, batch_size=8)
    c["data"]["augment"] = "light"
    pipeline = write(tmp_path / "p.yaml", c)

    run = tmp_path / "run"
    launcher = _start(pipeline, run)

    def committed_in_shard() -> bool:
        for shard in (tmp_path / "c").glob("*-r1of2"):
            flags = shard / "filled.bin"
            if flags.is_file() and any(flags.read_bytes()):
                return True
        return False

    _kill_rank_when(launcher, committed_in_shard)
    assert launcher.returncode != 0
    assert list((tmp_path / "c").glob("*-r1of2")), "the shard should outlive its rank"

    resumed = tlengine("--resume", str(run), nproc=2)
    assert resumed.returncode == 0, resumed.stderr
    assert "from an interrupted sharded extraction" in resumed.stderr
    assert not list((tmp_path / "c").glob("*-r*of*"))
    train = arm_result(run, "feature-extraction")["cache"]["splits"]["train"]
    assert train["rows_reused"] > 0 and train["rows_extracted"] < train["rows"]

    c["strategy"]["cache"]["root"] = str(tmp_path / "c1")
    one = tmp_path / "one"
    single = tlengine(str(write(tmp_path / "p1.yaml", c)), "-o", str(one))
    assert single.returncode == 0, single.stderr
    for cache in (tmp_path / "c1").iterdir():
        if cache.name == ".locks":
            continue
        a = torch.from_file(str(cache / "data.bin"), size=(cache / "data.bin").stat().st_size // 4)
        b = (tmp_path / "c" / cache.name / "data.bin").read_bytes()
        assert torch.allclose(torch.frombuffer(bytearray(b), dtype=torch.float32), a, atol=1e-5), cache.name
    metrics = summary(run)["arms"]["feature-extraction"]["per_seed"]["0"]
    assert metrics == pytest.approx(summary(one)["arms"]["feature-extraction"]["per_seed"]["0"], abs=1e-4)


TINY_SHIPPED = {
    "multitask-digits": ["seeds=[0]", "train.epochs=1"],
    "ssl-shapes": [
        "seeds=[0]",
        "train.epochs=1",
        "stages.0.train.epochs=1",
        "stages.1.train.epochs=1",
        "stages.2.train.epochs=1",
        "stages.0.data.args.per_class=20",
    ],
    "domain-adaptation-digits": [
        "seeds=[0]",
        "data.args={per_class: 12}",
        "extra_data.target.args={per_class: 12}",
        "train.epochs=1",
    ],
}


@pytest.mark.parametrize("name", sorted(TINY_SHIPPED))
def test_strategies_that_own_their_step_run_on_two_processes(tmp_path, name):
    """Multitask (several datasets per step, GradNorm), the pretext strategies (a head no loss
    reaches: find_unused_parameters) and domain adaptation (target batches) under DDP."""
    out = tmp_path / "run"
    result = tlengine(name, *TINY_SHIPPED[name], "-o", str(out), nproc=2)
    assert result.returncode == 0, result.stderr
    s = summary(out)
    for arm in s["arms"].values():
        assert arm["metrics"], arm


def test_detection_lists_and_cached_maps_on_two_processes(tmp_path):
    """Detection's batches are lists of images and box targets; its cache holds feature maps."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "object_detection"))
    from test_detection_cli import TINY_OD

    out = tmp_path / "run"
    result = tlengine(str(write(tmp_path / "od.yaml", TINY_OD)), "-o", str(out), nproc=2)
    assert result.returncode == 0, result.stderr
    assert {"feature-extraction", "fine-tune", "scratch"} == set(summary(out)["arms"])


def test_bad_pipeline_is_said_once_before_any_process_starts(tmp_path):
    result = tlengine(str(tmp_path / "missing.yaml"), nproc=2)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"error: pipeline file {tmp_path / 'missing.yaml'} does not exist"]


def test_sync_batchnorm_on_cpu_is_one_line_error(tmp_path):
    pipeline = write(tmp_path / "p.yaml", config(tmp_path / "c", compare=[]))
    result = tlengine(str(pipeline), "train.sync_batchnorm=true", "-o", str(tmp_path / "run"), nproc=2)
    assert result.returncode != 0
    assert "train.sync_batchnorm needs CUDA devices" in result.stderr


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices (nccl)")
def test_two_gpus_give_the_one_gpu_results(tmp_path):
    c = config(tmp_path / "c1", device="cuda")
    one, two = tmp_path / "one", tmp_path / "two"
    assert tlengine(str(write(tmp_path / "p1.yaml", c)), "-o", str(one)).returncode == 0
    c["strategy"]["cache"]["root"] = str(tmp_path / "c2")
    result = tlengine(str(write(tmp_path / "p2.yaml", c)), "train.sync_batchnorm=true", "-o", str(two), nproc=2)
    assert result.returncode == 0, result.stderr
    fe1, fe2 = (summary(r)["arms"]["feature-extraction"]["per_seed"]["0"] for r in (one, two))
    assert fe2 == pytest.approx(fe1, abs=1e-4)
