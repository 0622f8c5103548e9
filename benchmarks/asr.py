"""ASR benchmark: speaker adaptation of the pretrained recogniser (Whisper tiny.en) in
optimizer steps/s per method, greedy transcription's real-time factor, and speaker-ID
training on cached encoder features vs the naive loop.

**Adaptation** (in-process). ``benchmarks/pipelines/asr_bench.yaml`` (the
asr-adaptation-quickstart's Whisper tiny.en, synthetic espeak-ng speakers and arms) is loaded
and prepared as ``tlengine run`` does (:meth:`tlengine.pipeline.Runner.prepare`: task, data,
one model per arm by ``Runner.build_model``); each arm is then set up as
:func:`tlengine.training.loop.train_arm` does it - ``strategy.prepare``, the execution plan
(fp32: the task allows no reduced precision), ``strategy.param_groups`` +
``build_optimizer``, ``strategy.apply(model, 1)``, ``strategy.train_mode`` - and its steps are
the loop's: ``strategy.training_step`` (teacher-forcing cross-entropy), backward, gradient
clipping (``train.grad_clip``), ``optimizer.step``, the LR schedule:

================  =============================================================  ==============
method            what trains                                                    parameters
================  =============================================================  ==============
lhuc              LHUC scales on the 4 encoder + 4 decoder layers                3,072
adapter           a 32-wide bottleneck adapter after each of the 8 layers        ~200k
fine-tune         the encoder's top 2 layers (lr x 0.03), the decoder frozen     ~3.5M
full-fine-tune    every block of both parts: the plain forward+backward          ~37.8M
                  reference
================  =============================================================  ==============

A step is one batch of ``batch`` (4; quick 1) real synthetic utterances of the target speaker
(its adaptation utterances, length-bucketed as the task's loader batches them, whole batches
only; Whisper pads every clip to 30 s of log-mel). After ``warmup`` untimed steps per
method, ``repeats`` rounds time ``steps`` steps of each method, the methods alternating
within a round (a slow patch of a shared machine hits them all); ``seconds_per_step`` is the
median over rounds. ``trained_params`` counts the parameters the optimizer updates
(``requires_grad`` after ``apply``); ``speedup_vs_full_fine_tune`` = the method's steps/s /
full fine-tuning's.

**Transcription** (in-process): the unadapted recogniser (the ``zero-shot`` arm's model) in
eval mode under ``torch.inference_mode``, ``model.transcribe`` (greedy, at most
``max_new_tokens`` 96) of the first ``utterances`` (16; quick 2) test utterances, in batches
of 1 and of 8 (quick 2); the encoder alone (``model.forward_features``) is timed on the same
batches. ``rtf`` = transcription seconds / seconds of audio (< 1: faster than real time; the
log-mel features are computed beforehand, their cost is ``features_seconds`` and
``rtf_with_features`` adds it); ``encoder_share`` = encoder seconds / transcription seconds;
median of ``repeats`` rounds after one untimed batch per form, the forms alternating.
``same_as_batch_1`` = share of transcripts equal to batch 1's; ``wer`` against the references
(the task's normaliser).

**Speaker-ID training** (as :mod:`benchmarks.captioning` does, with
:func:`benchmarks.training.run_arms`): the speaker-identification pipeline
(``benchmarks/pipelines/speaker_id_bench.yaml``: speaker-id-quickstart's feature-extraction arm,
a linear head on mask-mean-pooled Whisper tiny.en encoder features, on its 6 speakers x 20
utterances = 90 train / 30 test with its 5 s encoder window, no validation split, 20 epochs,
batch 8; quick: 2 speakers x 3
utterances, one epoch) once per arm through ``tlengine run``, each in its
own process: ``naive`` (``strategy.cache.enabled=false``: the frozen encoder runs on every
batch of every epoch) and ``cached`` (the pooled features cached once), both fp32 (the
:data:`benchmarks.training.FP32` flags) with the same seed and data. Per arm seconds (cache
build included), epochs-only seconds, ``speedup_vs_naive`` and test accuracy (both arms train
the same head on the same features: the accuracies should agree). Left out, saying why, when
the plugin has no ``speaker-identification`` task or the pipeline does not validate.

Nothing is asserted; ``--quick`` shrinks every size (a smoke test, not numbers).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

from benchmarks.machine import OtherLoad
from benchmarks.training import FP32, _compare, _row, run_arms, task_benchmark_header

PIPELINE = Path(__file__).resolve().parent / "pipelines" / "asr_bench.yaml"
SPEAKER_ID_PIPELINE = Path(__file__).resolve().parent / "pipelines" / "speaker_id_bench.yaml"
SPEAKER_ID_TASK = "speaker-identification"

#: the adaptation methods timed, in order: the pipeline's arms of these labels
METHODS = ("lhuc", "adapter", "fine-tune", "full-fine-tune")
REFERENCE_METHOD = "full-fine-tune"
#: the arm whose model is the unadapted recogniser (transcription timings)
BASE_ARM = "zero-shot"

ADAPTATION_DEFAULTS = {"batch": 4, "warmup": 1, "steps": 2, "repeats": 3}
QUICK_ADAPTATION = {"batch": 1, "warmup": 0, "steps": 1, "repeats": 1}
TRANSCRIPTION_DEFAULTS = {"utterances": 16, "batches": (1, 8), "warmup": 1, "repeats": 3}
QUICK_TRANSCRIPTION = {"utterances": 2, "batches": (1, 2), "warmup": 0, "repeats": 1}

#: speaker-ID arms (the feature-extraction arm alone; every arm fp32, so the cache is the only difference)
SPEAKER_ID_ARMS: dict[str, list[str]] = {
    "naive": ["strategy.cache.enabled=false", *FP32],
    "cached": ["strategy.cache.enabled=true", *FP32],
}
#: quick mode (tests): 2 speakers x 3 utterances (4 train, 2 test), one epoch
SPEAKER_ID_QUICK_OVERRIDES = [
    "data.args.speakers=2",
    "data.args.utterances_per_speaker=3",
    "train.epochs=1",
    "train.batch_size=4",
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- preparation
def _prepared(pipeline: Path, echo: Callable[[str], None] | None) -> tuple[Any, Any, Any]:
    """(runner, prepared pipeline, its one stage), built as ``tlengine run`` builds them."""
    from tlengine.pipeline import Runner
    from tlengine.plugins import get_plugin_manager
    from tlengine.validation import load_pipeline

    manager = get_plugin_manager()
    loaded = load_pipeline(str(pipeline), [], manager.registries)
    runner = Runner(manager, echo=echo or (lambda s: None))
    prepared = runner.prepare(loaded, check_output=False)
    return runner, prepared, prepared.stages[0]


def _arm_model(runner: Any, prepared: Any, stage: Any, label: str) -> tuple[Any, Any, Any]:
    """(strategy config, strategy, model) of the stage's arm ``label``, as the runner builds them."""
    cfg = next((a for a in stage.plan.arms if a.arm == label), None)
    if cfg is None:
        raise KeyError(f"{prepared.config.name} has no arm '{label}' (arms: {[a.arm for a in stage.plan.arms]})")
    strategy = runner.strategy(cfg)
    model = runner.build_model(stage, strategy, prepared.seeds[0], prepared.base_dir)
    return cfg, strategy, model


# --------------------------------------------------------------------------- adaptation
class _Stepper:
    """One method's model, strategy and optimizer, set up as ``train_arm`` sets up an arm."""

    def __init__(self, runner: Any, prepared: Any, stage: Any, label: str, device: torch.device, total_steps: int):
        from tlengine.execution import configure_execution
        from tlengine.training.optim import LRSchedule, build_optimizer
        from tlengine.training.seeding import derive_seed, seed_everything

        self.label, self.device, self.task = label, device, stage.task
        cfg, self.strategy, self.model = _arm_model(runner, prepared, stage, label)
        self.train = stage.plan.arm_train(cfg)
        seed_everything(derive_seed(prepared.seeds[0], cfg.arm, "prepare"))
        self.strategy.prepare(self.model, stage.data)
        self.model.to(device)
        self.execution = configure_execution(
            self.model,
            stage.plan.extraction,
            device=device,
            task_allows_reduced=stage.task.allows_reduced_precision,
            echo=lambda s: None,
        )
        self.optimizer = build_optimizer(self.strategy.param_groups(self.model, self.train.lr), self.train)
        self.schedule = LRSchedule(self.optimizer, kind=self.train.scheduler, total_steps=total_steps, warmup_steps=0)
        self.trainable_blocks = self.strategy.apply(self.model, 1)
        self.strategy.train_mode(self.model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.trained_params = sum(p.numel() for p in self.params)
        self.total_params = sum(p.numel() for p in self.model.parameters())
        self.step_index = 0
        self.total_steps = total_steps
        self.last_loss: float | None = None

    def step(self, batch: tuple[Any, Any]) -> None:
        from tlengine.strategies.base import StepContext

        inputs, targets = batch
        ctx = StepContext(
            self.task, self.model, self.model, inputs, targets, 1, self.step_index, self.total_steps, self.device
        )
        losses = self.strategy.training_step(ctx)
        loss = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.train.grad_clip)
        self.optimizer.step()
        self.schedule.step()
        self.step_index += 1
        self.last_loss = float(loss.detach())

    def close(self) -> None:
        self.execution.release()
        self.model.execution = None


def _adaptation_batches(stage: Any, batch: int, device: torch.device) -> tuple[list[Any], float]:
    """Whole batches of ``batch`` of the target speaker's adaptation utterances (the task's
    length-bucketed loader), on ``device``; and their mean seconds of audio per batch."""
    data = stage.data.train
    loader = stage.task.loader(data, batch_size=batch, shuffle=False, seed=0)
    batches = [stage.task.move_to(b, device) for b in loader]
    whole = [b for b in batches if len(b[1]["texts"]) == batch]
    if not whole:
        raise ValueError(f"the target speaker has {len(data)} adaptation utterances: no whole batch of {batch}")
    seconds = sum(data.durations) / len(data) * batch
    return whole, seconds


def run_adaptation_steps(
    runner: Any,
    prepared: Any,
    stage: Any,
    *,
    quick: bool,
    device: torch.device,
    methods: tuple[str, ...] = METHODS,
    echo: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One row per method (``kind: asr-adaptation``): steps/s and trained parameters."""
    dflt = QUICK_ADAPTATION if quick else ADAPTATION_DEFAULTS
    batch, warmup, steps, repeats = dflt["batch"], dflt["warmup"], dflt["steps"], dflt["repeats"]
    batches, audio_per_batch = _adaptation_batches(stage, batch, device)
    total = warmup + steps * repeats
    started = time.perf_counter()
    steppers: dict[str, _Stepper] = {}
    errors: dict[str, str] = {}
    times: dict[str, list[float]] = {m: [] for m in methods}
    with OtherLoad() as load:
        for label in methods:
            try:
                s = steppers[label] = _Stepper(runner, prepared, stage, label, device, total)
                for i in range(warmup):
                    s.step(batches[i % len(batches)])
                _sync(device)
            except Exception as exc:  # one method failing leaves the others' rows
                errors[label] = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
                steppers.pop(label, None)
                continue
            if echo:
                echo(
                    f"[adaptation] {label}: {s.trained_params:,} trained parameters, "
                    f"{len(s.trainable_blocks)} pretrained blocks trainable"
                    + (f", warm-up loss {s.last_loss:.3f}" if s.last_loss is not None else "")
                )
        for round_ in range(repeats):
            for label, s in steppers.items():
                t0 = time.perf_counter()
                for i in range(steps):
                    s.step(batches[(warmup + round_ * steps + i) % len(batches)])
                _sync(device)
                times[label].append((time.perf_counter() - t0) / steps)
        for s in steppers.values():
            s.close()

    rows: list[dict[str, Any]] = []
    for label in methods:
        row: dict[str, Any] = {"kind": "asr-adaptation", "method": label, "batch": batch}
        s = steppers.get(label)
        if s is None or not times[label]:
            row["error"] = errors.get(label, "no timed round")
            rows.append(row)
            continue
        per_step = statistics.median(times[label])
        row.update(
            strategy=s.strategy.name,
            trained_params=s.trained_params,
            total_params=s.total_params,
            trained_share=round(s.trained_params / s.total_params, 6),
            trainable_blocks=len(s.trainable_blocks),
            steps=steps,
            repeats=repeats,
            seconds_per_step=round(per_step, 4),
            steps_per_s=round(1.0 / per_step, 4),
            utterances_per_s=round(batch / per_step, 3),
            audio_seconds_per_s=round(audio_per_batch / per_step, 3),
            final_loss=round(s.last_loss, 4) if s.last_loss is not None else None,
        )
        rows.append(row)
    ref = next((r for r in rows if r["method"] == REFERENCE_METHOD and r.get("steps_per_s")), None)
    for r in rows:
        ok = ref is not None and r.get("steps_per_s")
        r["speedup_vs_full_fine_tune"] = round(r["steps_per_s"] / ref["steps_per_s"], 3) if ok else None
        if echo:
            echo(
                f"[adaptation] {r['method']:15s} "
                + (
                    f"error: {r['error']}"
                    if "error" in r
                    else f"{r['steps_per_s']} steps/s ({r['seconds_per_step']} s/step, batch {batch}), "
                    f"{r['trained_params']:,} parameters, x{r['speedup_vs_full_fine_tune']} vs full fine-tuning"
                )
            )
    meta = {
        "pipeline": str(PIPELINE),
        "target_speaker": stage.data.info.get("adapted_to"),
        "batch": batch,
        "batches": len(batches),
        "audio_seconds_per_batch": round(audio_per_batch, 3),
        "warmup": warmup,
        "steps": steps,
        "repeats": repeats,
        "optimizer": stage.plan.train.optimizer,
        "grad_clip": stage.plan.train.grad_clip,
        "seconds": round(time.perf_counter() - started, 1),
        **load.summary(),
    }
    return rows, meta


# --------------------------------------------------------------------------- transcription
def run_transcription(
    runner: Any,
    prepared: Any,
    stage: Any,
    *,
    quick: bool,
    device: torch.device,
    echo: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One row per batch size (``kind: asr-inference``): real-time factor and the encoder's share."""
    from tlengine_plugins.asr_speaker_adaptation.audio import load_audio
    from tlengine_plugins.asr_speaker_adaptation.scoring import error_rates
    from tlengine_plugins.asr_speaker_adaptation.speech_batches import features_of
    from tlengine_plugins.asr_speaker_adaptation.text_normalize import TextNormalizer

    dflt = QUICK_TRANSCRIPTION if quick else TRANSCRIPTION_DEFAULTS
    warmup, repeats, sizes = dflt["warmup"], dflt["repeats"], tuple(dflt["batches"])
    data = stage.data.test
    n = min(dflt["utterances"], len(data))
    audio_seconds = float(sum(data.durations[:n]))
    _, strategy, model = _arm_model(runner, prepared, stage, BASE_ARM)
    strategy.prepare(model, stage.data)
    model.to(device).eval()

    started = time.perf_counter()
    with OtherLoad() as load:
        t0 = time.perf_counter()  # the features a user's clip needs first: read + resample + log-mel
        for i in range(n):
            u = data.utterances[i]
            features_of(load_audio(u.audio_path, data.preprocessing["sample_rate"]), data.preprocessing)
        features_seconds = time.perf_counter() - t0
        samples = [data[i] for i in range(n)]
        references = [t for _, t, _ in samples]
        forms = {
            b: [stage.task.move_to(stage.task.collate(samples[i : i + b]), device)[0] for i in range(0, n, b)]
            for b in sizes
        }
        if echo:
            echo(
                f"[transcription] {n} test utterances ({audio_seconds:.1f} s of audio), batches {list(sizes)}, "
                f"the unadapted {stage.plan.model.weights}"
            )
        times: dict[int, list[float]] = {b: [] for b in sizes}
        enc_times: dict[int, list[float]] = {b: [] for b in sizes}
        texts: dict[int, list[str]] = {}
        with torch.inference_mode():
            for b in sizes:  # warm-up: one untimed batch per form
                for _ in range(warmup):
                    model.transcribe(forms[b][0])
                    model.forward_features(forms[b][0])
            for _ in range(repeats):
                for b in sizes:
                    t0 = time.perf_counter()
                    out = [t for x in forms[b] for t in model.transcribe(x)]
                    _sync(device)
                    times[b].append(time.perf_counter() - t0)
                    texts.setdefault(b, out)
                    t0 = time.perf_counter()
                    for x in forms[b]:
                        model.forward_features(x)
                    _sync(device)
                    enc_times[b].append(time.perf_counter() - t0)

    normalizer = TextNormalizer.model_validate(stage.data.info.get("normalizer", {}))
    rows: list[dict[str, Any]] = []
    reference = texts.get(sizes[0])
    for b in sizes:
        seconds, encoder = statistics.median(times[b]), statistics.median(enc_times[b])
        rows.append(
            {
                "kind": "asr-inference",
                "form": f"batch-{b}",
                "batch": b,
                "utterances": n,
                "audio_seconds": round(audio_seconds, 3),
                "seconds": round(seconds, 4),
                "rtf": round(seconds / audio_seconds, 4),
                "rtf_with_features": round((seconds + features_seconds) / audio_seconds, 4),
                "utterances_per_s": round(n / seconds, 3),
                "encoder_seconds": round(encoder, 4),
                "encoder_share": round(min(1.0, encoder / seconds), 4),
                "speedup_vs_batch_1": None,
                "same_as_batch_1": round(sum(a == c for a, c in zip(reference, texts[b])) / n, 3),
                "wer": round(float(error_rates(references, texts[b], normalizer)["wer"]), 4),
                "example": texts[b][0],
            }
        )
    for r in rows:
        r["speedup_vs_batch_1"] = round(rows[0]["seconds"] / r["seconds"], 3)
        if echo:
            echo(
                f"[transcription] {r['form']:8s} RTF {r['rtf']} ({r['utterances_per_s']} utterances/s), "
                f"encoder {100 * r['encoder_share']:.0f}%, x{r['speedup_vs_batch_1']} vs batch 1, "
                f"WER {r['wer']}, e.g. '{r['example']}'"
            )
    meta = {
        "utterances": n,
        "audio_seconds": round(audio_seconds, 3),
        "features_seconds": round(features_seconds, 4),
        "batches": list(sizes),
        "warmup": warmup,
        "repeats": repeats,
        "max_new_tokens": getattr(model, "max_new_tokens", None),
        "weights": stage.plan.model.weights,
        "seconds": round(time.perf_counter() - started, 1),
        **load.summary(),
    }
    return rows, meta


# --------------------------------------------------------------------------- speaker ID
def speaker_id_available() -> str | None:
    """None when the speaker-ID benchmark can run (the task is registered and the pipeline
    validates), else why not."""
    from tlengine.errors import TLEngineError
    from tlengine.plugins import registries
    from tlengine.validation import load_pipeline

    if SPEAKER_ID_TASK not in registries().tasks:
        return f"no '{SPEAKER_ID_TASK}' task is registered: the speaker-ID training comparison is left out"
    try:
        load_pipeline(str(SPEAKER_ID_PIPELINE), [], registries())
    except TLEngineError as exc:
        why = " ".join(str(exc).split())[:300]
        return f"{SPEAKER_ID_PIPELINE.name} does not validate ({why}): the speaker-ID training comparison is left out"
    return None


def _speaker_id_row(arm: str, outcome: dict[str, Any], epochs: int, run_dir: Path) -> dict[str, Any]:
    """:func:`benchmarks.training._row` (accuracy = the run's primary metric) with the epochs' seconds."""
    from benchmarks.detection import _epochs_seconds

    row = _row(arm, outcome, epochs, run_dir)
    row["kind"] = "asr-speaker-id"
    row["epochs_seconds"] = _epochs_seconds(run_dir) if "metrics" in outcome else None
    cache = row.get("cache") or {}
    row["head_training_seconds"] = cache.get("head_training_seconds") if isinstance(cache, dict) else None
    return row


def _speaker_id_describe(row: dict[str, Any]) -> str:
    return f"{row['seconds']} s (epochs {row.get('epochs_seconds')} s), accuracy {row['accuracy']}"


def run_speaker_id_training(
    *,
    epochs: int | None,
    quick: bool,
    output_dir: str | Path | None,
    threads: int | None,
    timeout: float = 1800,
    echo: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    common = ["baseline=null", "compare=[]"] + ([f"train.epochs={epochs}"] if epochs else [])
    if quick:
        common += SPEAKER_ID_QUICK_OVERRIDES
    started = time.perf_counter()
    rows, load = run_arms(
        SPEAKER_ID_ARMS,
        common,
        pipeline=SPEAKER_ID_PIPELINE,
        epochs=epochs or 0,
        output_dir=output_dir,
        timeout=timeout,
        threads=threads,
        echo=echo,
        make_row=_speaker_id_row,
        describe=_speaker_id_describe,
    )
    _compare(rows)
    meta = {
        "pipeline": str(SPEAKER_ID_PIPELINE),
        "overrides": common,
        "arms": SPEAKER_ID_ARMS,
        "seconds": round(time.perf_counter() - started, 1),
        **load,
    }
    return rows, meta


# --------------------------------------------------------------------------- all three
def run_asr_benchmark(
    *,
    quick: bool = False,
    epochs: int | None = None,
    output_dir: str | Path | None = None,
    threads: int | None = None,
    device: str = "auto",
    speaker_id: bool = True,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Adaptation rows (``kind: asr-adaptation``), transcription rows (``asr-inference``) and,
    when the plugin has the speaker-identification task, speaker-ID training rows
    (``asr-speaker-id``); see the module docstring.

    output_dir: the speaker-ID arms' run directories go into its ``asr`` folder (default: a
    temporary folder, removed afterwards). threads: torch threads here and OMP_NUM_THREADS of
    the speaker-ID runs. device: cpu, cuda[:N] or auto (CUDA when present, else CPU).
    """
    dev, result = task_benchmark_header("asr", device, threads=threads, quick=quick)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with OtherLoad() as load:
        runner, prepared, stage = _prepared(PIPELINE, echo)
        adapt_rows, result["adaptation"] = run_adaptation_steps(
            runner, prepared, stage, quick=quick, device=dev, echo=echo
        )
        rows += adapt_rows
        infer_rows, result["inference"] = run_transcription(runner, prepared, stage, quick=quick, device=dev, echo=echo)
        rows += infer_rows
        missing = speaker_id_available() if speaker_id else "not asked for"
        if missing is None:
            sid_rows, result["speaker_id"] = run_speaker_id_training(
                epochs=epochs,
                quick=quick,
                output_dir=Path(output_dir) / "asr" if output_dir is not None else None,
                threads=threads,
                echo=echo,
            )
            rows += sid_rows
        else:
            result["speaker_id"] = {"skipped": missing}
            if echo:
                echo(f"[speaker-id] skipped: {missing}")
    return {**result, "seconds": round(time.perf_counter() - started, 1), **load.summary(), "rows": rows}


# --------------------------------------------------------------------------- markdown
def _params(value: Any) -> str:
    return "—" if value is None else f"{value:,}"


def markdown_section(result: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """ASR: adaptation steps/s per method, transcription RTF, speaker-ID naive vs cached."""
    from benchmarks.report import _num, _table, _x

    meta = result.get("asr", result)
    adapt = [r for r in rows if r.get("kind") == "asr-adaptation"]
    infer = [r for r in rows if r.get("kind") == "asr-inference"]
    sid = [r for r in rows if r.get("kind") == "asr-speaker-id"]
    lines: list[str] = []
    ameta = meta.get("adaptation") or {}
    if adapt:
        lines += ["## ASR adaptation: Whisper tiny.en optimizer steps/s per method", ""]
        lines.append(
            f"Pipeline `{Path(ameta.get('pipeline', '')).name}` prepared in-process as `tlengine run` does; each "
            "method set up as the training loop sets up an arm (strategy.prepare, param_groups + "
            f"{ameta.get('optimizer')}, apply(model, 1), train_mode) and stepped as it steps (teacher-forcing loss, "
            f"backward, grad clip {ameta.get('grad_clip')}, optimizer step) on batches of {ameta.get('batch')} real "
            f"utterances of speaker `{ameta.get('target_speaker')}` ({_num(ameta.get('audio_seconds_per_batch'))} s "
            f"of audio a batch, padded to 30 s); median of {ameta.get('repeats')} round(s) of "
            f"{ameta.get('steps')} step(s) after {ameta.get('warmup')} warm-up step(s), the methods alternating. "
            "trained = parameters the optimizer updates; vs full = steps/s / full fine-tuning's (every block of "
            "both parts: the plain forward+backward reference)."
        )
        lines.append("")
        body = []
        for r in adapt:
            if r.get("error"):
                body.append([r["method"], "error"] + ["—"] * 6)
                continue
            body.append(
                [
                    r["method"],
                    _params(r.get("trained_params")),
                    f"{100 * r['trained_share']:.3g}%",
                    _num(r.get("seconds_per_step")),
                    _num(r.get("steps_per_s")),
                    _num(r.get("utterances_per_s")),
                    _num(r.get("audio_seconds_per_s")),
                    _x(r.get("speedup_vs_full_fine_tune")),
                ]
            )
        lines += _table(
            ["method", "trained params", "of all", "s/step", "steps/s", "utterances/s", "audio s/s", "vs full"],
            body,
        )
        lines.append("")
    imeta = meta.get("inference") or {}
    if infer:
        lines += ["## ASR transcription: greedy real-time factor, batch 1 vs batched", ""]
        lines.append(
            f"The unadapted `{imeta.get('weights')}` under `torch.inference_mode`, `model.transcribe` (greedy, at "
            f"most {imeta.get('max_new_tokens')} tokens) of {imeta.get('utterances')} test utterances "
            f"({_num(imeta.get('audio_seconds'))} s of audio); median of {imeta.get('repeats')} round(s) after one "
            "untimed batch per form. RTF = seconds / audio seconds (< 1: faster than real time); + features adds "
            f"reading and log-mel ({_num(imeta.get('features_seconds'))} s); encoder share = the encoder alone "
            "(`forward_features`, same batches) / transcription; same = share of transcripts equal to batch 1's."
        )
        lines.append("")
        body = [
            [
                r["form"],
                _num(r.get("seconds")),
                _num(r.get("rtf")),
                _num(r.get("rtf_with_features")),
                _num(r.get("utterances_per_s")),
                f"{100 * r['encoder_share']:.0f}%",
                _x(r.get("speedup_vs_batch_1")),
                _num(r.get("same_as_batch_1")),
                _num(r.get("wer"), 4),
            ]
            for r in infer
        ]
        lines += _table(
            ["form", "seconds", "RTF", "RTF + features", "utterances/s", "encoder share", "vs batch 1", "same", "WER"],
            body,
        )
        lines.append("")
    smeta = meta.get("speaker_id") or {}
    if sid:
        lines += ["## Speaker-ID training: cached Whisper encoder features vs the naive loop", ""]
        lines.append(
            f"Pipeline `{Path(smeta.get('pipeline', '')).name}` (feature-extraction arm: a linear head on "
            "mask-mean-pooled encoder features) through `tlengine run`, one process per arm, same seed and data, "
            "encoder fp32 in both; seconds = the arm's time in metrics.json (the cached arm's includes building "
            "the cache), epochs s = the epochs alone; speed-up = naive seconds / the arm's; accuracy = test."
        )
        lines.append("")
        body = [
            [
                r["arm"],
                str(r.get("epochs")),
                _num(r.get("seconds")),
                _num(r.get("epochs_seconds")),
                _num(r.get("extraction_seconds")),
                _x(r.get("speedup_vs_naive")),
                _num(r.get("accuracy"), 4),
                _num(r.get("accuracy_delta_points")),
                _num(r.get("wall_seconds")),
            ]
            for r in sid
        ]
        lines += _table(
            [
                "arm",
                "epochs",
                "seconds",
                "epochs s",
                "cache build s",
                "speed-up vs naive",
                "accuracy",
                "Δ acc (points)",
                "wall s (process)",
            ],
            body,
        )
        lines.append("")
    notes = [f"`{r['method']}`: {r['error']}" for r in adapt if r.get("error")]
    notes += [f"speaker-ID `{r['arm']}`: {r['error']}" for r in sid if r.get("error")]
    notes += [f"speaker-ID `{r['arm']}`: {r['note']}" for r in sid if r.get("note")]
    if smeta.get("skipped"):
        notes.append(f"speaker-ID: {smeta['skipped']}")
    for what, m in (("adaptation", ameta), ("transcription", imeta), ("speaker-ID", smeta)):
        if m.get("busy_warning"):
            notes.append(f"{what}: {m['busy_warning']}")
    if imeta.get("busy_warning") and infer:
        notes.append(
            "transcription: batch 1 decodes in many small steps, whose 2-thread parallel regions stall most when "
            "another process holds a core; compare batch sizes on an idle machine (or with --threads 1)"
        )
    if notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in dict.fromkeys(notes)] + [""]
    return lines


# --------------------------------------------------------------------------- report.py + the asr rows
def _is_asr(row: dict[str, Any]) -> bool:
    return str(row.get("kind", "")).startswith("asr-")


def to_markdown(result: dict[str, Any]) -> str:
    """:func:`benchmarks.report.to_markdown` of the other rows, then the ASR section."""
    from benchmarks import report

    rows = result.get("rows", [])
    asr = [r for r in rows if _is_asr(r)]
    text = report.to_markdown({**result, "rows": [r for r in rows if not _is_asr(r)]})
    if not asr and not result.get("asr") and result.get("kind") != "asr":
        return text
    return text.rstrip() + "\n\n" + "\n".join(markdown_section(result, asr)).rstrip() + "\n"


def write_results(result: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """:func:`benchmarks.report.write_results`, its markdown with the ASR section."""
    from benchmarks import report

    json_path, md_path = report.write_results(result, out_dir)
    md_path.write_text(to_markdown(result), encoding="utf-8")
    return json_path, md_path
