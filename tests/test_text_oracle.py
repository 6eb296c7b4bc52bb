"""The text oracle: the scene forms it writes, and a short run on the tiny base that trains only LoRA adapters."""

import json
import random

import pytest
import torch

from theworld.cli import main
from theworld.data import synthesize_vsr
from theworld.data.synth import SceneObject
from theworld.text_oracle import REPORT_FILE, TextOracle, TextOracleConfig, load_questions, scene_text

TOP_LEFT = SceneObject("red", "circle", (2, 2, 16, 16))
BOTTOM_RIGHT = SceneObject("blue", "square", (40, 40, 54, 54))


def test_the_relations_form_states_exactly_the_relations_that_hold():
    assert scene_text([TOP_LEFT, BOTTOM_RIGHT], "relations") == (
        "The red circle is left of the blue square. The red circle is above the blue square. "
        "The red circle is far away from the blue square."
    )
    assert scene_text([BOTTOM_RIGHT, TOP_LEFT], "relations") == (
        "The blue square is right of the red circle. The blue square is below the red circle. "
        "The blue square is far away from the red circle."
    )


def test_the_description_form_is_the_describe_stage_sentence_whatever_the_order():
    expected = (
        "The red circle is left of the blue square. The red circle is above the blue square. "
        "The red circle is far away from the blue square."
    )
    assert scene_text([BOTTOM_RIGHT, TOP_LEFT], "description") == scene_text([TOP_LEFT, BOTTOM_RIGHT], "description")
    assert scene_text([BOTTOM_RIGHT, TOP_LEFT], "description") == expected


def test_the_coordinates_form_gives_each_centre():
    assert scene_text([TOP_LEFT, BOTTOM_RIGHT], "coordinates") == (
        "The red circle is at x=9, y=9. The blue square is at x=47, y=47. (x grows to the right, y grows downwards.)"
    )
    assert scene_text([TOP_LEFT, BOTTOM_RIGHT], "none") == ""


def test_unknown_forms_and_data_without_objects_are_refused(tmp_path, tiny_bases, capsys):
    with pytest.raises(
        ValueError, match="Unknown scene form 'pixels'; choose one of relations, description, coordinates, none"
    ):
        TextOracleConfig(gemma=str(tiny_bases.gemma), data_dir=tmp_path, output_dir=tmp_path, scene="pixels")
    for split in ("train", "dev", "test"):
        (tmp_path / f"{split}.jsonl").write_text(json.dumps({"caption": "A cat.", "label": 1, "relation": "on"}))
    arguments = ["--gemma", str(tiny_bases.gemma), "--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "run")]
    assert main(["text-oracle", *arguments]) == 1
    assert "has no 'objects' in its rows: the text oracle needs `theworld synth-vsr` data" in capsys.readouterr().err


def test_only_the_adapters_train(tmp_path, tiny_bases):
    oracle = TextOracle(TextOracleConfig(gemma=str(tiny_bases.gemma), data_dir=tmp_path, output_dir=tmp_path))
    trainable = [name for name, parameter in oracle.model.named_parameters() if parameter.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)


def test_a_short_run_reports_every_relation_with_its_curves(tmp_path, tiny_bases, capsys):
    data = synthesize_vsr(tmp_path / "data", seed=0, n_train=32, n_dev=8, n_test=48)
    output_dir = tmp_path / "run"
    arguments = ["--gemma", str(tiny_bases.gemma), "--data-dir", str(data), "--output-dir", str(output_dir)]
    assert main(["text-oracle", *arguments, "--steps", "4", "--batch-size", "4", "--eval-every", "2"]) == 0
    report = json.loads((output_dir / REPORT_FILE).read_text())
    assert set(report["test"]["per_relation"]) == {
        "left of", "right of", "above", "below", "close to", "far away from"
    }  # fmt: skip
    assert [step for step, _ in report["history"]["dev_accuracy"]] == [0, 2, 4]
    assert [step for step, _ in report["history"]["loss"]] == [1, 2, 3, 4]
    assert (output_dir / "loss.png").is_file() and (output_dir / "accuracy.png").is_file()
    printed = capsys.readouterr().out
    assert "| far away from |" in printed and "Dev accuracy by step: 0:" in printed


def test_with_image_each_prompt_holds_the_question_image_before_the_scene(tmp_path, tiny_bases):
    data = synthesize_vsr(tmp_path / "data", seed=0, n_train=4, n_dev=2, n_test=2)
    logits = {}
    for with_image in (False, True):
        oracle = TextOracle(
            TextOracleConfig(gemma=str(tiny_bases.gemma), data_dir=data, output_dir=tmp_path, with_image=with_image)
        )
        questions = load_questions(data / "train.jsonl", "relations", oracle.tokenizer, random.Random(0), with_image)
        boi = oracle.processor.boi_token
        for question in questions:
            assert (boi in question.prompt) == with_image
            assert not with_image or question.prompt.index(boi) < question.prompt.index("Scene:")
        with torch.no_grad():
            logits[with_image] = oracle.answer_logits(questions)
    assert logits[True].shape == (4, 2) and torch.isfinite(logits[True]).all()
    assert not torch.allclose(logits[False], logits[True])  # the image tokens reach the language model
