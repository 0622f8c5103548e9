"""Registries and the plugin manager: discovery, clashes and broken plugins."""

from __future__ import annotations

import types

import pytest
from tlengine import hookimpl
from tlengine.errors import PluginError, UnknownNameError
from tlengine.plugins import PluginInfo, PluginManager, get_plugin_manager
from tlengine.registry import Registry


def test_registry_lookup_and_patterns():
    reg: Registry[int] = Registry("backbone")
    reg.add("resnet18", 1)
    reg.add("resnet50", 2)
    reg.add("vgg16", 3)
    assert reg.get("resnet50") == 2
    assert reg.names("resnet*") == ["resnet18", "resnet50"]
    with pytest.raises(UnknownNameError, match=r"unknown backbone 'resnet5'.*did you mean.*known: resnet18"):
        reg.get("resnet5")


def test_registry_fallback_resolves_families():
    reg: Registry[str] = Registry("backbone")
    reg.add_fallback(lambda n: n.upper() if n.startswith("timm/") else None, "timm/<name>")
    assert reg.get("timm/abc") == "TIMM/ABC"
    with pytest.raises(UnknownNameError, match="timm/<name>"):
        reg.get("other")


def test_builtin_plugins_discovered_through_entry_points():
    manager = get_plugin_manager()
    names = {p.name: p for p in manager.plugins}
    assert names["core"].distribution == "tlengine" and names["core"].error is None
    ic = names["image_classification"]
    assert ic.error is None
    assert "image-classification" in ic.registered["tasks"]
    assert {"synthetic-shapes", "image-folder", "csv"} <= set(ic.registered["datasets"])
    assert {"quickstart", "sequential-shapes"} <= set(ic.registered["pipelines"])
    assert {"rotation", "simclr"} == set(ic.registered["strategies"])  # image-only pretexts live in the plugin
    assert set(names["core"].registered["strategies"]) == {
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


def _plugin(**hooks) -> types.SimpleNamespace:
    return types.SimpleNamespace(**{k: hookimpl(v) for k, v in hooks.items()})


def test_clashing_plugin_is_reported_and_rolled_back():
    manager = PluginManager()
    good = _plugin(tlengine_register_backbones=lambda backbones: backbones.add("net", "good"))

    def clash(backbones):
        backbones.add("other-net", "x")
        backbones.add("net", "bad")

    bad = _plugin(tlengine_register_backbones=clash)
    manager.register(good, PluginInfo("good", "good-dist", "1.0", "good = good"))
    manager.register(bad, PluginInfo("bad", "bad-dist", "2.0", "bad = bad.plugin"))
    assert manager.registries.backbones.get("net") == "good"
    assert "other-net" not in manager.registries.backbones  # the clashing plugin left nothing behind
    (err,) = manager.errors
    assert "plugin 'bad' (distribution bad-dist, entry point 'bad = bad.plugin')" in err
    assert "registered twice" in err and "'good'" in err


def test_plugin_raising_during_registration_is_rolled_back(monkeypatch):
    """A plugin that registers a backbone family, a dataset and a strategy and THEN raises
    leaves none of them behind; the installed plugins (loaded first) keep all of theirs."""
    import importlib.metadata as md

    def add_family(backbones):
        backbones.add_fallback(lambda n: "half-net" if n.startswith("half/") else None, "half/<name>")

    def add_strategy(strategies):
        strategies.add("half-strategy", object, description="from the broken plugin")

    def boom(pipelines):
        raise RuntimeError("kaboom")

    half = _plugin(
        tlengine_register_backbones=add_family,
        tlengine_register_datasets=lambda datasets: datasets.add("half-dataset", object),
        tlengine_register_strategies=add_strategy,
        tlengine_register_pipelines=boom,
    )

    class HalfEP:  # as if `pip install half-dist` had advertised it
        name, value, group = "half", "half_plugin.hooks", "tlengine"
        dist = types.SimpleNamespace(name="half-dist", version="0.3.0")

        def load(self):
            return half

    real = md.entry_points
    monkeypatch.setattr(md, "entry_points", lambda group=None: [*real(group=group), HalfEP()])
    manager = PluginManager()
    manager.load_entry_points()

    regs = manager.registries
    for kind, names in {"backbones": ["half/x"], "datasets": ["half-dataset"], "strategies": ["half-strategy"]}.items():
        for name in names:
            assert name not in regs.all()[kind], f"{kind} {name!r} survived the rollback"
    assert all(e.plugin != "half" for r in regs.all().values() for e in r.entries())
    # the others' names remain, core and image_classification alike
    assert {"feature-extraction", "fine-tune", "scratch"} <= set(regs.strategies.names())
    assert {"synthetic-shapes", "image-folder", "csv"} <= set(regs.datasets.names())
    assert "image-classification" in regs.tasks and "tiny-cnn" in regs.backbones
    assert {"quickstart", "sequential-shapes"} <= set(regs.pipelines.names())

    info = next(p for p in manager.plugins if p.name == "half")
    assert info.registered == {}
    assert manager.pm.get_plugin("half") is None  # its hooks will not run again
    assert manager.errors == [info.error]  # only the broken plugin is reported
    assert info.error.startswith(
        "plugin 'half' (distribution half-dist, entry point 'half = half_plugin.hooks') failed to register"
    )
    assert "RuntimeError: kaboom" in info.error and "\n" not in info.error
    assert all(p.error is None for p in manager.plugins if p.name != "half")


def test_plugin_that_fails_to_import(monkeypatch):
    import importlib.metadata as md

    class FakeEP:
        name, value, group = "ghost", "no_such_module_xyz.plugin", "tlengine"
        dist = types.SimpleNamespace(name="ghost-dist", version="0.0.1")

        def load(self):
            import no_such_module_xyz  # noqa: F401

    real = md.entry_points
    monkeypatch.setattr(md, "entry_points", lambda group=None: [*real(group=group), FakeEP()])
    manager = PluginManager()
    manager.load_entry_points()
    ghost = next(p for p in manager.plugins if p.name == "ghost")
    assert "failed to import" in ghost.error and "ghost-dist" in ghost.error
    assert "no_such_module_xyz.plugin" in ghost.error
    assert "image-classification" in manager.registries.tasks  # the others still work


def test_registry_error_type():
    reg: Registry[int] = Registry("dataset")
    reg.add("a", 1)
    with pytest.raises(PluginError, match="registered twice"):
        reg.add("a", 2)
