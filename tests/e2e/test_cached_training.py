"""Feature-extraction training through the feature cache, end to end through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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


def test_cached_run_reports_cache_and_matches_the_naive_loop_shape(cli, fe_pipeline, tmp_path):
    _, cached = summary_of(cli("run", str(fe_pipeline), "--output", str(tmp_path / "cached")))
    stats = cached["cache"]["feature-extraction"]
    assert stats["splits"]["train"]["rows_extracted"] == stats["splits"]["train"]["rows"] > 0
    assert stats["splits"]["train"]["hits"] >= 3 * stats["splits"]["train"]["rows"]  # every epoch read every row
    assert stats["extraction_seconds"] > 0 and "head_training_seconds" in stats
    _, naive = summary_of(cli("run", str(fe_pipeline), "strategy.cache.enabled=false",
                              "--output", str(tmp_path / "naive")))
    assert naive["cache"] is None
    assert set(naive["metrics"]) == set(cached["metrics"])


def test_disk_cache_is_reused_and_managed(cli, fe_pipeline, tmp_path):
    root = tmp_path / "caches"
    args = ("strategy.cache.storage=disk", f"strategy.cache.root={root}", "strategy.cache.dtype=int8",
            "strategy.cache.views=2", "strategy.cache.kernels=torch")
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
        assert "kernels" in events[:first_arm], events[:first_arm + 1]
    else:
        assert "kernels" not in events, events
