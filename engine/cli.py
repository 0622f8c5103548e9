"""The ``tlengine`` command line. Each command is a thin shell over the engine.

User errors (``TLEngineError``) print one sentence and exit non-zero; tracebacks are
shown only with ``--debug``.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable

import click

from .errors import TLEngineError


def _fail(message: str, code: int) -> None:
    click.echo(message if message.startswith("config error") else f"error: {message}", err=True)
    sys.exit(code)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user errors into one line + exit code; bugs into one line unless --debug."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = click.get_current_context().find_root().params.get("debug", False)
        try:
            return fn(*args, **kwargs)
        except TLEngineError as exc:
            if debug:
                raise
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            if debug:
                raise
            _fail("interrupted", 130)
        except Exception as exc:  # a bug: keep it short unless asked
            if debug:
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", 1)

    return wrapper


def _manager(quiet: bool = False) -> Any:
    from .plugins import get_plugin_manager

    manager = get_plugin_manager()
    if not quiet:
        manager.warn_errors()
    return manager


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="tlengine")
def main(debug: bool) -> None:
    """tlengine: transfer learning from a YAML pipeline, measured against a scratch baseline."""


@main.command()
@click.argument("pipeline", required=False)
@click.argument("overrides", nargs=-1)
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    help="Run directory to create (default: output_dir/<name>-<time>).",
)
@click.option("--resume", type=click.Path(path_type=Path), help="Continue an interrupted run directory.")
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    help="Run on N processes of this machine: the same as `torchrun --standalone --nproc-per-node N -m tlengine run ...`.",
)
@handle_errors
def run(
    pipeline: str | None, overrides: tuple[str, ...], output: Path | None, resume: Path | None, nproc: int | None
) -> None:
    """Run PIPELINE (a YAML file or a shipped pipeline name) with key=value overrides.

    Under torchrun (`torchrun --nproc-per-node N -m tlengine run ...`, or `--nproc N`) every
    process trains its share of each batch and rank 0 writes the run directory."""
    from . import distributed
    from .pipeline import Runner
    from .reporting.tables import print_summary
    from .rundir import RunDirectory
    from .validation import load_pipeline

    if resume is not None and (pipeline or overrides):
        raise TLEngineError("--resume takes only the run directory; the pipeline and overrides are read from it")
    if resume is None and not pipeline:
        raise TLEngineError("missing PIPELINE: give a YAML file or a name from `tlengine pipelines`")
    if nproc is not None and nproc > 1 and not distributed.world().distributed:
        # a bad file or override is said once, here, not by every rank
        if resume is None:
            load_pipeline(pipeline, list(overrides), _manager().registries)
        else:
            RunDirectory.open(resume)
        _run_under_torchrun(nproc)
    world = distributed.init_from_env()
    if world.distributed:
        # torchrun stops the other ranks with SIGTERM when one fails: end like Ctrl-C, so
        # rank 0 marks the run failed with the command that resumes it
        signal.signal(signal.SIGTERM, _interrupt)
    manager = _manager(quiet=not world.is_main)
    runner = Runner(manager, echo=(lambda s: click.echo(s, err=True)) if world.is_main else (lambda s: None))
    try:
        if resume is not None:
            run_dir = runner.resume(resume)
        else:
            loaded = load_pipeline(pipeline, list(overrides), manager.registries)
            run_dir = runner.run(loaded, output=output)
    finally:
        distributed.shutdown()
    if world.is_main:
        summary = json.loads((run_dir / "metrics.json").read_text())
        print_summary(summary)
        click.echo(str(run_dir))


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _run_under_torchrun(nproc: int) -> None:
    """Run this same command (``--nproc`` dropped) under torchrun on ``nproc`` processes of
    this machine, then exit with its outcome; a rank's failure ends in one line here (the
    rank printed its own error above), not torchrun's traceback."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args
    from torch.distributed.run import run as torchrun

    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            args.append(arg)
    # torchrun would set 1 thread per process and say so; share this machine's cores instead
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    try:
        torchrun(parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", "tlengine", *args]))
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        code = failure.exitcode if isinstance(failure.exitcode, int) and failure.exitcode > 0 else 1
        _fail(f"rank {rank} of {nproc} stopped with exit code {failure.exitcode} (its error is above)", code)
    sys.exit(0)


@main.command()
@click.argument("pipeline", required=False)
@click.argument("overrides", nargs=-1)
@click.option("--schema", is_flag=True, help="Print the JSON schema of pipeline files instead.")
@handle_errors
def validate(pipeline: str | None, overrides: tuple[str, ...], schema: bool) -> None:
    """Check PIPELINE without running it: exit 0, or exit 2 with `config error:` lines."""
    from .config import PipelineConfig
    from .validation import load_pipeline

    if schema:
        doc = PipelineConfig.model_json_schema()
        # Keys a task adds to the data: and model: sections, per registered task.
        doc["x-task-options"] = {
            e.name: {"data": e.obj.DataOptions.model_json_schema(), "model": e.obj.ModelOptions.model_json_schema()}
            for e in _manager(quiet=True).registries.tasks.entries()
        }
        click.echo(json.dumps(doc, indent=2))
        return
    if not pipeline:
        raise TLEngineError("missing PIPELINE: give a YAML file or a name from `tlengine pipelines`")
    loaded = load_pipeline(pipeline, list(overrides), _manager().registries)
    from .plan import plan_stages

    config = loaded.config
    for stage in plan_stages(config):
        arms = ", ".join(f"{a.arm} ({a.name})" for a in stage.arms)
        start = f", init_from {stage.init_from}" if stage.init_from else ""
        click.echo(
            f"ok: {config.name}: stage {stage.name}: task {stage.task}, backbone {stage.model.backbone}"
            f"{start}, arms: {arms}"
        )
    if len(config.seed_list) > 1:
        click.echo(f"seeds: {', '.join(map(str, config.seed_list))}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def plugins(as_json: bool) -> None:
    """List installed plugins and what each registers."""
    manager = _manager(quiet=True)
    rows = [p.as_dict() for p in manager.plugins]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    from .reporting.tables import wide_console

    table = Table(title="tlengine plugins (`tlengine plugins --json` lists every name)", show_lines=True)
    for col in ("plugin", "distribution", "version", "registers", "status"):
        table.add_column(col)
    for p in rows:
        regs = "\n".join(
            f"{k} ({len(v)}): {', '.join(v[:4])}{', ...' if len(v) > 4 else ''}" for k, v in p["registered"].items()
        )
        table.add_row(p["name"], p["distribution"], p["version"], regs or "-", p["error"] or "ok")
    wide_console().print(table)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def pipelines(as_json: bool) -> None:
    """List the pipelines that plugins ship (run one with `tlengine run NAME`)."""
    manager = _manager()
    rows = [
        {"name": e.name, "plugin": e.plugin, "description": e.description, "path": str(e.obj)}
        for e in manager.registries.pipelines.entries()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max((len(r["name"]) for r in rows), default=0)
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {r['description']}  [{r['plugin']}]")


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--text", "texts", multiple=True, help="A string to predict on (repeatable), for tasks that take text.")
@click.option(
    "--top-k",
    default=3,
    show_default=True,
    type=int,
    help="How many labels to show per input (classification tasks); at least 1.",
)
@click.option(
    "--score-threshold",
    default=None,
    type=click.FloatRange(0.0, 1.0),
    help="Lowest score of a detection to report (detection tasks; default 0.5).",
)
@click.option(
    "--save",
    "save_dir",
    default=None,
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder to write annotated outputs into (detection: each image with its boxes drawn).",
)
@click.option(
    "--num-beams",
    default=None,
    type=click.IntRange(1, 16),
    help="Beam width of generated outputs (captioning; default: the run's model.num_beams, 1 = greedy).",
)
@click.option(
    "--speaker",
    default=None,
    help="Use the model adapted to this speaker (speech adaptation runs; without it: the unadapted base).",
)
@click.option("--arm", default=None, help="Use this arm's model instead of the run's primary one.")
@click.option("--stage", default=None, help="With --arm: the stage (default: the last).")
@click.option("--seed", default=None, type=int, help="With --arm: the seed (default: the first).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def predict(
    run_dir: Path,
    inputs: tuple[Path, ...],
    texts: tuple[str, ...],
    top_k: int,
    score_threshold: float | None,
    save_dir: Path | None,
    num_beams: int | None,
    speaker: str | None,
    arm: str | None,
    stage: str | None,
    seed: int | None,
    as_json: bool,
) -> None:
    """Run the trained model of RUN_DIR on INPUT files and/or --text strings."""
    from .predict import load_run_model
    from .task import PredictInput

    if top_k < 1:
        raise TLEngineError(f"--top-k must be at least 1, got {top_k}")
    if not inputs and not texts:
        raise TLEngineError("give at least one INPUT file or --text string to predict on")
    for path in inputs:
        if not path.is_file():
            raise TLEngineError(f"input {path} does not exist or is not a file")
    from .predict import adapted_model_file

    adapted = adapted_model_file(run_dir, speaker, arm=arm) if stage is None and seed is None else None
    if speaker is not None and adapted is None:
        raise TLEngineError(f"--speaker needs a run whose arms adapt to a speaker; {run_dir} has none")
    task, model, meta = load_run_model(_manager().registries, run_dir, arm=arm, stage=stage, seed=seed, path=adapted)
    if texts and not task.accepts_text:
        raise TLEngineError(f"task '{task.name}' predicts on files, not --text strings")
    items = [PredictInput(str(p), "file") for p in inputs] + [PredictInput(t, "text") for t in texts]
    if save_dir is not None:
        if save_dir.exists() and not save_dir.is_dir():
            raise TLEngineError(f"--save {save_dir} exists and is not a folder")
        save_dir.mkdir(parents=True, exist_ok=True)
    options = {"top_k": top_k, "score_threshold": score_threshold, "save_dir": save_dir, "num_beams": num_beams}
    results = task.predict(model, items, meta["info"], options=options)
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    for r in results:
        click.echo(task.render_prediction(r))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def doctor(as_json: bool) -> None:
    """Report torch, CUDA, compilers, the extension, plugins and offline weights."""
    from .doctor import collect, render

    report = collect(_manager(quiet=True))
    click.echo(json.dumps(report, indent=2) if as_json else render(report))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--verbose", is_flag=True, help="Show the compiler's output.")
@handle_errors
def kernels(as_json: bool, verbose: bool) -> None:
    """Build the fused C++/CUDA kernels if needed and report their status."""
    from .kernels import build

    build.load_extension(verbose=verbose)
    report = build.status()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"extension: {'built (' + str(report['source']) + ')' if report['built'] else 'not built'}")
    click.echo(f"CPU kernels: {'yes' if report['built'] else 'no (pure-PyTorch reference ops are used)'}")
    click.echo(
        f"CUDA kernels compiled: {'yes' if report['cuda_compiled'] else 'no'}; "
        f"CUDA device: {'yes' if report['cuda_available'] else 'no'}"
    )
    if report.get("build_dir"):
        click.echo(f"build directory: {report['build_dir']}")
    if report.get("error"):
        click.echo(f"build error: {report['error']}")


@main.group()
def cache() -> None:
    """List and remove feature caches (disk storage)."""


@cache.command("ls")
@click.option(
    "--root",
    type=click.Path(path_type=Path),
    help="Cache folder (default: $TLENGINE_CACHE_DIR/features or ~/.cache/tlengine/features).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def cache_ls(root: Path | None, as_json: bool) -> None:
    """Each cache: digest, size, key fields, created, hits, completeness."""
    from .cache import default_root, list_caches
    from .cache.manage import format_size

    rows = list_caches(root)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo(f"no feature caches in {root or default_root()}")
        return
    for r in rows:
        key = r.get("key", {})
        click.echo(
            f"{r['digest'][:12]}  {format_size(r['size'])}  {key.get('backbone')}  {key.get('dtype')}  "
            f"views={key.get('views')}  rows={r.get('rows_filled')}/{r.get('rows_total')}  "
            f"{'complete' if r.get('complete') else 'partial'}  hits={r.get('hits')}  created={r.get('created')}"
        )


@cache.command("rm")
@click.argument("digests", nargs=-1)
@click.option("--all", "remove_all", is_flag=True, help="Remove every cache.")
@click.option(
    "--root",
    type=click.Path(path_type=Path),
    help="Cache folder (default: $TLENGINE_CACHE_DIR/features or ~/.cache/tlengine/features).",
)
@handle_errors
def cache_rm(digests: tuple[str, ...], remove_all: bool, root: Path | None) -> None:
    """Remove caches by digest prefix (see `tlengine cache ls`), or --all."""
    from .cache import remove_caches

    if not digests and not remove_all:
        raise TLEngineError("name the caches to remove by digest prefix (see `tlengine cache ls`), or pass --all")
    for path in remove_caches(list(digests), root=root, all=remove_all):
        click.echo(f"removed {path}")


@main.command()
@click.argument(
    "what",
    type=click.Choice(
        ["kernels", "training", "extraction", "text", "detection", "captioning", "asr", "scaling", "all"]
    ),
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option("--quick", is_flag=True, help="Small sizes (seconds, for smoke tests).")
@click.option("--out", type=click.Path(path_type=Path), help="Also write JSON and markdown here.")
@click.option(
    "--no-compile", is_flag=True, help="Skip torch.compile (kernels: of the references; extraction: compiled forms)."
)
@handle_errors
def bench(what: str, as_json: bool, quick: bool, out: Path | None, no_compile: bool) -> None:
    """Fused ops vs eager vs torch.compile; cached vs naive feature-extraction training;
    frozen-backbone images/s eager / channels-last / bf16 / compiled; text: cached vs naive
    training and encoder texts/s, dynamic padding vs max_length; detection: cached feature
    maps vs naive training and detector images/s; captioning: cached grid tokens vs naive
    training at equal BLEU-4 and captions/s, greedy vs beam search; asr: Whisper tiny.en
    adaptation steps/s per method, transcription real-time factor, speaker-ID cached vs naive;
    scaling: extraction images/s and training samples/s on 1 and 2 processes, and the
    projection to N."""
    repo = Path(__file__).resolve().parents[1]
    if not (repo / "benchmarks" / "run.py").is_file():
        raise TLEngineError(
            f"the benchmarks are not installed with this copy of tlengine (looked in {repo / 'benchmarks'}); "
            "run them from a source checkout"
        )
    sys.path.insert(0, str(repo))
    from benchmarks.run import main as bench_main

    argv = (
        [what]
        + (["--json"] if as_json else [])
        + (["--quick"] if quick else [])
        + (["--out", str(out)] if out else [])
        + (["--no-compile"] if no_compile else [])
    )
    sys.exit(bench_main(argv))


if __name__ == "__main__":
    main()
