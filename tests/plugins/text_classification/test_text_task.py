"""The text-classification task: encoder and blocks, masked pooling, length buckets,
cached vs live features, layer-wise LR decay, the TF-IDF arm, predict on strings, and
tiny end-to-end runs (with resume after SIGKILL) through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from resume_helpers import assert_same_results, records, resume, run_and_kill, run_in_process
from text_fixtures import make_texts, text_pipeline
from tlengine.config import DataConfig, ModelConfig, StrategyConfig, TrainConfig
from tlengine.plugins import get_plugin_manager
from tlengine_plugins.text_classification import encoders
from tlengine_plugins.text_classification.batches import LengthBucketBatchSampler, TextDataset, collate_texts
from tlengine_plugins.text_classification.task import TextClassificationTask


@pytest.fixture
def task() -> TextClassificationTask:
    return TextClassificationTask(get_plugin_manager().registries, TrainConfig())


def model_config(checkpoint: Path, **options) -> ModelConfig:
    return ModelConfig.model_validate({"backbone": "bert", "weights": str(checkpoint), "max_length": 24, **options})


def build(task, checkpoint: Path, tsv: Path, *, pretrained: bool = True, **options):
    mc = model_config(checkpoint, **options)
    init = {"encoder": pretrained}
    pre = task.preprocessing(mc, init=init, base_dir=tsv.parent)
    dc = DataConfig.model_validate({"dataset": "text-file", "args": {"path": tsv.name}, "test_fraction": 0.3})
    data = task.build_data(dc, preprocessing=pre, base_dir=tsv.parent, seed=0)
    return task.build_model(mc, data.info, init=init, base_dir=tsv.parent), data


def test_encoder_blocks_cover_every_parameter_and_load_the_checkpoint(task, tiny_bert, topic_tsv) -> None:
    model, _ = build(task, tiny_bert, topic_tsv)
    names = [b for b, _ in model.part("encoder").blocks]
    assert names == ["embeddings", "layer.0", "layer.1"]
    in_blocks = {id(p) for _, m in model.part("encoder").blocks for p in m.parameters()}
    assert in_blocks == {id(p) for p in model.part("encoder").module.parameters()}
    from safetensors.torch import load_file

    saved = load_file(tiny_bert / "model.safetensors")
    key = "encoder.layer.0.attention.self.query.weight"
    torch.testing.assert_close(model.part("encoder").module.model.state_dict()[key], saved[key])
    scratch, _ = build(task, tiny_bert, topic_tsv, pretrained=False)
    assert not torch.equal(scratch.part("encoder").module.model.state_dict()[key], saved[key])


def test_masked_pooling_ignores_padding(task, tiny_bert, topic_tsv) -> None:
    """The same text padded to different lengths gives the same features, mean and cls."""
    for pooling in ("mean", "cls"):
        model, data = build(task, tiny_bert, topic_tsv, pooling=pooling)
        model.eval()
        sample = data.train[0]
        short, _ = collate_texts([sample])
        long, _ = collate_texts([sample], pad_to=24)
        assert long["input_ids"].shape[1] > short["input_ids"].shape[1]
        with torch.no_grad():
            a = model.part("head").module.pooling, model.forward_features(short), model.forward_features(long)
            from tlengine_plugins.text_classification.model import masked_pool

            pooled_short = masked_pool(*a[1], pooling)
            pooled_long = masked_pool(*a[2], pooling)
            torch.testing.assert_close(pooled_short, pooled_long, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(model(short), model(long), atol=1e-5, rtol=1e-5)


def test_length_buckets_cover_every_index_once_and_group_lengths() -> None:
    lengths = [((i * 37) % 50) + 1 for i in range(300)]
    sampler = LengthBucketBatchSampler(lengths, 10, shuffle=True, seed=3)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(300))
    assert batches == list(LengthBucketBatchSampler(lengths, 10, shuffle=True, seed=3))  # deterministic
    assert batches != list(LengthBucketBatchSampler(lengths, 10, shuffle=True, seed=4))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 5  # random batches of 10 from 1..50 would spread ~40
    ordered = [i for b in LengthBucketBatchSampler(lengths, 10, shuffle=False, seed=0) for i in b]
    assert [lengths[i] for i in ordered] == sorted(lengths)


def test_dynamic_padding_pads_to_the_batch_and_max_length_pads_to_max(task, tiny_bert, topic_tsv) -> None:
    _, data = build(task, tiny_bert, topic_tsv)
    inputs, labels = task.collate([data.train[0], data.train[1]])
    longest = max(len(data.train[0][0]), len(data.train[1][0]))
    assert inputs["input_ids"].shape[1] == -(-longest // 8) * 8
    assert inputs["attention_mask"].sum(1).tolist() == [len(data.train[0][0]), len(data.train[1][0])]
    assert labels.tolist() == [data.train[0][1], data.train[1][1]]
    _, _ = build(task, tiny_bert, topic_tsv, padding="max_length")
    inputs, _ = task.collate([data.train[0]])
    assert inputs["input_ids"].shape[1] == 24


def test_cached_features_equal_live_ones(task, tiny_bert, topic_tsv) -> None:
    from tlengine.config import CacheConfig
    from tlengine.training.feature_cache import CachedFeatures

    model, data = build(task, tiny_bert, topic_tsv)
    model.frozen_parts = {"encoder"}
    model.eval()
    cached = CachedFeatures(
        task, model, data, CacheConfig(), device=torch.device("cpu"), seed=0, batch_size=7, num_workers=0
    )
    cached.prepare()
    rows, _ = next(iter(cached.eval_loader("test", batch_size=len(data.test))))
    inputs, _ = task.collate([data.test[i] for i in range(len(data.test))])
    with torch.no_grad():
        from tlengine_plugins.text_classification.model import masked_pool

        live = masked_pool(*model.forward_features(inputs), "mean")
    torch.testing.assert_close(rows.float(), live, atol=1e-5, rtol=1e-4)
    cached.close()


def test_layer_decay_gives_each_block_its_learning_rate(task, tiny_bert, topic_tsv) -> None:
    from tlengine.strategies.fine_tune import FineTune

    model, _ = build(task, tiny_bert, topic_tsv)
    strategy = FineTune(StrategyConfig(name="fine-tune", backbone_lr_mult=0.1, layer_decay=0.5))
    lrs = {g["name"]: g["lr"] for g in strategy.param_groups(model, 1.0)}
    assert lrs["head"] == pytest.approx(1.0)
    assert lrs["encoder.layer.1"] == pytest.approx(0.1)
    assert lrs["encoder.layer.0"] == pytest.approx(0.05)
    assert lrs["encoder.embeddings"] == pytest.approx(0.025)
    plain = FineTune(StrategyConfig(name="fine-tune", backbone_lr_mult=0.1))
    assert all(g["lr"] == pytest.approx(0.1) for g in plain.param_groups(model, 1.0) if g["name"] != "head")


def test_tfidf_arm_equals_the_scikit_learn_pipeline(task, tiny_bert, topic_tsv) -> None:
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from tlengine_plugins.text_classification.tfidf import TfidfLogReg

    model, data = build(task, tiny_bert, topic_tsv, pretrained=False)
    strategy = TfidfLogReg(StrategyConfig(name="tfidf-logreg", args={"C": 3.0, "n_features": 4096}))
    strategy.prepare(model, data)
    strategy.fit(task, model, data, seed=0)
    reference = make_pipeline(
        HashingVectorizer(ngram_range=(1, 2), n_features=4096, alternate_sign=False, norm=None),
        TfidfTransformer(sublinear_tf=True),
        LogisticRegression(C=3.0, solver="saga", max_iter=2000, random_state=0),
    ).fit(data.train.texts, data.train.labels)
    inputs, _ = task.collate([data.test[i] for i in range(len(data.test))])
    with torch.no_grad():
        probs = model(inputs).softmax(1).numpy()
    expected = reference.predict_proba(data.test.texts)
    assert abs(probs - expected).max() < 1e-4
    assert not any(p.requires_grad for p in model.part("classical").module.parameters())


def test_predict_on_strings_and_a_file(task, tiny_bert, topic_tsv, tmp_path) -> None:
    model, data = build(task, tiny_bert, topic_tsv)
    lines = tmp_path / "messages.txt"
    lines.write_text("pizza pasta cheese\n\n  the laptop battery  \n", encoding="utf-8")
    from tlengine.task import PredictInput

    results = task.predict(
        model,
        [PredictInput("goal match team", "text"), PredictInput(str(lines), "file")],
        data.info,
        options={"top_k": 2},
    )
    assert [r["input"] for r in results] == ["goal match team", "pizza pasta cheese", "the laptop battery"]
    for r in results:
        assert r["label"] in data.info["classes"] and 0 < r["probability"] <= 1
        assert len(r["predictions"]) == 2 and r["predictions"][0]["label"] == r["label"]
    from tlengine.errors import DataError

    with pytest.raises(DataError, match="does not exist"):
        task.predict(model, [PredictInput(str(tmp_path / "none.txt"), "file")], data.info, options={})


def test_class_weights_and_balanced_sampler(task, tiny_bert, tmp_path) -> None:
    rows = [("ham", t) for _, t in make_texts(30)] + [("spam", "win prize goal") for _ in range(6)]
    rows += [("spam", f"win a prize {w}") for w in ("today", "now", "really", "with", "this", "that")]
    tsv = tmp_path / "imbalanced.tsv"
    tsv.write_text("".join(f"{label}\t{text}\n" for label, text in rows), encoding="utf-8")
    mc = model_config(tiny_bert)
    pre = task.preprocessing(mc, init={"encoder": True}, base_dir=tmp_path)
    dc = DataConfig.model_validate(
        {"dataset": "text-file", "args": {"path": tsv.name}, "balance": "class_weights", "test_fraction": 0.3}
    )
    task.build_data(dc, preprocessing=pre, base_dir=tmp_path, seed=0)
    weights = task._class_weights
    assert weights is not None and weights[1] > 5 * weights[0]  # spam is rare: weighs more
    assert task.balances_classes  # the TF-IDF arm's class_weight: auto follows it
    dc = DataConfig.model_validate({**dc.model_dump(), "balance": "sampler"})
    sampler_task = TextClassificationTask(get_plugin_manager().registries, TrainConfig())
    data = sampler_task.build_data(dc, preprocessing=pre, base_dir=tmp_path, seed=0)
    loader = sampler_task.loader(data.train, batch_size=8, shuffle=True, seed=0)
    drawn = torch.cat([targets for _, targets in loader])
    assert 0.35 < drawn.float().mean() < 0.65  # about half spam, though spam is 12/102 of the texts
    assert isinstance(data.train, TextDataset)


# ---------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_tiny_text_pipeline_runs_end_to_end_and_predicts(tiny_bert, topic_tsv, write_pipeline, cli, tmp_path) -> None:
    pipeline = write_pipeline(text_pipeline(topic_tsv, tiny_bert))
    out = tmp_path / "run"
    proc = cli("run", str(pipeline), "--output", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["arms"]) == {"fine-tune", "feature-extraction", "tfidf-logreg", "scratch"}
    for arm in metrics["arms"].values():
        assert {"accuracy", "macro_f1", "macro_roc_auc"} <= set(arm["metrics"])
    assert metrics["arms"]["tfidf-logreg"]["metrics"]["accuracy"] > 0.8  # topic words: easy for TF-IDF
    cache = metrics["cache"]["feature-extraction"]  # trained from the feature cache: one encoder pass per text
    assert cache["layout"]["pooling"] == "avg" and cache["splits"]["train"]["rows_extracted"] == 36
    assert (out / "plots" / "confusion_fine-tune.png").is_file()
    proc = cli("predict", str(out), "--text", "pizza pasta cheese", "--text", "laptop code bug", "--json")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [r["input"] for r in results] == ["pizza pasta cheese", "laptop code bug"]
    proc = cli("predict", str(out), "--arm", "tfidf-logreg", "--text", "pizza pasta cheese")
    assert proc.returncode == 0 and "food" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.slow
def test_text_run_resumes_after_sigkill_to_the_same_results(tiny_bert, topic_tsv, tmp_path) -> None:
    config = text_pipeline(topic_tsv, tiny_bert, epochs=3)
    config["compare"] = []
    reference = run_in_process(config, tmp_path / "reference")
    run = tmp_path / "killed"
    run_and_kill(config, run, {"kind": "step", "after": ["main", "scratch", 1], "n": 2})
    assert [(r["arm"], r["epoch"]) for r in records(run)][-1] == ("scratch", 1)
    resumed, said, trained = resume(run)
    assert trained == [("main", "scratch", 2), ("main", "scratch", 3)]
    assert_same_results(resumed, reference, run, tmp_path / "reference")


def test_gradual_unfreezing_runs_the_frozen_encoder_layers_in_bf16(task, tiny_bert, topic_tsv) -> None:
    """Transformer layers frozen by gradual unfreezing get the bf16 forward (checked against
    fp32 on the first call) and the thawed top trains."""
    from tlengine.config import ExtractionConfig, GradualUnfreezing
    from tlengine.execution import configure_execution
    from tlengine.strategies.fine_tune import FineTune

    model, data = build(task, tiny_bert, topic_tsv)
    execution = configure_execution(
        model, ExtractionConfig(precision="bf16", tolerance=0.9), device=torch.device("cpu")
    )
    strategy = FineTune(
        StrategyConfig(name="fine-tune", gradual_unfreezing=GradualUnfreezing(start_epoch=1, every_epochs=1))
    )
    strategy.apply(model, 2)  # one block thawed: layer.1; embeddings and layer.0 frozen
    strategy.train_mode(model)
    inputs, targets = task.collate([data.train[i] for i in range(8)])
    loss = task.training_loss(model, inputs, targets)
    loss.backward()
    layers = model.part("encoder").module.model.encoder.layer
    assert all(p.grad is not None for p in layers[1].parameters())
    assert all(p.grad is None for p in layers[0].parameters())
    frozen = execution.stats()["encoder"]["frozen_blocks"]
    assert frozen["count"] == 2 and frozen["precision"] == "bf16" and frozen["modules_reduced"] == 2
    assert frozen["min_cosine_to_fp32"] >= 0.9


def test_hub_checkpoints_are_refused_offline_with_a_sentence(task, tmp_path, monkeypatch) -> None:
    from tlengine.errors import WeightsError

    monkeypatch.setenv("TLENGINE_OFFLINE", "1")
    with pytest.raises(WeightsError, match="offline mode is on"):
        encoders.resolve_checkpoint("hf:bert-base-uncased", weights_registry=None, base_dir=tmp_path)
    with pytest.raises(WeightsError, match="neither named weights"):
        encoders.resolve_checkpoint("no-such-folder", weights_registry=None, base_dir=tmp_path)
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt" / "config.json").write_text('{"model_type": "gpt2"}', encoding="utf-8")
    with pytest.raises(WeightsError, match="'gpt2' model"):
        encoders.resolve_checkpoint("gpt", weights_registry=None, base_dir=tmp_path)
