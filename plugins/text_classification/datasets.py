"""Text-classification datasets: ``text-file`` and ``chatterbot-corpus``.

Each dataset is a :class:`tlengine.data.DatasetSpec`: a pydantic model that validates
``data.args`` in the pipeline file, and ``build(args, root)`` that returns
:class:`TextSamples` - the texts, their label indices and the class names.

``text-file`` reads one labelled file (or a train file plus test and optional val files,
a predefined split) in one of four formats:

* ``sms``: the SMS Spam Collection's own format, ``label<TAB>text`` one message per line,
  no header; the text is everything after the first tab, quotes and further tabs kept;
* ``csv`` / ``tsv``: read with the csv module (quoted fields work); a header row, or
  columns given by 0-based position;
* ``jsonl``: one JSON object per line with a text key and a label key.

Every path comes from the pipeline and is resolved inside the data root with
:func:`tlengine.data.resolve_under`, so a config cannot point outside it. Every problem
is a :class:`~tlengine.errors.DataError` naming the file and, where there is one, the line.

``chatterbot-corpus`` reads the topic-labelled conversation files of the PyPI package
``chatterbot-corpus`` (BSD licence) from where it is installed; nothing is downloaded.

Pipeline examples::

    data: {dataset: text-file, root: data, args: {path: SMSSpamCollection}}           # sms format
    data: {dataset: text-file, root: data, args: {path: reviews.csv, text_column: review}}
    data: {dataset: text-file, root: data, args: {path: train.jsonl, test_path: test.jsonl}}
    data: {dataset: chatterbot-corpus, args: {categories: [food, sports, money]}}
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import importlib.util
import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from tlengine.data import DatasetSpec, resolve_under
from tlengine.errors import DataError

__all__ = [
    "TASK",
    "FORMATS",
    "EXTENSION_FORMATS",
    "CHATTERBOT_DEFAULT_CATEGORIES",
    "TextSamples",
    "TextFileArgs",
    "ChatterbotCorpusArgs",
    "build_text_file",
    "build_chatterbot_corpus",
    "normalise_text",
    "texts_fingerprint",
    "TEXT_FILE",
    "CHATTERBOT_CORPUS",
    "register_datasets",
]

TASK = "text-classification"

#: File formats ``text-file`` reads.
FORMATS: tuple[str, ...] = ("csv", "tsv", "jsonl", "sms")

#: ``format: auto``: the format of a file by its (lower-case) extension; "" is no extension.
EXTENSION_FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".txt": "sms",
    "": "sms",
}

#: Default ``chatterbot-corpus`` categories (English): the six files with the most distinct
#: lines (trivia 504, emotion 247, coding 194, ai 163, psychology 119, literature 73 before
#: filtering) whose topics differ. Left out: tech_support (2,100 lines but 20 distinct),
#: conversations and greetings (small talk that overlaps every other topic), and the files
#: with fewer than 50 distinct lines.
CHATTERBOT_DEFAULT_CATEGORIES: tuple[str, ...] = ("ai", "coding", "emotion", "literature", "psychology", "trivia")

# Headerless csv/tsv without text_column/label_column: the SMS Spam Collection's order.
_HEADERLESS_LABEL, _HEADERLESS_TEXT = 0, 1
# Names listed in one message before "...".
_MAX_NAMED = 20


@dataclass
class TextSamples:
    """What every text-classification dataset builds.

    texts: the texts (stripped of surrounding whitespace, otherwise verbatim).
    labels: label of each text, an index into ``classes``.
    classes: class names, in label order.
    source: one line for logs and reports, e.g. ``"TSV /data/sms.tsv (2 classes, 5,574 texts)"``.
    splits: a split the dataset ships with, as indices into ``texts``: keys ``train`` and
        ``test``, and ``val`` if the dataset has one (without it, validation comes out of
        ``train``). None: the whole set is split at random. See
        :func:`tlengine_plugins.text_classification.splits.split_text_samples`.
    """

    texts: list[str]
    labels: list[int]
    classes: list[str]
    source: str
    splits: dict[str, list[int]] | None = None

    def __len__(self) -> int:
        return len(self.texts)


# --------------------------------------------------------------------------- helpers
def _plural(n: int, word: str) -> str:
    """``_plural(1, "text")`` -> "1 text"; ``_plural(5574, "text")`` -> "5,574 texts"."""
    if n == 1:
        return f"1 {word}"
    return f"{n:,} {word}{'es' if word.endswith('s') else 's'}"


def _names(values: list[str]) -> str:
    """``a, b, c`` with at most _MAX_NAMED names."""
    shown = ", ".join(values[:_MAX_NAMED])
    return shown + (f", ... ({len(values) - _MAX_NAMED} more)" if len(values) > _MAX_NAMED else "")


def _check_class_names(v: list[str] | None) -> list[str] | None:
    """Shared validator: at least two distinct, non-blank class names."""
    if v is None:
        return v
    if len(v) < 2:
        raise ValueError("must list at least 2 classes (or be omitted)")
    if any(not c.strip() for c in v):
        raise ValueError("class names must not be blank")
    dupes = sorted({c for c in v if v.count(c) > 1})
    if dupes:
        raise ValueError(f"classes listed more than once: {', '.join(dupes)}")
    return v


def _label_order(labels: set[str]) -> list[str]:
    """Default class order: ham before spam, integers numerically, anything else sorted."""
    if {label.lower() for label in labels} == {"ham", "spam"} and len(labels) == 2:
        return sorted(labels, key=lambda label: label.lower() != "ham")  # the negative class first
    try:
        return sorted(labels, key=int)
    except ValueError:
        return sorted(labels)


def normalise_text(text: str) -> str:
    """Key under which two texts count as the same: whitespace collapsed, lower-cased."""
    return " ".join(text.split()).lower()


def texts_fingerprint(texts: list[str], labels: list[int]) -> str:
    """SHA-256 (hex) of the texts and labels in order; same data -> same string, on any machine."""
    if len(texts) != len(labels):
        raise ValueError(f"texts_fingerprint got {len(texts)} texts but {len(labels)} labels")
    digest = hashlib.sha256(b"tlengine-texts-v1\n")
    for text, label in zip(texts, labels):
        data = text.encode("utf-8", "surrogatepass")
        digest.update(f"{int(label)} {len(data)}\n".encode())  # length prefix: no two lists collide
        digest.update(data)
    return digest.hexdigest()


# --------------------------------------------------------------------------- text-file
class TextFileArgs(BaseModel):
    """Arguments of the ``text-file`` dataset: labelled texts in a csv, tsv, jsonl or sms file."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="the file (the training file if test_path is given), relative to data.root")
    val_path: str | None = Field(None, description="validation file of a predefined split (needs test_path)")
    test_path: str | None = Field(None, description="test file: a predefined split, path is then the training file")
    format: Literal["auto", "csv", "tsv", "jsonl", "sms"] = Field(
        "auto",
        description="auto: by extension (.csv; .tsv/.tab; .jsonl/.ndjson; .txt or none -> sms, label<TAB>text)",
    )
    delimiter: str | None = Field(None, description="field separator of a csv/tsv file (default , and tab)")
    header: bool | None = Field(
        None,
        description="csv/tsv: whether the first row names the columns (default: yes if it holds both column "
        "names); sms: true skips the first line",
    )
    text_column: str | int | None = Field(
        None, description="column (header name, or 0-based position) or JSON key of the text (default: text, or 1)"
    )
    label_column: str | int | None = Field(
        None, description="column (header name, or 0-based position) or JSON key of the label (default: label, or 0)"
    )
    classes: list[str] | None = Field(
        None,
        description="allowed labels in label order; a text with another label is an error "
        "(default: every label found; ham before spam, integers numerically, else sorted)",
    )
    encoding: str = Field("utf-8", description="text encoding of the files (utf-8 accepts a byte-order mark)")
    lowercase_labels: bool = Field(False, description="lower-case every label before matching classes")
    max_texts: int | None = Field(None, ge=1, description="keep only the first N texts of each file (quick runs)")

    @field_validator("classes")
    @classmethod
    def _class_names(cls, v: list[str] | None) -> list[str] | None:
        return _check_class_names(v)

    @field_validator("delimiter")
    @classmethod
    def _one_character(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = {"\\t": "\t", "tab": "\t"}.get(v, v)
        if len(v) != 1 or v in '\r\n"':
            raise ValueError("must be a single character other than a quote or a line break (\\t for tab)")
        return v

    @field_validator("text_column", "label_column")
    @classmethod
    def _column(cls, v: str | int | None) -> str | int | None:
        if isinstance(v, int) and v < 0:
            raise ValueError("a column position counts from 0 and cannot be negative")
        if isinstance(v, str) and not v.strip():
            raise ValueError("must not be blank")
        return v

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, v: str) -> str:
        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown encoding '{v}'") from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "TextFileArgs":
        if self.val_path is not None and self.test_path is None:
            raise ValueError("val_path needs test_path: a predefined split has a test file")
        if self.text_column is not None and self.text_column == self.label_column:
            raise ValueError("text_column and label_column are the same column")
        return self


def _file_format(path: Path, fmt: str) -> str:
    """The format to read ``path`` in: ``fmt``, or for ``auto`` the one its extension says."""
    if fmt != "auto":
        return fmt
    ext = path.suffix.lower()
    if ext not in EXTENSION_FORMATS:
        known = ", ".join(e or "none" for e in EXTENSION_FORMATS)
        raise DataError(
            f"text file {path} has extension '{ext}', which does not say its format (known: {known}); "
            f"set format to one of {', '.join(FORMATS)}"
        )
    return EXTENSION_FORMATS[ext]


def _check_options(path: Path, fmt: str, args: TextFileArgs) -> None:
    """DataError for an argument that does not apply to the file's format."""
    problem = ""
    if fmt in ("sms", "jsonl") and args.delimiter is not None:
        problem = "delimiter applies to csv and tsv files only"
    elif fmt == "sms" and (args.text_column is not None or args.label_column is not None):
        problem = "the sms format is always label<TAB>text, so text_column and label_column do not apply (use tsv)"
    elif fmt == "jsonl" and args.header is not None:
        problem = "header does not apply to jsonl files"
    elif fmt == "jsonl" and any(isinstance(c, int) for c in (args.text_column, args.label_column)):
        problem = "a jsonl file has keys, not column positions: give text_column and label_column as key names"
    if problem:
        raise DataError(f"text file {path} is read as {fmt}, but {problem}")


def _decode(path: Path, encoding: str) -> str:
    """The file's text; DataError naming the file and the first undecodable line."""
    data = path.read_bytes()
    name = codecs.lookup(encoding).name
    if name in ("utf-8", "utf-8-sig"):
        data = data.removeprefix(codecs.BOM_UTF8)
        name = "utf-8"
    try:
        return data.decode(name)
    except UnicodeDecodeError as exc:
        where = ""
        if "\n".encode(name) == b"\n":  # byte offsets map to lines only in ASCII-compatible encodings
            line = data.count(b"\n", 0, exc.start) + 1
            where = f" (line {line}: {exc.reason})"
        raise DataError(
            f"text file {path} is not {encoding} text{where}; set encoding to the file's encoding, e.g. latin-1"
        ) from None


def _lines(content: str) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of the non-blank lines (split on \\n only, so texts keep other breaks)."""
    for number, line in enumerate(content.split("\n"), 1):
        line = line.removesuffix("\r")
        if line.strip():
            yield number, line


def _sms_rows(path: Path, content: str, header: bool | None) -> Iterator[tuple[int, str, str]]:
    """``label<TAB>text`` lines; the text is everything after the first tab, verbatim."""
    lines = _lines(content)
    if header:
        next(lines, None)
    for number, line in lines:
        if "\t" not in line:
            raise DataError(
                f"text file {path} line {number} has no tab (the sms format is label<TAB>text, one text per line)"
            )
        label, text = line.split("\t", 1)
        yield number, text, label


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", int: "number", float: "number"}.get(type(value), "value")


def _jsonl_rows(path: Path, content: str, text_key: str, label_key: str) -> Iterator[tuple[int, str, str]]:
    """One JSON object per line, with ``text_key`` (a string) and ``label_key`` (a string or integer)."""
    for number, line in _lines(content):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"text file {path} line {number} is not valid JSON ({exc.msg} at column {exc.colno})"
            ) from None
        if not isinstance(obj, dict):
            raise DataError(
                f"text file {path} line {number} is a JSON {_json_type(obj)}, not an object with "
                f"'{text_key}' and '{label_key}' keys"
            )
        for key, arg in ((text_key, "text_column"), (label_key, "label_column")):
            if key not in obj:
                raise DataError(
                    f"text file {path} line {number} has no key '{key}' (it has: {_names(list(obj)) or 'none'}); "
                    f"set {arg} to the right key"
                )
        text, label = obj[text_key], obj[label_key]
        if not isinstance(text, str):
            raise DataError(f"text file {path} line {number}: '{text_key}' is a JSON {_json_type(text)}, not a string")
        if label is None:
            label = ""
        elif isinstance(label, bool) or not isinstance(label, (str, int)):
            raise DataError(
                f"text file {path} line {number}: '{label_key}' is a JSON {_json_type(label)}, "
                "not a string or an integer"
            )
        yield number, text, str(label)


def _csv_records(path: Path, content: str, fmt: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """``(first line of the row, cells)`` of the non-blank rows."""
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter)
    end = 0  # physical lines read so far: the next row starts on end + 1
    try:
        for cells in reader:
            start, end = end + 1, reader.line_num
            if any(cell.strip() for cell in cells):
                yield start, cells
    except csv.Error as exc:
        raise DataError(f"text file {path} line {reader.line_num} is not valid {fmt} ({exc})") from None


def _header_index(path: Path, column: str | int, names: list[str], arg: str) -> int:
    """Position of ``column`` (a header name or a position) in a header row."""
    if isinstance(column, int):
        if column >= len(names):
            raise DataError(
                f"text file {path} has no column {column} (its header has {_plural(len(names), 'column')}: "
                f"{_names(names)}); positions count from 0"
            )
        return column
    if column not in names:
        raise DataError(f"text file {path} has no column '{column}' (its header has: {_names(names)}); set {arg}")
    return names.index(column)


def _delimited_rows(
    path: Path, content: str, fmt: str, args: TextFileArgs
) -> tuple[str, Iterator[tuple[int, str, str]]]:
    """csv/tsv rows, text and label picked by header name or by position; and, for a file
    read without a header, a note saying which columns were used (it goes into ``source``)."""
    delimiter = args.delimiter or ("," if fmt == "csv" else "\t")
    records = _csv_records(path, content, fmt, delimiter)
    first = next(records, None)
    if first is None:
        raise DataError(f"text file {path} is empty")
    first_line, first_cells = first
    names = [cell.strip() for cell in first_cells]
    text_col = args.text_column if args.text_column is not None else "text"
    label_col = args.label_column if args.label_column is not None else "label"
    header = args.header
    if header is None:  # a header if the first row holds every column asked for by name
        wanted = [c for c in (args.text_column, args.label_column) if isinstance(c, str)]
        if args.text_column is None and args.label_column is None:
            wanted = ["text", "label"]
        header = bool(wanted) and all(c in names for c in wanted)
    if header:
        text_index = _header_index(path, text_col, names, "text_column")
        label_index = _header_index(path, label_col, names, "label_column")
        rows: Iterator[tuple[int, list[str]]] = records
    else:
        for column, arg in ((args.text_column, "text_column"), (args.label_column, "label_column")):
            if isinstance(column, str):
                raise DataError(
                    f"text file {path} has no header row naming column '{column}' (its first row, line "
                    f"{first_line}, has: {_names(names)}); set {arg} to a name in that row (and header: true) "
                    f"or to a 0-based position"
                )
        text_index = _HEADERLESS_TEXT if args.text_column is None else int(args.text_column)
        label_index = _HEADERLESS_LABEL if args.label_column is None else int(args.label_column)
        rows = _chain(first, records)
    note = "" if header else f"no header, label in column {label_index} and text in column {text_index}; "
    return note, _pick_columns(path, rows, text_index, label_index)


def _pick_columns(
    path: Path, rows: Iterator[tuple[int, list[str]]], text_index: int, label_index: int
) -> Iterator[tuple[int, str, str]]:
    """``(line, text, label)`` of every row; DataError for a row too short to have both columns."""
    need = max(text_index, label_index) + 1
    empty = True
    for number, cells in rows:
        empty = False
        if len(cells) < need:
            raise DataError(
                f"text file {path} line {number} has {_plural(len(cells), 'column')} but needs {need} "
                f"(text in column {text_index}, label in column {label_index}, counting from 0)"
            )
        yield number, cells[text_index], cells[label_index]
    if empty:
        raise DataError(f"text file {path} has no rows (only a header)")


def _chain(first: tuple[int, list[str]], rest: Iterator[tuple[int, list[str]]]) -> Iterator[tuple[int, list[str]]]:
    yield first
    yield from rest


@dataclass
class _File:
    """One file read by ``text-file``: rows of ``(line number, text, label)``."""

    path: Path
    fmt: str
    rows: list[tuple[int, str, str]]
    note: str = ""  # how the file was read, when not obvious (e.g. csv without a header)


def _read_file(relative: str, args: TextFileArgs, root: Path) -> _File:
    """Read, decode and parse one file; every problem is a DataError naming the file (and line)."""
    path = resolve_under(root, relative, what="text file")
    if not path.is_file():
        raise DataError(f"text file {path} {'is not a file' if path.exists() else 'does not exist'}")
    fmt = _file_format(path, args.format)
    _check_options(path, fmt, args)
    content = _decode(path, args.encoding)
    if not content.strip():
        raise DataError(f"text file {path} is empty")
    note = ""
    if fmt == "sms":
        parsed = _sms_rows(path, content, args.header)
    elif fmt == "jsonl":
        parsed = _jsonl_rows(path, content, str(args.text_column or "text"), str(args.label_column or "label"))
    else:
        note, parsed = _delimited_rows(path, content, fmt, args)
    rows = []
    for number, text, label in parsed:
        text, label = text.strip(), label.strip()
        if not text:
            raise DataError(f"text file {path} line {number} has an empty text")
        if not label:
            raise DataError(f"text file {path} line {number} has an empty label")
        rows.append((number, text, label.lower() if args.lowercase_labels else label))
        if args.max_texts is not None and len(rows) >= args.max_texts:
            break
    if not rows:
        raise DataError(f"text file {path} has no texts")
    return _File(path, fmt, rows, note)


def build_text_file(args: TextFileArgs, root: Path) -> TextSamples:
    """Read the file (or train/val/test files); errors name the file and its line number."""
    roles = [("train", args.path), ("val", args.val_path), ("test", args.test_path)]
    files = {role: _read_file(rel, args, root) for role, rel in roles if rel is not None}
    where = " and ".join(str(f.path) for f in files.values())
    found = {label for f in files.values() for _, _, label in f.rows}

    classes = list(args.classes) if args.classes is not None else _label_order(found)
    index = {c: i for i, c in enumerate(classes)}
    texts: list[str] = []
    labels: list[int] = []
    splits: dict[str, list[int]] = {}
    for role, f in files.items():
        start = len(texts)
        for number, text, label in f.rows:
            if label not in index:
                raise DataError(
                    f"text file {f.path} line {number} has label '{label}', which is not one of the classes "
                    f"({_names(classes)})"
                )
            texts.append(text)
            labels.append(index[label])
        splits[role] = list(range(start, len(texts)))

    empty = [c for c in classes if c not in found]
    if empty:
        listed = ", ".join(f"'{c}'" for c in empty)
        raise DataError(f"class {listed} listed in classes has no texts in {where}")
    if len(classes) < 2:
        within = f" among the first {args.max_texts:,} texts (max_texts)" if args.max_texts is not None else ""
        raise DataError(f"text file {where} has only one class '{classes[0]}'{within}; classification needs at least 2")

    counts = f"{_plural(len(classes), 'class')}, {_plural(len(texts), 'text')}"
    if len(files) == 1:
        f = files["train"]
        return TextSamples(texts, labels, classes, source=f"{f.fmt.upper()} {f.path} ({f.note}{counts})")
    described = " + ".join(f"{f.fmt.upper()} {f.path} ({f.note}{role})" for role, f in files.items())
    per_split = ", ".join(f"{len(idx):,} {role}" for role, idx in splits.items())
    return TextSamples(texts, labels, classes, source=f"{described} ({counts}: {per_split})", splits=splits)


# --------------------------------------------------------------------------- chatterbot-corpus
class ChatterbotCorpusArgs(BaseModel):
    """Arguments of the ``chatterbot-corpus`` dataset: one class per conversation file (topic)."""

    model_config = ConfigDict(extra="forbid")

    categories: list[str] | None = Field(
        None,
        description="file names (without .yml) to use, in label order (default for english: "
        f"{', '.join(CHATTERBOT_DEFAULT_CATEGORIES)}; for another language: all its files)",
    )
    language: str = Field("english", description="folder of chatterbot_corpus/data to read")
    min_chars: int = Field(3, ge=1, description="drop texts shorter than this many characters")
    max_per_class: int | None = Field(None, ge=1, description="keep only the first N texts of each category")

    @field_validator("categories")
    @classmethod
    def _class_names(cls, v: list[str] | None) -> list[str] | None:
        return _check_class_names(v)

    @field_validator("language")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not v or not v.replace("_", "").isalnum():
            raise ValueError("must be a plain folder name such as english")
        return v


def _chatterbot_dir(language: str) -> Path:
    """``chatterbot_corpus/data/<language>`` of the installed package (found without importing it)."""
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the chatterbot-corpus dataset needs the Python package chatterbot-corpus, which is not installed; "
            "install it with: pip install chatterbot-corpus"
        )
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    folder = data / language
    if not folder.is_dir():
        languages = sorted(p.name for p in data.iterdir() if p.is_dir()) if data.is_dir() else []
        raise DataError(
            f"chatterbot-corpus has no language '{language}' (no folder {folder}); "
            f"available: {_names(languages) or 'none'}"
        )
    return folder


def _conversation_lines(path: Path) -> list[str]:
    """Every statement and response in a corpus file, stripped; numbers become text, other values are skipped."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"chatterbot-corpus file {path} cannot be read ({reason})") from None
    conversations = doc.get("conversations") if isinstance(doc, dict) else None
    if not isinstance(conversations, list):
        raise DataError(f"chatterbot-corpus file {path} has no 'conversations' list")
    lines = []
    for conversation in conversations:
        for entry in conversation if isinstance(conversation, list) else [conversation]:
            # YAML turns a bare yes/no into a boolean: the original word is lost, so skip it.
            if entry is None or isinstance(entry, (bool, dict, list)):
                continue
            lines.append(str(entry).strip())
    return lines


def build_chatterbot_corpus(args: ChatterbotCorpusArgs, root: Path) -> TextSamples:
    """Texts labelled by their corpus file (``root`` is unused: the package's files are read).

    Texts are deduplicated within a category (ignoring case and spacing); a text found in
    two or more categories is ambiguous and dropped from all of them (counted in ``source``).
    """
    folder = _chatterbot_dir(args.language)
    available = sorted(p.stem for p in folder.glob("*.yml"))
    if args.categories is not None:
        categories = list(args.categories)
    elif args.language == "english":
        categories = list(CHATTERBOT_DEFAULT_CATEGORIES)
    else:
        categories = available
    unknown = [c for c in categories if c not in available]
    if unknown:
        listed = ", ".join(f"'{c}'" for c in unknown)
        raise DataError(
            f"chatterbot-corpus {args.language} has no category {listed} (in {folder}); "
            f"available: {', '.join(available) or 'none'}"
        )
    if len(categories) < 2:
        raise DataError(
            f"chatterbot-corpus {args.language} has only one category '{categories[0]}'; "
            "classification needs at least 2"
        )

    per_class: list[dict[str, str]] = []  # normalised text -> first spelling, in file order
    for category in categories:
        seen: dict[str, str] = {}
        for line in _conversation_lines(folder / f"{category}.yml"):
            if len(line) >= args.min_chars:
                seen.setdefault(normalise_text(line), line)
        per_class.append(seen)
    in_classes = Counter(key for seen in per_class for key in seen)
    ambiguous = {key for key, n in in_classes.items() if n > 1}

    texts: list[str] = []
    labels: list[int] = []
    for label, (category, seen) in enumerate(zip(categories, per_class)):
        kept = [text for key, text in seen.items() if key not in ambiguous][: args.max_per_class]
        if not kept:
            raise DataError(
                f"chatterbot-corpus file {folder / category}.yml has no texts of at least {args.min_chars} "
                "characters that appear in no other category"
            )
        texts += kept
        labels += [label] * len(kept)
    dropped = f"; {_plural(len(ambiguous), 'text')} found in more than one category dropped" if ambiguous else ""
    return TextSamples(
        texts,
        labels,
        categories,
        source=(
            f"chatterbot-corpus {args.language} ({_plural(len(categories), 'class')}, "
            f"{_plural(len(texts), 'text')}{dropped})"
        ),
    )


# --------------------------------------------------------------------------- registration
TEXT_FILE = DatasetSpec(
    name="text-file",
    task=TASK,
    args=TextFileArgs,
    build=build_text_file,
    description="labelled texts in a csv, tsv, jsonl or sms (label<TAB>text) file; test_path for a predefined split",
)
CHATTERBOT_CORPUS = DatasetSpec(
    name="chatterbot-corpus",
    task=TASK,
    args=ChatterbotCorpusArgs,
    build=build_chatterbot_corpus,
    description="English chat lines labelled by topic, from the pip package chatterbot-corpus (no download)",
)


def register_datasets(registry: Any) -> None:
    """Add the two datasets to a dataset :class:`tlengine.registry.Registry`."""
    for spec in (TEXT_FILE, CHATTERBOT_CORPUS):
        registry.add(spec.name, spec, description=spec.description)
