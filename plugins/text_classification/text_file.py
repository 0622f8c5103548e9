"""The ``text-file`` dataset: labelled texts from one file, or a train file plus test and
optional val files (a predefined split), in one of four formats:

* ``sms``: the SMS Spam Collection's own format, ``label<TAB>text`` one message per line,
  no header; the text is everything after the first tab, quotes and further tabs kept;
* ``csv`` / ``tsv``: read with the csv module (quoted fields work); a header row, or
  columns given by 0-based position;
* ``jsonl``: one JSON object per line with a text key and a label key.

Every path comes from the pipeline and is resolved inside the data root with
:func:`tlengine.data.resolve_under`, so a config cannot point outside it. Every problem
is a :class:`~tlengine.errors.DataError` naming the file and, where there is one, the line.

Pipeline examples::

    data: {dataset: text-file, root: data, args: {path: SMSSpamCollection}}           # sms format
    data: {dataset: text-file, root: data, args: {path: reviews.csv, text_column: review}}
    data: {dataset: text-file, root: data, args: {path: train.jsonl, test_path: test.jsonl}}
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from tlengine.data import DatasetSpec, resolve_under
from tlengine.errors import DataError

from .datasets import TASK, TextSamples, check_class_names, label_order, list_names, plural

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

# Headerless csv/tsv without text_column/label_column: the SMS Spam Collection's order.
_HEADERLESS_LABEL, _HEADERLESS_TEXT = 0, 1


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
        return check_class_names(v)

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
                    f"text file {path} line {number} has no key '{key}' (it has: {list_names(list(obj)) or 'none'}); "
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
                f"text file {path} has no column {column} (its header has {plural(len(names), 'column')}: "
                f"{list_names(names)}); positions count from 0"
            )
        return column
    if column not in names:
        raise DataError(f"text file {path} has no column '{column}' (its header has: {list_names(names)}); set {arg}")
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
                    f"{first_line}, has: {list_names(names)}); set {arg} to a name in that row (and header: true) "
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
                f"text file {path} line {number} has {plural(len(cells), 'column')} but needs {need} "
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

    classes = list(args.classes) if args.classes is not None else label_order(found)
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
                    f"({list_names(classes)})"
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

    counts = f"{plural(len(classes), 'class')}, {plural(len(texts), 'text')}"
    if len(files) == 1:
        f = files["train"]
        return TextSamples(texts, labels, classes, source=f"{f.fmt.upper()} {f.path} ({f.note}{counts})")
    described = " + ".join(f"{f.fmt.upper()} {f.path} ({f.note}{role})" for role, f in files.items())
    per_split = ", ".join(f"{len(idx):,} {role}" for role, idx in splits.items())
    return TextSamples(texts, labels, classes, source=f"{described} ({counts}: {per_split})", splits=splits)


TEXT_FILE = DatasetSpec(
    name="text-file",
    task=TASK,
    args=TextFileArgs,
    build=build_text_file,
    description="labelled texts in a csv, tsv, jsonl or sms (label<TAB>text) file; test_path for a predefined split",
)
