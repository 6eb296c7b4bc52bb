"""The grid-transformer projector and the describe stage: the sentence each synthetic scene gets, and a projector that
learns to write it into the world tokens before the VSR task."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from theworld.data import SceneObject, describe_scene, synthesize_vsr
from theworld.data.synth import OPPOSITE
from theworld.loading_theworld import blank_line_id
from theworld.training import TrainingConfig, train
from theworld.training.describe import SentenceTargets, describe_world, described_scenes, sentence_token_ids


@pytest.fixture(scope="module")
def vsr_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesize_vsr(tmp_path_factory.mktemp("vsr"), seed=0, n_train=48, n_dev=8, n_test=8)


def test_scene_sentences_name_the_object_further_left_first():
    circle = SceneObject("red", "circle", (40, 4, 54, 18))
    square = SceneObject("blue", "square", (4, 30, 20, 46))
    expected = (
        "The blue square is left of the red circle. The blue square is below the red circle. "
        "The blue square is far away from the red circle."
    )
    assert describe_scene([circle, square]) == describe_scene([square, circle]) == expected
    near = SceneObject("green", "diamond", (24, 34, 40, 50))
    assert describe_scene([near, square]) == (
        "The blue square is left of the green diamond. The blue square is above the green diamond. "
        "The blue square is close to the green diamond."
    )


# A caption's relation the other way round: "The A is left of the B." says what "The B is right of the A." says.
CONVERSE = {**OPPOSITE, "close to": "close to", "far away from": "far away from"}


def test_scene_sentences_settle_every_synthetic_caption(tmp_path):
    data = synthesize_vsr(tmp_path, seed=3, n_train=240, n_dev=2, n_test=2)
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    for row in rows:
        subject, target = objects = [
            SceneObject(item["colour"], item["shape"], tuple(item["box"])) for item in row["objects"]
        ]
        sentences = describe_scene(objects)
        stated = (
            f"The {subject.name} is {row['relation']} the {target.name}." in sentences
            or f"The {target.name} is {CONVERSE[row['relation']]} the {subject.name}." in sentences
        )
        assert stated == bool(row["label"]), row


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


DESCRIBE_WORLD = {
    "world_image_size": 128,
    "world_grid_size": 16,  # 256 world tokens: the tiny tokenizer cuts the sentences into up to 70 tokens
    "projector_type": "transformer",
}


def test_describe_stage_teaches_the_projector_to_write_the_sentences(make_world, vsr_dir):
    torch.manual_seed(0)  # the projector's initialisation and the stage's batches
    model, processor = make_world(**DESCRIBE_WORLD)
    train_scenes = described_scenes(vsr_dir / "train.jsonl", vsr_dir / "images")
    dev_scenes = described_scenes(vsr_dir / "dev.jsonl", vsr_dir / "images")
    history = describe_world(model, processor, train_scenes, dev_scenes, 120, 2e-3, batch_size=8, progress=False)
    losses = [loss for _, loss in history["describe_loss"]]
    assert len(losses) == 120 and sum(losses[-10:]) < 0.75 * sum(losses[:10])
    tokens = history["describe_dev_token_accuracy"]
    assert [step for step, _ in tokens] == [0, 100, 120]
    # Many of the sentences' tokens are the same words in the same places: learned, they lift the dev token accuracy.
    assert tokens[-1][1] > tokens[0][1] + 0.3
    assert len(history["describe_dev_sentence_accuracy"]) == len(tokens)


def test_sentence_targets_end_with_the_sentence_after_blank_lines(make_world):
    model, processor = make_world(**DESCRIBE_WORLD)
    sentences = ["The red circle is left of the blue square.", "The blue square is above the red circle."]
    token_ids = sentence_token_ids(processor.tokenizer, sentences, model.config.num_world_tokens)
    words = token_ids != -100
    assert words.any(-1).all() and not words.all(-1).any()  # each sentence leaves spare world tokens
    # Each sentence fills the last world tokens, after the spare ones, in order.
    assert words[:, -1].all() and not words[:, 0].any() and (words.long().diff(dim=-1) >= 0).all()
    for row, sentence in zip(token_ids, sentences, strict=True):
        assert processor.tokenizer.decode(row[row != -100]) == sentence

    blank_line = blank_line_id(processor.tokenizer)
    targets = SentenceTargets(model, token_ids, blank_line)
    rows = torch.arange(len(sentences))
    with torch.no_grad():
        exact = model.get_input_embeddings()(token_ids.masked_fill(~words, blank_line))
        zero_spare = exact * words.unsqueeze(-1)
        all_blank = model.get_input_embeddings()(torch.full_like(token_ids, blank_line))
        word_noise = exact + torch.randn_like(exact) * 50 * words.unsqueeze(-1)
        exact_loss, zero_spare_loss, all_blank_loss = (
            targets.loss(tokens, rows).item() for tokens in (exact, zero_spare, all_blank)
        )
    assert targets.accuracy(exact, rows) == (1.0, 1.0)
    # Zero vectors in the spare world tokens miss their target (the blank line), though the words stay right.
    assert targets.accuracy(zero_spare, rows)[0] == 1.0 and exact_loss < zero_spare_loss
    # The blank line everywhere loses every word; it costs more than the zero vectors, though the words take only
    # 10 of the 256 world tokens: words and filler weigh the same.
    assert words.sum() < 0.1 * words.numel() and zero_spare_loss < all_blank_loss
    assert targets.accuracy(word_noise, rows)[0] < 1.0


def describe_config(tiny_bases, data_dir: Path, output_dir: Path, **overrides) -> TrainingConfig:
    settings = {**DESCRIBE_WORLD, "batch_size": 4, "max_steps": 1, "describe_steps": 2, "progress": False, **overrides}
    return TrainingConfig(
        gemma=str(tiny_bases.gemma),
        world_encoder_path=str(tiny_bases.cosmos),
        data_dir=data_dir,
        output_dir=output_dir,
        **settings,
    )


def test_training_runs_the_describe_stage_first_and_can_keep_the_projector_fixed_after(tiny_bases, vsr_dir, tmp_path):
    runs = {
        steps: train(
            describe_config(tiny_bases, vsr_dir, tmp_path / f"{steps}", freeze_world_projector=True, max_steps=steps)
        )
        for steps in (1, 3)
    }
    assert [step for step, _ in runs[1].history["describe_loss"]] == [1, 2]
    assert (tmp_path / "1" / "describe.png").exists()
    assert json.loads((tmp_path / "1" / "training_config.json").read_text())["describe_steps"] == 2
    # Same seed, same describe stage; then the VSR steps leave the projector as it was and train the rest.
    one, three = (load_file(run.checkpoint / "model.safetensors") for run in runs.values())
    fixed = [name for name in one if name.startswith(("world_projector.", "world_position_embeddings"))]
    assert fixed and all(torch.equal(one[name], three[name]) for name in fixed)
    assert not torch.equal(one["world_boundary_embeddings"], three["world_boundary_embeddings"])


def test_describe_stage_refuses_data_without_objects_and_a_grid_too_small(tiny_bases, vsr_dir, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(vsr_dir, bare)
    rows = [json.loads(line) for line in (bare / "train.jsonl").read_text().splitlines()]
    without_objects = [{key: value for key, value in row.items() if key != "objects"} for row in rows]
    (bare / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in without_objects))
    with pytest.raises(ValueError, match=r"train.jsonl:1 has no 'objects'.*describe_steps=0"):
        train(describe_config(tiny_bases, bare, tmp_path / "bare-run"))
    # The same task data, with the describe stage learning from another data set's scenes.
    aligned = train(describe_config(tiny_bases, bare, tmp_path / "aligned-run", describe_data_dir=vsr_dir))
    assert [step for step, _ in aligned.history["describe_loss"]] == [1, 2]
    with pytest.raises(ValueError, match=r"more than the 4 world tokens per image; use a larger world_grid_size"):
        train(describe_config(tiny_bases, vsr_dir, tmp_path / "small-grid", world_grid_size=2))


def test_a_run_starts_from_another_runs_describe_stage_as_if_it_had_run_it(tiny_bases, vsr_dir, tmp_path, monkeypatch):
    ran = train(describe_config(tiny_bases, vsr_dir, tmp_path / "ran", max_steps=2))
    describe_dir = tmp_path / "ran" / "describe"
    saved = json.loads((describe_dir / "training_state" / "state.json").read_text())
    assert saved["history"]["describe_loss"] == ran.history["describe_loss"]
    loaded = train(describe_config(tiny_bases, vsr_dir, tmp_path / "loaded", max_steps=2, describe_from=describe_dir))
    assert not (tmp_path / "loaded" / "describe").exists()
    assert loaded.history == ran.history
    reference = load_file(ran.checkpoint / "model.safetensors")
    for name, tensor in load_file(loaded.checkpoint / "model.safetensors").items():
        assert torch.equal(tensor, reference[name]), name
    with pytest.raises(ValueError, match=r"ran with describe_learning_rate=0.002, this run asks for 1.0"):
        train(
            describe_config(
                tiny_bases, vsr_dir, tmp_path / "other", describe_from=describe_dir, describe_learning_rate=1.0
            )
        )
    with pytest.raises(FileNotFoundError, match=r"no finished describe stage.*leave it unset"):
        train(describe_config(tiny_bases, vsr_dir, tmp_path / "missing", describe_from=tmp_path / "ran"))
    with pytest.raises(ValueError, match=r"describe_steps is 0: set describe_steps.*or leave describe_from unset"):
        describe_config(tiny_bases, vsr_dir, tmp_path / "none", describe_from=describe_dir, describe_steps=0)

    # A run stopped before its first step checkpoint starts again from its own finished describe stage.
    assert not (tmp_path / "ran" / "checkpoints").exists()
    training_module = sys.modules[train.__module__]
    monkeypatch.setattr(training_module, "describe_world", lambda *args, **kwargs: pytest.fail("ran again"))
    assert train(describe_config(tiny_bases, vsr_dir, tmp_path / "ran", max_steps=2)).history == ran.history
    with pytest.raises(ValueError, match=r"ran with describe_steps=2, this run asks for 3.*another output_dir"):
        train(describe_config(tiny_bases, vsr_dir, tmp_path / "ran", max_steps=2, describe_steps=3))
