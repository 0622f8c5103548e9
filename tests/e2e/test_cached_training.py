"""Feature-extraction training through the feature cache, end to end through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from tlengine.pipeline import Runner
from tlengine.plugins import get_plugin_manager
from tlengine.validation import LoadedPipeline, validate
from tlengine_plugins.image_classification.backbones.tiny_cnn import TinyCNN

pytestmark = pytest.mark.slow


def summary_of(result) -> tuple[Path, dict]:
    assert result.returncode == 0, result.stdout + result.stderr
    run = Path(result.stdout.strip().splitlines()[-1])
    return run, json.loads((run / "metrics.json").read_text())


@pytest.fixture
def fe_pipeline(tiny_config, write_pipeline):
    tiny_config["strategy"] = {"name": "feature-extraction", "lr": 0.01}
    tiny_config["baseline"] = None
    tiny_config["train"]["epochs"] = 3
    return write_pipeline(tiny_config)


def test_cached_run_reports_cache_and_matches_the_naive_loop(cli, fe_pipeline, tmp_path):
    """With ``augment: none`` and one view, the cache holds exactly what the naive loop's
    backbone computes every epoch, so both train the same head: the same metrics (up to
    float rounding of the pooled features, ~1e-7)."""
    run, cached = summary_of(cli("run", str(fe_pipeline), "data.augment=none", "--output", str(tmp_path / "cached")))
    stats = cached["cache"]["feature-extraction"]
    train = stats["splits"]["train"]
    assert train["rows_extracted"] == train["rows"] == 15 and train["views"] == 1
    assert train["hits"] == 3 * train["rows"]  # every epoch read every row once
    assert stats["extraction_seconds"] > 0 and "head_training_seconds" in stats
    naive_run, naive = summary_of(
        cli(
            "run",
            str(fe_pipeline),
            "data.augment=none",
            "strategy.cache.enabled=false",
            "--output",
            str(tmp_path / "naive"),
        )
    )
    assert naive["cache"] is None
    assert set(naive["metrics"]) == set(cached["metrics"]) == {"accuracy", "macro_f1", "loss"}
    assert naive["metrics"]["accuracy"] == cached["metrics"]["accuracy"]
    assert naive["metrics"]["macro_f1"] == cached["metrics"]["macro_f1"]
    assert naive["metrics"] == pytest.approx(cached["metrics"], abs=1e-6)
    lines = [[json.loads(x) for x in (r / "metrics.jsonl").read_text().splitlines()] for r in (run, naive_run)]
    assert len(lines[0]) == len(lines[1]) == 3
    for c, n in zip(*lines):  # the same head, epoch by epoch
        for key in ("train_loss", "val_loss", "val_accuracy"):
            assert c[key] == pytest.approx(n[key], abs=1e-6), (c["epoch"], key)


def test_disk_cache_is_reused_and_managed(cli, fe_pipeline, tmp_path):
    root = tmp_path / "caches"
    args = (
        "strategy.cache.storage=disk",
        f"strategy.cache.root={root}",
        "strategy.cache.dtype=int8",
        "strategy.cache.views=2",
        "strategy.cache.kernels=torch",
    )
    _, first = summary_of(cli("run", str(fe_pipeline), *args, "--output", str(tmp_path / "a")))
    _, second = summary_of(cli("run", str(fe_pipeline), *args, "--output", str(tmp_path / "b")))
    train1 = first["cache"]["feature-extraction"]["splits"]["train"]
    train2 = second["cache"]["feature-extraction"]["splits"]["train"]
    assert train1["views"] == 2 and train1["rows"] % 2 == 0 and train1["rows_extracted"] == train1["rows"]
    assert train2["rows_extracted"] == 0 and train2["rows_reused"] == train1["rows"]
    assert second["metrics"] == first["metrics"]  # the same features give the same head

    listing = cli("cache", "ls", "--root", str(root), "--json")
    assert listing.returncode == 0, listing.stderr
    caches = json.loads(listing.stdout)
    assert len(caches) == 3 and all(c["complete"] for c in caches)  # train, val, test
    unknown = cli("cache", "rm", "nope", "--root", str(root))
    assert unknown.returncode != 0 and "Traceback" not in unknown.stderr
    removed = cli("cache", "rm", "--all", "--root", str(root))
    assert removed.returncode == 0 and removed.stdout.count("removed") == 3
    assert json.loads(cli("cache", "ls", "--root", str(root), "--json").stdout) == []


def test_kernels_command_reports_status(cli):
    """`tlengine kernels --json` reports what this machine gives in-process (GPU or not)."""
    import torch
    from tlengine.kernels import build

    result = cli("kernels", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["cuda_available"] is torch.cuda.is_available()
    build.load_extension()  # the same lookup/build the command did (the JIT build is cached on disk)
    here = json.loads(json.dumps(build.status(), default=str))
    assert status["attempted"] is True
    for key in ("built", "source", "cuda_compiled", "build_dir", "error", "reason", "build_info", "version"):
        assert status[key] == here[key], (key, status[key], here[key])
    assert status["built"] is (status["error"] is None)  # an unbuilt extension says why


@pytest.mark.parametrize("kernels, loads", [("auto", True), ("torch", False)])
def test_fused_kernels_load_before_the_first_arm(monkeypatch, fe_pipeline, tmp_path, kernels, loads):
    """A first-use kernel build happens before any arm starts (so its minute is not counted
    as the cached arm's time), and only when an arm will use the fused ops."""
    from tlengine import kernels as kernel_front
    from tlengine.pipeline import Runner
    from tlengine.plugins import get_plugin_manager
    from tlengine.validation import load_pipeline

    events: list[str] = []
    real = kernel_front.extension_available
    monkeypatch.setattr(kernel_front, "extension_available", lambda: events.append("kernels") or real())
    manager = get_plugin_manager()
    runner = Runner(manager, echo=events.append)
    loaded = load_pipeline(str(fe_pipeline), [f"strategy.cache.kernels={kernels}"], manager.registries)
    runner.run(loaded, output=tmp_path / "run")
    first_arm = next(i for i, e in enumerate(events) if e.startswith("[feature-extraction]"))
    if loads:
        assert "kernels" in events[:first_arm], events[: first_arm + 1]
    else:
        assert "kernels" not in events, events


# ----------------------------------------------------------------------------- in-process runs
def run_in_process(config: dict, base_dir: Path, out: Path) -> dict:
    manager = get_plugin_manager()
    loaded = LoadedPipeline(validate(config, manager.registries, base_dir), base_dir, "test")
    Runner(manager, echo=lambda s: None).run(loaded, output=out)
    return json.loads((out / "metrics.json").read_text())


def split_counts(summary: dict) -> dict[str, tuple[int, int, int]]:
    """split -> (rows, rows_extracted, rows_reused) of the feature-extraction arm."""
    splits = summary["cache"]["feature-extraction"]["splits"]
    return {name: (s["rows"], s["rows_extracted"], s["rows_reused"]) for name, s in splits.items()}


def fe_disk_config(tiny_config: dict, root: Path, **cache) -> dict:
    tiny_config["strategy"] = {
        "name": "feature-extraction",
        "lr": 0.01,
        "cache": {"storage": "disk", "root": str(root), "kernels": "torch", **cache},
    }
    tiny_config["baseline"] = None
    tiny_config["data"]["augment"] = "none"
    return tiny_config


def save_tiny_cnn_weights(path: Path, seed: int) -> None:
    torch.manual_seed(seed)
    save_file({k: v.contiguous() for k, v in TinyCNN().state_dict().items()}, str(path))


def test_disk_cache_extracts_again_when_an_image_file_or_the_weights_change(tiny_config, tmp_path):
    for c, colour in (("a", (200, 40, 40)), ("b", (40, 200, 40)), ("c", (40, 40, 200))):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (32, 32), tuple(min(255, v + 5 * i) for v in colour)).save(
                tmp_path / "imgs" / c / f"{i}.png"
            )
    config = fe_disk_config(tiny_config, tmp_path / "caches")
    config["data"] = {
        "dataset": "image-folder",
        "args": {"path": "imgs"},
        "val_fraction": 0.2,
        "test_fraction": 0.3,
        "augment": "none",
    }
    runs = iter(range(100))

    def run(**model) -> dict[str, tuple[int, int, int]]:
        config["model"].update(model)
        return split_counts(run_in_process(config, tmp_path, tmp_path / f"run{next(runs)}"))

    first = run()
    assert first == {s: (n, n, 0) for s, (n, _, _) in first.items()} and set(first) == {"train", "val", "test"}
    assert run() == {s: (n, 0, n) for s, (n, _, _) in first.items()}  # nothing changed: every row reused

    # One file changes (new pixels, new size and mtime): its split is a new cache, the others are reused.
    changed = tmp_path / "imgs" / "b" / "3.png"
    Image.new("RGB", (32, 32), (0, 0, 0)).save(changed)
    after_edit = run()
    redone = [s for s, (n, e, r) in after_edit.items() if (e, r) == (n, 0)]
    reused = [s for s, (n, e, r) in after_edit.items() if (e, r) == (0, n)]
    assert len(redone) == 1 and len(reused) == 2, after_edit
    manager = get_plugin_manager()
    prepared = Runner(manager, echo=lambda s: None).prepare(
        LoadedPipeline(validate(config, manager.registries, tmp_path), tmp_path, "test"), check_output=False
    )
    data = prepared.stages[0].data
    subset = getattr(data, redone[0])
    assert changed.resolve() in {Path(subset.dataset.items[i][0]).resolve() for i in subset.indices}

    # The weights change: a new file, then the same file name with other tensors.
    weights = tmp_path / "w.safetensors"
    save_tiny_cnn_weights(weights, seed=1)
    assert run(weights="w.safetensors") == {s: (n, n, 0) for s, (n, _, _) in first.items()}
    assert run(weights="w.safetensors") == {s: (n, 0, n) for s, (n, _, _) in first.items()}
    save_tiny_cnn_weights(weights, seed=2)
    assert run(weights="w.safetensors") == {s: (n, n, 0) for s, (n, _, _) in first.items()}


def test_cached_views_draw_one_augmented_view_per_sample_and_epoch(tiny_config, tmp_path):
    views, epochs = 3, 3
    config = fe_disk_config(tiny_config, tmp_path / "caches", views=views)
    config["train"]["epochs"] = epochs
    summary = run_in_process(config, tmp_path, tmp_path / "run")
    splits = summary["cache"]["feature-extraction"]["splits"]
    n_train = 15
    train = splits["train"]
    assert train["views"] == views and train["rows"] == views * n_train == train["rows_extracted"]
    assert train["hits"] == epochs * n_train  # each epoch reads one view of every sample
    assert splits["val"]["views"] == splits["test"]["views"] == 1 and splits["test"]["rows"] == 9
    assert summary["arms"]["feature-extraction"]["epochs"] == epochs
    assert set(summary["metrics"]) == {"accuracy", "macro_f1", "loss"}
    # The stored views are different pictures of the sample: view 0 the eval transform,
    # views 1.. random crops / mirrors, so some rows differ from their sample's view 0.
    meta = json.loads((Path(train["path"]) / "meta.json").read_text())
    rows = np.fromfile(Path(train["path"]) / "data.bin", dtype=np.float32).reshape(meta["rows"], meta["row_dim"])
    per_sample = rows.reshape(n_train, views, -1)
    assert np.isfinite(rows).all() and np.abs(rows).sum() > 0
    differs = [not np.allclose(per_sample[i, v], per_sample[i, 0]) for i in range(n_train) for v in range(1, views)]
    assert sum(differs) >= len(differs) // 4, f"{sum(differs)} of {len(differs)} augmented views differ from view 0"
