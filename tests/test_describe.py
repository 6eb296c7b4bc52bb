"""The grid-transformer projector and the describe stage: the sentence each synthetic scene gets, and a projector that
learns to write it into the world tokens before the VSR task."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from theworld.data import SceneObject, describe_scene, synthesize_vsr
from theworld.training import TrainingConfig, train


@pytest.fixture(scope="module")
def vsr_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesize_vsr(tmp_path_factory.mktemp("vsr"), seed=0, n_train=48, n_dev=8, n_test=8)


def test_scene_sentence_names_the_left_object_first():
    circle = SceneObject("red", "circle", (40, 4, 54, 18))
    square = SceneObject("blue", "square", (4, 30, 20, 46))
    expected = "The blue one is left of, below and far from the red one."
    assert describe_scene([circle, square]) == describe_scene([square, circle]) == expected
    near = SceneObject("green", "diamond", (24, 34, 40, 50))
    assert describe_scene([square, near]) == "The blue one is left of, above and close to the green one."


def judge_caption(sentence: str, caption: str) -> bool:
    """Whether the caption is true of a scene described by `describe_scene`'s sentence."""
    first, rest = sentence.removeprefix("The ").split(" one is left of, ")
    vertical, rest = rest.split(" and ", 1)
    distance, second = rest.removesuffix(" one.").rsplit(" the ", 1)
    subject, relation_and_object = caption.removeprefix("The ").split(" is ", 1)
    relation, object_ = relation_and_object.removesuffix(".").rsplit(" the ", 1)
    assert {subject.split()[0], object_.split()[0]} == {first, second}
    subject_is_first = subject.split()[0] == first
    held = {
        "left of": subject_is_first,
        "right of": not subject_is_first,
        "above": (vertical == "above") == subject_is_first,
        "below": (vertical == "below") == subject_is_first,
        "close to": distance == "close to",
        "far away from": distance == "far from",
    }
    return held[relation]


def test_every_synthetic_caption_is_decided_by_its_scene_sentence(tmp_path):
    data = synthesize_vsr(tmp_path, seed=3, n_train=240, n_dev=2, n_test=2)
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    for row in rows:
        objects = [SceneObject(item["colour"], item["shape"], tuple(item["box"])) for item in row["objects"]]
        assert judge_caption(describe_scene(objects), row["caption"]) == bool(row["label"]), row


def test_transformer_projector_lets_each_world_token_see_the_whole_grid(make_world):
    latents = torch.randn(1, 16, 1, 8, 8)
    moved = latents.clone()
    moved[..., :4, :4] += 1.0  # the top-left patch of a 2 x 2 grid
    changed = {}
    for projector_type in ("mlp", "transformer"):
        model, _ = make_world(projector_type=projector_type)
        with torch.no_grad():
            difference = (model.project_world(moved) - model.project_world(latents)).abs().amax(-1)[0]  # (4,)
        changed[projector_type] = (difference > 1e-6).tolist()
    assert changed["mlp"] == [True, False, False, False]
    assert changed["transformer"] == [True, True, True, True]


def describe_config(tiny_bases, data_dir: Path, output_dir: Path, **overrides) -> TrainingConfig:
    settings = {
        "world_image_size": 64,
        "world_grid_size": 8,
        "projector_type": "transformer",
        "batch_size": 4,
        "max_steps": 1,
        "eval_every": 1,
        "describe_steps": 150,
        "progress": False,
        **overrides,
    }
    return TrainingConfig(
        gemma=str(tiny_bases.gemma),
        world_encoder_path=str(tiny_bases.cosmos),
        data_dir=data_dir,
        **settings,
        output_dir=output_dir,
    )


def test_describe_stage_teaches_the_projector_to_write_the_sentences(tiny_bases, vsr_dir, tmp_path):
    result = train(describe_config(tiny_bases, vsr_dir, tmp_path / "run"))
    history = result.history
    losses = [loss for _, loss in history["describe_loss"]]
    assert len(losses) == 150 and sum(losses[-10:]) < 0.5 * sum(losses[:10])
    tokens = history["describe_dev_token_accuracy"]
    assert tokens[0][0] == 0 and tokens[-1][0] == 150
    # Most of a sentence is the same words in the same places: learned, they lift the dev token accuracy.
    assert tokens[-1][1] > tokens[0][1] + 0.3
    assert len(history["describe_dev_sentence_accuracy"]) == len(tokens)
    assert (tmp_path / "run" / "describe.png").exists()
    assert json.loads((tmp_path / "run" / "training_config.json").read_text())["describe_steps"] == 150
    assert history["loss"] and history["dev_accuracy"]  # then the VSR task ran


def test_describe_stage_refuses_data_without_objects_and_a_grid_too_small(tiny_bases, vsr_dir, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(vsr_dir, bare)
    rows = [json.loads(line) for line in (bare / "train.jsonl").read_text().splitlines()]
    without_objects = [{key: value for key, value in row.items() if key != "objects"} for row in rows]
    (bare / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in without_objects))
    with pytest.raises(ValueError, match=r"train.jsonl:1 has no 'objects'.*describe_steps=0"):
        train(describe_config(tiny_bases, bare, tmp_path / "bare-run"))
    with pytest.raises(ValueError, match=r"more than the 4 world tokens per image; use a larger world_grid_size"):
        train(describe_config(tiny_bases, vsr_dir, tmp_path / "small-grid", world_grid_size=2))
