import ast
import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from theworld.data import (
    META_CATEGORIES,
    SYNTH_RELATIONS,
    ZERO_SHOT_CONCEPTS,
    SceneObject,
    load_image,
    load_vsr,
    load_vsr_split,
    meta_category,
    random_scene,
    relation_holds,
    synth,
    synthesize_vsr,
    vsr,
    vsr_as_dataset,
    vsr_example_from_row,
)

SIZES = {"n_train": 120, "n_dev": 24, "n_test": 48}
VSR_FIELDS = {"image", "image_link", "caption", "label", "relation", "annotator_id"} | {
    "vote_true_validator_id",
    "vote_false_validator_id",
}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def all_files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def random_split(tmp_path_factory) -> Path:
    return synthesize_vsr(tmp_path_factory.mktemp("random"), seed=3, **SIZES)


@pytest.fixture(scope="module")
def zero_shot_split(tmp_path_factory) -> Path:
    return synthesize_vsr(tmp_path_factory.mktemp("zeroshot"), seed=3, zero_shot=True, **SIZES)


# --- relations -------------------------------------------------------------------------------


def test_meta_categories_count_each_relation_once():
    assert len(META_CATEGORIES) == 7
    relations = [r for rs in META_CATEGORIES.values() for r in rs]
    assert len(relations) == len(set(relations)) == 70
    assert meta_category("among") == "Topological"
    assert "among" not in META_CATEGORIES["Unallocated"]
    assert meta_category("left of") == "Projective"
    assert meta_category("far away from") == "Proximity"
    assert meta_category("next to") == "Unallocated"


def test_unknown_relation_is_an_error_naming_it():
    with pytest.raises(ValueError, match="'levitating over'"):
        meta_category("levitating over")


# --- synthetic data ----------------------------------------------------------------------------


def test_synthesis_is_deterministic_per_seed(tmp_path, random_split):
    again = all_files(synthesize_vsr(tmp_path / "again", seed=3, **SIZES))
    assert again == all_files(random_split)
    other = all_files(synthesize_vsr(tmp_path / "other", seed=4, **SIZES))
    assert other.keys() == again.keys()
    assert other["train.jsonl"] != again["train.jsonl"]
    assert other["images/000000000001.jpg"] != again["images/000000000001.jpg"]


@pytest.mark.parametrize("fixture", ["random_split", "zero_shot_split"])
def test_labels_are_balanced_per_split_and_relation(fixture, request):
    directory = request.getfixturevalue(fixture)
    for split in ("train", "dev", "test"):
        rows = read_jsonl(directory / f"{split}.jsonl")
        assert len(rows) == SIZES[f"n_{split}"]
        assert sum(row["label"] for row in rows) == len(rows) // 2
        for relation in {row["relation"] for row in rows}:
            labels = [row["label"] for row in rows if row["relation"] == relation]
            assert labels.count(1) == labels.count(0)
    train = read_jsonl(directory / "train.jsonl")
    assert {row["relation"] for row in train} == set(SYNTH_RELATIONS)
    assert {meta_category(row["relation"]) for row in train} == {
        "Projective",
        "Proximity",
    }


def boxes_say(relation: str, subj: list[int], obj: list[int], image_size: int) -> bool | None:
    """Independent reading of a relation from boxes: True, False, or None when ambiguous."""
    if relation in ("left of", "right of", "above", "below"):
        axis = 0 if relation in ("left of", "right of") else 1
        first, second = (subj, obj) if relation in ("left of", "above") else (obj, subj)
        if first[axis + 2] <= second[axis]:
            return True
        if second[axis + 2] <= first[axis]:
            return False
        return None
    dx = max(obj[0] - subj[2], subj[0] - obj[2], 0)
    dy = max(obj[1] - subj[3], subj[1] - obj[3], 0)
    near = math.hypot(dx, dy) <= 0.1 * image_size
    far = math.hypot(dx, dy) >= 0.25 * image_size
    if near == far:
        return None
    return near if relation == "close to" else far


@pytest.mark.parametrize("fixture", ["random_split", "zero_shot_split"])
def test_each_label_follows_from_the_recorded_scene(fixture, request):
    directory = request.getfixturevalue(fixture)
    for split in ("train", "dev", "test"):
        for row in read_jsonl(directory / f"{split}.jsonl"):
            subj, obj = row["objects"]
            assert row["caption"] == f"The {subj['name']} is {row['relation']} the {obj['name']}."
            assert subj["colour"] != obj["colour"] and subj["shape"] != obj["shape"]
            assert boxes_say(row["relation"], subj["box"], obj["box"], 64) == bool(row["label"]), row
            objects = [SceneObject(o["colour"], o["shape"], tuple(o["box"])) for o in (subj, obj)]
            assert relation_holds(row["relation"], *objects) == bool(row["label"])


def test_images_show_the_recorded_objects(random_split):
    for row in read_jsonl(random_split / "dev.jsonl"):
        pixels = np.asarray(Image.open(random_split / "images" / row["image"]), dtype=int)
        assert pixels.shape == (64, 64, 3)
        outside = np.ones((64, 64), dtype=bool)
        for item in row["objects"]:
            x0, y0, x1, y1 = item["box"]
            outside[y0:y1, x0:x1] = False
            close = np.abs(pixels - synth.COLOURS[item["colour"]]).sum(axis=2) < 60
            ys, xs = np.nonzero(close)
            assert len(xs) >= 0.4 * (x1 - x0) * (y1 - y0), row["image"]
            assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1, row["image"]
        background = np.abs(pixels[outside] - synth.BACKGROUND).sum(axis=1)
        assert np.mean(background < 30) > 0.99


def test_rows_carry_all_vsr_fields(random_split, zero_shot_split):
    for directory, extra in (
        (random_split, {"reference_frame"}),
        (zero_shot_split, {"subj", "obj"}),
    ):
        rows = read_jsonl(directory / "test.jsonl")
        names = [row["image"] for row in rows]
        assert len(set(names)) == len(names)
        for row in rows:
            assert set(row) == VSR_FIELDS | extra | {"objects"}
            assert re.fullmatch(r"\d{12}\.jpg", row["image"])
            assert row["image_link"] == f"http://images.cocodataset.org/train2017/{row['image']}"
            assert isinstance(row["annotator_id"], int)
            true_votes = ast.literal_eval(row["vote_true_validator_id"])
            false_votes = ast.literal_eval(row["vote_false_validator_id"])
            assert (len(true_votes) > len(false_votes)) == bool(row["label"])
            if "subj" in extra:
                assert [row["subj"], row["obj"]] == [o["name"] for o in row["objects"]]


def test_zero_shot_concepts_are_disjoint(zero_shot_split):
    seen = {}
    for split in ("train", "dev", "test"):
        rows = read_jsonl(zero_shot_split / f"{split}.jsonl")
        seen[split] = {row["subj"] for row in rows} | {row["obj"] for row in rows}
        assert seen[split] <= set(ZERO_SHOT_CONCEPTS[split])
    assert not seen["train"] & seen["test"]
    assert not seen["train"] & seen["dev"]
    assert not seen["dev"] & seen["test"]
    colours, shapes = zip(*(concept.split() for concept in seen["train"]), strict=True)
    assert set(colours) == set(synth.COLOURS) and set(shapes) == set(synth.SHAPES)


@pytest.mark.parametrize("image_size", [32, 224])
def test_other_image_sizes(tmp_path, image_size):
    directory = synthesize_vsr(tmp_path, n_train=24, n_dev=2, n_test=2, image_size=image_size)
    for row in read_jsonl(directory / "train.jsonl"):
        assert Image.open(directory / "images" / row["image"]).size == (image_size, image_size)
        objects = [SceneObject(o["colour"], o["shape"], tuple(o["box"])) for o in row["objects"]]
        assert relation_holds(row["relation"], *objects, image_size=image_size) == bool(row["label"])


def test_random_scene_is_reproducible():
    import random

    first = random_scene(random.Random(7), image_size=48)
    assert first.size == (48, 48) and first.mode == "RGB"
    assert first.tobytes() == random_scene(random.Random(7), image_size=48).tobytes()
    assert first.tobytes() != random_scene(random.Random(8), image_size=48).tobytes()


def test_relations_restrict_the_captions(tmp_path):
    proximity = ("close to", "far away from")
    directory = synthesize_vsr(tmp_path, n_train=40, n_dev=4, n_test=8, relations=proximity)
    rows = read_jsonl(directory / "train.jsonl")
    assert sorted(row["relation"] for row in rows) == sorted(proximity * 20)
    for relation in proximity:  # each relation still true and false equally often
        assert sum(row["label"] for row in rows if row["relation"] == relation) == 10
    for row in rows:
        objects = [SceneObject(o["colour"], o["shape"], tuple(o["box"])) for o in row["objects"]]
        assert relation_holds(row["relation"], *objects) == bool(row["label"])


@pytest.mark.parametrize("relations", [(), ("close to", "inside")])
def test_unknown_relations_are_rejected(tmp_path, relations):
    with pytest.raises(ValueError, match="relations must be a non-empty subset"):
        synthesize_vsr(tmp_path, n_train=4, n_dev=2, n_test=2, relations=relations)


def test_odd_split_size_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="n_dev"):
        synthesize_vsr(tmp_path, n_train=4, n_dev=3, n_test=4)


def test_synthetic_set_loads(random_split):
    splits = load_vsr(random_split)
    assert {name: len(split) for name, split in splits.items()} == {
        "train": 120,
        "dev": 24,
        "test": 48,
    }
    assert all(not split.bad_images for split in splits.values())
    assert load_image(splits["dev"].examples[0].image_path).size == (64, 64)


# --- hand-written VSR files -----------------------------------------------------------------


def vsr_row(image: str, caption: str, label: int, relation: str, **extra) -> dict:
    return {
        "image": image,
        "image_link": f"http://images.cocodataset.org/train2017/{image}",
        "caption": caption,
        "label": label,
        "relation": relation,
        **extra,
        "annotator_id": 31,
        "vote_true_validator_id": "[2, 9]" if label else "[]",
        "vote_false_validator_id": "[]" if label else "[2, 10, 1]",
    }


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def hand_written(tmp_path) -> Path:
    """Real-format VSR files over JPEGs of odd sizes and modes, PNG content behind a .jpg name,
    a palette image, and a missing, a truncated and a non-image file."""
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (517, 333, 3), dtype=np.uint8)).save(images / "000000085637.jpg")
    Image.new("L", (640, 480), 128).save(images / "000000239417.jpg")
    Image.new("CMYK", (101, 77), (0, 255, 255, 0)).save(images / "000000224670.jpg")
    rgba = Image.new("RGBA", (50, 60), (255, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 25, 60))
    rgba.save(images / "000000266622.jpg", format="PNG")
    palette = Image.new("P", (31, 17), 1)
    palette.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    palette.save(images / "000000546264.png", transparency=0)
    truncated = images / "000000563615.jpg"
    noise = rng.integers(0, 255, (150, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(truncated, quality=95)
    truncated.write_bytes(truncated.read_bytes()[:15_000])  # header intact, scan data cut
    (images / "000000013943.jpg").write_bytes(b"<html>404 Not Found</html>")

    write_jsonl(
        tmp_path / "train.jsonl",
        [
            vsr_row(
                "000000085637.jpg",
                "The umbrella is under the dog.",
                1,
                "under",
                reference_frame=None,
            ),
            vsr_row(
                "000000239417.jpg",
                "The bench is at the right side of the train.",
                0,
                "at the right side of",
                reference_frame=1.0,
            ),
            vsr_row(
                "000000224670.jpg",
                "The train contains the laptop.",
                1,
                "contains",
                reference_frame=None,
            ),
            vsr_row(
                "000000085637.jpg",
                "The dog is above the umbrella.",
                0,
                "above",
                reference_frame=None,
                annotator_note={"unknown": ["field"]},
            ),
        ],
    )
    write_jsonl(
        tmp_path / "dev.jsonl",
        [
            vsr_row(
                "000000266622.jpg",
                "The laptop is at the left side of the dog.",
                1,
                "at the left side of",
                subj="laptop",
                obj="dog",
            ),
            vsr_row(
                "000000546264.png",
                "The chair is under the dog.",
                0,
                "under",
                subj="chair",
                obj="dog",
            ),
        ],
    )
    write_jsonl(
        tmp_path / "test.jsonl",
        [
            vsr_row(
                "000000085637.jpg",
                "The umbrella is under the dog.",
                1,
                "under",
                reference_frame=None,
            ),
            vsr_row(
                "000000080336.jpg",
                "The person is ahead of the cow.",
                1,
                "ahead of",
                reference_frame=None,
            ),
            vsr_row(
                "000000563615.jpg",
                "The hair drier is in front of the person.",
                0,
                "in front of",
                reference_frame=None,
            ),
            vsr_row(
                "000000013943.jpg",
                "The bus is in front of the horse.",
                0,
                "in front of",
                reference_frame=None,
            ),
        ],
    )
    return tmp_path


def test_hand_written_files_load(hand_written):
    splits = load_vsr(hand_written, hand_written / "images", splits=("train", "dev"))
    train, dev = splits["train"].examples, splits["dev"].examples
    assert [e.label for e in train] == [1, 0, 1, 0]
    assert train[1].relation == "at the right side of" and train[1].subj is None
    assert train[0].image_path == hand_written / "images" / "000000085637.jpg"
    assert (dev[0].subj, dev[0].obj) == ("laptop", "dog")
    sizes = [load_image(e.image_path).size for e in train + dev]
    assert sizes == [(333, 517), (640, 480), (101, 77), (333, 517), (50, 60), (31, 17)]
    assert all(load_image(e.image_path).mode == "RGB" for e in train + dev)


def test_load_image_composites_transparency_on_white(hand_written):
    image = load_image(hand_written / "images" / "000000266622.jpg")
    assert image.getpixel((0, 0)) == (255, 255, 255) and image.getpixel((40, 0)) == (
        255,
        0,
        0,
    )
    palette = load_image(hand_written / "images" / "000000546264.png")
    assert palette.getpixel((0, 0)) == (0, 200, 0)


def test_load_image_errors_name_the_file(hand_written):
    with pytest.raises(FileNotFoundError, match="000000080336.jpg"):
        load_image(hand_written / "images" / "000000080336.jpg")
    with pytest.raises(ValueError, match="000000563615.jpg.*truncated"):
        load_image(hand_written / "images" / "000000563615.jpg")


def test_bad_images_are_an_error_listing_them(hand_written):
    with pytest.raises(ValueError) as info:
        load_vsr_split(hand_written / "test.jsonl", hand_written / "images")
    message = str(info.value)
    assert "3 row(s)" in message
    assert "line 2: 000000080336.jpg (file not found)" in message
    assert "line 3: 000000563615.jpg (cannot decode: " in message
    assert "truncated" in message.lower()
    assert "line 4: 000000013943.jpg (cannot decode: cannot identify image file" in message
    assert "on_bad_image='skip'" in message and "--on-bad-image skip" in message


def test_bad_images_are_skipped_and_reported(hand_written, caplog):
    with caplog.at_level(logging.WARNING, logger="theworld.data.vsr"):
        split = load_vsr_split(hand_written / "test.jsonl", hand_written / "images", on_bad_image="skip")
    assert [e.image for e in split.examples] == ["000000085637.jpg"]
    assert [(line, name) for line, name, _ in split.bad_images] == [
        (2, "000000080336.jpg"),
        (3, "000000563615.jpg"),
        (4, "000000013943.jpg"),
    ]
    assert "3 row(s)" in caplog.text and "000000080336.jpg" in caplog.text and "000000563615.jpg" in caplog.text


def test_error_shows_the_first_five_bad_images(tmp_path):
    rows = [vsr_row(f"{i:012d}.jpg", "The cat is near the dog.", 1, "near") for i in range(7)]
    with pytest.raises(ValueError, match=r"7 row\(s\).*000000000004\.jpg.*and 2 more") as info:
        load_vsr_split(write_jsonl(tmp_path / "x.jsonl", rows), tmp_path)
    assert "000000000005.jpg" not in str(info.value)


def test_each_image_is_checked_once(hand_written, monkeypatch):
    checked = []

    def spy(path):
        checked.append(path.name)

    monkeypatch.setattr(vsr, "_image_problem", spy)
    load_vsr(hand_written)
    assert sorted(checked) == sorted(set(checked))
    assert checked.count("000000085637.jpg") == 1


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"caption": None}, r"x\.jsonl:2: missing required field\(s\) 'caption'"),
        ({"label": 2}, r"x\.jsonl:2: field 'label' must be the integer 0 or 1, got 2"),
        ({"label": "1"}, r"x\.jsonl:2: field 'label'"),
        ({"label": True}, r"x\.jsonl:2: field 'label'"),
        ({"relation": ""}, r"x\.jsonl:2: field 'relation'"),
    ],
)
def test_malformed_rows_are_errors_naming_the_line(tmp_path, change, error):
    good = vsr_row("000000085637.jpg", "The umbrella is under the dog.", 1, "under")
    bad = {key: value for key, value in (good | change).items() if value is not None}
    with pytest.raises(ValueError, match=error):
        load_vsr_split(write_jsonl(tmp_path / "x.jsonl", [good, bad]), tmp_path)


def test_invalid_json_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "x.jsonl"
    good = json.dumps(vsr_row("000000085637.jpg", "The umbrella is under the dog.", 1, "under"))
    path.write_text(f'{good}\n\n{{"image": \n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"x\.jsonl:3: invalid JSON"):
        load_vsr_split(path, tmp_path)


def test_datasets_loading_gives_the_same_rows(hand_written, zero_shot_split, tmp_path):
    images = hand_written / "images"
    dataset = vsr_as_dataset(hand_written, cache_dir=tmp_path / "hf")
    assert dataset["test"].num_rows == 4
    assert dataset["train"][1]["vote_false_validator_id"] == "[2, 10, 1]"
    for split, examples in load_vsr(hand_written, images, splits=("train", "dev")).items():
        assert [vsr_example_from_row(row, images) for row in dataset[split]] == examples.examples
    images = zero_shot_split / "images"
    dataset = vsr_as_dataset(zero_shot_split, splits=("test",), cache_dir=tmp_path / "hf")
    assert [vsr_example_from_row(row, images) for row in dataset["test"]] == load_vsr(
        zero_shot_split, splits=("test",)
    )["test"].examples
