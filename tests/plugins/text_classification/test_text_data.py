"""Text-classification data: the text-file formats and their errors, chatterbot-corpus,
the SMS example file and the train/val/test split. All files are tiny and made in tmp_path."""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError
from tlengine.errors import DataError
from tlengine.registry import Registry
from tlengine_plugins.text_classification import make_sms_example
from tlengine_plugins.text_classification.chatterbot import (
    CHATTERBOT_CORPUS,
    CHATTERBOT_DEFAULT_CATEGORIES,
    ChatterbotCorpusArgs,
    build_chatterbot_corpus,
)
from tlengine_plugins.text_classification.datasets import (
    TextSamples,
    normalise_text,
    register_datasets,
    texts_fingerprint,
)
from tlengine_plugins.text_classification.splits import duplicates_across_splits, split_text_samples
from tlengine_plugins.text_classification.text_file import TEXT_FILE, TextFileArgs, build_text_file

EXAMPLE = Path(make_sms_example.__file__).parent / "pipelines" / "data" / "sms-example.tsv"


def load(root: Path, **args) -> TextSamples:
    return build_text_file(TextFileArgs(**args), root)


def write(root: Path, name: str, text: str | bytes) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def data_error(root: Path, **args) -> str:
    with pytest.raises(DataError) as info:
        load(root, **args)
    return str(info.value)


def by_class(samples: TextSamples) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {c: [] for c in samples.classes}
    for text, label in zip(samples.texts, samples.labels):
        out[samples.classes[label]].append(text)
    return out


# --------------------------------------------------------------------------- formats
def test_csv_with_header(tmp_path):
    write(tmp_path, "d.csv", 'id,text,label\n1,"Hello, world",pos\n2,"She said ""no""",neg\n3,fine,pos\n')
    s = load(tmp_path, path="d.csv")
    assert s.texts == ["Hello, world", 'She said "no"', "fine"]
    assert s.classes == ["neg", "pos"] and s.labels == [1, 0, 1]
    assert s.splits is None
    assert s.source == f"CSV {tmp_path / 'd.csv'} (2 classes, 3 texts)"


def test_csv_named_columns_and_header_detection(tmp_path):
    write(tmp_path, "d.csv", "review,stars\ngreat,5\nbad,1\nok,10\n")
    s = load(tmp_path, path="d.csv", text_column="review", label_column="stars")
    assert s.classes == ["1", "5", "10"]  # integers sort numerically
    assert s.texts == ["great", "bad", "ok"]


def test_csv_without_header_by_position(tmp_path):
    write(tmp_path, "d.csv", "x1,good film,pos\nx2,awful,neg\n")
    s = load(tmp_path, path="d.csv", text_column=1, label_column=2)
    assert s.texts == ["good film", "awful"] and s.classes == ["neg", "pos"]


def test_headerless_defaults_are_label_then_text(tmp_path):
    write(tmp_path, "d.csv", "spam,win now\nham,see you\n")
    s = load(tmp_path, path="d.csv")
    assert s.texts == ["win now", "see you"] and s.classes == ["ham", "spam"]
    assert "(no header, label in column 0 and text in column 1; 2 classes, 2 texts)" in s.source


def test_tsv_and_tab_extension(tmp_path):
    write(tmp_path, "d.tsv", "label\ttext\na\tone, two\nb\tthree\n")
    write(tmp_path, "d.tab", "label\ttext\na\tone, two\nb\tthree\n")
    for name in ("d.tsv", "d.tab"):
        s = load(tmp_path, path=name)
        assert s.texts == ["one, two", "three"] and s.source.startswith("TSV ")


def test_custom_delimiter(tmp_path):
    write(tmp_path, "d.csv", "text;label\nhello, there;a\nbye;b\n")
    assert load(tmp_path, path="d.csv", delimiter=";").texts == ["hello, there", "bye"]
    write(tmp_path, "pipes.txt", "text|label\nx|a\ny|b\n")
    assert load(tmp_path, path="pipes.txt", format="csv", delimiter="|").texts == ["x", "y"]
    with pytest.raises(ValidationError):
        TextFileArgs(path="d.csv", delimiter=";;")


def test_jsonl(tmp_path):
    lines = [{"text": "first", "label": "x"}, {"text": "second", "label": 3}, {"body": "third", "label": "x"}]
    write(tmp_path, "d.jsonl", "\n".join(json.dumps(o) for o in lines[:2]) + "\n\n")
    s = load(tmp_path, path="d.jsonl")
    assert s.texts == ["first", "second"] and s.classes == ["3", "x"] and s.source.startswith("JSONL ")
    write(tmp_path, "e.ndjson", "\n".join(json.dumps(o) for o in lines))
    assert "line 1 has no key 'body'" in data_error(tmp_path, path="e.ndjson", text_column="body")


def test_sms_format_keeps_tabs_and_quotes_verbatim(tmp_path):
    content = 'ham\t"Quoted" start and an end quote"\n\nspam\tWIN!\tcall now\t"free"\r\nham\tit\'s 5\'11" tall\n'
    write(tmp_path, "SMSSpamCollection", content)
    s = load(tmp_path, path="SMSSpamCollection")
    assert s.texts == ['"Quoted" start and an end quote"', 'WIN!\tcall now\t"free"', "it's 5'11\" tall"]
    assert s.classes == ["ham", "spam"] and s.labels == [0, 1, 0]
    assert s.source.startswith("SMS ") and "3 texts" in s.source
    assert load(tmp_path, path="SMSSpamCollection", max_texts=2).texts == s.texts[:2]


def test_sms_line_without_tab(tmp_path):
    write(tmp_path, "sms.txt", "ham\tok\nspam no tab here\n")
    message = data_error(tmp_path, path="sms.txt")
    assert "sms.txt line 2 has no tab" in message


def test_utf8_bom_is_fine(tmp_path):
    write(tmp_path, "bom.csv", "\ufefftext,label\ncafé,a\nnaïve,b\n".encode())
    assert load(tmp_path, path="bom.csv").texts == ["café", "naïve"]


def test_other_encoding(tmp_path):
    write(tmp_path, "latin.tsv", "label\ttext\na\tcafé\nb\tnaïve\n".encode("latin-1"))
    assert load(tmp_path, path="latin.tsv", encoding="latin-1").texts == ["café", "naïve"]
    with pytest.raises(ValidationError):
        TextFileArgs(path="x.tsv", encoding="no-such-codec")


def test_predefined_split_from_files(tmp_path):
    write(tmp_path, "train.tsv", "ham\ta\nspam\tb\nham\tc\n")
    write(tmp_path, "val.tsv", "spam\td\nham\te\n")
    write(tmp_path, "test.csv", "label,text\nham,f\nspam,g\n")
    s = load(tmp_path, path="train.tsv", val_path="val.tsv", test_path="test.csv", format="auto")
    assert s.splits == {"train": [0, 1, 2], "val": [3, 4], "test": [5, 6]}
    assert s.texts == list("abcdefg")
    assert "3 train, 2 val, 2 test" in s.source
    split = split_text_samples(s, val_fraction=0.5, test_fraction=0.5, seed=1)
    assert (split.train, split.val, split.test) == ([0, 1, 2], [3, 4], [5, 6])
    without_val = load(tmp_path, path="train.tsv", test_path="test.csv")
    assert set(without_val.splits) == {"train", "test"}
    with pytest.raises(ValidationError, match="val_path needs test_path"):
        TextFileArgs(path="train.tsv", val_path="val.tsv")


def test_classes_order_and_labels_outside(tmp_path):
    write(tmp_path, "d.tsv", "label\ttext\nB\tx\nA\ty\nc\tz\n")
    s = load(tmp_path, path="d.tsv", classes=["c", "b", "a"], lowercase_labels=True)
    assert s.classes == ["c", "b", "a"] and s.labels == [1, 2, 0]
    message = data_error(tmp_path, path="d.tsv", classes=["A", "B"])
    assert "d.tsv line 4 has label 'c', which is not one of the classes (A, B)" in message
    message = data_error(tmp_path, path="d.tsv", classes=["A", "B", "c", "d"])
    assert "class 'd' listed in classes has no texts" in message and "d.tsv" in message
    with pytest.raises(ValidationError):
        TextFileArgs(path="d.tsv", classes=["only"])


def test_ham_spam_order(tmp_path):
    write(tmp_path, "d.txt", "spam\tx\nham\ty\n")
    assert load(tmp_path, path="d.txt").classes == ["ham", "spam"]


# --------------------------------------------------------------------------- bad input
def test_empty_text_and_label_name_the_line(tmp_path):
    write(tmp_path, "d.csv", "text,label\nok,a\n   ,b\n")
    assert data_error(tmp_path, path="d.csv") == f"text file {tmp_path / 'd.csv'} line 3 has an empty text"
    write(tmp_path, "e.txt", "a\tfine\nb\t   \t \n")
    assert "e.txt line 2 has an empty text" in data_error(tmp_path, path="e.txt")
    write(tmp_path, "f.txt", "a\tfine\n \tno label\n")
    assert "f.txt line 2 has an empty label" in data_error(tmp_path, path="f.txt")


def test_multiline_csv_row_reports_its_first_line(tmp_path):
    write(tmp_path, "d.csv", 'text,label\n"two\nlines",a\n"",b\n')
    assert "d.csv line 4 has an empty text" in data_error(tmp_path, path="d.csv")


def test_missing_column_lists_the_columns(tmp_path):
    write(tmp_path, "d.csv", "message,category\nhi,a\nyo,b\n")
    message = data_error(tmp_path, path="d.csv", text_column="message")
    assert "d.csv has no column 'label' (its header has: message, category)" in message
    message = data_error(tmp_path, path="d.csv", text_column="body", label_column="category")
    assert "d.csv has no header row naming column 'body'" in message and "message, category" in message
    message = data_error(tmp_path, path="d.csv", header=True, text_column=5)
    assert "has no column 5" in message
    write(tmp_path, "short.csv", "a,b,c\nd\n")
    message = data_error(tmp_path, path="short.csv", text_column=2, label_column=0)
    assert "short.csv line 2 has 1 column but needs 3" in message


def test_header_only_and_empty_files(tmp_path):
    write(tmp_path, "h.csv", "text,label\n")
    assert "h.csv has no rows (only a header)" in data_error(tmp_path, path="h.csv")
    write(tmp_path, "e.tsv", "\n  \n")
    assert data_error(tmp_path, path="e.tsv") == f"text file {tmp_path / 'e.tsv'} is empty"


def test_malformed_jsonl_line(tmp_path):
    write(tmp_path, "d.jsonl", '{"text": "a", "label": "x"}\n\n{"text": "b", "label": \n')
    assert "d.jsonl line 3 is not valid JSON" in data_error(tmp_path, path="d.jsonl")
    write(tmp_path, "l.jsonl", '["a", "x"]\n')
    assert "l.jsonl line 1 is a JSON array, not an object" in data_error(tmp_path, path="l.jsonl")
    write(tmp_path, "n.jsonl", '{"text": 5, "label": "x"}\n')
    assert "n.jsonl line 1: 'text' is a JSON number, not a string" in data_error(tmp_path, path="n.jsonl")


def test_non_utf8_bytes_name_the_line(tmp_path):
    write(tmp_path, "d.tsv", b"label\ttext\na\tfine\nb\tcaf\xe9 au lait\n")
    message = data_error(tmp_path, path="d.tsv")
    assert message.startswith(f"text file {tmp_path / 'd.tsv'} is not utf-8 text (line 3:")
    assert "set encoding" in message


def test_one_class_only(tmp_path):
    write(tmp_path, "d.txt", "ham\tone\nham\ttwo\n")
    message = data_error(tmp_path, path="d.txt")
    assert message == f"text file {tmp_path / 'd.txt'} has only one class 'ham'; classification needs at least 2"
    write(tmp_path, "e.txt", "ham\tone\nham\ttwo\nspam\tthree\n")
    assert "among the first 2 texts (max_texts)" in data_error(tmp_path, path="e.txt", max_texts=2)


def test_paths_cannot_escape_the_root(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    write(tmp_path, "x.tsv", "a\tb\nc\td\n")
    assert "text file '../x.tsv' is outside the data root" in data_error(root, path="../x.tsv")
    write(root, "ok.tsv", "a\tb\nc\td\n")
    assert "outside the data root" in data_error(root, path="ok.tsv", test_path="../x.tsv")


def test_missing_file_and_directory(tmp_path):
    assert data_error(tmp_path, path="nope.tsv") == f"text file {tmp_path / 'nope.tsv'} does not exist"
    (tmp_path / "dir.tsv").mkdir()
    assert data_error(tmp_path, path="dir.tsv") == f"text file {tmp_path / 'dir.tsv'} is not a file"


def test_unknown_extension_and_options_that_do_not_apply(tmp_path):
    write(tmp_path, "d.dat", "a\tb\n")
    message = data_error(tmp_path, path="d.dat")
    assert "d.dat has extension '.dat'" in message and "set format" in message
    write(tmp_path, "s.txt", "a\tb\nc\td\n")
    assert "delimiter applies to csv and tsv" in data_error(tmp_path, path="s.txt", delimiter=",")
    assert "text_column and label_column do not apply" in data_error(tmp_path, path="s.txt", text_column=1)


# --------------------------------------------------------------------------- sms example
def test_sms_example_file():
    s = build_text_file(TextFileArgs(path=EXAMPLE.name, format="sms"), EXAMPLE.parent)
    assert s.classes == ["ham", "spam"]
    counts = Counter(s.labels)
    assert counts[0] >= 520 and counts[1] >= 110 and 0.15 <= counts[1] / len(s) <= 0.20
    assert len({normalise_text(t) for t in s.texts}) == len(s)
    assert all("\t" not in t and t[0] not in "\"'" for t in s.texts)
    as_tsv = build_text_file(TextFileArgs(path=EXAMPLE.name), EXAMPLE.parent)  # auto: .tsv
    assert (as_tsv.texts, as_tsv.labels) == (s.texts, s.labels)
    # interleaved, not all ham then all spam
    assert 1 in s.labels[: len(s) // 4] and 0 in s.labels[-len(s) // 4 :]


def test_sms_example_generator_writes_the_file(tmp_path):
    make_sms_example.check()
    assert len(make_sms_example.HAM) >= 520 and len(make_sms_example.SPAM) >= 110
    keys = [normalise_text(t) for t in make_sms_example.HAM + make_sms_example.SPAM]
    assert len(set(keys)) == len(keys)
    assert make_sms_example.messages() == make_sms_example.messages()
    assert make_sms_example.messages(seed=1) != make_sms_example.messages()
    assert sorted(make_sms_example.messages()) == sorted(
        [("ham", t) for t in make_sms_example.HAM] + [("spam", t) for t in make_sms_example.SPAM]
    )
    make_sms_example.main([str(tmp_path / "out.tsv")])
    assert (tmp_path / "out.tsv").read_bytes() == EXAMPLE.read_bytes()


def test_sms_example_check_rejects_bad_messages():
    with pytest.raises(ValueError, match="repeats ham message"):
        make_sms_example.check(["See you at 8", "see you AT 8"], ["WIN now"])
    with pytest.raises(ValueError, match="repeats ham message"):
        make_sms_example.check(["Call me"], ["CALL ME"])
    with pytest.raises(ValueError, match="tab or line break"):
        make_sms_example.check(["a\tb"], ["c"])
    with pytest.raises(ValueError, match="padded"):
        make_sms_example.check(["two  spaces"], ["c"])
    with pytest.raises(ValueError, match="starts with a quote"):
        make_sms_example.check(["ok"], ['"Free" prize'])


def word_trigrams(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"[\w£'&%.]+", text.lower())
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}


def test_sms_example_spam_is_varied():
    """No two spam messages share more than 60 % of the word 3-grams of the shorter one, so spam
    in the test split is not a template the model saw in training."""
    grams = [(text, word_trigrams(text)) for text in make_sms_example.SPAM]
    assert sum(1 for _, g in grams if len(g) >= 5) >= 100
    for (a, ga), (b, gb) in itertools.combinations(grams, 2):
        if ga and gb:
            shared = len(ga & gb) / min(len(ga), len(gb))
            assert shared <= 0.6, f"spam messages too alike ({shared:.0%} of 3-grams shared): {a!r} / {b!r}"


# --------------------------------------------------------------------------- chatterbot-corpus
def test_chatterbot_default_categories():
    s = build_chatterbot_corpus(ChatterbotCorpusArgs(), Path("."))
    assert s.classes == list(CHATTERBOT_DEFAULT_CATEGORIES) and len(s.classes) >= 6
    groups = by_class(s)
    assert all(len(texts) >= 50 for texts in groups.values())
    owners = Counter(key for texts in groups.values() for key in {normalise_text(t) for t in texts})
    assert max(owners.values()) == 1  # no text in two classes
    assert all(len(t) >= 3 and t == t.strip() for t in s.texts)
    assert s.source.startswith("chatterbot-corpus english (6 classes")


def test_chatterbot_options_and_errors():
    s = build_chatterbot_corpus(ChatterbotCorpusArgs(categories=["sports", "food"], max_per_class=5), Path("."))
    assert s.classes == ["sports", "food"] and Counter(s.labels) == {0: 5, 1: 5}
    with pytest.raises(DataError) as info:
        build_chatterbot_corpus(ChatterbotCorpusArgs(categories=["food", "cooking"]), Path("."))
    assert "has no category 'cooking'" in str(info.value) and "trivia" in str(info.value)
    with pytest.raises(DataError, match="no language 'klingon'"):
        build_chatterbot_corpus(ChatterbotCorpusArgs(language="klingon"), Path("."))
    with pytest.raises(ValidationError):
        ChatterbotCorpusArgs(language="../english")


def test_chatterbot_not_installed(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(DataError, match="pip install chatterbot-corpus"):
        build_chatterbot_corpus(ChatterbotCorpusArgs(), Path("."))


def test_register_datasets():
    registry = Registry("dataset")
    register_datasets(registry)
    assert registry.get("text-file") is TEXT_FILE and registry.get("chatterbot-corpus") is CHATTERBOT_CORPUS
    assert TEXT_FILE.task == CHATTERBOT_CORPUS.task == "text-classification"


def test_texts_fingerprint():
    a = texts_fingerprint(["ab", "c"], [0, 1])
    assert a == texts_fingerprint(["ab", "c"], [0, 1]) and len(a) == 64
    assert a != texts_fingerprint(["a", "bc"], [0, 1]) and a != texts_fingerprint(["ab", "c"], [1, 0])


# --------------------------------------------------------------------------- splits
def samples(per_class: dict[str, int]) -> TextSamples:
    texts, labels = [], []
    for label, (name, n) in enumerate(per_class.items()):
        texts += [f"{name} text number {i}" for i in range(n)]
        labels += [label] * n
    return TextSamples(texts, labels, list(per_class), source="test data")


def test_split_is_stratified_and_deterministic():
    s = samples({"a": 40, "b": 20})
    one = split_text_samples(s, val_fraction=0.25, test_fraction=0.25, seed=7)
    assert one == split_text_samples(s, val_fraction=0.25, test_fraction=0.25, seed=7)
    assert one != split_text_samples(s, val_fraction=0.25, test_fraction=0.25, seed=8)
    assert sorted(one.train + one.val + one.test) == list(range(60))
    assert Counter(s.labels[i] for i in one.test) == {0: 10, 1: 5}
    assert Counter(s.labels[i] for i in one.val) == {0: 10, 1: 5}
    assert one.warnings == []


def test_split_class_too_small():
    with pytest.raises(DataError) as info:
        split_text_samples(samples({"a": 20, "b": 1}), val_fraction=0.2, test_fraction=0.2, seed=0)
    assert "class 'b' (1 text) has no test texts" in str(info.value)
    with pytest.raises(DataError, match="test_fraction is 0"):
        split_text_samples(samples({"a": 5, "b": 5}), val_fraction=0.2, test_fraction=0.0, seed=0)


def test_split_missing_val_warns():
    s = TextSamples(["a1", "a2", "b1", "b2", "b3"], [0, 0, 1, 1, 1], ["a", "b"], "t", splits=None)
    s.splits = {"train": [0, 2], "val": [3], "test": [1, 4]}
    result = split_text_samples(s, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert result.warnings == ["class 'a' (2 texts) has no validation texts, so validation does not measure it."]
    s.splits = {"train": [2, 3], "test": [0, 1, 4]}
    with pytest.raises(DataError, match="class 'a' \\(2 texts\\) has no train texts in the predefined split"):
        split_text_samples(s, val_fraction=0.2, test_fraction=0.2, seed=0)


def test_duplicates_across_splits_are_reported():
    long = "Free entry in a weekly competition to win the final tickets, text WIN now please"
    texts = ["hello there", "Hello  THERE", long, long.upper(), "unique one", "unique two"]
    s = TextSamples(texts, [0, 0, 1, 1, 0, 1], ["ham", "spam"], "t")
    s.splits = {"train": [0, 2], "val": [4, 5], "test": [1, 3]}
    result = split_text_samples(s, val_fraction=0.0, test_fraction=0.2, seed=0)
    assert duplicates_across_splits(texts, result) == {"val": 0, "test": 2}
    (warning,) = result.warnings
    assert warning.startswith('2 of 2 texts in test also occur in train (same text ignoring case and spacing, e.g. "')
    assert '"Hello THERE"' in warning
    s.splits = {"train": [0, 2], "val": [3, 4], "test": [1, 5]}
    result = split_text_samples(s, val_fraction=0.0, test_fraction=0.2, seed=0)
    assert result.warnings[0].startswith("1 of 2 texts in test and 1 of 2 texts in val also occur in train")
    s.splits = {"train": [0, 2], "val": [1, 5], "test": [3, 4]}
    (warning,) = split_text_samples(s, val_fraction=0.0, test_fraction=0.2, seed=0).warnings
    assert 'e.g. "FREE ENTRY IN A WEEKLY COMPETITION TO WIN THE FINAL TICKE..."' in warning
    s.splits = {"train": [0, 3, 4], "val": [2], "test": [1, 5]}
    assert duplicates_across_splits(texts, split_text_samples(s, val_fraction=0, test_fraction=0.2, seed=0)) == {
        "val": 1,
        "test": 1,
    }
    s.splits = {"train": [1, 2], "val": [5], "test": [4, 3]}
    no_dupes = split_text_samples(s, val_fraction=0.0, test_fraction=0.2, seed=0)
    assert duplicates_across_splits(texts, no_dupes) == {"val": 0, "test": 1}
