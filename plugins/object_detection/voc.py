"""The ``voc`` dataset: a Pascal VOC folder - ``Annotations/*.xml``, the images in
``JPEGImages/``, and optionally a predefined split in ``ImageSets/Main/{train,val,test}.txt``.

Validation, besides the box checks of :mod:`.datasets`: a DataError naming the XML file
and the object number or, with ``skip_invalid: true``, dropped and counted: annotations
without a ``<filename>``, missing image files, objects without a ``<name>`` and a numeric
``<bndbox>``, names not among the classes, split-list ids without an XML file. Never
skippable: invalid XML, an image id listed in two splits.

Pipeline example::

    data: {dataset: voc, root: data, args: {path: VOC2007, skip_difficult: true}}

This module imports no torch, so registering the datasets stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from tlengine.data import DatasetSpec, resolve_under
from tlengine.data.paths import resolve_file
from tlengine.errors import DataError

from .datasets import (
    TASK,
    Box,
    Boxes,
    DetectionItem,
    DetectionSamples,
    Invalid,
    check_class_names,
    error_reason,
    label_order,
    positive_int,
    source_line,
)

try:  # pragma: no cover - depends on what is installed
    from defusedxml.ElementTree import ParseError as _XmlParseError
    from defusedxml.ElementTree import parse as _parse_xml
except ImportError:  # pragma: no cover
    # defusedxml is not a dependency. The VOC XML files are the user's own local data, read
    # from inside the data root; they are not fetched from a remote party, so the stdlib
    # parser's exposure to malicious XML (entity expansion) is not an attack surface here.
    from xml.etree.ElementTree import ParseError as _XmlParseError
    from xml.etree.ElementTree import parse as _parse_xml

__all__ = ["VOC_SPLITS", "VocArgs", "build_voc", "VOC"]

#: ``ImageSets/Main/<split>.txt`` files of a VOC folder that give a predefined split.
VOC_SPLITS: tuple[str, ...] = ("train", "val", "test")


class VocArgs(BaseModel):
    """Arguments of the ``voc`` dataset: a Pascal VOC folder."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        description="folder with Annotations/*.xml, JPEGImages/ and optionally ImageSets/Main/{train,val,test}.txt, "
        "relative to data.root"
    )
    classes: list[str] | None = Field(
        None, description="allowed object names in label order (default: every name found, sorted)"
    )
    skip_difficult: bool = Field(False, description="drop objects marked <difficult>1</difficult>")
    skip_invalid: bool = Field(False, description="drop and count invalid boxes/images instead of stopping")

    @field_validator("classes")
    @classmethod
    def _class_names(cls, v: list[str] | None) -> list[str] | None:
        return check_class_names(v)


def _xml_text(node: Any, tag: str) -> str | None:
    child = node.find(tag)
    if child is None or child.text is None:
        return None
    return child.text.strip() or None


def build_voc(args: VocArgs, root: Path) -> DetectionSamples:
    """Read ``Annotations/*.xml``; errors name the XML file and the object number (1-based).

    VOC corners are 1-based *inclusive* pixel indices: ``xmin=1, xmax=W`` spans the whole
    image. They become 0-based xyxy pixels as ``(xmin - 1, ymin - 1, xmax, ymax)`` (the
    left/top pixel index moves down by one; the inclusive right/bottom index is already the
    exclusive 0-based edge). ``ImageSets/Main/{train,val,test}.txt`` (one image id = XML
    file stem per line) give :attr:`DetectionSamples.splits`; images in no list stay in
    ``items`` without a split.
    """
    folder = resolve_under(root, args.path, what="VOC folder")
    if not folder.is_dir():
        raise DataError(f"VOC folder {folder} {'is not a directory' if folder.exists() else 'does not exist'}")
    ann_dir = folder / "Annotations"
    if not ann_dir.is_dir():
        raise DataError(f"VOC folder {folder} has no Annotations/ subfolder")
    xml_files = sorted(p for p in ann_dir.glob("*.xml") if not p.name.startswith("."))
    if not xml_files:
        raise DataError(f"VOC folder {ann_dir} has no .xml annotation files")
    image_dir = folder / "JPEGImages"
    invalid = Invalid(args.skip_invalid)

    # Pass 1: parse every file (the default classes are the names found in all of them).
    parsed: list[tuple[Path, Path, int | None, int | None, list[tuple[str, str, Box | None]]]] = []
    for xml_path in xml_files:
        resolve_under(root, xml_path, what="VOC annotation")  # a symlink inside may still lead out of the root
        try:
            tree = _parse_xml(xml_path)
        except (_XmlParseError, ValueError) as exc:  # defusedxml's refusals are ValueErrors
            raise DataError(f"VOC annotation {xml_path} is not valid XML ({error_reason(exc)})") from None
        ann = tree.getroot()
        filename = _xml_text(ann, "filename")
        if filename is None:
            invalid("malformed annotation", f"VOC annotation {xml_path} has no <filename>")
            continue
        image = resolve_file(root, image_dir, filename, f"VOC annotation {xml_path}")
        if not image.is_file():
            invalid("missing image", f"VOC annotation {xml_path}: image file {image} does not exist")
            continue
        size = ann.find("size")
        width = positive_int(_xml_text(size, "width")) if size is not None else None
        height = positive_int(_xml_text(size, "height")) if size is not None else None
        objects: list[tuple[str, str, Box | None]] = []
        for n, obj in enumerate(ann.findall("object")):
            where = f"VOC annotation {xml_path} object {n + 1}"
            if args.skip_difficult and _xml_text(obj, "difficult") == "1":
                continue
            name = _xml_text(obj, "name")
            bnd = obj.find("bndbox")
            box: Box | None = None
            if name is not None and bnd is not None:
                try:
                    xmin, ymin, xmax, ymax = (float(_xml_text(bnd, t) or "") for t in ("xmin", "ymin", "xmax", "ymax"))
                    box = (xmin - 1.0, ymin - 1.0, xmax, ymax)
                except ValueError:
                    box = None
            objects.append((where, name or "", box))
        parsed.append((xml_path, image, width, height, objects))

    if args.classes is not None:
        classes = list(args.classes)
    else:
        classes = label_order({name for *_, objects in parsed for _, name, box in objects if name and box})
        if not classes:
            raise DataError(f"VOC folder {folder} has no objects with a <name> and a <bndbox>")
    label_of = {c: i for i, c in enumerate(classes)}

    # Pass 2: check boxes and labels.
    items: list[DetectionItem] = []
    stems: dict[str, int] = {}
    for xml_path, image, width, height, objects in parsed:
        boxes = Boxes(image, width, height, invalid)
        for where, name, box in objects:
            if box is None:
                invalid(
                    "malformed annotation",
                    f"{where}: needs a <name> and a <bndbox> with numeric xmin, ymin, xmax, ymax",
                )
            elif name not in label_of:
                invalid("unknown label", f"{where}: name '{name}' is not one of the classes ({', '.join(classes)})")
            else:
                boxes.add(box, label_of[name], where)
        stems[xml_path.stem] = len(items)
        items.append(boxes.item())
    if not items:
        raise DataError(f"VOC folder {folder} has no usable images")

    splits = _voc_splits(folder, stems, {p.stem for p in xml_files}, invalid)
    extra = ""
    if splits is not None:
        extra = ": " + ", ".join(f"{len(v)} {k}" for k, v in splits.items())
    return DetectionSamples(
        items=items,
        classes=classes,
        source=source_line("VOC", folder, classes, items, extra),
        skipped=invalid.as_dict(),
        splits=splits,
    )


def _voc_splits(folder: Path, index: dict[str, int], known: set[str], invalid: Invalid) -> dict[str, list[int]] | None:
    """Indices of each ``ImageSets/Main/<split>.txt`` list; None if there is no such file.

    ``index`` maps the stems of the kept items to their index; ``known`` holds every XML
    stem (an id of an image skipped as invalid is silently left out: it was counted already).
    """
    main = folder / "ImageSets" / "Main"
    files = {s: main / f"{s}.txt" for s in VOC_SPLITS if (main / f"{s}.txt").is_file()}
    if not files:
        return None
    splits: dict[str, list[int]] = {}
    seen: dict[str, str] = {}
    for split, list_file in files.items():
        ids: list[int] = []
        try:
            lines = list_file.read_text(encoding="utf-8-sig").splitlines()
        except UnicodeDecodeError as exc:
            raise DataError(f"VOC split file {list_file} is not UTF-8 text ({exc.reason})") from None
        for line_no, line in enumerate(lines, start=1):
            parts = line.split()
            if not parts:
                continue
            stem = parts[0]  # per-class lists have "<id> <flag>"; the main lists just "<id>"
            if stem in seen:
                if seen[stem] == split:
                    continue  # listed twice in the same file: harmless
                raise DataError(
                    f"VOC split file {list_file} line {line_no}: image id '{stem}' is also in the {seen[stem]} split"
                )
            seen[stem] = split
            if stem not in known:
                invalid(
                    "unknown image id",
                    f"VOC split file {list_file} line {line_no}: image id '{stem}' has no Annotations/{stem}.xml",
                )
                continue
            if stem in index:
                ids.append(index[stem])
        splits[split] = sorted(ids)
    return splits


VOC = DatasetSpec(
    name="voc",
    task=TASK,
    args=VocArgs,
    build=build_voc,
    description="a Pascal VOC folder: Annotations/*.xml, JPEGImages/, optional ImageSets/Main/{train,val,test}.txt",
)
