"""Image-captioning datasets: coco-captions and caption-csv parsing (incl. Flickr8k's two
formats), every bad-input case, skip_invalid counting and data-root safety. All data is
tiny and made in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from pydantic import ValidationError
from tlengine.errors import DataError
from tlengine.registry import Registry
from tlengine_plugins.image_captioning.caption_csv import CAPTION_CSV, CaptionCsvArgs, build_caption_csv
from tlengine_plugins.image_captioning.coco_captions import COCO_CAPTIONS, CocoCaptionsArgs, build_coco_captions
from tlengine_plugins.image_captioning.datasets import TASK, CaptionSamples, clean_caption, register_datasets
from tlengine_plugins.image_captioning.synthetic import SYNTHETIC_CAPTIONS


def write_png(path: Path, size: tuple[int, int] = (40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(path)
    return path


def write_corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a png at all")
    return path


# --------------------------------------------------------------------------- shared
def test_specs_are_registered_for_the_captioning_task():
    registry = Registry("dataset")
    register_datasets(registry)
    for spec in (COCO_CAPTIONS, CAPTION_CSV, SYNTHETIC_CAPTIONS):
        assert spec.task == TASK == "image-captioning"
        assert registry.get(spec.name) is spec


def test_clean_caption_strips_and_collapses_whitespace():
    assert clean_caption("  A dog \t runs\n fast . ") == "A dog runs fast ."
    assert clean_caption(" \t\n") == ""


# --------------------------------------------------------------------------- coco-captions
def coco_dict() -> dict:
    return {
        "images": [
            {"id": 10, "file_name": "a.png"},
            {"id": 11, "file_name": "b.png", "width": 40, "height": 30},
        ],
        "annotations": [
            {"id": 1, "image_id": 10, "caption": "A red thing."},
            {"id": 2, "image_id": 11, "caption": "  another   one "},
            {"id": 3, "image_id": 10, "caption": "A second caption of a."},
            {"id": 4, "image_id": 10, "caption": "A third."},
        ],
    }


def write_coco(tmp_path: Path, data: dict | None = None, images: bool = True) -> Path:
    data = coco_dict() if data is None else data
    if images:
        for img in data["images"]:
            if isinstance(img, dict) and isinstance(img.get("file_name"), str) and ".." not in img["file_name"]:
                write_png(tmp_path / "imgs" / img["file_name"])
    path = tmp_path / "ann" / "captions.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def build_coco(tmp_path: Path, **args) -> CaptionSamples:
    return build_coco_captions(CocoCaptionsArgs(path="ann/captions.json", image_root="imgs", **args), tmp_path)


def test_coco_groups_captions_by_image_in_file_order(tmp_path):
    write_coco(tmp_path)
    samples = build_coco(tmp_path)
    assert [item.image for item in samples.items] == [
        (tmp_path / "imgs" / "a.png").resolve(),
        (tmp_path / "imgs" / "b.png").resolve(),
    ]
    assert samples.items[0].captions == ["A red thing.", "A second caption of a.", "A third."]
    assert samples.items[1].captions == ["another one"]
    assert (samples.items[0].width, samples.items[0].height) == (40, 30)  # from the header
    assert samples.num_captions == 4 and len(samples) == 2 and samples.skipped == {}
    assert "2 images, 4 captions" in samples.source


def test_coco_max_captions_per_image_keeps_the_first(tmp_path):
    write_coco(tmp_path)
    samples = build_coco(tmp_path, max_captions_per_image=2)
    assert samples.items[0].captions == ["A red thing.", "A second caption of a."]
    assert "1 caption beyond max_captions_per_image left out" in samples.source
    assert samples.skipped == {}


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda d: d["annotations"][1].update(caption="   "), "annotation id 2: the caption of image id 11 is empty"),
        (lambda d: d["annotations"][1].update(caption=""), "annotation id 2: the caption of image id 11 is empty"),
        (lambda d: d["annotations"][0].update(image_id=99), "annotation id 1: image_id 99 is not in 'images'"),
        (lambda d: d["annotations"][0].update(caption=None), "annotation id 1: caption None is not a string"),
        (lambda d: d["images"].append({"id": 12, "file_name": "c.png"}), "image id 12: image"),
        (lambda d: d["images"].append({"id": 10, "file_name": "a.png"}), "image id 10 is listed more than once"),
        (lambda d: d["images"].append({"file_name": "c.png"}), "image #3 needs an integer 'id'"),
    ],
)
def test_coco_bad_input_names_file_and_id(tmp_path, mutate, fragment):
    data = coco_dict()
    mutate(data)
    path = write_coco(tmp_path, data)
    with pytest.raises(DataError) as err:
        build_coco(tmp_path)
    message = str(err.value)
    assert str(path.resolve()) in message and fragment in message
    assert "\n" not in message


def test_coco_image_without_caption_message(tmp_path):
    data = coco_dict()
    data["images"].append({"id": 12, "file_name": "c.png"})
    write_coco(tmp_path, data)
    with pytest.raises(DataError, match=r"image id 12: image .*c\.png has no caption"):
        build_coco(tmp_path)


def test_coco_missing_image_names_file_and_id(tmp_path):
    data = coco_dict()
    path = write_coco(tmp_path, data)
    (tmp_path / "imgs" / "b.png").unlink()
    with pytest.raises(DataError) as err:
        build_coco(tmp_path)
    assert str(path.resolve()) in str(err.value)
    assert "image id 11: image file" in str(err.value) and "b.png does not exist" in str(err.value)


def test_coco_corrupt_image_is_an_error_even_with_skip_invalid(tmp_path):
    path = write_coco(tmp_path)
    write_corrupt(tmp_path / "imgs" / "b.png")
    for skip in (False, True):
        with pytest.raises(DataError) as err:
            build_coco(tmp_path, skip_invalid=skip)
        assert str(path.resolve()) in str(err.value) and "image id 11" in str(err.value)
        assert "is not a readable image" in str(err.value)


def test_coco_path_escape_is_refused_even_with_skip_invalid(tmp_path):
    (tmp_path / "data").mkdir()
    write_png(tmp_path / "outside.png")
    data = coco_dict()
    data["images"][1]["file_name"] = "../../outside.png"
    ann = tmp_path / "data" / "captions.json"
    write_png(tmp_path / "data" / "a.png")
    ann.write_text(json.dumps(data))
    for skip in (False, True):
        with pytest.raises(DataError, match=r"image id 11: image path '\.\./\.\./outside\.png' is outside the data"):
            build_coco_captions(CocoCaptionsArgs(path="captions.json", skip_invalid=skip), tmp_path / "data")
    with pytest.raises(DataError, match="outside the data root"):
        build_coco_captions(CocoCaptionsArgs(path="../captions.json"), tmp_path / "data")


def test_coco_skip_invalid_drops_and_counts(tmp_path):
    data = coco_dict()
    data["images"] += [
        {"id": 12, "file_name": "c.png"},  # no caption
        {"id": 13, "file_name": "gone.png"},  # missing file
        {"id": 10, "file_name": "a.png"},  # duplicate id
        {"file_name": "x.png"},  # malformed
    ]
    data["annotations"] += [
        {"id": 5, "image_id": 10, "caption": " \t"},  # empty
        {"id": 6, "image_id": 99, "caption": "unknown image"},
        {"id": 7, "image_id": 13, "caption": "of the missing image"},
        {"id": 8, "image_id": 11, "caption": 3},
        "not an object",
    ]
    write_coco(tmp_path, data)
    (tmp_path / "imgs" / "gone.png").unlink()
    samples = build_coco(tmp_path, skip_invalid=True)
    assert [len(item.captions) for item in samples.items] == [3, 1]
    assert samples.skipped == {
        "caption of a skipped image": 1,
        "duplicate image id": 1,
        "empty caption": 1,
        "image without captions": 1,
        "malformed annotation": 2,
        "malformed image": 1,
        "missing image": 1,
        "unknown image id": 1,
    }


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("{not json", "is not valid JSON (line 1"),
        ('{"images": []}', "has no 'annotations' list"),
        ('{"annotations": []}', "has no 'images' list"),
        ("[1, 2]", "does not hold a JSON object"),
        ('{"images": [], "annotations": []}', "has no usable images with captions"),
    ],
)
def test_coco_broken_files(tmp_path, text, fragment):
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        build_coco_captions(CocoCaptionsArgs(path="c.json"), tmp_path)
    assert str(path.resolve()) in str(err.value) and fragment in str(err.value)


def test_coco_args_are_validated():
    with pytest.raises(ValidationError):
        CocoCaptionsArgs(path="a.json", max_captions_per_image=0)
    with pytest.raises(ValidationError):
        CocoCaptionsArgs(path="a.json", bogus=1)


# --------------------------------------------------------------------------- caption-csv
def write_images(folder: Path, *names: str) -> None:
    for name in names:
        write_png(folder / name)


def build_csv(tmp_path: Path, name: str, text: str, **args) -> CaptionSamples:
    (tmp_path / name).write_text(text, encoding="utf-8")
    return build_caption_csv(CaptionCsvArgs(path=name, **args), tmp_path)


def test_csv_flickr8k_captions_txt_with_header_and_unquoted_commas(tmp_path):
    write_images(tmp_path / "Images", "1000_a.jpg", "1001_b.jpg")
    text = (
        "image,caption\n"
        "1000_a.jpg,A child in a pink dress is climbing up a set of stairs in an entry way .\n"
        "1000_a.jpg,A girl going into a wooden building .\n"
        '1001_b.jpg,"A black dog and a spotted dog are fighting, in the street"\n'
        "1001_b.jpg,A dog , a ball , and a frisbee .\n"
        "\n"
    )
    samples = build_csv(tmp_path, "captions.txt", text, image_root="Images")
    assert [item.image.name for item in samples.items] == ["1000_a.jpg", "1001_b.jpg"]
    assert samples.items[0].captions[1] == "A girl going into a wooden building ."
    assert samples.items[1].captions == [
        "A black dog and a spotted dog are fighting, in the street",
        "A dog , a ball , and a frisbee .",
    ]
    assert samples.num_captions == 4 and samples.skipped == {}


def test_csv_flickr8k_token_txt(tmp_path):
    write_images(tmp_path / "Flicker8k_Dataset", "1000268201_693b08cb0e.jpg", "1001773457_577c3a7d70.jpg")
    text = (
        "1000268201_693b08cb0e.jpg#0\tA child in a pink dress is climbing up a set of stairs in an entry way .\n"
        "1000268201_693b08cb0e.jpg#1\tA girl going into a wooden building .\n"
        "1001773457_577c3a7d70.jpg#0\tA black dog and a spotted dog are fighting\n"
        "1001773457_577c3a7d70.jpg#1\tA black dog and a tri-colored dog playing with each other on the road .\n"
        '1001773457_577c3a7d70.jpg#2\tTwo dogs , one "black" , on the road .\n'
    )
    samples = build_csv(tmp_path, "Flickr8k.token.txt", text, image_root="Flicker8k_Dataset")
    assert [item.image.name for item in samples.items] == ["1000268201_693b08cb0e.jpg", "1001773457_577c3a7d70.jpg"]
    assert [len(item.captions) for item in samples.items] == [2, 3]
    assert samples.items[1].captions[0] == "A black dog and a spotted dog are fighting"
    assert "Two dogs , one" in samples.items[1].captions[2]


def test_csv_without_header_tsv_and_explicit_delimiters(tmp_path):
    write_images(tmp_path, "a.png", "sub/b.png")
    samples = build_csv(tmp_path, "c.csv", "a.png,one\nsub/b.png,two\na.png,three\n")
    assert [item.captions for item in samples.items] == [["one", "three"], ["two"]]
    samples = build_csv(tmp_path, "c.tsv", "image\tcaption\na.png\tone, with comma\n")
    assert samples.items[0].captions == ["one, with comma"]
    samples = build_csv(tmp_path, "c.dat", "a.png;first\na.png;second\n", delimiter=";")
    assert samples.items[0].captions == ["first", "second"]
    # a first row that looks like a header is data when header: false (and a header is forced)
    samples = build_csv(tmp_path, "d.csv", "a.png,x\n", header=False)
    assert samples.items[0].captions == ["x"]
    with pytest.raises(DataError, match="names no image column"):
        build_csv(tmp_path, "e.csv", "a.png,x\n", header=True)


def test_csv_flickr30k_style_header_picks_columns_by_name(tmp_path):
    write_images(tmp_path, "1.jpg")
    text = "image_name| comment_number| comment\n1.jpg| 0| A man , in a hat .\n1.jpg| 1| Someone .\n"
    samples = build_csv(tmp_path, "results.csv", text, delimiter="pipe")
    assert samples.items[0].captions == ["A man , in a hat .", "Someone ."]


def test_csv_max_captions_per_image(tmp_path):
    write_images(tmp_path, "a.png")
    samples = build_csv(tmp_path, "c.csv", "a.png,one\na.png,two\na.png,three\n", max_captions_per_image=1)
    assert samples.items[0].captions == ["one"]
    assert "2 captions beyond max_captions_per_image" in samples.source


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("image,caption\na.png,ok\na.png,   \n", "line 3: the caption of image a.png is empty"),
        ("image,caption\na.png,ok\na.png,\n", "line 3: the caption of image a.png is empty"),
        ("image,caption\na.png,ok\nmissing.png,hello\n", "line 3: image file"),
        ("image,caption\na.png,ok\nonly-one-field\n", "line 3: expected an image and a caption"),
        ("image,caption\na.png,ok\n  ,a caption\n", "line 3: the image name is empty"),
        ("image,caption\n\n\na.png,  \n", "line 4: the caption of image a.png is empty"),
    ],
)
def test_csv_bad_rows_name_file_and_line(tmp_path, text, fragment):
    write_images(tmp_path, "a.png")
    with pytest.raises(DataError) as err:
        build_csv(tmp_path, "c.csv", text)
    message = str(err.value)
    assert str((tmp_path / "c.csv").resolve()) in message and fragment in message
    assert "\n" not in message


def test_csv_corrupt_image_is_an_error_even_with_skip_invalid(tmp_path):
    write_images(tmp_path, "a.png")
    write_corrupt(tmp_path / "bad.jpg")
    for skip in (False, True):
        with pytest.raises(DataError, match=r"c\.csv line 2: image .*bad\.jpg is not a readable image"):
            build_csv(tmp_path, "c.csv", "image,caption\nbad.jpg,x\na.png,y\n", skip_invalid=skip)


def test_csv_path_escape_is_refused_even_with_skip_invalid(tmp_path):
    data = tmp_path / "data"
    write_images(data, "a.png")
    write_png(tmp_path / "secret.png")
    for skip in (False, True):
        with pytest.raises(DataError, match=r"line 3: image path '\.\./secret\.png' is outside the data root"):
            build_csv(data, "c.csv", "image,caption\na.png,x\n../secret.png,y\n", skip_invalid=skip)
    abs_outside = str((tmp_path / "secret.png").resolve())
    with pytest.raises(DataError, match="outside the data root"):
        build_csv(data, "c.csv", f"a.png,x\n{abs_outside},y\n")
    with pytest.raises(DataError, match="outside the data root"):
        build_caption_csv(CaptionCsvArgs(path="c.csv", image_root=".."), data)


def test_csv_skip_invalid_drops_and_counts(tmp_path):
    write_images(tmp_path, "a.png", "b.png")
    text = (
        "image,caption\n"
        "a.png,one\n"
        "a.png,\n"  # empty caption
        "gone.png,x\n"  # missing image (counted once)
        "gone.png,y\n"
        "lonely\n"  # malformed
        "b.png,  \n"  # b ends up without captions
        "a.png,two\n"
    )
    samples = build_csv(tmp_path, "c.csv", text, skip_invalid=True)
    assert [item.image.name for item in samples.items] == ["a.png"]
    assert samples.items[0].captions == ["one", "two"]
    assert samples.skipped == {"empty caption": 2, "image without captions": 1, "malformed row": 1, "missing image": 1}


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"", "has no rows"),
        (b"image,caption\n", "has no rows (only a header)"),
        (b"\xff\xfe\x00bad", "is not UTF-8 text"),
    ],
)
def test_csv_broken_files(tmp_path, content, fragment):
    (tmp_path / "c.csv").write_bytes(content)
    with pytest.raises(DataError) as err:
        build_caption_csv(CaptionCsvArgs(path="c.csv"), tmp_path)
    assert str((tmp_path / "c.csv").resolve()) in str(err.value) and fragment in str(err.value)


def test_csv_missing_file_and_bad_args(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_caption_csv(CaptionCsvArgs(path="nope.csv"), tmp_path)
    with pytest.raises(ValidationError):
        CaptionCsvArgs(path="a.csv", delimiter=",,")
    assert CaptionCsvArgs(path="a.csv", delimiter="tab").delimiter == "\t"
