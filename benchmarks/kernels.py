"""Kernel benchmarks: each fused op of ``tlengine._C`` beside its eager pure-PyTorch
reference (``tlengine.kernels.reference``) and ``torch.compile`` of that reference.

Protocol (DESIGN.md, "Performance protocol"):

* Times are medians of repeated runs from ``torch.utils.benchmark`` with its thread count
  set to the threads torch actually uses (``torch.get_num_threads()``); on CUDA the Timer
  synchronises. Every variant is warmed up first, so ``torch.compile``'s compile time is
  excluded (it is reported separately as ``compile_s``). The variants of a row (eager,
  compiled, fused, copy) are timed in alternating rounds, so a disturbance from outside
  hits all of them rather than one column; ``*_min_ms`` keeps the least disturbed run.
* ``gbps`` = bytes the op must read + write (from shapes and dtypes, not from what an
  implementation happens to touch) / median time. The ceiling ``copy_gbps`` is a plain
  ``dst.copy_(src)`` on the same device moving the same number of bytes.
* :mod:`benchmarks.machine` measures how much CPU other processes took meanwhile; on a
  2-core machine one busy core stalls every 2-thread parallel region, and the report says
  so (``busy_warning``) instead of presenting those numbers as clean.
* Buffers are larger than the last-level cache: batches are sized so that each call
  touches at least ``LLC_FACTOR`` x LLC, and where one call's working set is small
  (gathering 256 rows, writing cache rows) successive calls rotate over row sets whose
  union is that large, so the timings are not of a warm cache.
* The eager and compiled columns time the reference exactly as a user would call it,
  argument checks included (they read ``rows.min()/max()`` and offsets on the host, and
  ``pool_quantize_scatter`` sorts ``rows`` to let the last duplicate win).
* When the extension is not built, ``fused_ms`` is null and the row's ``note`` says so;
  the reference is never timed twice under two names.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tlengine.kernels import reference as ref
from torch.utils import benchmark as tbench

from benchmarks.machine import OtherLoad

LLC_FACTOR = 3  # every timed call (or rotation of calls) touches >= 3x the last-level cache
CACHE_ROWS = 50_000  # rows of the feature cache for pooled (one-vector-per-sample) rows
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_DTYPE_NAMES = {
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.int8: "int8",
    torch.uint8: "uint8",
}


# ---------------------------------------------------------------------- machine facts
def last_level_cache_bytes(device: torch.device) -> int:
    """Size of the last-level cache: the CPU's highest ``cacheN`` index, or the GPU's L2."""
    if device.type == "cuda":
        return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0)) or 64 << 20
    best_level, size = -1, 0
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            text = (index / "size").read_text().strip().upper()
        except (OSError, ValueError):
            continue
        if kind == "Instruction":
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        value = int(text.rstrip("KMG")) * mult
        if level > best_level:
            best_level, size = level, value
    return size or 32 << 20  # unknown: assume 32 MiB, a large server LLC, so buffers stay big


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_peak_gbps(device: torch.device) -> float | None:
    """Theoretical DRAM bandwidth from memory clock and bus width (double data rate), or None."""
    if device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(device)
    clock_khz = getattr(props, "memory_clock_rate", None)
    bus_bits = getattr(props, "memory_bus_width", None)
    if not clock_khz or not bus_bits:
        return None
    return 2 * (bus_bits / 8) * clock_khz * 1e3 / 1e9


def dtype_name(dtype: torch.dtype) -> str:
    return _DTYPE_NAMES.get(dtype, str(dtype).replace("torch.", ""))


# ---------------------------------------------------------------------- the fused front
def fused_front(device: torch.device) -> tuple[Any | None, str | None, Any, frozenset[str]]:
    """(module with the fused ops or None, why not, the front's status(), ops with a fused
    kernel for ``device``). The front falls back to the reference per op and device, so an op
    without a kernel here is reported as such rather than timed under the fused name."""
    try:
        import tlengine.kernels as front
    except Exception as exc:  # pragma: no cover - the namespace always imports
        return None, f"tlengine.kernels cannot be imported ({type(exc).__name__}: {exc})", None, frozenset()
    needed = ("normalize_images", "pool_quantize_scatter", "gather_dequantize", "extension_available")
    missing = [n for n in needed if not hasattr(front, n)]
    if missing:
        return (
            None,
            f"tlengine.kernels has no {', '.join(missing)} (the fused front is not installed)",
            None,
            frozenset(),
        )
    try:
        available = bool(front.extension_available())
    except Exception as exc:
        return None, f"extension_available() failed: {type(exc).__name__}: {exc}", None, frozenset()
    status: Any = None
    if hasattr(front, "status"):
        try:
            status = front.status()
        except Exception as exc:
            status = f"status() failed: {type(exc).__name__}: {exc}"
    if not available:
        why = status.get("error") if isinstance(status, dict) else None
        return (
            None,
            "the tlengine._C extension is not available" + (f" ({why})" if why else "") + "; fused column left empty",
            status,
            frozenset(),
        )
    ops = set(needed[:3])
    if isinstance(status, dict) and isinstance(status.get("kernels"), dict):
        ops = {op for op, devices in status["kernels"].items() if device.type in devices}
    return front, None, status, frozenset(ops)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "__dict__"):
        return _jsonable(vars(value))
    return str(value)


# ---------------------------------------------------------------------- cases
@dataclass
class Case:
    """One benchmark row: how to call an op on prepared inputs, and what it must move."""

    op: str
    shape: str
    dtype: str
    call: Callable[[Callable[..., Any]], Callable[[], Any]]  # fn -> zero-arg closure (rotating inputs)
    check: Callable[[Callable[..., Any]], float]  # fn -> max |fn - reference| on one call
    bytes_read: int
    bytes_written: int
    info: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def _rotating_row_sets(
    num_rows: int, batch: int, row_bytes: int, llc: int, device: torch.device, gen: torch.Generator, quick: bool
) -> list[torch.Tensor]:
    """Distinct-row index sets whose union touches >= LLC_FACTOR x LLC (1 set when quick)."""
    sets = 1 if quick else max(1, math.ceil(LLC_FACTOR * llc / max(1, batch * row_bytes)))
    sets = min(sets, 512)
    return [torch.randperm(num_rows, generator=gen)[:batch].to(device) for _ in range(sets)]


def _rows_to_llc(per_sample_bytes: int, base: int, llc: int, quick: bool, multiple: int = 64) -> int:
    """Batch size: ``base``, grown until one call touches >= LLC_FACTOR x LLC."""
    if quick:
        return base
    n = max(base, math.ceil(LLC_FACTOR * llc / per_sample_bytes))
    return int(math.ceil(n / multiple) * multiple)


def normalize_case(
    n: int,
    h: int,
    w: int,
    out: int,
    dtype: torch.dtype,
    device: torch.device,
    gen: torch.Generator,
    *,
    channels_last: bool = False,
) -> Case:
    """One batch of crops; ``channels_last``: the output in ``torch.channels_last`` memory format
    (what a channels-last backbone takes; for NHWC input also the order the op reads pixels in)."""
    images = torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, generator=gen).to(device)
    offsets = torch.stack(
        [torch.randint(0, h - out + 1, (n,), generator=gen), torch.randint(0, w - out + 1, (n,), generator=gen)], 1
    ).to(device)
    mirror = (torch.rand(n, generator=gen) < 0.5).to(device)
    args = (images, offsets, mirror, out, out, IMAGENET_MEAN, IMAGENET_STD, dtype, channels_last)
    expected = ref.normalize_images(*args)

    def call(fn: Callable[..., Any]) -> Callable[[], Any]:
        return lambda: fn(*args)

    def check(fn: Callable[..., Any]) -> float:
        return float((fn(*args).float() - expected.float()).abs().max())

    elem = torch.empty((), dtype=dtype).element_size()
    read = n * out * out * 3 + offsets.numel() * 8 + n  # the crop windows, offsets, mirror flags
    written = n * 3 * out * out * elem
    layout = "channels_last" if channels_last else "nchw"
    return Case(
        "normalize_images",
        f"[{n},{h},{w},3]->{out}x{out}" + (" channels_last" if channels_last else ""),
        dtype_name(dtype),
        call,
        check,
        read,
        written,
        info={"out_dtype": dtype_name(dtype), "layout": layout},
    )


def pool_case(
    name: str,
    shape: tuple[int, ...],
    pooling: str,
    cache_dtype: torch.dtype,
    device: torch.device,
    gen: torch.Generator,
    llc: int,
    quick: bool,
    *,
    l2: bool = False,
    feature_dtype: torch.dtype = torch.float32,
) -> Case:
    n = shape[0]
    features = torch.randn(shape, generator=gen).to(device=device, dtype=feature_dtype)
    conv = len(shape) == 4
    if pooling == "none":
        d_row = math.prod(shape[1:])
        vectors_per_sample = shape[2] * shape[3] if conv else shape[1]
    else:
        d_row = shape[1] if conv else shape[2]
        vectors_per_sample = 1
    cache_elem = torch.empty((), dtype=cache_dtype).element_size()
    row_bytes = d_row * cache_elem
    num_rows = max(2 * n, CACHE_ROWS if pooling != "none" else 2 * n)
    if quick:
        num_rows = 4 * n
    cache = torch.zeros(num_rows, d_row, dtype=cache_dtype, device=device)
    scales = torch.ones(num_rows, dtype=torch.float32, device=device)
    row_sets = _rotating_row_sets(num_rows, n, row_bytes, llc, device, gen, quick)

    def call(fn: Callable[..., Any]) -> Callable[[], Any]:
        it = itertools.cycle(row_sets)
        return lambda: fn(features, cache, scales, next(it), pooling, l2)

    def stored(rows: torch.Tensor) -> torch.Tensor:
        values = cache.index_select(0, rows).float()
        return values * scales.index_select(0, rows)[:, None] if cache_dtype == torch.int8 else values

    def check(fn: Callable[..., Any]) -> float:
        rows = row_sets[0]
        ref.pool_quantize_scatter(features, cache, scales, rows, pooling, l2)
        expected = stored(rows)
        cache[rows] = 0
        scales[rows] = 0.0
        fn(features, cache, scales, rows, pooling, l2)
        return float((stored(rows) - expected).abs().max())

    f_elem = features.element_size()
    if pooling == "cls":  # only token 0 of each sequence is needed
        read = n * shape[2] * f_elem
    else:
        read = features.numel() * f_elem
    read += n * 8  # rows
    written = n * row_bytes + n * 4  # cache rows + scales
    pool_desc = pooling + ("+l2" if l2 else "")
    dims = ",".join(str(s) for s in shape)
    return Case(
        "pool_quantize_scatter",
        f"{name} [{dims}] {pool_desc}",
        dtype_name(cache_dtype),
        call,
        check,
        read,
        written,
        info={
            "model": name,
            "pooling": pooling,
            "l2_normalize": l2,
            "features_dtype": dtype_name(feature_dtype),
            "row_values": d_row,
            "vectors_per_row": vectors_per_sample,
            "cache_rows": num_rows,
            "row_sets": len(row_sets),
        },
        note="eager/compile time the reference as called, incl. its checks (host sync on rows) "
        "and last-duplicate-wins sort",
    )


def gather_case(
    num_rows: int,
    d_row: int,
    batch: int,
    cache_dtype: torch.dtype,
    out_dtype: torch.dtype,
    device: torch.device,
    gen: torch.Generator,
    llc: int,
    quick: bool,
) -> Case:
    if cache_dtype == torch.int8:
        cache = torch.randint(-127, 128, (num_rows, d_row), dtype=torch.int8, generator=gen).to(device)
        scales = (torch.rand(num_rows, generator=gen) * 0.05 + 1e-3).to(device)
    else:
        cache = torch.randn(num_rows, d_row, generator=gen).to(device=device, dtype=cache_dtype)
        scales = torch.ones(num_rows, device=device)
    row_bytes = d_row * cache.element_size()
    row_sets = _rotating_row_sets(num_rows, batch, row_bytes, llc, device, gen, quick)

    def call(fn: Callable[..., Any]) -> Callable[[], Any]:
        it = itertools.cycle(row_sets)
        return lambda: fn(cache, scales, next(it), out_dtype)

    def check(fn: Callable[..., Any]) -> float:
        rows = row_sets[0]
        expected = ref.gather_dequantize(cache, scales, rows, out_dtype)
        return float((fn(cache, scales, rows, out_dtype).float() - expected.float()).abs().max())

    out_elem = torch.empty((), dtype=out_dtype).element_size()
    read = batch * row_bytes + batch * 8 + (batch * 4 if cache_dtype == torch.int8 else 0)
    written = batch * d_row * out_elem
    return Case(
        "gather_dequantize",
        f"[{num_rows},{d_row}][{batch} rows]->{dtype_name(out_dtype)}",
        dtype_name(cache_dtype),
        call,
        check,
        read,
        written,
        info={"out_dtype": dtype_name(out_dtype), "cache_rows": num_rows, "row_sets": len(row_sets)},
    )


def build_cases(device: torch.device, quick: bool, llc: int) -> list[Callable[[], Case]]:
    """Lazily built cases (each allocates its buffers only when it runs, then frees them)."""
    gen = torch.Generator().manual_seed(0)
    f32, f16, bf16, i8 = torch.float32, torch.float16, torch.bfloat16, torch.int8
    if quick:
        return [
            lambda: normalize_case(8, 64, 64, 56, f32, device, gen),
            lambda: normalize_case(8, 64, 64, 56, bf16, device, gen, channels_last=True),
            lambda: pool_case("conv", (16, 256, 4, 4), "avg", i8, device, gen, llc, True),
            lambda: pool_case("tokens", (8, 17, 64), "cls", f16, device, gen, llc, True, l2=True),
            lambda: gather_case(2_000, 256, 64, i8, f32, device, gen, llc, True),
        ]
    # realistic shapes; batches grow until a call's buffers are >= LLC_FACTOR x LLC
    n_img = _rows_to_llc(256 * 256 * 3 + 3 * 224 * 224 * 4, 256, llc, quick)
    n_r50 = _rows_to_llc(2048 * 49 * 4, 256, llc, quick)
    n_vgg = _rows_to_llc(512 * 49 * 4, 256, llc, quick)
    n_vit = _rows_to_llc(197 * 768 * 4, 256, llc, quick)
    r50, vgg, vit = (n_r50, 2048, 7, 7), (n_vgg, 512, 7, 7), (n_vit, 197, 768)
    cases: list[Callable[[], Case]] = [
        lambda: normalize_case(n_img, 256, 256, 224, f32, device, gen),
        lambda: normalize_case(n_img, 256, 256, 224, bf16, device, gen),
        # the layout + dtype a channels-last (bf16) backbone takes, written directly
        lambda: normalize_case(n_img, 256, 256, 224, f32, device, gen, channels_last=True),
        lambda: normalize_case(n_img, 256, 256, 224, bf16, device, gen, channels_last=True),
    ]
    for dt in (f32, f16, bf16, i8):  # every cache dtype on the ResNet-50 map
        cases.append(lambda dt=dt: pool_case("resnet50", r50, "avg", dt, device, gen, llc, False))
    cases += [
        lambda: pool_case("resnet50", r50, "none", f16, device, gen, llc, False),
        lambda: pool_case("vgg16", vgg, "avg", f32, device, gen, llc, False),
        lambda: pool_case("vgg16", vgg, "max", bf16, device, gen, llc, False),
        lambda: pool_case("vgg16", vgg, "none", i8, device, gen, llc, False),
        lambda: pool_case("vit-b16", vit, "cls", f32, device, gen, llc, False, l2=True),
        lambda: pool_case("vit-b16", vit, "avg", i8, device, gen, llc, False),
        lambda: pool_case("vit-b16", vit, "none", f16, device, gen, llc, False),
    ]
    if device.type == "cuda":  # AMP features straight from a half-precision backbone
        cases.append(lambda: pool_case("resnet50", r50, "avg", f16, device, gen, llc, False, feature_dtype=f16))
    for dt in (f32, f16, bf16, i8):
        cases.append(lambda dt=dt: gather_case(CACHE_ROWS, 2048, 256, dt, f32, device, gen, llc, False))
    cases.append(lambda: gather_case(CACHE_ROWS, 2048, 256, f16, f16, device, gen, llc, False))
    return cases


# ---------------------------------------------------------------------- timing
@contextlib.contextmanager
def _quiet_compile():
    """Silence dynamo's graph-break warnings (the reference's host checks cause them)."""
    names = ("torch._dynamo", "torch._inductor", "torch.utils.cpp_extension")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@dataclass
class Timing:
    median_ms: float
    min_ms: float
    iqr_ms: float
    samples: int

    def fields(self, prefix: str) -> dict[str, Any]:
        """Extra row fields; the min is kept because on a shared machine it is the least disturbed run."""
        return {
            f"{prefix}_min_ms": round(self.min_ms, 4),
            f"{prefix}_iqr_ms": round(self.iqr_ms, 4),
            f"{prefix}_samples": self.samples,
        }


def time_interleaved(
    fns: dict[str, Callable[[], Any]],
    *,
    label: str,
    threads: int,
    min_run_time: float,
    rounds: int = 5,
    warmup: int = 2,
) -> dict[str, Timing]:
    """Median (and min, IQR) per variant with torch.utils.benchmark, the variants timed in
    alternation (``rounds`` rounds of ``min_run_time / rounds`` each), so that a disturbance
    (another process, frequency changes) hits all of them alike instead of one whole column.
    Each variant gets at least ``rounds`` samples; a block's time is its per-call mean."""
    timers = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        timers[name] = tbench.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads, label=label, description=name)
    collected: dict[str, list[Any]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, timer in timers.items():
            collected[name].append(timer.blocked_autorange(min_run_time=min_run_time / rounds))
    out = {}
    for name, ms in collected.items():
        m = tbench.Measurement.merge(ms)[0]
        out[name] = Timing(m.median * 1e3, min(m.times) * 1e3, m.iqr * 1e3, len(m.times))
    return out


def copy_closure(moved: int, device: torch.device, llc: int, quick: bool) -> Callable[[], Any]:
    """``dst.copy_(src)`` moving ``moved`` bytes (read + written); sources rotate over
    >= LLC_FACTOR x LLC so a small copy is not timed in cache either."""
    half = max(1, moved // 2)
    chunks = 1 if quick else min(512, max(1, math.ceil(LLC_FACTOR * llc / half)))
    src = torch.empty(chunks * half, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty(half, dtype=torch.uint8, device=device).fill_(0)
    it = itertools.cycle([src[i * half : (i + 1) * half] for i in range(chunks)])
    return lambda: dst.copy_(next(it))


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _gbps(moved: int, ms: float | None) -> float | None:
    return round(moved / (ms * 1e-3) / 1e9, 3) if ms else None


def run_case(
    case: Case,
    *,
    front: Any,
    front_note: str | None,
    threads: int,
    min_run_time: float,
    device: torch.device,
    llc: int,
    quick: bool,
    peak: float | None,
    compile_enabled: bool = True,
) -> dict[str, Any]:
    ref_fn = getattr(ref, case.op)
    label = f"{case.op} {case.shape} {case.dtype}"
    row: dict[str, Any] = {"kind": "kernel", "op": case.op, "shape": case.shape, "dtype": case.dtype, **case.info}
    notes = [n for n in (case.note,) if n]
    moved = case.bytes_read + case.bytes_written
    fns: dict[str, Callable[[], Any]] = {"eager": case.call(ref_fn)}

    if front is not None:
        fused_fn = getattr(front, case.op)
        try:
            row["fused_max_abs_err"] = case.check(fused_fn)
            fns["fused"] = case.call(fused_fn)
        except Exception as exc:
            row["fused_error"] = f"{type(exc).__name__}: {exc}"[:400]
    else:
        notes.append(front_note or "fused ops unavailable")

    if compile_enabled:
        from torch._dynamo.utils import counters

        torch._dynamo.reset()  # a fresh cache per row: dynamic=False recompiles per shape, never hit the limit
        breaks_before = sum(counters["graph_break"].values())
        try:
            with _quiet_compile():
                compiled = torch.compile(ref_fn, dynamic=False)
                fn = case.call(compiled)
                t0 = time.perf_counter()
                fn()  # compiles; excluded from the timings
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                row["compile_s"] = round(time.perf_counter() - t0, 2)
                row["compile_max_abs_err"] = case.check(compiled)
                fn()
            row["compile_graph_breaks"] = sum(counters["graph_break"].values()) - breaks_before
            fns["compile"] = fn
        except Exception as exc:
            row["compile_error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:400]
    else:
        row["compile_error"] = "torch.compile skipped"
    fns["copy"] = copy_closure(moved, device, llc, quick)

    try:
        with _quiet_compile():  # late recompiles (guards) stay quiet too
            timings = time_interleaved(
                fns, label=label, threads=threads, min_run_time=min_run_time, rounds=3 if quick else 5
            )
    finally:
        fns.clear()
        if compile_enabled:
            torch._dynamo.reset()
    ms = {name: t.median_ms for name, t in timings.items()}
    for name, t in timings.items():
        if name != "copy":
            row.update(t.fields(name))
    eager_ms, fused_ms, compile_ms = ms["eager"], ms.get("fused"), ms.get("compile")
    copy_gbps = moved / (ms["copy"] * 1e-3) / 1e9
    gbps = _gbps(moved, fused_ms)
    row.update(
        fused_ms=round(fused_ms, 4) if fused_ms else None,
        eager_ms=round(eager_ms, 4),
        compile_ms=round(compile_ms, 4) if compile_ms else None,
        bytes_read=case.bytes_read,
        bytes_written=case.bytes_written,
        speedup_vs_eager=_ratio(eager_ms, fused_ms),
        speedup_vs_compile=_ratio(compile_ms, fused_ms),
        compile_speedup_vs_eager=_ratio(eager_ms, compile_ms),
        gbps=gbps,
        eager_gbps=_gbps(moved, eager_ms),
        compile_gbps=_gbps(moved, compile_ms),
        copy_gbps=round(copy_gbps, 3),
        pct_of_copy=round(100 * gbps / copy_gbps, 1) if gbps else None,
        # the most any kernel moving these bytes at copy_ speed could gain over eager
        copy_bound_vs_eager=_ratio(eager_ms, ms["copy"]),
        pct_of_peak=round(100 * gbps / peak, 1) if gbps and peak else None,
        note="; ".join(notes),
    )
    return row


def run_kernel_benchmarks(
    *, device: str = "cpu", quick: bool = False, compile: bool = True, echo: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Time every fused op vs eager reference vs torch.compile(reference); one row per case.

    quick: tiny sizes, short timing windows (a few seconds plus torch.compile warm-up);
    for tests and CI, not for numbers.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device} asked for but CUDA is not available")
    threads = torch.get_num_threads()
    llc = last_level_cache_bytes(dev)
    peak = gpu_peak_gbps(dev)
    min_run_time = 0.06 if quick else 1.0  # per variant and row, split over the interleaved rounds
    front, front_note, status, fused_ops = fused_front(dev)
    started = time.perf_counter()
    rows = []
    with OtherLoad() as load:
        for make in build_cases(dev, quick, llc):
            case = make()
            usable = front if case.op in fused_ops else None
            note = front_note or f"the extension has no {dev.type} kernel for {case.op}; fused column left empty"
            row = run_case(
                case,
                front=usable,
                front_note=note,
                threads=threads,
                min_run_time=min_run_time,
                device=dev,
                llc=llc,
                quick=quick,
                peak=peak,
                compile_enabled=compile,
            )
            row["device"] = str(dev)
            rows.append(row)
            if echo:
                echo(
                    f"{row['op']:22s} {row['shape']:40s} {row['dtype']:8s} eager {_num(row['eager_ms'])} ms  "
                    f"compile {_num(row['compile_ms'])} ms  fused {_num(row['fused_ms'])} ms"
                )
            del case
    hw = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name()
    return {
        "kind": "kernels",
        "device": str(dev),
        "hardware": hw,
        "threads": threads,
        "torch": torch.__version__,
        "quick": quick,
        "llc_bytes": llc,
        "peak_gbps": round(peak, 1) if peak else None,
        "fused_available": front is not None,
        "fused_note": front_note,
        "extension": _jsonable(status),
        "seconds": round(time.perf_counter() - started, 1),
        **load.summary(),
        "rows": rows,
    }


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"
