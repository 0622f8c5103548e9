"""Hook implementations of the builtin text-classification plugin.

Registered through tlengine's own ``[project.entry-points.tlengine]``, exactly as a
third-party plugin would be.
"""

from __future__ import annotations

from pathlib import Path

from tlengine import hookimpl
from tlengine.registry import Registry

PIPELINES_DIR = Path(__file__).parent / "pipelines"
PIPELINES = {
    "text-quickstart": "all-MiniLM-L6-v2 -> 6 conversation topics (chatterbot-corpus): feature-extraction and "
    "fine-tune vs scratch and TF-IDF (needs the [pretrained] extra)",
    "spam-detection": "all-MiniLM-L6-v2 -> spam or ham on an SMS-format file (a small example ships; point "
    "data.args.path at your own collection)",
}


@hookimpl
def tlengine_register_tasks(tasks: Registry) -> None:
    from .task import TextClassificationTask

    tasks.add(TextClassificationTask.name, TextClassificationTask, description="single-label text classification")


@hookimpl
def tlengine_register_backbones(backbones: Registry) -> None:
    from .encoders import FAMILY, build_encoder

    backbones.add(FAMILY, build_encoder, description="BERT-family text encoder from a transformers checkpoint")


@hookimpl
def tlengine_register_datasets(datasets: Registry) -> None:
    from .datasets import register_datasets

    register_datasets(datasets)


@hookimpl
def tlengine_register_strategies(strategies: Registry) -> None:
    from .tfidf import TfidfLogReg

    strategies.add(TfidfLogReg.name, TfidfLogReg, description="TF-IDF + logistic regression (scikit-learn) baseline")


@hookimpl
def tlengine_register_weights(weights: Registry) -> None:
    from .encoders import register_weights

    register_weights(weights)


@hookimpl
def tlengine_register_pipelines(pipelines: Registry) -> None:
    for name, description in PIPELINES.items():
        pipelines.add(name, PIPELINES_DIR / f"{name}.yaml", description=description)
