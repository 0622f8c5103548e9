"""Fixtures of the text-classification tests (helpers in text_fixtures)."""

from __future__ import annotations

from pathlib import Path

import pytest
from text_fixtures import make_texts, write_tiny_bert


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture
def topic_tsv(tmp_path: Path) -> Path:
    """An SMS-format file (label<TAB>text) of the three topics."""
    path = tmp_path / "topics.tsv"
    path.write_text("".join(f"{label}\t{text}\n" for label, text in make_texts()), encoding="utf-8")
    return path
