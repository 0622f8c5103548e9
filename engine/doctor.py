"""``tlengine doctor``: what this machine and installation can do."""

from __future__ import annotations

import importlib.util
import platform
import shutil
import subprocess
from typing import Any

import torch

from . import __version__
from .execution import DTYPE_NAMES, native_reduced_dtype


def _version_of(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[-1] if cmd[0] == "nvcc" and out else (out[0] if out else "")


def collect(manager: Any) -> dict[str, Any]:
    """Everything doctor reports, as JSON-ready data."""
    cuda = torch.cuda.is_available()
    weights = []
    for entry in manager.registries.weights.entries():
        nw = entry.obj
        try:
            path = nw.locate()
        except Exception:  # a provider's lookup must never break doctor
            path = None
        weights.append(
            {
                "name": entry.name,
                "arch": nw.arch,
                "plugin": entry.plugin,
                "offline": bool(path),
                "path": str(path) if path else None,
                "hint": None if path else nw.install_hint,
            }
        )
    extension = importlib.util.find_spec("tlengine._C") is not None
    reduced = native_reduced_dtype(torch.device("cuda" if cuda else "cpu"))
    return {
        "tlengine": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda_build": torch.version.cuda,
        "cuda_available": cuda,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "threads": torch.get_num_threads(),
        "frozen_precision": DTYPE_NAMES.get(reduced, str(reduced)),
        "compilers": {
            "c++": _version_of(["c++", "--version"]),
            "nvcc": _version_of(["nvcc", "--version"]),
            "ninja": _version_of(["ninja", "--version"]),
        },
        "extension": {
            "built": extension,
            "note": "tlengine._C was built ahead of time"
            if extension
            else "not built ahead of time: the first feature-extraction run (or `tlengine kernels`) "
            "JIT-builds it; without a compiler the pure-PyTorch reference ops are used",
        },
        "plugins": [
            {
                "name": p.name,
                "distribution": p.distribution,
                "version": p.version,
                "ok": p.error is None,
                "error": p.error,
            }
            for p in manager.plugins
        ],
        "weights": weights,
    }


def render(report: dict[str, Any]) -> str:
    ok, no = "ok ", "-- "
    lines = [
        f"tlengine {report['tlengine']}  python {report['python']}  torch {report['torch']}"
        f" (CUDA build {report['torch_cuda_build'] or 'none'}), {report['threads']} threads"
    ]
    lines.append(
        (ok if report["cuda_available"] else no)
        + "CUDA device: "
        + (", ".join(report["cuda_devices"]) or "none (CPU only)")
    )
    lines.append(
        f"{ok}frozen parts (extraction.precision: auto) run in {report['frozen_precision']}"
        + ("" if report["frozen_precision"] != "fp32" else " (no native bf16 on this device)")
    )
    for name, version in report["compilers"].items():
        lines.append((ok if version else no) + f"{name}: {version or 'not found'}")
    lines.append((ok if report["extension"]["built"] else no) + f"extension: {report['extension']['note']}")
    for p in report["plugins"]:
        lines.append(
            (ok if p["ok"] else "!! ")
            + f"plugin {p['name']} ({p['distribution']} {p['version']})"
            + ("" if p["ok"] else f": {p['error']}")
        )
    for w in report["weights"]:
        lines.append(
            (ok if w["offline"] else no)
            + f"weights {w['name']} -> {w['arch']}: "
            + (f"offline at {w['path']}" if w["offline"] else f"not available offline ({w['hint']})")
        )
    return "\n".join(lines)
