"""The path a third-party author takes: pip-install the template plugin, then use it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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

    names = cli("pipelines")
    assert "template-demo" in names.stdout

    result = cli("run", "template-demo", "--output", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr
    run = Path(result.stdout.strip().splitlines()[-1])
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["pipeline"] == "template-demo" and summary["baseline"] is not None
    hook_output = json.loads((run / "template_plugin.json").read_text())  # written by its after_run hook
    assert hook_output == {"pipeline": "template-demo", "arms": ["fine-tune", "scratch"]}
