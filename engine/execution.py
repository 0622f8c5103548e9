"""How the parts of a model run: grad mode, precision, memory layout, compilation.

A frozen part (every pretrained part of a feature-extraction arm) computes the same
features whatever the arm trains after it, so it can run in the fastest form the machine
offers, through :meth:`TransferModel.run_part`, for every task alike:

* **grad mode** — ``torch.inference_mode`` when autograd is off (extraction, evaluation,
  predict), ``torch.no_grad`` while training (an inference tensor cannot feed a trained
  head's backward);
* **precision** — ``extraction.precision`` (auto: bf16 on CUDA and on CPUs with native
  bf16 instructions, else fp32; a task may forbid reduced precision). The first call
  runs the part in fp32 and in the reduced dtype and keeps the reduced one only if every
  sample's features have a cosine similarity to fp32 of at least
  ``extraction.tolerance``; otherwise the part runs in fp32 and one line says so.
  Outputs are float32 whatever the part computed in;
* **memory layout** — channels-last for parts with 2-D convolutions (trainable ones too:
  it is the faster layout for convolutions on CPU and on tensor cores); 4-D inputs are
  converted on the way in (a no-op when the task already delivers channels-last);
* **compilation** — ``extraction.compile: on`` compiles the frozen part with
  ``torch.compile``; ``auto`` times the first eager batches and compiles only when the
  samples still to run (``Execution.expect``) save more than the compile costs
  (recorded per model signature in ``$TLENGINE_CACHE_DIR/inductor``, where inductor's
  own cache also lives, so a second run loads the compiled code instead of building it).
  Batches smaller than the first compiled batch are zero-padded, larger ones chunked,
  so one compiled graph serves every batch size;
* **frozen blocks of a trained part** — when a fine-tune freezes the lower blocks of a
  part (``unfreeze: k``, gradual unfreezing), :meth:`Execution.freeze_blocks` runs each
  frozen block under autocast in the reduced dtype (its output cast back to float32, so
  the trained blocks above stay fp32). Inference mode is impossible there (the trained
  blocks save their inputs for backward); the blocks build no graph because nothing in
  them requires grad. The part's first training call checks the part's output with the
  frozen blocks reduced against fp32 (eval mode, no grad), with the same tolerance; a
  block holding a trained attached part (an adapter) stays fp32.

:func:`configure_execution` attaches an :class:`Execution` to a model; without one,
``run_part`` keeps its plain behaviour (frozen parts under ``no_grad``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .atomic import write_text
from .cache.manage import cache_base
from .config import ExtractionConfig

#: compile time assumed for a model never compiled on this machine (seconds)
DEFAULT_COMPILE_SECONDS = 30.0
#: eager / compiled time per sample assumed before one was measured
DEFAULT_COMPILE_SPEEDUP = 1.3
#: eager calls timed before ``compile: auto`` decides (the first is the precision check)
AUTO_MEASURE_CALLS = 2

DTYPE_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


#: TORCHINDUCTOR_CACHE_DIR as the user set it (torch writes its default there once it compiled)
_USER_INDUCTOR_DIR = os.environ.get("TORCHINDUCTOR_CACHE_DIR")


def use_inductor_cache() -> Path:
    """Point inductor's compiled-code cache at ``<tlengine cache>/inductor`` (unless the user
    chose a folder with TORCHINDUCTOR_CACHE_DIR), so compiled frozen parts persist across runs."""
    path = Path(_USER_INDUCTOR_DIR) if _USER_INDUCTOR_DIR else cache_base() / "inductor"
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    return path


def native_reduced_dtype(device: torch.device) -> torch.dtype | None:
    """The reduced precision ``device`` runs natively: bf16 on CUDA (fp16 on GPUs without
    bf16) and on CPUs with AVX-512 BF16 or AMX; None (fp32) elsewhere."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        if any(getattr(torch.cpu, name, lambda: False)() for name in checks):
            return torch.bfloat16
    return None


def resolve_precision(precision: str, device: torch.device, *, task_allows: bool = True) -> torch.dtype | None:
    """``extraction.precision`` -> the autocast dtype of frozen parts (None = fp32)."""
    if precision == "fp32" or not task_allows:
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    return native_reduced_dtype(device)


def has_conv2d(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


@dataclass(frozen=True)
class InputFormat:
    """What the frozen parts want their inputs in (for a task that builds them, e.g. the
    image task's fused ``normalize_images``): channels-last 4-D tensors, float dtype."""

    channels_last: bool = False
    dtype: torch.dtype = torch.float32


@dataclass
class PartExecution:
    """How one part runs, and what was measured while it ran."""

    name: str
    pretrained: bool
    channels_last: bool
    dtype: torch.dtype | None  # autocast dtype while frozen; None = fp32
    compile: str  # "on" | "off" | "auto"
    checked: bool = False
    min_cosine: float | None = None
    fell_back: bool = False
    eager_calls: int = 0
    eager_seconds: float = 0.0
    eager_samples: int = 0
    samples: int = 0
    compiled: Callable[..., Any] | None = None
    compiled_batch: int | None = None
    compile_seconds: float | None = None
    compiled_calls: int = 0
    compiled_seconds: float = 0.0
    compiled_samples: int = 0
    decided: bool = False
    signature: str = ""  # what compile records are keyed by (model class, size, precision, device, torch)
    # the frozen blocks of this part while the part itself trains (see Execution.freeze_blocks)
    block_dtype: torch.dtype | None = None
    blocks: list["ReducedForward"] = field(default_factory=list)
    blocks_checked: bool = False
    blocks_min_cosine: float | None = None
    blocks_fell_back: bool = False
    most_frozen_blocks: int = 0
    reduced_modules: int = 0  # wrapped modules that ran in the check (a block the forward never calls does not)

    def stats(self) -> dict[str, Any]:
        ran_reduced = self.checked and self.dtype is not None  # a trained part runs in fp32 (or train.amp)
        out: dict[str, Any] = {
            "precision": DTYPE_NAMES.get(self.dtype, str(self.dtype)) if ran_reduced else "fp32",
            "channels_last": self.channels_last,
            "compiled": self.compiled is not None,
        }
        if self.min_cosine is not None:
            out["min_cosine_to_fp32"] = round(self.min_cosine, 6)
        if self.fell_back:
            out["fell_back_to_fp32"] = True
        if self.compile_seconds is not None:
            out["compile_seconds"] = round(self.compile_seconds, 2)
        if self.most_frozen_blocks:
            reduced = self.blocks_checked and self.block_dtype is not None and not self.blocks_fell_back
            out["frozen_blocks"] = {
                "count": self.most_frozen_blocks,
                "precision": DTYPE_NAMES.get(self.block_dtype, str(self.block_dtype)) if reduced else "fp32",
                "modules_reduced": self.reduced_modules if reduced else 0,
            }
            if self.blocks_min_cosine is not None:
                out["frozen_blocks"]["min_cosine_to_fp32"] = round(self.blocks_min_cosine, 6)
            if self.blocks_fell_back:
                out["frozen_blocks"]["fell_back_to_fp32"] = True
        return out


class ReducedForward:
    """A frozen block's ``forward``, run under autocast in ``dtype`` with float32 outputs.

    Installed as the module's instance attribute ``forward`` (``nn.Module.__call__`` looks
    it up there first), so the module, its parameters and its state-dict keys stay as they
    are; :meth:`remove` puts the class's forward back. ``enabled`` off runs plain fp32
    (the reference side of the check).
    """

    def __init__(self, module: nn.Module, device_type: str, dtype: torch.dtype):
        self.module, self.device_type, self.dtype = module, device_type, dtype
        self.enabled = True
        self.calls = 0  # reduced-precision calls (the check counts the blocks that really ran)
        self._forward = module.forward
        module.forward = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.enabled:
            return self._forward(*args, **kwargs)
        self.calls += 1
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self._forward(*args, **kwargs)
        return _cast_outputs(out)

    def remove(self) -> None:
        if self.module.__dict__.get("forward") is self:
            del self.module.__dict__["forward"]


@dataclass
class Execution:
    """The execution plan of one model on one device (see the module docstring)."""

    config: ExtractionConfig
    device: torch.device
    parts: dict[str, PartExecution]
    echo: Callable[[str], None] = print
    expected_samples: int | None = None  # samples the frozen parts will still run (compile: auto)
    notes: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ public
    def expect(self, samples: int) -> None:
        """Tell ``compile: auto`` how many samples the frozen parts will run from now on."""
        self.expected_samples = samples

    def input_format(self) -> InputFormat:
        """What the first pretrained part wants its inputs in (its reduced dtype only once
        the first call's check kept it)."""
        for px in self.parts.values():
            if px.pretrained:
                return InputFormat(px.channels_last, px.dtype if px.checked and px.dtype else torch.float32)
        return InputFormat()

    def stats(self) -> dict[str, Any]:
        return {name: px.stats() for name, px in self.parts.items()}

    def freeze_blocks(self, part: str, blocks: list[nn.Module], keep_fp32: Sequence[nn.Module] = ()) -> None:
        """Run ``blocks`` (frozen blocks of pretrained part ``part``, which itself trains) in
        the part's reduced precision from now on, replacing the previous call's set; an empty
        list puts every block back to plain fp32. Blocks containing a module of
        ``keep_fp32`` (trained parts attached inside them) stay fp32. Called by
        ``Strategy.apply`` each epoch."""
        px = self.parts.get(part)
        if px is None:
            return
        for wrapper in px.blocks:
            wrapper.remove()
        px.blocks = []
        px.most_frozen_blocks = max(px.most_frozen_blocks, len(blocks))
        if px.block_dtype is None or px.blocks_fell_back or not blocks:
            return
        trained = {id(m) for kept in keep_fp32 for m in kept.modules()}
        for block in blocks:
            if any(id(m) in trained for m in block.modules()):
                continue
            # a BlockGroup only references its members: the members are what runs
            members = list(block.parts) if isinstance(getattr(block, "parts", None), nn.ModuleList) else [block]
            px.blocks += [ReducedForward(m, self.device.type, px.block_dtype) for m in members]

    def release(self) -> None:
        """Give every module its own forward back (the trained model is saved plain)."""
        for name in self.parts:
            self.freeze_blocks(name, [])

    def run(self, name: str, module: nn.Module, frozen: bool, args: tuple, kwargs: dict) -> Any:
        """Call ``module`` (part ``name``) the way this plan says."""
        px = self.parts.get(name)
        if px is None:
            if frozen:
                with torch.no_grad():
                    return module(*args, **kwargs)
            return module(*args, **kwargs)
        if px.channels_last:
            args = _map(args, _to_channels_last)
        if not frozen:
            if px.blocks and not px.blocks_checked:
                self._check_blocks(px, module, args, kwargs)
            return module(*args, **kwargs)
        grad_off = torch.inference_mode() if not torch.is_grad_enabled() else torch.no_grad()
        with grad_off:
            if not px.checked:
                out = self._first_call(px, module, args, kwargs)
            else:
                if px.dtype is None:
                    args = _map(args, _to_float32)
                out = self._call(px, module, args, kwargs)
        return _cast_outputs(out)  # a transformers ModelOutput stays one (.last_hidden_state)

    # ------------------------------------------------------------------ internals
    def _autocast(self, dtype: torch.dtype | None) -> Any:
        if dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=dtype)

    def _first_call(self, px: PartExecution, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        """fp32 and reduced precision side by side; keep the reduced one if it is close enough."""
        px.checked = True
        t0 = time.perf_counter()
        with self._autocast(None):
            reference = module(*_map(args, _to_float32), **kwargs)
        if px.dtype is None:
            self._count(px, args, time.perf_counter() - t0, eager=False)
            return reference
        with self._autocast(px.dtype):
            reduced = module(*args, **kwargs)
        px.min_cosine = min_cosine(reference, reduced)
        self._count(px, args, 0.0, eager=False)
        if px.min_cosine >= self.config.tolerance:
            return reduced
        note = (
            f"extraction: part '{px.name}' in {DTYPE_NAMES[px.dtype]} is not within tolerance of fp32 "
            f"(lowest cosine similarity {px.min_cosine:.6f} < {self.config.tolerance}); it runs in fp32"
        )
        self.notes.append(note)
        self.echo(note)
        px.dtype, px.fell_back = None, True
        return reference

    def _check_blocks(self, px: PartExecution, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """The part's output with its frozen blocks reduced vs all fp32, in eval mode (no
        BatchNorm statistics move, no dropout) and without autograd; fp32 blocks if too far."""
        px.blocks_checked = True
        modes = {m: m.training for m in module.modules()}
        module.eval()
        try:
            with torch.no_grad():
                for wrapper in px.blocks:
                    wrapper.enabled = False
                reference = module(*args, **kwargs)
                for wrapper in px.blocks:
                    wrapper.enabled = True
                reduced = module(*args, **kwargs)
        finally:
            for m, training in modes.items():
                m.training = training
        px.blocks_min_cosine = min_cosine(reference, reduced)
        px.reduced_modules = sum(1 for wrapper in px.blocks if wrapper.calls)
        if px.blocks_min_cosine >= self.config.tolerance:
            return
        note = (
            f"extraction: the frozen blocks of part '{px.name}' in {DTYPE_NAMES[px.block_dtype]} are not within "
            f"tolerance of fp32 (lowest cosine similarity {px.blocks_min_cosine:.6f} < {self.config.tolerance}); "
            "they run in fp32"
        )
        self.notes.append(note)
        self.echo(note)
        px.blocks_fell_back = True
        self.freeze_blocks(px.name, [])

    def _count(self, px: PartExecution, args: tuple, seconds: float, *, eager: bool) -> None:
        n = _batch_of(args)
        px.samples += n
        if eager:
            px.eager_calls += 1
            px.eager_seconds += seconds
            px.eager_samples += n

    def _call(self, px: PartExecution, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        if px.compiled is None and not px.decided and px.compile != "off":
            self._maybe_compile(px, module)
        if px.compiled is not None:
            return self._run_compiled(px, args, kwargs)
        t0 = time.perf_counter()
        with self._autocast(px.dtype):
            out = module(*args, **kwargs)
        self._count(px, args, time.perf_counter() - t0, eager=True)
        return out

    def _maybe_compile(self, px: PartExecution, module: nn.Module) -> None:
        record = _CompileRecords.get(self._signature(px, module))
        if px.compile == "auto":
            if px.eager_calls < AUTO_MEASURE_CALLS or self.expected_samples is None:
                if self.expected_samples is None:
                    px.decided = True  # nothing says how much is left: stay eager
                return
            px.decided = True
            per_sample = px.eager_seconds / max(px.eager_samples, 1)
            remaining = max(self.expected_samples - px.samples, 0)
            speedup = record.get("speedup", DEFAULT_COMPILE_SPEEDUP) if record else DEFAULT_COMPILE_SPEEDUP
            cost = record.get("compile_seconds", DEFAULT_COMPILE_SECONDS) if record else DEFAULT_COMPILE_SECONDS
            saving = remaining * per_sample * (1.0 - 1.0 / max(speedup, 1.0))
            if saving <= cost:
                return
            self.echo(
                f"extraction: compiling part '{px.name}' (saves ~{saving:.0f} s over {remaining} samples, "
                f"compiling costs ~{cost:.0f} s)"
            )
        px.decided = True
        use_inductor_cache()
        if not torch.cuda.is_available():  # inductor's CPU build warns that a CUDA build finds no GPU
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        px.compiled = torch.compile(module, dynamic=False)
        px.signature = self._signature(px, module)

    def _run_compiled(self, px: PartExecution, args: tuple, kwargs: dict) -> Any:
        first = px.compiled_batch is None
        n = _batch_of(args)
        if first:
            px.compiled_batch = n
        t0 = time.perf_counter()
        # compiled code is specialised on whether its inputs are inference tensors: feed it
        # normal tensors only, so a padded batch does not recompile
        args = _map(args, _normal_tensor)
        with self._autocast(px.dtype):
            out = _fixed_batch(px.compiled, args, kwargs, px.compiled_batch)
        seconds = time.perf_counter() - t0
        self._count(px, args, 0.0, eager=False)
        if first:
            per_sample = px.eager_seconds / px.eager_samples if px.eager_samples else 0.0
            px.compile_seconds = max(seconds - per_sample * n, 0.0)
        else:
            px.compiled_calls += 1
            px.compiled_seconds += seconds
            px.compiled_samples += n
            if px.compiled_calls == 3:
                self._record(px)
        return out

    def _record(self, px: PartExecution) -> None:
        entry: dict[str, Any] = {"compile_seconds": px.compile_seconds}
        if px.eager_samples and px.compiled_samples:
            eager = px.eager_seconds / px.eager_samples
            compiled = px.compiled_seconds / px.compiled_samples
            entry["speedup"] = round(eager / max(compiled, 1e-9), 3)
        _CompileRecords.put(px.signature, entry)

    def _signature(self, px: PartExecution, module: nn.Module) -> str:
        n_params = sum(p.numel() for p in module.parameters())
        return (
            f"{type(module).__module__}.{type(module).__qualname__}|{n_params}|{DTYPE_NAMES.get(px.dtype)}"
            f"|cl={px.channels_last}|{self.device.type}|torch={torch.__version__}"
        )


class _CompileRecords:
    """Measured compile times and speed-ups, per model signature, beside inductor's cache."""

    @staticmethod
    def _path() -> Path:
        return cache_base() / "inductor" / "tlengine-compile-records.json"

    @classmethod
    def _all(cls) -> dict[str, Any]:
        try:
            return json.loads(cls._path().read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    @classmethod
    def get(cls, signature: str) -> dict[str, Any] | None:
        return cls._all().get(signature)

    @classmethod
    def put(cls, signature: str, entry: dict[str, Any]) -> None:
        records = cls._all()
        records[signature] = entry
        try:
            cls._path().parent.mkdir(parents=True, exist_ok=True)
            write_text(cls._path(), json.dumps(records, indent=1, sort_keys=True))
        except OSError:
            pass  # a read-only cache folder only costs the estimate next time


def configure_execution(
    model: nn.Module,
    config: ExtractionConfig,
    *,
    device: torch.device,
    task_allows_reduced: bool = True,
    echo: Callable[[str], None] = print,
) -> Execution:
    """Attach an :class:`Execution` to ``model`` (a TransferModel on ``device``) and put its
    convolutional parts in channels-last. Returns the plan (also ``model.execution``)."""
    dtype = resolve_precision(config.precision, device, task_allows=task_allows_reduced)
    parts = {}
    for name, part in model.parts.items():
        if part.attached:
            continue
        cl = config.channels_last == "on" or (config.channels_last == "auto" and has_conv2d(part.module))
        if cl:
            part.module.to(memory_format=torch.channels_last)
        parts[name] = PartExecution(
            name, part.pretrained, cl, dtype if part.pretrained else None, config.compile if part.pretrained else "off"
        )
        parts[name].block_dtype = parts[name].dtype
    execution = Execution(config, device, parts, echo)
    model.execution = execution
    return execution


# ---------------------------------------------------------------------- helpers
def min_cosine(reference: Any, reduced: Any) -> float:
    """Lowest per-sample cosine similarity between two outputs, over every floating tensor in
    them (a detector backbone's maps at each stride, a sequence and not its lengths); samples
    along dim 0, everything else flattened; 1.0 for rows that are zero in both."""
    pairs = list(zip(_floats(reference), _floats(reduced)))
    if not pairs:
        raise TypeError(f"the part returned no floating-point tensor to compare ({type(reference).__name__})")
    return min(_min_cosine(a, b) for a, b in pairs)


def _min_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12)
    both_zero = (a.abs().amax(dim=1) == 0) & (b.abs().amax(dim=1) == 0)
    cos = torch.where(both_zero, torch.ones_like(cos), cos)
    return float(torch.nan_to_num(cos, nan=-1.0).min())


def _floats(out: Any) -> list[torch.Tensor]:
    """The per-sample floating tensors of a part's output: itself, or the items of a
    tuple/list/dict or the fields of a dataclass; scalars (a loss) are not per sample."""
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        out = {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
    if isinstance(out, torch.Tensor):
        values: Any = [out]
    elif isinstance(out, dict):
        values = out.values()
    else:
        values = out if isinstance(out, (tuple, list)) else ()
    return [x for x in values if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dim() > 0]


def _map(x: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(x, torch.Tensor):
        return fn(x)
    if isinstance(x, tuple):
        return tuple(_map(v, fn) for v in x)
    if isinstance(x, list):
        return [_map(v, fn) for v in x]
    if isinstance(x, dict):
        return {k: _map(v, fn) for k, v in x.items()}
    return x


def _cast_outputs(out: Any) -> Any:
    """Floating tensors of a block's output to float32; a dict-like output (a transformers
    ``ModelOutput``) is updated in place so it keeps its type."""
    if isinstance(out, dict):
        for key in list(out.keys()):
            out[key] = _map(out[key], _to_float32)
        return out
    return _map(out, _to_float32)


def _to_channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


def _to_float32(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.is_floating_point() and t.dtype != torch.float32 else t


def _batch_of(args: tuple) -> int:
    for a in args:
        if isinstance(a, torch.Tensor) and a.dim():
            return int(a.shape[0])
    return 1


def _fixed_batch(fn: Callable[..., Any], args: tuple, kwargs: dict, size: int) -> Any:
    """``fn(*args)`` run on batches of exactly ``size`` samples: tensors whose first
    dimension is the batch are zero-padded (smaller batches) or chunked (larger ones), and
    the outputs cut back and concatenated. Inputs without a tensor batch go through as is."""
    n = _batch_of(args)
    if n == size or not any(isinstance(a, torch.Tensor) for a in args):
        return fn(*args, **kwargs)
    if n > size:
        outs = [_fixed_batch(fn, _slice(args, n, i, min(i + size, n)), kwargs, size) for i in range(0, n, size)]
        return _concat(outs)
    out = fn(*_map(args, lambda t: _pad(t, n, size)), **kwargs)
    return _map(out, lambda t: t[:n] if t.dim() and t.shape[0] == size else t)


def _slice(args: tuple, n: int, start: int, stop: int) -> tuple:
    return _map(args, lambda t: t[start:stop] if t.dim() and t.shape[0] == n else t)


def _normal_tensor(t: torch.Tensor) -> torch.Tensor:
    if not t.is_inference():
        return t
    with torch.inference_mode(False):
        return t.clone()


def _pad(t: torch.Tensor, n: int, size: int) -> torch.Tensor:
    if not t.dim() or t.shape[0] != n:
        return t
    cl = t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    fmt = torch.channels_last if cl else torch.contiguous_format
    with torch.inference_mode(False):  # a normal tensor, like the full batches (see _run_compiled)
        out = torch.zeros((size, *t.shape[1:]), dtype=t.dtype, device=t.device).contiguous(memory_format=fmt)
        out[:n] = t
    return out


def _concat(outs: list[Any]) -> Any:
    first = outs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outs)
    if isinstance(first, (tuple, list)):
        return type(first)(_concat([o[i] for o in outs]) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: _concat([o[k] for o in outs]) for k in first}
    return first
