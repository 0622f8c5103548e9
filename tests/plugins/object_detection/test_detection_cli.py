"""The object-detection task through the command line: config errors, `tlengine plugins`, a
tiny run with its reports, `tlengine predict`, and kill-and-resume of a detection run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from resume_helpers import assert_same_results, records, resume, run_and_kill, run_in_process

TINY_OD = {
    "name": "od-tiny",
    "task": "object-detection",
    "seed": 0,
    "data": {
        "dataset": "synthetic-scenes",
        "args": {"classes": ["circle", "square", "triangle"], "images": 8, "size": 128, "seed": 3},
        "val_fraction": 0.2,
        "test_fraction": 0.3,
        "augment": "light",
    },
    "model": {
        "backbone": "timm/tf_efficientnet_lite0",
        "weights": "efficientnet-lite0-imagenet",
        "detector": "fcos",
        "input_size": 256,
        "fpn_channels": 32,
        "score_threshold": 0.001,  # keep low-scored boxes: a 1-epoch model still detects something
    },
    "strategy": {"name": "feature-extraction", "cache": {"views": 2}},
    "compare": [{"name": "fine-tune", "unfreeze": 2}],
    "baseline": {"name": "scratch"},
    "train": {"epochs": 1, "batch_size": 4, "lr": 0.001, "optimizer": "adamw"},
}

DETECTION_LINE = re.compile(
    r"^  (circle|square|triangle) (\d\.\d{3}) \[(-?[\d.]+), (-?[\d.]+), (-?[\d.]+), (-?[\d.]+)\]$"
)


def tiny_od(**changes) -> dict:
    config = yaml.safe_load(yaml.safe_dump(TINY_OD))
    config.update(changes)
    return config


def assert_one_sentence(proc, *, code: int) -> str:
    """No traceback, exit ``code``; returns stderr."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == code, out
    assert "Traceback" not in out and "internal error" not in out, out
    return proc.stderr


# ------------------------------------------------------------------ config errors
@pytest.mark.parametrize(
    "override, reason",
    [
        ("model.input_size=300", "multiple of 32"),
        ("model.input_size=224", "fcos needs at least 256 px"),
    ],
)
def test_bad_input_size_is_one_config_error_line(override, reason, write_pipeline, cli, tmp_path) -> None:
    pipeline = write_pipeline(TINY_OD)
    out = tmp_path / "run"
    proc = cli("run", str(pipeline), override, "--output", str(out))
    err = assert_one_sentence(proc, code=2)
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("config error: model.input_size: ") and reason in lines[0], err
    assert not out.exists()  # refused before anything is written


def test_unknown_detector_is_one_config_error_line(write_pipeline, cli, tmp_path) -> None:
    pipeline = write_pipeline(TINY_OD)
    proc = cli("run", str(pipeline), "model.detector=yolo", "--output", str(tmp_path / "run"))
    err = assert_one_sentence(proc, code=2)
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("config error: model.detector: "), err
    assert "fcos" in lines[0], err  # names the known detectors


def test_fpn_channels_that_group_norm_cannot_split_is_a_config_error(write_pipeline, cli, tmp_path) -> None:
    pipeline = write_pipeline(TINY_OD)
    proc = cli("validate", str(pipeline), "model.fpn_channels=16")
    err = assert_one_sentence(proc, code=2)
    assert err.startswith("config error: model.fpn_channels: "), err


def test_plugins_lists_the_object_detection_task_and_datasets(cli) -> None:
    proc = cli("plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    plugins = {p["name"]: p for p in json.loads(proc.stdout)}
    detection = plugins["object_detection"]
    assert detection["error"] is None
    assert detection["registered"]["tasks"] == ["object-detection"]
    assert sorted(detection["registered"]["datasets"]) == ["coco-json", "detection-csv", "synthetic-scenes", "voc"]
    # the detection datasets belong to no other plugin
    others = [p for name, p in plugins.items() if name != "object_detection"]
    assert not any("synthetic-scenes" in p["registered"].get("datasets", []) for p in others)


# ------------------------------------------------------------------ end to end
def _scene(path: Path, seed: int) -> None:
    from tlengine_plugins.object_detection.synthetic import generate_scenes

    image, _, _ = generate_scenes(classes=["circle", "square", "triangle"], images=1, size=160, seed=seed)[0]
    image.resize((200, 160)).save(path)  # not square: boxes come back in its own pixels


def _detections(stdout: str) -> list[tuple[str, float, list[float]]]:
    lines = stdout.splitlines()
    header = re.match(r"^(.*): (\d+) detection\(s\)$", lines[0])
    assert header, stdout
    found = []
    for line in lines[1:]:
        if line.startswith("  drawn: "):
            continue
        m = DETECTION_LINE.match(line)
        assert m, line
        found.append((m[1], float(m[2]), [float(v) for v in m.groups()[2:]]))
    assert len(found) == int(header[2]), stdout
    return found


@pytest.mark.slow
def test_tiny_detection_run_writes_its_reports_and_predicts(write_pipeline, cli, tmp_path) -> None:
    pipeline = write_pipeline(TINY_OD)
    out = tmp_path / "run"
    proc = cli("run", str(pipeline), "--output", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["primary_metric"] == "map_50"
    arms = ("feature-extraction", "fine-tune", "scratch")
    assert set(metrics["arms"]) == set(arms)
    for arm in arms:
        values = metrics["arms"][arm]["metrics"]
        assert {"map", "map_50", "map_75", "mar_100"} <= set(values), (arm, values)
        assert all(0.0 <= values[k] <= 1.0 for k in ("map", "map_50", "map_75", "mar_100"))
        assert values["map"] <= values["map_50"]
        assert (out / "plots" / f"detections_{arm}.png").stat().st_size > 0
    # the feature-extraction arm trained on cached maps: two views per training image
    cache = metrics["cache"]["feature-extraction"]
    assert cache["layout"]["layout"] == "maps" and cache["views"] == 2
    assert cache["splits"]["train"]["rows"] == 2 * (8 - round(8 * 0.3) - round(8 * 0.2))
    for name in ("per_class_ap.png", "pr_curves.png"):
        assert (out / "plots" / name).stat().st_size > 0
    table = (out / "reports" / "per_class_ap.md").read_text()
    for cls in ("circle", "square", "triangle"):
        assert f"| {cls} |" in table
    assert all(f"{arm} AP@.5" in table for arm in arms)
    # the printed metrics, recomputed by pycocotools alone from the files the run wrote
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(out / "reports" / "coco_ground_truth.json"))
        for arm in arms:
            detections = json.loads((out / "reports" / f"coco_detections_{arm}.json").read_text())
            if not detections:
                continue
            evaluator = COCOeval(gt, gt.loadRes(detections), "bbox")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            printed = metrics["arms"][arm]["metrics"]
            assert abs(evaluator.stats[1] - printed["map_50"]) < 1e-9, arm
            assert abs(evaluator.stats[0] - printed["map"]) < 1e-9, arm

    image = tmp_path / "scene.png"
    _scene(image, seed=11)
    low = cli("predict", str(out), str(image), "--score-threshold", "0.001", "--json")
    assert low.returncode == 0, low.stderr
    (result,) = json.loads(low.stdout)
    low_scores = sorted(d["score"] for d in result["detections"])
    assert len(set(low_scores)) >= 2 and low_scores[0] >= 0.001, result
    for d in result["detections"]:
        assert d["label"] in ("circle", "square", "triangle")
        x1, y1, x2, y2 = d["box"]
        assert -1 <= x1 <= x2 <= 201 and -1 <= y1 <= y2 <= 161, d  # the image's own 200 x 160 pixels
    # a threshold between two distinct scores near the median: it must drop some detections
    gaps = [(a + b) / 2 for a, b in zip(low_scores, low_scores[1:]) if b - a >= 2e-4]
    threshold = round(gaps[len(gaps) // 2], 5)
    saved = tmp_path / "drawn"
    high = cli("predict", str(out), str(image), "--score-threshold", str(threshold), "--save", str(saved))
    assert high.returncode == 0, high.stderr
    found = _detections(high.stdout)
    assert all(score >= threshold - 5e-4 for _, score, _ in found)
    assert len(found) == sum(s >= threshold for s in low_scores) < len(low_scores)
    drawn = saved / "scene.detections.png"
    assert drawn.stat().st_size > 0 and f"drawn: {drawn}" in high.stdout
    from PIL import Image

    with Image.open(drawn) as img:
        assert img.size == (200, 160)

    refused = cli("predict", str(out), "--text", "a circle")
    assert refused.returncode != 0
    assert "Traceback" not in refused.stdout + refused.stderr
    assert refused.stderr.startswith("error: ") and "--text" in refused.stderr


# ------------------------------------------------------------------ kill and resume
def resume_config() -> dict:
    config = tiny_od(compare=[])
    config["train"]["epochs"] = 2
    return config


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("od-reference") / "run"
    return run_in_process(resume_config(), out), out


@pytest.mark.slow
def test_detection_run_killed_mid_scratch_arm_resumes_to_the_same_results(reference, tmp_path) -> None:
    metrics, ref_run = reference
    run = tmp_path / "killed"
    run_and_kill(resume_config(), run, {"kind": "step", "after": ["main", "scratch", 1], "n": 1})
    assert [(r["arm"], r["epoch"]) for r in records(run)][-1] == ("scratch", 1)
    resumed, _, trained = resume(run)
    assert trained == [("main", "scratch", 2)]
    assert_same_results(resumed, metrics, run, ref_run)


@pytest.mark.slow
def test_detection_run_killed_during_cache_writes_resumes_to_the_same_results(reference, tmp_path) -> None:
    metrics, ref_run = reference
    run = tmp_path / "killed"
    run_and_kill(resume_config(), run, {"kind": "cache", "n": 2})
    assert records(run) == []  # died while extracting the training maps, before any epoch
    resumed, _, trained = resume(run)
    assert trained == [("main", arm, e) for arm in ("feature-extraction", "scratch") for e in (1, 2)]
    assert_same_results(resumed, metrics, run, ref_run)
