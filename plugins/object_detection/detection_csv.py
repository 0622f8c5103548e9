"""The ``detection-csv`` dataset: a CSV file with a header ``image_path,xmin,ymin,xmax,ymax,label``
and one row per box (xyxy absolute pixels, 0-based), the image paths relative to
``image_root`` (default: the CSV's folder); an image without boxes is a row with the five
box fields empty.

Validation, besides the box checks of :mod:`.datasets`: a DataError naming the file and
the line or, with ``skip_invalid: true``, dropped and counted: malformed rows (empty
``image_path``, box fields half filled in or not numbers), missing image files, labels
not among the classes. Never skippable: a file that is not UTF-8 CSV, a missing column.

Pipeline example::

    data: {dataset: detection-csv, root: data, args: {path: boxes.csv, classes: [car, person]}}

This module imports no torch, so registering the datasets stays cheap.
"""

from __future__ import annotations

import csv
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator
from tlengine.data import DatasetSpec
from tlengine.data.paths import existing_file, resolve_file, resolve_image_root
from tlengine.errors import DataError

from .datasets import (
    TASK,
    Boxes,
    DetectionSamples,
    Invalid,
    check_class_names,
    label_order,
    source_line,
)

__all__ = ["CSV_COLUMNS", "DetectionCsvArgs", "build_detection_csv", "DETECTION_CSV"]

#: Header of a ``detection-csv`` file (extra columns are allowed and ignored).
CSV_COLUMNS: tuple[str, ...] = ("image_path", "xmin", "ymin", "xmax", "ymax", "label")


class DetectionCsvArgs(BaseModel):
    """Arguments of the ``detection-csv`` dataset: ``image_path,xmin,ymin,xmax,ymax,label`` rows."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        description="CSV file relative to data.root; header image_path,xmin,ymin,xmax,ymax,label; one row per box "
        "(xyxy absolute pixels, 0-based); an image without boxes is a row with the five box fields empty"
    )
    image_root: str | None = Field(
        None,
        description="folder the image paths are relative to, relative to data.root (default: the CSV's folder)",
    )
    classes: list[str] | None = Field(
        None, description="allowed labels in label order (default: every label found, sorted)"
    )
    skip_invalid: bool = Field(False, description="drop and count invalid boxes/images instead of stopping")

    @field_validator("classes")
    @classmethod
    def _class_names(cls, v: list[str] | None) -> list[str] | None:
        return check_class_names(v)


def build_detection_csv(args: DetectionCsvArgs, root: Path) -> DetectionSamples:
    """Read one row per box, grouped by image in order of first appearance.

    Coordinates are 0-based xyxy absolute pixels. Errors name the CSV file and its line.
    """
    csv_path = existing_file(root, args.path, "csv file")
    image_root = resolve_image_root(root, args.image_root, csv_path.parent)
    invalid = Invalid(args.skip_invalid)
    rows: list[tuple[int, str, list[str], str]] = []  # (line, image path, 4 box fields, label)
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames
            if not header:
                raise DataError(f"csv file {csv_path} has no rows (not even a header)")
            missing = [c for c in CSV_COLUMNS if c not in header]
            if missing:
                raise DataError(
                    f"csv file {csv_path} has no column {', '.join(repr(c) for c in missing)} (its header has: "
                    f"{', '.join(header)}; expected {','.join(CSV_COLUMNS)})"
                )
            for row in reader:
                line = reader.line_num
                values = [(row.get(c) or "").strip() for c in CSV_COLUMNS]
                if not any(values):
                    continue  # blank line
                rows.append((line, values[0], values[1:5], values[5]))
    except UnicodeDecodeError as exc:
        raise DataError(f"csv file {csv_path} is not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise DataError(f"csv file {csv_path} is not valid CSV ({exc})") from None
    if not rows:
        raise DataError(f"csv file {csv_path} has no rows (only a header)")

    if args.classes is not None:
        classes = list(args.classes)
    else:
        classes = label_order({label for _, _, fields, label in rows if label and all(fields)})
        if not classes:
            raise DataError(f"csv file {csv_path} has no row with a box and a label")
    label_of = {c: i for i, c in enumerate(classes)}

    builders: dict[str, Boxes | None] = {}  # image path as written -> boxes (None: image skipped)
    for line, path_value, fields, label in rows:
        where = f"csv file {csv_path} line {line}"
        if not path_value:
            invalid("malformed row", f"{where}: column 'image_path' is empty")
            continue
        if path_value not in builders:
            image = resolve_file(root, image_root, path_value, where)
            if not image.is_file():
                invalid("missing image", f"{where}: image file {image} does not exist")
                builders[path_value] = None
            else:
                builders[path_value] = Boxes(image, None, None, invalid)
        boxes = builders[path_value]
        if boxes is None:
            continue  # the image is missing (counted once, at its first row)
        if not any(fields) and not label:
            continue  # the image has no boxes
        if not all(fields) or not label:
            invalid(
                "malformed row",
                f"{where}: fill in all of xmin, ymin, xmax, ymax and label, or leave all five empty for an image "
                "without boxes",
            )
            continue
        try:
            box = tuple(float(v) for v in fields)
        except ValueError:
            invalid("malformed row", f"{where}: box coordinates {', '.join(fields)} are not all numbers")
            continue
        if label not in label_of:
            invalid("unknown label", f"{where}: label '{label}' is not one of the classes ({', '.join(classes)})")
            continue
        boxes.add(box, label_of[label], where)  # type: ignore[arg-type]

    items = [b.item() for b in builders.values() if b is not None]
    if not items:
        raise DataError(f"csv file {csv_path} has no usable images")
    return DetectionSamples(
        items=items,
        classes=classes,
        source=source_line("detection CSV", csv_path, classes, items),
        skipped=invalid.as_dict(),
    )


DETECTION_CSV = DatasetSpec(
    name="detection-csv",
    task=TASK,
    args=DetectionCsvArgs,
    build=build_detection_csv,
    description="a CSV file with image_path,xmin,ymin,xmax,ymax,label rows (one per box)",
)
