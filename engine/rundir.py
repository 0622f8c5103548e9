"""The run directory: where a run writes, and what ``--resume`` reads back.

::

    config.yaml           the resolved pipeline (overrides applied)
    run.json              where it came from, tlengine version, device
    status.json           running | failed (with the error) | complete
    metrics.jsonl         one line per epoch per arm and seed, appended live
    metrics.json          the summary (written last, only when the run completed)
    checkpoint.safetensors + checkpoint.json   the last stage's primary arm (first seed)
    arms/<stage>/<arm>/seed<k>/
        state.safetensors  training state while the arm trains (resume)
        best.safetensors   the best validation epoch's weights while it trains
        model.safetensors + model.json   the arm's final model
        own.safetensors    only the parameters the strategy added (adapters), when it added any
        delta.safetensors  what the arm changed on its pretrained start (new parts and the blocks
                           that trained), when that is less than the whole model and more than own
        result.json        test/val metrics and the epoch history
    plots/                loss and metric curves, confusion matrices, arm comparison

Files are written atomically (temporary name, then rename), so a crash leaves the old
file or the new one.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__
from .atomic import write_json, write_text
from .errors import RunError
from .task import Evaluation
from .training.loop import ArmResult


class RunDirectory:
    """One run's folder. ``path`` exists once :meth:`create` or :meth:`open` returned."""

    def __init__(self, path: Path):
        self.path = Path(path)

    # ------------------------------------------------------------------ creating
    @classmethod
    def create(cls, name: str, output_dir: str, output: Path | None) -> "RunDirectory":
        """A new run directory: ``output`` (new or empty), else ``output_dir/<name>-<time>``."""
        if output is None:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            parent = Path(output_dir)
            output = parent / f"{name}-{stamp}"
            i = 1
            while output.exists():
                output = parent / f"{name}-{stamp}-{i}"
                i += 1
        else:
            cls.check_creatable(output_dir, output)
        try:
            output.mkdir(parents=True, exist_ok=True)
            (output / "arms").mkdir(exist_ok=True)
            (output / "plots").mkdir(exist_ok=True)
        except OSError as exc:
            raise RunError(f"output directory {output} cannot be created or is not writable ({exc.strerror})") from None
        return cls(output)

    @classmethod
    def check_creatable(cls, output_dir: str, output: Path | None) -> None:
        """Raise RunError now if :meth:`create` would fail, without creating anything."""
        target = output if output is not None else Path(output_dir)
        if output is not None and output.exists():
            if not output.is_dir():
                raise RunError(f"--output {output} is an existing file, not a directory; choose a new directory")
            if any(output.iterdir()):
                hint = (
                    f", or continue it with `tlengine run --resume {output}`" if (output / "run.json").is_file() else ""
                )
                raise RunError(
                    f"output directory {output} already exists and is not empty; choose another --output{hint}"
                )
        probe = target
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
            raise RunError(f"output directory {target} cannot be created: {probe} is not a writable directory")

    def write_start(self, config_yaml: str, run_info: dict[str, Any]) -> None:
        write_text(self.path / "config.yaml", config_yaml)
        write_json(
            self.path / "run.json",
            {
                **run_info,
                "tlengine_version": __version__,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
        )
        write_text(self.path / "metrics.jsonl", "")

    # ------------------------------------------------------------------ reopening
    @classmethod
    def open(cls, path: Path) -> "RunDirectory":
        """An existing run directory for ``--resume``; RunError if it is not one or is done."""
        path = Path(path)
        if not path.is_dir():
            raise RunError(f"run directory {path} does not exist")
        if not (path / "config.yaml").is_file() or not (path / "run.json").is_file():
            raise RunError(f"{path} is not a tlengine run directory (no config.yaml / run.json)")
        run = cls(path)
        if (run.status() or {}).get("state") == "complete":
            raise RunError(f"run {path} is already complete; nothing to resume")
        if run.run_info() is None:
            raise RunError(f"{path / 'run.json'} is unreadable; the run directory is damaged")
        return run

    def run_info(self) -> dict[str, Any] | None:
        return read_json(self.path / "run.json")

    def status(self) -> dict[str, Any] | None:
        return read_json(self.path / "status.json")

    def set_status(self, state: str, **extra: Any) -> None:
        write_json(self.path / "status.json", {"state": state, **extra})

    def failed(self, reason: str) -> None:
        self.set_status("failed", error=reason, resume=f"tlengine run --resume {self.path}")

    # ------------------------------------------------------------------ arms
    def arm_dir(self, key: str) -> Path:
        """``arms/<stage>/<arm>/seed<k>`` for an arm key ``<stage>/<arm>/seed<k>``."""
        return self.path / "arms" / key

    def read_result(self, key: str) -> ArmResult | None:
        data = read_json(self.arm_dir(key) / "result.json")
        return result_from_json(data) if data is not None else None

    def write_result(self, key: str, result: ArmResult) -> None:
        write_json(self.arm_dir(key) / "result.json", result_to_json(result))

    # ------------------------------------------------------------------ metrics.jsonl
    def append_record(self, record: dict[str, Any]) -> None:
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def rewrite_records(self, records: list[dict[str, Any]]) -> None:
        write_text(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in records))

    # ------------------------------------------------------------------ the end
    def publish_checkpoint(self, key: str) -> None:
        """Copy an arm's model to ``checkpoint.safetensors`` / ``checkpoint.json``."""
        src = self.arm_dir(key)
        tmp = self.path / ".checkpoint.tmp"
        shutil.copyfile(src / "model.safetensors", tmp)
        tmp.replace(self.path / "checkpoint.safetensors")
        shutil.copyfile(src / "model.json", tmp)
        tmp.replace(self.path / "checkpoint.json")

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.path / "metrics.json", summary)
        self.set_status("complete")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def result_to_json(r: ArmResult) -> dict[str, Any]:
    d = asdict(r)
    d["test"] = {"metrics": r.test.metrics, "details": r.test.details}
    d["val"] = {"metrics": r.val.metrics, "details": r.val.details} if r.val else None
    return d


def result_from_json(d: dict[str, Any]) -> ArmResult:
    val = Evaluation(d["val"]["metrics"], d["val"]["details"]) if d.get("val") else None
    return ArmResult(
        d["name"],
        d["strategy"],
        Evaluation(d["test"]["metrics"], d["test"]["details"]),
        val,
        d["seconds"],
        d["epochs"],
        d["history"],
        d.get("cache"),
        d.get("best_epoch"),
        d.get("stopped_early", False),
        execution=d.get("execution"),
    )
