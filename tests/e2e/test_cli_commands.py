"""The informational commands, run as a user runs them (``python -m tlengine ...``):
doctor, validate --schema, pipelines, plugins, cache ls / rm, bench.

Expected values come from the installed packages in this process (torch, the plugin
manager, importlib.metadata), not from constants, so the tests hold on any machine.
"""

from __future__ import annotations

import importlib.metadata as md
import json
from pathlib import Path

import pytest
import torch
from tlengine.plugins import get_plugin_manager


def _ok(result) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def _json(result):
    return json.loads(_ok(result))  # stdout is exactly one JSON document (warnings go to stderr)


# ------------------------------------------------------------------ doctor
def test_doctor_json(cli):
    report = _json(cli("doctor", "--json"))
    assert report["torch"] == torch.__version__
    assert report["tlengine"] == md.version("tlengine")
    assert report["cuda_available"] is torch.cuda.is_available()
    assert len(report["cuda_devices"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert {"c++", "nvcc", "ninja"} <= report["compilers"].keys()
    assert isinstance(report["extension"]["built"], bool) and report["extension"]["note"]

    plugins = {p["name"]: p for p in report["plugins"]}
    assert {"core", "image_classification"} <= plugins.keys()
    for name in ("core", "image_classification"):
        assert plugins[name]["ok"] is True and plugins[name]["error"] is None
        assert plugins[name]["distribution"] == "tlengine"
        assert plugins[name]["version"] == md.version("tlengine")

    # one entry per registered named weights, saying whether it is usable offline
    registry = get_plugin_manager().registries.weights
    by_name = {w["name"]: w for w in report["weights"]}
    assert sorted(by_name) == registry.names() and by_name  # the image plugin ships some
    for name, w in by_name.items():
        nw = registry.get(name)
        assert w["arch"] == nw.arch and w["plugin"] == registry.entry(name).plugin
        assert isinstance(w["offline"], bool)
        if w["offline"]:
            assert w["path"] and Path(w["path"]).exists() and w["hint"] is None
        else:
            assert w["path"] is None and w["hint"] == nw.install_hint


def test_doctor_text(cli):
    out = _ok(cli("doctor"))
    assert f"torch {torch.__version__}" in out.splitlines()[0]
    assert "plugin core (tlengine" in out and "plugin image_classification (tlengine" in out
    assert "!! plugin" not in out  # no broken builtin plugin
    for name in get_plugin_manager().registries.weights.names():
        assert f"weights {name} -> " in out
    assert "CUDA device: " in out and "extension: " in out


# ------------------------------------------------------------------ validate --schema
def test_validate_schema_is_json_schema_of_pipeline_files(cli):
    schema = _json(cli("validate", "--schema"))
    assert {"name", "task", "train", "data", "model", "strategy"} <= schema["properties"].keys()
    assert "name" in schema.get("required", [])
    train = schema["properties"]["train"]  # a nested model: inline or a $ref into $defs
    ref = train.get("$ref") or next(
        (a["$ref"] for a in train.get("anyOf", []) + train.get("allOf", []) if "$ref" in a), None
    )
    train = schema["$defs"][ref.rsplit("/", 1)[-1]] if ref else train
    assert {"lr", "optimizer", "epochs"} <= train["properties"].keys()


# ------------------------------------------------------------------ pipelines
def test_pipelines_json_lists_shipped_pipelines(cli):
    rows = {r["name"]: r for r in _json(cli("pipelines", "--json"))}
    assert {"quickstart", "sequential-shapes"} <= rows.keys()
    for name in ("quickstart", "sequential-shapes"):
        row = rows[name]
        assert row["plugin"] == "image_classification"
        assert isinstance(row["description"], str) and row["description"].strip()
        path = Path(row["path"])
        assert path.is_file() and path.suffix == ".yaml" and path.stem == name


def test_pipelines_text_lists_names_and_descriptions(cli):
    out = _ok(cli("pipelines"))
    rows = {r["name"]: r for r in _json(cli("pipelines", "--json"))}
    for name, row in rows.items():
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert row["description"] in line and f"[{row['plugin']}]" in line


# ------------------------------------------------------------------ plugins
def test_plugins_json_lists_each_plugin_and_what_it_registers(cli):
    rows = _json(cli("plugins", "--json"))
    assert [r["name"] for r in rows] == [p.name for p in get_plugin_manager().plugins]
    for r in rows:
        assert {"name", "distribution", "version", "entry_point", "registered", "error"} <= r.keys()
        if r["distribution"] != "?":
            assert r["version"] == md.version(r["distribution"])
        assert r["entry_point"].startswith(f"{r['name']} = ")
    by_name = {r["name"]: r for r in rows}
    core, ic = by_name["core"], by_name["image_classification"]
    assert core["distribution"] == ic["distribution"] == "tlengine"
    assert core["error"] is None and ic["error"] is None
    assert set(core["registered"]["strategies"]) == {
        "feature-extraction",
        "fine-tune",
        "scratch",
        "lhuc",
        "adapter",
        "zero-shot",
        "source-only",
        "dann",
        "coral",
        "mmd",
        "multitask",
    }
    assert "image-classification" in ic["registered"]["tasks"]
    assert {"synthetic-shapes", "image-folder", "csv"} <= set(ic["registered"]["datasets"])
    assert {"quickstart", "sequential-shapes"} <= set(ic["registered"]["pipelines"])
    assert "tiny-cnn" in ic["registered"]["backbones"]


# ------------------------------------------------------------------ cache
def test_cache_ls_json_on_empty_root(cli, tmp_path):
    root = tmp_path / "caches"
    root.mkdir()
    result = cli("cache", "ls", "--json", "--root", str(root))
    assert _json(result) == []
    assert result.stdout.strip() == "[]"


def test_cache_ls_text_on_empty_root(cli, tmp_path):
    out = _ok(cli("cache", "ls", "--root", str(tmp_path)))
    assert out.strip() == f"no feature caches in {tmp_path}"


def test_cache_rm_without_argument_is_one_line_error(cli, tmp_path):
    result = cli("cache", "rm", "--root", str(tmp_path))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "--all" in lines[0] and "cache ls" in lines[0]
    assert result.stdout == ""


# ------------------------------------------------------------------ bench
@pytest.mark.slow
def test_bench_kernels_quick_json_through_the_cli(cli, tmp_path):
    """Only the CLI wiring: the result's schema is covered in-process by
    tests/core/test_benchmarks.py::test_quick_kernel_benchmark_schema."""
    result = _json(cli("bench", "kernels", "--quick", "--json", "--out", str(tmp_path)))
    assert {"device", "threads", "torch", "rows"} <= result.keys()
    assert result["device"].split(",")[0] == "cpu"
    assert ("cuda" in result["device"]) is torch.cuda.is_available()
    assert result["torch"] == torch.__version__
    assert result["rows"] and {r["op"] for r in result["rows"]} == {
        "normalize_images",
        "pool_quantize_scatter",
        "gather_dequantize",
    }
    assert json.loads((tmp_path / "kernels.json").read_text())["rows"] == result["rows"]
    assert (tmp_path / "kernels.md").read_text().strip()
