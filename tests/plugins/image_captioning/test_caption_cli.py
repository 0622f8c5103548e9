"""The image-captioning task through the command line: config errors and bad caption data
(one sentence, no traceback, no run left looking complete), a tiny run with its metrics and
reports, `tlengine predict`, and kill-and-resume of a captioning run.

The tiny run: synthetic scenes of 64 px, a mobilenet_v2 encoder (random convolutions,
calibrated batch norm) and a 2-layer BERT folder as the decoder, a feature-extraction arm on
the feature cache (2 views) and a scratch baseline, 2 epochs. Error cases run in-process
through click's CliRunner (no interpreter start-up); the run and predict run as a user runs
them, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from caption_fixtures import (
    one_thread,  # noqa: F401  (autouse: one torch thread in this module)
    tiny_config,
    write_caption_bert,
    write_corrupt,
    write_encoder_weights,
    write_png,
)
from click.testing import CliRunner
from resume_helpers import assert_same_results, records, resume, run_and_kill
from tlengine.cli import main
from tlengine_plugins.image_captioning.metrics import score_captions

ARMS = ("feature-extraction", "scratch")
METRICS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "cider")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the decoder's BERT folder, the encoder's weights file)."""
    folder = tmp_path_factory.mktemp("caption-cli")
    return write_caption_bert(folder / "bert"), write_encoder_weights(folder / "mnv2.pth")


def config(files, **changes) -> dict:
    return tiny_config(*files, **changes)


def write_yaml(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def invoke(*args: str):
    """``tlengine ARGS`` in-process; stdout and stderr apart."""
    return CliRunner().invoke(main, list(args))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``tlengine ARGS`` in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "tlengine", *args], capture_output=True, text=True, timeout=600, env=os.environ.copy()
    )


def one_sentence(result, *, code: int | None = None) -> str:
    """The one non-blank stderr line of a failed command (no traceback, no internal error)."""
    out = result.stdout + result.stderr
    assert result.exit_code != 0, out
    if code is not None:
        assert result.exit_code == code, out
    assert "Traceback" not in out and "internal error" not in out, out
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [x for x in result.stderr.splitlines() if x.strip() and not x.startswith("run directory: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def assert_not_complete(run: Path) -> None:
    """Nothing written, or a run that says it failed, with no summary."""
    if not run.exists():
        return
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed", status
    assert not (run / "metrics.json").exists() and not (run / "checkpoint.safetensors").exists()


# ------------------------------------------------------------------ config errors
@pytest.mark.parametrize(
    "override, field, fragment",
    [
        ("model.decoder=no/such/bert", "model.decoder", "neither named weights"),
        ("model.num_beams=0", "model.num_beams", "greater than or equal to 1"),
        ("model.beam_width=3", "model.beam_width", "unknown key"),
        ("model.max_length=64", "model.max_length", "the decoder has 40 positions, got 64"),
        ("data.augment=flip", "data.augment", "'none' or 'light'"),
        ("data.args.captions_per_image=0", "data.args.captions_per_image", ""),
    ],
)
def test_config_errors_are_one_line_and_exit_2(files, tmp_path, override, field, fragment) -> None:
    pipeline = write_yaml(tmp_path / "p.yaml", config(files))
    run = tmp_path / "run"
    result = invoke("run", str(pipeline), override, "--output", str(run))
    line = one_sentence(result, code=2)
    assert line.startswith(f"config error: {field}: ") and fragment in line, line
    assert not run.exists()


def test_a_backbone_without_a_grid_names_model_backbone(files, tmp_path) -> None:
    pipeline = write_yaml(tmp_path / "p.yaml", config(files))
    run = tmp_path / "run"
    result = invoke("run", str(pipeline), "model.backbone=densenet121", "model.weights=null", "--output", str(run))
    line = one_sentence(result, code=2)
    assert not run.exists()
    assert "densenet121 has no known conv-grid layout" in line, line  # what it says today
    assert line.startswith("config error: model.backbone: "), line


def test_validate_refuses_a_backbone_without_a_grid(files, tmp_path) -> None:
    pipeline = write_yaml(tmp_path / "p.yaml", config(files))
    result = invoke("validate", str(pipeline), "model.backbone=densenet121", "model.weights=null")
    line = one_sentence(result, code=2)
    assert "densenet121 has no known conv-grid layout" in line, line


def test_a_decoder_config_transformers_refuses_is_a_config_error(files, tmp_path) -> None:
    pipeline = write_yaml(tmp_path / "p.yaml", config(files))
    run = tmp_path / "run"
    result = invoke("run", str(pipeline), "model.decoder_config={num_attention_heads: 3}", "--output", str(run))
    assert not run.exists()
    line = one_sentence(result, code=2)
    assert line.startswith("config error: model.decoder_config: ") and "num_attention_heads" in line, line


# ------------------------------------------------------------------ bad caption data
def scenes_csv(folder: Path, rows_changed=None, images: int = 12) -> Path:
    """``folder/captions.csv`` (image,caption rows) with ``folder/imgs/s<i>.png`` synthetic scenes."""
    from tlengine_plugins.image_captioning.synthetic import generate_caption_scenes

    rows = ["image,caption"]
    for i, scene in enumerate(generate_caption_scenes(images=images, size=64, seed=1, captions_per_image=2)):
        (folder / "imgs").mkdir(parents=True, exist_ok=True)
        scene.image.save(folder / "imgs" / f"s{i}.png")
        rows += [f"s{i}.png,{c}" for c in scene.captions]
    if rows_changed:
        rows = rows_changed(rows)
    path = folder / "captions.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def csv_pipeline(files, folder: Path) -> Path:
    data = {
        "dataset": "caption-csv",
        "root": str(folder),
        "args": {"path": "captions.csv", "image_root": "imgs"},
        "val_fraction": 0.2,
        "test_fraction": 0.25,
    }
    return write_yaml(folder / "p.yaml", config(files, data=data))


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("empty caption", "line 4: the caption of image s1.png is empty or blank"),
        ("missing image", "nope.png does not exist"),
        ("corrupt image", "s2.png is not a readable image"),
    ],
)
def test_bad_caption_csv_is_one_sentence_and_no_run(files, tmp_path, case, fragment) -> None:
    def change(rows: list[str]) -> list[str]:
        if case == "empty caption":
            rows[3] = "s1.png,   "
        elif case == "missing image":
            rows.insert(5, "nope.png,a red circle")
        return rows

    folder = tmp_path / "data"
    scenes_csv(folder, change)
    if case == "corrupt image":
        write_corrupt(folder / "imgs" / "s2.png")
    run = tmp_path / "run"
    result = invoke("run", str(csv_pipeline(files, folder)), "--output", str(run))
    line = one_sentence(result, code=1)
    assert line.startswith("error: ") and fragment in line, line
    assert str(folder / "captions.csv") in line or "image" in line
    assert not run.exists()


def test_an_image_without_captions_is_one_sentence(files, tmp_path) -> None:
    folder = tmp_path / "coco"
    images = [{"id": i, "file_name": f"i{i}.png"} for i in range(8)]
    for image in images:
        write_png(folder / "imgs" / image["file_name"], colour=(20 * image["id"], 100, 50))
    annotations = [{"id": 100 + i, "image_id": i, "caption": "a red circle"} for i in range(8) if i != 5]
    (folder / "captions.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    data = {"dataset": "coco-captions", "root": str(folder), "args": {"path": "captions.json", "image_root": "imgs"}}
    pipeline = write_yaml(folder / "p.yaml", config(files, data=data))
    run = tmp_path / "run"
    line = one_sentence(invoke("run", str(pipeline), "--output", str(run)), code=1)
    assert line.startswith("error: ") and "i5.png has no caption" in line and "image id 5" in line, line
    assert not run.exists()
    # with skip_invalid the image is dropped and the run goes on (validation only here)
    ok = invoke("validate", str(pipeline), "data.args.skip_invalid=true")
    assert ok.exit_code == 0, ok.stdout + ok.stderr


@pytest.mark.slow
def test_an_image_that_breaks_mid_run_fails_the_run_in_one_sentence(files, tmp_path) -> None:
    """A PNG whose header reads but whose pixels are cut off passes the dataset's checks and
    fails when the cache extracts it: one sentence, the run marked failed, no summary."""
    folder = tmp_path / "data"
    scenes_csv(folder)
    png = folder / "imgs" / "s3.png"
    png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    run = tmp_path / "run"
    result = invoke("run", str(csv_pipeline(files, folder)), "--output", str(run))
    out = result.stdout + result.stderr
    assert result.exit_code == 1 and "Traceback" not in out and "internal error" not in out, out
    # the run's progress lines, then the one sentence
    errors = [x for x in result.stderr.splitlines() if x.startswith("error")]
    assert errors == [f"error: image {png} is not a readable image (image file is truncated)"], result.stderr
    assert result.stderr.strip().splitlines()[-1] == errors[0]
    assert run.exists()
    assert_not_complete(run)
    assert json.loads((run / "status.json").read_text())["resume"] == f"tlengine run --resume {run}"


# ------------------------------------------------------------------ a tiny run
@pytest.fixture(scope="module")
def tiny_run(files, tmp_path_factory: pytest.TempPathFactory, request) -> tuple[dict, Path]:
    """``tlengine run`` of the tiny pipeline in a subprocess: (metrics.json, run directory)."""
    folder = tmp_path_factory.mktemp("caption-run")
    pipeline = write_yaml(folder / "tiny.yaml", config(files))
    run = folder / "run"
    proc = run_cli("run", str(pipeline), "--output", str(run))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(run)
    return json.loads((run / "metrics.json").read_text()), run


@pytest.mark.slow
def test_tiny_run_writes_caption_metrics_and_reports(tiny_run) -> None:
    metrics, run = tiny_run
    assert metrics["task"] == "image-captioning" and metrics["primary_metric"] == "cider"
    assert metrics["primary_arm"] == "feature-extraction" and metrics["baseline_arm"] == "scratch"
    assert set(metrics["arms"]) == set(ARMS)
    for arm in ARMS:
        values = metrics["arms"][arm]["metrics"]
        assert set(METRICS) <= set(values), (arm, values)
        assert all(0.0 <= values[f"bleu_{n}"] <= 1.0 for n in (1, 2, 3, 4)) and values["cider"] >= 0.0
        assert values["bleu_4"] <= values["bleu_1"] + 1e-9
        assert (run / "plots" / f"captions_{arm}.png").stat().st_size > 0
        # the metrics are those of the arm's test captions against their references
        test = json.loads((run / "arms" / "main" / arm / "seed0" / "result.json").read_text())["test"]
        assert test["metrics"] == pytest.approx({m: values[m] for m in test["metrics"]})
        predictions = test["details"]["predictions"]
        references = [s["references"] for s in test["details"]["samples"]]
        assert len(predictions) == len(references)  # <= 12 test images: every one has its sample
        assert score_captions(predictions, references).metrics == pytest.approx(test["metrics"])
    # the feature-extraction arm trained on cached visual tokens: 2 views per training image
    cache = metrics["cache"]["feature-extraction"]
    assert cache["layout"]["layout"] == "sequence" and cache["views"] == 2 and cache["sample_shape"] == [4, 1280]
    n_test = round(24 * 0.25)
    n_train = 24 - n_test - round(24 * 0.2)
    assert cache["splits"]["train"]["rows"] == 2 * n_train and cache["splits"]["test"]["rows"] == n_test
    assert "scratch" not in metrics["cache"]
    # every epoch of both arms was logged, with the validation caption metrics
    lines = records(run)
    assert [(r["arm"], r["epoch"]) for r in lines] == [(a, e) for a in ARMS for e in (1, 2)]
    assert all(f"val_{m}" in r for r in lines for m in METRICS)
    # the reports: each arm's test captions beside their references, with per-image scores
    captions = json.loads((run / "reports" / "captions.json").read_text())
    assert set(captions) == set(ARMS)
    from tlengine_plugins.image_captioning.synthetic import generate_caption_scenes

    every = {c for s in generate_caption_scenes(images=24, size=64, seed=3, captions_per_image=2) for c in s.captions}
    for arm, samples in captions.items():
        assert len(samples) == n_test
        for sample in samples:
            assert isinstance(sample["prediction"], str) and len(sample["references"]) == 2
            assert set(sample["references"]) <= every
            assert {"bleu_4", "cider"} <= set(sample)
    assert json.loads((run / "status.json").read_text()) == {"state": "complete"}
    assert (run / "checkpoint.safetensors").stat().st_size > 0


@pytest.mark.slow
def test_predict_prints_one_caption_per_image(tiny_run, tmp_path) -> None:
    from tlengine_plugins.image_captioning.synthetic import generate_caption_scenes

    _, run = tiny_run
    images = []
    for i, scene in enumerate(generate_caption_scenes(images=2, size=90, seed=21)):
        images.append(tmp_path / f"scene {i}.png")  # a space in the name
        scene.image.save(images[-1])
    plain = invoke("predict", str(run), *map(str, images))
    assert plain.exit_code == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert len(lines) == 2, plain.stdout
    captions = []
    for image, line in zip(images, lines):
        assert line.startswith(f"{image}: "), line
        captions.append(line[len(f"{image}: ") :])
    # --num-beams and --json: one record per image; greedy through --num-beams 1 is the run's own (num_beams: 1)
    greedy = invoke("predict", str(run), *map(str, images), "--num-beams", "1", "--json")
    assert greedy.exit_code == 0, greedy.stderr
    results = json.loads(greedy.stdout)
    assert [r["input"] for r in results] == [str(p) for p in images]
    assert [r["caption"] for r in results] == captions
    beams = invoke("predict", str(run), str(images[0]), "--num-beams", "4", "--json")
    assert beams.exit_code == 0, beams.stderr
    assert isinstance(json.loads(beams.stdout)[0]["caption"], str)
    # the run's own test images, as files: predict gives the captions the run's evaluation gave
    scenes = generate_caption_scenes(images=24, size=64, seed=3, captions_per_image=2)
    test = json.loads((run / "arms" / "main" / "feature-extraction" / "seed0" / "result.json").read_text())["test"]
    files = []
    for sample in test["details"]["samples"]:
        (index,) = [k for k, scene in enumerate(scenes) if scene.captions == sample["references"]]
        files.append(tmp_path / f"test{index}.png")
        scenes[index].image.save(files[-1])
    again = invoke("predict", str(run), *map(str, files), "--json")
    assert again.exit_code == 0, again.stderr
    assert [r["caption"] for r in json.loads(again.stdout)] == test["details"]["predictions"]
    # the scratch arm's model
    other = invoke("predict", str(run), str(images[0]), "--arm", "scratch")
    assert other.exit_code == 0 and other.stdout.startswith(f"{images[0]}: "), other.stderr

    # refusals: one sentence each
    line = one_sentence(invoke("predict", str(run), "--text", "a red circle"))
    assert line.startswith("error: ") and "--text" in line
    usage = invoke("predict", str(run), str(images[0]), "--num-beams", "0")
    assert usage.exit_code == 2 and "Traceback" not in usage.stderr
    assert "Invalid value for '--num-beams'" in usage.stderr
    broken = write_corrupt(tmp_path / "broken.png")
    line = one_sentence(invoke("predict", str(run), str(broken)))
    assert line.startswith(f"error: image {broken} is not a readable image"), line


# ------------------------------------------------------------------ kill and resume
@pytest.mark.slow
def test_run_killed_mid_arm_resumes_to_the_same_results(files, tiny_run, tmp_path) -> None:
    """SIGKILL in the feature-extraction arm's second epoch (after the cache was built in
    memory, so the resume extracts it again): the resumed run ends where the uninterrupted
    one did, and trains only what was missing."""
    metrics, reference = tiny_run
    run = tmp_path / "killed"
    run_and_kill(config(files), run, {"kind": "step", "after": ["main", "feature-extraction", 1], "n": 1})
    assert [(r["arm"], r["epoch"]) for r in records(run)] == [("feature-extraction", 1)]
    resumed, said, trained = resume(run)
    assert trained == [("main", "feature-extraction", 2), ("main", "scratch", 1), ("main", "scratch", 2)]
    assert_same_results(resumed, metrics, run, reference)
    ours = json.loads((run / "reports" / "captions.json").read_text())
    assert ours == json.loads((reference / "reports" / "captions.json").read_text())
