"""``python -m benchmarks.run kernels|training|extraction|text|detection|captioning|asr|scaling|all [--json] [--quick] [--out DIR]``.

* ``kernels`` - fused ops vs eager reference vs torch.compile (:mod:`benchmarks.kernels`);
* ``training`` - feature-extraction training, naive vs cached arms, through ``tlengine run``
  (:mod:`benchmarks.training`);
* ``extraction`` - images/s of frozen backbones in each execution form: eager fp32,
  channels-last, bf16, torch.compile (:mod:`benchmarks.extraction`);
* ``text`` - text feature-extraction training, naive vs cached arms, through ``tlengine run``,
  and the MiniLM encoder's texts/s with dynamic padding vs padding to max_length
  (:mod:`benchmarks.text`; skipped, saying so, without the minilm-l6 weights);
* ``detection`` - frozen-backbone detection training, naive vs feature-map cache, through
  ``tlengine run``, and the trained detector's inference images/s, backbone fp32 vs bf16
  (:mod:`benchmarks.detection`);
* ``captioning`` - frozen-encoder captioning training, naive vs cached grid tokens, through
  ``tlengine run`` at equal BLEU-4, and the trained captioner's captions/s, greedy vs beam
  search (:mod:`benchmarks.captioning`);
* ``asr`` - Whisper tiny.en speaker adaptation steps/s per method (LHUC, adapters, top-layer and
  full fine-tuning), greedy transcription's real-time factor, and speaker-ID training on cached
  encoder features vs naive through ``tlengine run`` (:mod:`benchmarks.asr`);
* ``scaling`` - extraction images/s and training samples/s on 1 and 2 processes (torchrun,
  ``tlengine run --nproc 2``) with the cores each used, and the projection to N processes
  from the measured figures and the all-reduce volume (:mod:`benchmarks.scaling`);
* ``all`` - the first seven, in that order, in one result (``scaling`` runs on its own: it
  starts process groups of its own).

Also the body of ``tlengine bench``: :func:`main` puts the repository root on ``sys.path``
first, so it works from any working directory (and as ``python benchmarks/run.py``).
Progress goes to stderr; stdout gets the markdown tables, or with ``--json`` exactly one
JSON object ``{"device", "threads", "torch", "rows": [...], ...}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))


def _echo(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    p.add_argument(
        "what",
        choices=["kernels", "training", "extraction", "text", "detection", "captioning", "asr", "scaling", "all"],
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of markdown")
    p.add_argument("--quick", action="store_true", help="tiny sizes, seconds: a smoke test, not numbers")
    p.add_argument("--out", type=Path, help="also write <kind>.json and <kind>.md into this folder")
    p.add_argument(
        "--device",
        default="auto",
        help="kernels: cpu, cuda, cuda:N, or auto = CPU and, when present, CUDA (default); "
        "extraction, text, detection, captioning: one device, auto = CUDA when present, else CPU",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="training, text, detection, captioning: epochs per arm (default 10, detection 8, captioning 4; "
        "quick: 2, detection and captioning 1)",
    )
    p.add_argument(
        "--runs-dir",
        type=Path,
        default=None,
        help="training, text, detection, captioning: keep the arms' run directories here (default: a temporary folder)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch.get_num_threads(), i.e. all cores); e.g. 1 on a shared machine",
    )
    p.add_argument(
        "--no-compile",
        action="store_true",
        help="kernels: skip torch.compile of the references; extraction: skip the compiled forms",
    )
    return p


def _kernels(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from benchmarks.kernels import run_kernel_benchmarks

    if args.device == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [args.device]
    results = [
        run_kernel_benchmarks(device=d, quick=args.quick, compile=not args.no_compile, echo=_echo) for d in devices
    ]
    if len(results) == 1:
        return results[0]
    merged = {k: v for k, v in results[0].items() if k != "rows"}
    merged["device"] = ",".join(r["device"] for r in results)
    merged["per_device"] = [{k: v for k, v in r.items() if k != "rows"} for r in results]
    merged["rows"] = [row for r in results for row in r["rows"]]
    return merged


def _training(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.training import run_training_benchmark

    epochs = args.epochs or (2 if args.quick else 10)
    return run_training_benchmark(
        epochs=epochs, quick=args.quick, output_dir=args.runs_dir, threads=args.threads, echo=_echo
    )


def _extraction(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.extraction import run_extraction_benchmark

    return run_extraction_benchmark(quick=args.quick, compile=not args.no_compile, device=args.device, echo=_echo)


def _text(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.text import run_text_benchmark

    epochs = args.epochs or (2 if args.quick else 10)
    return run_text_benchmark(
        epochs=epochs,
        quick=args.quick,
        output_dir=args.runs_dir,
        threads=args.threads,
        device=args.device,
        echo=_echo,
    )


def _detection(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.detection import run_detection_benchmark

    epochs = args.epochs or (1 if args.quick else 8)
    return run_detection_benchmark(
        epochs=epochs,
        quick=args.quick,
        output_dir=args.runs_dir,
        threads=args.threads,
        device=args.device,
        echo=_echo,
    )


def _captioning(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.captioning import run_captioning_benchmark

    epochs = args.epochs or (1 if args.quick else 4)
    return run_captioning_benchmark(
        epochs=epochs,
        quick=args.quick,
        output_dir=args.runs_dir,
        threads=args.threads,
        device=args.device,
        echo=_echo,
    )


def _asr(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.asr import run_asr_benchmark

    return run_asr_benchmark(
        quick=args.quick,
        epochs=args.epochs,
        output_dir=args.runs_dir,
        threads=args.threads,
        device=args.device,
        echo=_echo,
    )


def _scaling(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.scaling import run_scaling_benchmark

    return run_scaling_benchmark(
        quick=args.quick, epochs=args.epochs, output_dir=args.runs_dir, device=args.device, echo=_echo
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.what == "kernels":
        return _kernels(args)
    if args.what == "training":
        return _training(args)
    if args.what == "extraction":
        return _extraction(args)
    if args.what == "text":
        return _text(args)
    if args.what == "detection":
        return _detection(args)
    if args.what == "captioning":
        return _captioning(args)
    if args.what == "asr":
        return _asr(args)
    if args.what == "scaling":
        return _scaling(args)
    kernels, extraction, training, text = _kernels(args), _extraction(args), _training(args), _text(args)
    detection, captioning, asr = _detection(args), _captioning(args), _asr(args)
    strip = lambda r: {k: v for k, v in r.items() if k != "rows"}  # noqa: E731
    return {
        "kind": "all",
        "device": kernels["device"],
        "threads": kernels["threads"],
        "torch": kernels["torch"],
        "hardware": kernels.get("hardware"),
        "quick": args.quick,
        "kernels": strip(kernels),
        "extraction": strip(extraction),
        "training": strip(training),
        "text": strip(text),
        "detection": strip(detection),
        "captioning": strip(captioning),
        "asr": strip(asr),
        "rows": kernels["rows"]
        + extraction["rows"]
        + training["rows"]
        + text["rows"]
        + detection["rows"]
        + captioning["rows"]
        + asr["rows"],
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from benchmarks.asr import to_markdown, write_results  # report.py's, with the asr rows' section

    result = run(args)
    if args.what == "scaling":  # its own table: processes, cores, the projection
        from benchmarks.scaling import to_markdown as scaling_markdown

        text = scaling_markdown(result)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "scaling.json").write_text(json.dumps(result, indent=2, default=str))
            (args.out / "scaling.md").write_text(text)
        print(json.dumps(result, default=str) if args.json else text)
        return 0
    if args.out:
        json_path, md_path = write_results(result, args.out)
        _echo(f"wrote {json_path} and {md_path}")
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print(to_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
