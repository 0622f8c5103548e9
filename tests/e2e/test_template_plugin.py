"""The path a third-party author takes: pip-install the template plugin, then use it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

TEMPLATE = Path(__file__).resolve().parents[2] / "plugins" / "template"


@pytest.fixture(scope="module")
def installed_template():
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", "-q", str(TEMPLATE)], check=True)
    yield
    subprocess.run([*pip, "uninstall", "-y", "-q", "tlengine-plugin-template"], check=True)


@pytest.mark.slow
def test_installed_plugin_is_found_and_runs(installed_template, cli, tmp_path):
    listing = cli("plugins", "--json")
    assert listing.returncode == 0, listing.stderr
    plugins = {p["name"]: p for p in json.loads(listing.stdout)}
    template = plugins["template"]
    assert template["distribution"] == "tlengine-plugin-template" and template["error"] is None
    assert "template/mlp" in template["registered"]["backbones"]
    assert "template-demo" in template["registered"]["pipelines"]
    assert template["registered"]["strategies"] == ["template-mixup"]

    names = cli("pipelines")
    assert "template-demo" in names.stdout

    result = cli("run", "template-demo", "--output", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr
    run = Path(result.stdout.strip().splitlines()[-1])
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["pipeline"] == "template-demo" and summary["baseline"] is not None
    hook_output = json.loads((run / "template_plugin.json").read_text())  # written by its after_run hook
    assert hook_output == {"pipeline": "template-demo", "arms": ["fine-tune", "scratch", "template-mixup"]}

    # The plugin's strategy trained as a compare arm, with its own named loss ...
    assert "template-mixup" in summary["arms"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    mixup = [r for r in records if r["arm"] == "template-mixup"]
    assert len(mixup) == 2 and all("train_loss_mixup" in r for r in mixup)
    assert all(r["train_loss"] == pytest.approx(r["train_loss_mixup"]) for r in mixup)
    assert not any("train_loss_mixup" in r for r in records if r["arm"] != "template-mixup")
    # ... and its own part saved alone; the other arms add no part, so they have no own file.
    own = load_file(str(run / "arms/main/template-mixup/seed0/own.safetensors"))
    assert list(own) == ["template_temperature.log_temperature"]
    assert float(own["template_temperature.log_temperature"]) != 0.0  # it trained (starts at 0)
    assert not (run / "arms/main/fine-tune/seed0/own.safetensors").exists()
