"""Bad input to `tlengine run` / `validate` / `run --resume`: each ends in one plain
sentence (no traceback), a non-zero exit, and no run directory left behind.

Most cases drive the CLI in-process (click's CliRunner on ``tlengine.cli.main``: the same
argument parsing and error handling, without a 10-second interpreter start per case);
a few go through a real subprocess to prove that nothing else reaches the terminal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from click.testing import CliRunner
from conftest import run_cli
from tlengine import hookimpl
from tlengine.cli import main
from tlengine.pipeline import Runner
from tlengine.plugins import PluginInfo, PluginManager
from tlengine.validation import LoadedPipeline, validate


def invoke(*args: str | Path) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args])


def one_sentence(result: Any, *fragments: str, progress: bool = False) -> str:
    """The one line a failed command ended with; works for CliRunner and subprocess results.

    progress: a command that got as far as starting (``--resume``) may print progress
    lines before it; the error is still one line, the last, and there is no traceback."""
    code = getattr(result, "exit_code", getattr(result, "returncode", None))
    exception = getattr(result, "exception", None)
    assert exception is None or isinstance(exception, SystemExit), repr(exception)  # no escaped exception
    out, err = result.stdout, result.stderr
    assert code not in (0, None), out + err
    assert "Traceback" not in out + err, out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and not out.strip(), out + err
    if progress:
        assert not any("error" in line.lower() for line in lines[:-1]), err
    else:
        assert len(lines) == 1, err
    line = lines[-1]
    assert line.startswith(("error: ", "config error: ")) and "\n" not in line, err
    for fragment in fragments:
        assert fragment in line, line
    return line


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def setup(tmp_path, tiny_config) -> Callable[..., tuple[Path, Path]]:
    """setup(mutate=None) -> (pipeline file, output_dir): the tiny pipeline writing its runs
    under tmp_path/a/b/runs (so a name with '../..' would still land inside tmp_path)."""

    def make(mutate: Callable[[dict, Path], None] | None = None) -> tuple[Path, Path]:
        out = tmp_path / "a" / "b" / "runs"
        out.mkdir(parents=True)
        tiny_config["output_dir"] = str(out)
        if mutate:
            mutate(tiny_config, tmp_path)
        path = tmp_path / "pipeline.yaml"
        path.write_text(yaml.safe_dump(tiny_config, sort_keys=False))
        (tmp_path / "a-file").write_text("a regular file")
        return path, out

    return make


def staged_with_unknown_init_from(config: dict, tmp: Path) -> None:
    config.pop("strategy")
    config.pop("baseline")
    config["stages"] = [
        {"name": "pre", "strategy": {"name": "scratch"}},
        {"name": "fine", "init_from": "nowhere", "strategy": {"name": "fine-tune"}},
    ]


# (id, overrides ("{tmp}" is tmp_path), config change, fragments of the one line)
CONFIG_CASES = [
    ("name-escapes", ["name=../../escaped"], None, ["config error: name:", "plain name"]),
    ("name-absolute", ["name={tmp}/abs"], None, ["config error: name:", "plain name"]),
    ("name-empty", ["name="], None, ["config error: name:", "not empty"]),
    ("override-without-key", ["=3"], None, ["config error: =3:", "dotted key"]),
    (
        "unknown-model-arg",
        ["model.args.widht=2"],
        None,
        ["config error: model.args.widht:", "unknown argument 'widht'", "width"],
    ),
    (
        "unknown-weights",
        ["model.backbone=resnet18", "model.weights=imagenet-9000"],
        None,
        ["config error: model.weights:", "'imagenet-9000'", "known weights for resnet18:", "IMAGENET1K_V1"],
    ),
    (
        "unwritable-cache-root",
        ["strategy.name=feature-extraction", "strategy.cache.storage=disk", "strategy.cache.root={tmp}/a-file/cache"],
        None,
        ["config error: strategy.cache.root:", "a-file"],
    ),
    ("misspelt-augment", ["data.augmnet=none"], None, ["config error: data.augmnet:", "unknown key"]),
    ("seed-twice", ["seeds=[1, 1]"], None, ["config error: seeds:", "twice"]),
    (
        "unknown-init-from",
        [],
        staged_with_unknown_init_from,
        ["config error: stages.1.init_from:", "'nowhere' is not an earlier stage"],
    ),
    (
        "fractions-too-large",
        ["data.val_fraction=0.5", "data.test_fraction=0.45"],
        None,
        ["config error: data:", "val_fraction + test_fraction"],
    ),
]


@pytest.mark.parametrize("command", ["run", "validate"])
@pytest.mark.parametrize(
    "overrides, mutate, fragments", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES]
)
def test_config_mistakes(setup, tmp_path, command, overrides, mutate, fragments):
    pipeline, out = setup(mutate)
    before = tree(tmp_path)
    result = invoke(command, pipeline, *[o.replace("{tmp}", str(tmp_path)) for o in overrides])
    one_sentence(result, *fragments)
    assert result.exit_code == 2
    assert tree(tmp_path) == before, "a failed start must not leave a run directory (or anything else)"
    assert not any(out.iterdir())


def test_output_names_a_regular_file(setup, tmp_path):
    pipeline, out = setup()
    before = tree(tmp_path)
    one_sentence(invoke("run", pipeline, "--output", tmp_path / "a-file"), "a-file", "not a directory")
    assert (tmp_path / "a-file").read_text() == "a regular file"
    assert tree(tmp_path) == before


def test_run_given_a_folder(setup, tmp_path):
    _, out = setup()
    folder = tmp_path / "a-folder"
    folder.mkdir()
    before = tree(tmp_path)
    one_sentence(invoke("run", folder), "a-folder", "directory")
    assert tree(tmp_path) == before


def test_pipeline_file_not_utf8(setup, tmp_path):
    _, out = setup()
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\ntask: image-classification\n".encode("latin-1"))
    before = tree(tmp_path)
    one_sentence(invoke("run", latin), "latin.yaml", "UTF-8")
    one_sentence(invoke("validate", latin), "latin.yaml", "UTF-8")
    assert tree(tmp_path) == before


# ----------------------------------------------------------------------------- --resume
class Interrupt:
    """Ctrl-C after the first epoch of the first arm."""

    @hookimpl
    def tlengine_on_epoch_end(self, run_dir: Path, arm: str, epoch: int, metrics: dict[str, Any]) -> None:
        raise KeyboardInterrupt


def interrupted_run(config: dict, run: Path) -> Path:
    """A run directory as SIGKILL leaves it: state.safetensors of the first arm, status running."""
    manager = PluginManager()
    manager.load_entry_points()
    manager.register(Interrupt(), PluginInfo("interrupt", "tests", "0", "tests"))
    loaded = LoadedPipeline(validate(config, manager.registries, run.parent), run.parent, "test")
    with pytest.raises(KeyboardInterrupt):
        Runner(manager, echo=lambda s: None).run(loaded, output=run)
    (run / "status.json").write_text(json.dumps({"state": "running"}))
    return run


def test_resume_with_a_broken_config_yaml(tiny_config, tmp_path):
    run = interrupted_run(tiny_config, tmp_path / "runs" / "killed")
    (run / "config.yaml").write_text("name: tiny\ntrain: {epochs: [\n")
    before = tree(tmp_path)
    one_sentence(invoke("run", "--resume", run), "cannot resume", "config.yaml")
    assert tree(tmp_path) == before


def test_resume_with_a_truncated_training_state(tiny_config, tmp_path):
    run = interrupted_run(tiny_config, tmp_path / "runs" / "killed")
    state = run / "arms" / "main" / "fine-tune" / "seed0" / "state.safetensors"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    runs_before = sorted(p.name for p in (tmp_path / "runs").iterdir())
    one_sentence(invoke("run", "--resume", run), "state.safetensors", "truncated", progress=True)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed", status
    assert "truncated" in status["error"] and status["resume"] == f"tlengine run --resume {run}"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == runs_before
    assert not (run / "metrics.json").exists()


# ----------------------------------------------------------------------------- real processes
@pytest.mark.slow
def test_through_a_real_process(setup, tmp_path, tiny_config):
    """What a user sees in a terminal: one line, nothing else (no warnings either)."""
    pipeline, out = setup()
    before = tree(tmp_path)
    one_sentence(run_cli("run", str(pipeline), "name=../../escaped"), "config error: name:")
    one_sentence(run_cli("validate", str(pipeline), "model.args.widht=2"), "model.args.widht")
    assert tree(tmp_path) == before
    config = yaml.safe_load(pipeline.read_text())
    run = interrupted_run(config, out / "killed")
    state = run / "arms" / "main" / "fine-tune" / "seed0" / "state.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    one_sentence(run_cli("run", "--resume", str(run)), "truncated", progress=True)
    assert json.loads((run / "status.json").read_text())["state"] == "failed"


@pytest.mark.parametrize("override", ["name=../x", "strategy.unfreeze=-1", "strategy.label=a/b"])
def test_validator_messages_are_plain_sentences(setup, override):
    pipeline, _ = setup()
    line = one_sentence(invoke("validate", pipeline, override), "config error: ")
    assert "Value error" not in line, line
