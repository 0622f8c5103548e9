"""The speech-recognition task end to end on the small CTC model: a multi-speaker base stage,
then an adaptation stage with every method; per-speaker reports, predict --speaker, and a
run killed mid-adaptation resumed to the same results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from resume_helpers import assert_same_results, records, resume, run_and_kill, run_in_process
from safetensors.torch import load_file
from tlengine.config import DataConfig
from tlengine.errors import DataError
from tlengine_plugins.asr_speaker_adaptation.speech_data import Utterance
from tlengine_plugins.asr_speaker_adaptation.task import SpeechDataOptions, split_by_speaker

TARGET = "scot-m3"


def speech_data(root: Path, **options: Any) -> dict[str, Any]:
    return {
        "dataset": "synthetic-speech",
        "root": str(root),
        "args": {"speakers": 3, "utterances_per_speaker": 8, "seed": 0, "out_dir": "speech"},
        "val_fraction": 0.2,
        "test_fraction": 0.25,
        "target_speaker": TARGET,
        **options,
    }


def ctc_pipeline(root: Path) -> dict[str, Any]:
    """A tiny BiGRU CTC model: trained on two speakers, then adapted to the third with five
    utterances (lhuc) and with three (every method)."""
    return {
        "name": "tiny-asr",
        "task": "speech-recognition",
        "seed": 0,
        "model": {"backbone": "ctc-bigru", "args": {"d_model": 32, "layers": 2, "dropout": 0.0}},
        "stages": [
            {"name": "base", "data": speech_data(root, split="speakers"), "strategy": {"name": "scratch"}},
            {
                "name": "adapt5",
                "init_from": "base",
                "data": speech_data(root, adaptation_utterances=5, val_utterances=1),
                "strategy": {"name": "lhuc"},
                "baseline": {"name": "zero-shot"},
            },
            {
                "name": "adapt",
                "init_from": "base",
                "data": speech_data(root, adaptation_utterances=3, val_utterances=1),
                "strategy": {"name": "lhuc"},
                "compare": [{"name": "adapter", "args": {"bottleneck": 4}}, {"name": "fine-tune", "unfreeze": 1}],
                "baseline": {"name": "zero-shot"},
            },
        ],
        "train": {"epochs": 2, "batch_size": 4, "lr": 0.003},
    }


def test_the_split_keeps_each_speakers_test_set_out_of_both_stages():
    utts = {s: [Utterance(Path(f"{s}/{i}.wav"), f"text {i}", s) for i in range(8)] for s in ("a", "b", "c")}
    data = DataConfig(dataset="x", val_fraction=0.2, test_fraction=0.25)
    adapt = split_by_speaker(utts, SpeechDataOptions(adaptation_utterances=3, val_utterances=1), "b", data, 0)
    multi = split_by_speaker(utts, SpeechDataOptions(split="speakers"), "b", data, 0)
    assert [u.speaker for u in adapt["train"]] == ["b"] * 3 and [u.speaker for u in adapt["val"]] == ["b"]
    assert sorted(u.speaker for u in adapt["test"]) == ["a"] * 2 + ["b"] * 2 + ["c"] * 2
    assert {u.speaker for u in multi["train"] + multi["val"]} == {"a", "c"}  # the target is held out
    assert adapt["test"] == multi["test"] + [u for u in adapt["test"] if u.speaker == "b"] or set(
        map(id, multi["test"])
    ) <= set(map(id, adapt["test"]))
    seen = {id(u) for k in ("train", "val") for u in multi[k] + adapt[k]}
    assert not seen & {id(u) for u in adapt["test"]}  # no test utterance is ever trained on
    with pytest.raises(DataError, match="speaker 'b' has 6 utterances outside its test set"):
        split_by_speaker(utts, SpeechDataOptions(adaptation_utterances=6, val_utterances=1), "b", data, 0)


@pytest.mark.slow
def test_adaptation_stage_end_to_end_with_predict_per_speaker(tmp_path, cli):
    run = tmp_path / "run"
    summary = run_in_process(ctc_pipeline(tmp_path), run)
    adapt = summary["stages"]["adapt"]["arms"]
    assert list(adapt) == ["lhuc", "adapter", "fine-tune", "zero-shot"]
    for arm in adapt.values():
        assert {"wer", "cer", "wer_others", "cer_others"} <= set(arm["metrics"])
    base = load_file(str(run / "arms/base/scratch/seed0/model.safetensors"))
    zero = load_file(str(run / "arms/adapt/zero-shot/seed0/model.safetensors"))
    assert all(torch.equal(zero[k], v) for k, v in base.items())  # zero-shot is the base stage's model
    for arm, part in (("lhuc", "lhuc."), ("adapter", "adapters.")):
        full = load_file(str(run / f"arms/adapt/{arm}/seed0/model.safetensors"))
        own = load_file(str(run / f"arms/adapt/{arm}/seed0/own.safetensors"))
        assert own and all(k.startswith(part) for k in own)
        assert all(torch.equal(full[k], v) for k, v in base.items()), arm  # the base is bit-identical
    delta = load_file(str(run / "arms/adapt/fine-tune/seed0/delta.safetensors"))
    assert delta and {k.split(".")[0] for k in delta} == {"encoder", "decoder"}
    report = json.loads((run / "reports/adaptation.json").read_text())
    assert report["target_speaker"] == TARGET and report["base_arm"] == "zero-shot"
    lhuc = report["arms"]["lhuc"]
    assert set(lhuc["per_speaker"]) == {"rp-f4", TARGET, "us-f2"}
    assert lhuc["wer_before"] == adapt["zero-shot"]["metrics"]["wer"]
    assert lhuc["wer_others_rise"] == pytest.approx(lhuc["wer_others"] - lhuc["wer_others_before"])
    assert (run / "plots/wer_per_speaker.png").is_file()
    # the same speaker adapted with 3 and with 5 utterances: the WER-against-data curve
    assert set(report["curve"]["lhuc"]) == {"3", "5"} and set(report["curve"]["zero-shot"]) == {"3", "5"}
    assert report["curve"]["lhuc"]["3"]["wer"] == adapt["lhuc"]["metrics"]["wer"]
    assert (run / "plots/wer_vs_adaptation_utterances.png").is_file()

    wav = next((tmp_path / "speech").rglob("*.wav"))
    adapted = cli("predict", str(run), str(wav), "--speaker", TARGET, "--json")
    assert adapted.returncode == 0, adapted.stderr
    [result] = json.loads(adapted.stdout)
    assert result["speaker"] == TARGET and isinstance(result["transcript"], str)
    base_run = cli("predict", str(run), str(wav), "--json")
    assert base_run.returncode == 0 and json.loads(base_run.stdout)[0]["speaker"] == TARGET
    unknown = cli("predict", str(run), str(wav), "--speaker", "nobody")
    assert unknown.returncode != 0 and "no model adapted to speaker 'nobody'" in unknown.stderr
    assert "Traceback" not in unknown.stderr


@pytest.mark.slow
def test_a_run_killed_during_adaptation_resumes_to_the_same_results(tmp_path):
    config = ctc_pipeline(tmp_path)
    del config["stages"][1]
    config["stages"][1]["compare"] = []
    reference = run_in_process(config, tmp_path / "reference")
    run = tmp_path / "killed"
    run_and_kill(config, run, {"kind": "step", "after": ["adapt", "lhuc", 1], "n": 1})
    assert [(r["stage"], r["arm"], r["epoch"]) for r in records(run)][-1] == ("adapt", "lhuc", 1)
    resumed, _, trained = resume(run)
    assert trained == [("adapt", "lhuc", 2), ("adapt", "zero-shot", 1)]  # the base stage is not re-run
    assert_same_results(resumed, reference, run, tmp_path / "reference")
