"""A reduced run of the offline demo: every stage, on fewer examples and steps, learning well above chance."""

import json
from pathlib import Path

import pytest

from theworld import TheWorld, TheWorldProcessor
from theworld import demo as demo_module
from theworld.data import SYNTH_RELATIONS, load_vsr_split
from theworld.demo import (
    DEMO_RECIPE,
    DEMO_RELATIONS,
    SMALL_REAL_RECIPE,
    DemoConfig,
    reload_in_fresh_process,
    run_demo,
    run_demo_seeds,
)
from theworld.prompt import answer_token_ids
from theworld.testing.tiny_vae import QUICK_STEPS
from theworld.training import evaluate_vsr, parse_answer

TRAIN_EXAMPLES = 4800  # 300 steps of 16
TEST_EXAMPLES = 128


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demos' cache: the trained tiny VAE is built once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, demo_cache: Path) -> tuple[Path, dict]:
    output_dir = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("THEWORLD_CACHE", str(demo_cache))
        recipe = {**DEMO_RECIPE, "eval_every": 50, "eval_examples": 32}
        config = DemoConfig(
            output_dir=output_dir,
            n_train=TRAIN_EXAMPLES,
            n_dev=32,
            n_test=TEST_EXAMPLES,
            recipe=recipe,
            vae_steps=QUICK_STEPS,
            progress=False,
        )
        return output_dir, run_demo(config)


def test_demo_leaves_its_outputs(demo):
    output_dir, _ = demo
    for name in ("checkpoint/model.safetensors", "checkpoint/modeling_theworld.py", "eval.json", "eval.md"):
        assert (output_dir / name).is_file(), name
    for name in ("summary.md", "loss.png", "accuracy.png", "zero-shot/checkpoint/config.json"):
        assert (output_dir / name).is_file(), name


def test_demo_evaluates_both_test_sets_with_the_world_ablated(demo):
    output_dir, result = demo
    reports = json.loads((output_dir / "eval.json").read_text())
    assert set(reports) == {"random/test", "zero-shot/test"}
    for report in reports.values():
        assert report["examples"] == TEST_EXAMPLES
        assert report["world"]["total"] == report["world_ablated"]["total"] == TEST_EXAMPLES
    assert "world ablated" in result["summary"] and "zero-shot/test" in result["summary"]
    per_relation = result["summary"].split("## Per relation")[1]
    assert all(f"| {relation} |" in per_relation for relation in DEMO_RELATIONS)


def test_demo_training_learns_the_answer_format(demo):
    output_dir, result = demo
    history = json.loads((output_dir / "history.json").read_text())
    losses = [loss for _, loss in history["loss"]]
    # From about ln(vocabulary) ~ 7 to well under 1: the model answers "True" or "False" and closes its turn.
    assert losses[0] > 3 and max(losses[-5:]) < 1.0
    assert result["reports"]["random/test"]["world"]["unparsed"] == 0
    dev_steps = [step for step, _ in history["dev_accuracy"]]
    curves = result["summary"].split("## Learning curves")[1]
    assert f"| random | - | {dev_steps[0]}: " in curves and f", {dev_steps[-1]}: " in curves


def test_demo_world_path_learns_well_above_chance(demo):
    _, result = demo
    report = result["reports"]["random/test"]
    # Labels are balanced and the captions alone carry no information: chance is 50%, which the ablated model stays at.
    assert report["world"]["accuracy"] >= 0.75, report["world"]
    assert report["world_gain"] >= 0.20, report
    assert result["reports"]["zero-shot/test"]["world"]["accuracy"] >= 0.65


def test_demo_reloads_in_a_process_without_theworld(demo):
    _, result = demo
    assert result["reload"]["class"].startswith("transformers_modules.")
    assert parse_answer(result["reload"]["answer"]) in (0, 1)


def test_demo_reload_can_answer_by_choice(demo):
    output_dir, _ = demo
    data = output_dir / "data" / "random"
    example = load_vsr_split(data / "test.jsonl", data / "images").examples[0]
    model = TheWorld.from_pretrained(output_dir / "checkpoint")
    processor = TheWorldProcessor.from_pretrained(output_dir / "checkpoint")
    label = evaluate_vsr(model, processor, [example], answer_by="choices", progress=False).predictions[0]
    # Named apart from the answers the model generates, so the reply shows it was chosen, not generated.
    choices = dict(zip(("no", "yes"), answer_token_ids(processor.tokenizer), strict=True))
    reload = reload_in_fresh_process(output_dir / "checkpoint", example.image_path, example.caption, choices)
    assert reload["answer"] == ("no", "yes")[label]


def test_demo_over_seeds_tables_each_finished_seed_without_running_it_again(demo, tmp_path, monkeypatch):
    output_dir, result = demo
    for seed in (0, 1):
        (tmp_path / f"seed-{seed}").symlink_to(output_dir)
    monkeypatch.setattr(demo_module, "run_demo", lambda config: pytest.fail(f"ran seed {config.seed} again"))
    summary = run_demo_seeds(DemoConfig(output_dir=tmp_path), [0, 1])
    assert (tmp_path / "seeds.md").read_text() == summary
    for test_set, report in result["reports"].items():
        table = summary.split(f"## {test_set}: world on / world ablated")[1].split("##")[0]
        on, off = report["world"]["accuracy"], report["world_ablated"]["accuracy"]
        assert (
            f"| **overall** | {TEST_EXAMPLES} | {on:.1%} / {off:.1%} | {on:.1%} / {off:.1%} | {on:.1%} / {off:.1%} |"
            in table
        )
        for relation, score in report["world"]["per_relation"].items():
            assert f"| {relation} | {score['total']} | {score['accuracy']:.1%} / " in table
    assert "| seed 1, zero-shot | - | 50: " in summary.split("## Learning curves")[1]


def test_demo_runs_only_the_splits_asked_for(demo_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("THEWORLD_CACHE", str(demo_cache))
    recipe = {**DEMO_RECIPE, "eval_every": None}
    sizes = {"n_train": 64, "n_dev": 8, "n_test": 16}
    config = DemoConfig(tmp_path, splits=("zero-shot",), recipe=recipe, vae_steps=QUICK_STEPS, progress=False, **sizes)
    result = run_demo(config)
    assert set(json.loads((tmp_path / "eval.json").read_text())) == {"zero-shot/test"}
    assert (tmp_path / "zero-shot" / "checkpoint" / "model.safetensors").is_file()
    assert not (tmp_path / "checkpoint").exists()
    zero_shot = load_vsr_split(
        tmp_path / "data" / "zero-shot" / "test.jsonl", tmp_path / "data" / "zero-shot" / "images"
    )
    assert result["reload"]["caption"] == zero_shot.examples[0].caption
    # Its describe stage (if the recipe has one) learns from the random split's scenes, which show every concept.
    training = json.loads((tmp_path / "zero-shot" / "training_config.json").read_text())
    assert training["describe_data_dir"] == str(tmp_path / "data" / "random")
    with pytest.raises(ValueError, match=r"Unknown demo splits \['val'\]; choose among random, zero-shot"):
        DemoConfig(output_dir=tmp_path, splits=("zero-shot", "val"))


def test_demo_runs_the_describe_stage_once_and_starts_each_split_from_it(demo_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("THEWORLD_CACHE", str(demo_cache))
    describe = {"world_image_size": 128, "world_grid_size": 16, "projector_type": "transformer", "describe_steps": 2}
    recipe = {**DEMO_RECIPE, **describe, "eval_every": None, "max_steps": 2}
    sizes = {"n_train": 32, "n_dev": 8, "n_test": 8}
    run_demo(DemoConfig(tmp_path, recipe=recipe, vae_steps=QUICK_STEPS, progress=False, **sizes))
    random_run, zero_shot_run = tmp_path, tmp_path / "zero-shot"
    assert (random_run / "describe" / "model.safetensors").is_file() and not (zero_shot_run / "describe").exists()
    training = json.loads((zero_shot_run / "training_config.json").read_text())
    assert training["describe_from"] == str(random_run / "describe")
    histories = [json.loads((run / "history.json").read_text()) for run in (random_run, zero_shot_run)]
    assert len(histories[1]["describe_loss"]) == 2 and histories[1]["describe_loss"] == histories[0]["describe_loss"]


def test_each_demo_base_brings_its_recipe_and_relations(tmp_path):
    tiny = DemoConfig(output_dir=tmp_path)
    assert tiny.recipe == DEMO_RECIPE and tiny.relations == DEMO_RELATIONS
    small_real = DemoConfig(output_dir=tmp_path, base="small-real")
    assert small_real.recipe == SMALL_REAL_RECIPE and small_real.relations == SYNTH_RELATIONS
    # On the pretrained base its own weights stay frozen: only the projector, world embeddings and LoRA train.
    assert not small_real.recipe.get("train_language_model") and small_real.recipe["lora_rank"] > 0
    # The describe stage writes the scene into the world tokens; the projector stays so while the task trains.
    assert small_real.recipe["describe_steps"] > 0 and small_real.recipe["freeze_world_projector"]
    assert DemoConfig(output_dir=tmp_path, base="small-real", relations=("above",)).relations == ("above",)
    with pytest.raises(ValueError, match="Unknown demo base 'huge'; choose one of tiny, small-real"):
        DemoConfig(output_dir=tmp_path, base="huge")
