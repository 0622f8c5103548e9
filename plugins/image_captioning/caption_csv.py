"""The ``caption-csv`` dataset: Flickr8k-style captions, one row per caption, several rows
per image, the image paths relative to ``image_root`` (default: the file's folder).

Formats read (the delimiter from the ``delimiter`` argument, else from the extension:
``.tsv`` tab, ``.csv`` comma, anything else tab if the first non-blank line has one, else
comma):

* ``image,caption`` with or without a header, e.g. Flickr8k's ``captions.txt``
  (``image,caption`` header, then ``1000268201_693b08cb0e.jpg,A child in a pink dress ...``);
* the older ``Flickr8k.token.txt``: ``1000268201_693b08cb0e.jpg#0<TAB>A child ...``, where
  a ``#N`` suffix after the image name numbers the captions of that image and is dropped;
* a header naming more columns, e.g. Flickr30k's ``image_name| comment_number| comment``
  (``delimiter: "|"``): the image column is the first of ``image``, ``image_name``,
  ``image_path``, ``file_name``, ``filename``, ``file``, ``path``; the caption column the
  first of ``caption``, ``comment``, ``text``, ``sentence`` (names are compared stripped
  and lower-case).

A header is recognised when the first row names an image column and a caption column
(``header: true/false`` forces it). Captions often hold commas without quotes: when the
caption column is the last one, the caption is the rest of the row, joined back with the
delimiter. Quoted fields follow the usual CSV rules.

Validation, besides the rules of :mod:`.datasets`: a DataError naming the file and the
line or, with ``skip_invalid: true``, dropped and counted: malformed rows (no caption
field, empty image name), empty or blank captions, missing image files (counted once, at
the image's first row; its other rows are dropped with it). Never skippable: a file that
is not UTF-8 text or not valid CSV, an image path leading out of the data root, a corrupt
image.

Pipeline examples::

    data: {dataset: caption-csv, root: data, args: {path: flickr8k/captions.txt, image_root: flickr8k/Images}}
    data: {dataset: caption-csv, root: data, args: {path: Flickr8k.token.txt, image_root: Flicker8k_Dataset}}

This module imports no torch, so registering the datasets stays cheap.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator
from tlengine.data import DatasetSpec
from tlengine.data.paths import existing_file, resolve_file, resolve_image_root
from tlengine.errors import DataError

from .datasets import (
    TASK,
    CaptionSamples,
    ImageCaptions,
    Invalid,
    clean_caption,
    finish_items,
    source_line,
)

__all__ = ["IMAGE_COLUMNS", "CAPTION_COLUMNS", "CaptionCsvArgs", "build_caption_csv", "CAPTION_CSV"]

#: Header names of the image column, in order of preference.
IMAGE_COLUMNS: tuple[str, ...] = ("image", "image_name", "image_path", "file_name", "filename", "file", "path")
#: Header names of the caption column, in order of preference.
CAPTION_COLUMNS: tuple[str, ...] = ("caption", "comment", "text", "sentence")

# Flickr8k.token.txt numbers the captions of an image: "name.jpg#0".
_TOKEN_SUFFIX = re.compile(r"^(.+)#\d+$")
_DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


class CaptionCsvArgs(BaseModel):
    """Arguments of the ``caption-csv`` dataset: ``image,caption`` rows, several per image."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        description="CSV/TSV file relative to data.root: one 'image,caption' row per caption (Flickr8k captions.txt "
        "or Flickr8k.token.txt 'image.jpg#0<TAB>caption')"
    )
    image_root: str | None = Field(
        None,
        description="folder the image paths are relative to, relative to data.root (default: the file's folder)",
    )
    delimiter: str | None = Field(
        None,
        description="field delimiter: one character, or tab/comma/semicolon/pipe (default: by extension, "
        ".tsv tab, .csv comma, else tab if the first line has one)",
    )
    header: bool | None = Field(None, description="whether the first row is a header (default: detected)")
    skip_invalid: bool = Field(False, description="drop and count invalid captions/images instead of stopping")
    max_captions_per_image: int | None = Field(
        None, ge=1, description="keep at most this many captions per image (the first ones in file order)"
    )

    @field_validator("delimiter")
    @classmethod
    def _one_char(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = _DELIMITER_NAMES.get(v.lower(), v)
        if len(v) != 1 or v in '"\r\n':
            raise ValueError("must be one character (not a quote or newline), or tab, comma, semicolon or pipe")
        return v


def _delimiter(path: Path, text: str, given: str | None) -> str:
    if given is not None:
        return given
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        return "\t"
    if suffix == ".csv":
        return ","
    first = next((line for line in text.splitlines() if line.strip()), "")
    return "\t" if "\t" in first else ","


def _columns(row: list[str]) -> tuple[int, int] | None:
    """``(image column, caption column)`` if ``row`` is a header naming both, else None."""
    names = [c.strip().lower() for c in row]
    image = next((names.index(c) for c in IMAGE_COLUMNS if c in names), None)
    caption = next((names.index(c) for c in CAPTION_COLUMNS if c in names), None)
    if image is None or caption is None or image == caption:
        return None
    return image, caption


def build_caption_csv(args: CaptionCsvArgs, root: Path) -> CaptionSamples:
    """Read one row per caption, grouped by image in order of first appearance.

    Errors name the file and its line.
    """
    csv_path = existing_file(root, args.path, "caption file")
    image_root = resolve_image_root(root, args.image_root, csv_path.parent)
    where_file = f"caption file {csv_path}"
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{where_file} is not UTF-8 text ({exc.reason})") from None
    delimiter = _delimiter(csv_path, text, args.delimiter)
    rows: list[tuple[int, list[str]]] = []
    try:
        reader = csv.reader(text.splitlines(keepends=True), delimiter=delimiter)
        for row in reader:
            if any(field.strip() for field in row):
                rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise DataError(f"{where_file} is not valid CSV ({exc})") from None
    if not rows:
        raise DataError(f"{where_file} has no rows")

    columns = _columns(rows[0][1])
    if args.header is True:
        if columns is None:
            raise DataError(
                f"{where_file}: its header ({', '.join(rows[0][1])}) names no image column ({', '.join(IMAGE_COLUMNS)}) "
                f"or no caption column ({', '.join(CAPTION_COLUMNS)})"
            )
    elif args.header is False:
        columns = None
    image_col, caption_col = columns if columns is not None else (0, 1)
    # The caption is the rest of the row when it is the last column (unquoted commas in it).
    caption_rest = caption_col > image_col and (columns is None or caption_col == len(rows[0][1]) - 1)
    if columns is not None:
        rows = rows[1:]
        if not rows:
            raise DataError(f"{where_file} has no rows (only a header)")

    invalid = Invalid(args.skip_invalid)
    images: dict[str, ImageCaptions | None] = {}  # image name as written -> captions (None: skipped)
    for line, row in rows:
        where = f"{where_file} line {line}"
        if len(row) <= max(image_col, caption_col):
            invalid(
                "malformed row",
                f"{where}: expected an image and a caption separated by {delimiter!r}, got {len(row)} field(s)",
            )
            continue
        name = row[image_col].strip()
        match = _TOKEN_SUFFIX.match(name)
        if match:
            name = match.group(1)
        if caption_rest:
            caption = delimiter.join(row[caption_col:])
        else:
            caption = row[caption_col]
        if not name:
            invalid("malformed row", f"{where}: the image name is empty")
            continue
        if name not in images:
            path = resolve_file(root, image_root, name, where)
            if not path.is_file():
                invalid("missing image", f"{where}: image file {path} does not exist")
                images[name] = None
            else:
                images[name] = ImageCaptions(path, where)
        entry = images[name]
        if entry is None:
            continue  # the image is missing (counted once, at its first row)
        caption = clean_caption(caption)
        if not caption:
            invalid("empty caption", f"{where}: the caption of image {name} is empty or blank")
            continue
        entry.captions.append(caption)

    kept = [entry for entry in images.values() if entry is not None]
    items, cut = finish_items(kept, invalid, args.max_captions_per_image, where_file)
    return CaptionSamples(
        items=items, source=source_line("caption file", csv_path, items, cut), skipped=invalid.as_dict()
    )


CAPTION_CSV = DatasetSpec(
    name="caption-csv",
    task=TASK,
    args=CaptionCsvArgs,
    build=build_caption_csv,
    description="a Flickr8k-style CSV/TSV of image,caption rows (several per image; also Flickr8k.token.txt)",
)
