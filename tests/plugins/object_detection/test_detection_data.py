"""Object-detection datasets: coco-json, voc and detection-csv parsing and validation,
to_coco round trip and tiling. All data is tiny and made in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from pydantic import ValidationError
from tlengine.errors import DataError
from tlengine.registry import Registry
from tlengine_plugins.object_detection.coco_json import COCO_JSON, CocoJsonArgs, build_coco_json
from tlengine_plugins.object_detection.datasets import TASK, DetectionItem, DetectionSamples, register_datasets, to_coco
from tlengine_plugins.object_detection.detection_csv import DETECTION_CSV, DetectionCsvArgs, build_detection_csv
from tlengine_plugins.object_detection.tiling import tile
from tlengine_plugins.object_detection.voc import VOC, VocArgs, build_voc


def write_png(path: Path, size: tuple[int, int] = (40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(path)
    return path


# --------------------------------------------------------------------------- coco-json
def coco_dict() -> dict:
    return {
        "images": [
            {"id": 10, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 11, "file_name": "b.png", "width": 40, "height": 30},
            {"id": 12, "file_name": "empty.png", "width": 40, "height": 30},
        ],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 7, "bbox": [1, 2, 10, 5], "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 3, "bbox": [0, 0, 40, 30], "iscrowd": 0},
            {"id": 3, "image_id": 11, "category_id": 3, "bbox": [5.5, 6, 4, 4]},
            {"id": 4, "image_id": 11, "category_id": 7, "bbox": [0, 0, 20, 20], "iscrowd": 1},
        ],
        "categories": [{"id": 7, "name": "person"}, {"id": 3, "name": "car"}],
    }


def write_coco(tmp_path: Path, data: dict | None = None, images: bool = True) -> Path:
    data = coco_dict() if data is None else data
    if images:
        for img in data["images"]:
            write_png(tmp_path / "imgs" / img["file_name"])
    path = tmp_path / "ann" / "instances.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def build_coco(tmp_path: Path, **args) -> DetectionSamples:
    return build_coco_json(CocoJsonArgs(path="ann/instances.json", image_root="imgs", **args), tmp_path)


def test_coco_parses_classes_in_id_order_and_xywh_to_xyxy(tmp_path):
    write_coco(tmp_path)
    s = build_coco(tmp_path)
    assert s.classes == ["car", "person"]  # ids 3, 7: not contiguous
    assert [i.image.name for i in s.items] == ["a.png", "b.png", "empty.png"]
    a, b, empty = s.items
    assert a.boxes == [(1.0, 2.0, 11.0, 7.0), (0.0, 0.0, 40.0, 30.0)]
    assert a.labels == [1, 0]
    assert (a.width, a.height) == (40, 30)
    assert b.boxes == [(5.5, 6.0, 9.5, 10.0)] and b.labels == [0]  # the crowd annotation is dropped
    assert empty.boxes == [] and empty.labels == []
    assert s.skipped == {} and s.splits is None
    assert "1 crowd annotation ignored" in s.source and "3 boxes" in s.source
    assert a.image == (tmp_path / "imgs" / "a.png").resolve()


def test_coco_image_root_defaults_to_json_folder(tmp_path):
    data = coco_dict()
    for img in data["images"]:
        write_png(tmp_path / "ann" / img["file_name"])
    write_coco(tmp_path, data, images=False)
    s = build_coco_json(CocoJsonArgs(path="ann/instances.json"), tmp_path)
    assert s.items[0].image == (tmp_path / "ann" / "a.png").resolve()


def test_coco_round_trip(tmp_path):
    write_coco(tmp_path)
    s = build_coco(tmp_path)
    exported = to_coco(s, image_root=tmp_path / "imgs")
    assert [c["id"] for c in exported["categories"]] == [1, 2]
    ann = exported["annotations"][0]
    assert ann["bbox"] == [1.0, 2.0, 10.0, 5.0] and ann["area"] == 50.0 and ann["iscrowd"] == 0
    assert exported["images"][0] == {"id": 1, "file_name": "a.png", "width": 40, "height": 30}
    (tmp_path / "ann" / "instances.json").write_text(json.dumps(exported))
    again = build_coco(tmp_path)
    assert again.items == s.items and again.classes == s.classes


def test_to_coco_reads_unknown_size_from_the_image(tmp_path):
    img = write_png(tmp_path / "x.png", (17, 9))
    s = DetectionSamples([DetectionItem(img, [(1, 1, 3, 3)], [0])], ["a"], "test")
    out = to_coco(s)
    assert out["images"][0]["width"] == 17 and out["images"][0]["height"] == 9
    assert out["images"][0]["file_name"] == str(img)


BAD_COCO_BOXES = [
    ([1, 2, 0, 5], "degenerate box"),
    ([1, 2, 5, -1], "degenerate box"),
    ([float("nan"), 2, 5, 5], "non-finite coordinates"),
    ([1, 2, float("inf"), 5], "non-finite coordinates"),
    ([30, 2, 15, 5], "box outside image"),  # x2 = 45 > 40 + 1
    ([-2, 2, 5, 5], "box outside image"),
    (["1", 2, 5, 5], "malformed bbox"),
]


@pytest.mark.parametrize("bbox,reason", BAD_COCO_BOXES)
def test_coco_bad_boxes_raise_or_are_skipped(tmp_path, bbox, reason):
    data = coco_dict()
    data["annotations"][0]["id"] = 99
    data["annotations"][0]["bbox"] = bbox
    path = write_coco(tmp_path, data)
    with pytest.raises(DataError) as err:
        build_coco(tmp_path)
    assert str(path.resolve()) in str(err.value) and "annotation id 99" in str(err.value)
    s = build_coco(tmp_path, skip_invalid=True)
    assert s.skipped == {reason: 1}
    assert len(s.items[0].boxes) == 1


def test_coco_box_within_tolerance_is_clipped(tmp_path):
    data = coco_dict()
    data["annotations"][0]["bbox"] = [-0.5, 0, 41, 30.8]
    write_coco(tmp_path, data)
    assert build_coco(tmp_path).items[0].boxes[0] == (0.0, 0.0, 40.0, 30.0)


def test_coco_size_read_lazily_when_missing(tmp_path):
    data = coco_dict()
    for img in data["images"]:
        del img["width"], img["height"]
    data["annotations"][0]["bbox"] = [1, 2, 50, 5]
    write_coco(tmp_path, data)
    with pytest.raises(DataError, match="outside the 40x30 image"):
        build_coco(tmp_path)
    s = build_coco(tmp_path, skip_invalid=True)
    assert (s.items[0].width, s.items[0].height) == (40, 30)
    assert s.items[2].width is None  # no boxes: the image was not opened


def test_coco_unknown_category_and_unknown_image(tmp_path):
    data = coco_dict()
    data["annotations"][0]["category_id"] = 5
    data["annotations"][2]["image_id"] = 77
    write_coco(tmp_path, data)
    with pytest.raises(DataError, match=r"annotation id 1: category_id 5 is not in 'categories'"):
        build_coco(tmp_path)
    data["annotations"][0]["category_id"] = 7
    write_coco(tmp_path, data)
    with pytest.raises(DataError, match=r"annotation id 3: image_id 77 is not in 'images'"):
        build_coco(tmp_path)
    data["annotations"][0]["category_id"] = 5
    write_coco(tmp_path, data)
    s = build_coco(tmp_path, skip_invalid=True)
    assert s.skipped == {"unknown category": 1, "unknown image id": 1}


def test_coco_duplicate_image_id(tmp_path):
    data = coco_dict()
    data["images"][1]["id"] = 10
    write_coco(tmp_path, data)
    with pytest.raises(DataError, match="image id 10 is listed more than once"):
        build_coco(tmp_path)
    s = build_coco(tmp_path, skip_invalid=True)
    assert s.skipped == {"duplicate image id": 1, "unknown image id": 1}  # annotation 3 pointed at image 11
    assert len(s.items) == 2


def test_coco_missing_image(tmp_path):
    write_coco(tmp_path)
    (tmp_path / "imgs" / "a.png").unlink()
    with pytest.raises(DataError, match=r"image id 10 file .*a\.png does not exist"):
        build_coco(tmp_path)
    s = build_coco(tmp_path, skip_invalid=True)
    assert s.skipped == {"missing image": 1, "annotation of a skipped image": 2}
    assert [i.image.name for i in s.items] == ["b.png", "empty.png"]


def test_coco_corrupt_image_is_an_error_even_when_skipping(tmp_path):
    data = coco_dict()
    del data["images"][0]["width"]
    write_coco(tmp_path, data)
    (tmp_path / "imgs" / "a.png").write_bytes(b"not an image")
    for skip in (False, True):
        with pytest.raises(DataError, match=r"a\.png is not a readable image"):
            build_coco(tmp_path, skip_invalid=skip)


def test_coco_path_escaping_root(tmp_path):
    root = tmp_path / "root"
    data = coco_dict()
    data["images"][0]["file_name"] = "../../outside.png"
    write_png(tmp_path / "outside.png")
    write_coco(root, data)
    for skip in (False, True):
        with pytest.raises(DataError, match=r"image id 10: image path '../../outside.png' is outside the data root"):
            build_coco(root, skip_invalid=skip)
    with pytest.raises(DataError, match="outside the data root"):
        build_coco_json(CocoJsonArgs(path="../x.json"), root)


def test_coco_file_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_coco(tmp_path)
    path = write_coco(tmp_path)
    path.write_text("{nope")
    with pytest.raises(DataError, match="is not valid JSON"):
        build_coco(tmp_path)
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match="has no 'categories' list"):
        build_coco(tmp_path)
    with pytest.raises(ValidationError):
        CocoJsonArgs(path="a.json", bogus=1)


# --------------------------------------------------------------------------- voc
def voc_xml(filename: str, objects: list[tuple[str, tuple[int, int, int, int], int]], size=(40, 30)) -> str:
    objs = "".join(
        f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, b, difficult in objects
    )
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""
    return f"<annotation><filename>{filename}</filename>{size_xml}{objs}</annotation>"


def write_voc(root: Path, splits: bool = False) -> Path:
    folder = root / "VOC"
    (folder / "Annotations").mkdir(parents=True)
    files = {
        "000001": [("dog", (1, 1, 40, 30), 0), ("cat", (5, 6, 10, 12), 1)],
        "000002": [("cat", (2, 3, 20, 25), 0)],
        "000003": [],
    }
    for stem, objects in files.items():
        write_png(folder / "JPEGImages" / f"{stem}.jpg")
        (folder / "Annotations" / f"{stem}.xml").write_text(voc_xml(f"{stem}.jpg", objects))
    if splits:
        main = folder / "ImageSets" / "Main"
        main.mkdir(parents=True)
        (main / "train.txt").write_text("000001\n000003\n")
        (main / "val.txt").write_text("000002\n")
    return folder


def test_voc_parses_and_converts_one_based_corners(tmp_path):
    write_voc(tmp_path)
    s = build_voc(VocArgs(path="VOC"), tmp_path)
    assert s.classes == ["cat", "dog"]
    first, second, third = s.items
    # 1-based inclusive (1, 1, 40, 30) on a 40x30 image is the whole image: (0, 0, 40, 30).
    assert first.boxes == [(0.0, 0.0, 40.0, 30.0), (4.0, 5.0, 10.0, 12.0)]
    assert first.labels == [1, 0]
    assert second.boxes == [(1.0, 2.0, 20.0, 25.0)]
    assert third.boxes == [] and (third.width, third.height) == (40, 30)
    assert s.splits is None and s.skipped == {}


def test_voc_skip_difficult_and_class_order(tmp_path):
    write_voc(tmp_path)
    s = build_voc(VocArgs(path="VOC", skip_difficult=True, classes=["dog", "cat"]), tmp_path)
    assert s.classes == ["dog", "cat"]
    assert s.items[0].boxes == [(0.0, 0.0, 40.0, 30.0)] and s.items[0].labels == [0]
    assert s.items[1].labels == [1]


def test_voc_unknown_label(tmp_path):
    write_voc(tmp_path)
    with pytest.raises(DataError, match=r"000001\.xml object 2: name 'cat' is not one of the classes \(dog\)"):
        build_voc(VocArgs(path="VOC", classes=["dog"]), tmp_path)
    s = build_voc(VocArgs(path="VOC", classes=["dog"], skip_invalid=True), tmp_path)
    assert s.skipped == {"unknown label": 2}


def test_voc_predefined_splits(tmp_path):
    write_voc(tmp_path, splits=True)
    s = build_voc(VocArgs(path="VOC"), tmp_path)
    assert s.splits == {"train": [0, 2], "val": [1]}
    assert "2 train, 1 val" in s.source


def test_voc_split_errors(tmp_path):
    folder = write_voc(tmp_path, splits=True)
    (folder / "ImageSets" / "Main" / "test.txt").write_text("000002\n")
    with pytest.raises(DataError, match=r"test\.txt line 1: image id '000002' is also in the val split"):
        build_voc(VocArgs(path="VOC"), tmp_path)
    (folder / "ImageSets" / "Main" / "test.txt").write_text("\n999999\n")
    with pytest.raises(DataError, match=r"test\.txt line 2: image id '999999' has no Annotations/999999\.xml"):
        build_voc(VocArgs(path="VOC"), tmp_path)
    s = build_voc(VocArgs(path="VOC", skip_invalid=True), tmp_path)
    assert s.splits == {"train": [0, 2], "val": [1], "test": []}


def test_voc_bad_boxes(tmp_path):
    folder = write_voc(tmp_path)
    ann = folder / "Annotations" / "000002.xml"
    cases = [
        ((5, 5, 4, 10), "degenerate box"),
        ((1, 1, 42, 10), "box outside image"),
    ]
    for box, reason in cases:
        ann.write_text(voc_xml("000002.jpg", [("cat", box, 0)]))
        with pytest.raises(DataError, match=r"000002\.xml object 1: box"):
            build_voc(VocArgs(path="VOC"), tmp_path)
        assert build_voc(VocArgs(path="VOC", skip_invalid=True), tmp_path).skipped == {reason: 1}
    ann.write_text(voc_xml("000002.jpg", [("cat", (1, 1, 2, 2), 0)]).replace("<xmin>1<", "<xmin>nan<"))
    with pytest.raises(DataError, match=r"000002\.xml object 1: box .*NaN"):
        build_voc(VocArgs(path="VOC"), tmp_path)
    ann.write_text(voc_xml("000002.jpg", [("cat", (1, 1, 2, 2), 0)]).replace("<xmin>1<", "<xmin>one<"))
    with pytest.raises(DataError, match=r"000002\.xml object 1: needs a <name> and a <bndbox>"):
        build_voc(VocArgs(path="VOC"), tmp_path)


def test_voc_missing_corrupt_and_escaping_images(tmp_path):
    folder = write_voc(tmp_path)
    (folder / "JPEGImages" / "000002.jpg").unlink()
    with pytest.raises(DataError, match=r"000002\.xml: image file .*000002\.jpg does not exist"):
        build_voc(VocArgs(path="VOC"), tmp_path)
    s = build_voc(VocArgs(path="VOC", skip_invalid=True), tmp_path)
    assert s.skipped == {"missing image": 1} and len(s.items) == 2

    ann = folder / "Annotations" / "000002.xml"
    ann.write_text(voc_xml("000001.jpg", [("cat", (1, 1, 5, 5), 0)], size=None))
    (folder / "JPEGImages" / "000001.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"000001\.jpg is not a readable image"):
        build_voc(VocArgs(path="VOC", skip_invalid=True), tmp_path)

    ann.write_text(voc_xml("../../../etc/passwd", []))
    with pytest.raises(DataError, match=r"000002\.xml: image path '../../../etc/passwd' is outside the data root"):
        build_voc(VocArgs(path="VOC"), tmp_path)
    ann.write_text("<annotation><filename>")
    with pytest.raises(DataError, match=r"000002\.xml is not valid XML"):
        build_voc(VocArgs(path="VOC"), tmp_path)


def test_voc_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_voc(VocArgs(path="nope"), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no Annotations/ subfolder"):
        build_voc(VocArgs(path="empty"), tmp_path)
    with pytest.raises(DataError, match="outside the data root"):
        build_voc(VocArgs(path=".."), tmp_path)


# --------------------------------------------------------------------------- detection-csv
CSV_HEADER = "image_path,xmin,ymin,xmax,ymax,label\n"


def write_csv(tmp_path: Path, body: str) -> Path:
    for name in ("a.png", "b.png", "c.png"):
        if not (tmp_path / "imgs" / name).exists():
            write_png(tmp_path / "imgs" / name)
    path = tmp_path / "boxes.csv"
    path.write_text(CSV_HEADER + body)
    return path


def build_csv(tmp_path: Path, **args) -> DetectionSamples:
    return build_detection_csv(DetectionCsvArgs(path="boxes.csv", image_root="imgs", **args), tmp_path)


def test_csv_parses_rows_grouped_by_image(tmp_path):
    write_csv(tmp_path, "a.png,1,2,11,7,person\nb.png,,,,,\na.png,0,0,40,30,car\n")
    s = build_csv(tmp_path)
    assert s.classes == ["car", "person"]
    assert [i.image.name for i in s.items] == ["a.png", "b.png"]
    assert s.items[0].boxes == [(1.0, 2.0, 11.0, 7.0), (0.0, 0.0, 40.0, 30.0)]
    assert s.items[0].labels == [1, 0]
    assert s.items[1].boxes == [] and s.items[1].labels == []  # an image without boxes
    assert (s.items[0].width, s.items[0].height) == (40, 30)  # read from the header to check bounds


def test_csv_image_root_defaults_to_csv_folder(tmp_path):
    write_csv(tmp_path, "imgs/a.png,1,2,11,7,person\n")
    s = build_detection_csv(DetectionCsvArgs(path="boxes.csv"), tmp_path)
    assert s.items[0].image == (tmp_path / "imgs" / "a.png").resolve()


@pytest.mark.parametrize(
    "row,reason,message",
    [
        ("a.png,5,2,5,7,car", "degenerate box", "zero or negative width or height"),
        ("a.png,5,9,8,7,car", "degenerate box", "zero or negative width or height"),
        ("a.png,nan,2,5,7,car", "non-finite coordinates", "NaN or infinite"),
        ("a.png,1,2,inf,7,car", "non-finite coordinates", "NaN or infinite"),
        ("a.png,1,2,42,7,car", "box outside image", "outside the 40x30 image"),
        ("a.png,1,-3,5,7,car", "box outside image", "outside the 40x30 image"),
        ("a.png,1,2,x,7,car", "malformed row", "not all numbers"),
        ("a.png,1,2,,7,car", "malformed row", "fill in all of"),
        ("a.png,1,2,5,7,truck", "unknown label", "label 'truck' is not one of the classes"),
        ("missing.png,1,2,5,7,car", "missing image", "missing.png does not exist"),
    ],
)
def test_csv_invalid_rows_raise_or_are_skipped(tmp_path, row, reason, message):
    path = write_csv(tmp_path, f"b.png,1,1,5,5,car\n{row}\n")
    with pytest.raises(DataError) as err:
        build_csv(tmp_path, classes=["car"])
    assert f"csv file {path.resolve()} line 3: " in str(err.value) and message in str(err.value)
    s = build_csv(tmp_path, classes=["car"], skip_invalid=True)
    assert s.skipped == {reason: 1}
    assert s.items[0].boxes == [(1.0, 1.0, 5.0, 5.0)]


def test_csv_corrupt_image_and_escaping_path(tmp_path):
    write_csv(tmp_path, "c.png,1,1,5,5,car\n")
    (tmp_path / "imgs" / "c.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=r"c\.png is not a readable image"):
        build_csv(tmp_path, skip_invalid=True)
    write_csv(tmp_path, "../../etc/hosts,1,1,5,5,car\n")
    with pytest.raises(DataError, match=r"line 2: image path '../../etc/hosts' is outside the data root"):
        build_csv(tmp_path, skip_invalid=True)


def test_csv_header_errors(tmp_path):
    (tmp_path / "boxes.csv").write_text("path,label\na.png,car\n")
    with pytest.raises(DataError, match=r"has no column 'image_path', 'xmin'"):
        build_detection_csv(DetectionCsvArgs(path="boxes.csv"), tmp_path)
    (tmp_path / "boxes.csv").write_text(CSV_HEADER)
    with pytest.raises(DataError, match=r"has no rows \(only a header\)"):
        build_detection_csv(DetectionCsvArgs(path="boxes.csv"), tmp_path)
    with pytest.raises(ValidationError):
        DetectionCsvArgs(path="boxes.csv", classes=["a", "a"])


# --------------------------------------------------------------------------- tiling
def test_tile_grid_covers_the_image():
    item = DetectionItem(Path("x.png"), [], [])
    tiles = tile(item, (100, 50), tile=40, overlap=10)
    crops = [t[0] for t in tiles]
    # x origins 0, 30, 60 (last flush with the 100-pixel edge); y origins 0, 10
    assert crops[:3] == [(0.0, 0.0, 40.0, 40.0), (30.0, 0.0, 70.0, 40.0), (60.0, 0.0, 100.0, 40.0)]
    assert crops[3:] == [(0.0, 10.0, 40.0, 50.0), (30.0, 10.0, 70.0, 50.0), (60.0, 10.0, 100.0, 50.0)]
    small = tile(item, (20, 10), tile=40, overlap=0)
    assert [t[0] for t in small] == [(0.0, 0.0, 20.0, 10.0)]


def test_tile_keeps_clips_and_drops_boxes():
    inside = (5.0, 5.0, 15.0, 15.0)  # wholly in tile 0
    mostly = (30.0, 0.0, 50.0, 10.0)  # 20 wide; tile 0 (x < 40) sees 10/20 = 0.5, tile 1 (x 30..70) all
    straddle = (35.0, 0.0, 45.0, 10.0)  # tile 0 sees 5/10
    item = DetectionItem(Path("x.png"), [inside, mostly, straddle], [0, 1, 2])
    tiles = tile(item, (70, 40), tile=40, overlap=10, min_visible=0.6)
    assert len(tiles) == 2
    (crop0, boxes0, labels0), (crop1, boxes1, labels1) = tiles
    assert crop0 == (0.0, 0.0, 40.0, 40.0) and boxes0 == [inside] and labels0 == [0]
    assert crop1 == (30.0, 0.0, 70.0, 40.0)
    assert boxes1 == [(0.0, 0.0, 20.0, 10.0), (5.0, 0.0, 15.0, 10.0)] and labels1 == [1, 2]
    # with a lower threshold, the half-visible boxes are kept in tile 0, clipped to it
    loose = tile(item, (70, 40), tile=40, overlap=10, min_visible=0.5)
    assert loose[0][1] == [inside, (30.0, 0.0, 40.0, 10.0), (35.0, 0.0, 40.0, 10.0)]
    assert loose[0][2] == [0, 1, 2]
    assert len(loose) == 2


def test_tile_argument_checks():
    item = DetectionItem(Path("x.png"), [], [])
    for kwargs in (
        {"tile": 0, "overlap": 0},
        {"tile": 10, "overlap": 10},
        {"tile": 10, "overlap": 2, "min_visible": 0},
    ):
        with pytest.raises(ValueError):
            tile(item, (20, 20), **kwargs)


# --------------------------------------------------------------------------- registration
def test_register_datasets():
    registry: Registry = Registry("dataset")
    register_datasets(registry)
    assert sorted(registry.names()) == ["coco-json", "detection-csv", "voc"]
    for spec in (COCO_JSON, VOC, DETECTION_CSV):
        assert registry.get(spec.name) is spec and spec.task == TASK
