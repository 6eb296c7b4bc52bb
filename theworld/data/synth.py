"""A deterministic synthetic VSR data set: two coloured shapes per image, one caption per image.

Every caption relates a subject to an object with a relation that can be judged from positions
alone (Projective: left of, right of, above, below; Proximity: close to, far away from). A true
caption states the relation drawn; a false caption states its opposite, so the caption text carries
no information about the label and a model must look at the image.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

__all__ = [
    "COLOURS",
    "SHAPES",
    "SYNTH_RELATIONS",
    "ZERO_SHOT_CONCEPTS",
    "SceneObject",
    "describe_scene",
    "random_scene",
    "relation_holds",
    "render_scene",
    "synthesize_vsr",
]

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (250, 130, 0),
    "yellow": (235, 210, 20),
    "green": (30, 160, 60),
    "blue": (35, 75, 215),
    "purple": (135, 50, 175),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
BACKGROUND: tuple[int, int, int] = (240, 240, 235)

OPPOSITE: dict[str, str] = {
    "left of": "right of",
    "right of": "left of",
    "above": "below",
    "below": "above",
    "close to": "far away from",
    "far away from": "close to",
}
SYNTH_RELATIONS: tuple[str, ...] = tuple(OPPOSITE)

# Zero-shot partition: group g holds the concepts (COLOURS[(g + k) % 6], SHAPES[k]) for k = 0..3, so
# groups are disjoint, each group has 4 colours and 4 shapes, and every colour and shape is seen in
# training even though the test's colour-shape combinations are not.
_ZERO_SHOT_GROUPS: dict[str, tuple[int, ...]] = {
    "train": (0, 1, 2),
    "dev": (3,),
    "test": (4, 5),
}


def _group_concepts(group: int) -> list[tuple[str, str]]:
    colours = list(COLOURS)
    return [(colours[(group + k) % len(colours)], shape) for k, shape in enumerate(SHAPES)]


ZERO_SHOT_CONCEPTS: dict[str, tuple[str, ...]] = {
    split: tuple(f"{c} {s}" for g in groups for c, s in _group_concepts(g))
    for split, groups in _ZERO_SHOT_GROUPS.items()
}
"""The "colour shape" concepts allowed in each zero-shot split; train, dev and test are disjoint."""

_MAX_PLACEMENT_TRIES = 10_000


@dataclass(frozen=True)
class SceneObject:
    """A filled shape inside the square pixel box `(x0, y0, x1, y1)`, end coordinates exclusive."""

    colour: str
    shape: str
    box: tuple[int, int, int, int]

    @property
    def name(self) -> str:
        """The concept, e.g. "red circle"."""
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class _Geometry:
    """Pixel thresholds for one image size (values quoted for 64 px)."""

    border: int  # free pixels along the image edge (2)
    min_size: int  # object side (14 to 22)
    max_size: int
    min_gap: int  # smallest gap between any two objects (2)
    margin: int  # gap in the relevant axis for left of / right of / above / below (4)
    near: int  # largest gap for close to (6)
    far: int  # smallest gap for far away from (19)

    @classmethod
    def for_size(cls, image_size: int) -> _Geometry:
        if image_size < 32:
            raise ValueError(f"image_size must be at least 32, got {image_size}")
        return cls(
            border=round(image_size / 32),
            min_size=round(0.22 * image_size),
            max_size=round(0.34 * image_size),
            min_gap=round(image_size / 32),
            margin=round(image_size / 16),
            near=round(image_size / 10),
            far=round(0.3 * image_size),
        )


def _gap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Euclidean distance between two boxes, 0 if they overlap."""
    dx = max(b[0] - a[2], a[0] - b[2], 0)
    dy = max(b[1] - a[3], a[1] - b[3], 0)
    return math.hypot(dx, dy)


def relation_holds(relation: str, subj: SceneObject, obj: SceneObject, image_size: int = 64) -> bool:
    """Whether "The {subj} is {relation} the {obj}." is true of a scene drawn at `image_size`."""
    geometry = _Geometry.for_size(image_size)
    s, o = subj.box, obj.box
    if relation == "left of":
        return o[0] - s[2] >= geometry.margin
    if relation == "right of":
        return s[0] - o[2] >= geometry.margin
    if relation == "above":
        return o[1] - s[3] >= geometry.margin
    if relation == "below":
        return s[1] - o[3] >= geometry.margin
    if relation == "close to":
        return geometry.min_gap <= _gap(s, o) <= geometry.near
    if relation == "far away from":
        return _gap(s, o) >= geometry.far
    raise ValueError(f"unsupported synthetic relation {relation!r}; expected one of {SYNTH_RELATIONS}")


def describe_scene(objects: Sequence[SceneObject], image_size: int = 64) -> str:
    """Three sentences about a two-object scene, in the captions' own words, that settle every caption the data set can
    ask about it: a true caption is one of them or one of them the other way round ("The blue square is right of the
    red circle." for "The red circle is left of the blue square."), and a false one is neither.

    The object further left is named first, e.g. "The red circle is left of the blue square. The red circle is above
    the blue square. The red circle is far away from the blue square." Left and right, above and below compare the
    centres; close to and far away from split at the middle of their two thresholds.
    """
    first, second = sorted(objects, key=lambda item: (item.box[0] + item.box[2], item.box[1] + item.box[3]))
    geometry = _Geometry.for_size(image_size)
    vertical = "above" if first.box[1] + first.box[3] < second.box[1] + second.box[3] else "below"
    distance = "close to" if _gap(first.box, second.box) < (geometry.near + geometry.far) / 2 else "far away from"
    relations = ("left of", vertical, distance)
    return " ".join(f"The {first.name} is {relation} the {second.name}." for relation in relations)


def _random_box(rng: random.Random, geometry: _Geometry, image_size: int) -> tuple[int, int, int, int]:
    size = rng.randint(geometry.min_size, geometry.max_size)
    x0 = rng.randint(geometry.border, image_size - geometry.border - size)
    y0 = rng.randint(geometry.border, image_size - geometry.border - size)
    return x0, y0, x0 + size, y0 + size


def _place(
    rng: random.Random,
    subj: tuple[str, str],
    obj: tuple[str, str],
    image_size: int,
    relation: str | None,
) -> tuple[SceneObject, SceneObject]:
    """Place two non-touching objects at random such that `relation` (if given) holds."""
    geometry = _Geometry.for_size(image_size)
    for _ in range(_MAX_PLACEMENT_TRIES):
        a = SceneObject(*subj, _random_box(rng, geometry, image_size))
        b = SceneObject(*obj, _random_box(rng, geometry, image_size))
        if _gap(a.box, b.box) >= geometry.min_gap and (relation is None or relation_holds(relation, a, b, image_size)):
            return a, b
    raise RuntimeError(f"could not place two objects with relation {relation!r} in a {image_size} px image")


def render_scene(objects: Sequence[SceneObject], image_size: int = 64) -> Image.Image:
    """Draw `objects` as filled shapes on a plain light background."""
    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for item in objects:
        x0, y0, x1, y1 = item.box
        right, bottom = x1 - 1, y1 - 1
        cx, cy = (x0 + right) / 2, (y0 + bottom) / 2
        fill = COLOURS[item.colour]
        if item.shape == "circle":
            draw.ellipse((x0, y0, right, bottom), fill=fill)
        elif item.shape == "square":
            draw.rectangle((x0, y0, right, bottom), fill=fill)
        elif item.shape == "triangle":
            draw.polygon([(cx, y0), (right, bottom), (x0, bottom)], fill=fill)
        elif item.shape == "diamond":
            draw.polygon([(cx, y0), (right, cy), (cx, bottom), (x0, cy)], fill=fill)
        else:
            raise ValueError(f"unknown shape {item.shape!r}; expected one of {SHAPES}")
    return image


def _pick_pair(rng: random.Random, concepts: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], tuple[str, str]]:
    """Two concepts that differ in both colour and shape, so each is named unambiguously."""
    while True:
        a, b = rng.sample(concepts, 2)
        if a[0] != b[0] and a[1] != b[1]:
            return a, b


def random_scene(rng: random.Random, image_size: int = 64) -> Image.Image:
    """A random two-object scene of the kind the synthetic data set uses (e.g. for autoencoders)."""
    concepts = [(colour, shape) for colour in COLOURS for shape in SHAPES]
    return render_scene(_place(rng, *_pick_pair(rng, concepts), image_size, relation=None), image_size)


def _votes(rng: random.Random) -> tuple[str, str]:
    """Validator ids (agreeing, disagreeing) as VSR stores them: lists written as strings."""
    ids = rng.sample(range(1, 68), 3)
    agree = ids if rng.random() < 2 / 3 else ids[:2]
    return str(agree), str(ids[len(agree) :])


def _make_row(
    rng: random.Random,
    file_name: str,
    relation: str,
    label: int,
    concepts: Sequence[tuple[str, str]],
    image_size: int,
    zero_shot: bool,
) -> tuple[dict[str, Any], Image.Image]:
    subj_concept, obj_concept = _pick_pair(rng, concepts)
    subj, obj = _place(
        rng,
        subj_concept,
        obj_concept,
        image_size,
        relation if label else OPPOSITE[relation],
    )
    agree, disagree = _votes(rng)
    row: dict[str, Any] = {
        "image": file_name,
        "image_link": f"http://images.cocodataset.org/train2017/{file_name}",
        "caption": f"The {subj.name} is {relation} the {obj.name}.",
        "label": label,
        "relation": relation,
    }
    if zero_shot:
        row |= {"subj": subj.name, "obj": obj.name}
    row |= {
        "annotator_id": rng.randint(1, 47),
        "vote_true_validator_id": agree if label else disagree,
        "vote_false_validator_id": disagree if label else agree,
    }
    if not zero_shot:
        row["reference_frame"] = None
    row["objects"] = [{"name": o.name, "colour": o.colour, "shape": o.shape, "box": list(o.box)} for o in (subj, obj)]
    return row, render_scene([subj, obj], image_size)


def _write_split(
    directory: Path,
    split: str,
    n: int,
    first_id: int,
    seed: int,
    image_size: int,
    zero_shot: bool,
    relations: tuple[str, ...],
) -> None:
    if n <= 0 or n % 2:
        raise ValueError(f"n_{split} must be a positive even number (labels are balanced exactly), got {n}")
    rng = random.Random(f"theworld-synth-vsr:{seed}:{'zeroshot' if zero_shot else 'random'}:{split}")
    if zero_shot:
        concepts = [c for g in _ZERO_SHOT_GROUPS[split] for c in _group_concepts(g)]
    else:
        concepts = [(colour, shape) for colour in COLOURS for shape in SHAPES]
    plan = [(relations[(i // 2) % len(relations)], 1 - i % 2) for i in range(n)]
    rng.shuffle(plan)
    with (directory / f"{split}.jsonl").open("w", encoding="utf-8", newline="\n") as f:
        for offset, (relation, label) in enumerate(plan):
            file_name = f"{first_id + offset:012d}.jpg"
            row, image = _make_row(rng, file_name, relation, label, concepts, image_size, zero_shot)
            image.save(
                directory / "images" / file_name,
                format="JPEG",
                quality=95,
                subsampling=0,
            )
            f.write(json.dumps(row) + "\n")


def synthesize_vsr(
    directory: str | Path,
    seed: int = 0,
    n_train: int = 2000,
    n_dev: int = 200,
    n_test: int = 400,
    image_size: int = 64,
    zero_shot: bool = False,
    relations: Sequence[str] = SYNTH_RELATIONS,
) -> Path:
    """Write a synthetic VSR data set: `train.jsonl`, `dev.jsonl`, `test.jsonl` and `images/`.

    Rows carry every field of the real VSR files (the random split has `reference_frame`, the
    zero-shot split `subj` and `obj`) plus `objects`, the two drawn objects (subject first) with
    their boxes. Each image has one caption; labels are exactly half true in every split, and each
    relation is true and false equally often. With `zero_shot=True`, the concepts ("colour shape")
    of train, dev and test are disjoint (see `ZERO_SHOT_CONCEPTS`). `relations` restricts the
    captions to some of `SYNTH_RELATIONS`. Output is byte-identical for a given seed and arguments.
    Returns `directory`.
    """
    unknown = sorted(set(relations) - set(SYNTH_RELATIONS))
    if unknown or not relations:
        raise ValueError(f"relations must be a non-empty subset of {SYNTH_RELATIONS}; got {list(relations)}")
    directory = Path(directory)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    first_id = 1
    for split, n in (("train", n_train), ("dev", n_dev), ("test", n_test)):
        _write_split(directory, split, n, first_id, seed, image_size, zero_shot, tuple(relations))
        first_id += n
    return directory
