"""The synthetic-captions generator: determinism, captions that describe what was drawn
(checked against the generator's own record), relation words that agree with positions."""

from __future__ import annotations

import re

import numpy as np
import pytest
from pydantic import ValidationError
from tlengine.data.synthetic_shapes import SHAPES
from tlengine_plugins.image_captioning.synthetic import (
    COLOURS,
    RELATION_WORDS,
    SIZE_WORDS,
    SyntheticCaptionsArgs,
    build_synthetic_captions,
    generate_caption_scenes,
    relation,
)

SIZE_OF = {word: size for size, words in SIZE_WORDS.items() for word in words}
RELATION_OF = {phrase: rel for rel, phrases in RELATION_WORDS.items() for phrase in phrases}
_ALT = lambda words: "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True))
DESC = rf"(?:a|the) ({_ALT(SIZE_OF)}) ({_ALT(COLOURS)}) ({_ALT(SHAPES)})"
CLAUSE = re.compile(rf"^{DESC} ({_ALT(RELATION_OF)}) {DESC}$")
SINGLE = re.compile(rf"^{DESC}(?: (at the top left|at the top right|at the bottom left|at the bottom right|"
                    rf"at the top|at the bottom|on the left|on the right|in the centre))?$")  # fmt: skip


def scenes(**kw):
    args = {"images": 24, "size": 64, "seed": 3, **kw}
    return generate_caption_scenes(**args)


def as_bytes(scene) -> bytes:
    return scene.image.tobytes()


def test_same_args_give_identical_images_and_captions():
    a, b = scenes(), scenes()
    assert [as_bytes(s) for s in a] == [as_bytes(s) for s in b]
    assert [s.captions for s in a] == [s.captions for s in b]
    assert any(as_bytes(s) != as_bytes(t) for s, t in zip(a, scenes(seed=4)))


def test_scene_i_does_not_change_when_images_grows():
    few, many = scenes(images=5), scenes(images=24)
    for s, t in zip(few, many):
        assert as_bytes(s) == as_bytes(t) and s.captions == t.captions and s.objects == t.objects


def test_captions_per_image_changes_captions_not_images():
    three, five = scenes(images=8), scenes(images=8, captions_per_image=5)
    assert [as_bytes(s) for s in three] == [as_bytes(s) for s in five]
    assert all(len(s.captions) == 5 for s in five) and all(len(s.captions) == 3 for s in three)


def test_scenes_have_one_to_three_distinct_non_overlapping_objects():
    counts = set()
    for s in scenes(images=40):
        assert 1 <= len(s.objects) <= 3
        counts.add(len(s.objects))
        descriptions = [(o.size, o.colour, o.shape) for o in s.objects]
        assert len(set(descriptions)) == len(descriptions)
        for i, a in enumerate(s.objects):
            assert a.r <= a.cx <= 64 - a.r and a.r <= a.cy <= 64 - a.r
            for b in s.objects[i + 1 :]:
                assert np.hypot(a.cx - b.cx, a.cy - b.cy) >= a.r + b.r
        assert s.image.size == (64, 64) and s.image.mode == "RGB"
    assert counts == {1, 2, 3}


def test_captions_describe_the_drawn_objects_and_relations_match_positions():
    checked_relations = 0
    for s in scenes(images=40, captions_per_image=4, size=96):
        by_description = {(o.size, o.colour, o.shape): o for o in s.objects}
        assert len(set(s.captions)) == len(s.captions)  # several distinct references
        for caption in s.captions:
            text = caption.removeprefix("there is ")
            mentioned = set()
            if len(s.objects) == 1:
                m = SINGLE.match(text)
                assert m, caption
                mentioned.add((SIZE_OF[m.group(1)], m.group(2), m.group(3)))
            else:
                for clause in text.split(" and "):
                    m = CLAUSE.match(clause)
                    assert m, caption
                    first = (SIZE_OF[m.group(1)], m.group(2), m.group(3))
                    second = (SIZE_OF[m.group(5)], m.group(6), m.group(7))
                    a, b = by_description[first], by_description[second]  # KeyError: not drawn
                    rel = RELATION_OF[m.group(4)]
                    dx, dy = a.cx - b.cx, a.cy - b.cy
                    expected = {
                        "left of": dx < 0 and abs(dx) >= abs(dy),
                        "right of": dx > 0 and abs(dx) >= abs(dy),
                        "above": dy < 0 and abs(dy) > abs(dx),
                        "below": dy > 0 and abs(dy) > abs(dx),
                    }
                    assert expected[rel], (caption, a, b)
                    assert rel == relation(a, b)
                    mentioned |= {first, second}
                    checked_relations += 1
            assert mentioned == set(by_description), caption  # every drawn object, nothing else
    assert checked_relations > 40


def test_single_object_region_matches_its_position():
    for s in scenes(images=60, objects=(1, 1), captions_per_image=3):
        (obj,) = s.objects
        for caption in s.captions:
            m = SINGLE.match(caption.removeprefix("there is "))
            region = m.group(4)
            if region is None:
                continue
            if "left" in region:
                assert obj.cx < 64 / 3
            if "right" in region:
                assert obj.cx >= 2 * 64 / 3
            if "top" in region:
                assert obj.cy < 64 / 3
            if "bottom" in region:
                assert obj.cy >= 2 * 64 / 3
            if region == "in the centre":
                assert 64 / 3 <= obj.cx < 2 * 64 / 3 and 64 / 3 <= obj.cy < 2 * 64 / 3


def test_the_object_colour_is_painted_at_its_centre():
    for s in scenes(images=12, background="plain", noise=0, size=96):
        pixels = np.asarray(s.image, dtype=float)
        for o in s.objects:
            if o.shape == "circle" or o.shape == "square":
                centre = pixels[int(o.cy), int(o.cx)]
                assert np.abs(centre - COLOURS[o.colour]).max() <= 20, (o, centre)


def test_only_the_chosen_shapes_and_colours_appear():
    for s in scenes(images=20, classes=["star", "ring"], colours=["white", "black"]):
        assert {o.shape for o in s.objects} <= {"star", "ring"}
        assert {o.colour for o in s.objects} <= {"white", "black"}


def test_dataset_spec_builds_caption_samples():
    args = SyntheticCaptionsArgs(images=6, size=48, seed=1, captions_per_image=2)
    samples = build_synthetic_captions(args, root=None)
    assert len(samples) == 6 and samples.num_captions == 12
    assert all(item.width == item.height == 48 for item in samples.items)
    assert "6 images of 48 px" in samples.source and samples.skipped == {}


@pytest.mark.parametrize(
    "bad",
    [
        {"classes": ["blob"]},
        {"classes": ["circle", "circle"]},
        {"colours": ["mauve"]},
        {"colours": []},
        {"objects": (0, 2)},
        {"objects": (2, 4)},
        {"background": "striped"},
        {"captions_per_image": 0},
        {"size": 16},
        {"extra": 1},
    ],
)
def test_bad_args_are_refused(bad):
    with pytest.raises(ValidationError):
        SyntheticCaptionsArgs(**bad)
