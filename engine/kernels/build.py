"""Finds, builds and loads the C++/CUDA extension with the fused ops (``torch.ops.tlengine.*``).

Order: ``import tlengine._C`` (built ahead of time by ``TLENGINE_BUILD_EXT=1 pip install -e .
--no-build-isolation``), else a just-in-time build with ``torch.utils.cpp_extension.load`` +
ninja into ``<extensions folder>/<hash>`` (see :func:`extensions_root`), keyed on
the sources, torch, Python, compiler and flags, so a build is reused until one of them changes.
Without a compiler, or when the build fails, :func:`load_extension` returns None and callers use
the pure-PyTorch reference ops. ``TLENGINE_NO_EXT=1`` forces that path.

This file is also imported by path from ``setup.py`` (before tlengine is installed), so it uses
only the standard library at import time and imports torch lazily.

Environment:
* ``TLENGINE_NO_EXT=1``: never load the extension.
* ``TLENGINE_EXTENSIONS_DIR``: folder of the JIT builds (default ``~/.cache/tlengine/extensions``).
  ``TLENGINE_CACHE_DIR`` moves only the feature caches, not the builds.
* ``TLENGINE_NATIVE``: ``1`` compiles for the build machine's CPU (``-march=native``: AVX2 /
  AVX-512, F16C). Default: on for JIT builds (they run where they are built; the CPU model is
  part of the cache key), off for ahead-of-time builds (a wheel may move to another machine).
* ``TLENGINE_BUILD_CUDA``: ``0`` / ``1`` overrides whether the CUDA kernels are compiled
  (default: when torch is a CUDA build and the CUDA toolkit is installed).
* ``TORCH_CUDA_ARCH_LIST``: GPU architectures for the CUDA kernels (default: the visible GPUs;
  without one, ``DEFAULT_CUDA_ARCH_LIST``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

JIT_NAME = "tlengine_C"
AOT_NAME = "tlengine._C"
# torch picks -gencode flags from the visible GPUs, and fails with none visible (CI, build
# hosts). Without a GPU we compile for Ampere (sm_80 SASS also runs on 8.6/8.9) and Hopper, plus
# sm_90 PTX that the driver can JIT for newer GPUs (Blackwell); TORCH_CUDA_ARCH_LIST overrides.
DEFAULT_CUDA_ARCH_LIST = "8.0;9.0+PTX"
# Rough first-build durations on an idle 2-core CPU (CUDA: 58 s measured), for the progress message.
_BUILD_SECONDS = {False: 30, True: 60}
_SOURCE_SUFFIXES = (".cpp", ".cu")
_HEADER_SUFFIXES = (".h", ".cuh", ".hpp")

_lock = threading.RLock()
_state: dict[str, Any] = {
    "attempted": False,
    "module": None,
    "source": None,
    "build_dir": None,
    "error": None,
    "reason": None,
}


# ------------------------------------------------------------------ sources and flags
def csrc_dir() -> Path | None:
    """Directory holding ``tlengine.cpp`` and ``ops/``: the copy shipped inside the installed
    package (``tlengine/kernels/csrc``, added by setup.py's build_py), else the source checkout's
    top-level ``csrc`` (editable installs)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "csrc", here.parents[1] / "csrc"):
        if (candidate / "tlengine.cpp").is_file():
            return candidate
    return None


def sources(with_cuda: bool, root: str | Path | None = None) -> list[str]:
    """Translation units: tlengine.cpp, ops/cpu/*.cpp and, with CUDA, ops/cuda/*.cu (sorted)."""
    root = Path(root) if root is not None else csrc_dir()
    if root is None:
        return []
    dirs = [root / "ops" / "cpu"] + ([root / "ops" / "cuda"] if with_cuda else [])
    found = [root / "tlengine.cpp"]
    for d in dirs:
        found += sorted(p for p in d.glob("*") if p.suffix in _SOURCE_SUFFIXES) if d.is_dir() else []
    return [str(p) for p in found]


def _native_default(jit: bool) -> bool:
    value = os.environ.get("TLENGINE_NATIVE")
    if value is not None:
        return value.strip().lower() not in ("0", "", "false", "no")
    return jit and sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64", "aarch64")


def cxx_flags(*, jit: bool) -> list[str]:
    """Host compiler flags. No -ffast-math: the kernels must round like the reference, and
    -ffp-contract=off keeps a*b+c from becoming an fma (results then do not depend on -march)."""
    if sys.platform == "win32":
        return ["/O2", "/openmp"]
    flags = ["-O3", "-g0", "-ffp-contract=off"]  # -g0: setuptools adds -g (slower builds, 10x the .so)
    if sys.platform != "darwin":  # Apple clang has no -fopenmp; at::parallel_for then runs serially
        flags.append("-fopenmp")  # without it, at::parallel_for in the kernels runs on one thread
    if _native_default(jit):
        flags.append("-march=native")
    return flags


def ld_flags() -> list[str]:
    # libgomp resolves to the copy torch already loaded (same soname).
    return [] if sys.platform in ("win32", "darwin") else ["-fopenmp"]


def nvcc_flags() -> list[str]:
    # No --use_fast_math: it flushes denormals and approximates division, unlike the reference.
    return ["-O3", "-DTLENGINE_WITH_CUDA"]


def cuda_build_wanted() -> tuple[bool, str]:
    """(include the .cu sources?, why): torch is a CUDA build and nvcc is installed. A GPU is not
    needed to compile."""
    import torch

    forced = os.environ.get("TLENGINE_BUILD_CUDA", "").strip()
    if forced in ("0", "1"):
        return forced == "1", "TLENGINE_BUILD_CUDA=" + forced
    if not torch.version.cuda:
        return False, "torch is not a CUDA build"
    home = _cuda_home()
    if not _is_cuda_home(home):
        return False, "no CUDA toolkit found (nvcc and libcudart; set CUDA_HOME)"
    return True, f"CUDA toolkit in {home}"


def _cpp_extension() -> ModuleType:
    # importing it logs "No CUDA runtime is found" on every machine without a GPU
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        log.setLevel(level)
    return cpp_extension


def _is_cuda_home(path: str | None) -> bool:
    if not path:
        return False
    home = Path(path)
    nvcc = home / "bin" / ("nvcc.exe" if sys.platform == "win32" else "nvcc")
    libs = (
        [home / "lib" / "x64" / "cudart.lib"]
        if sys.platform == "win32"
        else [home / d / "libcudart.so" for d in ("lib64", "lib")]
    )
    return nvcc.exists() and any(lib.exists() for lib in libs)


def _cuda_home() -> str | None:
    """The CUDA toolkit to build with, fixing torch's guess when it is wrong.

    torch takes CUDA_HOME / CUDA_PATH, else the parent of the ``nvcc`` on PATH. When that nvcc
    is a wrapper script or a symlink outside the toolkit (e.g. /usr/local/bin/nvcc ->
    CUDA_HOME=/usr/local), compiling works but linking ``-lcudart`` fails. Then use the first
    real toolkit among the resolved nvcc, /usr/local/cuda and /opt/cuda, and tell torch (its
    module-level CUDA_HOME decides the include and library paths).
    """
    cpp_extension = _cpp_extension()
    guess = cpp_extension.CUDA_HOME
    if _is_cuda_home(guess):
        return guess
    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parent.parent))
        try:  # a wrapper script: `exec /path/to/cuda/bin/nvcc "$@"`
            for word in Path(nvcc).read_text(errors="ignore").split():
                if word.endswith("/bin/nvcc"):
                    candidates.append(str(Path(word).parent.parent))
        except OSError:
            pass
    candidates += ["/usr/local/cuda", "/opt/cuda"]
    for home in candidates:
        if _is_cuda_home(home):
            cpp_extension.CUDA_HOME = home
            os.environ["CUDA_HOME"] = home
            return home
    return guess


def cuda_arch_list() -> str | None:
    """TORCH_CUDA_ARCH_LIST to build with: the user's, else None (torch uses the visible GPUs),
    else DEFAULT_CUDA_ARCH_LIST when no GPU is visible (torch cannot pick flags without one)."""
    import torch

    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return os.environ["TORCH_CUDA_ARCH_LIST"]
    return None if torch.cuda.is_available() and torch.cuda.device_count() else DEFAULT_CUDA_ARCH_LIST


# ------------------------------------------------------------------ state
def status() -> dict[str, Any]:
    """What :func:`load_extension` found, for ``tlengine kernels`` / ``tlengine doctor``.

    built: the ops are registered in this process; source: "aot" | "jit" | None; cuda_compiled:
    the build has CUDA kernels; cuda_available: a GPU is usable; build_dir: the JIT build
    directory (None for AOT); error: why the extension is not in use (None when it is, or when
    loading was not attempted yet: see ``attempted``); reason: "disabled" (TLENGINE_NO_EXT) or
    "unavailable"; aot_note: why a tlengine._C found on the path was not used.
    """
    import torch

    module = _state["module"]
    info = module.build_info() if module is not None and hasattr(module, "build_info") else {}
    return {
        "built": module is not None,
        "attempted": _state["attempted"],
        "source": _state["source"],
        "cuda_compiled": bool(module is not None and module.has_cuda()),
        "cuda_available": torch.cuda.is_available(),
        "build_dir": _state["build_dir"],
        "error": _state["error"],
        "reason": _state["reason"],
        "build_info": dict(info),
        "version": module.version() if module is not None else None,
        "aot_note": (
            f"{_state['aot_stale']} is older than the C++ sources, so they were built just in time"
            if _state.get("aot_stale")
            else _state.get("aot_error")
        ),
    }


def load_extension(*, verbose: bool = False, with_cuda: bool | None = None) -> ModuleType | None:
    """The extension module (ops registered as ``torch.ops.tlengine.*``), or None.

    Cached per process: the first call decides (later ``with_cuda`` values are ignored, the
    library cannot be registered twice). ``with_cuda=None`` compiles the CUDA kernels when
    :func:`cuda_build_wanted`. Shows a one-line note on stderr while building; the compiler's
    output only with ``verbose``. ``error`` in :func:`status` says why it returned None.
    """
    with _lock:
        if _state["attempted"]:
            return _state["module"]
        _state["attempted"] = True
        if os.environ.get("TLENGINE_NO_EXT", "").strip() not in ("", "0"):
            _fail("TLENGINE_NO_EXT is set", reason="disabled")
            return None
        module = _import_aot()
        if module is None:
            module = _build_jit(verbose=verbose, with_cuda=with_cuda)
        _state["module"] = module
        return module


def _fail(error: str, *, reason: str = "unavailable") -> None:
    _state["error"], _state["reason"] = error, reason


def _import_aot() -> ModuleType | None:
    try:
        spec = importlib.util.find_spec(AOT_NAME)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        return None
    root = csrc_dir()
    if root is not None and _newest_source_mtime(root) > os.path.getmtime(spec.origin):
        # An editable checkout whose csrc changed since `setup.py build_ext`: the prebuilt .so
        # would run old kernels, so build the current sources instead.
        _state["aot_stale"] = spec.origin
        return None
    try:
        importlib.import_module("torch")  # loads libtorch, which the extension links against
        module = importlib.import_module(AOT_NAME)
    except ImportError as exc:  # e.g. built against another torch
        _state["aot_error"] = f"{AOT_NAME} is installed but does not import: {exc}"
        return None
    _state["source"] = "aot"
    return module


def _newest_source_mtime(root: Path) -> float:
    files = [p for p in root.rglob("*") if p.suffix in _SOURCE_SUFFIXES + _HEADER_SUFFIXES]
    return max((p.stat().st_mtime for p in files), default=0.0)


def extensions_root() -> Path:
    """``$TLENGINE_EXTENSIONS_DIR``, else ``~/.cache/tlengine/extensions``: one subfolder per build.

    Deliberately not under ``TLENGINE_CACHE_DIR`` (which moves the feature caches): pointing
    the feature caches elsewhere must not trigger a rebuild of the kernels."""
    base = os.environ.get("TLENGINE_EXTENSIONS_DIR")
    return Path(base).expanduser() if base else Path.home() / ".cache" / "tlengine" / "extensions"


def _compiler_id() -> str | None:
    cxx = os.environ.get("CXX", "cl" if sys.platform == "win32" else "c++")
    path = shutil.which(cxx)
    if path is None:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return path
    return f"{path} {out.splitlines()[0] if out else ''}"


def _cpu_id() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    keep = [line for line in text.splitlines() if line.startswith(("model name", "flags", "Features", "CPU part"))]
    return hashlib.sha256("\n".join(sorted(set(keep))).encode()).hexdigest()[:16]


def build_key(
    srcs: list[str], root: Path, *, cflags: list[str], with_cuda: bool, arch_list: str | None, compiler: str | None
) -> str:
    """Hash of everything the build depends on: sources and headers, torch, Python, flags,
    compiler, CPU (for -march=native), CUDA arch list."""
    import torch

    h = hashlib.sha256()
    parts = [
        torch.__version__,
        str(torch.version.cuda),
        sys.version,
        platform.machine(),
        " ".join(cflags),
        " ".join(nvcc_flags()) if with_cuda else "",
        str(arch_list),
        str(compiler),
    ]
    if "-march=native" in cflags:
        parts.append(_cpu_id())
    for part in parts:
        h.update(part.encode() + b"\0")
    files = {Path(s) for s in srcs} | {p for p in root.rglob("*") if p.suffix in _HEADER_SUFFIXES}
    for path in sorted(files):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _short(error: str) -> str:
    """The first compiler / linker error line of a failed build, else the message's first line."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    for pattern in ("error:", "undefined reference", "cannot find", "error"):
        for line in lines:
            if pattern in line.lower() and not line.startswith(
                ("[", "FAILED", "ninja: build stopped", "RuntimeError", "collect2")
            ):
                return line[:300]
    return (lines[0] if lines else "unknown error")[:300]


_BUILT_MARKER = "BUILT"


def _load_built(build_dir: Path) -> ModuleType | None:
    """The library a finished build left in ``build_dir``, imported without running ninja.

    The directory name hashes every input of the build, so a library there that the build
    marked as finished is current by construction. Going through cpp_extension.load instead
    would let ninja rebuild everything whenever the same sources sit at another path (a fresh
    clone), without the first-build message."""
    marker = build_dir / _BUILT_MARKER
    if not marker.is_file():
        return None
    library = build_dir / marker.read_text().strip()
    if library.parent != build_dir or not library.is_file():
        return None
    spec = importlib.util.spec_from_file_location(JIT_NAME, library)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError:  # damaged or foreign library: rebuild it
        marker.unlink(missing_ok=True)
        return None
    sys.modules[JIT_NAME] = module
    return module


def _mark_built(build_dir: Path) -> None:
    """Records the finished library's file name (atomically) for :func:`_load_built`."""
    libraries = sorted(
        p.name for p in build_dir.iterdir() if p.name.startswith(JIT_NAME) and p.suffix in (".so", ".pyd")
    )
    if not libraries:
        return
    tmp = build_dir / f".{_BUILT_MARKER}.{os.getpid()}"
    try:
        tmp.write_text(libraries[0] + "\n")
        os.replace(tmp, build_dir / _BUILT_MARKER)
    except OSError:  # a read-only cache still works; the next process just asks ninja again
        tmp.unlink(missing_ok=True)


def _build_jit(*, verbose: bool, with_cuda: bool | None) -> ModuleType | None:
    root = csrc_dir()
    if root is None:
        _fail("the C++ sources (csrc/) are not shipped with this installation")
        return None
    compiler = _compiler_id()
    if compiler is None:
        _fail("no C++ compiler found (install g++ or clang++, or set CXX)")
        return None
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    if not verbose:
        log.setLevel(logging.ERROR)
    try:
        cpp_extension = _cpp_extension()
        if not cpp_extension.is_ninja_available():
            _fail("ninja not found (pip install ninja)")
            return None
        if with_cuda is None:
            with_cuda, _ = cuda_build_wanted()
        elif with_cuda:
            _cuda_home()
        arch_list = cuda_arch_list() if with_cuda else None
        cflags = cxx_flags(jit=True) + (["-DTLENGINE_WITH_CUDA"] if with_cuda else [])
        srcs = sources(with_cuda, root)
        build_dir = extensions_root() / build_key(
            srcs, root, cflags=cflags, with_cuda=with_cuda, arch_list=arch_list, compiler=compiler
        )
        _state["build_dir"] = str(build_dir)
        failed = build_dir / "FAILED"
        if failed.exists():
            _fail(f"an earlier build of these sources failed ({_short(failed.read_text())}); delete {failed} to retry")
            return None
        build_dir.mkdir(parents=True, exist_ok=True)
        built = _load_built(build_dir)
        if built is not None:
            _state["source"] = "jit"
            return built
        what = "CPU + CUDA" if with_cuda else "CPU"
        print(
            f"tlengine: building tlengine kernels ({what}, first use, ~{_BUILD_SECONDS[bool(with_cuda)]} s)...",
            file=sys.stderr,
            flush=True,
        )
        started = time.perf_counter()
        saved_arch = os.environ.get("TORCH_CUDA_ARCH_LIST")
        if arch_list is not None:
            os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list
        try:
            module = cpp_extension.load(
                name=JIT_NAME,
                sources=srcs,
                extra_include_paths=[str(root)],
                extra_cflags=cflags,
                extra_cuda_cflags=nvcc_flags() if with_cuda else None,
                extra_ldflags=ld_flags(),
                build_directory=str(build_dir),
                with_cuda=bool(with_cuda),
                verbose=verbose,
            )
        except Exception as exc:  # compiler errors arrive as RuntimeError, missing tools as OSError
            message = f"{type(exc).__name__}: {exc}"
            try:
                failed.write_text(message)
            except OSError:
                pass
            _fail(f"build failed: {_short(message)} (full log: {failed})")
            return None
        finally:
            if arch_list is not None:
                if saved_arch is None:
                    os.environ.pop("TORCH_CUDA_ARCH_LIST", None)
                else:
                    os.environ["TORCH_CUDA_ARCH_LIST"] = saved_arch
        _mark_built(build_dir)
        print(
            f"tlengine: kernels built in {time.perf_counter() - started:.0f} s (cached in {build_dir})",
            file=sys.stderr,
            flush=True,
        )
        _state["source"] = "jit"
        return module
    finally:
        log.setLevel(level)
